"""The asset graph follows the GitOps repository, on the real local playground with Dagster's daemon and
webserver, started as users start it (``playground up --manifests DIR``, the console script, outside the
repository; shared with tests/test_run_takeover.py: see tests/conftest.py), with real git commits and the
webserver's GraphQL API (what the UI shows):

- ``up --manifests DIR`` shows exactly DIR's services (DIR = the project's manifests without prod/frontend);
- a metric check executed on its own (a run of the asset check, as the UI's "Execute" launches it) evaluates
  the metric now against Prometheus for the primary: it passes with traffic (value, query as metadata) and
  fails without (no values);
- a commit adding a Canary (prod/api, a copy of prod/backend): after its sync, with no process restarted, the
  graph has its workloads/releases/release_metrics/promotions/rollbacks assets and metric checks (which run at
  once: the daemon and the webserver share the reloaded code server); its first
  release and a promotion are recorded on those declared assets, and no event in the instance is on a key the
  graph lacks; a commit removing it takes its assets out of the graph, and `playground history` still lists
  its promotion;
- a commit with an invalid Canary fails its sync (with the validation report) and changes nothing in the graph.
"""

from __future__ import annotations

import pytest

from tests.support.dagster_playground import FINISHED, DagsterPlayground, copy_target, wait_for
from tests.support.mesh_client import MeshClient

pytestmark = pytest.mark.integration

API_FILES = ("canary.yaml", "deployment.yaml", "hpa.yaml", "image-policy.yaml")
KINDS = ("workloads", "releases", "release_metrics", "promotions", "rollbacks")


def keys_of(name: str) -> set[tuple[str, ...]]:
    return {(kind, "prod", name) for kind in KINDS}


@pytest.fixture
def pg(dagster_backend: DagsterPlayground) -> DagsterPlayground:
    """The shared playground of tests/conftest.py (``up --manifests DIR``, DIR = the project's manifests without
    prod/frontend), after its bootstrap through the sensors, with no run in flight."""
    return dagster_backend


def release_runs(pg: DagsterPlayground, target: str) -> list[dict]:
    tag = target.replace("/", "-")
    return [
        r
        for r in pg.runs("canary_release")
        if {t["key"]: t["value"] for t in r["tags"]}.get("gitops-playground/target") == tag
    ]


def sync_finished(pg: DagsterPlayground, sha: str) -> dict | None:
    run = pg.sync_run_of(sha)
    return run if run and run["status"] in ("SUCCESS", "FAILURE") else None


# ------------------------------------------------------------------------------------------------ tests


def test_up_with_manifests_dir_shows_exactly_its_services(pg: DagsterPlayground) -> None:
    assert pg.target_keys() == keys_of("backend")
    assert {c for c in pg.check_keys() if c[0][0] == "release_metrics"} == {
        (("release_metrics", "prod", "backend"), "error_rate"),
        (("release_metrics", "prod", "backend"), "latency"),
    }
    # lineage: the history assets depend on the release assets they are computed from
    data = pg.graphql(
        '{ assetNodes(assetKeys: [{path: ["history", "metrics"]}, {path: ["history", "delivery"]}]) {'
        " assetKey { path } dependencyKeys { path } } }"
    )
    deps = {tuple(n["assetKey"]["path"]): {tuple(d["path"]) for d in n["dependencyKeys"]} for n in data["assetNodes"]}
    assert {
        ("releases", "prod", "backend"),
        ("promotions", "prod", "backend"),
        ("rollbacks", "prod", "backend"),
    } <= deps[("history", "metrics")]
    assert {("promotions", "prod", "backend"), ("rollbacks", "prod", "backend")} <= deps[("history", "delivery")]


LAUNCH = """
mutation($p: ExecutionParams!) {
  launchRun(executionParams: $p) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""


def execute_checks(pg: DagsterPlayground, target: str, checks: list[str]) -> dict:
    """Launch a run of the target's metric checks as the UI's "Execute" does; wait for it; return the run."""
    location, repository = pg.location()
    ns, name = target.split("/")
    params = {
        "selector": {
            "repositoryLocationName": location,
            "repositoryName": repository,
            "pipelineName": "__ASSET_JOB",
            "assetSelection": [],
            "assetCheckSelection": [{"assetKey": {"path": ["release_metrics", ns, name]}, "name": c} for c in checks],
        },
        "mode": "default",
    }
    res = pg.graphql(LAUNCH, {"p": params})["launchRun"]
    assert res["__typename"] == "LaunchRunSuccess", res
    run_id = res["run"]["runId"]

    def finished():
        runs = [r for r in pg.runs() if r["runId"] == run_id]
        return runs[0] if runs and runs[0]["status"] in FINISHED else None

    return wait_for(finished, 180, f"check run {run_id}")


def latest_evaluation(pg: DagsterPlayground, target: str, check: str, run_id: str) -> tuple[bool, dict]:
    ns, name = target.split("/")
    execs = [e for e in pg.check_executions(("release_metrics", ns, name), check) if e["runId"] == run_id]
    assert execs and execs[0]["evaluation"], execs
    ev = execs[0]["evaluation"]
    meta = {m["label"]: m.get("text", m.get("floatValue", m.get("intValue"))) for m in ev["metadataEntries"]}
    return ev["success"], meta


def test_metric_check_executed_alone_evaluates_now_against_prometheus(pg: DagsterPlayground) -> None:
    with MeshClient(f"http://127.0.0.1:{pg.ports['mesh']}", "http://backend.prod:9898/") as traffic:
        wait_for(lambda: traffic.ok > 50, 60, "traffic through the mesh")
        # the metric windows are 5 s: let Prometheus (1 s scrapes) see a few seconds of it
        wait_for(lambda: traffic.ok > 150, 60, "a few seconds of traffic")
        run = execute_checks(pg, "prod/backend", ["latency", "error_rate"])
    assert run["status"] == "SUCCESS", run
    for check, limit in (("latency", 500), ("error_rate", 1)):
        passed, meta = latest_evaluation(pg, "prod/backend", check, run["runId"])
        assert passed, meta
        assert isinstance(meta["value"], float) and meta["value"] <= limit, meta
        assert "backend-primary" in meta["query"] and "istio_request" in meta["query"]
        assert meta["workload"] == "prod/backend-primary"

    # without traffic the 5 s window has no requests: no values, a failed check (noData: fail, Flagger's default)
    def failed_now():
        r = execute_checks(pg, "prod/backend", ["error_rate"])
        ok, meta = latest_evaluation(pg, "prod/backend", "error_rate", r["runId"])
        return (r, meta) if not ok else None

    run, meta = wait_for(failed_now, 120, "an error_rate check failing once traffic stopped", poll=2)
    assert run["status"] in ("SUCCESS", "FAILURE")  # a failed ERROR-severity check may fail the run
    assert meta["value"] == "no values" and "no values" in meta["message"]


def test_a_commit_adding_then_removing_a_canary_changes_the_graph(pg: DagsterPlayground) -> None:
    before = pg.target_keys()
    backend = {f: pg.read(f"prod/backend/{f}") for f in API_FILES}
    sha = pg.commit({f"prod/api/{f}": copy_target(text) for f, text in backend.items()}, "add prod/api")
    # the graph gets prod/api's assets and checks, with every process still the same
    wait_for(lambda: keys_of("api") <= pg.target_keys(), 180, "prod/api's assets in the graph")
    assert pg.target_keys() == before | keys_of("api")
    assert {(("release_metrics", "prod", "api"), "error_rate"), (("release_metrics", "prod", "api"), "latency")} <= (
        pg.check_keys()
    )
    sync = wait_for(lambda: sync_finished(pg, sha), 180, "the sync of the commit adding prod/api")
    assert sync["status"] == "SUCCESS"
    # its checks run at once: the daemon launches the run on the same (reloaded) code server as the UI's graph
    run = execute_checks(pg, "prod/api", ["latency"])
    _, meta = latest_evaluation(pg, "prod/api", "latency", run["runId"])
    assert meta["workload"] in ("prod/api-primary", "prod/api") and "api" in meta["query"]
    # its first release (bootstrap) is recorded on the declared assets
    wait_for(
        lambda: any(r["status"] == "SUCCESS" for r in release_runs(pg, "prod/api")), 240, "prod/api's first release"
    )
    assert pg.materializations(("workloads", "prod", "api"))
    assert pg.materializations(("releases", "prod", "api"))

    # a new image: a real release of prod/api with metric checks, promoted
    done_before = len(release_runs(pg, "prod/api"))
    pg.commit({"prod/api/deployment.yaml": lambda t: t.replace("podinfo:6.7.0", "podinfo:6.7.9")}, "api: podinfo 6.7.9")
    wait_for(
        lambda: len([r for r in release_runs(pg, "prod/api") if r["status"] in ("SUCCESS", "FAILURE")]) > done_before,
        300,
        "prod/api's release of 6.7.9",
    )
    promotions = wait_for(lambda: pg.materializations(("promotions", "prod", "api")), 60, "prod/api's promotion")
    evaluations = pg.check_executions(("release_metrics", "prod", "api"), "error_rate")
    assert any(e["evaluation"] and e["evaluation"]["success"] for e in evaluations)
    assert {e["partition"] for e in evaluations} >= {promotions[0]["partition"]}
    # no event of any run landed on an asset key missing from the graph
    assets = pg.instance_assets()
    assert assets and all(assets.values()), [k for k, defined in assets.items() if not defined]

    # a commit removing it: its assets leave the graph; its past releases stay in the instance
    sha = pg.commit({f"prod/api/{f}": None for f in API_FILES}, "remove prod/api")
    wait_for(lambda: not (keys_of("api") & pg.target_keys()), 180, "prod/api's assets leaving the graph")
    assert pg.target_keys() == before
    assert not any(c[0] == ("release_metrics", "prod", "api") for c in pg.check_keys())
    assert wait_for(lambda: sync_finished(pg, sha), 120, "the sync removing prod/api")["status"] == "SUCCESS"
    assert pg.instance_assets()[("promotions", "prod", "api")] is False  # kept, no longer declared
    history = pg.cli("history", "--target", "prod/api", "--format", "csv")
    assert history.returncode == 0, history.stderr
    rows = [line for line in history.stdout.splitlines()[1:] if line.startswith("prod/api,")]
    assert rows and any("Succeeded" in r for r in rows), history.stdout


def test_an_invalid_canary_commit_changes_nothing_in_the_graph(pg: DagsterPlayground) -> None:
    keys, checks = pg.target_keys(), pg.check_keys()
    bad = copy_target(pg.read("prod/backend/canary.yaml"), "backend", "bad").replace("threshold: 10", "threshold: ten")
    sha = pg.commit({"prod/bad/canary.yaml": bad}, "add an invalid canary")
    try:
        run = wait_for(lambda: sync_finished(pg, sha), 180, "the sync of the invalid commit")
        assert run["status"] == "FAILURE"
        why = pg.run_failure(run["runId"])
        assert "invalid manifests, nothing applied" in why
        assert "prod/bad/canary.yaml" in why and "threshold" in why
        assert pg.target_keys() == keys and pg.check_keys() == checks
    finally:
        fixed = pg.commit({"prod/bad/canary.yaml": None}, "remove the invalid canary")
        wait_for(lambda: sync_finished(pg, fixed), 180, "the sync of the fix")
    assert pg.target_keys() == keys
