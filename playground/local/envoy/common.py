"""What every part of the Envoy renderer shares: the rendered configuration (:class:`EnvoyConfig`), the
renderer's input type (:class:`ServiceEndpoints`), its error (:class:`RenderError`), the file names of the
configuration directory (``CONFIG_DIR_PLACEHOLDER``, bootstrap / LDS / CDS / RDS files), the xDS type URLs and
Istio's defaults (retry policy, unlimited circuit breakers), and :func:`cluster_name`. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from playground.errors import PlaygroundError

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
