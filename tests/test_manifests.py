"""Tests of playground.manifests: loading the GitOps tree and ``playground validate``."""

from __future__ import annotations

import argparse
import shutil
import textwrap
from pathlib import Path

import pytest

from playground import manifests as m
from playground.models import Canary, Deployment, HorizontalPodAutoscaler, MetricTemplate

ROOT = Path(__file__).resolve().parents[1]

# One line per problem in tests/data/broken (paths as printed when run from the repository root).
BROKEN_EXPECTED = [
    "tests/data/broken/bad-yaml.yaml:9:1: invalid YAML: found unexpected end of stream while scanning a quoted scalar started at line 7, column 10. Fix: correct the YAML syntax at this position (indentation, quoting, ':' and '-')",
    "tests/data/broken/documents.yaml:1: document is a list, not a Kubernetes object. Fix: each YAML document must be a mapping with apiVersion, kind and metadata",
    "tests/data/broken/documents.yaml:3: ConfigMap prod/no-api-version: apiVersion: missing apiVersion. Fix: add apiVersion (for example apiVersion: apps/v1)",
    "tests/data/broken/documents.yaml:10: ConfigMap: metadata.name: missing metadata.name. Fix: add metadata.name",
    "tests/data/broken/documents.yaml:16: ConfigMap prod/Bad_Name: metadata.name: invalid name 'Bad_Name'. Fix: use lower case letters, digits, '-' and '.', starting and ending with a letter or digit",
    "tests/data/broken/documents.yaml:20: ConfigMap prod/Bad_Name: metadata.labels: duplicate key: YAML keeps only the last value. Fix: remove or merge the duplicated key",
    "tests/data/broken/documents.yaml:23: HorizontalPodAutoscaler prod/old-hpa: apiVersion: unsupported apiVersion 'autoscaling/v2beta1' for HorizontalPodAutoscaler. Fix: use apiVersion: autoscaling/v2",
    "tests/data/broken/documents.yaml:38: Canary prod/incomplete: spec.service: required field missing: the playground creates the apex, primary and canary Services of a Deployment target from it. Fix: add service with at least port (the port the app listens on, like 9898)",
    "tests/data/broken/documents.yaml:39: Canary prod/incomplete: spec.targetRef.apiVersion: required field missing (Flagger's Canary CRD requires it). Fix: add apiVersion: apps/v1",
    "tests/data/broken/documents.yaml:39: Canary prod/incomplete: spec.targetRef.name: required field missing. Fix: add name",
    "tests/data/broken/metrics.yaml:20: MetricTemplate istio-system/latency: spec.provider.type: provider type 'datadog' is not supported by the playground. Fix: use type: prometheus",
    "tests/data/broken/metrics.yaml:21: MetricTemplate istio-system/latency: spec.provider.address: invalid address 'prometheus.istio-system:9090'. Fix: use an http:// or https:// URL, like http://prometheus.istio-system:9090",
    "tests/data/broken/metrics.yaml:22: MetricTemplate istio-system/latency: spec.query: unknown template variable {{ namepsace }}; did you mean namespace? Fix: use name, namespace, target, service, ingress, interval or variables.KEY",
    "tests/data/broken/metrics.yaml:28: MetricTemplate istio-system/error-rate: metadata.name: duplicate object: MetricTemplate istio-system/error-rate is already defined at tests/data/broken/metrics.yaml:1. Fix: rename or remove one of them",
    "tests/data/broken/prod/alerts.yaml:9: AlertProvider prod/on-call: spec.address: inline alert address: webhook URLs are credentials and must not be stored in git. Fix: remove address; put the URL in a Secret (key address) referenced by secretRef, or name an environment variable holding it with addressFromEnv",
    "tests/data/broken/prod/alerts.yaml:16: AlertProvider prod/nowhere: spec: no address: set secretRef or addressFromEnv. Fix: add secretRef (a Secret with key address) or addressFromEnv (an environment variable)",
    "tests/data/broken/prod/alerts.yaml:25: AlertProvider prod/chat: spec.type: invalid value 'slak'; did you mean slack? Fix: use one of slack, msteams, discord, rocket, gchat, webhook",
    "tests/data/broken/prod/canary-ab.yaml:18: Canary prod/frontend: spec.analysis.match: provider kubernetes cannot route by HTTP headers or cookies, so A/B testing (match with iterations) is not possible. Fix: use a provider that supports HTTP matching (istio, gatewayapi:v1, gatewayapi:v1beta1 here), or remove match for a blue/green deployment",
    "tests/data/broken/prod/canary-steps.yaml:11: Canary prod/podinfo: spec.autoscalerRef: HorizontalPodAutoscaler prod/podinfo scales podinf, not the canary target podinfo. Fix: set the HPA's scaleTargetRef.name to podinfo",
    "tests/data/broken/prod/canary-steps.yaml:20: Canary prod/podinfo: spec.analysis.stepWeights[1]: step weights must increase: 5 follows 10. Fix: list the weights in increasing order, like [5, 10, 20, 50]",
    "tests/data/broken/prod/canary-steps.yaml:20: Canary prod/podinfo: spec.analysis.stepWeights[2]: step weight 120 is outside 1..100. Fix: use percentages between 1 and 100",
    "tests/data/broken/prod/canary-typo.yaml:12: Canary prod/typo: spec.service.port: expected an integer, got 'nine'. Fix: set it to an integer",
    "tests/data/broken/prod/canary-typo.yaml:16: Canary prod/typo: spec.analysis.stepweight: unknown field; did you mean stepWeight? Fix: rename it to stepWeight",
    "tests/data/broken/prod/canary-typo.yaml:19: Canary prod/typo: spec.analysis.webhooks[0].type: invalid value 'pre-rolout'; did you mean pre-rollout? Fix: use one of confirm-rollout, pre-rollout, rollout, confirm-traffic-increase, confirm-promotion, post-rollout, rollback, event",
    "tests/data/broken/prod/canary-typo.yaml:23: Canary prod/typo: spec.analysis.alerts[0].severity: invalid value 'critical'. Fix: use one of info, warn, error",
    "tests/data/broken/prod/canary-weighted.yaml:10: Canary prod/backend: spec.targetRef.name: Deployment prod/backendd not found. Fix: use one of prod/frontend",
    "tests/data/broken/prod/canary-weighted.yaml:13: Canary prod/backend: spec.service.timeout: invalid duration '5 seconds'. Fix: use a number with a unit, like 30s, 1m or 1m30s",
    "tests/data/broken/prod/canary-weighted.yaml:14: Canary prod/backend: spec.analysis: a weighted canary needs stepWeight or stepWeights (both are empty and iterations is not set). Fix: set stepWeight (e.g. 10) and maxWeight (e.g. 50), or stepWeights, or iterations for blue/green",
    "tests/data/broken/prod/canary-weighted.yaml:15: Canary prod/backend: spec.analysis.interval: invalid duration '15'. Fix: use a number with a unit, like 30s, 1m or 1m30s",
    "tests/data/broken/prod/canary-weighted.yaml:17: Canary prod/backend: spec.analysis.maxWeight: 150 is outside 0..100. Fix: set maxWeight to a percentage (1..100)",
    "tests/data/broken/prod/canary-weighted.yaml:20: Canary prod/backend: spec.analysis.metrics[0].templateRef: MetricTemplate istio-system/error-rat not found. Fix: use one of istio-system/error-rate, istio-system/latency",
    "tests/data/broken/prod/canary-weighted.yaml:25: Canary prod/backend: spec.analysis.metrics[0].interval: invalid Prometheus duration '30 s'. Fix: use whole numbers with the units ms, s, m, h, d, w, y, largest first, like 30s, 1m, 1m30s or 1d (Prometheus durations have no fractions: 90s, not 1.5m)",
    "tests/data/broken/prod/canary-weighted.yaml:26: Canary prod/backend: spec.analysis.metrics[1].name: duplicate metric name 'error-rate'. Fix: give each metric a unique name",
    "tests/data/broken/prod/canary-weighted.yaml:30: Canary prod/backend: spec.analysis.metrics[1].thresholdRange: min 99 is greater than max 1: every value fails. Fix: swap min and max",
    "tests/data/broken/prod/canary-weighted.yaml:33: Canary prod/backend: spec.analysis.metrics[2]: metric 'my-custom-metric' has no templateRef or query and is not a built-in metric. Fix: use a built-in metric (request-success-rate, request-duration), or add a templateRef or a query",
    "tests/data/broken/prod/canary-weighted.yaml:36: Canary prod/backend: spec.analysis.metrics[3]: metric 'latency' has no templateRef or query and is not a built-in metric. Fix: add templateRef: {name: latency, namespace: istio-system}",
    "tests/data/broken/prod/canary-weighted.yaml:41: warning: Canary prod/backend: spec.analysis.webhooks[0].url: Service prod/flagger-loadtester is not in the manifests. Fix: check the host name, or add the Service",
    "tests/data/broken/prod/canary-weighted.yaml:42: Canary prod/backend: spec.analysis.webhooks[0].timeout: invalid duration '5sec'. Fix: use a number with a unit, like 30s, 1m or 1m30s",
    "tests/data/broken/prod/canary-weighted.yaml:45: Canary prod/backend: spec.analysis.webhooks[1].name: duplicate webhook name 'load-test'. Fix: give each webhook a unique name",
    "tests/data/broken/prod/canary-weighted.yaml:47: Canary prod/backend: spec.analysis.webhooks[1].url: invalid URL 'flagger-loadtester.prod'. Fix: use an http:// or https:// URL, like http://flagger-loadtester.prod/",
    "tests/data/broken/prod/canary-weighted.yaml:51: Canary prod/backend: spec.analysis.alerts[0].providerRef: AlertProvider prod/on-cal not found. Fix: use one of prod/on-call, prod/chat",
    "tests/data/broken/prod/workloads.yaml:16: warning: Deployment prod/podinfo: spec.template.spec.containers[0]: no readinessProbe on the target of Canary prod/podinfo: a new version counts as ready as soon as it starts. Fix: add a readinessProbe (podinfo: httpGet path /readyz on its http port)",
    "tests/data/broken/prod/workloads.yaml:17: Deployment prod/podinfo: image policy marker names ImagePolicy prod/podinfo, which is not in the manifests. Fix: add an ImagePolicy named podinfo in namespace prod (image.toolkit.fluxcd.io/v1beta2), or remove the marker",
    "tests/data/broken/prod/workloads.yaml:28: Deployment prod/frontend: spec.selector: the target of Canary prod/frontend needs a selector label app, name or app.kubernetes.io/name. Fix: add spec.selector.matchLabels.app: frontend (and the same pod label)",
    "tests/data/broken/prod/workloads.yaml:47: Deployment prod/frontend: metadata.name: duplicate object: Deployment prod/frontend is already defined at tests/data/broken/prod/workloads.yaml:22. Fix: rename or remove one of them",
    "tests/data/broken/prod/workloads.yaml:71: HorizontalPodAutoscaler prod/podinfo: spec.scaleTargetRef.name: Deployment prod/podinf not found. Fix: use one of prod/podinfo",
    "tests/data/broken/prod/workloads.yaml:72: HorizontalPodAutoscaler prod/podinfo: spec.minReplicas: minReplicas 5 is greater than maxReplicas 2. Fix: make minReplicas <= maxReplicas",
    "tests/data/broken/prod/workloads.yaml:79: warning: Service staging/orphan: metadata.namespace: namespace staging is not defined in the manifests. Fix: add a Namespace manifest named staging",
]
BROKEN_SUMMARY = "tests/data/broken: 22 objects in 10 files: 45 errors, 3 warnings"


def run_validate(argv: list[str]) -> int:
    """Run ``playground validate`` through its own parser (independent of other modules' subcommands)."""
    parser = argparse.ArgumentParser(prog="playground")
    m.add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["validate", *argv])
    return args.func(args)


@pytest.fixture
def in_repo(monkeypatch):
    monkeypatch.chdir(ROOT)


def write(tmp_path: Path, rel: str, text: str) -> Path:
    p = tmp_path / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(textwrap.dedent(text).lstrip("\n"))
    return p


# ------------------------------------------------------------------------------------------ the repo tree


def test_repo_manifests_are_clean(in_repo, capsys):
    assert run_validate(["manifests/"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["manifests/: 20 objects in 16 files: 0 errors, 0 warnings"]


def test_cli_is_registered(in_repo, capsys):
    from playground.cli import main

    assert main(["validate", "manifests"]) == 0
    assert capsys.readouterr().out.endswith("0 errors, 0 warnings\n")
    assert main(["validate", "does/not/exist"]) == 2
    assert "does/not/exist: no such file or directory" in capsys.readouterr().err


def test_repo_tree_content(in_repo):
    ms = m.load_tree("manifests")
    assert not ms.problems
    backend = ms.canary("prod/backend")
    frontend = ms.canary("prod/frontend")
    assert isinstance(backend, Canary) and isinstance(frontend, Canary)
    a = backend.spec.analysis
    assert (a.interval, a.threshold, a.maxWeight, a.stepWeight, a.iterations) == ("15s", 10, 50, 5, 0)
    assert [h.name for h in a.webhooks] == ["conformance-test", "load-test"]
    assert a.webhooks[0].metadata == {
        "type": "bash",
        "cmd": "curl -sd 'test' http://backend-canary.prod:9898/token | grep token",
    }
    assert backend.spec.progressDeadlineSeconds == 60
    fa = frontend.spec.analysis
    assert (
        fa.iterations == 10
        and len(fa.match) == 2
        and fa.match[1].headers["cookie"].regex == "^(.*?;)?(type=insider)(;.*)?$"
    )
    assert "-H 'Cookie: type=insider'" in fa.webhooks[0].metadata["cmd"]
    assert frontend.spec.service.gateways == ["public-gateway.istio-system.svc.cluster.local"]
    # references resolve
    dep = ms.deployment_for(backend)
    assert (
        isinstance(dep, Deployment)
        and dep.spec.template.spec.containers[0].image == "ghcr.io/stefanprodan/podinfo:6.7.0"
    )
    assert isinstance(ms.hpa_for(frontend), HorizontalPodAutoscaler)
    assert ms.template_for(backend, 0) is ms.template("istio-system", "error-rate")
    assert set(ms.templates()) == {("istio-system", "error-rate"), ("istio-system", "latency")}
    assert ms.alert_provider("prod", "release-events").spec.addressFromEnv == "PLAYGROUND_ALERT_WEBHOOK_URL"
    assert ms.canary_for("prod", "frontend") is frontend
    # raw objects
    policy = ms.get("ImagePolicy", "prod", "backend")
    assert policy.model is None and policy.raw["spec"]["policy"]["semver"]["range"] == ">=6.0.0 <7.0.0"
    assert ms.get("Namespace", None, "prod").raw["metadata"]["labels"] == {"istio-injection": "enabled"}
    # the image policy marker sits on the image line
    text = (ROOT / "manifests/prod/frontend/deployment.yaml").read_text()
    assert 'image: ghcr.io/stefanprodan/podinfo:6.7.0 # {"$imagepolicy": "prod:frontend"}' in text


def test_repo_apply_order(in_repo):
    ms = m.load_tree("manifests")
    order = [f"{o.kind} {o.qualified_name}" for o in ms.apply_order()]
    assert order[:3] == [
        "Namespace istio-system",
        "IstioOperator istio-system/istio-default",
        "Gateway istio-system/public-gateway",
    ]
    phases = dict(ms.apply_phases())
    assert list(phases) == ["mesh", "metrics", "workloads"]
    # prod is created before the AlertProviders that live in it
    assert [f"{o.kind} {o.qualified_name}" for o in phases["metrics"]][0] == "Namespace prod"
    kinds = [o.kind for o in phases["workloads"]]
    assert (
        kinds.index("Deployment")
        < kinds.index("Service")
        < kinds.index("HorizontalPodAutoscaler")
        < kinds.index("Canary")
    )
    assert set(kinds[-4:]) == {"ImageRepository", "ImagePolicy"}
    assert len(order) == len(ms)


# ------------------------------------------------------------------------------------------ broken tree


def test_broken_tree_reports_each_problem_on_one_line(in_repo, capsys):
    assert run_validate(["tests/data/broken"]) == 1
    out = capsys.readouterr().out.splitlines()
    for line in BROKEN_EXPECTED:
        assert line in out
    assert out[-1] == BROKEN_SUMMARY
    assert len(out) == len(BROKEN_EXPECTED) + 1


def test_broken_tree_findings_are_structured(in_repo):
    findings = m.validate("tests/data/broken")
    f = next(f for f in findings if "error-rat " in f.message)
    assert (f.file, f.line, f.kind, f.name, f.field, f.document) == (
        "tests/data/broken/prod/canary-weighted.yaml",
        20,
        "Canary",
        "prod/backend",
        "spec.analysis.metrics[0].templateRef",
        0,
    )
    assert f.fix == "use one of istio-system/error-rate, istio-system/latency" and f.is_error
    yaml_err = next(f for f in findings if f.file.endswith("bad-yaml.yaml"))
    assert (yaml_err.line, yaml_err.column) == (9, 1)
    warnings = [f for f in findings if not f.is_error]
    assert {w.kind for w in warnings} == {"Canary", "Deployment", "Service"}


def test_no_warnings_and_strict(in_repo, capsys, tmp_path):
    write(
        tmp_path,
        "ns.yaml",
        """
        apiVersion: v1
        kind: ConfigMap
        metadata:
          name: settings
          namespace: elsewhere
    """,
    )
    assert run_validate([str(tmp_path)]) == 0
    assert "warning: ConfigMap elsewhere/settings: metadata.namespace" in capsys.readouterr().out
    assert run_validate([str(tmp_path), "--no-warnings"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"{tmp_path}: 1 objects in 1 files: 0 errors, 1 warning"]
    assert run_validate([str(tmp_path), "--strict"]) == 1


def test_brief_example_line(tmp_path, monkeypatch):
    shutil.copytree(ROOT / "manifests", tmp_path / "manifests")
    canary = tmp_path / "manifests/prod/backend/canary.yaml"
    canary.write_text(
        canary.read_text().replace("name: error-rate\n          namespace", "name: error-rat\n          namespace", 1)
    )
    monkeypatch.chdir(tmp_path)
    lines = [str(f) for f in m.validate("manifests")]
    assert lines == [
        "manifests/prod/backend/canary.yaml:39: Canary prod/backend: spec.analysis.metrics[0].templateRef: "
        "MetricTemplate istio-system/error-rat not found. Fix: use one of istio-system/error-rate, istio-system/latency"
    ]


# ---------------------------------------------------------------------------------------------- load_tree


def test_load_tree_keeps_sources_documents_and_lines(tmp_path):
    write(
        tmp_path,
        "a/objects.yml",
        """
        # leading comment
        apiVersion: v1
        kind: Service
        metadata:
          name: web
        spec:
          ports:
            - port: 80
        ---
        ---
        apiVersion: flagger.app/v1beta1
        kind: MetricTemplate
        metadata:
          name: rate
          namespace: istio-system
        spec:
          provider:
            type: prometheus
          query: up
    """,
    )
    write(tmp_path, "b.yaml", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: istio-system\n")
    write(tmp_path, ".hidden/x.yaml", "not: loaded\n")
    write(tmp_path, "notes.txt", "not yaml")
    ms = m.load_tree(tmp_path)
    assert ms.files == ["a/objects.yml", "b.yaml"]
    svc = ms.get("Service", "default", "web")
    assert (svc.file, svc.document, svc.line, svc.model) == ("a/objects.yml", 0, 2, None)
    assert svc.line_of(("spec", "ports", 0, "port")) == 8
    assert svc.line_of(("spec", "missing", "field")) == 6
    tpl = ms.get("MetricTemplate", "istio-system", "rate")
    assert (tpl.document, tpl.line) == (2, 11)  # the empty document still counts
    assert isinstance(tpl.model, MetricTemplate) and tpl.path == str(tmp_path / "a" / "objects.yml")
    ns = ms.get("Namespace", None, "istio-system")
    assert ns.namespace is None and ns.qualified_name == "istio-system"
    assert [o.kind for o in ms.apply_order()] == ["Namespace", "MetricTemplate", "Service"]
    assert m.validate(tmp_path) == []


def test_load_single_file(tmp_path):
    p = write(
        tmp_path,
        "canary.yaml",
        """
        apiVersion: flagger.app/v1beta1
        kind: Canary
        metadata:
          name: podinfo
        spec:
          targetRef: {apiVersion: apps/v1, kind: Deployment, name: podinfo}
          service: {port: 9898}
          analysis: {interval: 1m, threshold: 5, stepWeight: 10, maxWeight: 50}
    """,
    )
    ms = m.load_tree(p)
    assert ms.files == ["canary.yaml"]
    c = ms.canary("default/podinfo")
    assert c is not None and c.key == "default/podinfo" and ms.source(c).path == str(p)
    assert [str(f) for f in m.validate(p)] == [
        f"{p}:6: Canary default/podinfo: spec.targetRef.name: Deployment default/podinfo not found. "
        "Fix: add the Deployment podinfo in namespace default to the manifests"
    ]


def test_missing_path_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        m.load_tree(tmp_path / "nope")


def test_flagger_crd_fields_and_empty_defaults_are_accepted(tmp_path):
    write(
        tmp_path,
        "c.yaml",
        """
        apiVersion: flagger.app/v1beta1
        kind: Canary
        metadata: {name: app, namespace: default}
        spec:
          provider: gatewayapi:v1
          targetRef: {apiVersion: apps/v1, kind: Deployment, name: app}
          service:
            port: 80
            gatewayRefs: [{name: gw, namespace: default}]
            trafficDistribution: PreferClose
          analysis:
            interval: 1m
            threshold: 2
            iterations: 3
            match: [{headers: {x-canary: {exact: insider}}}]
            sessionAffinity: {cookieName: flagger-cookie, primaryCookieName: primary-cookie}
            webhooks: [{name: hook, type: "", url: "http://hook/", disableTLS: true}]
        ---
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: app, namespace: default}
        spec:
          selector: {matchLabels: {app: app}}
          template:
            metadata: {labels: {app: app}}
            spec:
              containers: [{name: app, image: x, readinessProbe: {tcpSocket: {port: 80}}}]
    """,
    )
    ms = m.load_tree(tmp_path)
    assert not ms.problems
    c = ms.canary("default/app")
    assert c.spec.analysis.webhooks[0].type.value == "rollout"
    # Parsed, and nothing silently ignored: what the playground does not implement is named, with a fix.
    found = {(f.field, f.severity) for f in m.validate(tmp_path)}
    assert found == {
        ("spec.analysis.sessionAffinity", m.ERROR),  # with iterations/match: canary releases by weight only
        ("spec.analysis.sessionAffinity.primaryCookieName", m.ERROR),  # not in Flagger's Gateway API router
        ("spec.service.gatewayRefs[0]", m.WARNING),  # the Gateway default/gw is not in the manifests
    }


def test_finding_format():
    f = m.Finding("x.yaml", 3, "bad thing", "do this", "Canary", "ns/a", "spec.x", severity=m.WARNING)
    assert str(f) == "x.yaml:3: warning: Canary ns/a: spec.x: bad thing. Fix: do this"
    assert str(m.Finding("x.yaml", 1, "why?", column=4)) == "x.yaml:1:4: why?"


def test_schema_errors_are_translated_to_fields(tmp_path):
    write(
        tmp_path,
        "odd.yaml",
        """
        apiVersion: flagger.app/v1beta1
        kind: Canary
        metadata: {name: a}
        spec: null
        ---
        apiVersion: flagger.app/v1beta1
        kind: Canary
        metadata: {name: b}
        spec:
          targetRef: {name: d}
          service: {port: 80, targetPort: [1]}
          analysis:
            stepWeights: [x]
            alerts: [{name: a, providerRef: {name: p}, extra: 1}]
        ---
        apiVersion: image.toolkit.fluxcd.io/v1beta2
        kind: ImagePolicy
        metadata: {name: d}
        spec:
          imageRepositoryRef: {name: d}
          policy: {semver: {range: "six"}}
    """,
    )
    p = str(tmp_path / "odd.yaml")
    lines = [str(f) for f in m.validate(tmp_path) if f.is_error]
    assert lines == [
        f"{p}:4: Canary default/a: spec: expected a mapping, got nothing (null). Fix: set it to a mapping",
        f"{p}:10: Canary default/b: spec.targetRef.apiVersion: required field missing (Flagger's Canary CRD "
        "requires it). Fix: add apiVersion: apps/v1",
        f"{p}:10: Canary default/b: spec.targetRef.kind: required field missing (Flagger's Canary CRD "
        "requires it). Fix: add kind: Deployment",
        f"{p}:11: Canary default/b: spec.service.targetPort: expected an integer or a string, got a list. "
        "Fix: set it to an integer or a string",
        f"{p}:13: Canary default/b: spec.analysis.stepWeights[0]: expected an integer, got 'x'. "
        "Fix: set it to an integer",
        f"{p}:14: Canary default/b: spec.analysis.alerts[0].extra: unknown field. "
        "Fix: remove it; fields allowed here: name, providerRef, severity",
        f"{p}:20: ImagePolicy default/d: spec.imageRepositoryRef: ImageRepository default/d not found. "
        "Fix: add the ImageRepository default/d to the manifests",
        f"{p}:21: ImagePolicy default/d: spec.policy.semver.range: invalid semver range 'six'. "
        'Fix: use comparisons like ">=6.0.0 <7.0.0", "~6.1" or "6.x"',
    ]


def test_unsupported_template_functions_and_variables_are_named(tmp_path):
    """Flagger's Go-template functions and its {{ route }} variable are reported as unsupported (not as
    unknown typos); {{ ingress }} is substituted like in Flagger."""
    write(
        tmp_path,
        "t.yaml",
        """
        apiVersion: flagger.app/v1beta1
        kind: MetricTemplate
        metadata: {name: t, namespace: default}
        spec:
          provider: {type: prometheus, address: "http://prometheus:9090"}
          query: |
            sum(rate(requests{route="{{ route }}", ingress="{{ ingress }}",
              svc="{{ printf "%s-canary" target }}", ns="{{ namespace | upper }}"}[{{ interval }}]))
        """,
    )
    lines = [str(f) for f in m.validate(tmp_path) if f.is_error]
    assert len(lines) == 3, lines
    text = "\n".join(lines)
    assert "template variable {{ route }} (the provider's route object" in text
    assert 'template function printf in {{ printf "%s-canary" target }} is not supported' in text
    assert "a template pipeline in {{ namespace | upper }} is not supported" in text
    assert all("unknown" not in line for line in lines)


def test_gitops_istio_kustomize_tree_is_rendered_and_only_its_real_errors_remain():
    """gitops-istio's apps/ (two kustomizations: resources, images, a JSON 6902 patch file adding the Istio
    sidecar) and its metric templates, verbatim: validate renders them as Flux would and reports only what is
    really wrong: the HPAs are autoscaling/v2beta1, an API Kubernetes removed in 1.25 (no "broken object" from
    the kustomization or the patch file, no "unknown" anything)."""
    tree = ROOT / "tests" / "data" / "gitops-istio"
    mset = m.load_tree(tree)
    errors = [f for f in m.validate_set(mset) if f.is_error]
    assert [(f.file.removeprefix(str(tree) + "/"), f.kind, f.name, f.field) for f in errors] == [
        ("apps/backend/hpa.yaml", "HorizontalPodAutoscaler", "prod/backend", "apiVersion"),
        ("apps/frontend/hpa.yaml", "HorizontalPodAutoscaler", "prod/frontend", "apiVersion"),
    ]
    assert all("autoscaling/v2beta1" in f.message and "autoscaling/v2" in f.fix for f in errors)
    backend = mset.get("Deployment", "prod", "backend")
    assert backend is not None and backend.file == "apps/backend/deployment.yaml"
    spec = backend.raw["spec"]["template"]["spec"]
    assert [c["name"] for c in spec["containers"]] == ["backend", "istio-proxy"]  # the patch's sidecar
    assert spec["containers"][0]["image"] == "ghcr.io/stefanprodan/podinfo:6.1.0"  # images: newTag
    assert spec["containers"][0]["resources"]["limits"]["cpu"] == "2"  # the patch's replace
    assert [c["name"] for c in spec["initContainers"]] == ["istio-init"]
    # a field the kustomization wrote points at it; one the patch wrote, at the patch file
    image = backend.finding(("spec", "template", "spec", "containers", 0, "image"), "x")
    assert (image.file, image.line) == (str(tree / "apps/backend/kustomization.yaml"), 8)
    sidecar = backend.finding(("spec", "template", "spec", "containers", 1, "image"), "x")
    assert sidecar.file == str(tree / "apps/backend/deployment.patch.yaml")
    command = backend.finding(("spec", "template", "spec", "containers", 0, "command"), "x")
    assert (command.file, command.line) == (str(tree / "apps/backend/deployment.yaml"), 34)
    assert "apps/backend/deployment.patch.yaml" in mset.files and "apps/frontend/kustomization.yaml" in mset.files
