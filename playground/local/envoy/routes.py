"""Route tables: the ``gateway`` and ``mesh`` RouteConfigurations. The gateway gets one virtual host per
VirtualService host bound to a Gateway; the mesh gets one virtual host per Kubernetes Service port with the
in-cluster domains (``svc.ns``, ``svc.ns.svc``, ``svc.ns.svc.cluster.local``, with ports), routed by the
mesh VirtualServices or straight to the Service's endpoints. Pure.
"""

from __future__ import annotations

from typing import Any

from playground.local.envoy.common import _ROUTES_TYPE, GATEWAY_ROUTES, MESH_ROUTES, RenderError
from playground.local.envoy.helpers import _check_keys, _label, _meta
from playground.local.envoy.inputs import _gateway_ref, _split_host
from playground.local.envoy.renderer import _finish_route, _Renderer


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
