"""A release whose run process dies is taken over automatically, on a real playground with Dagster (``playground
up --manifests DIR`` as users run it: dagster-daemon and dagster-webserver on the project's workspace; DIR = the
project's manifests without prod/frontend, short windows: the playground tests/test_graph.py shares, see
tests/conftest.py).

A commit to the GitOps origin changes prod/backend; the sensors launch gitops_sync and canary_release. Once the
canary takes traffic, the run's worker process (``dagster api execute_run``) is killed with SIGKILL. Dagster's
run monitoring marks the run failed (its worker is gone) and run retries (``run_retries`` in the dagster.yaml
``up`` writes, not for op failures) launch it again with the same config and tags; the new run resumes from the
canary status persisted after every tick (its first tick is at or past the weight the killed run reached, never
back to 0) and promotes. The canary is never left at a mid weight.
"""

from __future__ import annotations

import os
import re
import signal
import uuid
from pathlib import Path

import pytest

from tests.support import dagster_playground as dp
from tests.support.playground_env import BACKEND_DEPLOYMENT, with_env_var

pytestmark = pytest.mark.integration

IDLE = ("Initialized", "Succeeded", "Failed")


def canary_status(home: Path, name: str = "backend") -> dict | None:
    from playground.local.store import Store

    store = Store(home / "state.db")
    try:
        st = store.get_canary_status("prod", name)
    finally:
        store.close()
    return st[0] if st else None


def run_worker_pid(pg: dp.DagsterPlayground, run_id: str) -> int | None:
    """The run worker's pid, from the run's own engine event ("Started process for run (pid: N).")."""
    data = pg.graphql(
        "query($id: ID!) { logsForRun(runId: $id) { ... on EventConnection { events { __typename"
        " ... on EngineEvent { message } } } } }",
        {"id": run_id},
    )
    for e in data["logsForRun"]["events"]:
        m = re.search(r"Started process for run \(pid: (\d+)\)", e.get("message") or "")
        if m:
            return int(m.group(1))
    return None


def tags(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["tags"]}


def release_ticks(pg: dp.DagsterPlayground, run_id: str) -> list[dict]:
    data = pg.graphql(
        "query($id: ID!) { logsForRun(runId: $id) { ... on EventConnection { events { __typename"
        " ... on MaterializationEvent { assetKey { path } metadataEntries { label"
        " ... on IntMetadataEntry { intValue } ... on TextMetadataEntry { text } } } } } } }",
        {"id": run_id},
    )
    out = []
    for e in data["logsForRun"]["events"]:
        if e["__typename"] == "MaterializationEvent" and e["assetKey"]["path"] == ["releases", "prod", "backend"]:
            out.append({m["label"]: m.get("intValue", m.get("text")) for m in e["metadataEntries"]})
    return out


def test_a_release_whose_run_is_killed_is_relaunched_and_resumes(dagster_backend: dp.DagsterPlayground) -> None:
    pg = dagster_backend  # bootstrapped through the sensors, no run in flight
    home = pg.home
    # idle: initialized by the bootstrap, or done with an earlier release (a new revision always starts from there)
    assert (canary_status(home) or {}).get("phase") in IDLE, canary_status(home)
    before = {r["runId"] for r in pg.runs("canary_release")}
    mark = f"RELEASE_MARK_{uuid.uuid4().hex[:8].upper()}"  # a new revision, whatever revisions came before
    pg.commit({BACKEND_DEPLOYMENT: with_env_var(mark, "takeover")}, "backend: a new revision")

    def progressing_run() -> dict | None:
        st = canary_status(home) or {}
        if st.get("phase") != "Progressing" or int(st.get("canaryWeight") or 0) < 10:
            return None
        return next(
            (r for r in pg.runs("canary_release") if r["runId"] not in before and r["status"] == "STARTED"), None
        )

    first = dp.wait_for(progressing_run, 300, "the release to shift 10% of the traffic", poll=0.2)
    pid = dp.wait_for(lambda: run_worker_pid(pg, first["runId"]), 30, "the run worker's pid")
    os.kill(pid, signal.SIGKILL)
    killed_weight = int((canary_status(home) or {})["canaryWeight"])
    assert 10 <= killed_weight < 50

    # taken over: a retry of the killed run (same target tag), which promotes
    def retry() -> dict | None:
        return next(
            (r for r in pg.runs("canary_release") if tags(r).get("dagster/parent_run_id") == first["runId"]), None
        )

    second = dp.wait_for(retry, 180, "Dagster to relaunch the killed run")
    assert tags(second)["gitops-playground/target"] == "prod-backend"
    killed = next(r for r in pg.runs("canary_release") if r["runId"] == first["runId"])
    assert killed["status"] == "FAILURE"
    dp.wait_for(
        lambda: (
            next(r for r in pg.runs("canary_release") if r["runId"] == second["runId"])["status"]
            in ("SUCCESS", "FAILURE")
        ),
        300,
        "the relaunched release to finish",
    )
    done = next(r for r in pg.runs("canary_release") if r["runId"] == second["runId"])
    assert done["status"] == "SUCCESS", pg.run_failure(second["runId"])
    st = canary_status(home) or {}
    assert st.get("phase") == "Succeeded" and int(st.get("canaryWeight") or 0) == 0
    # resumed from the persisted weight: the relaunch never sent the canary back to 0 while progressing
    ticks = release_ticks(pg, second["runId"])
    progressing = [t["canary_weight"] for t in ticks if t.get("phase") == "Progressing"]
    assert progressing and min(progressing) >= killed_weight, ticks[:5]
    print(
        f"\nrun {first['runId'][:8]} killed at weight {killed_weight}; retried as {second['runId'][:8]}, "
        f"first tick at weight {progressing[0]}, promoted"
    )


def _failed_release_run(instance, will_retry: bool):
    import dagster as dg

    from jobs import canary_release

    run = instance.create_run_for_job(
        canary_release, run_config={"ops": {"release": {"config": {"target": "prod/backend"}}}}
    )
    if will_retry:
        instance.add_run_tags(run.run_id, {"dagster/will_retry": "true"})
    instance.report_run_failed(run, "the run worker died")
    (record,) = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
    return instance.get_run_by_id(run.run_id), record.event_log_entry.dagster_event


@pytest.mark.parametrize("will_retry", [True, False])
def test_a_failed_release_that_will_not_be_retried_goes_back_to_the_primary(playground, will_retry: bool) -> None:
    """The fallback when run retries give up (or are off): the failure sensor routes all of the target's traffic to
    the primary, so a release nobody drives is never left at a mid weight; a run that will be retried is left to
    its retry."""
    import dagster as dg

    from sensors import failed_run_alerts
    from tests.support.playground_env import new_podinfo_image, routes, status

    env = playground
    rt = env.runtime()
    try:
        from playground import pipeline
        from playground.images import set_workload_image

        set_workload_image(rt.git("takeover-test"), "prod/backend", new_podinfo_image())
        pipeline.sync(rt)
        ctl = rt.controller(log=lambda _line: None, interval=1.0)
        ctl.run("prod/backend", should_stop=lambda: routes(env)[1] >= 10, max_ticks=200)
        assert status(env).phase.value == "Progressing" and routes(env)[1] >= 10
        mid = routes(env)
        instance = dg.DagsterInstance.ephemeral()
        run, failure = _failed_release_run(instance, will_retry)
        with dg.build_run_status_sensor_context(
            sensor_name="failed_run_alerts",
            dagster_instance=instance,
            dagster_run=run,
            dagster_event=failure,
            resources={"playground": env.resource()},
        ).for_run_failure() as context:
            failed_run_alerts(context)
        if will_retry:
            assert routes(env) == mid and status(env).canaryWeight == mid[1]
        else:
            assert routes(env) == (100, 0) and status(env).canaryWeight == 0
            assert status(env).phase.value == "Progressing"  # resumable by a later run
        # leave the session playground idle: a later run resumes and promotes
        assert ctl.run("prod/backend", max_ticks=300).phase.value == "Succeeded"
    finally:
        rt.controller(log=lambda _line: None).make_safe("prod/backend")
        rt.close()
