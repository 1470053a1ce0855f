"""TCP services of the local mesh, rendered as istiod renders outbound TCP: one listener per TCP Service port
whose network filter is a ``tcp_proxy``, to the Service's endpoints, or split by the ``tcp`` route of the mesh
VirtualService for that host (``weighted_clusters``, as Flagger's TCP canary writes it). Pure.

A Service port is TCP as Istio's protocol selection says: ``appProtocol: tcp`` (any case), or a port name
``tcp`` / ``tcp-*``. Istio's outbound listener is ``<ClusterIP>:<port>``; the local stand-in is
``127.0.0.1:<local port>``, assigned per Service port by the local backend (``LocalCluster.tcp_address``), so a
client opens a plain TCP connection there and each connection goes to one workload, chosen by weight. A weight
change replaces the listener's filter: new connections follow the new weights, open ones stay where they are
(Envoy drains the old filter chain), as with Istio. Each destination workload gets a TCP cluster of its own,
``tcp_<namespace>_<workload>`` (a copy of its workload cluster: same endpoints, same DestinationRule policies), so
its connection and byte counters are the TCP traffic alone; Prometheus renames them to Istio's TCP metrics
(``istio_tcp_connections_opened_total`` ..., see ``prometheus.py``), which MetricTemplates of a TCP canary query.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from playground.local.envoy.common import _FILE_LOG_TYPE, _LISTENER_TYPE, RenderError
from playground.local.envoy.helpers import _check_keys, _label, _meta
from playground.local.envoy.inputs import _split_host

if TYPE_CHECKING:  # the renderer imports tcp_routes_for from here
    from playground.local.envoy.renderer import _Renderer

_TCP_PROXY_TYPE = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
_TCP_LOG_FORMAT = (
    "[%START_TIME%] tcp {listener} %DOWNSTREAM_REMOTE_ADDRESS% %UPSTREAM_CLUSTER% %UPSTREAM_HOST% "
    "%RESPONSE_FLAGS% received=%BYTES_RECEIVED% sent=%BYTES_SENT% %DURATION%ms\n"
)


def is_tcp_port(port: dict[str, Any]) -> bool:
    """Istio's protocol selection for a Service port: ``appProtocol`` first, else the port name's prefix."""
    app = port.get("appProtocol")
    if isinstance(app, str) and app:
        return app.lower() == "tcp"
    name = str(port.get("name") or "").lower()
    return name == "tcp" or name.startswith("tcp-")


def tcp_service_ports(objects: list[dict[str, Any]]) -> list[tuple[str, str, int]]:
    """(namespace, Service, port) of every TCP Service port among ``objects``, sorted."""
    out = []
    for obj in objects:
        if not isinstance(obj, dict) or obj.get("kind") != "Service" or obj.get("apiVersion") != "v1":
            continue
        ns, name = _meta(obj)
        for p in (obj.get("spec") or {}).get("ports") or []:
            if isinstance(p, dict) and is_tcp_port(p) and str(p.get("port", "")).isdigit():
                out.append((ns, name, int(p["port"])))
    return sorted(out)


def _l4_applies(route: dict[str, Any], port: int, where: str) -> bool:
    matches = route.get("match") or []
    if not matches:
        return True
    for i, m in enumerate(matches):
        _check_keys(m, ("port",), f"{where}.match[{i}]")
        if m.get("port") in (None, port):
            return True
    return False


def tcp_routes_for(vs: dict[str, Any], port: int) -> list[dict[str, Any]]:
    """The ``tcp`` routes of ``vs`` that apply to Service ``port`` (L4 match on the port), in order."""
    label = _label(vs)
    out = []
    for i, route in enumerate((vs.get("spec") or {}).get("tcp") or []):
        where = f"{label} spec.tcp[{i}]"
        if not isinstance(route, dict):
            raise RenderError(f"{where}: must be an object")
        _check_keys(route, ("match", "route"), where)
        if _l4_applies(route, port, where):
            out.append(route)
    return out


def _mesh_tcp_vs(r: _Renderer) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Mesh VirtualServices with ``tcp`` routes, by the Service their hosts name."""
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for vs in r.inputs.virtual_services:
        spec = vs.get("spec") or {}
        if not spec.get("tcp"):
            continue
        ns, _ = _meta(vs)
        gateways = [str(g) for g in spec.get("gateways") or []] or ["mesh"]
        if any(g != "mesh" for g in gateways):
            raise RenderError(
                f"{_label(vs)}: tcp routes through a Gateway are not supported by the local mesh (its gateway "
                "listener is HTTP); bind the TCP service to the mesh only (no service.gateways)"
            )
        for h in spec.get("hosts") or []:
            split = _split_host(str(h), ns)
            if split is not None:
                out.setdefault(split, []).append(vs)
    return out


TCP_CLUSTER_PREFIX = "tcp_"


def _tcp_cluster(r: _Renderer, cluster: str) -> str:
    """The TCP twin of a renderer cluster (its copy under ``tcp_<name>``), created once."""
    name = TCP_CLUSTER_PREFIX + cluster
    if name not in r.clusters:
        twin = copy.deepcopy(r.clusters[cluster])
        twin["name"] = name
        twin["load_assignment"]["cluster_name"] = name
        twin.pop("typed_extension_protocol_options", None)  # HTTP connection pool options: not for tcp_proxy
        r.clusters[name] = twin
    return name


def _proxy(r: _Renderer, ns: str, svc: str, port: int, vss: list[dict[str, Any]], stat: str) -> dict[str, Any]:
    proxy: dict[str, Any] = {"@type": _TCP_PROXY_TYPE, "stat_prefix": stat}
    for vs in vss:
        routes = tcp_routes_for(vs, port)
        if not routes:
            continue
        vs_ns, _ = _meta(vs)
        where = f"{_label(vs)} spec.tcp"
        dests = routes[0].get("route") or []  # the first route that applies takes the connection (Istio)
        if not dests:
            raise RenderError(f"{where}: a tcp route needs at least one destination")
        weighted: dict[str, int] = {}
        for j, d in enumerate(dests):
            _check_keys(d, ("destination", "weight"), f"{where}.route[{j}]")
            weight = int(d.get("weight", 100 if len(dests) == 1 else 0))
            # every destination keeps its cluster (and its counters) whatever its weight, as istiod's clusters
            cluster = _tcp_cluster(
                r, r.destination_cluster(d.get("destination"), vs_ns, f"{where}.route[{j}].destination")
            )
            if weight > 0:  # istiod leaves out zero-weight destinations (Envoy needs weights >= 1)
                weighted[cluster] = weighted.get(cluster, 0) + weight
        if len(weighted) == 1:
            proxy["cluster"] = next(iter(weighted))
        elif weighted:
            proxy["weighted_clusters"] = {"clusters": [{"name": c, "weight": w} for c, w in weighted.items()]}
        else:
            raise RenderError(f"{where}: every destination has weight 0")
        return proxy
    proxy["cluster"] = _tcp_cluster(r, r.service_cluster(ns, svc, port, f"Service {ns}/{svc}"))
    return proxy


def tcp_listeners(
    r: _Renderer, addresses: dict[tuple[str, str, int], int], access_log_path: str | None
) -> list[dict[str, Any]]:
    """One listener per TCP Service port that has a local address in ``addresses``."""
    tcp_vs = _mesh_tcp_vs(r)
    services = {(ns, svc): r.inputs.services[(ns, svc)] for ns, svc in r.inputs.services}
    out = []
    for (ns, svc, port), local_port in sorted(addresses.items()):
        if (ns, svc) not in services or port not in services[(ns, svc)].ports:
            continue
        name = f"tcp_{ns}_{svc}_{port}"
        proxy = _proxy(r, ns, svc, port, tcp_vs.get((ns, svc), []), name)
        if access_log_path:
            proxy["access_log"] = [
                {
                    "name": "envoy.access_loggers.file",
                    "typed_config": {
                        "@type": _FILE_LOG_TYPE,
                        "path": access_log_path,
                        "log_format": {
                            "text_format_source": {"inline_string": _TCP_LOG_FORMAT.replace("{listener}", name)}
                        },
                    },
                }
            ]
        out.append(
            {
                "@type": _LISTENER_TYPE,
                "name": name,
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": int(local_port)}},
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": proxy}]}],
            }
        )
    return out
