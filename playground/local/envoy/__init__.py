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

Modules (one per part; every public name is re-exported here, so ``from playground.local.envoy import X``
keeps working): :mod:`~playground.local.envoy.common` (types, file names, constants),
:mod:`~playground.local.envoy.helpers`, :mod:`~playground.local.envoy.inputs` (the object model),
:mod:`~playground.local.envoy.policies` (match / policies), :mod:`~playground.local.envoy.renderer`,
:mod:`~playground.local.envoy.routes` (route tables), :mod:`~playground.local.envoy.assemble` (``render``),
:mod:`~playground.local.envoy.files`, :mod:`~playground.local.envoy.tcp` (TCP services: one TCP listener per TCP
Service port, tcp_proxy with weighted clusters).
"""

from __future__ import annotations

from playground.local.envoy.assemble import render as render
from playground.local.envoy.common import BOOTSTRAP_FILE as BOOTSTRAP_FILE
from playground.local.envoy.common import CDS_FILE as CDS_FILE
from playground.local.envoy.common import CONFIG_DIR_PLACEHOLDER as CONFIG_DIR_PLACEHOLDER
from playground.local.envoy.common import GATEWAY_ROUTES as GATEWAY_ROUTES
from playground.local.envoy.common import ISTIO_GROUP as ISTIO_GROUP
from playground.local.envoy.common import LDS_FILE as LDS_FILE
from playground.local.envoy.common import MESH_ROUTES as MESH_ROUTES
from playground.local.envoy.common import EnvoyConfig as EnvoyConfig
from playground.local.envoy.common import RenderError as RenderError
from playground.local.envoy.common import ServiceEndpoints as ServiceEndpoints
from playground.local.envoy.common import cluster_name as cluster_name
from playground.local.envoy.files import applied_versions as applied_versions
from playground.local.envoy.files import envoy_args as envoy_args
from playground.local.envoy.files import envoy_binary as envoy_binary
from playground.local.envoy.files import validate_config as validate_config
from playground.local.envoy.files import versions as versions
from playground.local.envoy.files import wait_until_applied as wait_until_applied
from playground.local.envoy.files import write_config as write_config
from playground.local.envoy.tcp import is_tcp_port as is_tcp_port
from playground.local.envoy.tcp import tcp_service_ports as tcp_service_ports

__all__ = [
    "CONFIG_DIR_PLACEHOLDER",
    "EnvoyConfig",
    "RenderError",
    "ServiceEndpoints",
    "cluster_name",
    "envoy_args",
    "envoy_binary",
    "is_tcp_port",
    "tcp_service_ports",
    "applied_versions",
    "render",
    "validate_config",
    "versions",
    "wait_until_applied",
    "write_config",
]
