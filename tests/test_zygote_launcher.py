"""The zygote run launcher (``launcher.ZygoteRunLauncher``, the run launcher of the instance ``playground up``
writes): runs are launched by the real ``dagster job launch`` against a real on-disk instance whose dagster.yaml
names the launcher; each run worker is a child forked from the zygote (``python -m launcher.zygote``), executes
the run as ``dagster api execute_run`` does, can be terminated (the op sees Dagster's interruption and cleans up)
and, once killed, is reported as a failed worker to run monitoring."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from playground.local.dagster_instance import dagster_yaml
from tests.support.dagster_playground import clean_env, wait_for

pytestmark = pytest.mark.integration

DAGSTER = Path(sys.executable).parent / "dagster"

CODE = textwrap.dedent(
    """
    import os, time
    import dagster as dg

    class Mode(dg.Config):
        hold_s: float = 0.0

    @dg.op
    def work(context, config: Mode):
        cmdline = open("/proc/self/cmdline", "rb").read().replace(b"\\0", b" ").decode()
        context.log.info(f"worker pid {os.getpid()} cmdline {cmdline}")
        deadline = time.monotonic() + config.hold_s
        try:
            while time.monotonic() < deadline:
                time.sleep(0.1)
        except dg.DagsterExecutionInterruptedError:
            context.log.warning("interrupted: cleaned up")
            raise

    @dg.job(executor_def=dg.in_process_executor)
    def tiny():
        work()

    defs = dg.Definitions(jobs=[tiny])
    """
)


@pytest.fixture
def home(tmp_path: Path):
    dh = tmp_path / "dagster"
    dh.mkdir()
    # the instance playground up writes, with the direct run coordinator: `dagster job launch` launches at once
    text = dagster_yaml().replace("class: QueuedRunCoordinator", "class: DefaultRunCoordinator")
    text = text.split("  config:\n    # start queued runs", 1)[0] + "concurrency:" + text.split("concurrency:", 1)[1]
    (dh / "dagster.yaml").write_text(text)
    (tmp_path / "tiny.py").write_text(CODE)
    os.environ["DAGSTER_HOME"] = str(dh)
    import dagster as dg

    instance = dg.DagsterInstance.get()
    try:
        yield tmp_path, instance
    finally:
        instance.dispose()
        os.environ.pop("DAGSTER_HOME", None)


def launch(tmp_path: Path, hold_s: float = 0.0) -> str:
    config = json.dumps({"ops": {"work": {"config": {"hold_s": hold_s}}}})
    log = tmp_path / "launch.log"
    with open(log, "ab") as out:  # a file: the run worker inherits it and outlives the command
        done = subprocess.run(
            [str(DAGSTER), "job", "launch", "-f", "tiny.py", "-j", "tiny", "--config-json", config],
            cwd=tmp_path,
            env=clean_env(DAGSTER_HOME=str(tmp_path / "dagster")),
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=300,
        )
    assert done.returncode == 0, log.read_text()[-3000:]
    import dagster as dg

    instance = dg.DagsterInstance.get()
    try:
        (run,) = instance.get_runs(limit=1)
        return run.run_id
    finally:
        instance.dispose()


def messages(instance, run_id: str) -> list[str]:
    return [e.message or "" for e in instance.all_logs(run_id)]


def status(instance, run_id: str):
    return instance.get_run_by_id(run_id).status


def worker(instance, run_id: str) -> dict:
    from launcher import WORKER_TAG

    return json.loads(instance.get_run_by_id(run_id).tags[WORKER_TAG])


def test_a_run_is_executed_by_a_child_of_the_zygote(home) -> None:
    import dagster as dg

    tmp_path, instance = home
    run_id = launch(tmp_path)
    wait_for(lambda: instance.get_run_by_id(run_id).is_finished, 180, "the run to finish")
    assert status(instance, run_id) == dg.DagsterRunStatus.SUCCESS, messages(instance, run_id)
    w = worker(instance, run_id)
    logs = messages(instance, run_id)
    # the process Dagster reports as the run's worker is the one the launcher tagged, and it is a fork of the
    # zygote (same command line), not a fresh `dagster api execute_run` interpreter
    assert f"Started process for run (pid: {w['pid']})." in logs
    line = next(m for m in logs if m.startswith("worker pid"))
    assert line.startswith(f"worker pid {w['pid']} ") and "-m launcher.zygote" in line


def test_a_run_is_terminated_through_its_worker_and_a_dead_worker_is_reported(home) -> None:
    import dagster as dg
    from dagster._core.launcher import WorkerStatus

    tmp_path, instance = home
    run_id = launch(tmp_path, hold_s=120)
    wait_for(lambda: status(instance, run_id) == dg.DagsterRunStatus.STARTED, 180, "the run to start")
    launcher = instance.run_launcher
    assert type(launcher).__name__ == "ZygoteRunLauncher"
    assert launcher.check_run_worker_health(instance.get_run_by_id(run_id)).status == WorkerStatus.RUNNING
    assert launcher.terminate(run_id)
    wait_for(lambda: instance.get_run_by_id(run_id).is_finished, 120, "the run to be canceled")
    assert status(instance, run_id) == dg.DagsterRunStatus.CANCELED
    assert "interrupted: cleaned up" in messages(instance, run_id)

    # a worker killed hard: run monitoring is told its worker failed (and run retries relaunch the run)
    run_id = launch(tmp_path, hold_s=120)
    wait_for(lambda: status(instance, run_id) == dg.DagsterRunStatus.STARTED, 180, "the second run to start")
    pid = worker(instance, run_id)["pid"]
    os.kill(pid, signal.SIGKILL)
    result = wait_for(
        lambda: (
            r
            if (r := launcher.check_run_worker_health(instance.get_run_by_id(run_id))).status == WorkerStatus.FAILED
            else None
        ),
        30,
        "the killed worker to be reported failed",
    )
    assert str(pid) in (result.msg or "")
