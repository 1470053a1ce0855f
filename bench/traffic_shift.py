"""Benchmark: shifting traffic through the local mesh's real Envoy under load.

Starts Envoy (rendered by ``playground.local.envoy``) with a primary and a canary backend (two small HTTP server
processes), shifts the canary weight 0 -> 100% in 10 steps while ``hey`` sends ~200 req/s through the gateway,
and prints:

- requests sent and lost (non-2xx answers plus transport errors) and the latency percentiles hey measured;
- per step, the time from writing the route change to Envoy reporting the new route version (admin);
- the time from writing a route change to the canary answering (flip 100/0 -> 0/100, polling every ~1 ms over
  one keep-alive connection), over several flips.

Usage: .venv/bin/python bench/traffic_shift.py [--steps 10] [--step-seconds 1.5] [--flips 10]
Prints figures only.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from playground.local import envoy
from playground.local.envoy import ServiceEndpoints
from tests.support import procs

NS = "prod"
HOST = "app.example.com"
GATEWAY = "public-gateway.istio-system.svc.cluster.local"

BACKEND = r"""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
name, port = sys.argv[1], int(sys.argv[2])
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = 65536  # one send per response: no Nagle/delayed-ACK stall
    disable_nagle_algorithm = True
    def log_message(self, *a): pass
    def do_GET(self):
        body = name.encode()
        self.send_response(200)
        self.send_header("x-backend", name)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
s = ThreadingHTTPServer(("127.0.0.1", port), H)
s.daemon_threads = True
s.request_queue_size = 256
s.serve_forever()
"""


def service(name: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"ports": [{"name": "http", "port": 9898}]},
    }


def virtual_service(primary: int, canary: int) -> dict:
    return {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "VirtualService",
        "metadata": {"name": "backend", "namespace": NS},
        "spec": {
            "hosts": ["backend", HOST],
            "gateways": [GATEWAY, "mesh"],
            "http": [
                {
                    "route": [
                        {"destination": {"host": "backend-primary"}, "weight": primary},
                        {"destination": {"host": "backend-canary"}, "weight": canary},
                    ]
                }
            ],
        },
    }


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--step-seconds", type=float, default=1.5)
    parser.add_argument("--flips", type=int, default=10)
    parser.add_argument("--rate", type=int, default=200, help="total requests per second")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-traffic-shift-"))
    gw_port, mesh_port, admin_port, p_port, c_port = (procs.free_port() for _ in range(5))
    endpoints = {
        (NS, "backend"): ServiceEndpoints("backend-primary", 9898, [("127.0.0.1", p_port)]),
        (NS, "backend-primary"): ServiceEndpoints("backend-primary", 9898, [("127.0.0.1", p_port)]),
        (NS, "backend-canary"): ServiceEndpoints("backend", 9898, [("127.0.0.1", c_port)]),
    }
    objects = [service("backend"), service("backend-primary"), service("backend-canary")]

    def apply(primary: int, canary: int, wait: bool = True) -> tuple[envoy.EnvoyConfig, float]:
        cfg = envoy.render(
            objects + [virtual_service(primary, canary)],
            endpoints,
            gateway_port=gw_port,
            mesh_port=mesh_port,
            admin_port=admin_port,
        )
        t0 = time.monotonic()
        envoy.write_config(cfg, work / "envoy")
        if wait:
            envoy.wait_until_applied(cfg, admin_port)
        return cfg, time.monotonic() - t0

    started = []
    try:
        for name, port in (("primary", p_port), ("canary", c_port)):
            started.append(
                procs.start_process([sys.executable, "-c", BACKEND, name, str(port)], log_path=work / f"{name}.log")
            )
        cfg, _ = apply(100, 0, wait=False)
        envoy.validate_config(work / "envoy")
        proxy = procs.start_process(envoy.envoy_args(work / "envoy"), log_path=work / "envoy.log")
        started.append(proxy)
        procs.wait_for_http(f"http://127.0.0.1:{admin_port}/ready", proc=proxy, ok=lambda s, _b: s == 200)
        envoy.wait_until_applied(cfg, admin_port)
        for port in (p_port, c_port):
            procs.wait_for_http(f"http://127.0.0.1:{port}/", ok=lambda s, _b: s == 200)
        url = f"http://127.0.0.1:{gw_port}/"

        # --- shift 0 -> 100% in steps under load
        workers = 10
        duration = args.steps * args.step_seconds + 2
        load = procs.start_hey(
            url, duration=duration, concurrency=workers, rate_per_worker=args.rate / workers, extra=["-host", HOST]
        )
        applied = []
        time.sleep(1)
        for step in range(1, args.steps + 1):
            canary = round(100 * step / args.steps)
            t0 = time.monotonic()
            _, waited = apply(100 - canary, canary)
            applied.append(waited)
            time.sleep(max(0.0, args.step_seconds - (time.monotonic() - t0)))
        result = procs.finish_hey(load, timeout=duration + 60)

        # --- route change -> canary answers
        flips = []
        with httpx.Client(trust_env=False, timeout=5) as client:
            for _ in range(args.flips):
                apply(100, 0)
                cfg = envoy.render(
                    objects + [virtual_service(0, 100)],
                    endpoints,
                    gateway_port=gw_port,
                    mesh_port=mesh_port,
                    admin_port=admin_port,
                )
                t0 = time.monotonic()
                envoy.write_config(cfg, work / "envoy")
                while client.get(url, headers={"host": HOST}).headers.get("x-backend") != "canary":
                    if time.monotonic() - t0 > 10:
                        raise SystemExit("the canary did not answer within 10 s of the route change")
                    time.sleep(0.001)
                flips.append(time.monotonic() - t0)
    finally:
        for proc in reversed(started):
            procs.stop_process(proc)

    ms = lambda s: f"{1000 * s:.1f} ms"  # noqa: E731
    lat = result.latency_percentiles
    print(
        f"traffic shift 0->100% in {args.steps} steps of {args.step_seconds}s under hey "
        f"({workers} keep-alive workers, {args.rate} req/s target, {result.requests_per_second or 0:.0f} req/s achieved)"
    )
    print(f"  requests answered:        {result.responses}")
    print(
        f"  requests lost:            {result.lost} (non-2xx {result.non_2xx}, transport errors {result.error_count})"
    )
    print(f"  latency p50 / p99:        {ms(lat.get(50, float('nan')))} / {ms(lat.get(99, float('nan')))}")
    print(f"route change written -> Envoy reports it applied ({len(applied)} steps):")
    print(f"  median {ms(statistics.median(applied))}, p90 {ms(pct(applied, 0.9))}, max {ms(max(applied))}")
    print(f"route change written -> canary answers (0/100 flip, {len(flips)} flips):")
    print(f"  median {ms(statistics.median(flips))}, p90 {ms(pct(flips, 0.9))}, max {ms(max(flips))}")


if __name__ == "__main__":
    main()
