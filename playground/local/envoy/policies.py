"""Match and policies: Istio HTTPMatchRequest (uri, headers, queryParams, method, authority, ...) to Envoy route
matches, and the per-route policies: retries (Istio's default retry policy unless ``retries`` is set), header
manipulation, fault injection, CORS. Unsupported fields raise ``RenderError`` naming the object and field. Pure.
"""

from __future__ import annotations

import re
from typing import Any

from playground.local.envoy.common import _CORS_TYPE, _DEFAULT_RETRY_ON, _FAULT_TYPE, _PREVIOUS_HOSTS_TYPE, RenderError
from playground.local.envoy.helpers import _check_keys, _duration, _fraction, _seconds


def _string_match(sm: Any, where: str) -> dict[str, Any] | None:
    """An Envoy StringMatcher from an Istio StringMatch (None for ``{}`` = presence)."""
    if sm is None or sm == {}:
        return None
    if not isinstance(sm, dict):
        raise RenderError(f"{where}: expected one of exact/prefix/regex, got {sm!r}")
    _check_keys(sm, ("exact", "prefix", "regex"), where)
    if len(sm) != 1:
        raise RenderError(f"{where}: exactly one of exact/prefix/regex must be set")
    kind, value = next(iter(sm.items()))
    if kind == "regex":
        _check_regex(str(value), where)
        return {"safe_regex": {"regex": str(value)}}
    return {kind: str(value)}


def _check_regex(regex: str, where: str) -> None:
    """Reject regexes RE2 cannot take (backreferences, lookaround) with a clear message; Envoy would fail the
    whole configuration otherwise."""
    if re.search(r"\(\?[=!<]|\\[1-9]", regex):
        raise RenderError(f"{where}: regex {regex!r} uses lookaround or backreferences, which RE2 does not support")
    try:
        re.compile(regex)
    except re.error as e:
        raise RenderError(f"{where}: invalid regex {regex!r}: {e}") from None


def _header_matcher(name: str, sm: Any, where: str, invert: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name}
    string = _string_match(sm, where)
    if string is None:
        out["present_match"] = True
    else:
        out["string_match"] = string
    if invert:
        out["invert_match"] = True
    return out


def _route_match(m: dict[str, Any] | None, where: str) -> dict[str, Any]:
    """An Envoy RouteMatch from an Istio HTTPMatchRequest (None = match everything)."""
    if m is None:
        return {"prefix": "/"}
    _check_keys(
        m,
        (
            "name",
            "uri",
            "scheme",
            "method",
            "authority",
            "headers",
            "withoutHeaders",
            "queryParams",
            "ignoreUriCase",
            "port",
            "gateways",
            "sourceLabels",
            "sourceNamespace",
        ),
        where,
    )
    out: dict[str, Any] = {}
    uri = m.get("uri")
    ignore_case = bool(m.get("ignoreUriCase"))
    if uri:
        _check_keys(uri, ("exact", "prefix", "regex"), f"{where}.uri")
        if len(uri) != 1:
            raise RenderError(f"{where}.uri: exactly one of exact/prefix/regex must be set")
        kind, value = next(iter(uri.items()))
        if kind == "exact":
            out["path"] = str(value)
        elif kind == "prefix":
            out["prefix"] = str(value)
        else:
            _check_regex(str(value), f"{where}.uri.regex")
            out["safe_regex"] = {"regex": ("(?i)" if ignore_case else "") + str(value)}
        if ignore_case and kind != "regex":
            out["case_sensitive"] = False
    else:
        out["prefix"] = "/"
    headers = []
    for name, sm in (m.get("headers") or {}).items():
        headers.append(_header_matcher(str(name).lower(), sm, f"{where}.headers.{name}"))
    for name, sm in (m.get("withoutHeaders") or {}).items():
        headers.append(_header_matcher(str(name).lower(), sm, f"{where}.withoutHeaders.{name}", invert=True))
    for field_name, header in (("method", ":method"), ("authority", ":authority"), ("scheme", ":scheme")):
        if m.get(field_name):
            headers.append(_header_matcher(header, m[field_name], f"{where}.{field_name}"))
    if headers:
        out["headers"] = headers
    params = []
    for name, sm in (m.get("queryParams") or {}).items():
        string = _string_match(sm, f"{where}.queryParams.{name}")
        params.append({"name": str(name), **({"string_match": string} if string else {"present_match": True})})
    if params:
        out["query_parameters"] = params
    return out


def _retry_policy(retries: dict[str, Any] | None, where: str) -> dict[str, Any] | None:
    """Envoy retry_policy from Istio ``retries`` (None: Istio's default policy; attempts 0: no retries)."""
    attempts = 2
    retry_on = _DEFAULT_RETRY_ON
    per_try = None
    if retries is not None:
        _check_keys(retries, ("attempts", "perTryTimeout", "retryOn", "retryRemoteLocalities"), where)
        attempts = int(retries.get("attempts") or 0)
        if attempts <= 0:
            return None
        if retries.get("retryOn"):
            retry_on = str(retries["retryOn"])
        if retries.get("perTryTimeout"):
            per_try = _duration(retries["perTryTimeout"], f"{where}.perTryTimeout")
    conditions, codes = [], []
    for token in (t.strip() for t in retry_on.split(",")):
        if not token:
            continue
        if token.isdigit():
            codes.append(int(token))
        elif token not in conditions:
            conditions.append(token)
    if retries is None or retries.get("retryOn") is None:
        codes = [503]
    if codes and "retriable-status-codes" not in conditions:
        conditions.append("retriable-status-codes")
    policy: dict[str, Any] = {
        "retry_on": ",".join(conditions),
        "num_retries": attempts,
        "retry_host_predicate": [
            {"name": "envoy.retry_host_predicates.previous_hosts", "typed_config": {"@type": _PREVIOUS_HOSTS_TYPE}}
        ],
        "host_selection_retry_max_attempts": 5,
    }
    if codes:
        policy["retriable_status_codes"] = codes
    if per_try:
        policy["per_try_timeout"] = per_try
    return policy


def _apply_headers(target: dict[str, Any], headers: dict[str, Any] | None, where: str) -> None:
    """Istio Headers (request/response set/add/remove) onto an Envoy route or weighted cluster entry."""
    if not headers:
        return
    _check_keys(headers, ("request", "response"), where)
    for side in ("request", "response"):
        ops = headers.get(side) or {}
        _check_keys(ops, ("set", "add", "remove"), f"{where}.{side}")
        to_add = []
        for key, value in (ops.get("set") or {}).items():
            to_add.append({"header": {"key": key, "value": str(value)}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"})
        for key, value in (ops.get("add") or {}).items():
            to_add.append({"header": {"key": key, "value": str(value)}, "append_action": "APPEND_IF_EXISTS_OR_ADD"})
        if to_add:
            target.setdefault(f"{side}_headers_to_add", []).extend(to_add)
        if ops.get("remove"):
            target.setdefault(f"{side}_headers_to_remove", []).extend(str(h) for h in ops["remove"])


def _fault(fault: dict[str, Any], where: str) -> dict[str, Any]:
    _check_keys(fault, ("delay", "abort"), where)
    out: dict[str, Any] = {"@type": _FAULT_TYPE}
    if fault.get("delay"):
        d = fault["delay"]
        _check_keys(d, ("fixedDelay", "percentage", "percent"), f"{where}.delay")
        if not d.get("fixedDelay"):
            raise RenderError(f"{where}.delay.fixedDelay is required")
        pct = (d.get("percentage") or {}).get("value", d.get("percent", 100))
        out["delay"] = {
            "fixed_delay": _duration(d["fixedDelay"], f"{where}.delay.fixedDelay"),
            "percentage": _fraction(pct, f"{where}.delay.percentage"),
        }
    if fault.get("abort"):
        a = fault["abort"]
        _check_keys(a, ("httpStatus", "percentage"), f"{where}.abort")
        if not a.get("httpStatus"):
            raise RenderError(f"{where}.abort.httpStatus is required (grpcStatus/http2Error are not supported)")
        pct = (a.get("percentage") or {}).get("value", 100)
        out["abort"] = {"http_status": int(a["httpStatus"]), "percentage": _fraction(pct, f"{where}.abort.percentage")}
    return out


def _cors(cors: dict[str, Any], where: str) -> dict[str, Any]:
    _check_keys(
        cors,
        ("allowOrigin", "allowOrigins", "allowMethods", "allowHeaders", "exposeHeaders", "maxAge", "allowCredentials"),
        where,
    )
    out: dict[str, Any] = {"@type": _CORS_TYPE}
    origins = [{"exact": o} for o in cors.get("allowOrigin") or []]
    for k, o in enumerate(cors.get("allowOrigins") or []):
        sm = _string_match(o, f"{where}.allowOrigins[{k}]")
        if sm is None:
            raise RenderError(f"{where}.allowOrigins[{k}]: one of exact/prefix/regex is required")
        origins.append(sm)
    if origins:
        out["allow_origin_string_match"] = origins
    for istio_key, envoy_key in (
        ("allowMethods", "allow_methods"),
        ("allowHeaders", "allow_headers"),
        ("exposeHeaders", "expose_headers"),
    ):
        if cors.get(istio_key):
            out[envoy_key] = ",".join(cors[istio_key])
    if cors.get("maxAge"):
        out["max_age"] = str(int(_seconds(cors["maxAge"], f"{where}.maxAge")))
    if cors.get("allowCredentials") is not None:
        out["allow_credentials"] = bool(cors["allowCredentials"])
    return out
