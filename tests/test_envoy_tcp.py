"""Integration: a TCP canary (``service.appProtocol: TCP``) in the local mesh with a real Envoy.

The objects are the engine's (``routing.bootstrap_objects`` / ``routing.virtual_service`` of a TCP Canary, the
VirtualService with a ``tcp`` route); two tiny TCP servers (threads) stand for the primary and the canary and
answer each connection with their name. Connections opened to the Service's TCP listener are split by the
route's weights; open connections stay where they are when the weights change; 100/0 puts every new
connection on the primary.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from playground import routing
from playground.local import envoy, prometheus
from playground.local.envoy import RenderError, ServiceEndpoints
from playground.models import Canary
from tests.support import procs

pytestmark = pytest.mark.integration


def _canary() -> Canary:
    return Canary.model_validate(
        {
            "apiVersion": "flagger.app/v1beta1",
            "kind": "Canary",
            "metadata": {"name": "db", "namespace": "prod"},
            "spec": {
                "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "db"},
                "service": {"port": 5432, "appProtocol": "TCP", "match": [{"port": 5432}]},
                "analysis": {"interval": "10s", "stepWeight": 10, "maxWeight": 50},
            },
        }
    )


TARGET = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "db", "namespace": "prod"},
    "spec": {
        "selector": {"matchLabels": {"app": "db"}},
        "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "db", "image": "x"}]}},
    },
}


class TcpServer:
    """Answers every connection with ``<name>\\n`` after reading one line; keeps connections open until closed."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            f = conn.makefile("rwb")
            while True:
                line = f.readline()
                if not line:
                    return
                f.write(f"{self.name}\n".encode())
                f.flush()

    def stop(self) -> None:
        self._stop = True
        self.sock.close()


def ask(port: int, conn: socket.socket | None = None) -> tuple[str, socket.socket]:
    """Send one line on ``conn`` (or a new connection to ``port``); return the answer and the connection."""
    conn = conn or socket.create_connection(("127.0.0.1", port), timeout=5)
    conn.sendall(b"hello\n")
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(64)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    return data.decode().strip(), conn


@pytest.fixture
def tcp_mesh(tmp_path: Path):
    try:
        envoy.envoy_binary()
    except RuntimeError as e:
        pytest.skip(str(e))
    primary, canary = TcpServer("primary"), TcpServer("canary")
    ports = {name: procs.free_port() for name in ("gateway_port", "mesh_port", "admin_port")}
    listen = procs.free_port()
    c = _canary()
    objects = [o for o in routing.bootstrap_objects(c, TARGET) if o["kind"] != "Deployment"]
    endpoints = {
        ("prod", "db"): ServiceEndpoints("db-primary", 5432, [("127.0.0.1", primary.port)]),
        ("prod", "db-primary"): ServiceEndpoints("db-primary", 5432, [("127.0.0.1", primary.port)]),
        ("prod", "db-canary"): ServiceEndpoints("db", 5432, [("127.0.0.1", canary.port)]),
    }
    cfg_dir = tmp_path / "cfg"

    def apply(primary_weight: int, canary_weight: int) -> envoy.EnvoyConfig:
        vs = routing.virtual_service(c, primary_weight, canary_weight)
        objs = [o for o in objects if o["kind"] != "VirtualService"] + [vs]
        cfg = envoy.render(objs, endpoints, **ports, tcp_addresses={("prod", "db", 5432): listen})
        envoy.write_config(cfg, cfg_dir)
        return cfg

    cfg = apply(100, 0)
    envoy.validate_config(cfg_dir)
    proc = procs.start_process(envoy.envoy_args(cfg_dir), log_path=tmp_path / "envoy.log")
    try:
        procs.wait_for_http(f"http://127.0.0.1:{ports['admin_port']}/ready", proc=proc, ok=lambda s, _b: s == 200)
        envoy.wait_until_applied(cfg, ports["admin_port"])

        def set_weights(p: int, w: int) -> None:
            envoy.wait_until_applied(apply(p, w), ports["admin_port"])

        yield listen, set_weights, objects, endpoints, ports
    finally:
        procs.stop_process(proc)
        primary.stop()
        canary.stop()


def split(port: int, n: int) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _ in range(n):
        who, conn = ask(port)
        conn.close()
        counts[who] = counts.get(who, 0) + 1
    return counts


def test_tcp_connections_are_split_by_the_tcp_route_weights(tcp_mesh: Any, tmp_path: Path) -> None:
    """Connections split by weight; Prometheus (the playground's scrape config) counts each of them as Istio's
    istio_tcp_connections_opened_total of its destination workload."""
    listen, set_weights, _objects, _endpoints, ports = tcp_mesh
    assert split(listen, 40) == {"primary": 40}
    held, conn = ask(listen)  # an open connection on the primary
    set_weights(70, 30)
    counts = split(listen, 300)
    assert set(counts) == {"primary", "canary"} and sum(counts.values()) == 300
    assert 45 <= counts["canary"] <= 135, counts  # 30% of 300 = 90, far from both 0 and 100%
    assert ask(listen, conn)[0] == held == "primary"  # the open connection stayed on the primary
    set_weights(100, 0)  # rollback
    assert split(listen, 60) == {"primary": 60}
    conn.close()

    try:
        prometheus.prometheus_binary()
    except RuntimeError as e:
        pytest.skip(str(e))
    prom_port = procs.free_port()
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(
        yaml.safe_dump(
            prometheus.render_config(
                envoy_admin=f"127.0.0.1:{ports['admin_port']}", workload_targets=None, file_sd_path=None
            )
        )
    )
    prom = procs.start_process(
        prometheus.prometheus_args(cfg, tmp_path / "data", prom_port), log_path=tmp_path / "prometheus.log"
    )
    try:
        url = f"http://127.0.0.1:{prom_port}"
        procs.wait_for_http(f"{url}/-/ready", proc=prom, ok=lambda s, _b: s == 200, timeout=30)
        expected = {"db-primary": 40 + 1 + counts["primary"] + 60, "db": counts["canary"]}
        query = 'sum by (destination_workload) (istio_tcp_connections_opened_total{reporter="destination",destination_workload_namespace="prod"})'
        got: dict[str, int] = {}
        with httpx.Client(trust_env=False, timeout=5) as c:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and got != expected:
                res = c.get(f"{url}/api/v1/query", params={"query": query}).json()["data"]["result"]
                got = {r["metric"]["destination_workload"]: int(float(r["value"][1])) for r in res}
                time.sleep(0.5)
        assert got == expected
    finally:
        procs.stop_process(prom)


def test_tcp_listener_rendering_and_what_is_refused(tcp_mesh: Any) -> None:
    listen, _set, objects, endpoints, ports = tcp_mesh
    c = _canary()
    cfg = envoy.render(
        objects[:-1] + [routing.virtual_service(c, 60, 40)],
        endpoints,
        **ports,
        tcp_addresses={("prod", "db", 5432): listen},
    )
    lst = cfg.listeners()["tcp_prod_db_5432"]
    proxy = lst["filter_chains"][0]["filters"][0]["typed_config"]
    assert proxy["weighted_clusters"] == {
        "clusters": [{"name": "tcp_prod_db-primary", "weight": 60}, {"name": "tcp_prod_db", "weight": 40}]
    }
    assert envoy.tcp_service_ports(objects) == [
        ("prod", "db", 5432),
        ("prod", "db-canary", 5432),
        ("prod", "db-primary", 5432),
    ]
    # HTTP sent to the TCP service through the mesh proxy takes the same weighted destinations
    mesh = [vh for vh in cfg.route_config("mesh")["virtual_hosts"] if "db.prod:5432" in vh["domains"]][0]
    weights = [w["weight"] for w in mesh["routes"][0]["route"]["weighted_clusters"]["clusters"]]
    assert weights == [60, 40]
    gw = routing.virtual_service(c, 100, 0)
    gw["spec"]["gateways"] = ["istio-system/public-gateway"]
    with pytest.raises(RenderError, match="tcp routes through a Gateway are not supported"):
        envoy.render(objects[:-1] + [gw], endpoints, **ports, tcp_addresses={("prod", "db", 5432): listen})
