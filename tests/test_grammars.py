"""One implementation per grammar: `playground validate` and the runtime give the same verdict on the same text.

Each table row is written into a copy of the project's manifests, then judged twice: by validation
(``manifests.validate``: is there an error finding on that field?) and by the code that reads the field at run
time (the image automation's ``load_policies`` for ``policy.semver.range``, ``metrics.resolve_query`` for a
MetricTemplate query and a metric's interval (Prometheus durations), the controller's interval and
``hooks.hook_timeout`` for Go durations). Both must agree with the expected verdict, valid or not.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from playground import manifests
from playground.controller import Controller, Settings
from playground.hooks import hook_timeout
from playground.images import load_policies
from playground.local.cluster import LocalCluster
from playground.metrics import MetricError, resolve_query

ROOT = Path(__file__).resolve().parents[1]
POLICY = "prod/backend/image-policy.yaml"
TEMPLATE = "metrics/error-rate.yaml"
CANARY = "prod/backend/canary.yaml"


def tree(tmp_path: Path, rel: str, old: str, new: str) -> Path:
    """A copy of manifests/ with ``old`` replaced by ``new`` (once) in ``rel``."""
    root = tmp_path / "manifests"
    shutil.copytree(ROOT / "manifests", root)
    path = root / rel
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} is not once in {rel}"
    path.write_text(text.replace(old, new))
    return root


def validation_errors(root: Path, field_prefix: str) -> list[str]:
    return [str(f) for f in manifests.validate(root) if f.is_error and f.field.startswith(field_prefix)]


# ------------------------------------------------------------------------------------ semver ranges (Flux)

SEMVER = [
    (">=6.0.0 <7.0.0", True),
    (">= 6.0.0", True),
    ("~>6.1", True),
    (">=6.0.0, <7.0.0", True),
    ("^6", True),
    ("~6.1", True),
    ("6.x", True),
    ("6.1.*", True),
    ("*", True),
    ("1.2 - 1.4.5", True),
    (">=6.8.0-0", True),
    ("v6.1.0", True),
    ("6.1 || 7.x", True),
    ("=6.7.0", True),
    ("!=6.7.0", True),
    ("six", False),
    (">=> 6", False),
    ("6.0.0.0", False),
    ("~6.1.", False),
    (">=6 <7 ||| 8", False),
]


@pytest.mark.parametrize("rng,valid", SEMVER, ids=[r for r, _ in SEMVER])
def test_semver_range_verdicts_agree(tmp_path: Path, rng: str, valid: bool) -> None:
    root = tree(tmp_path, POLICY, 'range: ">=6.0.0 <7.0.0"', f"range: {rng!r}")
    errors: list = []
    policies = load_policies(root, errors=errors)
    runtime_ok = any(p.key == "prod:backend" for p in policies) and not errors
    validation = validation_errors(root, "spec.policy.semver.range")
    assert runtime_ok is valid, errors
    assert (not validation) is valid, validation


# ------------------------------------------------------------------------------ query templates (Flagger)

TEMPLATES = [
    ('"{{ namespace }}"', True),
    ('"{{ ingress }}"', True),
    ('"{{- namespace -}}"', True),
    ('"{{namespace}}"', True),
    ('"{{ service }}-{{ name }}"', True),
    ('"{{ interval }}"', True),
    ('"{{ route }}"', False),
    ('"{{ printf "%s-canary" target }}"', False),
    ('"{{ namespace | upper }}"', False),
    ('"{{ namepsace }}"', False),
    ('"{{ .Values }}"', False),
]


@pytest.mark.parametrize("action,valid", TEMPLATES, ids=[a for a, _ in TEMPLATES])
def test_query_template_verdicts_agree(tmp_path: Path, action: str, valid: bool) -> None:
    root = tree(
        tmp_path,
        TEMPLATE,
        'destination_workload_namespace="{{ namespace }}",\n              destination_workload=~"{{ target }}",\n              response_code',
        f'destination_workload_namespace={action},\n              destination_workload=~"{{{{ target }}}}",\n              response_code',
    )
    mset = manifests.load_tree(root)
    canary = mset.canary("prod/backend")
    assert canary is not None
    metric = canary.spec.analysis.metrics[0]
    try:
        resolve_query(canary, metric, mset.templates())
        runtime_ok = True
    except MetricError:
        runtime_ok = False
    validation = validation_errors(root, "spec.query")
    assert runtime_ok is valid
    assert (not validation) is valid, validation
    assert len(validation) <= 1, validation  # each problem once


# ----------------------------------------------------------------------------------------------- durations

DURATIONS = [
    ("15s", True),
    ("1m", True),
    ("1m30s", True),
    ("500ms", True),
    ("1h", True),
    ("1.5m", True),
    ("10", False),
    ("abc", False),
    ("1d", False),
    ("-1s", False),
    ("15 s", False),
]


@pytest.mark.parametrize("text,valid", DURATIONS, ids=[t for t, _ in DURATIONS])
def test_analysis_interval_verdicts_agree(tmp_path: Path, text: str, valid: bool) -> None:
    root = tree(tmp_path, CANARY, "interval: 15s", f"interval: {text!r}")
    canary = manifests.load_tree(root).canary("prod/backend")
    assert canary is not None
    cluster = LocalCluster(tmp_path / "home")  # the local backend's store (SQLite), no process
    try:
        Controller(cluster, Settings(), log=lambda _line: None).interval(canary)
        runtime_ok = True
    except ValueError:
        runtime_ok = False
    finally:
        cluster.close()
    validation = validation_errors(root, "spec.analysis.interval")
    assert runtime_ok is valid
    assert (not validation) is valid, validation


# A metric's interval is substituted into PromQL (``[{{ interval }}]``): Prometheus's grammar, not Go's. The
# verdicts are Prometheus 2.42's own (test_metric_interval_table_is_prometheus_own_verdict below asks it).
METRIC_INTERVALS = [
    ("30s", True),
    ("1m", True),
    ("1m30s", True),
    ("500ms", True),
    ("5m5ms", True),
    ("1h", True),
    ("1d", True),
    ("2w", True),
    ("1y", True),
    ("01m", True),
    ("1.5m", False),  # a Go duration (analysis.interval accepts it), not a Prometheus one
    ("90", False),
    ("0", False),
    ("0s", False),
    ("-1s", False),
    ("1s1m", False),
    ("1h1h", False),
    ("1M", False),
    ("1e3s", False),
    ("30 s", False),
    ("abc", False),
]


def _interval_tree(tmp_path: Path, text: str) -> Path:
    return tree(
        tmp_path,
        CANARY,
        "        interval: 30s\n      - name: latency",
        f"        interval: {text!r}\n      - name: latency",
    )


@pytest.mark.parametrize("text,valid", METRIC_INTERVALS, ids=[t for t, _ in METRIC_INTERVALS])
def test_metric_interval_verdicts_agree(tmp_path: Path, text: str, valid: bool) -> None:
    root = _interval_tree(tmp_path, text)
    mset = manifests.load_tree(root)
    canary = mset.canary("prod/backend")
    assert canary is not None
    metric = canary.spec.analysis.metrics[0]
    assert metric.interval == text
    try:
        resolved = resolve_query(canary, metric, mset.templates())
        runtime_ok = True
        assert f"[{text}]" in resolved.query
    except MetricError as e:
        runtime_ok = False
        assert "interval" in str(e) and "metric 'error-rate' of canary prod/backend" in str(e)
    validation = validation_errors(root, "spec.analysis.metrics[0].interval")
    assert runtime_ok is valid
    assert (not validation) is valid, validation


@pytest.mark.integration
def test_metric_interval_table_is_prometheus_own_verdict(tmp_path: Path) -> None:
    """The table above is what a real Prometheus says of the rendered built-in query with each interval."""
    from playground.metrics import ISTIO_QUERIES, render
    from tests.support.prometheus import PrometheusProcess, prometheus_available

    if not prometheus_available():
        pytest.fail("the Debian prometheus binary is not installed: run scripts/setup.sh (apt-get install prometheus)")
    verdicts = {}
    with PrometheusProcess(tmp_path / "prom") as prom:
        for text, _ in METRIC_INTERVALS:
            query = render(
                ISTIO_QUERIES["request-success-rate"],
                name="backend",
                namespace="prod",
                target="backend",
                service="backend",
                interval=text,
            )
            r = httpx.get(prom.url + "/api/v1/query", params={"query": query}, timeout=30)
            verdicts[text] = r.json()["status"] == "success"
    assert verdicts == dict(METRIC_INTERVALS)


WEBHOOK_TIMEOUTS = [("15s", True), ("2m", True), ("250ms", True), ("0s", False), ("0", False), ("soon", False)]


@pytest.mark.parametrize("text,valid", WEBHOOK_TIMEOUTS, ids=[t for t, _ in WEBHOOK_TIMEOUTS])
def test_webhook_timeout_verdicts_agree(tmp_path: Path, text: str, valid: bool) -> None:
    root = tree(tmp_path, CANARY, "timeout: 15s", f"timeout: {text!r}")
    canary = manifests.load_tree(root).canary("prod/backend")
    assert canary is not None
    hook = next(h for h in canary.spec.analysis.webhooks if h.name == "conformance-test")
    try:
        hook_timeout(hook)
        runtime_ok = True
    except ValueError:
        runtime_ok = False
    validation = validation_errors(root, "spec.analysis.webhooks[0].timeout")
    assert runtime_ok is valid
    assert (not validation) is valid, validation


# --------------------------------------------------------------------------------------- findings, once each


def test_a_repeated_problem_is_reported_once(tmp_path: Path) -> None:
    root = tree(tmp_path, TEMPLATE, "name: error-rate", "name: error-rate")
    text = (root / TEMPLATE).read_text().replace("{{ namespace }}", "{{ namepsace }}")
    (root / TEMPLATE).write_text(text)
    assert text.count("{{ namepsace }}") == 2  # the same typo twice in the query
    found = validation_errors(root, "spec.query")
    assert len(found) == 1 and "unknown template variable {{ namepsace }}; did you mean namespace?" in found[0]


# ------------------------------------------------------------------- a metric without thresholdRange (Flagger)


@pytest.mark.parametrize("value,passes", [(0.0, True), (0.5, False), (3.0, False)])
def test_a_metric_without_threshold_range_fails_above_zero_as_validation_says(
    tmp_path: Path, value: float, passes: bool
) -> None:
    from playground.checks import evaluate_metric
    from playground.observe import MetricValue

    root = tree(tmp_path, CANARY, "        thresholdRange:\n          max: 1\n", "")
    canary = manifests.load_tree(root).canary("prod/backend")
    assert canary is not None
    metric = canary.spec.analysis.metrics[0]
    assert metric.thresholdRange is None
    warnings = [str(f) for f in manifests.validate(root) if not f.is_error and f.field == "spec.analysis.metrics[0]"]
    assert len(warnings) == 1 and "fails whenever its value is above 0" in warnings[0], warnings
    assert "never fail" not in warnings[0]
    assert evaluate_metric(metric, MetricValue(metric.name, value, "q")).passed is passes
