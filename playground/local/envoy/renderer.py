"""The renderer: :class:`_Renderer` turns the collected Istio objects and the ready endpoints into Envoy
clusters (one per destination workload, ``<namespace>_<workload>``) and routes (VirtualService HTTP routes in
order, weighted destinations, mirrors, timeouts, DestinationRule subsets and traffic policies). Pure.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from playground.local.envoy.common import _HTTP_OPTIONS_TYPE, _MAX, RenderError, ServiceEndpoints, cluster_name
from playground.local.envoy.helpers import _check_keys, _duration, _fraction, _label, _meta, _safe_name
from playground.local.envoy.inputs import _collect, _gateway_ref, _split_host
from playground.local.envoy.policies import _apply_headers, _cors, _fault, _retry_policy, _route_match
from playground.local.envoy.tcp import tcp_routes_for


class _Renderer:
    def __init__(
        self,
        objects: list[dict[str, Any]],
        endpoints: dict[tuple[str, str], ServiceEndpoints],
        extra_upstreams: dict[str, tuple[str, int]],
    ) -> None:
        self.inputs = _collect(objects)
        self.endpoints = endpoints
        self.extra_upstreams = extra_upstreams
        self.clusters: dict[str, dict[str, Any]] = {}
        self.uses_cors = False
        # Namespaces that exist here: tells "svc.ns" (a Service) from "example.org" (an external host).
        self.namespaces = (
            {ns for ns, _ in self.inputs.services}
            | {ns for ns, _ in endpoints}
            | {_meta(o)[0] for o in self.inputs.virtual_services + self.inputs.destination_rules}
        )
        self._build_workload_clusters()
        self._apply_destination_rules()

    # ---------------------------------------------------------------------------------- clusters

    def _static_cluster(self, name: str, addresses: Iterable[tuple[str, int]]) -> dict[str, Any]:
        return {
            "name": name,
            "type": "STATIC",
            "connect_timeout": "1s",
            "lb_policy": "ROUND_ROBIN",
            "load_assignment": {
                "cluster_name": name,
                "endpoints": [
                    {
                        "lb_endpoints": [
                            {"endpoint": {"address": {"socket_address": {"address": h, "port_value": int(p)}}}}
                            for h, p in addresses
                        ],
                    }
                ],
            },
            "circuit_breakers": {
                "thresholds": [
                    {
                        "max_connections": _MAX,
                        "max_pending_requests": _MAX,
                        "max_requests": _MAX,
                        "max_retries": _MAX,
                    }
                ]
            },
            # Close idle upstream connections before typical server keep-alive timeouts (Node: 5s) do, so a
            # request never races the server closing the connection under it.
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": _HTTP_OPTIONS_TYPE,
                    "common_http_protocol_options": {"idle_timeout": "4s"},
                    "explicit_http_config": {"http_protocol_options": {}},
                },
            },
        }

    def _build_workload_clusters(self) -> None:
        owners: dict[str, tuple[str, str]] = {}
        for (ns, svc), ep in sorted(self.endpoints.items()):
            if not isinstance(ep, ServiceEndpoints):
                raise RenderError(f"endpoints[{ns!r}, {svc!r}] must be a ServiceEndpoints, got {type(ep).__name__}")
            name = cluster_name(ns, ep.workload)
            addresses = sorted((str(h), int(p)) for h, p in ep.addresses)
            if name in self.clusters:
                prev = [
                    (
                        e["endpoint"]["address"]["socket_address"]["address"],
                        e["endpoint"]["address"]["socket_address"]["port_value"],
                    )
                    for e in self.clusters[name]["load_assignment"]["endpoints"][0]["lb_endpoints"]
                ]
                if prev != addresses:
                    other = owners[name]
                    raise RenderError(
                        f"Services {other[0]}/{other[1]} and {ns}/{svc} both select workload {ns}/{ep.workload} "
                        f"but with different endpoints ({prev} vs {addresses}); the local mesh has one cluster "
                        f"per workload, so every Service of a workload must target the same container port"
                    )
                continue
            owners[name] = (ns, svc)
            self.clusters[name] = self._static_cluster(name, addresses)

    def _empty_cluster(self, name: str) -> str:
        if name not in self.clusters:
            self.clusters[name] = self._static_cluster(name, [])
        return name

    def service_cluster(self, ns: str, svc: str, port: int | None, where: str) -> str:
        """The cluster serving Service ns/svc on ``port`` (None: its only port)."""
        service = self.inputs.services.get((ns, svc))
        ep = self.endpoints.get((ns, svc))
        if port is None and service is not None and len(service.ports) > 1:
            raise RenderError(
                f"{where}: Service {ns}/{svc} has several ports {service.ports}; set destination.port.number"
            )
        if ep is not None and (port is None or ep.port == port) and ep.addresses:
            return cluster_name(ns, ep.workload)
        # A Service without a ready replica (or not applied yet): an empty cluster answers 503, as Istio does.
        # It is not the workload's cluster: Istio's destination reporter never counts requests that reached no
        # pod, so a canary scaled to zero must not collect 503s in istio_requests_total{destination_workload}.
        if ep is not None and (port is None or ep.port == port):
            return self._empty_cluster(f"noendpoints__{ns}__{svc}")
        suffix = f"__{port}" if port is not None and ep is not None else ""
        return self._empty_cluster(f"noendpoints__{ns}__{svc}{suffix}")

    def extra_cluster(self, key: str) -> str:
        host, port = self.extra_upstreams[key]
        name = f"extra__{_safe_name(key)}"
        if name not in self.clusters:
            self.clusters[name] = self._static_cluster(name, [(host, int(port))])
        return name

    def _extra_key(self, host: str, port: int | None) -> str | None:
        candidates = [f"{host}:{port}"] if port is not None else [host, f"{host}:80"]
        for cand in candidates:
            if cand in self.extra_upstreams:
                return cand
        return None

    def destination_cluster(self, dest: dict[str, Any], vs_ns: str, where: str) -> str:
        """The cluster of an Istio Destination (host resolved in the VirtualService's namespace)."""
        if not isinstance(dest, dict) or not dest.get("host"):
            raise RenderError(f"{where}: destination.host is required")
        _check_keys(dest, ("host", "port", "subset"), where)
        if dest.get("subset"):
            raise RenderError(
                f"{where}: field 'subset' is not supported by the local mesh "
                f"(route to separate Services, as Flagger does)"
            )
        port = None
        if dest.get("port") is not None:
            _check_keys(dest["port"], ("number",), f"{where}.port")
            port = int(dest["port"]["number"])
        host = str(dest["host"])
        split = _split_host(host, vs_ns)
        if split is not None and (split in self.inputs.services or split in self.endpoints):
            return self.service_cluster(split[0], split[1], port, where)
        key = self._extra_key(host, port)
        if key is not None:
            return self.extra_cluster(key)
        if split is not None and (host.count(".") != 1 or split[0] in self.namespaces):
            # a Service that does not exist (yet): 503, as Istio would answer
            return self.service_cluster(split[0], split[1], port, where)
        raise RenderError(
            f"{where}: destination host {host!r} is neither a Kubernetes Service nor an extra "
            f"upstream of the local mesh"
        )

    # ------------------------------------------------------------------------- destination rules

    def _apply_destination_rules(self) -> None:
        applied: dict[str, tuple[str, Any]] = {}
        for dr in self.inputs.destination_rules:
            ns, _ = _meta(dr)
            label = _label(dr)
            spec = dr.get("spec") or {}
            _check_keys(spec, ("host", "trafficPolicy", "subsets", "exportTo", "workloadSelector"), f"{label} spec")
            host = spec.get("host")
            if not host:
                raise RenderError(f"{label}: spec.host is required")
            split = _split_host(str(host), ns)
            if split is None or split not in self.endpoints:
                continue  # no such workload here (yet): nothing to configure, as Istio ignores it
            policy = spec.get("trafficPolicy") or {}
            name = cluster_name(split[0], self.endpoints[split].workload)
            if name in applied:
                if applied[name][1] != policy:
                    raise RenderError(
                        f"{label}: workload cluster {name} already has a different trafficPolicy "
                        f"from {applied[name][0]}; the local mesh has one cluster per workload"
                    )
                continue
            applied[name] = (label, policy)
            self._traffic_policy(self.clusters[name], policy, f"{label} spec.trafficPolicy")

    def _traffic_policy(self, cluster: dict[str, Any], policy: dict[str, Any], where: str) -> None:
        _check_keys(policy, ("loadBalancer", "connectionPool", "outlierDetection", "tls"), where)
        lb = policy.get("loadBalancer") or {}
        _check_keys(lb, ("simple",), f"{where}.loadBalancer")
        simple = lb.get("simple")
        if simple:
            mapping = {
                "ROUND_ROBIN": "ROUND_ROBIN",
                "LEAST_REQUEST": "LEAST_REQUEST",
                "LEAST_CONN": "LEAST_REQUEST",
                "RANDOM": "RANDOM",
                "UNSPECIFIED": "ROUND_ROBIN",
            }
            if simple not in mapping:
                raise RenderError(
                    f"{where}.loadBalancer.simple: {simple!r} is not supported (supported: {', '.join(mapping)})"
                )
            cluster["lb_policy"] = mapping[simple]
        tls = policy.get("tls") or {}
        _check_keys(tls, ("mode",), f"{where}.tls")
        if tls.get("mode") not in (None, "DISABLE", "ISTIO_MUTUAL"):
            raise RenderError(
                f"{where}.tls.mode: {tls['mode']!r} is not supported locally "
                f"(the local mesh is plaintext; DISABLE and ISTIO_MUTUAL are accepted)"
            )
        pool = policy.get("connectionPool") or {}
        _check_keys(pool, ("tcp", "http"), f"{where}.connectionPool")
        thresholds = cluster["circuit_breakers"]["thresholds"][0]
        tcp = pool.get("tcp") or {}
        _check_keys(tcp, ("maxConnections", "connectTimeout"), f"{where}.connectionPool.tcp")
        if "maxConnections" in tcp:
            thresholds["max_connections"] = int(tcp["maxConnections"])
        if "connectTimeout" in tcp:
            cluster["connect_timeout"] = _duration(tcp["connectTimeout"], f"{where}.connectionPool.tcp.connectTimeout")
        http = pool.get("http") or {}
        _check_keys(
            http,
            (
                "http1MaxPendingRequests",
                "http2MaxRequests",
                "maxRequestsPerConnection",
                "maxRetries",
                "idleTimeout",
                "h2UpgradePolicy",
            ),
            f"{where}.connectionPool.http",
        )
        if "http1MaxPendingRequests" in http:
            thresholds["max_pending_requests"] = int(http["http1MaxPendingRequests"])
        if "http2MaxRequests" in http:
            thresholds["max_requests"] = int(http["http2MaxRequests"])
        if "maxRetries" in http:
            thresholds["max_retries"] = int(http["maxRetries"])
        if http.get("h2UpgradePolicy") not in (None, "DEFAULT", "DO_NOT_UPGRADE"):
            raise RenderError(f"{where}.connectionPool.http.h2UpgradePolicy: only DEFAULT/DO_NOT_UPGRADE are supported")
        options = cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
        if "idleTimeout" in http:
            options["common_http_protocol_options"]["idle_timeout"] = _duration(
                http["idleTimeout"], f"{where}.connectionPool.http.idleTimeout"
            )
        if int(http.get("maxRequestsPerConnection") or 0) > 0:
            options["common_http_protocol_options"]["max_requests_per_connection"] = int(
                http["maxRequestsPerConnection"]
            )
        od = policy.get("outlierDetection")
        if od:
            _check_keys(
                od,
                (
                    "consecutive5xxErrors",
                    "consecutiveGatewayErrors",
                    "interval",
                    "baseEjectionTime",
                    "maxEjectionPercent",
                    "minHealthPercent",
                ),
                f"{where}.outlierDetection",
            )
            out: dict[str, Any] = {
                "enforcing_consecutive_5xx": 0,
                "enforcing_consecutive_gateway_failure": 0,
                "enforcing_success_rate": 0,
            }
            if od.get("consecutive5xxErrors"):
                out["consecutive_5xx"] = int(od["consecutive5xxErrors"])
                out["enforcing_consecutive_5xx"] = 100
            if od.get("consecutiveGatewayErrors"):
                out["consecutive_gateway_failure"] = int(od["consecutiveGatewayErrors"])
                out["enforcing_consecutive_gateway_failure"] = 100
            if "interval" in od:
                out["interval"] = _duration(od["interval"], f"{where}.outlierDetection.interval")
            if "baseEjectionTime" in od:
                out["base_ejection_time"] = _duration(
                    od["baseEjectionTime"], f"{where}.outlierDetection.baseEjectionTime"
                )
            if "maxEjectionPercent" in od:
                out["max_ejection_percent"] = int(od["maxEjectionPercent"])
            cluster["outlier_detection"] = out
            if "minHealthPercent" in od:
                cluster["common_lb_config"] = {"healthy_panic_threshold": {"value": float(od["minHealthPercent"])}}

    # -------------------------------------------------------------------------------- HTTP routes

    def render_vs_routes(self, vs: dict[str, Any], *, context: str, port: int | None) -> list[dict[str, Any]]:
        """Envoy routes for a VirtualService's ``http`` list, for the mesh (on Service ``port``) or the
        gateway (``context`` = ``mesh`` or ``gateway:<ns>/<name>``)."""
        ns, name = _meta(vs)
        label = _label(vs)
        spec = vs.get("spec") or {}
        if spec.get("tls"):
            raise RenderError(f"{label}: spec.tls routes are not supported by the local mesh (HTTP and TCP only)")
        http_routes = spec.get("http") or []
        if spec.get("tcp"):
            # A TCP service: its connections are split by its TCP listener (tcp.py); HTTP requests sent to it
            # through the mesh proxy take the same weighted destinations (the bytes a tcp_proxy would carry).
            if context != "mesh":
                raise RenderError(
                    f"{label}: tcp routes through a Gateway are not supported by the local mesh (its gateway "
                    "listener is HTTP); bind the TCP service to the mesh only (no service.gateways)"
                )
            if port is None:
                raise RenderError(f"{label}: tcp routes need a Kubernetes Service host in the local mesh")
            http_routes = [{"route": t.get("route") or []} for t in tcp_routes_for(vs, port)[:1]] + list(http_routes)
        routes: list[dict[str, Any]] = []
        for i, http in enumerate(http_routes):
            where = f"{label} spec.http[{i}]"
            _check_keys(
                http,
                (
                    "name",
                    "match",
                    "route",
                    "redirect",
                    "directResponse",
                    "rewrite",
                    "timeout",
                    "retries",
                    "fault",
                    "mirror",
                    "mirrors",
                    "mirrorPercentage",
                    "mirrorPercent",
                    "mirror_percent",
                    "corsPolicy",
                    "headers",
                ),
                where,
            )
            matches = http.get("match") or [None]
            envoy_matches = []
            for j, m in enumerate(matches):
                mwhere = f"{where}.match[{j}]"
                if m is not None and not self._match_applies(m, vs, context, port, mwhere):
                    continue
                envoy_matches.append(_route_match(m, mwhere))
            if not envoy_matches:
                continue
            base = self._route_body(http, ns, where)
            route_name = f"{ns}/{name}/{http.get('name') or i}"
            for j, em in enumerate(envoy_matches):
                r = {"name": route_name if len(envoy_matches) == 1 else f"{route_name}#{j}", "match": em}
                r.update(copy.deepcopy(base))
                routes.append(r)
        return routes

    def _match_applies(self, m: dict[str, Any], vs: dict[str, Any], context: str, port: int | None, where: str) -> bool:
        if m.get("sourceLabels") or m.get("sourceNamespace"):
            field_name = "sourceLabels" if m.get("sourceLabels") else "sourceNamespace"
            raise RenderError(
                f"{where}: field {field_name!r} is not supported by the local mesh "
                f"(the source of a request is not known to the local proxy)"
            )
        gws = m.get("gateways")
        if gws:
            ns, _ = _meta(vs)
            wanted = {"mesh" if g == "mesh" else "gateway:{}/{}".format(*_gateway_ref(g, ns)) for g in gws}
            if context not in wanted and not (context.startswith("gateway:") and "gateway:*" in wanted):
                return False
        if m.get("port") is not None:
            if not context == "mesh":
                raise RenderError(
                    f"{where}: field 'port' is not supported on gateway-bound routes locally "
                    f"(the local gateway has a single port)"
                )
            return port is None or int(m["port"]) == port
        return True

    def _route_body(self, http: dict[str, Any], vs_ns: str, where: str) -> dict[str, Any]:
        """Everything of an Envoy route except ``match``."""
        body: dict[str, Any] = {}
        if http.get("directResponse") is not None:
            dr = http["directResponse"]
            _check_keys(dr, ("status", "body"), f"{where}.directResponse")
            out: dict[str, Any] = {"status": int(dr["status"])}
            if dr.get("body"):
                b = dr["body"]
                _check_keys(b, ("string",), f"{where}.directResponse.body")
                out["body"] = {"inline_string": str(b.get("string", ""))}
            body["direct_response"] = out
        elif http.get("redirect") is not None:
            rd = http["redirect"]
            _check_keys(rd, ("uri", "authority", "port", "scheme", "redirectCode"), f"{where}.redirect")
            codes = {
                301: "MOVED_PERMANENTLY",
                302: "FOUND",
                303: "SEE_OTHER",
                307: "TEMPORARY_REDIRECT",
                308: "PERMANENT_REDIRECT",
            }
            out = {"response_code": codes.get(int(rd.get("redirectCode") or 301))}
            if out["response_code"] is None:
                raise RenderError(f"{where}.redirect.redirectCode: {rd['redirectCode']} is not a redirect code")
            if rd.get("uri"):
                out["path_redirect"] = rd["uri"]
            if rd.get("authority"):
                out["host_redirect"] = rd["authority"]
            if rd.get("port"):
                out["port_redirect"] = int(rd["port"])
            if rd.get("scheme"):
                out["scheme_redirect"] = rd["scheme"]
            body["redirect"] = out
        else:
            body["route"] = self._route_action(http, vs_ns, where)
        if http.get("directResponse") is not None and http.get("redirect") is not None:
            raise RenderError(f"{where}: redirect and directResponse are exclusive")
        if ("directResponse" in http or "redirect" in http) and http.get("route"):
            raise RenderError(f"{where}: route cannot be combined with redirect/directResponse")
        _apply_headers(body, http.get("headers"), f"{where}.headers")
        per_filter: dict[str, Any] = {}
        if http.get("fault"):
            per_filter["envoy.filters.http.fault"] = _fault(http["fault"], f"{where}.fault")
        if http.get("corsPolicy"):
            per_filter["envoy.filters.http.cors"] = _cors(http["corsPolicy"], f"{where}.corsPolicy")
            self.uses_cors = True
        if per_filter:
            body["typed_per_filter_config"] = per_filter
        return body

    def _route_action(self, http: dict[str, Any], vs_ns: str, where: str) -> dict[str, Any]:
        dests = http.get("route") or []
        if not dests:
            raise RenderError(f"{where}: one of route, redirect or directResponse is required")
        weighted: list[dict[str, Any]] = []
        for k, d in enumerate(dests):
            dwhere = f"{where}.route[{k}]"
            _check_keys(d, ("destination", "weight", "headers"), dwhere)
            cluster = self.destination_cluster(d.get("destination"), vs_ns, f"{dwhere}.destination")
            weight = d.get("weight")
            if weight is None:
                weight = 100 if len(dests) == 1 else 0
            weight = int(weight)
            if weight < 0:
                raise RenderError(f"{dwhere}.weight: {weight} is negative")
            entry: dict[str, Any] = {"name": cluster, "weight": weight}
            _apply_headers(entry, d.get("headers"), f"{dwhere}.headers")
            weighted.append(entry)
        # Merge destinations that land on the same workload cluster (e.g. apex and primary Services).
        merged: list[dict[str, Any]] = []
        for entry in weighted:
            for prev in merged:
                if {k: v for k, v in prev.items() if k != "weight"} == {
                    k: v for k, v in entry.items() if k != "weight"
                }:
                    prev["weight"] += entry["weight"]
                    break
            else:
                merged.append(dict(entry))
        if len(merged) == 1:
            # A lone destination takes all traffic whatever its weight (Istio).
            action: dict[str, Any] = {"cluster": merged[0]["name"]}
            extra = {k: v for k, v in merged[0].items() if k not in ("name", "weight")}
            if extra:
                action["_destination_headers"] = extra
        else:
            live = [e for e in merged if e["weight"] > 0]
            if not live:
                raise RenderError(f"{where}.route: the weights add up to 0")
            if len(live) == 1 and len(live[0]) == 2:
                action = {"cluster": live[0]["name"]}
            else:
                action = {"weighted_clusters": {"clusters": live}}
        # timeout: Istio disables Envoy's 15s default unless a timeout is set
        action["timeout"] = _duration(http["timeout"], f"{where}.timeout") if http.get("timeout") else "0s"
        retry = _retry_policy(http.get("retries"), f"{where}.retries")
        if retry is not None:
            action["retry_policy"] = retry
        mirrors = self._mirrors(http, vs_ns, where)
        if mirrors:
            action["request_mirror_policies"] = mirrors
        if http.get("rewrite"):
            rw = http["rewrite"]
            _check_keys(rw, ("uri", "authority", "uriRegexRewrite"), f"{where}.rewrite")
            if rw.get("uri") and rw.get("uriRegexRewrite"):
                raise RenderError(f"{where}.rewrite: uri and uriRegexRewrite are exclusive")
            if rw.get("uri"):
                action["prefix_rewrite"] = rw["uri"]
            if rw.get("uriRegexRewrite"):
                rr = rw["uriRegexRewrite"]
                _check_keys(rr, ("match", "rewrite"), f"{where}.rewrite.uriRegexRewrite")
                action["regex_rewrite"] = {"pattern": {"regex": rr["match"]}, "substitution": rr.get("rewrite", "")}
            if rw.get("authority"):
                action["host_rewrite_literal"] = rw["authority"]
        return action

    def _mirrors(self, http: dict[str, Any], vs_ns: str, where: str) -> list[dict[str, Any]]:
        out = []
        if http.get("mirror"):
            percent = None
            if http.get("mirrorPercentage") is not None:
                mp = http["mirrorPercentage"]
                _check_keys(mp, ("value",), f"{where}.mirrorPercentage")
                percent = mp.get("value", 0)
            else:
                legacy = http.get("mirrorPercent", http.get("mirror_percent"))
                if legacy is not None:
                    percent = legacy
            policy: dict[str, Any] = {"cluster": self.destination_cluster(http["mirror"], vs_ns, f"{where}.mirror")}
            if percent is not None:
                policy["runtime_fraction"] = {"default_value": _fraction(percent, f"{where}.mirrorPercentage")}
            out.append(policy)
        for k, m in enumerate(http.get("mirrors") or []):
            mwhere = f"{where}.mirrors[{k}]"
            _check_keys(m, ("destination", "percentage"), mwhere)
            policy = {"cluster": self.destination_cluster(m.get("destination"), vs_ns, f"{mwhere}.destination")}
            if m.get("percentage") is not None:
                policy["runtime_fraction"] = {
                    "default_value": _fraction(m["percentage"].get("value", 0), f"{mwhere}.percentage")
                }
            out.append(policy)
        return out

    def plain_route(self, cluster: str, name: str) -> dict[str, Any]:
        """A route sending everything to ``cluster`` with Istio's defaults (no timeout, default retries)."""
        return {
            "name": name,
            "match": {"prefix": "/"},
            "route": {"cluster": cluster, "timeout": "0s", "retry_policy": _retry_policy(None, name)},
        }


def _finish_route(route: dict[str, Any]) -> dict[str, Any]:
    """Move headers of a lone destination up to the route (Envoy has no per-cluster headers without
    weighted_clusters)."""
    action = route.get("route")
    if action and "_destination_headers" in action:
        extra = action.pop("_destination_headers")
        for key in ("request_headers_to_add", "response_headers_to_add"):
            if key in extra:
                route.setdefault(key, []).extend(extra[key])
        for key in ("request_headers_to_remove", "response_headers_to_remove"):
            if key in extra:
                route.setdefault(key, []).extend(extra[key])
    return route
