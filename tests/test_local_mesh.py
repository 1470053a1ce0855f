"""Integration: the local mesh with a real Envoy, real Prometheus and tiny HTTP backends.

One module-scoped set-up: a primary and a canary backend (Python HTTP servers in threads answering with their
identity), Flagger-style Services ``backend``/``backend-primary``/``backend-canary`` in ``prod`` and a Gateway;
Envoy runs the rendered configuration and each test applies its own VirtualService, waiting until Envoy's
admin reports the new route versions. Prometheus scrapes Envoy every second with the Istio relabelling.
"""

from __future__ import annotations

import math
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from playground.local import envoy, prometheus
from playground.local.envoy import ServiceEndpoints
from tests.support import procs
from tests.support.http_server import QuietHTTPServer

pytestmark = pytest.mark.integration

NS = "prod"
HOST = "app.example.com"
GATEWAY = "public-gateway.istio-system.svc.cluster.local"
SUCCESS_RATE = (
    'sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="{{ namespace }}",'
    'destination_workload=~"{{ target }}",response_code!~"5.*"}[{{ interval }}])) / '
    'sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="{{ namespace }}",'
    'destination_workload=~"{{ target }}"}[{{ interval }}])) * 100'
)
P99 = (
    'histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{reporter="destination",'
    'destination_workload_namespace="{{ namespace }}",destination_workload=~"{{ target }}"}[{{ interval }}])) '
    "by (le))"
)


def istio_query(template: str, *, namespace: str, target: str, interval: str) -> str:
    return (
        template.replace("{{ namespace }}", namespace)
        .replace("{{ target }}", target)
        .replace("{{ interval }}", interval)
    )


# ------------------------------------------------------------------------------------------ backends


class Backend:
    """An HTTP server answering ``<name>`` (body and ``x-backend`` header); every ``error_every``-th request
    answers 500 when set. Counts requests and keeps the Host of each."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.count = 0
        self.hosts: list[str] = []
        self.error_every: int | None = None
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            wbufsize = 65536  # one send per response: no Nagle/delayed-ACK stall
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                with owner._lock:
                    owner.count += 1
                    owner.hosts.append(self.headers.get("Host", ""))
                    fail = bool(owner.error_every) and owner.count % owner.error_every == 0
                body = owner.name.encode()
                self.send_response(500 if fail else 200)
                self.send_header("x-backend", owner.name)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = QuietHTTPServer(("127.0.0.1", 0), Handler)
        self.server.request_queue_size = 128
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def reset(self) -> None:
        with self._lock:
            self.count = 0
            self.hosts = []

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ------------------------------------------------------------------------------------------ objects


def service(name: str, port: int = 9898) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": port, "targetPort": "http"}]},
    }


BASE_OBJECTS = [
    service("backend"),
    service("backend-primary"),
    service("backend-canary"),
    {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "Gateway",
        "metadata": {"name": "public-gateway", "namespace": "istio-system"},
        "spec": {
            "selector": {"istio": "ingressgateway"},
            "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}],
        },
    },
    {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "DestinationRule",
        "metadata": {"name": "backend-canary", "namespace": NS},
        "spec": {"host": "backend-canary", "trafficPolicy": {"tls": {"mode": "DISABLE"}}},
    },
]


def virtual_service(http: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "VirtualService",
        "metadata": {"name": "backend", "namespace": NS},
        "spec": {"hosts": ["backend", HOST], "gateways": [GATEWAY, "mesh"], "http": http},
    }


def weighted(primary: int, canary: int, **extra: Any) -> dict[str, Any]:
    return virtual_service(
        [
            {
                **extra,
                "route": [
                    {"destination": {"host": "backend-primary"}, "weight": primary},
                    {"destination": {"host": "backend-canary"}, "weight": canary},
                ],
            }
        ]
    )


# ------------------------------------------------------------------------------------------ the mesh


class LocalMesh:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.config_dir = workdir / "envoy"
        self.primary = Backend("primary")
        self.canary = Backend("canary")
        self.gateway_port, self.mesh_port, self.admin_port, self.prom_port = (procs.free_port() for _ in range(4))
        self.endpoints = {
            (NS, "backend"): ServiceEndpoints("backend-primary", 9898, [("127.0.0.1", self.primary.port)]),
            (NS, "backend-primary"): ServiceEndpoints("backend-primary", 9898, [("127.0.0.1", self.primary.port)]),
            (NS, "backend-canary"): ServiceEndpoints("backend", 9898, [("127.0.0.1", self.canary.port)]),
        }
        self.envoy_proc = None
        self.prom_proc = None
        self.gateway_url = f"http://127.0.0.1:{self.gateway_port}/"
        self.prom_url = f"http://127.0.0.1:{self.prom_port}"
        self.http = httpx.Client(trust_env=False, timeout=5)

    def render(self, vs: dict[str, Any]) -> envoy.EnvoyConfig:
        return envoy.render(
            BASE_OBJECTS + [vs],
            self.endpoints,
            gateway_port=self.gateway_port,
            mesh_port=self.mesh_port,
            admin_port=self.admin_port,
            extra_upstreams={"prometheus.istio-system:9090": ("127.0.0.1", self.prom_port)},
            access_log_path=str(self.workdir / "access.log"),
        )

    def apply(self, vs: dict[str, Any]) -> float:
        """Write the routes of ``vs`` and wait until Envoy serves them; return the seconds that took."""
        cfg = self.render(vs)
        start = time.monotonic()
        envoy.write_config(cfg, self.config_dir)
        envoy.wait_until_applied(cfg, self.admin_port)
        return time.monotonic() - start

    def start(self) -> None:
        cfg = self.render(weighted(100, 0))
        envoy.write_config(cfg, self.config_dir)
        envoy.validate_config(self.config_dir)
        self.envoy_proc = procs.start_process(envoy.envoy_args(self.config_dir), log_path=self.workdir / "envoy.log")
        prom_dir = self.workdir / "prometheus"
        prom_dir.mkdir(parents=True, exist_ok=True)
        prom_cfg = prom_dir / "prometheus.yml"
        prom_cfg.write_text(
            yaml.safe_dump(
                prometheus.render_config(
                    envoy_admin=f"127.0.0.1:{self.admin_port}", workload_targets=None, file_sd_path=None
                )
            )
        )
        self.prom_proc = procs.start_process(
            prometheus.prometheus_args(prom_cfg, prom_dir / "data", self.prom_port),
            log_path=self.workdir / "prometheus.log",
        )
        procs.wait_for_http(
            f"http://127.0.0.1:{self.admin_port}/ready", proc=self.envoy_proc, ok=lambda s, _b: s == 200
        )
        envoy.wait_until_applied(cfg, self.admin_port)
        procs.wait_for_http(f"{self.prom_url}/-/ready", proc=self.prom_proc, ok=lambda s, _b: s == 200, timeout=30)

    def stop(self) -> None:
        self.http.close()
        procs.stop_process(self.envoy_proc)
        procs.stop_process(self.prom_proc)
        self.primary.stop()
        self.canary.stop()

    def get(self, path: str = "/", **headers: str) -> httpx.Response:
        return self.http.get(self.gateway_url.rstrip("/") + path, headers={"host": HOST, **headers})

    def query(self, promql: str) -> list[dict[str, Any]]:
        resp = self.http.get(f"{self.prom_url}/api/v1/query", params={"query": promql})
        resp.raise_for_status()
        return resp.json()["data"]["result"]

    def hey(self, **kwargs: Any) -> procs.HeyResult:
        return procs.run_hey(self.gateway_url, extra=["-host", HOST], **kwargs)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory):
    try:
        envoy.envoy_binary()
        prometheus.prometheus_binary()
        procs.hey_binary()
    except RuntimeError as e:
        pytest.skip(str(e))
    m = LocalMesh(tmp_path_factory.mktemp("mesh"))
    try:
        m.start()
        yield m
    finally:
        m.stop()


@pytest.fixture
def fresh(mesh: LocalMesh) -> LocalMesh:
    mesh.primary.reset()
    mesh.canary.reset()
    mesh.primary.error_every = mesh.canary.error_every = None
    return mesh


# ------------------------------------------------------------------------------------------ tests


def test_weighted_split_90_10(fresh: LocalMesh) -> None:
    fresh.apply(weighted(90, 10))
    result = fresh.hey(requests=2000, concurrency=20)
    assert result.lost == 0, result.raw
    total = fresh.primary.count + fresh.canary.count
    assert total == 2000
    share = 100 * fresh.canary.count / total
    assert 7 <= share <= 13, f"canary got {share:.1f}% of {total} requests, expected 10 ± 3"


def test_ab_routes_cookie_and_user_agent_to_canary(fresh: LocalMesh) -> None:
    fresh.apply(
        virtual_service(
            [
                {
                    "match": [
                        {"headers": {"cookie": {"regex": "^(.*?;)?(type=insider)(;.*)?$"}}},
                        {"headers": {"user-agent": {"regex": ".*Firefox.*"}}},
                    ],
                    "route": [
                        {"destination": {"host": "backend-primary"}, "weight": 0},
                        {"destination": {"host": "backend-canary"}, "weight": 100},
                    ],
                },
                {"route": [{"destination": {"host": "backend-primary"}, "weight": 0}]},  # Flagger's default route
            ]
        )
    )
    for _ in range(20):
        assert fresh.get(cookie="type=insider; theme=dark").headers["x-backend"] == "canary"
        assert fresh.get(cookie="theme=dark;type=insider").headers["x-backend"] == "canary"
        ua = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
        assert fresh.get(**{"user-agent": ua}).headers["x-backend"] == "canary"
        assert fresh.get(cookie="type=outsider").headers["x-backend"] == "primary"
        assert fresh.get(**{"user-agent": "curl/8.0"}).headers["x-backend"] == "primary"


def test_mirror_copies_to_canary_answers_from_primary(fresh: LocalMesh) -> None:
    fresh.apply(weighted(100, 0, mirror={"host": "backend-canary"}))
    for _ in range(30):
        resp = fresh.get("/mirrored")
        assert resp.status_code == 200 and resp.headers["x-backend"] == "primary"
    deadline = time.monotonic() + 5
    while fresh.canary.count < 30 and time.monotonic() < deadline:  # shadows are sent asynchronously
        time.sleep(0.05)
    assert fresh.primary.count == 30
    assert fresh.canary.count == 30
    assert all(h.endswith("-shadow") for h in fresh.canary.hosts), fresh.canary.hosts[:3]


def test_mesh_listener_is_a_forward_proxy(fresh: LocalMesh) -> None:
    fresh.apply(weighted(100, 0))
    with httpx.Client(proxy=f"http://127.0.0.1:{fresh.mesh_port}", trust_env=False, timeout=5) as client:
        for url in (
            "http://backend-canary.prod:9898/x",
            "http://backend-canary.prod.svc.cluster.local:9898/",
            "http://backend-canary:9898/",
        ):
            resp = client.get(url)
            assert resp.status_code == 200 and resp.headers["x-backend"] == "canary", url
        # the apex Service follows the mesh VirtualService (100% primary)
        assert client.get("http://backend.prod:9898/").headers["x-backend"] == "primary"
        # an extra upstream: Prometheus under its in-cluster name
        assert client.get("http://prometheus.istio-system:9090/-/ready").status_code == 200
        # unknown names answer 404 with an explanation
        resp = client.get("http://nothing.prod:9898/")
        assert resp.status_code == 404 and "no Service" in resp.text
    fresh.apply(weighted(0, 100))
    with httpx.Client(proxy=f"http://127.0.0.1:{fresh.mesh_port}", trust_env=False, timeout=5) as client:
        assert client.get("http://backend.prod:9898/").headers["x-backend"] == "canary"


def test_weight_changes_under_load_lose_no_request(fresh: LocalMesh) -> None:
    load = procs.start_hey(fresh.gateway_url, duration=8, concurrency=10, rate_per_worker=20, extra=["-host", HOST])
    try:
        time.sleep(0.5)
        for step in range(20):
            canary = (step * 10) % 110 if step < 11 else 100 - (step - 10) * 10
            fresh.apply(weighted(100 - canary, canary))
            time.sleep(0.3)
    finally:
        result = procs.finish_hey(load)
    assert result.responses > 1000, result.raw
    assert result.lost == 0, f"{result.non_2xx} non-2xx, errors {result.errors}\n{result.raw}"
    assert fresh.primary.count > 100 and fresh.canary.count > 100


def test_istio_queries_on_prometheus(fresh: LocalMesh) -> None:
    fresh.canary.error_every = 20  # exactly 5% of the canary's answers are 500
    fresh.apply(weighted(50, 50))
    load = procs.start_hey(fresh.gateway_url, duration=14, concurrency=10, rate_per_worker=20, extra=["-host", HOST])
    try:
        time.sleep(9)  # the 6s query window then only holds requests of this load
        interval = "6s"
        deadline = time.monotonic() + 10
        while True:
            canary = fresh.query(istio_query(SUCCESS_RATE, namespace=NS, target="backend", interval=interval))
            primary = fresh.query(istio_query(SUCCESS_RATE, namespace=NS, target="backend-primary", interval=interval))
            p99 = fresh.query(istio_query(P99, namespace=NS, target="backend", interval=interval))
            if (canary and primary and p99) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        result = procs.finish_hey(load)
    assert canary and primary and p99, (canary, primary, p99)
    canary_rate = float(canary[0]["value"][1])
    primary_rate = float(primary[0]["value"][1])
    p99_ms = float(p99[0]["value"][1])
    assert 90 <= canary_rate <= 97, canary_rate
    assert primary_rate > 99, primary_rate
    assert math.isfinite(p99_ms) and p99_ms > 0, p99_ms
    assert result.status_counts.get(500, 0) > 0  # the errors did reach the client (500 is not retried)
