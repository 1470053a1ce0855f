"""Metric checks: PromQL templates, the Prometheus provider and the live metric query of one canary metric.

The analysis state machine never talks to Prometheus. It asks ``Probe.metric(metric)`` and receives a
``MetricValue`` (``playground.observe``); it then compares the value with ``thresholdRange`` itself. This
module is the live side of that question: it finds the PromQL for a canary metric, renders it, runs it as an
instant query and turns every outcome into a ``MetricValue`` -- it never raises and never reports a value it
did not get:

* a number                      -> ``MetricValue(value=<float>)``
* an empty result or ``NaN``    -> ``MetricValue(value=None)``          ("no values": a failed check unless the
                                                                         metric opts into ``noData: pass``)
* anything that went wrong      -> ``MetricValue(value=None, error=...)`` (always a failed check)

Where the query comes from (``resolve_query``), in this order:

1. ``templateRef`` -> the ``MetricTemplate`` looked up in ``templates[(namespace, name)]``; the namespace
   defaults to the canary's namespace (as in Flagger). Its ``spec.query`` is rendered, its provider gives the
   address and (through ``spec.provider.secretRef``, read from the template's namespace) the credentials.
2. ``query`` -> inline PromQL, sent as written (Flagger does not render inline queries either), to the
   canary's ``spec.metricsServer`` or the default Prometheus.
3. a built-in name, ``request-success-rate`` or ``request-duration`` -> the queries of Flagger's observer for
   the canary's provider (``builtin_query``: the Istio queries below for istio and gatewayapi, the HTTP
   observer's ``http_request_duration_seconds`` queries for kubernetes), to the canary's
   ``spec.metricsServer`` or the default Prometheus. ``request-duration`` is truncated to whole milliseconds,
   as Flagger does (Istio: ``time.Duration(int64(value)) * time.Millisecond``; HTTP, in seconds:
   ``int64(value*1000)``).

Template model -- checked against Flagger's source (``pkg/controller/scheduler_metrics.go`` ``toMetricModel``
and ``pkg/apis/flagger/v1beta1/metric.go`` ``MetricTemplateModel``):

* ``{{ name }}``      = the Canary's ``metadata.name``
* ``{{ namespace }}`` = the Canary's namespace
* ``{{ target }}``    = ``spec.targetRef.name``, i.e. the name of the workload under test (``podinfo``), *not*
  ``podinfo-canary`` nor ``podinfo-primary``. The built-in Istio queries match it with
  ``destination_workload=~"{{ target }}"``: during an analysis the ``podinfo`` Deployment runs the new
  revision (the primary runs as ``podinfo-primary``), so the query measures the canary only.
* ``{{ service }}``   = ``spec.service.name`` when set, else ``spec.targetRef.name``
* ``{{ ingress }}``   = ``spec.ingressRef.name`` when set, else ``spec.targetRef.name``
* ``{{ interval }}``  = the metric's ``interval``, default ``1m``. It lands in PromQL (``[{{ interval }}]``), so
  it must be a Prometheus duration (:func:`playground.durations.parse_prometheus_duration`, the parser
  ``playground validate`` uses for that field): one PromQL would refuse (``1.5m``) is a ``MetricError`` here,
  before any query. (Flagger's own ``analysis.interval`` is a Go duration and may be ``1.5m``.)
* ``{{ variables.KEY }}`` = ``templateVariables[KEY]`` of the canary metric (Flagger >= 1.20); a missing key
  is a ``MetricError`` naming the variable and the template.

Whitespace inside the braces is free and Go's trim markers (``{{- x -}}``) are honoured. Any other action
(``{{ .Values }}``, pipelines, ``if``...) is reported as an error rather than silently passed to Prometheus.

Result handling -- checked against Flagger's ``pkg/metrics/providers/prometheus.go`` ``RunQuery``: the query's
whitespace runs are collapsed to single spaces; the result vector is walked in the order Prometheus returns it
and each sample overwrites the previous one, so with several series Flagger keeps the **last** one (despite
its comment saying "first"). We do the same, so that templates written for Flagger behave identically; write
queries that aggregate (``sum(...)``) to get one series. No sample, or ``NaN``, is Flagger's
``ErrNoValuesFound``; here it is ``value=None``. Credentials follow Flagger too: a secret with ``token`` gives
``Authorization: Bearer <token>``, else ``username`` and ``password`` give basic auth (both required).
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict
from urllib.parse import urlsplit

from playground.durations import PROMETHEUS_DURATION_HINT, parse_prometheus_duration
from playground.errors import PlaygroundError
from playground.models import Canary, CanaryMetric, MetricTemplate
from playground.observe import MetricValue
from playground.secrets import lookup_secret

if TYPE_CHECKING:  # the HTTP stack is imported by PrometheusProvider only: `playground validate` renders templates
    import requests

__all__ = [
    "BUILTIN_METRICS",
    "DEFAULT_INTERVAL",
    "DEFAULT_TIMEOUT",
    "HTTP_QUERIES",
    "ISTIO_QUERIES",
    "builtin_query",
    "MetricError",
    "PrometheusProvider",
    "TemplateError",
    "template_problems",
    "template_variables",
    "ResolvedQuery",
    "identity",
    "query_metric",
    "render",
    "resolve_query",
]

DEFAULT_INTERVAL = "1m"
DEFAULT_TIMEOUT = 5.0  # seconds, Flagger's Prometheus provider timeout

#: Built-in metrics of the istio provider, exactly as docs/design.md (and Flagger's istio observer) define them.
ISTIO_QUERIES: dict[str, str] = {
    "request-success-rate": (
        'sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="{{ namespace }}",'
        'destination_workload=~"{{ target }}",response_code!~"5.*"}[{{ interval }}])) / '
        'sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="{{ namespace }}",'
        'destination_workload=~"{{ target }}"}[{{ interval }}])) * 100'
    ),
    "request-duration": (
        "histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{"
        'reporter="destination",destination_workload_namespace="{{ namespace }}",'
        'destination_workload=~"{{ target }}"}[{{ interval }}])) by (le))'
    ),
}
BUILTIN_METRICS = tuple(ISTIO_QUERIES)

#: Built-in metrics of the kubernetes provider: Flagger's HTTP observer (``pkg/metrics/observers/http.go``), which
#: reads the app's own ``http_request_duration_seconds`` histogram as the classic ``kubernetes-pods`` scrape job
#: labels it (``kubernetes_namespace``, ``kubernetes_pod_name``). The pod regex is fully anchored by PromQL: it
#: matches ``<target>-<one segment>-<one segment>`` (``backend-7d9f8c6b5-x2x7q``, the target Deployment's pods,
#: i.e. the canary during an analysis) and not ``backend-primary-7d9f8c6b5-x2x7q`` (three segments).
#: ``request-duration`` is in seconds here: Flagger turns it into whole milliseconds (``int64(value*1000)``).
HTTP_QUERIES: dict[str, str] = {
    "request-success-rate": (
        'sum(rate(http_request_duration_seconds_count{kubernetes_namespace="{{ namespace }}",'
        'kubernetes_pod_name=~"{{ target }}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)",status!~"5.*"}[{{ interval }}])) / '
        'sum(rate(http_request_duration_seconds_count{kubernetes_namespace="{{ namespace }}",'
        'kubernetes_pod_name=~"{{ target }}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"}[{{ interval }}])) * 100'
    ),
    "request-duration": (
        'histogram_quantile(0.99, sum(rate(http_request_duration_seconds_bucket{kubernetes_namespace="{{ namespace }}",'
        'kubernetes_pod_name=~"{{ target }}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"}[{{ interval }}])) by (le))'
    ),
}

#: Flagger's observer factory (``pkg/metrics/observers/factory.go``) picks the built-in queries by provider: the
#: HTTP observer for ``kubernetes``; its default, the Istio observer, for istio and for the Gateway API providers
#: (it has no Gateway API observer; the local playground's Prometheus serves these series from Envoy). Value:
#: (queries, factor turning ``request-duration``'s value into milliseconds).
_BUILTIN_BY_PROVIDER: dict[str | None, tuple[dict[str, str], float]] = {
    None: (ISTIO_QUERIES, 1.0),
    "": (ISTIO_QUERIES, 1.0),
    "istio": (ISTIO_QUERIES, 1.0),
    "gatewayapi:v1": (ISTIO_QUERIES, 1.0),
    "gatewayapi:v1beta1": (ISTIO_QUERIES, 1.0),
    "kubernetes": (HTTP_QUERIES, 1000.0),
}


def builtin_query(provider: str | None, name: str) -> tuple[str, float] | None:
    """The PromQL template of built-in metric ``name`` for a canary of ``provider`` and the factor to
    milliseconds of its value (``request-duration``), or None when this provider has no such built-in here."""
    entry = _BUILTIN_BY_PROVIDER.get(provider)
    if entry is None or name not in entry[0]:
        return None
    return entry[0][name], entry[1]


class MetricError(PlaygroundError):
    """A metric could not be evaluated; the message says what was wrong and what to check."""


def identity(address: str) -> str:
    """Default address resolver: use the address as written."""
    return address


# ------------------------------------------------------------------------------------------- rendering

_ACTION = re.compile(r"\{\{(-\s)?\s*(.*?)\s*(\s-)?\}\}", re.DOTALL)
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_VARIABLE = re.compile(r"^variables\.([A-Za-z0-9_-]+)$")
_FIELDS = ("name", "namespace", "target", "service", "ingress", "interval")


def render(
    template_query: str,
    *,
    name: str,
    namespace: str,
    target: str,
    service: str,
    interval: str,
    variables: Mapping[str, str] | None = None,
    ingress: str | None = None,
    template: str = "query",
) -> str:
    """Render a Flagger query template.

    ``template`` names the template in error messages (``"MetricTemplate prod/latency"``). Raises
    ``TemplateError`` (a ``MetricError``) for a missing ``{{ variables.KEY }}`` and for any action this renderer
    does not know. ``playground validate`` checks templates with the same code (:func:`template_problems`).
    """
    values = {
        "name": name,
        "namespace": namespace,
        "target": target,
        "service": service,
        "ingress": ingress if ingress is not None else target,
        "interval": interval,
    }
    variables = variables or {}
    out: list[str] = []
    pos = 0
    trim_next = False
    for m in _ACTION.finditer(template_query):
        literal = template_query[pos : m.start()]
        if trim_next:
            literal = literal.lstrip()
        if m.group(1):  # "{{- " trims the whitespace before the action
            literal = literal.rstrip()
        out.append(literal)
        out.append(_action_value(m.group(2), values, variables, template))
        trim_next = bool(m.group(3))
        pos = m.end()
    tail = template_query[pos:]
    out.append(tail.lstrip() if trim_next else tail)
    return "".join(out)


class TemplateError(MetricError):
    """A query template action the renderer cannot substitute: ``problem`` and ``fix`` (validation reports them
    as a finding's message and fix; the runtime's message joins them)."""

    def __init__(self, template: str, problem: str, fix: str) -> None:
        super().__init__(f"{template}: {problem}; {fix}")
        self.problem = problem
        self.fix = fix


_FIELD_LIST = ", ".join(_FIELDS)
#: Template variables of Flagger the playground does not substitute: name -> what it is in Flagger.
_UNSUPPORTED_FIELDS = {"route": "the provider's route object (apisix/gloo/skipper)"}
_FUNCTION = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s+\S")


def _action_value(expr: str, values: Mapping[str, str], variables: Mapping[str, str], template: str) -> str:
    var = _VARIABLE.match(expr)
    if var:
        key = var.group(1)
        if key not in variables:
            known = ", ".join(sorted(variables)) or "none"
            raise TemplateError(
                template,
                f"variable {key!r} used as {{{{ variables.{key} }}}} is not set",
                f"add it to the canary metric's templateVariables (set: {known})",
            )
        return str(variables[key])
    if _FIELD.match(expr) and expr in values:
        return str(values[expr])
    if expr in _UNSUPPORTED_FIELDS:
        raise TemplateError(
            template,
            f"template variable {{{{ {expr} }}}} ({_UNSUPPORTED_FIELDS[expr]}) is not supported by the playground",
            f"write the name out in the query, or use {_FIELD_LIST} or variables.KEY",
        )
    fn = _FUNCTION.match(expr)
    if fn or "|" in expr:
        what = f"template function {fn.group(1)}" if fn and "|" not in expr else "a template pipeline"
        raise TemplateError(
            template,
            f"{what} in {{{{ {expr} }}}} is not supported by the playground: only variables are substituted",
            f"write the text out with plain variables ({_FIELD_LIST} or variables.KEY), "
            'like "{{ target }}-canary" instead of {{ printf "%s-canary" target }}',
        )
    close = difflib.get_close_matches(expr, _FIELDS, n=1)
    raise TemplateError(
        template,
        f"unknown template variable {{{{ {expr} }}}}" + (f"; did you mean {close[0]}?" if close else ""),
        f"use {_FIELD_LIST} or variables.KEY",
    )


def template_variables(template_query: str) -> set[str]:
    """The ``KEY`` of every ``{{ variables.KEY }}`` action of a query template."""
    out = set()
    for m in _ACTION.finditer(template_query):
        var = _VARIABLE.match(m.group(2))
        if var:
            out.add(var.group(1))
    return out


def template_problems(template_query: str, template: str = "query") -> list[TemplateError]:
    """What :func:`render` would refuse in ``template_query``, every action checked (not only the first), with
    every ``variables.KEY`` taken as set (whether a canary sets them is checked per canary)."""
    values = dict.fromkeys(_FIELDS, "x")
    variables = dict.fromkeys(template_variables(template_query), "x")
    out = []
    for m in _ACTION.finditer(template_query):
        try:
            _action_value(m.group(2), values, variables, template)
        except TemplateError as e:
            out.append(e)
    return out


# ------------------------------------------------------------------------------------------ resolution


@dataclass(frozen=True)
class ResolvedQuery:
    """Everything needed to run one metric query."""

    query: str  # rendered PromQL
    address: str  # provider address as written (before the address resolver)
    source: str  # where the query comes from, for messages ("MetricTemplate prod/latency", "built-in ...")
    credentials: dict[str, str] | None = None
    credentials_source: str | None = None  # "secret prod/prom-auth"
    insecure_skip_verify: bool = False
    truncate: bool = False  # request-duration: whole milliseconds
    scale: float = 1.0  # request-duration of the HTTP observer: seconds -> milliseconds (before truncating)

    def finish(self, value: float | None) -> float | None:
        """The value the analysis compares, from what Prometheus answered: built-in ``request-duration`` in
        whole milliseconds, as Flagger's observers return it."""
        if value is not None and self.truncate and math.isfinite(value):
            return float(math.trunc(value * self.scale))
        return value


def _metric_interval(canary: Canary, metric: CanaryMetric) -> str:
    """The metric's ``interval`` (default ``1m``), checked with Prometheus's duration grammar: it is substituted
    into PromQL. Raises ``MetricError`` naming the metric, the canary and the fix."""
    interval = metric.interval or DEFAULT_INTERVAL
    try:
        parse_prometheus_duration(interval)
    except ValueError as e:
        raise MetricError(f"metric {metric.name!r} of canary {canary.key}: interval: {e}; {PROMETHEUS_DURATION_HINT}")
    return interval


class _TemplateModel(TypedDict):
    """The template variables Flagger's MetricTemplateModel provides (render's keyword arguments)."""

    name: str
    namespace: str
    target: str
    service: str
    ingress: str
    interval: str


def _model(canary: Canary, metric: CanaryMetric) -> _TemplateModel:
    spec = canary.spec
    return {
        "name": canary.name,
        "namespace": canary.namespace,
        "target": spec.targetRef.name,
        "service": spec.service.name or spec.targetRef.name,
        "ingress": spec.ingressRef.name if spec.ingressRef else spec.targetRef.name,
        "interval": _metric_interval(canary, metric),
    }


def resolve_query(
    canary: Canary,
    metric: CanaryMetric,
    templates: Mapping[tuple[str, str], MetricTemplate] | None,
    *,
    secrets: Mapping[Any, Mapping[str, Any]] | None = None,
    default_prometheus: str | None = None,
) -> ResolvedQuery:
    """Find and render the PromQL of one canary metric. Raises ``MetricError`` with a clear message."""
    mname = f"metric {metric.name!r} of canary {canary.key}"
    if metric.templateRef is not None:
        ns = metric.templateRef.namespace or canary.namespace
        ref = f"{ns}/{metric.templateRef.name}"
        tpl = (templates or {}).get((ns, metric.templateRef.name))
        if tpl is None:
            raise MetricError(f"{mname}: MetricTemplate {ref} not found; apply it or fix templateRef")
        provider = tpl.spec.provider
        if (provider.type or "prometheus") != "prometheus":
            raise MetricError(
                f"{mname}: MetricTemplate {ref} uses provider type {provider.type!r}; only 'prometheus' is supported"
            )
        if not provider.address:
            raise MetricError(f"{mname}: MetricTemplate {ref} has no spec.provider.address")
        creds = None
        creds_source = None
        if provider.secretRef is not None:
            creds_source = f"secret {ns}/{provider.secretRef.name}"
            creds = lookup_secret(secrets, ns, provider.secretRef.name)
            if creds is None:
                raise MetricError(
                    f"{mname}: {creds_source} referenced by MetricTemplate {ref} spec.provider.secretRef not found"
                )
        query = render(
            tpl.spec.query,
            **_model(canary, metric),
            variables=metric.templateVariables,
            template=f"MetricTemplate {ref}",
        )
        return ResolvedQuery(
            query=query,
            address=provider.address,
            source=f"MetricTemplate {ref}",
            credentials=creds,
            credentials_source=creds_source,
            insecure_skip_verify=provider.insecureSkipVerify,
        )

    address = canary.spec.metricsServer or default_prometheus
    if metric.query:
        if not address:
            raise MetricError(f"{mname}: no Prometheus address (set spec.metricsServer or the default Prometheus)")
        return ResolvedQuery(query=metric.query, address=address, source=f"inline query of {mname}")

    if metric.name in ISTIO_QUERIES:
        builtin = builtin_query(canary.spec.provider, metric.name)
        if builtin is None:
            raise MetricError(
                f"{mname}: built-in metrics are only available for the istio, gatewayapi and kubernetes providers "
                f"(canary provider is {canary.spec.provider!r}); use a MetricTemplate"
            )
        if not address:
            raise MetricError(f"{mname}: no Prometheus address (set spec.metricsServer or the default Prometheus)")
        template, scale = builtin
        query = render(template, **_model(canary, metric), template=f"built-in {metric.name}")
        return ResolvedQuery(
            query=query,
            address=address,
            source=f"built-in {metric.name}",
            truncate=metric.name == "request-duration",
            scale=scale if metric.name == "request-duration" else 1.0,
        )

    raise MetricError(
        f"{mname} has no templateRef or query and is not a built-in metric ({', '.join(BUILTIN_METRICS)})"
    )


# ------------------------------------------------------------------------------------------- provider


def _redact(url: str) -> str:
    """An address without user info, for messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.username or parts.password:
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        return parts._replace(netloc=host).geturl()
    return url


class PrometheusProvider:
    """Instant queries against one Prometheus, through ``prometheus_api_client.PrometheusConnect``.

    ``query()`` returns a float, ``None`` for "no values", or raises ``MetricError`` whose message names the
    address and what to check. ``address`` is the one to connect to; ``shown_address`` the one to name in
    messages (the address as written in the manifest, when a resolver rewrote it).
    """

    def __init__(
        self,
        address: str,
        *,
        credentials: Mapping[str, str] | None = None,
        credentials_source: str | None = None,
        insecure_skip_verify: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
        shown_address: str | None = None,
        proxy: str | None = None,
    ) -> None:
        shown = _redact(shown_address or address)
        if shown_address and shown_address != address:
            shown = f"{shown} (reached as {_redact(address)})"
        self.shown = shown
        parts = urlsplit(address)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise MetricError(f"Prometheus address {shown} is not a valid http(s) URL")
        self.credentials_source = credentials_source or "the provider secret"
        headers = None
        auth = None
        if credentials is not None:
            if credentials.get("token"):
                headers = {"Authorization": f"Bearer {credentials['token']}"}
            elif "username" not in credentials:
                raise MetricError(f"{self.credentials_source} has neither a 'token' nor a 'username' key")
            elif "password" not in credentials:
                raise MetricError(f"{self.credentials_source} has a 'username' but no 'password' key")
            else:
                auth = (credentials["username"], credentials["password"])
        import requests
        from prometheus_api_client import PrometheusConnect
        from urllib3.util.retry import Retry

        self._last_response: requests.Response | None = None
        session = requests.Session()
        session.verify = not insecure_skip_verify
        session.hooks["response"].append(self._remember)
        if proxy:
            session.proxies = {"http": proxy, "https": proxy}
        # One quick connection retry; no retries on HTTP status (a 5xx is reported, the next tick asks again).
        retry = Retry(
            total=1,
            connect=1,
            read=0,
            status=0,
            other=0,
            backoff_factor=0.1,
            status_forcelist=(),
            raise_on_status=False,
        )
        self.timeout = timeout
        self._client = PrometheusConnect(
            url=address.rstrip("/"),
            headers=headers,
            auth=auth,
            retry=retry,
            session=session,
            timeout=timeout,
            disable_ssl=insecure_skip_verify,
        )

    def _remember(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self._last_response = response

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> PrometheusProvider:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def query(self, promql: str, *, time: float | None = None) -> float | None:
        """Run an instant query; see the module docstring for how results map to a value.

        ``time``: evaluation time (Unix seconds; Prometheus keeps milliseconds); None = Prometheus' "now".
        """
        import requests
        from prometheus_api_client import PrometheusApiClientException
        from urllib3.exceptions import ConnectTimeoutError, NewConnectionError, ReadTimeoutError

        promql = " ".join(promql.split())  # as Flagger's trimQuery
        self._last_response = None
        try:
            result = self._client.custom_query(promql, params=None if time is None else {"time": time})
        except requests.exceptions.JSONDecodeError as e:  # before RequestException: it is one too
            raise MetricError(
                f"Prometheus at {self.shown} returned a body that is not JSON ({e}); is this "
                f"address really a Prometheus server?"
            ) from None
        except requests.exceptions.Timeout:
            raise MetricError(
                f"Prometheus at {self.shown} did not answer within {self.timeout:g}s; check that it is healthy "
                f"and not overloaded, or simplify the query"
            ) from None
        except requests.exceptions.SSLError as e:
            raise MetricError(
                f"TLS error talking to Prometheus at {self.shown}: {_reason(e)}; check its certificate or set "
                f"insecureSkipVerify on the provider"
            ) from None
        except requests.exceptions.ConnectionError as e:
            cause = _cause(e)
            # NewConnectionError (refused, DNS failure) subclasses ConnectTimeoutError in urllib3
            if isinstance(cause, (ReadTimeoutError, ConnectTimeoutError, TimeoutError)) and not isinstance(
                cause, NewConnectionError
            ):
                raise MetricError(
                    f"Prometheus at {self.shown} did not answer within {self.timeout:g}s; check that it is "
                    f"healthy and not overloaded, or simplify the query"
                ) from None
            raise MetricError(
                f"cannot reach Prometheus at {self.shown}: {_reason(e)}; check that Prometheus is running and "
                f"that the provider address (MetricTemplate spec.provider.address or the canary's "
                f"spec.metricsServer) is right"
            ) from None
        except requests.exceptions.RequestException as e:
            raise MetricError(f"request to Prometheus at {self.shown} failed: {_reason(e)}") from None
        except PrometheusApiClientException:
            raise MetricError(self._http_error(promql)) from None
        except ValueError as e:  # body was not JSON
            raise MetricError(
                f"Prometheus at {self.shown} returned a body that is not JSON ({e}); is this "
                f"address really a Prometheus server?"
            ) from None
        except (KeyError, TypeError):
            raise MetricError(
                f"Prometheus at {self.shown} returned an unexpected answer; is this address really a Prometheus API?"
            ) from None
        return _value_of(result, self.shown)

    def _http_error(self, promql: str) -> str:
        resp = self._last_response
        status = resp.status_code if resp is not None else None
        detail = ""
        if resp is not None:
            try:
                body = resp.json()
                detail = f"{body.get('errorType', 'error')}: {body.get('error', '')}".strip()
            except ValueError:
                detail = resp.text.strip()[:300]
        if status in (401, 403):
            return (
                f"Prometheus at {self.shown} answered HTTP {status} ({detail or 'unauthorized'}); check the "
                f"credentials in {self.credentials_source} (keys 'token', or 'username' and 'password')"
            )
        if status in (400, 422):
            return f"Prometheus at {self.shown} rejected the query (HTTP {status}, {detail}); query: {promql}"
        if status == 404:
            return (
                f"Prometheus at {self.shown} answered HTTP 404 for /api/v1/query; check that the address "
                f"points at Prometheus (including any path prefix)"
            )
        return f"Prometheus at {self.shown} answered HTTP {status}: {detail or 'no details'}; query: {promql}"


def _cause(exc: BaseException) -> Any:
    """The urllib3 reason behind a requests exception (requests wraps urllib3's MaxRetryError)."""
    arg = exc.args[0] if exc.args else None
    return getattr(arg, "reason", None) or arg or exc


def _reason(exc: BaseException) -> str:
    """The innermost, most specific reason of a requests/urllib3 exception, as short text."""
    text = str(_cause(exc))
    m = re.search(r"\[Errno -?\d+\] ([^')\]]+)", text)
    if m:
        return m.group(1).strip()
    m = re.search(r"Caused by \w+\(['\"]?(.*?)['\"]?\)\)?$", text)
    return (m.group(1) if m else text)[:300]


def _value_of(result: Any, shown: str) -> float | None:
    """Map ``data.result`` of an instant query to a value (last sample wins, NaN = no values)."""
    value: float | None = None
    if isinstance(result, list) and len(result) == 2 and not isinstance(result[0], dict):
        samples = [result[1]]  # scalar or string result: [<time>, "<value>"]
    elif isinstance(result, list):
        samples = []
        for series in result:
            if isinstance(series, dict) and isinstance(series.get("value"), list) and len(series["value"]) == 2:
                samples.append(series["value"][1])
            elif isinstance(series, dict) and "values" in series:
                raise MetricError(
                    f"the query returned a range vector from {shown}; use an instant query "
                    f"(wrap the selector in a function such as rate() or sum())"
                )
    else:
        raise MetricError(f"Prometheus at {shown} returned an unexpected result: {str(result)[:200]}")
    for sample in samples:
        try:
            value = float(sample)
        except (TypeError, ValueError):
            raise MetricError(f"Prometheus at {shown} returned a sample that is not a number: {sample!r}") from None
    if value is None or math.isnan(value):
        return None
    return value


# ------------------------------------------------------------------------------------------ the probe


def query_metric(
    canary: Canary,
    metric: CanaryMetric,
    templates: Mapping[tuple[str, str], MetricTemplate] | None,
    *,
    address_resolver: Callable[[str], str] = identity,
    secrets: Mapping[Any, Mapping[str, Any]] | None = None,
    default_prometheus: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    proxy: str | None = None,
    time: float | None = None,
) -> MetricValue:
    """Evaluate one canary metric now (or at ``time``, Unix seconds). Never raises: problems come back as
    ``MetricValue.error``.

    ``templates`` maps ``(namespace, name)`` to MetricTemplates; ``secrets`` maps ``(namespace, name)`` (or
    ``"namespace/name"``) to a secret's data; ``address_resolver`` maps an in-cluster address such as
    ``http://prometheus.istio-system:9090`` to a reachable one; ``default_prometheus`` is the address used by
    built-in and inline metrics when the canary has no ``spec.metricsServer``; ``proxy`` sends the query
    through an HTTP proxy (an alternative to the resolver for reaching in-cluster names); ``time`` is the
    instant query's evaluation time (the controller passes its tick time, so that a backtest querying the same
    Prometheus at that time asks exactly the same question).
    """
    query = ""
    try:
        resolved = resolve_query(canary, metric, templates, secrets=secrets, default_prometheus=default_prometheus)
        query = resolved.query
        try:
            reachable = address_resolver(resolved.address)
        except Exception as e:  # the resolver is the caller's code: report, don't crash the tick
            raise MetricError(f"{resolved.source}: cannot resolve address {_redact(resolved.address)}: {e}") from None
        with PrometheusProvider(
            reachable,
            credentials=resolved.credentials,
            credentials_source=resolved.credentials_source,
            insecure_skip_verify=resolved.insecure_skip_verify,
            timeout=timeout,
            shown_address=resolved.address,
            proxy=proxy,
        ) as prom:
            value = prom.query(resolved.query, time=time)
        return MetricValue(name=metric.name, value=resolved.finish(value), query=query)
    except MetricError as e:
        text = str(e)
        if not text.startswith("metric "):
            text = f"metric {metric.name!r} of canary {canary.key}: {text}"
        return MetricValue(name=metric.name, value=None, query=query, error=text)
    except Exception as e:  # last resort: a bug must still be a failed check, never a pass or a crash
        return MetricValue(
            name=metric.name,
            value=None,
            query=query,
            error=f"metric {metric.name!r}: unexpected error {type(e).__name__}: {e}",
        )
