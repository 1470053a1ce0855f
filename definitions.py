"""The Dagster code location: wires the engine (playground/) into assets, jobs and sensors.

The asset graph is built from the canary targets of the GitOps revision the last sync applied (see
``assets/graph.py``): a ``StateBackedDefinitionsLoader`` fetches that state when a code server loads the
location and hands it to run workers as reconstruction metadata, so a run executes against the graph it was
launched from; ``gitops_sync`` reloads the location through the webserver when the targets change.
"""

from __future__ import annotations

import logging

import dagster as dg
from dagster._core.definitions.definitions_load_context import StateBackedDefinitionsLoader

from assets import build_assets
from assets.graph import GraphState, fetch_state
from assets.history import history_assets
from jobs import canary_control, canary_release, gitops_sync
from jobs.resources import PlaygroundResource
from playground.runtime import Runtime, RuntimeConfig
from sensors import SENSORS

log = logging.getLogger("gitops_playground.graph")


def build_definitions(state: GraphState) -> dg.Definitions:
    """Everything the code location declares, for the given targets."""
    specs, checks = build_assets(state.targets)
    return dg.Definitions(
        assets=[*specs, *history_assets(state.targets)],
        asset_checks=checks,
        jobs=[gitops_sync, canary_release, canary_control],
        sensors=SENSORS,
        resources={"playground": PlaygroundResource()},
    )


class GitOpsGraph(StateBackedDefinitionsLoader[str]):
    """State = the JSON of a ``GraphState``: fetched once per code server load, reused by its run workers."""

    @property
    def defs_key(self) -> str:
        return "gitops_playground/graph"

    def fetch_state(self) -> str:
        state = fetch_state(lambda: Runtime(RuntimeConfig.from_env()))
        if state.error:
            log.warning(f"gitops-playground: no canary targets in the asset graph: {state.error}")
        else:
            log.info(
                f"gitops-playground: asset graph of {len(state.targets)} canary target(s) from {state.source} "
                f"{(state.sha or '')[:12]}: {', '.join(t.key for t in state.targets) or 'none'}"
            )
        return state.to_json()

    def defs_from_state(self, state: str) -> dg.Definitions:
        return build_definitions(GraphState.from_json(state))


@dg.definitions
def defs() -> dg.Definitions:
    return GitOpsGraph().build_defs()
