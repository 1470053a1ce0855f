"""Where the code location's asset graph comes from (``assets/graph.py``, ``definitions.py``), against real git
repositories and a real Dagster instance (no processes):

- the kubernetes backend reads the canary targets from its own checkout of the GitOps repository
  (``PLAYGROUND_GITOPS_URL``, here a local bare repository with the manifests under ``manifests/``, as the
  Helm values configure it) when no sync has recorded any;
- once ``gitops_sync`` recorded the applied revision's targets (its ``gitops/commit`` materialization), those
  win over the repository's HEAD (an invalid or unsynced HEAD does not change the graph);
- an unreachable repository gives an empty graph with the reason, never a code location that fails to load;
- the definitions built from a state declare exactly its targets, their checks, and the history lineage.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest

from assets.graph import GraphState, fetch_state, recorded_state
from playground.local import gitorigin
from playground.pipeline import Target, targets_to_json
from playground.runtime import Runtime, RuntimeConfig

# every test here starts a process (Envoy, git, the workload programs, lint-imports...)
pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]


def bare_origin(tmp_path: Path) -> Path:
    """A bare GitOps repository holding the project's manifests under ``manifests/``, plus a prod/api Canary
    (a copy of prod/backend) and without prod/frontend."""
    seed = tmp_path / "seed"
    shutil.copytree(ROOT / "manifests", seed / "manifests")
    shutil.rmtree(seed / "manifests" / "prod" / "frontend")
    api = seed / "manifests" / "prod" / "api"
    api.mkdir()
    for f in (ROOT / "manifests" / "prod" / "backend").iterdir():
        (api / f.name).write_text(f.read_text().replace("backend", "api"))
    origin = tmp_path / "gitops.git"
    assert gitorigin.ensure_origin(origin, seed)
    return origin


def k8s_runtime(origin: Path | str, tmp_path: Path):
    env = {"TMPDIR": str(tmp_path / "tmp"), "PLAYGROUND_GITOPS_PATH": "manifests"}
    return lambda: Runtime(RuntimeConfig.from_env(env, backend="kubernetes", gitops_url=str(origin)))


@pytest.fixture(autouse=True)
def _no_dagster_home(monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)


def test_kubernetes_backend_reads_targets_from_its_gitops_clone(tmp_path: Path) -> None:
    origin = bare_origin(tmp_path)
    state = fetch_state(k8s_runtime(origin, tmp_path))
    assert state.error is None and state.source == "gitops head"
    assert state.sha == gitorigin.head_sha(origin)
    assert [t.key for t in state.targets] == ["prod/api", "prod/backend"]
    api = state.targets[0]
    assert api.strategy == "canary" and api.metrics == ("error-rate", "latency")
    # the checkout is the kubernetes backend's own (under TMPDIR), not the local playground's
    assert (tmp_path / "tmp" / "playground" / "git" / "work" / "graph" / "manifests" / "prod" / "api").is_dir()
    # the state survives its JSON round trip (reconstruction metadata for run workers)
    assert GraphState.from_json(state.to_json()) == state


def test_recorded_sync_state_wins_over_the_repository_head(tmp_path: Path) -> None:
    origin = bare_origin(tmp_path)
    recorded = [Target("prod", "backend", "canary", ("error-rate", "latency"))]
    with dg.DagsterInstance.ephemeral() as instance:
        assert recorded_state(instance) is None
        instance.report_runless_asset_event(
            dg.AssetMaterialization(
                ["gitops", "commit"],
                metadata={"sha": "a" * 40, "targets": dg.MetadataValue.text(targets_to_json(recorded))},
            )
        )
        state = fetch_state(k8s_runtime(origin, tmp_path), instance=instance)
    assert state.source == "sync" and state.sha == "a" * 40
    assert state.targets == recorded  # prod/api at the HEAD is not synced yet: not in the graph


def test_unreachable_repository_gives_an_empty_graph_with_the_reason(tmp_path: Path) -> None:
    state = fetch_state(k8s_runtime(tmp_path / "missing.git", tmp_path))
    assert state.targets == [] and state.source == "none"
    assert "cannot read the GitOps repository" in (state.error or "")
    assert "missing.git" in (state.error or "")


def test_definitions_declare_exactly_the_state_targets_with_lineage(tmp_path: Path) -> None:
    from definitions import build_definitions

    origin = bare_origin(tmp_path)
    state = fetch_state(k8s_runtime(origin, tmp_path))
    graph = build_definitions(state).resolve_asset_graph()
    keys = {tuple(k.path) for k in graph.get_all_asset_keys()}
    for name in ("api", "backend"):
        for kind in ("workloads", "releases", "release_metrics", "promotions", "rollbacks"):
            assert (kind, "prod", name) in keys
    assert not any(k[-1] == "frontend" for k in keys)
    checks = {(tuple(c.asset_key.path), c.name) for c in graph.asset_check_keys}
    assert checks == {
        (("release_metrics", "prod", n), m) for n in ("api", "backend") for m in ("error_rate", "latency")
    }
    # lineage: the history assets depend on what they are computed from
    metrics_parents = {tuple(k.path) for k in graph.get(dg.AssetKey(["history", "metrics"])).parent_keys}
    delivery_parents = {tuple(k.path) for k in graph.get(dg.AssetKey(["history", "delivery"])).parent_keys}
    for name in ("api", "backend"):
        assert {
            ("releases", "prod", name),
            ("promotions", "prod", name),
            ("rollbacks", "prod", name),
        } <= metrics_parents
        assert {
            ("promotions", "prod", name),
            ("rollbacks", "prod", name),
            ("workloads", "prod", name),
        } <= delivery_parents
    assert ("gitops", "commit") in delivery_parents
