"""The object model of the Envoy renderer: the Istio and Kubernetes objects it reads (Services, VirtualServices,
DestinationRules, Gateways; Gateway API Gateways and HTTPRoutes, translated by
:mod:`~playground.local.envoy.gatewayapi`) collected into :class:`_Inputs`, and host / gateway reference parsing
(``svc``, ``svc.ns``, ``svc.ns.svc.cluster.local``, ``ns/gateway``). Pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from playground.local.envoy import gatewayapi
from playground.local.envoy.common import ISTIO_GROUP, RenderError
from playground.local.envoy.helpers import _label, _meta


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
    gw_api_gateways: dict[tuple[str, str], dict[str, Any]] = {}
    http_routes: list[dict[str, Any]] = []
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
        elif gatewayapi.is_gateway_api(obj, "Gateway"):
            gw_api_gateways[_meta(obj)] = obj
        elif gatewayapi.is_gateway_api(obj, "HTTPRoute"):
            http_routes.append(obj)
    # Gateway API: HTTPRoutes join the gateway-bound VirtualServices in the same route model (one renderer).
    vss.extend(gatewayapi.as_virtual_services(http_routes, gw_api_gateways))
    gateways.update(gw_api_gateways)
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
