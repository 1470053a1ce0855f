"""provider: kubernetes on the real local playground: Flagger's blue/green with plain Services, no mesh routes.

The shared playground's prod/backend canary is switched to ``provider: kubernetes`` (blue/green, 3 iterations;
the Istio-only ``service.retries`` removed), then two releases run with the controller while a client sends
requests to the apex Service ``backend.prod:9898`` through the local mesh the whole time:

- a faulty revision (half of its requests answer 500): the blue/green analysis, fed by the load test on
  ``backend-canary``, rolls it back;
- a clean revision: promoted (the primary runs the new image).

Every request of the client must succeed: with the kubernetes provider the apex always selects the primary pods,
and no VirtualService is ever written by these releases. The canary is switched back to istio afterwards.
"""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from playground import pipeline
from playground.models import Phase
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


def kubernetes_provider(text: str) -> str:
    out = text.replace("provider: istio", "provider: kubernetes")
    out = out.replace("    maxWeight: 50\n", "").replace("    stepWeight: 5\n", "    iterations: 3\n")
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
    assert "provider: kubernetes" in out and "iterations: 3" in out and "retries:" not in out
    return out


class Client:
    def __init__(self, env: PlaygroundEnv):
        self.env, self.ok, self.failures = env, 0, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(proxy=self.env.mesh_proxy, trust_env=False, timeout=10) as c:
            while not self._stop.is_set():
                try:
                    r = c.get("http://backend.prod:9898/")
                    if r.status_code == 200:
                        self.ok += 1
                    else:
                        self.failures.append(f"HTTP {r.status_code}")
                except httpx.HTTPError as e:
                    self.failures.append(f"{type(e).__name__}: {e}")
                self._stop.wait(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=15)


def release(env: PlaygroundEnv):
    rt = env.runtime()
    try:
        pipeline.sync(rt)
        ctl = rt.controller(log=lambda _line: None, interval=1.0)
        records = []
        ctl.run(KEY, on_tick=records.append, max_ticks=150)
        return records
    finally:
        rt.close()


def test_kubernetes_provider_blue_green_rolls_back_and_promotes_under_load(playground) -> None:
    env = playground
    original = env.read(CANARY)
    vs_before = env.cluster().get("networking.istio.io/v1beta1", "VirtualService", "prod", "backend")
    try:
        env.commit({CANARY: kubernetes_provider}, "backend: provider kubernetes (test)")
        with Client(env) as client:
            env.commit(
                {BACKEND_DEPLOYMENT: both(with_env_var("PODINFO_ERROR_RATE", "0.5"), with_image(new_podinfo_image()))},
                "backend: faulty revision (kubernetes provider test)",
            )
            faulty = release(env)
            assert faulty[-1].phase == Phase.Failed, [r.phase for r in faulty]
            clean_image = new_podinfo_image()
            env.commit(
                {BACKEND_DEPLOYMENT: both(without_env_var("PODINFO_ERROR_RATE"), with_image(clean_image))},
                "backend: clean revision (kubernetes provider test)",
            )
            clean = release(env)
            assert clean[-1].phase == Phase.Succeeded, [r.phase for r in clean]
            time.sleep(1.0)
        assert client.ok > 0 and client.failures == [], client.failures[:5]
        primary = deployment(env, "backend-primary")
        assert primary["spec"]["template"]["spec"]["containers"][0]["image"] == clean_image
        # No route was written by these releases: the VirtualService is the one from before (if any).
        vs_after = env.cluster().get("networking.istio.io/v1beta1", "VirtualService", "prod", "backend")
        assert (vs_after or {}).get("spec") == (vs_before or {}).get("spec")
        print(f"kubernetes provider: {client.ok} requests to backend.prod, {len(client.failures)} failed")
    finally:
        env.commit({CANARY: lambda _t: original}, "backend: back to istio (test)")
        rt = env.runtime()
        try:
            pipeline.sync(rt)
        finally:
            rt.close()
