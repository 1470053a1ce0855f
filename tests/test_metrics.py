"""Metric checks against a real Prometheus scraping a local exporter, plus unit tests of rendering/resolution.

The exporter serves Istio-shaped series whose counters grow linearly with time, so ratios are exact:
podinfo (the canary workload, ``{{ target }}``) answers 95% non-5xx with every request in the (100, 250] ms
latency bucket; decoys (``podinfo-primary``, ``reporter="source"``) would change the numbers if the queries
matched them.
"""

from __future__ import annotations

import json
import time

import pytest

from playground.metrics import (
    ISTIO_QUERIES,
    MetricError,
    PrometheusProvider,
    query_metric,
    render,
    resolve_query,
)
from playground.models import Canary, CanaryMetric, MetricTemplate
from playground.secrets import lookup_secret
from tests.support.http_server import RecordingServer, Reply
from tests.support.procs import free_port
from tests.support.prometheus import PrometheusProcess, prometheus_available

USER, PASSWORD = "playground", "s3cret-pass"
# bcrypt (cost 4) of PASSWORD, generated once with crypt.crypt(PASSWORD, crypt.mksalt(METHOD_BLOWFISH, rounds=16))
PASSWORD_BCRYPT = "$2b$04$TQU8F/zhMhU7BUKA1D.KJ.olsoc9BbO.AOWcwAFOqMKknXblABgae"

IN_CLUSTER = "http://prometheus.istio-system:9090"


def make_canary(**spec_overrides) -> Canary:
    spec = {
        "provider": "istio",
        "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
        "service": {"port": 9898},
        "analysis": {"interval": "10s", "threshold": 5},
    }
    spec.update(spec_overrides)
    return Canary.model_validate({"metadata": {"name": "podinfo-release", "namespace": "test"}, "spec": spec})


def make_template(
    name: str, query: str, *, namespace: str = "test", address: str = IN_CLUSTER, secret: str | None = None
) -> MetricTemplate:
    provider = {"type": "prometheus", "address": address}
    if secret:
        provider["secretRef"] = {"name": secret}
    return MetricTemplate.model_validate(
        {"metadata": {"name": name, "namespace": namespace}, "spec": {"provider": provider, "query": query}}
    )


def templates_of(*tpls: MetricTemplate) -> dict:
    return {(t.metadata.namespace, t.metadata.name): t for t in tpls}


# ------------------------------------------------------------------------------------ the exporter


def _exposition(elapsed: float) -> str:
    e = elapsed
    lines = ["# TYPE istio_requests_total counter"]

    def req(reporter, workload, code, value):
        lines.append(
            f'istio_requests_total{{reporter="{reporter}",destination_workload="{workload}",'
            f'destination_workload_namespace="test",response_code="{code}"}} {value}'
        )

    req("destination", "podinfo", "200", 19 * e)
    req("destination", "podinfo", "503", 1 * e)
    req("destination", "podinfo-primary", "200", 10 * e)  # decoy: 50% if the target regex leaked
    req("destination", "podinfo-primary", "500", 10 * e)
    req("source", "podinfo", "500", 100 * e)  # decoy: source-side reports must be ignored
    req("destination", "idle", "200", 5)  # never moves: rate 0 -> 0/0 = NaN
    lines.append("# TYPE istio_request_duration_milliseconds histogram")

    def bucket(workload, le, value):
        lines.append(
            f'istio_request_duration_milliseconds_bucket{{reporter="destination",destination_workload="{workload}",'
            f'destination_workload_namespace="test",le="{le}"}} {value}'
        )

    for le, v in (("50", 0), ("100", 0), ("250", 20 * e), ("+Inf", 20 * e)):
        bucket("podinfo", le, v)
    for le, v in (("50", 20 * e), ("100", 20 * e), ("250", 20 * e), ("+Inf", 20 * e)):
        bucket("podinfo-primary", le, v)
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def exporter():
    t0 = time.monotonic()
    with RecordingServer() as srv:
        srv.handle(
            "/metrics",
            lambda req: Reply(
                200, _exposition(time.monotonic() - t0), headers={"Content-Type": "text/plain; version=0.0.4"}
            ),
        )
        yield srv


@pytest.fixture(scope="module")
def prometheus_pair(exporter, tmp_path_factory):
    """Two real Prometheus servers booted in parallel: one scraping the exporter, one behind basic auth."""
    if not prometheus_available():
        pytest.fail("the Debian prometheus binary is not installed: run scripts/setup.sh (apt-get install prometheus)")
    scraping = PrometheusProcess(
        tmp_path_factory.mktemp("prom"),
        scrape_configs=[
            {
                "job_name": "mesh",
                "scrape_interval": "1s",
                "static_configs": [{"targets": [f"127.0.0.1:{exporter.port}"]}],
            }
        ],
    )
    protected = PrometheusProcess(
        tmp_path_factory.mktemp("prom-auth"),
        web_config={"basic_auth_users": {USER: PASSWORD_BCRYPT}},
        basic_auth=(USER, PASSWORD),
    )
    try:
        scraping.start()
        protected.start()
        scraping.wait_ready()
        protected.wait_ready()
        # the built-in query needs two scrapes of podinfo before it has a value
        rendered = render(
            ISTIO_QUERIES["request-success-rate"],
            name="x",
            namespace="test",
            target="podinfo",
            service="podinfo",
            interval="30s",
        )
        scraping.wait_for(rendered, lambda r: bool(r) and r[0]["value"][1] != "NaN")
        yield scraping, protected
    finally:
        scraping.stop()
        protected.stop()


@pytest.fixture(scope="module")
def prom(prometheus_pair):
    return prometheus_pair[0]


@pytest.fixture(scope="module")
def prom_auth(prometheus_pair):
    return prometheus_pair[1]


# --------------------------------------------------------------------------- built-ins, real Prometheus


def test_builtin_success_rate_matches_only_the_canary_workload(prom):
    canary = make_canary()
    metric = CanaryMetric(name="request-success-rate", interval="30s", thresholdRange={"min": 99})
    mv = query_metric(canary, metric, {}, default_prometheus=prom.url)
    assert mv.error is None, mv.error
    assert mv.value == pytest.approx(95.0, abs=1e-9)
    assert 'destination_workload=~"podinfo"' in mv.query
    assert 'destination_workload_namespace="test"' in mv.query
    assert "[30s]" in mv.query


def test_builtin_request_duration_is_p99_truncated_to_ms(prom):
    canary = make_canary()
    metric = CanaryMetric(name="request-duration", interval="30s")
    mv = query_metric(canary, metric, {}, default_prometheus=prom.url)
    assert mv.error is None, mv.error
    # every request in the (100, 250] bucket: p99 = 100 + 150 * 0.99 = 248.5 -> 248 ms
    assert mv.value == 248.0


def test_builtin_uses_canary_metrics_server_through_resolver(prom):
    canary = make_canary(metricsServer=IN_CLUSTER)
    seen = []

    def resolver(addr):
        seen.append(addr)
        return prom.url

    mv = query_metric(
        canary,
        CanaryMetric(name="request-success-rate", interval="30s"),
        {},
        address_resolver=resolver,
        default_prometheus="http://127.0.0.1:1",
    )
    assert seen == [IN_CLUSTER]
    assert mv.value == pytest.approx(95.0)


def test_nan_result_is_no_values(prom):
    canary = make_canary(targetRef={"kind": "Deployment", "name": "idle"})
    mv = query_metric(
        canary, CanaryMetric(name="request-success-rate", interval="30s"), {}, default_prometheus=prom.url
    )
    assert mv.error is None
    assert mv.value is None


def test_empty_result_is_no_values(prom):
    canary = make_canary(targetRef={"kind": "Deployment", "name": "does-not-exist"})
    mv = query_metric(canary, CanaryMetric(name="request-duration", interval="30s"), {}, default_prometheus=prom.url)
    # histogram_quantile over no buckets: empty vector
    assert mv.error is None
    assert mv.value is None


# --------------------------------------------------------------------------- templates, real Prometheus


ERROR_RATE = """
sum(rate(istio_requests_total{
    reporter="destination",
    destination_workload_namespace="{{ namespace }}",
    destination_workload=~"{{ target }}",
    response_code=~"{{ variables.codes }}"
}[{{ interval }}]))
/
sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="{{namespace}}",
    destination_workload=~"{{target}}"}[{{ interval }}])) * 100
"""


def test_template_with_variables_and_resolver(prom):
    canary = make_canary()
    tpl = make_template("error-rate", ERROR_RATE, namespace="istio-system")
    metric = CanaryMetric.model_validate(
        {
            "name": "error-rate",
            "interval": "30s",
            "thresholdRange": {"max": 1},
            "templateRef": {"name": "error-rate", "namespace": "istio-system"},
            "templateVariables": {"codes": "5.*"},
        }
    )
    mv = query_metric(canary, metric, templates_of(tpl), address_resolver=lambda a: prom.url if a == IN_CLUSTER else a)
    assert mv.error is None, mv.error
    assert mv.value == pytest.approx(5.0)
    assert "{{" not in mv.query and 'response_code=~"5.*"' in mv.query


def test_template_missing_variable_is_an_error_naming_it(prom):
    canary = make_canary()
    tpl = make_template("error-rate", ERROR_RATE)
    metric = CanaryMetric.model_validate({"name": "error-rate", "templateRef": {"name": "error-rate"}})
    mv = query_metric(canary, metric, templates_of(tpl), address_resolver=lambda a: prom.url)
    assert mv.value is None
    assert "codes" in mv.error and "MetricTemplate test/error-rate" in mv.error


def test_template_ref_defaults_to_canary_namespace_and_missing_template_is_error(prom):
    canary = make_canary()
    metric = CanaryMetric.model_validate({"name": "lat", "templateRef": {"name": "latency"}})
    mv = query_metric(canary, metric, templates_of(make_template("latency", "vector(1)", namespace="other")))
    assert mv.value is None and "MetricTemplate test/latency not found" in mv.error
    mv = query_metric(
        canary,
        metric,
        templates_of(make_template("latency", "vector(7)", namespace="test")),
        address_resolver=lambda a: prom.url,
    )
    assert mv.error is None and mv.value == 7.0


def test_bad_promql_is_a_clear_error(prom):
    canary = make_canary()
    mv = query_metric(canary, CanaryMetric(name="broken", query="sum(rate(foo[1m]"), {}, default_prometheus=prom.url)
    assert mv.value is None
    assert "rejected the query" in mv.error and "HTTP 400" in mv.error and prom.url in mv.error


def test_inline_query_is_not_rendered_and_goes_to_metrics_server(prom):
    canary = make_canary(metricsServer=prom.url)
    mv = query_metric(canary, CanaryMetric(name="answer", query="vector(42)"), {})
    assert mv.error is None and mv.value == 42.0 and mv.query == "vector(42)"


# ------------------------------------------------------------------------------ basic auth (real Prometheus)


def test_basic_auth_from_secret(prom_auth):
    canary = make_canary()
    tpl = make_template("up", "vector(3)", secret="prom-auth")
    metric = CanaryMetric.model_validate({"name": "up", "templateRef": {"name": "up"}})
    secrets = {("test", "prom-auth"): {"username": USER.encode(), "password": PASSWORD.encode()}}
    mv = query_metric(canary, metric, templates_of(tpl), secrets=secrets, address_resolver=lambda a: prom_auth.url)
    assert mv.error is None, mv.error
    assert mv.value == 3.0


def test_wrong_password_is_an_auth_error_naming_the_secret(prom_auth):
    canary = make_canary()
    tpl = make_template("up", "vector(3)", secret="prom-auth")
    metric = CanaryMetric.model_validate({"name": "up", "templateRef": {"name": "up"}})
    secrets = {"test/prom-auth": {"username": USER, "password": "wrong"}}
    mv = query_metric(canary, metric, templates_of(tpl), secrets=secrets, address_resolver=lambda a: prom_auth.url)
    assert mv.value is None
    assert "HTTP 401" in mv.error and "secret test/prom-auth" in mv.error
    assert IN_CLUSTER in mv.error  # names the address as written in the manifest


def test_missing_secret_or_keys_are_errors():
    canary = make_canary()
    tpl = make_template("up", "vector(3)", secret="prom-auth")
    metric = CanaryMetric.model_validate({"name": "up", "templateRef": {"name": "up"}})
    mv = query_metric(canary, metric, templates_of(tpl), secrets={})
    assert "secret test/prom-auth" in mv.error and "not found" in mv.error
    mv = query_metric(canary, metric, templates_of(tpl), secrets={("test", "prom-auth"): {"username": "u"}})
    assert "no 'password'" in mv.error


# -------------------------------------------------------------------- fake Prometheus API (headers, shapes)


def _api_answer(result, result_type="vector"):
    return Reply(
        200,
        json.dumps({"status": "success", "data": {"resultType": result_type, "result": result}}),
        headers={"Content-Type": "application/json"},
    )


def test_bearer_token_header_and_last_series_wins():
    with RecordingServer() as api:
        api.script(
            "/api/v1/query",
            [
                _api_answer(
                    [
                        {"metric": {"pod": "a"}, "value": [1700000000, "1.5"]},
                        {"metric": {"pod": "b"}, "value": [1700000000, "2.5"]},
                    ]
                )
            ],
        )
        with PrometheusProvider(api.url, credentials={"token": "tok-123"}) as p:
            assert p.query("  sum(\n  up)  ") == 2.5  # Flagger keeps the last sample
        req = api.requests_to("/api/v1/query")[0]
        assert req.headers["authorization"] == "Bearer tok-123"
        assert "query=sum%28+up%29" in req.path  # whitespace collapsed as Flagger's trimQuery


def test_scalar_result_and_nan_sample():
    with RecordingServer() as api:
        api.script(
            "/api/v1/query",
            [_api_answer([1700000000, "12"], "scalar"), _api_answer([{"metric": {}, "value": [1700000000, "NaN"]}])],
        )
        with PrometheusProvider(api.url) as p:
            assert p.query("scalar(vector(12))") == 12.0
            assert p.query("x") is None


def test_http_500_and_non_json_are_errors():
    with RecordingServer() as api:
        api.script(
            "/api/v1/query",
            [
                Reply(500, json.dumps({"status": "error", "errorType": "internal", "error": "boom"})),
                Reply(200, "<html>not prometheus</html>"),
            ],
        )
        with PrometheusProvider(api.url) as p:
            with pytest.raises(MetricError, match="HTTP 500.*boom"):
                p.query("up")
            with pytest.raises(MetricError, match="not JSON"):
                p.query("up")


def test_slow_prometheus_times_out():
    with RecordingServer() as api:
        api.script("/api/v1/query", [Reply(200, "{}", delay=1.5)])
        with PrometheusProvider(api.url, timeout=0.3) as p:
            # the server would answer after 1.5 s: the error says the client gave up at its 0.3 s timeout
            with pytest.raises(MetricError, match="did not answer within 0.3s"):
                p.query("up")


def test_unreachable_prometheus_is_an_error_not_a_pass():
    dead = f"http://127.0.0.1:{free_port()}"
    canary = make_canary()
    mv = query_metric(canary, CanaryMetric(name="request-success-rate"), {}, default_prometheus=dead)
    assert mv.value is None
    assert "cannot reach Prometheus at " + dead in mv.error
    assert "check that Prometheus is running" in mv.error


def test_resolver_failure_and_invalid_address_are_errors():
    canary = make_canary()

    def boom(addr):
        raise LookupError("no local endpoint for prometheus.istio-system")

    mv = query_metric(
        canary, CanaryMetric(name="request-duration"), {}, address_resolver=boom, default_prometheus=IN_CLUSTER
    )
    assert "no local endpoint" in mv.error
    mv = query_metric(canary, CanaryMetric(name="request-duration"), {}, default_prometheus="prometheus:9090")
    assert "not a valid http(s) URL" in mv.error


# ----------------------------------------------------------------------------------- pure units


def test_render_fields_whitespace_and_trim_markers():
    out = render(
        "{{name}}|{{ namespace }}|{{  target  }}|{{ service }}|{{ interval }}|x {{- ingress -}} y",
        name="n",
        namespace="ns",
        target="t",
        service="s",
        interval="2m",
    )
    assert out == "n|ns|t|s|2m|xty"


def test_render_rejects_unknown_actions():
    with pytest.raises(MetricError, match=r"unknown template variable \{\{ \.Values \}\}"):
        render("{{ .Values }}", name="n", namespace="ns", target="t", service="s", interval="1m")


def test_builtin_queries_are_exactly_the_design_text():
    assert ISTIO_QUERIES["request-success-rate"] == (
        'sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="{{ namespace }}",'
        'destination_workload=~"{{ target }}",response_code!~"5.*"}[{{ interval }}])) / sum(rate(istio_requests_total'
        '{reporter="destination",destination_workload_namespace="{{ namespace }}",destination_workload=~"{{ target }}"}'
        "[{{ interval }}])) * 100"
    )
    assert ISTIO_QUERIES["request-duration"] == (
        'histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{reporter="destination",'
        'destination_workload_namespace="{{ namespace }}",destination_workload=~"{{ target }}"}[{{ interval }}])) '
        "by (le))"
    )


def test_resolution_model_target_service_interval():
    canary = make_canary(service={"port": 80, "name": "podinfo-svc"})
    tpl = make_template("m", "{{ name }} {{ target }} {{ service }} {{ interval }}")
    metric = CanaryMetric.model_validate({"name": "m", "templateRef": {"name": "m"}})
    rq = resolve_query(canary, metric, templates_of(tpl))
    assert rq.query == "podinfo-release podinfo podinfo-svc 1m"
    assert rq.address == IN_CLUSTER and rq.source == "MetricTemplate test/m"


def test_resolution_errors():
    canary = make_canary()
    with pytest.raises(MetricError, match="not a built-in"):
        resolve_query(canary, CanaryMetric(name="custom"), {}, default_prometheus="http://p:9090")
    with pytest.raises(MetricError, match="no Prometheus address"):
        resolve_query(canary, CanaryMetric(name="request-success-rate"), {})
    with pytest.raises(MetricError, match="only available for the istio, gatewayapi and kubernetes providers"):
        resolve_query(
            make_canary(provider="linkerd"),
            CanaryMetric(name="request-success-rate"),
            {},
            default_prometheus="http://p:9090",
        )
    tpl = MetricTemplate.model_validate(
        {"metadata": {"name": "dd", "namespace": "test"}, "spec": {"provider": {"type": "datadog"}, "query": "x"}}
    )
    with pytest.raises(MetricError, match="only 'prometheus' is supported"):
        resolve_query(
            canary, CanaryMetric.model_validate({"name": "dd", "templateRef": {"name": "dd"}}), templates_of(tpl)
        )


def test_lookup_secret_shapes():
    assert lookup_secret({("a", "b"): {"k": b"v"}}, "a", "b") == {"k": "v"}
    assert lookup_secret({"a/b": {"k": "v"}}, "a", "b") == {"k": "v"}
    assert lookup_secret({}, "a", "b") is None


def test_proxy_receives_in_cluster_prometheus_url():
    with RecordingServer() as proxy:
        proxy.script(
            "http://prometheus.istio-system:9090/api/v1/query",
            [_api_answer([{"metric": {}, "value": [1700000000, "99.5"]}])],
        )
        mv = query_metric(
            make_canary(), CanaryMetric(name="request-success-rate"), {}, default_prometheus=IN_CLUSTER, proxy=proxy.url
        )
        assert mv.error is None and mv.value == 99.5
        assert proxy.requests[0].path.startswith("http://prometheus.istio-system:9090/api/v1/query?query=")


@pytest.mark.parametrize("provider", ["gatewayapi:v1", "gatewayapi:v1beta1"])
def test_gatewayapi_builtins_are_flaggers_default_observer_queries(provider):
    """Flagger's observer factory has no Gateway API observer: a gatewayapi canary's built-in metrics are the
    default (Istio) observer's queries, identical to an istio canary's."""
    for name in ("request-success-rate", "request-duration"):
        gw = resolve_query(make_canary(provider=provider), CanaryMetric(name=name), {}, default_prometheus=IN_CLUSTER)
        istio = resolve_query(make_canary(), CanaryMetric(name=name), {}, default_prometheus=IN_CLUSTER)
        assert gw.query == istio.query and "istio_request" in gw.query and gw.source == f"built-in {name}"
