"""The Gateway API HTTPRoute of a Canary with ``provider: gatewayapi:v1`` / ``gatewayapi:v1beta1`` (pure; no I/O).

What Flagger v1.44's ``GatewayAPIRouter`` / ``GatewayAPIV1Beta1Router`` (``pkg/router/gateway_api*.go``) write,
computed once for every backend: the kubernetes backend stores it as an ``httproutes.gateway.networking.k8s.io``
object, the local backend renders it into Envoy (``playground.local.envoy``) as an Envoy-based Gateway API
implementation would.

The HTTPRoute is named after the apex Service, in the canary's namespace:

- ``parentRefs``: ``service.gatewayRefs`` (group, kind, namespace, name, sectionName, port);
- ``hostnames``: ``service.hosts``;
- one weighted rule: ``service.match`` (or ``PathPrefix /``), the filters made from ``service.headers``
  (Request/ResponseHeaderModifier) and ``service.rewrite`` (URLRewrite), backendRefs ``<svc>-primary`` and
  ``<svc>-canary`` (kind Service, ``service.port``) with the weights, ``timeouts.request`` from
  ``service.timeout`` and ``timeouts.backendRequest`` from ``service.backendTimeout``;
- A/B testing (``analysis.match``): the weighted rule matches the analysis matches merged with the service
  matches, followed by a rule sending everything else to the primary;
- session affinity (``analysis.sessionAffinity``): a sticky rule first (requests carrying the release's cookie
  go to the canary), the canary backendRef of the weighted rule sets the cookie (ResponseHeaderModifier
  ``Set-Cookie``); at weight 0 the sticky rule expires it (``Max-Age=-1``) and routes like the weighted one.

What Flagger's router cannot express (Istio-only fields, header prefix matches...) is refused by
``playground.support`` before anything is written; :class:`routing.RoutingError` here is the last guard.
"""

from __future__ import annotations

import copy
from typing import Any

from playground import routing
from playground.models import Canary, HTTPMatchRequest

GROUP = "gateway.networking.k8s.io"
PROVIDERS = ("gatewayapi:v1", "gatewayapi:v1beta1")
KIND = "HTTPRoute"
_PATH_TYPES = {"exact": "Exact", "prefix": "PathPrefix", "regex": "RegularExpression"}
_VALUE_TYPES = {"exact": "Exact", "regex": "RegularExpression"}
_FILTERED_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration",)


def is_gatewayapi(canary: Canary) -> bool:
    return (canary.spec.provider or "") in PROVIDERS


def api_version(canary: Canary) -> str:
    """``gateway.networking.k8s.io/v1`` (``gatewayapi:v1``) or ``.../v1beta1`` (``gatewayapi:v1beta1``)."""
    return f"{GROUP}/{'v1beta1' if canary.spec.provider == 'gatewayapi:v1beta1' else 'v1'}"


# ------------------------------------------------------------------------------------------ matches


def _typed(kind_map: dict[str, str], sm: Any, what: str) -> tuple[str, str]:
    """(Gateway API match type, value) of an Istio StringMatch; only the kinds Flagger maps."""
    for key, gw_type in kind_map.items():
        value = getattr(sm, key, None)
        if value:
            return gw_type, str(value)
    raise routing.RoutingError(f"{what}: Gateway API supports only {'/'.join(kind_map)} matches here")


def route_matches(matches: list[HTTPMatchRequest], where: str = "match") -> list[dict[str, Any]]:
    """Flagger's mapRouteMatches: Istio HTTPMatchRequests as Gateway API HTTPRouteMatches (empty ones dropped)."""
    out: list[dict[str, Any]] = []
    for i, m in enumerate(matches):
        match: dict[str, Any] = {}
        if m.uri is not None:
            ptype, value = _typed({"regex": "RegularExpression", "exact": "Exact", "prefix": "PathPrefix"}, m.uri,
                                  f"{where}[{i}].uri")  # fmt: skip
            match["path"] = {"type": ptype, "value": value}
        if m.method is not None:
            _, method = _typed({"exact": "Exact"}, m.method, f"{where}[{i}].method")
            match["method"] = method
        headers = []
        for name in sorted(m.headers):
            htype, value = _typed(_VALUE_TYPES, m.headers[name], f"{where}[{i}].headers.{name}")
            headers.append({"name": name, "type": htype, "value": value})
        if headers:
            match["headers"] = headers
        params = []
        for name in sorted(m.queryParams):
            qtype, value = _typed(_VALUE_TYPES, m.queryParams[name], f"{where}[{i}].queryParams.{name}")
            params.append({"name": name, "type": qtype, "value": value})
        if params:
            match["queryParams"] = params
        if match:
            out.append(match)
    return out


def _merge(analysis: list[dict[str, Any]], service: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Flagger's mergeMatchConditions: each analysis match over each service match, its headers and query
    parameters replacing the service match's."""
    if not analysis:
        return copy.deepcopy(service)
    if not service:
        return copy.deepcopy(analysis)
    return routing.combine_matches(analysis, service, ("headers", "queryParams"))


def _service_matches(canary: Canary) -> list[dict[str, Any]]:
    return route_matches(canary.spec.service.match, "spec.service.match") or [
        {"path": {"type": "PathPrefix", "value": "/"}}
    ]


# ------------------------------------------------------------------------------------------ rule parts


def _header_filter(kind: str, ops: dict[str, Any]) -> dict[str, Any]:
    mod: dict[str, Any] = {}
    for op in ("add", "set"):
        values = ops.get(op) or {}
        if values:
            mod[op] = [{"name": str(k), "value": str(values[k])} for k in sorted(values)]
    if ops.get("remove"):
        mod["remove"] = [str(h) for h in ops["remove"]]
    key = kind[0].lower() + kind[1:]
    return {"type": kind, key: mod}


def _filters(canary: Canary) -> list[dict[str, Any]]:
    """Flagger's makeFilters: service.headers and service.rewrite as HTTPRoute filters."""
    svc = canary.spec.service
    out: list[dict[str, Any]] = []
    headers = svc.headers or {}
    if headers.get("request") is not None:
        out.append(_header_filter("RequestHeaderModifier", headers["request"] or {}))
    if headers.get("response") is not None:
        out.append(_header_filter("ResponseHeaderModifier", headers["response"] or {}))
    if svc.rewrite:
        rewrite: dict[str, Any] = {}
        if svc.rewrite.get("authority"):
            rewrite["hostname"] = str(svc.rewrite["authority"])
        if svc.rewrite.get("uri"):
            ptype = svc.rewrite.get("type") or "ReplacePrefixMatch"
            key = "replaceFullPath" if ptype == "ReplaceFullPath" else "replacePrefixMatch"
            rewrite["path"] = {"type": ptype, key: str(svc.rewrite["uri"])}
        out.append({"type": "URLRewrite", "urlRewrite": rewrite})
    return out


def _backend(name: str, port: int, weight: int) -> dict[str, Any]:
    return {"group": "", "kind": "Service", "name": name, "port": port, "weight": weight}


def _timeouts(canary: Canary) -> dict[str, Any]:
    svc = canary.spec.service
    out: dict[str, Any] = {}
    if svc.timeout:
        out["request"] = svc.timeout
    if svc.backendTimeout:
        out["backendRequest"] = svc.backendTimeout
    return {"timeouts": out} if out else {}


def _rule(canary: Canary, matches: list[dict[str, Any]], backends: list[dict[str, Any]]) -> dict[str, Any]:
    rule: dict[str, Any] = {"matches": copy.deepcopy(matches)}
    filters = _filters(canary)
    if filters:
        rule["filters"] = filters
    rule["backendRefs"] = backends
    rule.update(_timeouts(canary))
    return rule


def _cookie_match(cookie: str) -> dict[str, Any]:
    name, _, value = cookie.partition("=")
    return {"headers": [{"name": "Cookie", "type": "RegularExpression", "value": f".*{name}.*{value}.*"}]}


def _set_cookie(cookie: str, max_age: int) -> dict[str, Any]:
    return {
        "type": "ResponseHeaderModifier",
        "responseHeaderModifier": {"add": [{"name": "Set-Cookie", "value": f"{cookie}; Max-Age={max_age}"}]},
    }


# ------------------------------------------------------------------------------------------ the object


def http_route(
    canary: Canary, primary_weight: int, canary_weight: int, *, revision: str | None = None
) -> dict[str, Any]:
    """The HTTPRoute for a traffic split (Flagger's Reconcile + SetRoutes)."""
    if primary_weight + canary_weight != 100 or min(primary_weight, canary_weight) < 0:
        raise routing.RoutingError(
            f"weights must be within 0..100 and sum to 100, got {primary_weight}/{canary_weight}"
        )
    if not canary.spec.service.gatewayRefs:
        raise routing.RoutingError(
            f"Canary {canary.key}: spec.service.gatewayRefs must name the Gateway the HTTPRoute attaches to "
            "(the gatewayapi provider requires it)"
        )
    apex, primary, canary_svc = routing.service_names(canary)
    port = canary.spec.service.port
    matches = _service_matches(canary)
    weighted = _rule(
        canary, matches, [_backend(primary, port, primary_weight), _backend(canary_svc, port, canary_weight)]
    )
    rules = [weighted]

    sa = canary.spec.analysis.sessionAffinity
    cookie = routing.session_cookie(canary, revision) if sa is not None else None
    if sa is not None and cookie:
        sticky = copy.deepcopy(weighted)
        svc_matches = route_matches(canary.spec.service.match, "spec.service.match")
        sticky["matches"] = _merge([_cookie_match(cookie)], svc_matches)
        if canary_weight > 0:
            weighted["backendRefs"][1]["filters"] = [_set_cookie(cookie, sa.maxAge)]
            sticky["backendRefs"] = [_backend(primary, port, 0), _backend(canary_svc, port, 100)]
        else:
            sticky.setdefault("filters", []).append(_set_cookie(cookie, -1))
        rules = [sticky, weighted]

    if canary.spec.analysis.match:
        analysis = route_matches(canary.spec.analysis.match, "spec.analysis.match")
        rules[0]["matches"] = _merge(analysis, matches)
        rules.append(_rule(canary, matches, [_backend(primary, port, 100)]))

    spec: dict[str, Any] = {"parentRefs": [_parent_ref(ref) for ref in canary.spec.service.gatewayRefs]}
    if canary.spec.service.hosts:
        spec["hostnames"] = list(canary.spec.service.hosts)
    spec["rules"] = rules

    labels, annotations = routing.custom_metadata(canary.spec.service.apex)
    annotations = {k: v for k, v in annotations.items() if k not in _FILTERED_ANNOTATIONS}
    meta: dict[str, Any] = {"name": apex, "namespace": canary.namespace}
    if labels:
        meta["labels"] = labels
    if annotations:
        meta["annotations"] = annotations
    meta["ownerReferences"] = [routing.owner_reference(canary)]
    return {"apiVersion": api_version(canary), "kind": KIND, "metadata": meta, "spec": spec}


def _parent_ref(ref: dict[str, Any]) -> dict[str, Any]:
    """Flagger's toV1ParentRefs: the fields of a ParentReference, nothing else."""
    return {k: ref[k] for k in ("group", "kind", "namespace", "name", "sectionName", "port") if ref.get(k) is not None}


def routes_of(canary: Canary, route: dict[str, Any]) -> tuple[int, int, bool]:
    """(primary weight, canary weight, mirror) read back from an HTTPRoute, as Flagger's GetRoutes: the rule
    with two backendRefs (the weighted one; with session affinity the one whose backendRefs carry filters)."""
    _, primary, canary_svc = routing.service_names(canary)
    weights: dict[str, int] | None = None
    for rule in (route.get("spec") or {}).get("rules") or []:
        refs = rule.get("backendRefs") or []
        if canary.spec.analysis.sessionAffinity is not None and any(r.get("filters") for r in refs):
            weights = {r.get("name"): int(r.get("weight", 1)) for r in refs}
            break
        if len(refs) == 2:
            weights = {r.get("name"): int(r.get("weight", 1)) for r in refs}
    if weights is None:
        return 100, 0, False
    return weights.get(primary, 0), weights.get(canary_svc, 0), False
