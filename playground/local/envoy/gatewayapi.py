"""Gateway API objects (``gateway.networking.k8s.io`` Gateway and HTTPRoute) in the renderer's route model. Pure.

The local gateway listener acts as an Envoy-based Gateway API implementation, the way Istio implements Gateway
API: every HTTPRoute attached to a Gateway becomes, for each of its ``parentRefs``, the equivalent
VirtualService-shaped route (``spec.hosts``/``gateways``/``http``) that :mod:`~playground.local.envoy.routes`
renders like any other gateway-bound VirtualService. There is one renderer; this module only translates.

- Gateways: each listener's ``name``, ``port``, ``protocol`` (HTTP only: the local gateway is plaintext),
  ``hostname`` and ``allowedRoutes.namespaces.from`` (``Same``, the default, or ``All``).
- parentRefs: a Gateway (group/kind default), in the route's namespace unless ``namespace`` is set, narrowed to
  a listener by ``sectionName`` and/or ``port``. A Gateway that does not exist, no listener that takes the
  route, a hostname no listener accepts: ``RenderError`` (the route is refused, nothing is written).
- hostnames: intersected with the listener's hostname (``*.example.com`` wildcards); none = the listener's, or
  any host.
- rules: matches (path Exact / PathPrefix (path-segment prefix) / RegularExpression, headers and query
  parameters Exact / RegularExpression, method), backendRefs to Services (weight default 1, per-backend
  Request/ResponseHeaderModifier filters), filters RequestHeaderModifier, ResponseHeaderModifier, URLRewrite,
  RequestMirror, RequestRedirect, ``timeouts.request`` (route timeout) and ``timeouts.backendRequest``
  (per-try timeout of the retry policy).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from playground.local.envoy.common import RenderError
from playground.local.envoy.helpers import _check_keys, _label, _meta

GATEWAY_API_GROUP = "gateway.networking.k8s.io"


def is_gateway_api(obj: dict[str, Any], kind: str) -> bool:
    api = str(obj.get("apiVersion") or "")
    return obj.get("kind") == kind and api.split("/")[0] == GATEWAY_API_GROUP


@dataclass(frozen=True)
class Listener:
    name: str
    port: int
    hostname: str | None
    from_namespaces: str  # Same | All


def gateway_listeners(gw: dict[str, Any]) -> list[Listener]:
    """The listeners of a Gateway API Gateway the local gateway can serve; RenderError for the others."""
    label = _label(gw)
    out = []
    for i, lst in enumerate((gw.get("spec") or {}).get("listeners") or []):
        where = f"{label} spec.listeners[{i}]"
        protocol = str(lst.get("protocol") or "")
        if protocol != "HTTP":
            raise RenderError(
                f"{where}: protocol {protocol or '(none)'} is not served by the local gateway (plaintext HTTP only)"
            )
        allowed = ((lst.get("allowedRoutes") or {}).get("namespaces") or {}).get("from") or "Same"
        if allowed not in ("Same", "All"):
            raise RenderError(
                f"{where}.allowedRoutes.namespaces.from: {allowed} is not supported locally (Same or All)"
            )
        try:
            port = int(lst["port"])
        except (KeyError, TypeError, ValueError):
            raise RenderError(f"{where}: port is required") from None
        out.append(Listener(str(lst.get("name") or i), port, lst.get("hostname") or None, allowed))
    if not out:
        raise RenderError(f"{label}: spec.listeners is empty")
    return out


def _host_matches(pattern: str, host: str) -> bool:
    """Gateway API hostname intersection of a listener hostname and a route hostname (either may be ``*.x``)."""
    if pattern == host:
        return True
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) or (host.startswith("*.") and host.endswith(pattern[1:]))
    if host.startswith("*."):
        return pattern.endswith(host[1:])
    return False


def _hostnames(route: dict[str, Any], listener: Listener) -> list[str]:
    hosts = [str(h) for h in (route.get("spec") or {}).get("hostnames") or []]
    if listener.hostname is None:
        return hosts or ["*"]
    if not hosts:
        return [listener.hostname]
    out = []
    for h in hosts:
        if _host_matches(listener.hostname, h):
            # the more specific of the two (a wildcard listener keeps the route's own hostname)
            out.append(h if not h.startswith("*.") or listener.hostname.startswith("*.") else listener.hostname)
    return out


# ------------------------------------------------------------------------------------------ rules


def _string_match(typ: str | None, value: Any, where: str, exact_name: str = "Exact") -> dict[str, str]:
    typ = typ or exact_name
    if typ == "Exact":
        return {"exact": str(value)}
    if typ == "RegularExpression":
        return {"regex": str(value)}
    raise RenderError(f"{where}.type: {typ} is not supported (Exact, RegularExpression)")


def _matches(rule: dict[str, Any], where: str) -> list[dict[str, Any]] | None:
    """Istio HTTPMatchRequests for a rule's matches (None: match everything). A PathPrefix is a path-segment
    prefix: ``/api`` is the exact path plus the ``/api/`` prefix."""
    matches = rule.get("matches")
    if not matches:
        return None
    out: list[dict[str, Any]] = []
    for j, m in enumerate(matches):
        mwhere = f"{where}.matches[{j}]"
        _check_keys(m, ("path", "headers", "queryParams", "method"), mwhere)
        base: dict[str, Any] = {}
        for h in m.get("headers") or []:
            base.setdefault("headers", {})[str(h["name"])] = _string_match(
                h.get("type"), h["value"], f"{mwhere}.headers"
            )
        for q in m.get("queryParams") or []:
            base.setdefault("queryParams", {})[str(q["name"])] = _string_match(
                q.get("type"), q["value"], f"{mwhere}.queryParams"
            )
        if m.get("method"):
            base["method"] = {"exact": str(m["method"])}
        path = m.get("path") or {"type": "PathPrefix", "value": "/"}
        ptype, value = path.get("type") or "PathPrefix", str(path.get("value") or "/")
        if ptype == "Exact":
            out.append({**base, "uri": {"exact": value}})
        elif ptype == "RegularExpression":
            out.append({**base, "uri": {"regex": value}})
        elif ptype == "PathPrefix":
            trimmed = value.rstrip("/")
            if not trimmed:
                out.append({**base, "uri": {"prefix": "/"}})
            else:
                out.append({**copy.deepcopy(base), "uri": {"exact": trimmed}})
                out.append({**base, "uri": {"prefix": trimmed + "/"}})
        else:
            raise RenderError(f"{mwhere}.path.type: {ptype} is not supported (Exact, PathPrefix, RegularExpression)")
    return out


def _header_ops(mod: dict[str, Any], where: str) -> dict[str, Any]:
    _check_keys(mod, ("set", "add", "remove"), where)
    out: dict[str, Any] = {}
    for op in ("set", "add"):
        if mod.get(op):
            out[op] = {str(h["name"]): str(h["value"]) for h in mod[op]}
    if mod.get("remove"):
        out["remove"] = [str(h) for h in mod["remove"]]
    return out


def _service_host(ref: dict[str, Any], ns: str, where: str) -> dict[str, Any]:
    """An Istio Destination for a backendRef / mirror backendRef (a Kubernetes Service)."""
    _check_keys(ref, ("group", "kind", "name", "namespace", "port", "weight", "filters"), where)
    if (ref.get("group") or "") != "" or (ref.get("kind") or "Service") != "Service":
        raise RenderError(f"{where}: only Service backends are supported locally (got {ref.get('kind')})")
    if not ref.get("name"):
        raise RenderError(f"{where}: name is required")
    dest: dict[str, Any] = {"host": f"{ref['name']}.{ref.get('namespace') or ns}"}
    if ref.get("port") is not None:
        dest["port"] = {"number": int(ref["port"])}
    return dest


def _filters_into(http: dict[str, Any], filters: list[dict[str, Any]], ns: str, where: str) -> None:
    """Rule filters onto an Istio HTTPRoute."""
    headers: dict[str, Any] = {}
    for k, f in enumerate(filters or []):
        fwhere = f"{where}.filters[{k}]"
        ftype = f.get("type")
        if ftype == "RequestHeaderModifier":
            headers["request"] = _header_ops(f.get("requestHeaderModifier") or {}, fwhere)
        elif ftype == "ResponseHeaderModifier":
            prev = headers.get("response") or {}
            new = _header_ops(f.get("responseHeaderModifier") or {}, fwhere)
            for op in ("set", "add"):
                if new.get(op):
                    prev.setdefault(op, {}).update(new[op])
            if new.get("remove"):
                prev.setdefault("remove", []).extend(new["remove"])
            headers["response"] = prev
        elif ftype == "URLRewrite":
            rw = f.get("urlRewrite") or {}
            _check_keys(rw, ("hostname", "path"), f"{fwhere}.urlRewrite")
            out: dict[str, Any] = {}
            if rw.get("hostname"):
                out["authority"] = str(rw["hostname"])
            path = rw.get("path") or {}
            if path.get("type") == "ReplacePrefixMatch":
                out["uri"] = str(path.get("replacePrefixMatch") or "/")
            elif path.get("type") == "ReplaceFullPath":
                out["uriRegexRewrite"] = {"match": "^.*$", "rewrite": str(path.get("replaceFullPath") or "/")}
            elif path:
                raise RenderError(f"{fwhere}.urlRewrite.path.type: {path.get('type')} is not supported")
            http["rewrite"] = out
        elif ftype == "RequestMirror":
            ref = (f.get("requestMirror") or {}).get("backendRef") or {}
            http.setdefault("mirrors", []).append({"destination": _service_host(ref, ns, f"{fwhere}.requestMirror")})
        elif ftype == "RequestRedirect":
            rd = f.get("requestRedirect") or {}
            _check_keys(rd, ("scheme", "hostname", "port", "statusCode", "path"), f"{fwhere}.requestRedirect")
            redirect: dict[str, Any] = {"redirectCode": int(rd.get("statusCode") or 302)}
            if rd.get("scheme"):
                redirect["scheme"] = str(rd["scheme"])
            if rd.get("hostname"):
                redirect["authority"] = str(rd["hostname"])
            if rd.get("port"):
                redirect["port"] = int(rd["port"])
            if (rd.get("path") or {}).get("replaceFullPath"):
                redirect["uri"] = str(rd["path"]["replaceFullPath"])
            http["redirect"] = redirect
        else:
            raise RenderError(f"{fwhere}: filter type {ftype!r} is not supported by the local gateway")
    if headers:
        http["headers"] = headers


def _rule(rule: dict[str, Any], ns: str, index: int, where: str) -> dict[str, Any]:
    _check_keys(rule, ("name", "matches", "filters", "backendRefs", "timeouts", "retry", "sessionPersistence"), where)
    for field in ("retry", "sessionPersistence"):
        if rule.get(field):
            raise RenderError(f"{where}: field {field!r} is not supported by the local gateway")
    http: dict[str, Any] = {"name": str(rule.get("name") or index)}
    matches = _matches(rule, where)
    if matches is not None:
        http["match"] = matches
    _filters_into(http, rule.get("filters") or [], ns, where)
    if "redirect" not in http:
        refs = rule.get("backendRefs") or []
        if not refs:
            raise RenderError(f"{where}: backendRefs is empty (the gateway would answer 500)")
        route = []
        for k, ref in enumerate(refs):
            rwhere = f"{where}.backendRefs[{k}]"
            dest: dict[str, Any] = {
                "destination": _service_host(ref, ns, rwhere),
                "weight": int(ref.get("weight", 1)),
            }
            per_backend: dict[str, Any] = {}
            _filters_into(per_backend, ref.get("filters") or [], ns, rwhere)
            extra = set(per_backend) - {"name", "headers"}
            if extra:
                raise RenderError(f"{rwhere}.filters: only header modifiers are supported on a backendRef locally")
            if per_backend.get("headers"):
                dest["headers"] = per_backend["headers"]
            route.append(dest)
        if sum(d["weight"] for d in route) == 0:
            raise RenderError(f"{where}.backendRefs: the weights add up to 0 (the gateway would answer 500)")
        http["route"] = route
    timeouts = rule.get("timeouts") or {}
    _check_keys(timeouts, ("request", "backendRequest"), f"{where}.timeouts")
    if timeouts.get("request"):
        http["timeout"] = str(timeouts["request"])
    if timeouts.get("backendRequest"):
        # Istio's translation: the per-try timeout of its default retry policy.
        http["retries"] = {"attempts": 2, "perTryTimeout": str(timeouts["backendRequest"])}
    return http


# ------------------------------------------------------------------------------------------ routes


def as_virtual_services(
    routes: list[dict[str, Any]], gateways: dict[tuple[str, str], dict[str, Any]]
) -> list[dict[str, Any]]:
    """The gateway-bound VirtualService-shaped routes of ``routes`` (HTTPRoutes), one per attached parentRef;
    ``gateways``: Gateway API Gateways by (namespace, name). Each result keeps ``kind: HTTPRoute`` so that
    errors name the HTTPRoute, and ``gateways: ["<ns>/<gateway>"]``."""
    listeners = {key: gateway_listeners(gw) for key, gw in gateways.items()}
    out: list[dict[str, Any]] = []
    for route in routes:
        ns, name = _meta(route)
        label = _label(route)
        spec = route.get("spec") or {}
        _check_keys(spec, ("parentRefs", "hostnames", "rules"), f"{label} spec")
        http = [_rule(r, ns, i, f"{label} spec.rules[{i}]") for i, r in enumerate(spec.get("rules") or [])]
        parents = spec.get("parentRefs") or []
        if not parents:
            raise RenderError(f"{label}: spec.parentRefs is empty (GAMMA mesh routes are not supported locally)")
        for p, ref in enumerate(parents):
            where = f"{label} spec.parentRefs[{p}]"
            if (ref.get("group") or GATEWAY_API_GROUP) != GATEWAY_API_GROUP or (
                ref.get("kind") or "Gateway"
            ) != "Gateway":
                raise RenderError(
                    f"{where}: parent {ref.get('kind')} is not supported locally (a gateway.networking.k8s.io Gateway)"
                )
            key = (str(ref.get("namespace") or ns), str(ref.get("name") or ""))
            if key not in listeners:
                known = ", ".join(f"{a}/{b}" for a, b in sorted(listeners)) or "none"
                raise RenderError(
                    f"{where}: Gateway {key[0]}/{key[1]} (gateway.networking.k8s.io) does not exist (known: {known}); "
                    "add the Gateway to the manifests, or fix the canary's service.gatewayRefs"
                )
            candidates = [
                lst
                for lst in listeners[key]
                if (ref.get("sectionName") in (None, lst.name))
                and (ref.get("port") in (None, lst.port))
                and (lst.from_namespaces == "All" or key[0] == ns)
            ]
            if not candidates:
                raise RenderError(
                    f"{where}: no listener of Gateway {key[0]}/{key[1]} accepts this route (sectionName/port, or "
                    f"allowedRoutes.namespaces.from: Same while the route is in namespace {ns}); "
                    "set allowedRoutes.namespaces.from: All on the listener, or fix the reference"
                )
            hosts: list[str] = []
            for lst in candidates:
                hosts.extend(h for h in _hostnames(route, lst) if h not in hosts)
            if not hosts:
                listener_hosts = ", ".join(str(lst.hostname) for lst in candidates)
                raise RenderError(
                    f"{label}: spec.hostnames {spec.get('hostnames')} match no listener hostname of Gateway "
                    f"{key[0]}/{key[1]} ({listener_hosts}); fix service.hosts or the listener's hostname"
                )
            out.append(
                {
                    "apiVersion": route.get("apiVersion"),
                    "kind": "HTTPRoute",
                    "metadata": {"namespace": ns, "name": name},
                    "spec": {"hosts": hosts, "gateways": ["{}/{}".format(*key)], "http": copy.deepcopy(http)},
                }
            )
    return out
