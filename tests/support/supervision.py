"""Kill a local playground component and wait until the supervisor has healed it (tests and benchmarks).

seconds, old, new = kill_and_wait_healed(env, "envoy")   # SIGKILL, then poll until it answers again
"""

from __future__ import annotations

import os
import signal
import time

from playground.local.cluster import HEARTBEAT_KEY
from playground.local.env import process_alive
from playground.local.store import Home
from tests.support.playground_env import PlaygroundEnv
from tests.support.procs import log_tail

__all__ = ["KILLABLE", "healthy", "kill_and_wait_healed", "replica_pids"]

KILLABLE = ("envoy", "envoy-2", "prometheus", "registry", "agent")


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
