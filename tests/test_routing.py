"""Pure Flagger object generation (playground.routing)."""

import pytest

from playground import routing
from playground.models import Canary


def make_canary(**analysis):
    return Canary.model_validate(
        {
            "metadata": {"name": "backend", "namespace": "prod"},
            "spec": {
                "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "backend"},
                "service": {"port": 9898},
                "analysis": {"interval": "15s", "stepWeight": 5, "maxWeight": 50, **analysis},
            },
        }
    )


TARGET = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "backend", "namespace": "prod", "labels": {"app": "backend"}},
    "spec": {
        "replicas": 2,
        "strategy": {"type": "RollingUpdate"},
        "selector": {"matchLabels": {"app": "backend"}},
        "template": {
            "metadata": {"labels": {"app": "backend"}},
            "spec": {
                "containers": [
                    {
                        "name": "backend",
                        "image": "ghcr.io/stefanprodan/podinfo:6.7.0",
                        "envFrom": [{"configMapRef": {"name": "backend-env"}}],
                        "env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "token", "key": "t"}}}],
                    }
                ],
                "volumes": [{"name": "cfg", "configMap": {"name": "untracked"}}],
            },
        },
    },
}
CM = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "backend-env", "namespace": "prod"},
    "data": {"A": "1"},
}
SECRET = {
    "apiVersion": "v1",
    "kind": "Secret",
    "metadata": {"name": "token", "namespace": "prod"},
    "data": {"t": "eA=="},
}
UNTRACKED = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "untracked", "namespace": "prod", "annotations": {"flagger.app/config-tracking": "disabled"}},
    "data": {"x": "1"},
}


def test_primary_deployment_rewrites_selector_and_tracked_configs():
    prim = routing.primary_deployment(make_canary(), TARGET, [CM, SECRET, UNTRACKED])
    assert prim["metadata"]["name"] == "backend-primary"
    assert prim["spec"]["selector"] == {"matchLabels": {"app": "backend-primary"}}
    assert prim["spec"]["template"]["metadata"]["labels"] == {"app": "backend-primary"}
    assert prim["spec"]["strategy"] == {"type": "RollingUpdate"}
    c = prim["spec"]["template"]["spec"]["containers"][0]
    assert c["envFrom"][0]["configMapRef"]["name"] == "backend-env-primary"
    assert c["env"][0]["valueFrom"]["secretKeyRef"]["name"] == "token-primary"
    # opted-out config keeps its name
    assert prim["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"] == "untracked"
    # the target itself is untouched
    assert TARGET["spec"]["template"]["spec"]["containers"][0]["envFrom"][0]["configMapRef"]["name"] == "backend-env"


def test_services_select_primary_and_canary_pods():
    apex, prim, can = routing.services(make_canary(), TARGET)
    assert [s["metadata"]["name"] for s in (apex, prim, can)] == ["backend", "backend-primary", "backend-canary"]
    assert apex["spec"]["selector"] == {"app": "backend-primary"}
    assert prim["spec"]["selector"] == {"app": "backend-primary"}
    assert can["spec"]["selector"] == {"app": "backend"}
    assert apex["spec"]["ports"][0]["port"] == 9898


def test_revision_changes_with_template_and_tracked_config_only():
    base = routing.revision(TARGET, [CM, SECRET, UNTRACKED])
    scaled = {**TARGET, "spec": {**TARGET["spec"], "replicas": 4}}
    assert routing.revision(scaled, [CM, SECRET, UNTRACKED]) == base
    changed_cm = {**CM, "data": {"A": "2"}}
    assert routing.revision(TARGET, [changed_cm, SECRET, UNTRACKED]) != base
    changed_untracked = {**UNTRACKED, "data": {"x": "2"}}
    assert routing.revision(TARGET, [CM, SECRET, changed_untracked]) == base


def test_weighted_virtual_service_and_mirror():
    c = make_canary(mirror=True, mirrorWeight=50)
    vs = routing.virtual_service(c, 90, 10)
    assert vs["spec"]["hosts"] == ["backend"]
    assert vs["spec"]["gateways"] == ["mesh"]
    (route,) = vs["spec"]["http"]
    assert route["route"] == [
        {"destination": {"host": "backend-primary"}, "weight": 90},
        {"destination": {"host": "backend-canary"}, "weight": 10},
    ]
    assert "mirror" not in route
    assert routing.routes_of(c, vs) == (90, 10, False)
    mirrored = routing.virtual_service(c, 100, 0, mirror=True)
    assert mirrored["spec"]["http"][0]["mirror"] == {"host": "backend-canary"}
    assert mirrored["spec"]["http"][0]["mirrorPercentage"] == {"value": 50.0}
    assert routing.routes_of(c, mirrored) == (100, 0, True)


def test_ab_virtual_service_has_match_route_then_primary_default():
    c = make_canary(
        iterations=10,
        match=[
            {"headers": {"user-agent": {"regex": ".*Firefox.*"}}},
            {"headers": {"cookie": {"regex": "^(.*?;)?(type=insider)(;.*)?$"}}},
        ],
    )
    vs = routing.virtual_service(c, 0, 100)
    first, default = vs["spec"]["http"]
    assert first["match"] == [
        {"headers": {"user-agent": {"regex": ".*Firefox.*"}}},
        {"headers": {"cookie": {"regex": "^(.*?;)?(type=insider)(;.*)?$"}}},
    ]
    assert [d["weight"] for d in first["route"]] == [0, 100]
    assert "match" not in default and len(default["route"]) == 1
    assert default["route"][0]["destination"]["host"] == "backend-primary"


def test_gateway_bound_service_keeps_star_host_and_gateway():
    c = Canary.model_validate(
        {
            "metadata": {"name": "frontend", "namespace": "prod"},
            "spec": {
                "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "frontend"},
                "service": {
                    "port": 9898,
                    "hosts": ["*"],
                    "gateways": ["public-gateway.istio-system.svc.cluster.local"],
                },
            },
        }
    )
    vs = routing.virtual_service(c, 100, 0)
    assert vs["spec"]["hosts"] == ["*"]
    assert vs["spec"]["gateways"] == ["public-gateway.istio-system.svc.cluster.local"]


def test_invalid_weights_and_selector_are_errors():
    with pytest.raises(routing.RoutingError, match="sum to 100"):
        routing.virtual_service(make_canary(), 90, 20)
    bad = {**TARGET, "spec": {**TARGET["spec"], "selector": {"matchLabels": {"tier": "x"}}}}
    with pytest.raises(routing.RoutingError, match="matchLabels has none"):
        routing.primary_deployment(make_canary(), bad)


def test_apex_primary_canary_metadata_on_services_and_virtual_service():
    """service.apex/primary/canary labels and annotations, as Flagger's Istio e2e test checks them: on the
    matching Service (its selector label still set to its own name) and, for apex, on the VirtualService."""
    canary = Canary.model_validate(
        {
            "metadata": {"name": "backend", "namespace": "prod"},
            "spec": {
                "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "backend"},
                "service": {
                    "port": 9898,
                    "apex": {"annotations": {"test": "annotations-test"}, "labels": {"test": "labels-test"}},
                    "primary": {"labels": {"tier": "blue", "app": "ignored"}},
                    "canary": {"annotations": {"note": "green"}},
                },
                "analysis": {"interval": "15s", "stepWeight": 5, "maxWeight": 50},
            },
        }
    )
    apex, primary, canary_svc = routing.services(canary, TARGET)
    assert apex["metadata"]["labels"] == {"test": "labels-test", "app": "backend"}
    assert apex["metadata"]["annotations"] == {"test": "annotations-test"}
    assert apex["spec"]["selector"] == {"app": "backend-primary"}
    assert primary["metadata"]["labels"] == {"tier": "blue", "app": "backend-primary"}
    assert "annotations" not in primary["metadata"]
    assert canary_svc["metadata"]["annotations"] == {"note": "green"}
    vs = routing.virtual_service(canary, 100, 0)
    assert vs["metadata"]["labels"] == {"test": "labels-test"}
    assert vs["metadata"]["annotations"] == {"test": "annotations-test"}
    # Without custom metadata the objects are unchanged (the golden files of the kubernetes backend).
    plain = make_canary()
    assert "annotations" not in routing.services(plain, TARGET)[0]["metadata"]
    assert set(routing.virtual_service(plain, 100, 0)["metadata"]) == {"name", "namespace", "ownerReferences"}


def test_session_affinity_routes_like_flagger():
    """analysis.sessionAffinity (Flagger's Istio e2e canary): while the canary has traffic, requests with the
    release's cookie go to the canary, the canary's responses set it (Max-Age = maxAge), requests with the
    primary cookie stay on the primary; at weight 0 the primary's responses expire it. The weights read back
    from the VirtualService are the weighted route's."""
    canary = make_canary(sessionAffinity={"cookieName": "canary-flagger-cookie", "primaryCookieName": "primary-c"})
    cookie = routing.session_cookie(canary, "rev1")
    assert cookie.startswith("canary-flagger-cookie=") and cookie != routing.session_cookie(canary, "rev2")
    vs = routing.virtual_service(canary, 90, 10, revision="rev1")
    sticky, sticky_primary, weighted = vs["spec"]["http"]
    assert sticky["name"] == routing.STICKY_ROUTE
    assert sticky["match"] == [{"headers": {"cookie": {"regex": f".*{cookie}.*"}}}]
    assert [(d["destination"]["host"], d["weight"]) for d in sticky["route"]] == [
        ("backend-primary", 0),
        ("backend-canary", 100),
    ]
    value = cookie.partition("=")[2]
    assert sticky_primary["match"] == [{"headers": {"cookie": {"regex": f".*primary-c={value}.*"}}}]
    assert [d["weight"] for d in sticky_primary["route"]] == [100, 0]
    primary_dest, canary_dest = weighted["route"]
    assert canary_dest["weight"] == 10
    assert canary_dest["headers"] == {"response": {"add": {"Set-Cookie": f"{cookie}; Max-Age=86400"}}}
    assert primary_dest["headers"] == {"response": {"add": {"Set-Cookie": f"primary-c={value}; Max-Age=86400"}}}
    assert routing.routes_of(canary, vs) == (90, 10, False)
    done = routing.virtual_service(canary, 100, 0, revision="rev1")
    (only,) = done["spec"]["http"]
    assert only["route"][0]["headers"] == {"response": {"add": {"Set-Cookie": f"{cookie}; Max-Age=-1"}}}
    assert routing.routes_of(canary, done) == (100, 0, False)
    # Before any release (bootstrap) there is no cookie: the plain weighted route.
    assert "headers" not in routing.virtual_service(canary, 100, 0)["spec"]["http"][0]["route"][0]
