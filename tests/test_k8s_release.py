"""Full releases on the kubernetes backend: the real client against the fake API server, metrics from a REAL
Prometheus fed with recorded Istio metrics.

The metrics are backfilled with ``promtool tsdb create-blocks-from openmetrics`` (Debian ``prometheus``) before
Prometheus starts on that TSDB. The recorded series run from 10 minutes before the test to 20 minutes after
it (timestamps in the future are accepted by promtool and served once their time has come), so every instant
query "now" of the shipped MetricTemplates (``rate(...[30s])``) sees a full window whatever the test's speed.

Two namespaces are recorded: ``prod`` (the new ``backend`` revision answers 200 in 10-60 ms; the primary,
``backend-primary``, fails half its requests, which a query that did not select the canary only would
notice) and ``staging`` (the new ``backend`` revision fails 20 % of its requests). The shipped backend Canary,
Deployment, HPA, MetricTemplates and AlertProviders are used as they are, except for addresses: webhooks and
alert hooks point at a local recording HTTP server, the templates at the test Prometheus.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from playground import routing
from playground.cluster.kubernetes import KubernetesCluster
from playground.controller import Controller, Settings
from playground.models import Phase
from tests.support.fake_kube import FakeKube
from tests.support.http_server import RecordingServer
from tests.support.prometheus import PrometheusProcess, prometheus_available

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "manifests"
NEW_IMAGE = "ghcr.io/stefanprodan/podinfo:6.7.1"
BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
STEP = 5  # seconds between recorded samples

# (namespace, workload) -> (requests per second, share of 5xx, latency distribution {upper bound ms: share})
RECORDED = {
    ("prod", "backend"): (20.0, 0.0, {10: 0.5, 25: 0.3, 50: 0.2}),
    ("prod", "backend-primary"): (20.0, 0.5, {50: 0.5, 250: 0.5}),
    ("staging", "backend"): (20.0, 0.2, {10: 0.5, 25: 0.5}),
    ("staging", "backend-primary"): (20.0, 0.0, {25: 1.0}),
}


def _load(rel: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((MANIFESTS / rel).read_text()) if d]


# ------------------------------------------------------------------------------------------ recorded metrics


def openmetrics(start: int, end: int) -> str:
    """Istio's destination-side request counter and duration histogram for RECORDED, as OpenMetrics text."""
    lines = ["# HELP istio_requests Requests seen by the destination sidecars.", "# TYPE istio_requests counter"]
    for (ns, wl), (rps, err, _) in RECORDED.items():
        for code, share in (("200", 1 - err), ("500", err)):
            if share <= 0:
                continue
            labels = (
                f'reporter="destination",destination_workload_namespace="{ns}",destination_workload="{wl}",'
                f'response_code="{code}"'
            )
            for i, t in enumerate(range(start, end, STEP)):
                lines.append(f"istio_requests_total{{{labels}}} {rps * share * STEP * (i + 1):.1f} {t}")
    lines += [
        "# HELP istio_request_duration_milliseconds Request duration at the destination.",
        "# TYPE istio_request_duration_milliseconds histogram",
    ]
    for (ns, wl), (rps, _, dist) in RECORDED.items():
        labels = f'reporter="destination",destination_workload_namespace="{ns}",destination_workload="{wl}"'
        per_step = rps * STEP
        for i, t in enumerate(range(start, end, STEP)):
            n = i + 1
            for le in BUCKETS:
                below = sum(share for bound, share in dist.items() if bound <= le)
                lines.append(
                    f'istio_request_duration_milliseconds_bucket{{{labels},le="{le}"}} {per_step * below * n:.1f} {t}'
                )
            lines.append(f'istio_request_duration_milliseconds_bucket{{{labels},le="+Inf"}} {per_step * n:.1f} {t}')
            lines.append(f"istio_request_duration_milliseconds_count{{{labels}}} {per_step * n:.1f} {t}")
            lines.append(f"istio_request_duration_milliseconds_sum{{{labels}}} {per_step * n * 20.0:.1f} {t}")
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool not found: apt-get install prometheus (Debian's package ships promtool)"
    return path


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    assert prometheus_available(), "prometheus not found: apt-get install prometheus, or set PROMETHEUS_BIN"
    work = tmp_path_factory.mktemp("prometheus")
    now = int(time.time())
    src = work / "istio.om"
    src.write_text(openmetrics(now - 600, now + 1200))
    done = subprocess.run(
        [promtool(), "tsdb", "create-blocks-from", "openmetrics", str(src), str(work / "data")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"promtool backfill failed:\n{done.stdout}\n{done.stderr}"
    with PrometheusProcess(work) as prom:
        prom.wait_for('sum(rate(istio_requests_total{destination_workload_namespace="staging"}[30s]))')
        yield prom


# ------------------------------------------------------------------------------------------ the cluster


@pytest.fixture
def hooks():
    with RecordingServer() as srv:
        yield srv


def _with_addresses(obj: dict, prom_url: str, hook_url: str, namespace: str) -> dict:
    obj = copy.deepcopy(obj)
    kind = obj["kind"]
    if obj["metadata"].get("namespace") == "prod":
        obj["metadata"]["namespace"] = namespace
    if kind == "MetricTemplate":
        obj["spec"]["provider"]["address"] = prom_url
    if kind == "Canary":
        analysis = obj["spec"]["analysis"]
        for hook in analysis.get("webhooks", []):
            hook["url"] = f"{hook_url}/{hook['name']}"
        for alert in analysis.get("alerts", []):
            alert["providerRef"]["namespace"] = namespace
    return obj


def seed(kube: FakeKube, namespace: str, prom_url: str, hook_url: str) -> None:
    """What a GitOps sync would have applied: templates, providers, the alert secret, the backend workload."""
    for rel in ("metrics/error-rate.yaml", "metrics/latency.yaml"):
        for obj in _load(rel):
            if kube.object(obj["apiVersion"], obj["kind"], "istio-system", obj["metadata"]["name"]) is None:
                kube.seed(_with_addresses(obj, prom_url, hook_url, namespace))
    for rel in (
        "prod/alerts.yaml",
        "prod/backend/deployment.yaml",
        "prod/backend/hpa.yaml",
        "prod/backend/canary.yaml",
    ):
        for obj in _load(rel):
            kube.seed(_with_addresses(obj, prom_url, hook_url, namespace))
    kube.seed(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "on-call-slack", "namespace": namespace},
            "type": "Opaque",
            "data": {"address": base64.b64encode(f"{hook_url}/slack".encode()).decode()},
        }
    )


def new_revision(cluster: KubernetesCluster, namespace: str, image: str = NEW_IMAGE) -> None:
    """The sync of a commit that changes the image: the target Deployment is replaced (replicas kept)."""
    dep = _load("prod/backend/deployment.yaml")[0]
    dep["metadata"]["namespace"] = namespace
    dep["spec"]["template"]["spec"]["containers"][0]["image"] = image
    cluster.apply(dep)


def settings(prometheus: PrometheusProcess, hooks: RecordingServer, namespace: str) -> Settings:
    return Settings(
        default_prometheus=prometheus.url,
        interval_override=0.05,
        secrets={(namespace, "on-call-slack"): {"address": f"{hooks.url}/slack"}},
        env={"PLAYGROUND_ALERT_WEBHOOK_URL": f"{hooks.url}/events"},
    )


def image_of(kube: FakeKube, namespace: str, name: str) -> str:
    dep = kube.object("apps/v1", "Deployment", namespace, name)
    return dep["spec"]["template"]["spec"]["containers"][0]["image"]


def kubeconfig_for(kube: FakeKube, path: Path) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "fake",
                "clusters": [{"name": "fake", "cluster": {"server": kube.url}}],
                "users": [{"name": "pipeline", "user": {"token": "t0ken"}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "pipeline"}}],
            }
        )
    )
    return path


# ------------------------------------------------------------------------------------------ releases


def test_release_with_good_metrics_is_promoted(prometheus, hooks):
    with FakeKube(auto_rollout=True) as kube:
        seed(kube, "prod", prometheus.url, hooks.url)
        api = kube.api_client()
        cluster = KubernetesCluster(api_client=api, sleep=lambda s: None)
        lines: list[str] = []
        ctl = Controller(cluster, settings(prometheus, hooks, "prod"), log=lines.append)

        first = ctl.run("prod/backend")  # bootstrap: primary created, target scaled to zero
        assert first.phase == Phase.Initialized
        assert kube.object("apps/v1", "Deployment", "prod", "backend")["spec"]["replicas"] == 0

        new_revision(cluster, "prod")
        kube.clear_requests()
        ticks = []
        final = ctl.run("prod/backend", on_tick=ticks.append, max_ticks=60)

        assert final.phase == Phase.Succeeded, "\n".join(lines)
        weights = [t.state.routes.canary for t in ticks if t.phase == Phase.Progressing]
        assert [w for w in weights if w] == [5, 10, 15, 20, 25, 30, 35, 40, 45, 50]
        checks = [c for t in ticks for c in t.result.checks]
        assert checks and all(c.passed for c in checks)
        assert {c.name: c.value for c in checks} == {"error-rate": 0.0, "latency": pytest.approx(49.5, abs=1)}
        # Promotion: the primary runs the new image, all traffic on it, the canary scaled to zero.
        assert image_of(kube, "prod", "backend-primary") == NEW_IMAGE
        vs = kube.object("networking.istio.io/v1beta1", "VirtualService", "prod", "backend")
        canary = routing_canary("prod")
        assert routing.routes_of(canary, vs) == (100, 0, False)
        assert kube.object("apps/v1", "Deployment", "prod", "backend")["spec"]["replicas"] == 0
        status = kube.object("flagger.app/v1beta1", "Canary", "prod", "backend")["status"]
        assert status["phase"] == "Succeeded" and status["lastPromotedSpec"] == final.revision
        # Webhooks ran (pre-rollout once, rollout on every analysed tick) and the info alert went out.
        assert len(hooks.requests_to("/conformance-test")) == 1
        assert len(hooks.requests_to("/load-test")) >= 10
        events = [json.loads(r.body) for r in hooks.requests_to("/events")]
        assert any("analysis completed successfully" in json.dumps(e).lower() for e in events), events
        assert not hooks.requests_to("/slack")  # on-call only gets errors
        # Nothing was deleted and no request failed other than the expected create-then-replace 409s.
        assert not [r for r in kube.requests if r.method == "DELETE"]
        assert all(r.status < 400 or (r.status == 409 and r.method == "POST") for r in kube.requests), [
            r for r in kube.requests if r.status >= 400
        ]
        api.close()


def routing_canary(namespace: str):
    from playground.models import Canary

    obj = _load("prod/backend/canary.yaml")[0]
    obj["metadata"]["namespace"] = namespace
    return Canary.model_validate(obj)


def test_release_with_bad_metrics_is_rolled_back_through_the_cli(prometheus, hooks, tmp_path, monkeypatch, capsys):
    from playground import cli

    monkeypatch.setenv("PLAYGROUND_ALERT_WEBHOOK_URL", f"{hooks.url}/events")
    monkeypatch.delenv("PLAYGROUND_BACKEND", raising=False)
    with FakeKube(auto_rollout=True) as kube:
        seed(kube, "staging", prometheus.url, hooks.url)
        config = kubeconfig_for(kube, tmp_path / "kubeconfig")
        argv = ["release", "staging/backend", "--kubeconfig", str(config), "--interval", "50ms"]

        assert cli.main(argv) == 0  # bootstrap only: Initialized
        assert "Initialized" in capsys.readouterr().out

        api = kube.api_client()
        new_revision(KubernetesCluster(api_client=api), "staging")
        api.close()
        code = cli.main(argv + ["--max-ticks", "60"])
        out = capsys.readouterr().out
        assert code == 1, out
        tick_lines = [line for line in out.splitlines() if line.startswith("tick ")]
        assert any("error-rate=20.0 FAIL" in line for line in tick_lines), out
        assert "staging/backend: Failed after" in out and "rolled back" in out
        # Rollback: all traffic on the primary, canary at zero, the primary still on the old image.
        vs = kube.object("networking.istio.io/v1beta1", "VirtualService", "staging", "backend")
        assert routing.routes_of(routing_canary("staging"), vs) == (100, 0, False)
        assert kube.object("apps/v1", "Deployment", "staging", "backend")["spec"]["replicas"] == 0
        assert image_of(kube, "staging", "backend-primary") != NEW_IMAGE
        status = kube.object("flagger.app/v1beta1", "Canary", "staging", "backend")["status"]
        assert status["phase"] == "Failed" and status["failedChecks"] == 10
        slack = [json.loads(r.body) for r in hooks.requests_to("/slack")]
        assert any("failed checks threshold reached 10" in json.dumps(m).lower() for m in slack), slack

        # The backend-agnostic listing shows the outcome.
        assert cli.main(["canaries", "--kubeconfig", str(config)]) == 0
        listing = capsys.readouterr().out.splitlines()
        assert listing[0].split() == ["NAMESPACE", "NAME", "PHASE", "WEIGHT", "FAILEDCHECKS", "LASTTRANSITIONTIME"]
        assert listing[1].split()[:5] == ["staging", "backend", "Failed", "0", "10"]
        # `playground status` against the cluster shows the same (the local playground's table otherwise).
        assert cli.main(["status", "--kubeconfig", str(config), "-n", "staging"]) == 0
        assert capsys.readouterr().out.splitlines()[1].split()[:5] == ["staging", "backend", "Failed", "0", "10"]


def test_release_cli_errors_are_clear(tmp_path, capsys, monkeypatch):
    from playground import cli

    monkeypatch.delenv("PLAYGROUND_BACKEND", raising=False)
    with FakeKube() as kube:
        config = kubeconfig_for(kube, tmp_path / "kubeconfig")
        assert cli.main(["release", "prod/backend", "--kubeconfig", str(config)]) == 2
        assert "Canary prod/backend not found in the kubernetes cluster" in capsys.readouterr().err
        assert cli.main(["release", "backend", "--kubeconfig", str(config)]) == 2
        assert "must be NAMESPACE/NAME" in capsys.readouterr().err
        assert cli.main(["release", "prod/backend", "--backend", "local", "--context", "x"]) == 2
        assert "--context only applies to the kubernetes backend" in capsys.readouterr().err
        assert cli.main(["canaries", "--kubeconfig", str(tmp_path / "absent")]) == 2
        assert "no such file" in capsys.readouterr().err
        kube.fail("/apis/flagger.app/v1beta1/namespaces/prod/canaries/backend", 403, method="GET")
        assert cli.main(["release", "prod/backend", "--kubeconfig", str(config)]) == 2
        assert "HTTP 403 Forbidden" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ measurements

RUN_SCRIPT = r"""
import json, resource, sys, time
t0 = time.monotonic()
import dagster as dg
import definitions
load_s = time.monotonic() - t0
job = definitions.defs().get_job_def("canary_release")
start = time.monotonic()
result = job.execute_in_process(
    run_config={"ops": {"release": {"config": {"target": "prod/backend", "interval": "50ms", "max_ticks": 60}}}},
    instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
outcome = result.output_for_node("release") if result.success else None
print(json.dumps({"success": result.success, "outcome": outcome, "import_s": round(load_s, 2),
                  "run_s": round(time.monotonic() - start, 2),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))
"""


@pytest.mark.integration  # starts a process
def test_measure_one_release_run(prometheus, hooks, tmp_path):
    """Figures for docs/kubernetes.md: peak RSS of a canary_release run (a K8sRunLauncher run pod does exactly
    this: import the code location, execute one run) and Kubernetes API calls per tick. Printed, not judged,
    except for sanity bounds."""
    with FakeKube(auto_rollout=True) as kube:
        seed(kube, "prod", prometheus.url, hooks.url)
        api = kube.api_client()
        cluster = KubernetesCluster(api_client=api)
        Controller(cluster, settings(prometheus, hooks, "prod"), log=lambda _: None).run("prod/backend")
        new_revision(cluster, "prod")
        api.close()
        kube.clear_requests()
        env = {
            **os.environ,
            "PLAYGROUND_BACKEND": "kubernetes",
            "KUBECONFIG": str(kubeconfig_for(kube, tmp_path / "kubeconfig")),
            "PLAYGROUND_ALERT_WEBHOOK_URL": f"{hooks.url}/events",
            "DAGSTER_HOME": str(tmp_path),
        }
        env.pop("PLAYGROUND_CONTEXT", None)
        done = subprocess.run(
            [sys.executable, "-c", RUN_SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr[-3000:]
        figures = json.loads(done.stdout.strip().splitlines()[-1])
        assert figures["success"], done.stderr[-3000:]
        assert figures["outcome"]["phase"] == "Succeeded", figures
        ticks = figures["outcome"]["ticks"]
        reqs = list(kube.requests)
        by_verb: dict[str, int] = {}
        for r in reqs:
            by_verb[r.method] = by_verb.get(r.method, 0) + 1
        figures.update(
            ticks=ticks,
            api_calls=len(reqs),
            api_calls_per_tick=round(len(reqs) / ticks, 1),
            api_calls_by_method=by_verb,
        )
        print("\nMEASURED " + json.dumps(figures))
        (tmp_path / "figures.json").write_text(json.dumps(figures))
        assert 50 < figures["peak_rss_mb"] < 2000
        assert 5 < figures["api_calls_per_tick"] < 200
