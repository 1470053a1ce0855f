"""Crash safety of ``canary_release`` on the real local playground, with the run in a separate process
(``dagster job execute`` on this project's definitions, its own DAGSTER_HOME) while a background client sends
requests to ``backend.prod:9898`` through the mesh the whole time:

- SIGKILL of the run mid-release (canary weight >= 20): the persisted canary status and the routes in the mesh
  agree, the primary keeps serving; relaunched, the run resumes from the persisted weight (never back to 0),
  advances only on ticks whose metrics it queried itself, promotes and ends Succeeded;
- SIGTERM of a run (Dagster's termination: ``DagsterExecutionInterruptedError`` inside the op): all traffic is
  routed back to the primary (VirtualService 100/0) before the run ends.

Every request of the background client must succeed (the primary serves throughout).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from tests.support.mesh_client import MeshClient
from tests.support.playground_env import PlaygroundEnv, container, deployment, new_podinfo_image, routes, status
from tests.support.procs import log_tail, stop_process

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
DAGSTER = Path(sys.executable).parent / "dagster"


def launch(env: PlaygroundEnv, tmp_path: Path, name: str, dagster_home: Path, **config: Any) -> subprocess.Popen:
    """``dagster job execute -j canary_release`` for prod/backend in a process (and session) of its own."""
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(
        yaml.safe_dump({"ops": {"release": {"config": {"target": "prod/backend", "interval": "1s", **config}}}})
    )
    log = tmp_path / f"{name}.log"
    proc_env = env.subprocess_env() | {"DAGSTER_HOME": str(dagster_home)}
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [str(DAGSTER), "job", "execute", "-f", "definitions.py", "-j", "canary_release", "-c", str(cfg)],
            cwd=ROOT,
            env=proc_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    proc.log_path = log  # type: ignore[attr-defined]
    return proc


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None, poll: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the run exited ({proc.returncode}) before {what}:\n{log_tail(proc, 60)}")
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}" + (f":\n{log_tail(proc, 60)}" if proc else ""))


def run_records(instance: dg.DagsterInstance, run_id: str, event_type: dg.DagsterEventType) -> list[Any]:
    return [
        r.event_log_entry.dagster_event.event_specific_data
        for r in instance.get_records_for_run(run_id, of_type=event_type, limit=10_000).records
    ]


def release_ticks(instance: dg.DagsterInstance, run_id: str) -> list[dict[str, Any]]:
    out = []
    for data in run_records(instance, run_id, dg.DagsterEventType.ASSET_MATERIALIZATION):
        mat = data.materialization
        if mat.asset_key == dg.AssetKey(["releases", "prod", "backend"]):
            out.append({k: v.value for k, v in mat.metadata.items()})
    return out


@pytest.fixture
def dagster_home(tmp_path: Path) -> Path:
    home = tmp_path / "dagster"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return home


def test_kill9_mid_release_then_relaunch_resumes_and_promotes(playground, tmp_path: Path, dagster_home: Path):
    env = playground
    old_image = container(deployment(env, "backend-primary"))["image"]
    image = new_podinfo_image()
    procs: list[subprocess.Popen] = []
    try:
        with MeshClient(env.mesh_proxy, "http://backend.prod:9898/") as traffic:
            first = launch(env, tmp_path, "first", dagster_home, image=image)
            procs.append(first)
            # the new revision is being analysed and the canary takes at least 20% of the traffic
            wait_for(
                lambda: (st := status(env)) is not None and st.phase.value == "Progressing" and st.canaryWeight >= 20,
                150,
                "canary weight 20",
                first,
            )
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(timeout=10)
            assert first.returncode == -signal.SIGKILL

            # what the killed run left: a consistent persisted status, the mesh at (or one step past) it,
            # the primary untouched and serving
            killed = status(env)
            weight = killed.canaryWeight
            assert killed.phase.value == "Progressing" and 20 <= weight < 50
            primary, canary = routes(env)
            assert canary in (weight, weight + 5) and primary == 100 - canary
            assert container(deployment(env, "backend-primary"))["image"] == old_image
            assert container(deployment(env, "backend"))["image"] == image
            served_before_relaunch = traffic.ok
            time.sleep(1.0)  # nobody drives the release now: the mesh keeps serving as it was left
            assert traffic.ok > served_before_relaunch and routes(env) == (primary, canary)

            # The killed run's record still says STARTED, and canary_release refuses to drive a canary another
            # active run holds. Mark it failed, as Dagster's run monitoring (or a forced terminate in the UI)
            # does for a run whose worker died, then relaunch.
            with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
                (dead,) = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
                instance.report_run_failed(dead)
            second = launch(env, tmp_path, "second", dagster_home)  # the same release, relaunched
            procs.append(second)
            assert second.wait(timeout=180) == 0, log_tail(second, 80)
        assert traffic.failures == [], traffic.failures[:20]
        assert traffic.ok > 100
    finally:
        for p in procs:
            stop_process(p)

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        runs = list(reversed(instance.get_runs()))  # oldest first
        assert len(runs) == 2 and runs[0].status == dg.DagsterRunStatus.FAILURE
        assert runs[1].status == dg.DagsterRunStatus.SUCCESS
        ticks = release_ticks(instance, runs[1].run_id)
        checks = run_records(instance, runs[1].run_id, dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    # resumed from the persisted weight: never back to 0 while progressing
    assert ticks[0]["phase"] == "Progressing" and ticks[0]["canary_weight"] >= weight
    progressing = [t["canary_weight"] for t in ticks if t["phase"] == "Progressing"]
    assert min(progressing) >= weight and progressing == sorted(progressing)
    # no promotion on stale data: every step from the resumed weight to 50 and the promotion itself were
    # taken on ticks of this run whose metric checks this run queried and passed
    first_promoting = next(i for i, t in enumerate(ticks) if t["phase"] == "Promoting")
    steps_taken = len(set(progressing) - {ticks[0]["canary_weight"]}) + (ticks[0]["canary_weight"] > canary)
    assert steps_taken >= (50 - canary) // 5
    passed_ticks = {c.metadata["tick"].value for c in checks if c.passed and c.check_name == "latency"}
    assert first_promoting in passed_ticks
    assert len(passed_ticks) >= (50 - canary) // 5 + 1
    assert ticks[-1]["phase"] == "Succeeded"
    # consistent end state
    assert status(env).phase.value == "Succeeded"
    assert container(deployment(env, "backend-primary"))["image"] == image
    assert routes(env) == (100, 0)
    assert deployment(env, "backend")["spec"]["replicas"] == 0


def test_terminated_run_routes_all_traffic_to_the_primary(playground, tmp_path: Path, dagster_home: Path):
    env = playground
    old_image = container(deployment(env, "backend-primary"))["image"]
    proc = None
    try:
        with MeshClient(env.mesh_proxy, "http://backend.prod:9898/") as traffic:
            proc = launch(env, tmp_path, "terminated", dagster_home, image=new_podinfo_image())
            wait_for(lambda: routes(env)[1] >= 10, 150, "canary weight 10", proc)
            proc.send_signal(signal.SIGTERM)  # what `dagster run terminate` and Kubernetes send
            proc.wait(timeout=90)  # Dagster records the termination in sqlite; slow under load
            assert routes(env) == (100, 0)
            time.sleep(0.5)
        assert traffic.failures == [], traffic.failures[:20]
    finally:
        stop_process(proc)
    log = Path(proc.log_path).read_text(errors="replace")
    assert "run terminated: routing all traffic to the primary" in log
    st = status(env)
    # not promoted, and the persisted status agrees with the mesh; a relaunch or a newer revision goes on
    assert st.phase.value == "Progressing" and st.canaryWeight == 0
    assert container(deployment(env, "backend-primary"))["image"] == old_image
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        (run,) = instance.get_runs()
        assert run.status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)


def test_local_backend_accepts_intervals_below_ten_seconds() -> None:
    """DESIGN: an interval below 10 s is raised to 10 s on real clusters; the local backend keeps it."""
    from types import SimpleNamespace

    from playground.controller import Controller, Settings
    from playground.models import Canary

    doc = yaml.safe_load((ROOT / "manifests" / "prod" / "backend" / "canary.yaml").read_text())
    doc["spec"]["analysis"]["interval"] = "3s"
    canary = Canary.model_validate(doc)
    assert Controller(SimpleNamespace(name="local"), Settings()).interval(canary) == 3.0
    assert Controller(SimpleNamespace(name="kubernetes"), Settings()).interval(canary) == 10.0
    assert Controller(SimpleNamespace(name="kubernetes"), Settings(interval_override=0.5)).interval(canary) == 0.5
