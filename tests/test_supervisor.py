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

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from playground.local.cluster import HEARTBEAT_KEY
from playground.local.env import process_alive
from playground.local.store import Home
from tests.support.playground_env import PlaygroundEnv, container, deployment, new_podinfo_image, routes, status
from tests.support.procs import finish_hey, log_tail, start_hey, stop_process

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
HEY_CONCURRENCY = 8
KILLED = ("envoy", "envoy-2", "prometheus", "registry", "agent")


def _get(url: str, timeout: float = 1.0) -> int | None:
    import urllib.error
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def healthy(env: PlaygroundEnv, name: str, comp: dict, killed_at_ms: int) -> bool:
    """The component answers as it does when up (for the agent: a heartbeat written after the kill)."""
    if not process_alive(comp.get("pid"), comp.get("ticks")):
        return False
    if name == "envoy":
        return _get(f"http://127.0.0.1:{env.ports['envoy_admin']}/ready") == 200
    if name == "envoy-2":
        return _get(f"http://127.0.0.1:{comp['admin_port']}/ready") == 200
    if name == "prometheus":
        return _get(f"{env.prometheus_url}/-/ready") == 200
    if name == "registry":
        return _get(f"{env.registry_url}/v2/") == 200
    if name == "agent":
        beat = env.cluster().store.get_meta(HEARTBEAT_KEY)
        return beat is not None and beat > killed_at_ms
    raise AssertionError(name)


def kill_and_wait_healed(env: PlaygroundEnv, name: str, timeout: float = 30.0) -> tuple[float, dict, dict]:
    """SIGKILL the component; wait until the supervisor restarted it and it answers. Returns (seconds, the
    killed record, the new record)."""
    home = Home(env.home)
    old = home.read_env()["components"][name]
    killed_at_ms = int(time.time() * 1000)
    t0 = time.monotonic()
    os.kill(old["pid"], signal.SIGKILL)
    deadline = t0 + timeout
    while time.monotonic() < deadline:
        new = (home.read_env() or {}).get("components", {}).get(name) or {}
        if new.get("pid") != old["pid"] and healthy(env, name, new, killed_at_ms):
            return time.monotonic() - t0, old, new
        time.sleep(0.02)
    raise AssertionError(
        f"{name} was not restarted within {timeout}s:\n{log_tail(env.home / 'logs' / 'supervisor.log')}"
    )


def replica_pids(env: PlaygroundEnv) -> dict[str, set[int]]:
    return {
        f"{row.namespace}/{row.name}": {r.pid for r in row.replicas if r.pid}
        for row in env.cluster().store.list_workload_status()
    }


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
        deadline = time.monotonic() + 180
        while not ((st := status(env)) and st.phase.value == "Progressing" and routes(env)[1] > 0):
            assert release.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the release did not start shifting traffic\n" + log.read_text()
            time.sleep(0.1)

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
