"""provider: kubernetes on the real local playground: Flagger's blue/green with plain Services, no mesh routes.

The shared playground's prod/backend canary is switched to ``provider: kubernetes`` (blue/green, 3 iterations;
the Istio-only ``service.retries`` removed), then two releases run with the controller while a client sends
requests to the apex Service ``backend.prod:9898`` through the local mesh the whole time:

- a faulty revision (half of its requests answer 500): the blue/green analysis, fed by the load test on
  ``backend-canary``, rolls it back;
- a clean revision: promoted (the primary runs the new image).

Every request of the client must succeed: with the kubernetes provider the apex always selects the primary pods,
and no VirtualService is ever written by these releases. The canary is switched back to istio afterwards.

A second test runs the same canary with ONLY Flagger's built-in metrics (``request-success-rate``,
``request-duration``): for the kubernetes provider they are the HTTP observer's queries on podinfo's own
``http_request_duration_seconds``, scraped by the playground's Prometheus with ``kubernetes_namespace`` /
``kubernetes_pod_name`` labels. A revision answering errors and one answering slowly are rolled back, a clean
one is promoted.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest

from playground import pipeline
from playground.models import Phase
from tests.support.dagster_playground import wait_for
from tests.support.mesh_client import MeshClient
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
        with MeshClient(env.mesh_proxy, "http://backend.prod:9898/") as client:
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


BUILTIN_METRICS = """    metrics:
      - name: request-success-rate
        thresholdRange:
          min: 99
        interval: 10s
      - name: request-duration
        thresholdRange:
          max: 500
        interval: 10s
"""


def builtin_metrics_only(text: str) -> str:
    out = kubernetes_provider(text)
    start, end = out.index("    metrics:\n"), out.index("    webhooks:\n")
    out = out[:start] + BUILTIN_METRICS + out[end:]
    # new canary pods have no values until their /metrics was scraped twice in the window: a check or two
    # finds "no values" at the start of every release (a failed check, as in Flagger), hence 5
    out = out.replace("    threshold: 10\n", "    threshold: 5\n")
    assert "templateRef" not in out and "threshold: 5" in out
    return out


# What the built-in queries select for target backend: every pod of the backend Deployment, whatever its revision
# (Flagger's regex, the same on a cluster). A rolled-back revision's pods stay in a query's window for the
# metric interval after they stopped, so each release waits until none of them is left in it.
TARGET_PODS = (
    'count(count_over_time(http_request_duration_seconds_count{kubernetes_namespace="prod",'
    'kubernetes_pod_name=~"backend-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"}[10s]))'
)


def wait_until_no_target_series(env: PlaygroundEnv, timeout: float = 90.0) -> None:
    with httpx.Client(trust_env=False, timeout=10) as c:

        def gone() -> bool:
            result = c.get(env.prometheus_url + "/api/v1/query", params={"query": TARGET_PODS}).json()
            return result["status"] == "success" and not result["data"]["result"]

        wait_for(gone, timeout=timeout, what="the backend pods to leave the metric window", poll=1.0)


def test_kubernetes_provider_builtin_metrics_promote_and_roll_back_under_load(playground) -> None:
    env = playground
    original = env.read(CANARY)
    # (label, edit of the Deployment, expected phase, the built-in metric that must have failed a check)
    revisions: list[tuple[str, Callable[[str], str], Phase, str | None]] = [
        (
            "errors",
            both(with_env_var("PODINFO_ERROR_RATE", "0.5"), with_image(new_podinfo_image())),
            Phase.Failed,
            "request-success-rate",
        ),
        (
            "latency",
            both(
                without_env_var("PODINFO_ERROR_RATE"),
                with_env_var("PODINFO_EXTRA_LATENCY_MS", "700"),
                with_image(new_podinfo_image()),
            ),
            Phase.Failed,
            "request-duration",
        ),
        (
            "clean",
            both(without_env_var("PODINFO_EXTRA_LATENCY_MS"), with_image(new_podinfo_image())),
            Phase.Succeeded,
            None,
        ),
    ]
    try:
        env.commit({CANARY: builtin_metrics_only}, "backend: provider kubernetes, built-in metrics only (test)")
        with MeshClient(env.mesh_proxy, "http://backend.prod:9898/") as client:
            for label, edit, expected, failing in revisions:
                wait_until_no_target_series(env)
                env.commit({BACKEND_DEPLOYMENT: edit}, f"backend: {label} revision (kubernetes built-in metrics test)")
                records = release(env)
                checks = [c for r in records for c in r.result.checks]
                failed = [c for c in checks if not c.passed]
                assert records[-1].phase == expected, (label, [r.phase for r in records], failed[:3])
                # the built-in queries ran and answered (values, not errors) ...
                assert any(c.value is not None for c in checks), (label, checks[:3])
                assert all("http_request_duration_seconds" in c.query for c in checks if c.query), checks[:2]
                if failing is not None:  # ... and the rollback came from the metric the fault degrades
                    assert any(c.name == failing and c.value is not None for c in failed), (label, failed[:3])
                    values = [c.value for c in failed if c.name == failing and c.value is not None]
                    print(f"{label}: rolled back, {failing} failed with {values[:5]}")
                else:
                    print(f"{label}: promoted; last values {[(c.name, c.value) for c in checks[-2:]]}")
                print(f"{label}: failed checks {[(c.name, c.value) for c in failed]}")
            time.sleep(1.0)
        assert client.ok > 0 and client.failures == [], client.failures[:5]
        primary = deployment(env, "backend-primary")
        env_names = {e["name"] for e in primary["spec"]["template"]["spec"]["containers"][0].get("env") or []}
        assert not {"PODINFO_ERROR_RATE", "PODINFO_EXTRA_LATENCY_MS"} & env_names
        print(
            f"kubernetes provider, built-in metrics: {client.ok} requests to backend.prod, {len(client.failures)} failed"
        )
    finally:
        env.commit({CANARY: lambda _t: original}, "backend: back to istio (test)")
        rt = env.runtime()
        try:
            pipeline.sync(rt)
        finally:
            rt.close()
