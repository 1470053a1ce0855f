"""Top level: :func:`render` assembles the whole :class:`~playground.local.envoy.common.EnvoyConfig` (bootstrap,
the two listeners with RDS from files, clusters, route tables) from Istio objects and ready endpoints. Pure.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from playground.local.envoy.common import (
    _ACCESS_LOG_FORMAT,
    _CLUSTER_TYPE,
    _CORS_FILTER_TYPE,
    _FAULT_TYPE,
    _FILE_LOG_TYPE,
    _HCM_TYPE,
    _LISTENER_TYPE,
    _ROUTER_TYPE,
    CDS_FILE,
    CONFIG_DIR_PLACEHOLDER,
    GATEWAY_ROUTES,
    LDS_FILE,
    MESH_ROUTES,
    EnvoyConfig,
    ServiceEndpoints,
    _rds_file,
)
from playground.local.envoy.renderer import _Renderer
from playground.local.envoy.routes import _mesh_and_gateway
from playground.local.envoy.tcp import tcp_listeners


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
    tcp_addresses: dict[tuple[str, str, int], int] | None = None,
) -> EnvoyConfig:
    """Render Services, VirtualServices, DestinationRules and Gateways into an Envoy configuration.

    ``objects``: Kubernetes dicts (v1 Service, networking.istio.io VirtualService/DestinationRule/Gateway of any
    version; anything else is ignored). ``endpoints``: ready endpoints per (namespace, Service name).
    ``extra_upstreams``: non-Service names reachable through the mesh, ``"host:port"`` (or ``"host"`` for port
    80) -> local (address, port), e.g. ``{"prometheus.istio-system:9090": ("127.0.0.1", 9091)}``.
    ``tcp_addresses``: the local port of each TCP Service port ``(namespace, service, port)``: one TCP listener
    each (see :mod:`~playground.local.envoy.tcp`).
    Raises ``RenderError`` for anything that cannot be rendered faithfully.
    """
    r = _Renderer(list(objects), dict(endpoints), dict(extra_upstreams or {}))
    mesh_routes, gateway_routes = _mesh_and_gateway(r)
    listeners = [
        _listener(GATEWAY_ROUTES, gateway_port, forward_proxy=False, cors=r.uses_cors, access_log_path=access_log_path),
        _listener(MESH_ROUTES, mesh_port, forward_proxy=True, cors=r.uses_cors, access_log_path=access_log_path),
        *tcp_listeners(r, dict(tcp_addresses or {}), access_log_path),
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
