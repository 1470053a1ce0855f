"""Which parts of Flagger v1.44's Canary the playground implements, and a clear refusal of everything else.

Every field of Flagger's Canary CRD either works as in Flagger on both backends (local and kubernetes), or is
named here with what to do instead. ``playground validate`` reports these as findings (see
``playground.manifests``) and the controller refuses to release such a Canary (``ControllerError``), so no
field is ever silently ignored.

The checks work on the raw object (a dict, as read from YAML or from the cluster), not on the typed model, so
that a Canary the model cannot parse (a Knative target without ``service``, say) is still told what is
unsupported rather than which field to add. Pure functions, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "ALL_PROVIDERS",
    "DEFAULT_PROVIDER",
    "SUPPORTED_PROVIDERS",
    "Gap",
    "required_gaps",
    "unsupported",
    "blocks_target",
]

#: Values of ``spec.provider`` accepted by Flagger v1.44's Canary CRD.
ALL_PROVIDERS = (
    "apisix", "appmesh", "appmesh:v1beta2", "contour", "gatewayapi:v1", "gatewayapi:v1beta1", "gloo", "istio",
    "knative", "kubernetes", "kuma", "linkerd", "nginx", "osm", "skipper", "smi:v1alpha1", "smi:v1alpha2",
    "smi:v1alpha3", "traefik",
)  # fmt: skip

#: Providers the playground drives end to end, on both backends.
SUPPORTED_PROVIDERS = ("istio", "kubernetes", "gatewayapi:v1", "gatewayapi:v1beta1")

#: The Gateway API providers (Flagger's GatewayAPIRouter / GatewayAPIV1Beta1Router: an HTTPRoute).
GATEWAYAPI_PROVIDERS = ("gatewayapi:v1", "gatewayapi:v1beta1")

#: service fields Flagger's Gateway API router does not read (Istio VirtualService/DestinationRule fields), with
#: what to do instead.
_GATEWAYAPI_IGNORED_SERVICE_FIELDS: dict[str, tuple[str, str]] = {
    field: (
        f"service.{field} is an Istio route field that Flagger's Gateway API router does not write into the HTTPRoute",
        fix + ", or use provider istio",
    )
    for field, fix in {
        "gateways": "name the Gateway in service.gatewayRefs",
        "trafficPolicy": "remove trafficPolicy (configure the load balancing in your Gateway API implementation)",
        "retries": "remove retries (the HTTPRoute has no retry policy in Flagger's Gateway API router)",
        "corsPolicy": "remove corsPolicy (configure CORS in your Gateway API implementation)",
        "delegation": "remove delegation",
        "mirror": "remove mirror (request mirroring of the HTTPRoute is not implemented here)",
    }.items()
}
#: Service fields only the gatewayapi provider uses: refused for the other providers.
_GATEWAYAPI_ONLY_SERVICE_FIELDS: dict[str, tuple[str, str]] = {
    "gatewayRefs": (
        "gatewayRefs attach an HTTPRoute to a Gateway API Gateway, which only the gatewayapi provider writes",
        "remove gatewayRefs, or use provider gatewayapi:v1 (for Istio name the gateways in service.gateways)",
    ),
    "backendTimeout": (
        "backendTimeout is only used by the gatewayapi provider, which this canary does not use",
        "remove backendTimeout, or use service.timeout",
    ),
}

_BUILTIN_METRICS = ("request-success-rate", "request-duration")
#: service fields that only shape mesh routes (VirtualService/DestinationRule).
#: Service fields that configure mesh routes: refused for the kubernetes provider (plain Services only).
_MESH_SERVICE_FIELDS: dict[str, tuple[str, str]] = {
    field: (
        f"service.{field} configures mesh routes, which the kubernetes provider does not write (plain Services only)",
        f"remove {field}, or use provider istio",
    )
    for field in (
        "gateways", "hosts", "match", "rewrite", "retries", "headers", "corsPolicy", "trafficPolicy", "timeout",
        "mirror",
    )
}  # fmt: skip

#: Provider assumed when a Canary has no ``spec.provider``: this playground's mesh.
DEFAULT_PROVIDER = "istio"

#: Target kinds of Flagger's CRD and the provider that handles each one.
_TARGET_KINDS = {"Deployment": "apps/v1", "DaemonSet": "apps/v1", "Service": "serving.knative.dev/v1"}

#: Provider-specific references: (field, providers using it, what it names).
_PROVIDER_REFS = (
    ("ingressRef", "nginx", "the Ingress the nginx provider writes canary annotations on"),
    ("routeRef", "apisix", "the ApisixRoute of the apisix provider"),
    ("upstreamRef", "gloo", "the Gloo Upstream of the gloo provider"),
)

#: service fields the playground does not implement: field -> (why, what to do).
_SERVICE_FIELDS: dict[str, tuple[str, str]] = {
    "headless": (
        "headless Services are not implemented (the apex/primary/canary Services always get a cluster IP)",
        "remove headless (or set it to false)",
    ),
    "meshName": ("meshName is only used by the appmesh provider", "remove meshName"),
    "backends": ("backends are only used by the appmesh provider", "remove backends"),
    "unmanagedMetadata": (
        "unmanagedMetadata (metadata Flagger leaves alone on the generated objects) is not implemented",
        "remove unmanagedMetadata",
    ),
    "delegation": (
        "delegate VirtualServices (delegation: true) are not implemented: the playground always writes a root "
        "VirtualService with hosts and gateways",
        "remove delegation and let the canary's VirtualService be the root one (service.hosts, service.gateways)",
    ),
}

_ANALYSIS_FIELDS: dict[str, tuple[str, str]] = {}

_SPEC_FIELDS: dict[str, tuple[str, str]] = {}

#: webhook fields the playground does not implement (muteAlert and disableTLS are implemented).
_WEBHOOK_FIELDS: dict[str, tuple[str, str]] = {}


@dataclass(frozen=True)
class Gap:
    """One field of a Canary the playground does not implement (or a field Flagger's CRD requires that is
    missing): its path in the object, the message and the fix."""

    path: tuple[str | int, ...]
    message: str
    fix: str
    severity: str = "error"

    def __str__(self) -> str:
        where = ""
        for part in self.path:
            where += f"[{part}]" if isinstance(part, int) else ("." if where else "") + str(part)
        return f"{where}: {self.message}. Fix: {self.fix}"


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _set(v: Any) -> bool:
    """A value that changes Flagger's behaviour (not absent, false, empty or null)."""
    return v not in (None, False, "", [], {}, 0)


def _field_gaps(obj: dict[str, Any], path: tuple[str | int, ...], table: dict[str, tuple[str, str]]) -> list[Gap]:
    """One Gap per field of ``table`` (field -> (why, fix)) that is set in ``obj``, at ``path`` + field."""
    return [Gap((*path, field), why, fix) for field, (why, fix) in table.items() if _set(obj.get(field))]


def provider_of(raw: dict[str, Any]) -> str:
    p = _dict(raw.get("spec")).get("provider")
    return p if isinstance(p, str) and p else DEFAULT_PROVIDER


def required_gaps(raw: dict[str, Any]) -> list[Gap]:
    """Fields Flagger's CRD requires that are missing: ``spec.analysis`` and ``spec.targetRef``'s apiVersion
    and kind (``targetRef`` itself and its name are required by the typed model)."""
    spec = raw.get("spec")
    if not isinstance(spec, dict):
        return []  # the missing spec is reported by the schema
    out: list[Gap] = []
    if "targetRef" in spec and isinstance(spec["targetRef"], dict):
        for key, example in (("apiVersion", "apps/v1"), ("kind", "Deployment")):
            if not spec["targetRef"].get(key):
                out.append(
                    Gap(
                        ("spec", "targetRef", key),
                        "required field missing (Flagger's Canary CRD requires it)",
                        f"add {key}: {example}",
                    )
                )
    if "analysis" not in spec or spec.get("analysis") is None:
        out.append(
            Gap(
                ("spec", "analysis"),
                "required field missing (Flagger's Canary CRD requires it)",
                "add analysis with interval, threshold, and stepWeight/maxWeight (canary) or iterations "
                "(blue/green, A/B testing)",
            )
        )
    return out


def blocks_target(raw: dict[str, Any]) -> bool:
    """True when the canary's provider or target kind is unsupported: the rest of its spec (such as a
    missing ``service``, which a Knative canary does not need) is then beside the point."""
    return any(g.path[:2] in (("spec", "provider"), ("spec", "targetRef")) for g in unsupported(raw))


def unsupported(raw: dict[str, Any]) -> list[Gap]:
    """Every field of the Canary ``raw`` that the playground does not implement, in field order."""
    spec = _dict(raw.get("spec"))
    out: list[Gap] = []
    provider = spec.get("provider")
    if isinstance(provider, str) and provider in ALL_PROVIDERS and provider not in SUPPORTED_PROVIDERS:
        out.append(
            Gap(
                ("spec", "provider"),
                f"provider {provider} is not supported by the playground (it drives "
                f"{', '.join(SUPPORTED_PROVIDERS)} only); a canary on it would never get its traffic shifted",
                f"use provider {DEFAULT_PROVIDER} (or remove provider), or run this canary with Flagger itself",
            )
        )
    target = _dict(spec.get("targetRef"))
    kind = target.get("kind")
    if isinstance(kind, str) and kind and kind != "Deployment":
        hint = {"Service": " (a Knative Service, for the knative provider)", "DaemonSet": ""}.get(kind, "")
        out.append(
            Gap(
                ("spec", "targetRef", "kind"),
                f"target kind {kind}{hint} is not supported by the playground",
                "target a Deployment (apiVersion: apps/v1, kind: Deployment)",
            )
        )
    elif kind == "Deployment" and target.get("apiVersion") not in (None, "", "apps/v1"):
        out.append(
            Gap(
                ("spec", "targetRef", "apiVersion"),
                f"apiVersion {target.get('apiVersion')!r} for a Deployment target",
                "use apiVersion: apps/v1",
            )
        )
    scaler = _dict(spec.get("autoscalerRef"))
    if scaler:
        skind = scaler.get("kind")
        if isinstance(skind, str) and skind and skind != "HorizontalPodAutoscaler":
            out.append(
                Gap(
                    ("spec", "autoscalerRef", "kind"),
                    f"autoscaler kind {skind} is not supported by the playground"
                    + (" (KEDA ScaledObjects are not copied to the primary)" if skind == "ScaledObject" else ""),
                    "use a HorizontalPodAutoscaler (kind: HorizontalPodAutoscaler, apiVersion: autoscaling/v2)",
                )
            )
        for key in ("primaryScalerQueries", "primaryScalerReplicas"):
            if _set(scaler.get(key)):
                out.append(
                    Gap(
                        ("spec", "autoscalerRef", key),
                        f"{key} is not implemented: the primary's autoscaler is an exact copy of the target's",
                        f"remove {key}",
                    )
                )
    for field, providers, what in _PROVIDER_REFS:
        if _set(spec.get(field)):
            out.append(
                Gap(
                    ("spec", field),
                    f"{field} ({what}) is not supported by the playground",
                    f"remove {field}; the {providers} provider is not available here",
                )
            )
    out += _field_gaps(spec, ("spec",), _SPEC_FIELDS)
    service = _dict(spec.get("service"))
    out += _field_gaps(service, ("spec", "service"), _SERVICE_FIELDS)
    if provider in GATEWAYAPI_PROVIDERS:
        out.extend(_gatewayapi_gaps(spec, service))
    else:
        out += _field_gaps(service, ("spec", "service"), _GATEWAYAPI_ONLY_SERVICE_FIELDS)
    analysis = _dict(spec.get("analysis"))
    app_protocol = service.get("appProtocol")
    if (
        isinstance(app_protocol, str)
        and app_protocol.lower() == "tcp"
        and provider != "kubernetes"
        and provider not in GATEWAYAPI_PROVIDERS
    ):
        out.extend(_tcp_gaps(service, analysis))
    out += _field_gaps(analysis, ("spec", "analysis"), _ANALYSIS_FIELDS)
    hooks = analysis.get("webhooks")
    for i, hook in enumerate(hooks if isinstance(hooks, list) else []):
        out += _field_gaps(_dict(hook), ("spec", "analysis", "webhooks", i), _WEBHOOK_FIELDS)
    if provider == "kubernetes":
        out += _field_gaps(service, ("spec", "service"), _MESH_SERVICE_FIELDS)
        if _set(analysis.get("sessionAffinity")):
            out.append(
                Gap(
                    ("spec", "analysis", "sessionAffinity"),
                    "session affinity needs mesh routes (a cookie match), which the kubernetes provider does not write",
                    "remove sessionAffinity, or use provider istio",
                )
            )
    if _set(analysis.get("sessionAffinity")) and (_set(analysis.get("iterations")) or _set(analysis.get("match"))):
        out.append(
            Gap(
                ("spec", "analysis", "sessionAffinity"),
                "session affinity applies to canary releases by weight only (as in Flagger); with iterations this "
                "release would ignore it",
                "remove sessionAffinity, or use stepWeight/maxWeight instead of iterations",
            )
        )
    matches = analysis.get("match") if provider not in GATEWAYAPI_PROVIDERS else None
    for i, m in enumerate(matches if isinstance(matches, list) else []):
        for field in ("sourceLabels", "sourceNamespace"):
            if _set(_dict(m).get(field)):
                out.append(
                    Gap(
                        ("spec", "analysis", "match", i, field),
                        f"{field} works with Istio on a real cluster, but the local backend cannot know the "
                        "source of a request and refuses it",
                        "match on headers instead to try it locally",
                        severity="warning",
                    )
                )
    return out


#: What Flagger's Istio router leaves out of a TCP route (``service.appProtocol: TCP``): field -> (why, fix).
_TCP_IGNORED_SERVICE = {
    field: (
        f"{why}: Flagger leaves service.{field} out of the tcp route of a TCP service (service.appProtocol: TCP), "
        "so it would be ignored",
        f"remove {field}, or remove appProtocol: TCP to route HTTP",
    )
    for field, why in {
        "rewrite": "URI/authority rewrites are HTTP",
        "retries": "retries are HTTP route settings",
        "headers": "header operations are HTTP",
        "corsPolicy": "CORS is HTTP",
        "timeout": "the route timeout is an HTTP setting",
    }.items()
}
_TCP_IGNORED_ANALYSIS = {
    field: (
        f"{why} (service.appProtocol: TCP); Flagger would ignore analysis.{field}",
        f"remove {field} and release by weight (stepWeight/maxWeight), or route HTTP",
    )
    for field, why in {
        "match": "A/B testing matches HTTP headers, cookies or URIs; a TCP route can only split connections by weight",
        "mirror": "Istio mirrors HTTP requests only; a TCP route cannot mirror",
        "sessionAffinity": "session affinity is a cookie (HTTP); a TCP route splits connections by weight only",
    }.items()
}


def _tcp_gaps(service: dict[str, Any], analysis: dict[str, Any]) -> list[Gap]:
    """A TCP canary gets a ``tcp`` route (Flagger's Istio router): everything HTTP that Flagger leaves out of it,
    and the built-in metrics (HTTP request metrics a TCP service never produces), refused by name."""
    out = _field_gaps(service, ("spec", "service"), _TCP_IGNORED_SERVICE)
    matches = service.get("match")
    for i, m in enumerate(matches if isinstance(matches, list) else []):
        extra = sorted(k for k, v in _dict(m).items() if k != "port" and _set(v))
        if extra:
            out.append(
                Gap(
                    ("spec", "service", "match", i),
                    f"a TCP route matches on the port only: Flagger drops {', '.join(extra)} from it",
                    "keep only port in the match of a TCP service",
                )
            )
    out += _field_gaps(analysis, ("spec", "analysis"), _TCP_IGNORED_ANALYSIS)
    metrics = analysis.get("metrics")
    for i, metric in enumerate(metrics if isinstance(metrics, list) else []):
        metric = _dict(metric)
        if metric.get("name") in _BUILTIN_METRICS and not metric.get("templateRef") and not metric.get("query"):
            out.append(
                Gap(
                    ("spec", "analysis", "metrics", i),
                    f"the built-in metric {metric.get('name')} reads istio_requests_total (HTTP requests), which a "
                    "TCP service never produces: every check would find no values and roll the canary back",
                    "add a templateRef to a MetricTemplate on the TCP metrics "
                    "(istio_tcp_connections_opened_total, istio_tcp_connections_closed_total, ...)",
                )
            )
    return out


def _gatewayapi_gaps(spec: dict[str, Any], service: dict[str, Any]) -> list[Gap]:
    """What Flagger's Gateway API router requires or cannot express, for a gatewayapi:v1(beta1) canary."""
    out: list[Gap] = []
    provider = spec.get("provider")
    if not _set(service.get("gatewayRefs")):
        out.append(
            Gap(
                ("spec", "service", "gatewayRefs"),
                f"required for provider {provider}: the HTTPRoute must attach to a Gateway (Flagger refuses the "
                "canary without it)",
                "add gatewayRefs: [{name: GATEWAY, namespace: ITS_NAMESPACE}] naming a gateway.networking.k8s.io "
                "Gateway",
            )
        )
    out += _field_gaps(service, ("spec", "service"), _GATEWAYAPI_IGNORED_SERVICE_FIELDS)
    app_protocol = service.get("appProtocol")
    if isinstance(app_protocol, str) and app_protocol.lower() == "tcp":
        out.append(
            Gap(
                ("spec", "service", "appProtocol"),
                "Flagger's Gateway API router writes an HTTPRoute only (no TCPRoute), so a TCP service would be "
                "routed as HTTP",
                "remove appProtocol: TCP, or use provider istio (TCP routes)",
            )
        )
    for which in ("apex", "primary", "canary"):
        custom = _dict(service.get(which))
        if _set(custom.get("backendRef")):
            out.append(
                Gap(
                    ("spec", "service", which, "backendRef"),
                    "a custom HTTPRoute backendRef is not implemented (the backendRefs are the primary and "
                    "canary Services)",
                    "remove backendRef",
                )
            )
    analysis = _dict(spec.get("analysis"))
    if _set(analysis.get("mirror")):
        out.append(
            Gap(
                ("spec", "analysis", "mirror"),
                f"traffic mirroring is not implemented for provider {provider} here (the HTTPRoute has no "
                "RequestMirror filter)",
                "remove mirror, or use provider istio",
            )
        )
    sa = _dict(analysis.get("sessionAffinity"))
    if _set(sa.get("primaryCookieName")):
        out.append(
            Gap(
                ("spec", "analysis", "sessionAffinity", "primaryCookieName"),
                "Flagger's Gateway API router keeps canary sessions only (no primary cookie)",
                "remove primaryCookieName, or use provider istio",
            )
        )
    for where, matches in (("service", service.get("match")), ("analysis", analysis.get("match"))):
        base = ("spec", where, "match")
        for i, m in enumerate(matches if isinstance(matches, list) else []):
            m = _dict(m)
            for field in ("sourceLabels", "sourceNamespace", "authority", "scheme", "withoutHeaders", "port"):
                if _set(m.get(field)):
                    out.append(
                        Gap(
                            (*base, i, field),
                            f"an HTTPRoute match has no {field} (Flagger's Gateway API router drops it)",
                            "match on path, method, headers or query parameters instead",
                        )
                    )
            for field, kinds in (("uri", ("exact", "prefix", "regex")), ("method", ("exact",))):
                sm = _dict(m.get(field))
                bad = sorted(k for k in sm if k not in kinds and _set(sm[k]))
                if bad:
                    out.append(
                        Gap(
                            (*base, i, field, bad[0]),
                            f"Gateway API cannot match {field} by {bad[0]} (Flagger refuses it)",
                            f"use {' or '.join(kinds)}",
                        )
                    )
            for field in ("headers", "queryParams"):
                for name, sm in _dict(m.get(field)).items():
                    bad = sorted(k for k in _dict(sm) if k not in ("exact", "regex") and _set(_dict(sm)[k]))
                    if bad:
                        out.append(
                            Gap(
                                (*base, i, field, name, bad[0]),
                                f"Gateway API matches {field} by exact value or regex only (Flagger refuses {bad[0]})",
                                "use exact, or an equivalent regex",
                            )
                        )
    return out


def refusal(raw: dict[str, Any]) -> str | None:
    """One line naming every unsupported field of the Canary ``raw`` (errors only), or ``None``: what the
    controller answers at release time."""
    gaps = [g for g in required_gaps(raw) + unsupported(raw) if g.severity == "error"]
    if not gaps:
        return None
    return "; ".join(str(g) for g in gaps)
