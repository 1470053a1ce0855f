"""provider gatewayapi:v1 on the real local playground: Flagger's HTTPRoute served by the local gateway (Envoy).

The shared playground's origin gets a Gateway API Gateway (``gateway/public``, one HTTP listener for
``*.example.com``, routes from all namespaces) and its prod/backend canary switched to ``provider: gatewayapi:v1``
(``gatewayRefs`` to that Gateway, host ``backend.example.com``, the Istio-only ``service.retries`` removed, plus
Flagger's built-in ``request-success-rate`` metric, which Flagger computes with its default observer's queries).
Two releases then run with the controller while a load test (``hey``, 20 requests/s) and a client that checks
which workload answers call ``http://backend.example.com/`` through the local gateway the whole time:

- a slow revision (1 s added to every request): the latency check fails until the threshold and the release is
  rolled back (every request still succeeds, slowly);
- a clean revision: promoted. At maxWeight (50) the weights of the gateway's route in Envoy's own
  configuration (admin ``/config_dump``) are 50/50 and a sample of gateway requests is split between the
  primary and the canary pods accordingly.

Every gateway request must succeed and be answered by the backend. The canary is switched back to istio
afterwards (the Gateway stays, unused).
"""

from __future__ import annotations

import json
import signal
import threading
import time
import urllib.request

import httpx
import pytest
import yaml

from playground import pipeline, routing
from playground.models import Phase
from tests.support import procs
from tests.support.playground_env import (
    BACKEND_DEPLOYMENT,
    PlaygroundEnv,
    deployment,
    new_podinfo_image,
    with_env_var,
    without_env_var,
)
from tests.test_backtest_live import both, with_image

pytestmark = pytest.mark.integration

KEY = "prod/backend"
CANARY = "prod/backend/canary.yaml"
GATEWAY = "gateway/gateway.yaml"
HOST = "backend.example.com"
GATEWAY_OBJECTS = """\
apiVersion: v1
kind: Namespace
metadata:
  name: gateway
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: public
  namespace: gateway
spec:
  gatewayClassName: playground
  listeners:
    - name: http
      protocol: HTTP
      port: 80
      hostname: "*.example.com"
      allowedRoutes:
        namespaces:
          from: All
"""


def gatewayapi_provider(text: str) -> str:
    doc = yaml.safe_load(text)
    spec = doc["spec"]
    spec["provider"] = "gatewayapi:v1"
    spec["service"].pop("retries", None)
    spec["service"]["hosts"] = [HOST]
    spec["service"]["gatewayRefs"] = [{"name": "public", "namespace": "gateway"}]
    spec["analysis"]["metrics"].append(
        {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "5s"}
    )
    return yaml.safe_dump(doc, sort_keys=False)


class GatewayClient:
    """Calls the backend through the local gateway until stopped; counts successes, failures, and which
    workload answered (the pod's hostname: backend-primary-* or backend-*)."""

    def __init__(self, env: PlaygroundEnv):
        self.env, self.ok, self.failures = env, 0, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(trust_env=False, timeout=15) as c:
            while not self._stop.is_set():
                try:
                    who = served_by(c, self.env)
                    if who in ("primary", "canary"):
                        self.ok += 1
                    else:
                        self.failures.append(who)
                except httpx.HTTPError as e:
                    self.failures.append(f"{type(e).__name__}: {e}")
                self._stop.wait(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=30)


def served_by(client: httpx.Client, env: PlaygroundEnv) -> str:
    """``primary`` / ``canary`` for a backend answer through the gateway, else a description of the failure."""
    r = client.get(f"{env.gateway_url}/", headers={"Host": HOST})
    if r.status_code != 200:
        return f"HTTP {r.status_code}"
    hostname = str(r.json().get("hostname", ""))
    if hostname.startswith("backend-primary"):
        return "primary"
    if hostname.startswith("backend-"):
        return "canary"
    return f"answered by {hostname!r}"


def envoy_gateway_weights(env: PlaygroundEnv) -> dict[str, int] | None:
    """The weighted clusters of the gateway's route for HOST in Envoy's running configuration."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{env.ports['envoy_admin']}/config_dump", timeout=5) as resp:
        dump = json.load(resp)
    for section in dump.get("configs", []):
        for rc in section.get("dynamic_route_configs", []):
            config = rc["route_config"]
            if config.get("name") != "gateway":
                continue
            for vh in config.get("virtual_hosts", []):
                if HOST in vh.get("domains", []):
                    action = vh["routes"][-1]["route"]
                    if "cluster" in action:
                        return {action["cluster"]: 100}
                    return {c["name"]: int(c["weight"]) for c in action["weighted_clusters"]["clusters"]}
    return None


def wait_for(condition, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)


def release(env: PlaygroundEnv, on_tick=None):
    rt = env.runtime()
    try:
        pipeline.sync(rt)
        ctl = rt.controller(log=lambda _line: None, interval=1.0)
        records = []

        def tick(record):
            records.append(record)
            if on_tick is not None:
                on_tick(record)

        ctl.run(KEY, on_tick=tick, max_ticks=200)
        return records
    finally:
        rt.close()


def test_gatewayapi_canary_rolls_back_and_promotes_under_load_through_the_gateway(playground) -> None:
    env = playground
    original = env.read(CANARY)
    split: dict[str, object] = {}

    def at_max_weight(record) -> None:
        """At weight 50 (once): Envoy's gateway route carries 50/50, and the gateway traffic is split so."""
        if split or (record.state.routes.primary, record.state.routes.canary) != (50, 50):
            return
        split["envoy"] = wait_for(
            lambda: (w := envoy_gateway_weights(env)) == {"prod_backend-primary": 50, "prod_backend": 50} and w,
            "Envoy's gateway route at 50/50",
        )
        with httpx.Client(trust_env=False, timeout=15) as c:
            answers = [served_by(c, env) for _ in range(300)]
        split["answers"] = answers

    hey = None
    try:
        env.commit({GATEWAY: GATEWAY_OBJECTS, CANARY: gatewayapi_provider}, "backend: provider gatewayapi:v1 (test)")
        rt = env.runtime()
        try:
            pipeline.sync(rt)
            ctl = rt.controller(log=lambda _line: None, interval=1.0)
            ctl.bootstrap(ctl.canary(KEY))  # the HTTPRoute of the switched canary (all traffic on the primary)
        finally:
            rt.close()
        route = env.cluster().get(*routing.route_key(_canary(env)))
        assert route is not None and route["kind"] == "HTTPRoute"
        assert route["spec"]["parentRefs"] == [{"name": "public", "namespace": "gateway"}]
        wait_for(lambda: envoy_gateway_weights(env) == {"prod_backend-primary": 100}, "Envoy serving the HTTPRoute")

        # The load test through the gateway: hey (20 requests/s, 2 workers) until both releases are over.
        hey = procs.start_hey(
            f"{env.gateway_url}/", duration=900, concurrency=2, rate_per_worker=10, timeout=15, extra=["-host", HOST]
        )
        with GatewayClient(env) as client:
            env.commit(
                {
                    BACKEND_DEPLOYMENT: both(
                        with_env_var("PODINFO_EXTRA_LATENCY_MS", "1000"), with_image(new_podinfo_image())
                    )
                },
                "backend: slow revision (gatewayapi provider test)",
            )
            slow = release(env)
            assert slow[-1].phase == Phase.Failed, [r.phase for r in slow]
            assert max(r.state.status.canaryWeight for r in slow) > 0, "the slow canary never got gateway traffic"
            clean_image = new_podinfo_image()
            env.commit(
                {BACKEND_DEPLOYMENT: both(without_env_var("PODINFO_EXTRA_LATENCY_MS"), with_image(clean_image))},
                "backend: clean revision (gatewayapi provider test)",
            )
            clean = release(env, on_tick=at_max_weight)
            assert clean[-1].phase == Phase.Succeeded, [r.phase for r in clean]
            time.sleep(1.0)
        hey.send_signal(signal.SIGINT)  # hey stops and prints its summary
        load = procs.finish_hey(hey, timeout=60)
        assert load.responses > 0 and load.lost == 0, load.raw

        assert client.ok > 0 and client.failures == [], client.failures[:5]
        # Rolled back by the latency check; the built-in request-success-rate (Flagger's default observer query)
        # was evaluated against the local Prometheus and passed for both revisions.
        slow_checks = [c for r in slow for c in r.result.checks]
        assert any(c.name == "latency" and not c.passed for c in slow_checks), slow_checks
        builtin = [
            c for r in slow + clean for c in r.result.checks if c.name == "request-success-rate" and c.value is not None
        ]
        assert builtin and all(c.passed and c.value >= 99 for c in builtin), builtin
        assert split, "the clean release never reached weight 50"
        answers = split["answers"]
        canary_share = answers.count("canary") / len(answers)
        assert answers.count("primary") + answers.count("canary") == len(answers), answers[:5]
        assert 0.38 < canary_share < 0.62, canary_share
        primary = deployment(env, "backend-primary")
        assert primary["spec"]["template"]["spec"]["containers"][0]["image"] == clean_image
        final = env.cluster().get(*routing.route_key(_canary(env)))
        assert routing.routes_in(_canary(env), final) == (100, 0, False)
        wait_for(lambda: envoy_gateway_weights(env) == {"prod_backend-primary": 100}, "all traffic back on the primary")
        print(
            f"gatewayapi provider: hey through the gateway {load.responses} responses {load.status_counts}, "
            f"{load.lost} lost; client {client.ok} gateway requests, {len(client.failures)} failed; slow revision rolled "
            f"back after {len(slow)} ticks, clean promoted after {len(clean)} ticks; at weight 50 Envoy's gateway "
            f"route {split['envoy']}, {answers.count('canary')}/{len(answers)} requests served by the canary; "
            f"{len(builtin)} request-success-rate checks passed (min {min(c.value for c in builtin):.1f}%)"
        )
    finally:
        if hey is not None and hey.poll() is None:
            hey.kill()
            hey.wait(timeout=10)
        env.commit({CANARY: lambda _t: original}, "backend: back to istio (test)")
        rt = env.runtime()
        try:
            pipeline.sync(rt)
        finally:
            rt.close()
        # The istio canary does not use the HTTPRoute any more (Flagger would leave it orphaned): remove it.
        env.cluster().delete("gateway.networking.k8s.io/v1", "HTTPRoute", "prod", "backend")


def _canary(env: PlaygroundEnv):
    from playground.controller import Controller

    return Controller(env.cluster(), log=lambda _l: None).canary(KEY)
