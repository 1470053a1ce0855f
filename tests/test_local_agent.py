"""The node agent with real replica processes (podinfo from the image catalog)."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from playground.local.cluster import LocalCluster
from playground.local.env import process_alive
from playground.local.store import Home

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]


def _deployment(
    name: str, replicas: int = 2, image: str = "ghcr.io/stefanprodan/podinfo:6.7.0", env=None, env_from=None, **spec
) -> dict:
    container = {
        "name": name,
        "image": image,
        "command": ["./podinfo", "--port=9898"],
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": 9898}, "periodSeconds": 5},
        "env": env or [],
    }
    if env_from:
        container["envFrom"] = env_from
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "test"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [container]}},
            **spec,
        },
    }


def _wait(cond: Callable[[], object], timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class AgentEnv:
    def __init__(self, home: Path):
        self.home = Home(home)
        self.cluster = LocalCluster(home)
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "playground.local.agent", "--home", str(self.home.root)],
            stdout=open(self.home.root / "agent.log", "ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=ROOT,
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        # whatever happened, no replica may outlive the test
        for row in self.cluster.store.list_workload_status():
            for r in row.replicas:
                if r.pid and process_alive(r.pid, r.proc_start_ticks):
                    try:
                        os.killpg(r.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass

    def row(self, name: str):
        return self.cluster.store.get_workload_status("test", name)

    def log(self) -> str:
        return (self.home.root / "agent.log").read_text(errors="replace")[-3000:]


@pytest.fixture
def agent(tmp_path: Path):
    env = AgentEnv(tmp_path / "home")
    env.start()
    try:
        yield env
    finally:
        env.stop()


def _get_json(port: int, path: str):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return json.loads(r.read())


def test_replicas_become_ready_and_crashed_replica_is_restarted(agent: AgentEnv) -> None:
    c = agent.cluster
    c.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "cfg", "namespace": "test"},
            "data": {"PODINFO_UI_MESSAGE": "hello"},
        }
    )
    c.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "sec", "namespace": "test"},
            "data": {"token": base64.b64encode(b"s3cret").decode()},
        }
    )
    c.apply(
        _deployment(
            "web",
            env=[
                {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "token"}}},
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            ],
            env_from=[{"configMapRef": {"name": "cfg"}}],
        )
    )
    _wait(lambda: c.workload_status("test", "web").is_ready(), 20, "2 ready replicas\n" + agent.log())
    ws = c.workload_status("test", "web")
    assert (ws.desired, ws.updated, ws.ready, ws.available) == (2, 2, 2, 2)
    row = agent.row("web")
    ports = sorted(r.port for r in row.replicas)
    assert len(set(ports)) == 2 and all(r.pid for r in row.replicas)
    # the replica runs the image tag, with the pod's environment and the mesh settings
    env = dict(line.split("=", 1) for line in _get_json(ports[0], "/env"))
    assert env["TOKEN"] == "s3cret" and env["PODINFO_UI_MESSAGE"] == "hello" and env["POD"].startswith("web-")
    assert env["NO_PROXY"] == "127.0.0.1,localhost"
    assert _get_json(ports[0], "/version")["version"] == "6.7.0"
    assert Path(row.replicas[0].log).name.startswith("test_web-")
    # Prometheus targets of the replicas
    targets = json.loads(agent.home.file_sd.read_text())
    assert sorted(t["targets"][0] for t in targets) == sorted(f"127.0.0.1:{p}" for p in ports)

    victim = row.replicas[0]
    os.kill(victim.pid, signal.SIGKILL)
    _wait(lambda: not c.workload_status("test", "web").is_ready(), 5, "the agent to notice the crash")

    def recovered():
        r = agent.row("web")
        rep = next(x for x in r.replicas if x.index == victim.index)
        return c.workload_status("test", "web").is_ready() and rep.pid != victim.pid and rep.restarts == 1

    _wait(recovered, 20, "the crashed replica to be restarted and ready\n" + agent.log())


def test_rolling_replacement_keeps_ready_endpoints_and_scale_to_zero(agent: AgentEnv) -> None:
    c = agent.cluster
    c.apply(_deployment("roll"))
    _wait(lambda: c.workload_status("test", "roll").is_ready(), 20, "ready\n" + agent.log())
    old_pids = {r.pid for r in agent.row("roll").replicas}
    c.apply(_deployment("roll", image="ghcr.io/stefanprodan/podinfo:6.7.1"))
    min_ready = 99
    deadline = time.monotonic() + 25
    while time.monotonic() < deadline:
        row = agent.row("roll")
        min_ready = min(min_ready, sum(1 for r in row.replicas if r.ready))
        if c.workload_status("test", "roll").is_ready() and row.total == 2:
            break
        time.sleep(0.05)
    row = agent.row("roll")
    assert c.workload_status("test", "roll").is_ready(), agent.log()
    assert min_ready >= 1, "a rolling replacement left the workload without ready replicas"
    assert not old_pids & {r.pid for r in row.replicas}
    assert all(_get_json(r.port, "/version")["version"] == "6.7.1" for r in row.replicas)
    pids = [r.pid for r in row.replicas]
    c.scale("test", "roll", 0)
    _wait(lambda: agent.row("roll").total == 0 and not any(process_alive(p) for p in pids), 15, "scale to zero")


def test_unknown_image_is_a_clear_error_in_status(agent: AgentEnv) -> None:
    c = agent.cluster
    c.apply(
        _deployment("mystery", replicas=1, image="registry.example.com/acme/mystery:1.0", progressDeadlineSeconds=2)
    )
    ws = _wait(
        lambda: (lambda w: w if "no local program" in w.message else None)(c.workload_status("test", "mystery")),
        10,
        "the unknown image error",
    )
    assert "acme/mystery" in ws.message and not ws.is_ready()
    out = subprocess.run(
        [sys.executable, "-m", "playground.cli", "status", "--home", str(agent.home.root)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("test/mystery"))
    assert "0/1" in line and "registry.example.com/acme/mystery:1.0" in line
    assert "no local program is registered for image" in line
    ws = _wait(
        lambda: (lambda w: w if w.deadline_exceeded else None)(c.workload_status("test", "mystery")),
        5,
        "the progress deadline",
    )
    assert "progress deadline" in ws.message and "no local program" in ws.message


def test_agent_stops_all_replicas_on_sigterm(agent: AgentEnv) -> None:
    c = agent.cluster
    c.apply(_deployment("stopme", replicas=2))
    _wait(lambda: c.workload_status("test", "stopme").is_ready(), 20, "ready\n" + agent.log())
    pids = [r.pid for r in agent.row("stopme").replicas]
    agent.proc.send_signal(signal.SIGTERM)
    agent.proc.wait(15)
    assert not any(process_alive(p) for p in pids)
    assert "node agent is not running" in c.workload_status("test", "stopme").message
