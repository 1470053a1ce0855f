"""A TCP canary (``service.appProtocol: TCP``) on the real local playground, observed at the TCP level.

The shared playground's prod/backend Canary is switched to a TCP service (``appProtocol: TCP``; its HTTP-only
``service.retries`` removed, which Flagger would leave out of a tcp route; steps of 10 up to 50). A client opens
one TCP connection after the other to the backend Service's TCP listener of the local mesh (where a pod would
reach ``backend.prod:9898``) and speaks one HTTP/1.0 request over it; which workload took each connection is read
from Envoy's TCP access log (``UPSTREAM_CLUSTER`` per connection), the truth at the TCP level.

- a faulty revision (half of its requests answer 500) is rolled back by the analysis; afterwards every new
  connection goes to the primary;
- a clean revision is promoted; while its weight grows, the connections are split by weight.

No connection fails (connect, reset or no answer) at any time. The Canary is switched back to HTTP afterwards.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from playground import pipeline
from playground.models import Phase
from tests.support.playground_env import (
    BACKEND_DEPLOYMENT,
    PlaygroundEnv,
    new_podinfo_image,
    with_env_var,
    without_env_var,
)
from tests.test_backtest_live import both, with_image

pytestmark = pytest.mark.integration

KEY = "prod/backend"
CANARY = "prod/backend/canary.yaml"
PRIMARY, CANARY_CLUSTER = "tcp_prod_backend-primary", "tcp_prod_backend"


def tcp_service(text: str) -> str:
    out = text.replace("    targetPort: 9898\n", "    targetPort: 9898\n    appProtocol: TCP\n", 1)
    out = out.replace("    stepWeight: 5\n", "    stepWeight: 10\n")
    lines, skip = [], False
    for line in out.splitlines(keepends=True):
        if line.startswith("    retries:"):
            skip = True
            continue
        if skip and line.startswith("      "):
            continue
        skip = False
        lines.append(line)
    out = "".join(lines)
    assert "appProtocol: TCP" in out and "retries:" not in out and "stepWeight: 10" in out
    return out


class TcpClient:
    """Opens connections to ``address`` one after the other (one HTTP/1.0 request each); records for each its
    local port, when it was opened and whether it got an answer."""

    def __init__(self, address: tuple[str, int]):
        self.address = address
        self.conns: list[tuple[int, float]] = []  # (local port, monotonic time opened)
        self.wall: dict[tuple[int, float], float] = {}  # (local port, monotonic) -> wall-clock time opened
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _one(self) -> None:
        opened, wall = time.monotonic(), time.time()
        with socket.create_connection(self.address, timeout=10) as s:
            port = s.getsockname()[1]
            s.sendall(b"GET /version HTTP/1.0\r\nHost: backend.prod:9898\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        if not data.startswith(b"HTTP/1."):
            raise ConnectionError(f"no HTTP answer over the connection: {data[:60]!r}")
        self.conns.append((port, opened))
        self.wall[(port, opened)] = wall

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._one()
            except OSError as e:
                self.failures.append(f"{type(e).__name__}: {e}")
            self._stop.wait(0.01)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=15)


_LOG = re.compile(r"^\[(\S+)\] tcp tcp_prod_backend_9898 127\.0\.0\.1:(\d+) (\S+) ", re.M)


def upstreams(env: PlaygroundEnv, client: TcpClient, timeout: float = 20.0) -> dict[tuple[int, float], str]:
    """The upstream cluster of each connection of ``client`` from Envoy's TCP access log (flushed every 1 s),
    matched by client port and start time (ports are reused over the test)."""
    path = env.home / "logs" / "envoy-access.log"
    deadline = time.monotonic() + timeout
    out: dict[tuple[int, float], str] = {}
    while time.monotonic() < deadline:
        lines: dict[int, list[tuple[float, str]]] = {}
        for m in _LOG.finditer(path.read_text(errors="replace")):
            started = datetime.fromisoformat(m.group(1).replace("Z", "+00:00")).timestamp()
            lines.setdefault(int(m.group(2)), []).append((started, m.group(3)))
        out = {}
        for key, wall in client.wall.items():
            near = [(abs(t - wall), cluster) for t, cluster in lines.get(key[0], []) if abs(t - wall) < 2.0]
            if near:
                out[key] = min(near)[1]
        if len(out) == len(client.wall):
            return out
        time.sleep(0.5)
    raise AssertionError(f"{len(client.wall) - len(out)} of {len(client.wall)} connections missing from the access log")


def release(env: PlaygroundEnv, weights: list[tuple[float, int, str]]):
    """Sync, then drive prod/backend to its end; ``weights`` gets (monotonic time, canary weight, phase)."""
    rt = env.runtime()
    try:
        pipeline.sync(rt)
        ctl = rt.controller(log=lambda _line: None, interval=1.0)
        records = []

        def on_tick(rec):
            records.append(rec)
            weights.append((time.monotonic(), rec.state.routes.canary, rec.phase.value))

        ctl.run(KEY, on_tick=on_tick, max_ticks=150)
        return records
    finally:
        rt.close()


def weight_at(weights: list[tuple[float, int, str]], t: float) -> tuple[int, str]:
    w, phase = 0, ""
    for at, weight, ph in weights:
        if at > t:
            break
        w, phase = weight, ph
    return w, phase


def test_tcp_canary_rolls_back_and_promotes_with_connections_split_by_weight(playground, tmp_path) -> None:
    env = playground
    original = env.read(CANARY)
    try:
        env.commit({CANARY: tcp_service}, "backend: TCP service (test)")
        rt = env.runtime()
        try:
            pipeline.sync(rt)
            rt.controller(log=lambda _line: None, interval=1.0).step(KEY)  # reconcile: Services and tcp route
        finally:
            rt.close()
        address = env.cluster().tcp_address("prod", "backend", 9898)
        assert address is not None, "the TCP Service port got no listener"
        vs = env.cluster().get("networking.istio.io/v1beta1", "VirtualService", "prod", "backend")
        assert "tcp" in vs["spec"] and "http" not in vs["spec"]
        # `playground status` (the console script, outside the repository) tells where to connect
        st = subprocess.run(
            [str(Path(sys.executable).parent / "playground"), "status"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env.subprocess_env(),
            timeout=120,
        )
        assert st.returncode == 0, st.stderr
        assert re.search(rf"prod/backend:9898\s+127\.0\.0\.1:{address[1]}\b", st.stdout), st.stdout

        with TcpClient(address) as client:
            # 1. faulty revision: rolled back; every connection after that goes to the primary
            weights: list[tuple[float, int, str]] = []
            env.commit(
                {BACKEND_DEPLOYMENT: both(with_env_var("PODINFO_ERROR_RATE", "0.5"), with_image(new_podinfo_image()))},
                "backend: faulty revision (TCP test)",
            )
            faulty = release(env, weights)
            assert faulty[-1].phase == Phase.Failed, [r.phase for r in faulty]
            failed_at = time.monotonic()
            time.sleep(3.0)  # connections after the rollback
            after_rollback = [(p, t) for p, t in client.conns if t > failed_at + 0.5]
            during_faulty = [(p, t) for p, t in client.conns if weights and weights[0][0] < t < failed_at]

            # 2. clean revision: promoted, connections split by weight on the way
            weights2: list[tuple[float, int, str]] = []
            env.commit(
                {BACKEND_DEPLOYMENT: both(without_env_var("PODINFO_ERROR_RATE"), with_image(new_podinfo_image()))},
                "backend: clean revision (TCP test)",
            )
            clean = release(env, weights2)
            assert clean[-1].phase == Phase.Succeeded, [r.phase for r in clean]
            time.sleep(1.0)
        assert client.failures == [], client.failures[:5]
        where = upstreams(env, client)

        faulty_canary = sum(1 for p in during_faulty if where[p] == CANARY_CLUSTER)
        assert faulty_canary > 0, "the faulty canary never got a connection"
        assert len(after_rollback) >= 20 and {where[p] for p in after_rollback} == {PRIMARY}, (
            f"after the rollback: {sorted({where[p] for p in after_rollback})}"
        )

        split: dict[int, list[int]] = {}  # canary weight -> [connections, to the canary]
        for key in client.conns:
            w, phase = weight_at(weights2, key[1])
            if phase == "Progressing" and w > 0:
                bucket = split.setdefault(w, [0, 0])
                bucket[0] += 1
                bucket[1] += where[key] == CANARY_CLUSTER
        total = sum(n for n, _ in split.values())
        expected = sum(w * n for w, (n, _) in split.items()) / 100 / total
        observed = sum(c for _, c in split.values()) / total
        print(
            "TCP canary: connections by canary weight (weight: total/to canary): "
            + ", ".join(f"{w}%: {n}/{c}" for w, (n, c) in sorted(split.items()))
            + f"; expected canary share {expected:.2f}, observed {observed:.2f}; after rollback "
            f"{len(after_rollback)} connections, all on the primary; faulty canary took {faulty_canary} of "
            f"{len(during_faulty)}; {len(client.conns)} connections, {len(client.failures)} failed"
        )
        assert total >= 100, split
        assert abs(observed - expected) <= 0.12, (observed, expected, split)
        high = [c / n for w, (n, c) in split.items() if w >= 40 and n >= 20]
        low = [c / n for w, (n, c) in split.items() if w <= 20 and n >= 20]
        if high and low:
            assert min(high) > max(low), split
    finally:
        env.commit({CANARY: lambda _t: original}, "backend: back to HTTP (test)")
        rt = env.runtime()
        try:
            pipeline.sync(rt)
            rt.controller(log=lambda _line: None, interval=1.0).step(KEY)
        finally:
            rt.close()
