"""Operator controls on the real local playground (shared session environment, 1 s analysis interval), with the
installed console script run from outside the repository, as users run it:

- a release driven by another process (`playground release`): `pause` holds the weight and the checks for at
  least three ticks, `resume` continues, `promote --full` reaches Succeeded on the tick after the one that
  applied it; `playground watch` in a real terminal (tmux) shows the weight changing and ends with the release;
- `abort` under load through the public gateway: Failed, all traffic on the primary, 0 failed requests; then
  `retry` (no release process left: the command drives it) re-runs the failed revision to Succeeded;
- `spec.suspend: true` holds a new revision (no traffic change) until it is removed; `playground sync` applies
  the commits;
- confirm-rollout and rollback webhooks on the loadtester's gate API: a release waits until the gate is opened
  through the loadtester, and is rolled back when its rollback gate is opened;
- bad input: an unknown target, or promote of a Succeeded canary: one line naming the target, its phase and what
  is possible, exit 1, nothing changed;
- the Dagster job ``canary_control`` (typed config): pause and resume recorded as observations of the release
  asset (what, when, by whom, applied by which run);
- `pause`/`resume` from the CLI applied by a ``canary_release`` run: observations of the release asset recorded by
  that run, and the release materializations of the ticks that applied them say so.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest

from tests.support.playground_env import (
    PlaygroundEnv,
    container,
    deployment,
    new_podinfo_image,
    routes,
    status,
    store_snapshot,
)
from tests.support.procs import log_tail, start_process, stop_process

pytestmark = pytest.mark.integration

PLAYGROUND = Path(sys.executable).parent / "playground"
CANARY = "prod/backend/canary.yaml"
TICK = re.compile(r"^tick (\d+): (\w+) routes (\d+)/(\d+).* weight (\d+) iterations (\d+) failedChecks (\d+)(.*)$")


def cli(env: PlaygroundEnv, cwd: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(PLAYGROUND), *args],
        cwd=cwd,
        env=env.subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def wait_until(what: str, cond: Callable[[], Any], timeout: float = 240.0, proc=None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}" + (f"\n{log_tail(proc, 60)}" if proc else ""))
        time.sleep(0.2)


def ticks(proc) -> list[tuple[int, str, int, int, str]]:
    """(tick, phase, canary route, failedChecks, rest of the line) of a release process' progress lines."""
    out = []
    for line in Path(proc.log_path).read_text(errors="replace").splitlines():
        m = TICK.match(line)
        if m:
            out.append((int(m[1]), m[2], int(m[4]), int(m[7]), m[8]))
    return out


def start_release(env: PlaygroundEnv, tmp_path: Path, name: str, *args: str):
    return start_process(
        [str(PLAYGROUND), "release", "prod/backend", *args],
        log_path=tmp_path / f"{name}.log",
        env=env.subprocess_env(),
        cwd=tmp_path,
    )


def progressing_at(env: PlaygroundEnv, weight: int) -> Callable[[], bool]:
    def cond() -> bool:
        st = status(env)
        return st is not None and st.phase.value == "Progressing" and st.canaryWeight >= weight

    return cond


class Tmux:
    """A real terminal: a detached tmux session running a command; ``capture()`` is what is on screen."""

    def __init__(self, name: str, script: Path) -> None:
        self.name = name
        self.socket = f"pg-{name}"
        subprocess.run(
            ["tmux", "-L", self.socket, "new-session", "-d", "-s", name, "-x", "130", "-y", "45", f"bash {script}"],
            check=True,
        )

    def capture(self) -> str:
        r = subprocess.run(["tmux", "-L", self.socket, "capture-pane", "-p", "-t", self.name], capture_output=True)
        return r.stdout.decode(errors="replace")

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)


WEIGHT = re.compile(r"weight\s+\[[#.]+\]\s+(\d+)% canary")


# ------------------------------------------------------------------------------- pause, resume, promote --full


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux (Debian) is installed by scripts/setup.sh")
def test_pause_resume_and_promote_full_of_a_release_driven_elsewhere_with_watch(playground, tmp_path) -> None:
    env = playground
    image = new_podinfo_image()
    rel = start_release(env, tmp_path, "release", "--image", image)
    screen = tmp_path / "watch.sh"
    exports = " ".join(f"{k}='{v}'" for k, v in env.subprocess_env().items() if k.startswith(("PLAYGROUND", "PATH")))
    screen.write_text(
        f"cd {tmp_path}\nexport {exports}\n{PLAYGROUND} watch prod/backend\necho WATCH-EXIT=$?\nsleep 60\n"
    )
    term = None
    try:
        wait_until("the release at weight 10", progressing_at(env, 10), proc=rel)
        r = cli(env, tmp_path, "pause", "prod/backend")
        assert r.returncode == 0, r.stderr
        assert "pause applied by pid" in r.stdout, r.stdout  # applied by the release process, not this command
        held = status(env)
        assert held.paused and held.requests == [] and held.canaryWeight < 50
        term = Tmux(f"watch{int(time.time())}", screen)
        shown = wait_until("watch showing the held weight", lambda: "PAUSED" in term.capture() and term.capture())
        assert int(WEIGHT.search(shown)[1]) == held.canaryWeight, shown
        paused_at = [t for t in ticks(rel) if "Operator pause" in t[4]][0][0]
        wait_until("three held ticks", lambda: len([t for t in ticks(rel) if t[0] > paused_at]) >= 3, proc=rel)
        after = [t for t in ticks(rel) if t[0] >= paused_at]
        print(f"pause: held for {len(after) - 1} ticks at canary weight {held.canaryWeight}")
        assert len({(t[2], t[3]) for t in after}) == 1, after  # same weight, no failed check counted
        assert all("paused" in t[4] and "error-rate=" not in t[4] for t in after[1:]), after  # no checks run
        assert routes(env)[1] == after[0][2] and status(env).canaryWeight == held.canaryWeight

        r = cli(env, tmp_path, "resume", "prod/backend")
        assert r.returncode == 0 and "resume applied" in r.stdout, r.stdout + r.stderr
        wait_until("the weight moving again", lambda: status(env).canaryWeight > held.canaryWeight, proc=rel)
        moved = wait_until(
            "watch showing the new weight",
            lambda: (m := WEIGHT.search(term.capture())) and int(m[1]) != held.canaryWeight and m,
        )
        print(f"watch: weight {held.canaryWeight} while paused, then {moved[1]} after resume")

        r = cli(env, tmp_path, "promote", "prod/backend", "--full")
        assert r.returncode == 0 and "promote-full applied" in r.stdout, r.stdout + r.stderr
        assert rel.wait(timeout=60) == 0, log_tail(rel)
        lines = ticks(rel)
        applied = [t for t in lines if "Operator promote-full" in t[4]][0]
        succeeded = [t for t in lines if t[1] == "Succeeded"][0]
        print(f"promote --full: applied at tick {applied[0]}, Succeeded at tick {succeeded[0]}")
        # the applying tick copies the spec to the primary; the next one (once the primary rolled out) finishes
        assert succeeded[0] == applied[0] + 1, lines
        assert routes(env) == (100, 0) and container(deployment(env, "backend-primary"))["image"] == image

        end = wait_until("watch ends with the release", lambda: "WATCH-EXIT=0" in term.capture() and term.capture())
        assert "release ended Succeeded" in end
        print("watch screen at the end:\n" + end)
    finally:
        if term is not None:
            term.close()
        stop_process(rel)


# ------------------------------------------------------------------------------------------------ Ctrl-C


def test_ctrl_c_routes_all_traffic_to_the_primary_and_the_release_resumes(playground, tmp_path) -> None:
    env = playground
    rel = start_release(env, tmp_path, "release", "--image", new_podinfo_image())
    try:
        wait_until("the release at weight 10", progressing_at(env, 10), proc=rel)
        rel.send_signal(signal.SIGINT)
        assert rel.wait(timeout=120) == 130, log_tail(rel)
        lines = Path(rel.log_path).read_text(errors="replace").splitlines()
        assert lines[-1] == "prod/backend: interrupted, all traffic on the primary", log_tail(rel)
        st = status(env)
        assert routes(env) == (100, 0) and st.canaryWeight == 0 and st.driver is None
        assert st.phase.value == "Progressing"  # the release is not over: the next run resumes it
    finally:
        stop_process(rel)
    r = cli(env, tmp_path, "release", "prod/backend")
    assert r.returncode == 0, r.stdout + r.stderr
    assert status(env).phase.value == "Succeeded", r.stdout


# ---------------------------------------------------------------------------------------- abort, retry


def test_abort_under_load_then_retry_without_a_new_commit(playground, tmp_path) -> None:
    env = playground
    gateway = f"{env.gateway_url}/api/echo"
    with httpx.Client(trust_env=False, timeout=10) as c:  # the frontend forwards /api/echo to backend.prod
        assert c.post(gateway, content=b"ping").status_code < 400
    rel = start_release(env, tmp_path, "release", "--image", new_podinfo_image())
    load = None
    try:
        wait_until("the release at weight 10", progressing_at(env, 10), proc=rel)
        load = subprocess.Popen(
            ["hey", "-z", "12s", "-c", "2", "-q", "20", "-m", "POST", "-d", "x", gateway],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        wait_until("the release at weight 20 under load", progressing_at(env, 20), proc=rel)
        r = cli(env, tmp_path, "abort", "prod/backend")
        assert r.returncode == 0 and "abort applied" in r.stdout, r.stdout + r.stderr
        assert rel.wait(timeout=30) == 1, log_tail(rel)  # `playground release`: 1 = rolled back
        st = status(env)
        assert st.phase.value == "Failed" and st.canaryWeight == 0 and routes(env) == (100, 0)
        assert deployment(env, "backend")["spec"]["replicas"] == 0
        assert any("Canary aborted by" in e["message"] or "Operator abort" in e["message"] for e in st.events)
        report, _ = load.communicate(timeout=60)
        codes = dict(re.findall(r"\[(\d{3})\]\s+(\d+) responses", report))
        print(f"gateway load during the abort: {codes}")
        assert codes and all(code.startswith("2") for code in codes), report
        assert "Error distribution" not in report, report
    finally:
        stop_process(rel)
        if load is not None and load.poll() is None:
            load.kill()

    # retry: no release process drives the canary any more, so the command drives it to a result
    failed_revision = status(env).lastAppliedSpec
    r = cli(env, tmp_path, "retry", "prod/backend")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Operator retry by" in r.stdout and "retry applied by pid" in r.stdout, r.stdout
    st = status(env)
    assert st.phase.value == "Succeeded" and st.lastAppliedSpec == failed_revision, r.stdout


# ------------------------------------------------------------------------------------------------ suspend


def test_spec_suspend_holds_a_release(playground, tmp_path) -> None:
    env = playground
    original = env.read(CANARY)
    before = status(env)
    image = new_podinfo_image()
    env.commit(
        {
            CANARY: lambda t: t.replace("  provider: istio\n", "  provider: istio\n  suspend: true\n", 1),
            "prod/backend/deployment.yaml": lambda t: re.sub(r"podinfo:[0-9.]+", image.split("/")[-1], t, count=1),
        },
        "suspend the backend canary, new image",
    )
    try:
        r = cli(env, tmp_path, "sync")
        assert r.returncode == 0 and "prod/backend: new revision" in r.stdout, r.stdout + r.stderr
        r = cli(env, tmp_path, "release", "prod/backend", "--max-ticks", "4")
        assert r.returncode == 3, r.stdout + r.stderr  # held: the new revision is not released after four ticks
        assert r.stdout.count("suspended (spec.suspend)") >= 4, r.stdout
        st = status(env)
        assert st.phase == before.phase and st.lastAppliedSpec == before.lastAppliedSpec and routes(env) == (100, 0)
        assert deployment(env, "backend")["spec"]["replicas"] == 0  # the canary was not even scaled up
    finally:
        env.commit({CANARY: original}, "unsuspend the backend canary")
        assert cli(env, tmp_path, "sync").returncode == 0
    r = cli(env, tmp_path, "release", "prod/backend")
    assert r.returncode == 0, r.stdout + r.stderr
    assert status(env).phase.value == "Succeeded" and container(deployment(env, "backend-primary"))["image"] == image


# -------------------------------------------------------------------------------------------------- gates

GATES = """      - name: approve-rollout
        type: confirm-rollout
        url: http://flagger-loadtester.prod/gate/check
      - name: manual-rollback
        type: rollback
        url: http://flagger-loadtester.prod/rollback/check
"""


def test_loadtester_gates_move_a_release_as_in_flagger(playground, tmp_path) -> None:
    env = playground
    original = env.read(CANARY)
    image = new_podinfo_image()
    env.commit(
        {
            CANARY: lambda t: t.replace("    webhooks:\n", "    webhooks:\n" + GATES, 1),
            "prod/backend/deployment.yaml": lambda t: re.sub(r"podinfo:[0-9.]+", image.split("/")[-1], t, count=1),
        },
        "gates on the backend canary, new image",
    )
    assert cli(env, tmp_path, "sync").returncode == 0
    rel = start_release(env, tmp_path, "release")
    gate = {"name": "backend", "namespace": "prod"}

    def loadtester(path: str) -> int:
        with httpx.Client(proxy=env.mesh_proxy, trust_env=False, timeout=10) as c:
            return c.post(f"http://flagger-loadtester.prod{path}", json=gate).status_code

    try:
        wait_until("Waiting for approval", lambda: status(env).phase.value == "Waiting", proc=rel)
        time.sleep(3)  # several ticks: the closed gate keeps it waiting, nothing scaled up
        assert status(env).phase.value == "Waiting" and deployment(env, "backend")["spec"]["replicas"] == 0
        assert loadtester("/gate/open") == 202
        wait_until("the release at weight 10 once the gate opened", progressing_at(env, 10), proc=rel)
        assert loadtester("/rollback/open") == 202
        assert rel.wait(timeout=30) == 1, log_tail(rel)
        st = status(env)
        assert st.phase.value == "Failed" and routes(env) == (100, 0)
        assert any("manual webhook manual-rollback invoked" in e["message"] for e in st.events), st.events
    finally:
        stop_process(rel)
        loadtester("/rollback/close")
        loadtester("/gate/close")
        env.commit({CANARY: original}, "backend canary without gates")
        cli(env, tmp_path, "sync")


# ---------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "args, expected",
    [
        (("promote", "prod/nope"), "prod/nope: no such canary"),
        (("resume", "prod/backend"), "prod/backend: cannot resume a canary that is "),
        (("abort", "backend"), "target 'backend' must be NAMESPACE/NAME"),
    ],
)
def test_bad_control_is_one_line_exit_1_and_changes_nothing(playground, tmp_path, args, expected) -> None:
    env = playground
    before = store_snapshot(env.home)
    r = cli(env, tmp_path, *args)
    assert r.returncode == 1 and r.stdout == "", (r.stdout, r.stderr)
    assert len(r.stderr.strip().splitlines()) == 1 and expected in r.stderr, r.stderr
    assert store_snapshot(env.home) == before


def test_promote_of_a_succeeded_canary_names_its_phase_and_what_is_possible(playground, tmp_path) -> None:
    env = playground
    if status(env).phase.value != "Succeeded":
        assert cli(env, tmp_path, "release", "prod/backend", "--image", new_podinfo_image()).returncode == 0
    before = store_snapshot(env.home)
    r = cli(env, tmp_path, "promote", "prod/backend")
    assert r.returncode == 1
    assert r.stderr.strip() == (
        "error: prod/backend: cannot promote a canary that is Succeeded; possible now: pause"
    ), r.stderr
    assert store_snapshot(env.home) == before


# ----------------------------------------------------------------------------------------------- Dagster


def test_canary_control_job_records_each_intervention_on_the_release_asset(playground) -> None:
    from jobs import canary_control

    env = playground
    with dg.DagsterInstance.ephemeral() as instance:
        results = {}
        for action in ("pause", "resume"):
            results[action] = canary_control.execute_in_process(
                run_config={
                    "ops": {"control_release": {"config": {"target": "prod/backend", "action": action, "by": "ops"}}}
                },
                resources={"playground": env.resource()},
                instance=instance,
            )
            assert results[action].success
        bad = canary_control.execute_in_process(
            run_config={"ops": {"control_release": {"config": {"target": "prod/backend", "action": "resume"}}}},
            resources={"playground": env.resource()},
            instance=instance,
            raise_on_error=False,
        )
        assert not bad.success  # resume of a canary that is not paused: nothing queued
        assert "cannot resume a canary that is" in str(bad.failure_data_for_node("control_release").error)
        records = instance.fetch_observations(dg.AssetKey(["releases", "prod", "backend"]), limit=20).records
        seen = [
            {k: v.value for k, v in r.asset_observation.metadata.items()}
            for r in records
            if "operator_action" in r.asset_observation.metadata
        ]
        actions = sorted({(m["operator_action"], m["requested_by"], m["applied"]) for m in seen})
        assert actions == [("pause", "ops", "applied"), ("resume", "ops", "applied")], seen
        assert all(m["requested_at"] and m["recorded_by_run"] for m in seen)
    assert not status(env).paused


def test_cli_controls_applied_by_a_dagster_release_run_are_on_its_lineage(playground, tmp_path) -> None:
    import threading

    from jobs import canary_release

    env = playground
    results: list[dg.ExecuteInProcessResult] = []
    with dg.DagsterInstance.ephemeral() as instance:
        config = {"target": "prod/backend", "interval": "1s", "image": new_podinfo_image()}
        run = threading.Thread(
            target=lambda: results.append(
                canary_release.execute_in_process(
                    run_config={"ops": {"release": {"config": config}}},
                    resources={"playground": env.resource()},
                    instance=instance,
                    raise_on_error=False,
                )
            )
        )
        run.start()
        try:
            wait_until("the release at weight 10", progressing_at(env, 10), timeout=120)
            for action in ("pause", "resume"):
                r = cli(env, tmp_path, action, "prod/backend")
                assert r.returncode == 0 and f"{action} applied by dagster run" in r.stdout, r.stdout + r.stderr
        finally:
            run.join(timeout=180)
        assert results and results[0].success
        run_id = results[0].run_id
        key = dg.AssetKey(["releases", "prod", "backend"])
        seen = [
            {k: v.value for k, v in r.asset_observation.metadata.items()}
            for r in instance.fetch_observations(key, limit=50).records
            if "operator_action" in r.asset_observation.metadata
        ]
        assert sorted(m["operator_action"] for m in seen) == ["pause", "resume"], seen
        assert all(m["applied"] == "applied" and m["recorded_by_run"] == run_id for m in seen), seen
        assert all("@" in m["requested_by"] and m["requested_at"] for m in seen), seen
        mats = [e.event_specific_data.materialization for e in results[0].get_asset_materialization_events()]
        tagged = [m for m in mats if m.asset_key == key and any(k.startswith("operator/") for k in m.metadata)]
        assert len(tagged) == 2  # the two ticks that applied them say so in their release materialization
    assert status(env).phase.value == "Succeeded"
