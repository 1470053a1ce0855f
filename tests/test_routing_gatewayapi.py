"""provider gatewayapi:v1 / gatewayapi:v1beta1: the HTTPRoute Flagger's Gateway API router writes, and what
``playground.support`` refuses by name for it (pure: no processes)."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from playground import routing, routing_gatewayapi, support
from playground.models import Canary

ROOT = Path(__file__).resolve().parent.parent


def gatewayapi_raw(provider: str = "gatewayapi:v1", **analysis: Any) -> dict[str, Any]:
    """The shipped backend Canary as a Gateway API canary: attached to Gateway gateway/public, host
    backend.example.com (the Istio-only service.retries removed)."""
    raw = yaml.safe_load((ROOT / "manifests" / "prod" / "backend" / "canary.yaml").read_text())
    raw["spec"]["provider"] = provider
    svc = raw["spec"]["service"]
    svc.pop("retries")
    svc["hosts"] = ["backend.example.com"]
    svc["gatewayRefs"] = [{"name": "public", "namespace": "gateway", "sectionName": "http"}]
    raw["spec"]["analysis"].update(analysis)
    return raw


def canary_of(raw: dict[str, Any]) -> Canary:
    return Canary.model_validate(raw)


def backends(rule: dict[str, Any]) -> list[tuple[str, int]]:
    return [(b["name"], b["weight"]) for b in rule["backendRefs"]]


def test_weighted_http_route_like_flagger():
    raw = gatewayapi_raw()
    raw["spec"]["service"].update(timeout="30s", backendTimeout="10s")
    assert support.refusal(raw) is None
    c = canary_of(raw)
    route = routing.route_object(c, 90, 10)
    assert routing.route_key(c) == ("gateway.networking.k8s.io/v1", "HTTPRoute", "prod", "backend")
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1" and route["kind"] == "HTTPRoute"
    assert route["metadata"]["name"] == "backend" and route["metadata"]["namespace"] == "prod"
    spec = route["spec"]
    assert spec["parentRefs"] == [{"name": "public", "namespace": "gateway", "sectionName": "http"}]
    assert spec["hostnames"] == ["backend.example.com"]
    [rule] = spec["rules"]
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]
    assert rule["backendRefs"][0] == {"group": "", "kind": "Service", "name": "backend-primary", "port": 9898,
                                      "weight": 90}  # fmt: skip
    assert backends(rule) == [("backend-primary", 90), ("backend-canary", 10)]
    assert rule["timeouts"] == {"request": "30s", "backendRequest": "10s"}
    assert routing.routes_in(c, route) == (90, 10, False)
    # v1beta1: the same object in the older API version.
    assert routing.route_object(canary_of(gatewayapi_raw("gatewayapi:v1beta1")), 100, 0)["apiVersion"] == (
        "gateway.networking.k8s.io/v1beta1"
    )


def test_bootstrap_writes_services_and_http_route_without_destination_rules():
    c = canary_of(gatewayapi_raw())
    target = yaml.safe_load((ROOT / "manifests" / "prod" / "backend" / "deployment.yaml").read_text())
    kinds = [o["kind"] for o in routing.bootstrap_objects(c, target)]
    assert kinds == ["HTTPRoute", "Deployment", "Service", "Service", "Service"]
    route = routing.bootstrap_objects(c, target)[0]
    assert routing.routes_in(c, route) == (100, 0, False)


def test_ab_testing_rule_then_primary_rule():
    c = canary_of(
        gatewayapi_raw(
            maxWeight=0,
            stepWeight=0,
            iterations=5,
            match=[
                {"headers": {"x-canary": {"exact": "insider"}}},
                {"headers": {"cookie": {"regex": "^(.*?;)?(canary=always)(;.*)?$"}}},
            ],
        )
    )
    c.spec.service.match = []
    route = routing.route_object(c, 0, 100)
    first, default = route["spec"]["rules"]
    # Flagger merges each analysis match into the default PathPrefix / match.
    prefix = {"path": {"type": "PathPrefix", "value": "/"}}
    assert first["matches"] == [
        {**prefix, "headers": [{"name": "x-canary", "type": "Exact", "value": "insider"}]},
        {**prefix, "headers": [{"name": "cookie", "type": "RegularExpression",
                                "value": "^(.*?;)?(canary=always)(;.*)?$"}]},
    ]  # fmt: skip
    assert backends(first) == [("backend-primary", 0), ("backend-canary", 100)]
    assert default["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]
    assert backends(default) == [("backend-primary", 100)]
    assert routing.routes_in(c, route) == (0, 100, False)


def test_service_match_headers_and_rewrite_become_matches_and_filters():
    raw = gatewayapi_raw()
    raw["spec"]["service"].update(
        match=[{"uri": {"prefix": "/api"}, "method": {"exact": "GET"}, "queryParams": {"v": {"regex": "2.*"}}}],
        headers={
            "request": {"set": {"x-b": "2", "x-a": "1"}, "remove": ["x-debug"]},
            "response": {"add": {"x-served-by": "backend"}},
        },  # fmt: skip
        rewrite={"uri": "/", "authority": "backend.internal"},
    )
    assert support.refusal(raw) is None
    [rule] = routing.route_object(canary_of(raw), 100, 0)["spec"]["rules"]
    assert rule["matches"] == [
        {
            "path": {"type": "PathPrefix", "value": "/api"},
            "method": "GET",
            "queryParams": [{"name": "v", "type": "RegularExpression", "value": "2.*"}],
        }
    ]
    assert rule["filters"] == [
        {
            "type": "RequestHeaderModifier",
            "requestHeaderModifier": {"set": [{"name": "x-a", "value": "1"}, {"name": "x-b", "value": "2"}],
                                      "remove": ["x-debug"]},  # fmt: skip
        },
        {"type": "ResponseHeaderModifier", "responseHeaderModifier": {"add": [{"name": "x-served-by", "value": "backend"}]}},
        {"type": "URLRewrite", "urlRewrite": {"hostname": "backend.internal",
                                              "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}},
    ]  # fmt: skip


def test_session_affinity_sticky_rule_like_flagger():
    c = canary_of(gatewayapi_raw(sessionAffinity={"cookieName": "flagger-cookie", "maxAge": 21600}))
    cookie = routing.session_cookie(c, "rev1")
    name, _, value = cookie.partition("=")
    route = routing.route_object(c, 80, 20, revision="rev1")
    sticky, weighted = route["spec"]["rules"]
    assert sticky["matches"] == [{"headers": [{"name": "Cookie", "type": "RegularExpression",
                                               "value": f".*{name}.*{value}.*"}]}]  # fmt: skip
    assert backends(sticky) == [("backend-primary", 0), ("backend-canary", 100)]
    assert backends(weighted) == [("backend-primary", 80), ("backend-canary", 20)]
    assert weighted["backendRefs"][1]["filters"] == [
        {"type": "ResponseHeaderModifier",
         "responseHeaderModifier": {"add": [{"name": "Set-Cookie", "value": f"{cookie}; Max-Age=21600"}]}}
    ]  # fmt: skip
    assert routing.routes_in(c, route) == (80, 20, False)
    # After the release: the sticky rule expires the cookie and routes like the weighted rule.
    done = routing.route_object(c, 100, 0, revision="rev1")
    sticky, weighted = done["spec"]["rules"]
    assert sticky["filters"][-1]["responseHeaderModifier"]["add"][0]["value"] == f"{cookie}; Max-Age=-1"
    assert backends(sticky) == backends(weighted) == [("backend-primary", 100), ("backend-canary", 0)]
    assert routing.routes_in(c, done) == (100, 0, False)


def test_apex_metadata_on_the_http_route():
    raw = gatewayapi_raw()
    raw["spec"]["service"]["apex"] = {"labels": {"team": "b"}, "annotations": {"note": "x"}}
    meta = routing.route_object(canary_of(raw), 100, 0)["metadata"]
    assert meta["labels"] == {"team": "b"} and meta["annotations"] == {"note": "x"}


@pytest.mark.parametrize(
    ("change", "field", "phrase"),
    [
        (lambda s: s["service"].pop("gatewayRefs"), "spec.service.gatewayRefs", "required for provider gatewayapi:v1"),
        (lambda s: s["service"].update(gateways=["istio-system/public-gateway"]), "spec.service.gateways",
         "Gateway API router does not write"),
        (lambda s: s["service"].update(retries={"attempts": 3}), "spec.service.retries", "does not write"),
        (lambda s: s["service"].update(trafficPolicy={"tls": {"mode": "DISABLE"}}), "spec.service.trafficPolicy",
         "does not write"),
        (lambda s: s["service"].update(match=[{"headers": {"x-a": {"prefix": "b"}}}]),
         "spec.service.match[0].headers.x-a.prefix", "exact value or regex only"),
        (lambda s: s["service"].update(match=[{"uri": {"suffix": ".png"}}]), "spec.service.match[0].uri.suffix",
         "cannot match uri by suffix"),
        (lambda s: s["analysis"].update(match=[{"sourceLabels": {"app": "x"}}], iterations=3),
         "spec.analysis.match[0].sourceLabels", "has no sourceLabels"),
        (lambda s: s["analysis"].update(mirror=True, iterations=3), "spec.analysis.mirror", "mirroring"),
        (lambda s: s["analysis"].update(sessionAffinity={"cookieName": "c", "primaryCookieName": "p"}),
         "spec.analysis.sessionAffinity.primaryCookieName", "canary sessions only"),
        (lambda s: s["service"].update(primary={"backendRef": {"name": "x"}}), "spec.service.primary.backendRef",
         "custom HTTPRoute backendRef"),
    ],
)  # fmt: skip
def test_what_flaggers_gateway_api_router_cannot_express_is_refused_by_name(change, field, phrase):
    raw = gatewayapi_raw()
    change(raw["spec"])
    text = support.refusal(raw)
    assert text is not None and f"{field}: " in text and phrase in text and "Fix: " in text, text


def test_gateway_api_fields_are_refused_for_other_providers():
    raw = gatewayapi_raw()
    raw["spec"]["provider"] = "istio"
    raw["spec"]["service"]["backendTimeout"] = "5s"
    text = support.refusal(raw)
    assert "spec.service.gatewayRefs: " in text and "use provider gatewayapi:v1" in text
    assert "spec.service.backendTimeout: " in text


def test_routes_in_reads_a_stored_route_whatever_the_rule_order():
    c = canary_of(gatewayapi_raw())
    route = copy.deepcopy(routing.route_object(c, 70, 30))
    assert routing_gatewayapi.routes_of(c, route) == (70, 30, False)
    assert routing_gatewayapi.routes_of(c, {"spec": {}}) == (100, 0, False)


GATEWAY_YAML = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: public, namespace: gateway}
spec:
  gatewayClassName: playground
  listeners: [{name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}]
"""


@pytest.mark.parametrize("with_gateway", [True, False])
def test_validate_checks_the_gateway_of_gatewayrefs(tmp_path, with_gateway):
    from playground import manifests as m

    tree = tmp_path / "m"
    shutil.copytree(ROOT / "manifests", tree)
    (tree / "prod" / "backend" / "canary.yaml").write_text(yaml.safe_dump(gatewayapi_raw()))
    if with_gateway:
        (tree / "gateway.yaml").write_text(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: gateway}\n---" + GATEWAY_YAML
        )
    findings = [f for f in m.validate(tree) if "gatewayRefs" in f.field]
    if with_gateway:
        assert findings == [] and not [f for f in m.validate(tree) if f.is_error]
    else:
        [f] = findings
        assert f.severity == m.WARNING and "Gateway gateway/public (gateway.networking.k8s.io) is not in" in str(f)


def test_local_backend_refuses_a_gatewayapi_canary_without_its_gateway_before_creating_anything(tmp_path):
    """On the local backend (its store, no processes), bootstrapping a gatewayapi canary whose Gateway is not there
    fails on the HTTPRoute, naming the Gateway and the fix, with nothing created; once the Gateway is applied the
    same bootstrap creates the HTTPRoute, the primary and the Services."""
    from playground.cluster.base import ClusterError
    from playground.controller import Controller
    from playground.local.cluster import LocalCluster

    cluster = LocalCluster(tmp_path / "home")
    try:
        for name in ("deployment.yaml", "hpa.yaml"):
            cluster.apply(yaml.safe_load((ROOT / "manifests" / "prod" / "backend" / name).read_text()))
        cluster.apply(gatewayapi_raw())
        ctl = Controller(cluster, log=lambda _l: None, sleep=lambda _s: None)
        canary = ctl.canary("prod/backend")
        with pytest.raises(ClusterError) as err:
            ctl.bootstrap(canary)
        text = str(err.value)
        assert "HTTPRoute prod/backend not applied" in text and "Gateway gateway/public" in text, text
        assert "add the Gateway to the manifests" in text
        assert cluster.get("apps/v1", "Deployment", "prod", "backend-primary") is None
        assert cluster.get(*routing.route_key(canary)) is None

        for doc in yaml.safe_load_all("apiVersion: v1\nkind: Namespace\nmetadata: {name: gateway}\n---" + GATEWAY_YAML):
            cluster.apply(doc)
        ctl.bootstrap(canary)
        assert cluster.get("apps/v1", "Deployment", "prod", "backend-primary") is not None
        assert routing.routes_in(canary, cluster.get(*routing.route_key(canary))) == (100, 0, False)
    finally:
        cluster.close()
