"""The supervisor keeps the local playground's components alive (``playground.local.supervisor``), on the real
session playground: a release of prod/backend runs (``playground release``, its own process) while ``hey``
sends requests to ``backend.prod:9898`` through the mesh, and each component is killed with SIGKILL in turn:
Envoy (both processes, one after the other), Prometheus, the registry and the node agent.

Each is restarted by the supervisor and answers again (a new pid recorded in env.json); the restarted node
agent adopts the replicas (same pids, still ready); the release still promotes; and the requests lost are at
most the ones in flight on the killed Envoy (hey's concurrency per Envoy kill), none for the other components.
The heal times and the loss are printed (``-s``); bench/supervise.py measures them on a playground of its own.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from playground.local.env import process_alive
from tests.support.dagster_playground import wait_for
from tests.support.playground_env import container, deployment, new_podinfo_image, routes, status
from tests.support.procs import finish_hey, start_hey, stop_process
from tests.support.supervision import KILLABLE, kill_and_wait_healed, replica_pids

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
HEY_CONCURRENCY = 8
KILLED = KILLABLE


def test_kill9_of_each_component_during_a_release_under_load_is_healed(playground, tmp_path: Path) -> None:
    env = playground
    image = new_podinfo_image()
    log = tmp_path / "release.log"
    hey = release = None
    try:
        hey = start_hey(
            "http://backend.prod:9898/",
            duration=600,
            concurrency=HEY_CONCURRENCY,
            rate_per_worker=25,
            proxy=env.mesh_proxy,
            timeout=20,
        )
        with open(log, "ab") as out:
            release = subprocess.Popen(
                [str(Path(sys.executable).parent / "playground"), "release", "prod/backend", "--image", image],
                cwd=tmp_path,
                env=env.subprocess_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def shifting() -> bool:
            if release.poll() is not None:
                return True  # it ended before shifting: reported just below
            st = status(env)
            return bool(st and st.phase.value == "Progressing" and routes(env)[1] > 0)

        wait_for(shifting, 180, f"the release to start shifting traffic (its log: {log})", poll=0.1)
        assert release.poll() is None, log.read_text()

        healed: dict[str, float] = {}
        for name in KILLED:
            assert status(env).phase.value == "Progressing", "the release ended before every kill"
            before = replica_pids(env)
            seconds, old, new = kill_and_wait_healed(env, name)
            healed[name] = seconds
            assert not process_alive(old["pid"], old.get("ticks")) and new["argv"] == old["argv"]
            if name == "agent":
                # the new agent adopted the running replicas: nothing restarted, everything still ready
                assert replica_pids(env) == before
                for workload in ("backend-primary", "flagger-loadtester"):
                    assert env.cluster().workload_status("prod", workload).is_ready()
        assert release.wait(timeout=240) == 0, log.read_text()[-4000:]
        result = finish_hey(hey, timeout=5) if hey.poll() is not None else None
        if result is None:
            hey.send_signal(signal.SIGINT)  # hey prints its summary on SIGINT
            result = finish_hey(hey, timeout=30)
    finally:
        stop_process(release)
        stop_process(hey)

    lost = result.lost
    print(
        "\nhealed after SIGKILL: "
        + ", ".join(f"{n} {s:.2f}s" for n, s in healed.items())
        + f"\nrequests through the mesh: {result.responses + result.error_count}, lost {lost} "
        f"(in flight at most {HEY_CONCURRENCY} per Envoy kill, 2 Envoy kills); errors {result.errors}"
    )
    assert result.responses > 500
    assert lost <= 2 * HEY_CONCURRENCY, result.raw
    # the release went through: promoted
    assert status(env).phase.value == "Succeeded"
    assert container(deployment(env, "backend-primary"))["image"] == image
    assert routes(env) == (100, 0)
    supervisor_log = (env.home / "logs" / "supervisor.log").read_text()
    for name in KILLED:
        assert f"{name} (pid " in supervisor_log and "was gone: restarted as pid" in supervisor_log
