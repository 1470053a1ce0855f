"""`playground up` / `status` / `down` with the real components (Envoy, Prometheus, docker-registry, the node
agent and the workloads of the manifests), on free ports in a temporary PLAYGROUND_HOME."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from playground.local import gitorigin, registry
from playground.local.env import COMPONENTS, process_alive
from playground.local.store import Home, Store
from tests.support.procs import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str, home: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PLAYGROUND_HOME"}
    return subprocess.run(
        [sys.executable, "-m", "playground.cli", *args, "--home", str(home)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        env=env,
    )


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _recorded_pids(home: Path) -> list[tuple[int, int | None]]:
    """Every process the environment records: components from env.json, replicas from the store."""
    out = []
    env = Home(home).read_env() or {}
    out += [(c["pid"], c.get("ticks")) for c in (env.get("components") or {}).values()]
    if (home / "state.db").exists():
        s = Store(home / "state.db")
        out += [(r.pid, r.proc_start_ticks) for row in s.list_workload_status() for r in row.replicas if r.pid]
        s.close()
    return out


@pytest.fixture(scope="module")
def env_up(tmp_path_factory):
    home = tmp_path_factory.mktemp("pg") / "home"
    ports = {
        "gateway": free_port(),
        "mesh": free_port(),
        "envoy-admin": free_port(),
        "prometheus": free_port(),
        "registry": free_port(),
        "dagster": free_port(),
    }
    args = [f"--{k}-port={v}" for k, v in ports.items()]
    seen: list[tuple[int, int | None]] = []
    try:
        first = _cli("up", *args, "--timeout=60", home=home)
        seen += _recorded_pids(home)
        yield home, ports, first, seen
    finally:
        _cli("down", home=home, timeout=60)
        for pid, ticks in seen + _recorded_pids(home):  # belt and braces: nothing may outlive the tests
            if process_alive(pid, ticks):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def test_up_starts_everything_and_prints_addresses(env_up) -> None:
    home, ports, first, _ = env_up
    assert first.returncode == 0, first.stdout + first.stderr
    out = first.stdout
    for name in ("envoy", "prometheus", "registry", "agent"):
        assert f"{name}" in out and "started" in out
    assert f"http://127.0.0.1:{ports['gateway']}/" in out
    assert f"http://127.0.0.1:{ports['mesh']}" in out
    assert f"http://127.0.0.1:{ports['envoy-admin']}/" in out
    assert f"http://127.0.0.1:{ports['prometheus']}/" in out
    assert f"http://127.0.0.1:{ports['registry']}/v2/" in out
    assert str(home / "git" / "gitops.git") in out
    assert "workloads    all ready" in out
    # the components answer
    for port in ports.values():
        assert _port_open(port)
    # the GitOps origin holds the manifests; the loadtester answers through the mesh proxy by its Service name
    assert gitorigin.head_sha(home / "git" / "gitops.git") is not None
    proxy = urllib.request.ProxyHandler({"http": f"http://127.0.0.1:{ports['mesh']}"})
    req = urllib.request.Request(
        "http://flagger-loadtester.prod/", method="POST", data=json.dumps({"metadata": {"cmd": "rm -rf /"}}).encode()
    )
    try:
        urllib.request.build_opener(proxy).open(req, timeout=5)
        status = 200
    except urllib.error.HTTPError as e:
        status = e.code
    assert status == 403  # reached the loadtester, which refuses commands no Canary lists
    # the registry serves tags
    url = f"http://127.0.0.1:{ports['registry']}"
    registry.push_tag(url, "stefanprodan/podinfo", "6.7.1")
    assert registry.list_tags(url, "stefanprodan/podinfo") == ["6.7.1"]


def test_up_again_is_harmless_and_status_shows_everything(env_up) -> None:
    home, ports, first, _ = env_up
    before = Home(home).read_env()["components"]
    again = _cli("up", home=home, timeout=120)  # ports come from env.json
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("already running") == len(COMPONENTS)
    after = Home(home).read_env()["components"]
    assert {k: v["pid"] for k, v in after.items()} == {k: v["pid"] for k, v in before.items()}
    st = _cli("status", home=home)
    assert st.returncode == 0, st.stderr
    for name in COMPONENTS:
        line = next(ln for ln in st.stdout.splitlines() if ln.startswith(name + " "))
        assert "running" in line and str(after[name]["pid"]) in line
    for workload in ("prod/backend", "prod/frontend", "prod/flagger-loadtester"):
        line = next(ln for ln in st.stdout.splitlines() if ln.startswith(workload + " "))
        assert "ghcr.io/" in line
    assert "prod/backend" in st.stdout and "2/2" in st.stdout


def test_down_stops_every_process_and_closes_ports(env_up) -> None:
    home, ports, _, seen = env_up
    pids = _recorded_pids(home)
    assert len(pids) >= len(COMPONENTS) + 3  # components + loadtester + 2 backend + 2 frontend replicas
    seen += pids
    res = _cli("down", home=home, timeout=60)
    assert res.returncode == 0, res.stderr
    alive = [pid for pid, ticks in pids if process_alive(pid, ticks)]
    assert alive == []
    assert [p for p in ports.values() if _port_open(p)] == []
    assert (home / "state.db").exists()  # state stays without --purge
    res = _cli("down", "--purge", home=home, timeout=60)
    assert res.returncode == 0 and not home.exists()
