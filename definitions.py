"""The Dagster code location: wires the engine (playground/) into assets, jobs and sensors.

The asset graph is built from the canary targets of the GitOps revision the last sync applied (see
``assets/graph.py``) by a state-backed component (Dagster's public ``StateBackedComponent``) whose state is a
code-server snapshot: fetched when a code server loads the location, handed to its run workers as reconstruction
metadata, so a run executes against the graph it was launched from; ``gitops_sync`` reloads the location through
the webserver when the targets change.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import dagster as dg
from dagster.components import DefsStateConfig, DefsStateConfigArgs

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


class GitOpsGraph(dg.StateBackedComponent):
    """State = the JSON of a ``GraphState``, kept by Dagster as a code-server snapshot
    (``LEGACY_CODE_SERVER_SNAPSHOTS``): fetched each time a code server loads the location, handed to that code
    server's run workers as reconstruction metadata, never fetched by them."""

    @property
    def defs_state_config(self) -> DefsStateConfig:
        return DefsStateConfig.from_args(
            DefsStateConfigArgs.legacy_code_server_snapshots(), default_key="gitops_playground/graph"
        )

    _fetched: str | None = None  # the state this process fetched last (for a load outside a code server)

    def write_state_to_path(self, state_path: Path) -> None:
        state = fetch_state(lambda: Runtime(RuntimeConfig.from_env()))
        if state.error:
            log.warning(f"gitops-playground: no canary targets in the asset graph: {state.error}")
        else:
            log.info(
                f"gitops-playground: asset graph of {len(state.targets)} canary target(s) from {state.source} "
                f"{(state.sha or '')[:12]}: {', '.join(t.key for t in state.targets) or 'none'}"
            )
        self._fetched = state.to_json()
        state_path.write_text(self._fetched)

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        try:
            return super().build_defs(context)
        except KeyError:
            # Loaded outside a code server and its run workers (a direct call of ``defs()``, ``dagster job execute
            # -f definitions.py``): Dagster has no load context to keep the snapshot in; use the state just
            # fetched, or fetch it now.
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "state"
                if self._fetched is None:
                    self.write_state_to_path(path)
                else:
                    path.write_text(self._fetched)
                return self.build_defs_from_state(context, path)

    def build_defs_from_state(self, context: dg.ComponentLoadContext, state_path: Path | None) -> dg.Definitions:
        state = GraphState.from_json(state_path.read_text()) if state_path is not None else GraphState()
        return build_definitions(state)


@dg.definitions
def defs() -> dg.Definitions:
    return dg.build_defs_for_component(GitOpsGraph())
