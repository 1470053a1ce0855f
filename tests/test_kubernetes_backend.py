"""The kubernetes backend with the real ``kubernetes`` client against the protocol-level fake API server.

Golden files under tests/data/k8s/ hold the objects the bootstrap and a weight change must produce; they are
compared, never rewritten, unless UPDATE_GOLDEN=1 is set.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from playground import routing
from playground.cluster.base import ClusterError, Conflict, NotFound
from playground.cluster.kubernetes import DeploymentStatus, KubernetesCluster
from playground.models import Canary, CanaryStatus, Phase
from tests.support.fake_kube import FakeKube

ROOT = Path(__file__).resolve().parent.parent
BACKEND = ROOT / "manifests" / "prod" / "backend"
GOLDEN = Path(__file__).resolve().parent / "data" / "k8s"
UPDATE_GOLDEN = os.environ.get("UPDATE_GOLDEN") == "1"

VS_PATH = "/apis/networking.istio.io/v1beta1/namespaces/prod/virtualservices"
CANARY_PATH = "/apis/flagger.app/v1beta1/namespaces/prod/canaries/backend"
DEPLOY_PATH = "/apis/apps/v1/namespaces/prod/deployments"


# ------------------------------------------------------------------------------------------ fixtures


def _load(name: str) -> dict[str, Any]:
    return yaml.safe_load((BACKEND / name).read_text())


@pytest.fixture
def manifests() -> dict[str, dict[str, Any]]:
    """The shipped backend Canary, Deployment and HPA (as the GitOps sync applies them)."""
    return {"canary": _load("canary.yaml"), "deployment": _load("deployment.yaml"), "hpa": _load("hpa.yaml")}


@pytest.fixture
def kube():
    with FakeKube() as fake:
        yield fake


@pytest.fixture
def cluster(kube: FakeKube):
    api = kube.api_client()
    c = KubernetesCluster(api_client=api, sleep=lambda s: None)
    yield c
    api.close()


def _seed(kube: FakeKube, manifests: dict[str, dict[str, Any]]) -> tuple[Canary, dict, dict]:
    """Store the synced Canary, target and HPA; return (canary model, stored target, stored hpa)."""
    canary_obj = kube.seed(manifests["canary"])
    target = kube.seed(manifests["deployment"])
    hpa = kube.seed(manifests["hpa"])
    return Canary.model_validate({k: v for k, v in canary_obj.items() if k != "status"}), target, hpa


def _bootstrap(
    cluster: KubernetesCluster, canary: Canary, target: dict, hpa: dict | None, configs: list[dict] = ()
) -> list[dict]:
    # The controller's replica rule: max(target replicas, HPA minReplicas).
    replicas = max(target["spec"].get("replicas") or 1, (hpa or {}).get("spec", {}).get("minReplicas", 1))
    return [
        cluster.apply(o) for o in routing.bootstrap_objects(canary, target, hpa=hpa, configs=configs, replicas=replicas)
    ]


def _normalized(objs: list[dict]) -> list[dict]:
    """Stored objects without the fields that change from run to run (resourceVersion, timestamps)."""
    out = []
    for obj in objs:
        obj = copy.deepcopy(obj)
        obj["metadata"].pop("resourceVersion", None)
        obj["metadata"].pop("creationTimestamp", None)
        out.append(obj)
    return out


def _check_golden(name: str, objs: list[dict]) -> None:
    path = GOLDEN / name
    text = yaml.safe_dump_all(_normalized(objs), sort_keys=True, default_flow_style=False)
    if UPDATE_GOLDEN:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"golden file {path} is missing; create it with UPDATE_GOLDEN=1 and review it"
    expected = list(yaml.safe_load_all(path.read_text()))
    assert _normalized(objs) == expected, f"objects differ from {path} (UPDATE_GOLDEN=1 rewrites it; review the diff)"


def _key(obj: dict) -> tuple[str, str, str]:
    return obj["apiVersion"], obj["kind"], obj["metadata"]["name"]


# ------------------------------------------------------------------------------------------ bootstrap


def test_bootstrap_creates_exactly_the_golden_objects(kube: FakeKube, cluster: KubernetesCluster, manifests):
    canary, target, hpa = _seed(kube, manifests)
    seeded = {_key(o): o["metadata"]["resourceVersion"] for o in kube.objects()}
    kube.clear_requests()

    _bootstrap(cluster, canary, target, hpa)

    created = [o for o in kube.objects("prod") if _key(o) not in seeded]
    assert sorted((o["kind"], o["metadata"]["name"]) for o in created) == [
        ("Deployment", "backend-primary"),
        ("DestinationRule", "backend-canary"),
        ("DestinationRule", "backend-primary"),
        ("HorizontalPodAutoscaler", "backend-primary"),
        ("Service", "backend"),
        ("Service", "backend-canary"),
        ("Service", "backend-primary"),
        ("VirtualService", "backend"),
    ]
    # Every generated object is owned by the Canary as stored in the cluster (uid filled in by the backend).
    canary_uid = kube.object("flagger.app/v1beta1", "Canary", "prod", "backend")["metadata"]["uid"]
    for obj in created:
        (ref,) = obj["metadata"]["ownerReferences"]
        assert ref == {
            "apiVersion": "flagger.app/v1beta1",
            "kind": "Canary",
            "name": "backend",
            "uid": canary_uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    _check_golden("bootstrap-backend.yaml", created)

    # Nothing else was written: one read of the Canary (for the owner uid), then one create per object.
    methods = [(r.method, r.path) for r in kube.requests]
    assert methods[0] == ("GET", CANARY_PATH)
    assert all(m == "POST" for m, _ in methods[1:]) and len(methods) == 1 + len(created)
    assert all(r.status in (200, 201) for r in kube.requests)
    assert {_key(o): o["metadata"]["resourceVersion"] for o in kube.objects() if _key(o) in seeded} == seeded


def test_bootstrap_is_idempotent_and_keeps_cluster_owned_fields(kube, cluster, manifests):
    canary, target, hpa = _seed(kube, manifests)
    first = {_key(o): o for o in _bootstrap(cluster, canary, target, hpa)}
    cluster.scale("prod", "backend-primary", 3)  # the HPA scaled the primary meanwhile
    second = {_key(o): o for o in _bootstrap(cluster, canary, target, hpa)}
    for key, obj in second.items():
        assert obj["metadata"]["uid"] == first[key]["metadata"]["uid"], f"{key} was recreated instead of replaced"
    svc = second[("v1", "Service", "backend")]
    assert svc["spec"]["clusterIP"] == first[("v1", "Service", "backend")]["spec"]["clusterIP"]
    # The bootstrap objects set replicas explicitly (2), so a re-bootstrap resets what the HPA did: that is the
    # controller's business (it passes the current count on promotion); objects without replicas keep theirs.
    plain = copy.deepcopy(kube.object("apps/v1", "Deployment", "prod", "backend"))
    plain["spec"].pop("replicas")
    cluster.scale("prod", "backend", 4)
    assert cluster.apply(plain)["spec"]["replicas"] == 4


# ------------------------------------------------------------------------------------------ traffic


def test_weight_change_touches_only_the_virtual_service(kube, cluster, manifests):
    canary, target, hpa = _seed(kube, manifests)
    _bootstrap(cluster, canary, target, hpa)
    before = {_key(o): o["metadata"]["resourceVersion"] for o in kube.objects()}
    kube.clear_requests()

    cluster.apply(routing.virtual_service(canary, 90, 10))

    assert all(r.path.startswith(VS_PATH) for r in kube.requests), kube.requests
    assert [r.method for r in kube.requests] == ["POST", "GET", "PUT"]
    assert [r.status for r in kube.requests] == [409, 200, 200]
    put = kube.requests[-1]
    # The generated client sends custom objects without a Content-Type; the API server reads them as JSON.
    assert put.path == f"{VS_PATH}/backend" and put.content_type in ("", "application/json")
    vs_key = ("networking.istio.io/v1beta1", "VirtualService", "backend")
    assert put.body["metadata"]["resourceVersion"] == before[vs_key]
    after = {_key(o): o["metadata"]["resourceVersion"] for o in kube.objects()}
    changed = {k for k in after if after[k] != before.get(k)}
    assert changed == {("networking.istio.io/v1beta1", "VirtualService", "backend")}
    vs = kube.object("networking.istio.io/v1beta1", "VirtualService", "prod", "backend")
    assert routing.routes_of(canary, vs) == (90, 10, False)
    assert vs["metadata"]["generation"] == 2
    _check_golden("virtualservice-backend-90-10.yaml", [vs])


def test_rollback_restores_primary_routes_and_scales_canary_to_zero(kube, cluster, manifests):
    canary, target, hpa = _seed(kube, manifests)
    _bootstrap(cluster, canary, target, hpa)
    cluster.scale("prod", "backend", 2)
    cluster.apply(routing.virtual_service(canary, 50, 50))
    kube.clear_requests()

    cluster.apply(routing.virtual_service(canary, 100, 0))
    cluster.scale("prod", "backend", 0)

    vs = kube.object("networking.istio.io/v1beta1", "VirtualService", "prod", "backend")
    assert routing.routes_of(canary, vs) == (100, 0, False)
    scale = kube.requests[-1]
    assert (scale.method, scale.path, scale.status) == ("PATCH", f"{DEPLOY_PATH}/backend/scale", 200)
    assert scale.content_type == "application/merge-patch+json" and scale.body == {"spec": {"replicas": 0}}
    assert kube.object("apps/v1", "Deployment", "prod", "backend")["spec"]["replicas"] == 0
    # The primary was not touched.
    assert not [r for r in kube.requests if "backend-primary" in r.path]


def test_promotion_replaces_primary_with_canary_spec_and_copies_configs(kube, cluster, manifests):
    # A target that reads a ConfigMap: the primary gets a -primary copy of it.
    dep = copy.deepcopy(manifests["deployment"])
    dep["spec"]["template"]["spec"]["containers"][0]["envFrom"] = [{"configMapRef": {"name": "backend-env"}}]
    manifests = {**manifests, "deployment": dep}
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "backend-env", "namespace": "prod"},
        "data": {"PODINFO_UI_MESSAGE": "v1"},
    }
    canary, target, hpa = _seed(kube, manifests)
    configs = [kube.seed(config)]
    _bootstrap(cluster, canary, target, hpa, configs)
    primary_before = kube.object("apps/v1", "Deployment", "prod", "backend-primary")
    cluster.scale("prod", "backend-primary", 3)

    # The GitOps sync brings a new image and new config data.
    new_target = copy.deepcopy(kube.object("apps/v1", "Deployment", "prod", "backend"))
    new_target["spec"]["template"]["spec"]["containers"][0]["image"] = "ghcr.io/stefanprodan/podinfo:6.7.1"
    new_target = cluster.apply(new_target)
    new_config = copy.deepcopy(configs[0])
    new_config["data"]["PODINFO_UI_MESSAGE"] = "v2"
    new_config = cluster.apply(new_config)
    kube.clear_requests()

    # Promotion, as the controller does it.
    for obj in routing.primary_configs(new_target, [new_config]):
        cluster.apply(obj)
    current = cluster.get("apps/v1", "Deployment", "prod", "backend-primary")
    cluster.apply(routing.primary_deployment(canary, new_target, [new_config], replicas=current["spec"]["replicas"]))
    cluster.apply(routing.primary_hpa(canary, hpa))

    primary = kube.object("apps/v1", "Deployment", "prod", "backend-primary")
    assert primary["metadata"]["uid"] == primary_before["metadata"]["uid"]  # replaced, not recreated
    assert primary["metadata"]["generation"] == primary_before["metadata"]["generation"] + 2  # scale + template
    assert primary["spec"]["replicas"] == 3
    container = primary["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "ghcr.io/stefanprodan/podinfo:6.7.1"
    assert container["envFrom"] == [{"configMapRef": {"name": "backend-env-primary"}}]
    assert primary["spec"]["template"]["metadata"]["labels"] == {"app": "backend-primary"}
    assert primary["spec"]["selector"] == {"matchLabels": {"app": "backend-primary"}}
    copied = kube.object("v1", "ConfigMap", "prod", "backend-env-primary")
    assert copied["data"] == {"PODINFO_UI_MESSAGE": "v2"}
    # Each object: create (409 AlreadyExists), read, replace with the read resourceVersion; nothing deleted.
    puts = [r.path for r in kube.requests if r.method == "PUT"]
    assert puts == [
        "/api/v1/namespaces/prod/configmaps/backend-env-primary",
        f"{DEPLOY_PATH}/backend-primary",
        "/apis/autoscaling/v2/namespaces/prod/horizontalpodautoscalers/backend-primary",
    ]
    assert not [r for r in kube.requests if r.method in ("DELETE", "PATCH")]
    assert all(r.method == "POST" for r in kube.requests if r.status == 409)


# ------------------------------------------------------------------------------------------ errors


def test_conflict_on_replace_is_retried(kube, cluster, manifests):
    canary, target, hpa = _seed(kube, manifests)
    _bootstrap(cluster, canary, target, hpa)
    kube.fail(f"{VS_PATH}/backend", 409, method="PUT")
    kube.clear_requests()

    cluster.apply(routing.virtual_service(canary, 80, 20))

    assert [(r.method, r.status) for r in kube.requests] == [
        ("POST", 409),
        ("GET", 200),
        ("PUT", 409),
        ("GET", 200),
        ("PUT", 200),
    ]
    vs = kube.object("networking.istio.io/v1beta1", "VirtualService", "prod", "backend")
    assert routing.routes_of(canary, vs) == (80, 20, False)


def test_genuinely_stale_resource_version_is_reread(kube, cluster, manifests):
    canary, target, hpa = _seed(kube, manifests)
    _bootstrap(cluster, canary, target, hpa)
    # Another writer changes the VirtualService right after our read: our PUT carries a stale resourceVersion.
    kube.after(
        f"{VS_PATH}/backend",
        lambda k: k.touch("networking.istio.io/v1beta1", "VirtualService", "prod", "backend"),
        method="GET",
    )
    kube.clear_requests()

    cluster.apply(routing.virtual_service(canary, 70, 30))

    puts = [r for r in kube.requests if r.method == "PUT"]
    assert [r.status for r in puts] == [409, 200]
    assert puts[0].body["metadata"]["resourceVersion"] != puts[1].body["metadata"]["resourceVersion"]


def test_persistent_conflict_gives_up_with_a_clear_error(kube, cluster, manifests):
    canary, target, hpa = _seed(kube, manifests)
    _bootstrap(cluster, canary, target, hpa)
    kube.fail(f"{VS_PATH}/backend", 409, method="PUT", times=100)
    with pytest.raises(Conflict) as err:
        cluster.apply(routing.virtual_service(canary, 60, 40))
    msg = str(err.value)
    assert "VirtualService prod/backend" in msg and "409" in msg and "gave up" in msg


def test_forbidden_names_the_object_and_what_to_grant(kube, cluster, manifests):
    canary, target, hpa = _seed(kube, manifests)
    kube.fail(VS_PATH, 403, method="POST")
    with pytest.raises(ClusterError) as err:
        cluster.apply(routing.virtual_service(canary, 100, 0))
    msg = str(err.value)
    assert "VirtualService prod/backend" in msg
    assert "HTTP 403 Forbidden" in msg
    assert 'User "system:serviceaccount:ci:pipeline" cannot create resource "virtualservices"' in msg
    assert "grant the pipeline's service account create on virtualservices.networking.istio.io in namespace prod" in msg


def test_forbidden_status_update_names_the_subresource(kube, cluster, manifests):
    _seed(kube, manifests)
    kube.fail(f"{CANARY_PATH}/status", 403, method="PUT")
    with pytest.raises(ClusterError) as err:
        cluster.set_canary_status("prod", "backend", CanaryStatus(phase=Phase.Progressing))
    assert "grant the pipeline's service account update on canaries.flagger.app/status" in str(err.value)


def test_missing_objects(kube, cluster, manifests):
    _seed(kube, manifests)
    assert cluster.get("v1", "Service", "prod", "nope") is None
    assert cluster.get("networking.istio.io/v1beta1", "VirtualService", "prod", "nope") is None
    assert cluster.delete("apps/v1", "Deployment", "prod", "nope") is False
    assert cluster.get_canary_status("prod", "nope") is None
    with pytest.raises(NotFound) as err:
        cluster.scale("prod", "nope", 1)
    assert "Deployment prod/nope" in str(err.value) and "404" in str(err.value)
    with pytest.raises(NotFound):
        cluster.workload_status("prod", "nope")
    with pytest.raises(NotFound):
        cluster.set_canary_status("prod", "nope", CanaryStatus())


def test_missing_crd_is_reported_not_mistaken_for_a_missing_object(kube, cluster):
    kube.uninstall("networking.istio.io", "virtualservices")
    with pytest.raises(ClusterError) as err:
        cluster.get("networking.istio.io/v1beta1", "VirtualService", "prod", "backend")
    assert "install its CRD" in str(err.value)
    assert cluster.list("networking.istio.io/v1beta1", "VirtualService") == []


def test_invalid_object_gives_a_clear_error(kube, cluster, manifests):
    _seed(kube, manifests)
    broken = copy.deepcopy(manifests["deployment"])
    broken["metadata"]["name"] = "broken"
    broken["spec"]["template"]["metadata"]["labels"] = {"app": "other"}
    with pytest.raises(ClusterError) as err:
        cluster.apply(broken)
    msg = str(err.value)
    assert "Deployment prod/broken" in msg and "HTTP 422 Invalid" in msg
    assert "spec.template.metadata.labels" in msg and "`selector` does not match template `labels`" in msg
    assert "fix it in the manifest" in msg

    bad_name = copy.deepcopy(manifests["deployment"])
    bad_name["metadata"]["name"] = "Backend_Primary"
    with pytest.raises(ClusterError) as err:
        cluster.apply(bad_name)
    assert 'metadata.name: Invalid value: "Backend_Primary"' in str(err.value)
    assert kube.object("apps/v1", "Deployment", "prod", "broken") is None


def test_owner_reference_dropped_when_the_canary_is_not_in_the_cluster(kube, cluster, manifests):
    canary = Canary.model_validate(manifests["canary"])
    stored = cluster.apply(routing.virtual_service(canary, 100, 0))
    assert "ownerReferences" not in stored["metadata"]


def test_owner_uid_follows_a_recreated_canary(kube, cluster, manifests):
    canary, target, hpa = _seed(kube, manifests)
    cluster.apply(routing.virtual_service(canary, 100, 0))
    cluster.delete("flagger.app/v1beta1", "Canary", "prod", "backend")  # garbage-collects the VirtualService
    assert kube.object("networking.istio.io/v1beta1", "VirtualService", "prod", "backend") is None
    new_uid = kube.seed(manifests["canary"])["metadata"]["uid"]
    cluster.get("flagger.app/v1beta1", "Canary", "prod", "backend")  # the controller reads its Canary every tick
    vs = cluster.apply(routing.virtual_service(canary, 100, 0))
    assert vs["metadata"]["ownerReferences"][0]["uid"] == new_uid


# ------------------------------------------------------------------------------------------ status


def test_canary_status_round_trip_through_the_status_subresource(kube, cluster, manifests):
    _seed(kube, manifests)
    assert cluster.get_canary_status("prod", "backend") is None
    status = CanaryStatus(
        phase=Phase.Progressing,
        canaryWeight=10,
        failedChecks=1,
        iterations=0,
        lastAppliedSpec="abc",
        lastTransitionTime="2026-01-01T00:00:00Z",
        playgroundState={"routes": [90, 10, False]},
    )
    # A concurrent writer (e.g. `kubectl annotate`) bumps the resourceVersion right after our read.
    kube.after(
        f"{CANARY_PATH}/status", lambda k: k.touch("flagger.app/v1beta1", "Canary", "prod", "backend"), method="GET"
    )
    kube.clear_requests()

    cluster.set_canary_status("prod", "backend", status)

    assert [(r.method, r.path, r.status) for r in kube.requests] == [
        ("GET", f"{CANARY_PATH}/status", 200),
        ("PUT", f"{CANARY_PATH}/status", 409),
        ("GET", f"{CANARY_PATH}/status", 200),
        ("PUT", f"{CANARY_PATH}/status", 200),
    ]
    stored = kube.object("flagger.app/v1beta1", "Canary", "prod", "backend")
    assert stored["status"]["phase"] == "Progressing" and stored["metadata"]["generation"] == 1
    back = cluster.get_canary_status("prod", "backend")
    assert back == status and back.model_extra == {"playgroundState": {"routes": [90, 10, False]}}

    # Re-applying the Canary (GitOps sync) keeps its status, as the real status subresource does.
    cluster.apply(manifests["canary"])
    assert cluster.get_canary_status("prod", "backend") == status


# ------------------------------------------------------------------------------------------ readiness


def test_workload_status_follows_flagger_readiness_rules(kube, cluster, manifests):
    canary, target, hpa = _seed(kube, manifests)
    _bootstrap(cluster, canary, target, hpa)

    kube.set_deployment_status("prod", "backend-primary")  # finished rollout of 2 replicas
    ws = cluster.workload_status("prod", "backend-primary")
    assert isinstance(ws, DeploymentStatus)
    assert (ws.desired, ws.updated, ws.ready, ws.available) == (2, 2, 2, 2) and ws.is_ready()
    assert not ws.deadline_exceeded and ws.message == ""

    kube.set_deployment_status("prod", "backend-primary", observed=False)
    ws = cluster.workload_status("prod", "backend-primary")
    assert not ws.is_ready() and "observed deployment generation less than desired generation" in ws.message

    kube.set_deployment_status(
        "prod", "backend-primary", updated=1, available=1, unavailable_since="2026-01-01T00:00:00Z"
    )
    ws = cluster.workload_status("prod", "backend-primary")
    assert not ws.is_ready() and "1 out of 2 new replicas have been updated" in ws.message
    assert ws.unavailable_since == 1767225600.0

    kube.set_deployment_status("prod", "backend-primary", replicas=3)  # one old replica still terminating
    ws = cluster.workload_status("prod", "backend-primary")
    assert not ws.is_ready(50) and "1 old replicas are pending termination" in ws.message

    kube.set_deployment_status("prod", "backend-primary", available=1)
    ws = cluster.workload_status("prod", "backend-primary")
    assert not ws.is_ready() and ws.is_ready(50) and "1 of 2 updated replicas are available" in ws.message

    kube.set_deployment_status("prod", "backend-primary", updated=1, available=0, deadline_exceeded=True)
    ws = cluster.workload_status("prod", "backend-primary")
    assert ws.deadline_exceeded and not ws.is_ready()
    assert 'ReplicaSet "backend-primary-00000001" has timed out progressing.' in ws.message

    cluster.scale("prod", "backend", 0)
    assert not cluster.workload_status("prod", "backend").is_ready()


# ------------------------------------------------------------------------------------------ listing, auth


def test_list_fills_in_kind_and_spans_namespaces(kube, cluster, manifests):
    _seed(kube, manifests)
    other = copy.deepcopy(manifests["deployment"])
    other["metadata"]["namespace"] = "staging"
    kube.seed(other)
    deps = cluster.list("apps/v1", "Deployment")
    assert [(d["kind"], d["metadata"]["namespace"]) for d in deps] == [
        ("Deployment", "prod"),
        ("Deployment", "staging"),
    ]
    assert [d["metadata"]["name"] for d in cluster.list("apps/v1", "Deployment", "staging")] == ["backend"]
    assert [c["kind"] for c in cluster.list("flagger.app/v1beta1", "Canary")] == ["Canary"]
    assert cluster.resolve_url("http://backend-canary.prod:9898/") == "http://backend-canary.prod:9898/"


def test_unreachable_api_server_is_a_clear_error():
    import socket

    from kubernetes import client

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = client.Configuration()
    cfg.host = f"http://127.0.0.1:{port}"
    cfg.retries = 0
    api = client.ApiClient(cfg)
    try:
        with pytest.raises(ClusterError) as err:
            KubernetesCluster(api_client=api).get("v1", "Service", "prod", "backend")
        assert f"cannot reach the Kubernetes API server at {cfg.host}" in str(err.value)
    finally:
        api.close()


def test_kubeconfig_and_context(kube, tmp_path):
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "other",
        "clusters": [
            {"name": "fake", "cluster": {"server": kube.url}},
            {"name": "nowhere", "cluster": {"server": "http://127.0.0.1:9"}},
        ],
        "users": [{"name": "ci", "user": {"token": "t0ken"}}],
        "contexts": [
            {"name": "fake", "context": {"cluster": "fake", "user": "ci"}},
            {"name": "other", "context": {"cluster": "nowhere", "user": "ci"}},
        ],
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(cfg))
    c = KubernetesCluster(kubeconfig=str(path), context="fake")
    try:
        assert c.get("v1", "Service", "prod", "backend") is None
    finally:
        c.close()
    with pytest.raises(ClusterError) as err:
        KubernetesCluster(kubeconfig=str(path), context="missing")
    assert "missing" in str(err.value) and str(path) in str(err.value)
    with pytest.raises(ClusterError) as err:
        KubernetesCluster(kubeconfig=str(tmp_path / "absent"))
    assert "cannot load kubeconfig" in str(err.value)


# ------------------------------------------------------------------------------------------ the fake itself


def test_fake_speaks_the_api_servers_protocol(kube):
    import json
    import urllib.error
    import urllib.request

    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    api = kube.api_client()
    try:
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        with pytest.raises(ApiException) as err:
            core.read_namespaced_service("missing", "prod")
        assert json.loads(err.value.body) == {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": 'services "missing" not found',
            "reason": "NotFound",
            "details": {"name": "missing", "group": "", "kind": "services"},
            "code": 404,
        }
        svc = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {"ports": [{"port": 80}], "selector": {"app": "web"}},
        }
        core.create_namespaced_service("prod", svc)
        with pytest.raises(ApiException) as err:
            core.create_namespaced_service("prod", svc)
        assert err.value.status == 409 and json.loads(err.value.body)["reason"] == "AlreadyExists"
        with pytest.raises(ApiException) as err:
            core.create_namespaced_service("prod", {**svc, "metadata": {"name": "web", "namespace": "other"}})
        assert err.value.status == 400
        with pytest.raises(ApiException) as err:
            core.create_namespaced_service("prod", {**svc, "apiVersion": "apps/v1"})
        assert err.value.status == 400 and "does not match the expected API version" in err.value.body
        raw = urllib.request.Request(
            f"{kube.url}/api/v1/namespaces/prod/services",
            data=b"name: web",
            headers={"Content-Type": "text/plain"},
            method="POST",
        )
        with pytest.raises(urllib.error.HTTPError) as http_err:
            urllib.request.urlopen(raw, timeout=5)
        assert http_err.value.code == 415 and json.loads(http_err.value.read())["reason"] == "UnsupportedMediaType"
        # JSON patch and (for built-in kinds) strategic merge patch.
        core.patch_namespaced_service("web", "prod", [{"op": "add", "path": "/metadata/labels", "value": {"a": "b"}}])
        core.patch_namespaced_service(
            "web", "prod", {"metadata": {"labels": {"c": "d"}}}, _content_type="application/strategic-merge-patch+json"
        )
        listed = json.loads(core.list_namespaced_service("prod", _preload_content=False).data)
        assert listed["kind"] == "ServiceList" and "kind" not in listed["items"][0]
        assert listed["items"][0]["metadata"]["labels"] == {"a": "b", "c": "d"}
        # Custom resources: no strategic merge patch (415), merge patch works, list items keep their kind.
        vs = {
            "apiVersion": "networking.istio.io/v1beta1",
            "kind": "VirtualService",
            "metadata": {"name": "web"},
            "spec": {"hosts": ["web"]},
        }
        custom.create_namespaced_custom_object("networking.istio.io", "v1beta1", "prod", "virtualservices", vs)
        with pytest.raises(ApiException) as err:
            custom.patch_namespaced_custom_object(
                "networking.istio.io",
                "v1beta1",
                "prod",
                "virtualservices",
                "web",
                {"spec": {"hosts": ["x"]}},
                _content_type="application/strategic-merge-patch+json",
            )
        assert err.value.status == 415
        custom.patch_namespaced_custom_object(
            "networking.istio.io", "v1beta1", "prod", "virtualservices", "web", {"spec": {"gateways": ["mesh"]}}
        )  # merge patch by default
        got = kube.object("networking.istio.io/v1beta1", "VirtualService", "prod", "web")
        assert got["spec"] == {"hosts": ["web"], "gateways": ["mesh"]} and got["metadata"]["generation"] == 2
        items = custom.list_namespaced_custom_object("networking.istio.io", "v1beta1", "prod", "virtualservices")
        assert items["kind"] == "VirtualServiceList" and items["items"][0]["kind"] == "VirtualService"
        resources = json.loads(custom.get_api_resources("flagger.app", "v1beta1", _preload_content=False).data)
        assert {"canaries", "canaries/status"} <= {r["name"] for r in resources["resources"]}
    finally:
        api.close()


def test_release_refuses_unsupported_fields_by_name_before_creating_anything(kube, cluster, manifests):
    """At release time a Canary using what the playground does not implement is refused, each field by name
    with what to do, and nothing is bootstrapped (no primary, no routes)."""
    from playground.controller import Controller, ControllerError

    canary = copy.deepcopy(manifests["canary"])
    canary["spec"]["provider"] = "linkerd"
    canary["spec"]["autoscalerRef"]["primaryScalerReplicas"] = {"minReplicas": 2}
    _seed(kube, {**manifests, "canary": canary})
    ctl = Controller(cluster, log=lambda _l: None, sleep=lambda _s: None)
    with pytest.raises(ControllerError) as e:
        ctl.step("prod/backend")
    text = str(e.value)
    assert "spec.provider: provider linkerd is not supported by the playground" in text
    assert "spec.autoscalerRef.primaryScalerReplicas: " in text and "Fix: remove primaryScalerReplicas" in text
    assert cluster.get("apps/v1", "Deployment", "prod", "backend-primary") is None
    assert cluster.get("networking.istio.io/v1beta1", "VirtualService", "prod", "backend") is None


def _kubernetes_provider(manifests: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The shipped backend Canary as Flagger's kubernetes provider takes it: blue/green, plain Services."""
    canary = copy.deepcopy(manifests["canary"])
    canary["spec"]["provider"] = "kubernetes"
    canary["spec"]["service"] = {"port": 9898, "targetPort": 9898}
    analysis = canary["spec"]["analysis"]
    for key in ("maxWeight", "stepWeight"):
        analysis.pop(key, None)
    analysis["iterations"] = 5
    return {**manifests, "canary": canary}


def test_kubernetes_provider_bootstraps_plain_services_only_and_never_writes_routes(kube, cluster, manifests):
    """provider: kubernetes on the kubernetes backend, through the controller: the golden objects are the
    primary Deployment, its HPA and the apex/primary/canary Services (the apex selecting the primary pods), with
    no DestinationRule or VirtualService; setting routes (the blue/green switch, make_safe) writes nothing."""
    from playground import analysis, support
    from playground.controller import Controller

    mf = _kubernetes_provider(manifests)
    assert support.refusal(mf["canary"]) is None
    _seed(kube, mf)
    seeded = {_key(o) for o in kube.objects()}
    ctl = Controller(cluster, log=lambda _l: None, sleep=lambda _s: None)
    canary = ctl.canary("prod/backend")
    ctl.bootstrap(canary)
    created = [o for o in kube.objects("prod") if _key(o) not in seeded]
    assert sorted((o["kind"], o["metadata"]["name"]) for o in created) == [
        ("Deployment", "backend-primary"),
        ("HorizontalPodAutoscaler", "backend-primary"),
        ("Service", "backend"),
        ("Service", "backend-canary"),
        ("Service", "backend-primary"),
    ]
    apex = kube.object("v1", "Service", "prod", "backend")
    assert apex["spec"]["selector"] == {"app": "backend-primary"}
    _check_golden("bootstrap-backend-kubernetes-provider.yaml", created)

    kube.clear_requests()
    ctl._set_routes(canary, analysis.ALL_TO_CANARY)
    ctl.make_safe("prod/backend")
    assert not [r for r in kube.requests if r.method != "GET" and "virtualservices" in r.path]
    assert kube.object("networking.istio.io/v1beta1", "VirtualService", "prod", "backend") is None
    assert ctl.load_state(canary) is not None and ctl.load_state(canary).routes == analysis.ALL_TO_PRIMARY


# ------------------------------------------------------------------------------------------ TCP routes


def _tcp_service(manifests: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The shipped backend Canary as a TCP service (``service.appProtocol: TCP``): no HTTP route settings."""
    canary = copy.deepcopy(manifests["canary"])
    canary["spec"]["service"] = {
        "port": 9898,
        "targetPort": 9898,
        "portName": "tcp-backend",
        "appProtocol": "TCP",
        "match": [{"port": 9898}],
    }
    return {**manifests, "canary": canary}


def test_tcp_service_gets_weighted_tcp_routes_golden(kube, cluster, manifests):
    """appProtocol: TCP on the kubernetes backend, through the controller: as Flagger's Istio router, the
    VirtualService carries one ``tcp`` route (L4 match on the port, primary/canary weights) and no ``http``
    route; a weight change rewrites the weights only, read back by the controller; make_safe puts 100/0 back."""
    from playground import analysis, support
    from playground.controller import Controller

    mf = _tcp_service(manifests)
    assert support.refusal(mf["canary"]) is None
    _seed(kube, mf)
    seeded = {_key(o) for o in kube.objects()}
    ctl = Controller(cluster, log=lambda _l: None, sleep=lambda _s: None)
    canary = ctl.canary("prod/backend")
    ctl.bootstrap(canary)
    created = [o for o in kube.objects("prod") if _key(o) not in seeded]
    assert sorted((o["kind"], o["metadata"]["name"]) for o in created) == [
        ("Deployment", "backend-primary"),
        ("DestinationRule", "backend-canary"),
        ("DestinationRule", "backend-primary"),
        ("HorizontalPodAutoscaler", "backend-primary"),
        ("Service", "backend"),
        ("Service", "backend-canary"),
        ("Service", "backend-primary"),
        ("VirtualService", "backend"),
    ]
    vs = kube.object("networking.istio.io/v1beta1", "VirtualService", "prod", "backend")
    assert "http" not in vs["spec"]
    assert vs["spec"]["tcp"] == [
        {
            "match": [{"port": 9898}],
            "route": [
                {"destination": {"host": "backend-primary"}, "weight": 100},
                {"destination": {"host": "backend-canary"}, "weight": 0},
            ],
        }
    ]
    apex = kube.object("v1", "Service", "prod", "backend")
    assert apex["spec"]["ports"][0]["appProtocol"] == "TCP" and apex["spec"]["ports"][0]["name"] == "tcp-backend"
    _check_golden("bootstrap-backend-tcp.yaml", created)

    ctl._set_routes(canary, analysis.Routes(70, 30, False))
    vs = kube.object("networking.istio.io/v1beta1", "VirtualService", "prod", "backend")
    assert [d["weight"] for d in vs["spec"]["tcp"][0]["route"]] == [70, 30] and "http" not in vs["spec"]
    assert ctl.load_state(canary).routes == analysis.Routes(70, 30, False)
    _check_golden("virtualservice-backend-tcp-70-30.yaml", [vs])
    ctl.make_safe("prod/backend")
    vs = kube.object("networking.istio.io/v1beta1", "VirtualService", "prod", "backend")
    assert routing.routes_of(canary, vs) == (100, 0, False)


def test_tcp_service_refuses_what_flagger_leaves_out_of_a_tcp_route(kube, cluster, manifests):
    """What Flagger's Istio router ignores for a TCP service is refused by name at release time (the shipped
    canary's retries, an HTTP match, A/B matches, mirroring, a built-in HTTP metric), nothing bootstrapped."""
    from playground.controller import Controller, ControllerError

    mf = _tcp_service(manifests)
    spec = mf["canary"]["spec"]
    spec["service"]["retries"] = {"attempts": 3}
    spec["service"]["match"] = [{"port": 9898, "uri": {"prefix": "/api"}}]
    spec["analysis"]["mirror"] = True
    spec["analysis"]["match"] = [{"headers": {"x-canary": {"exact": "1"}}}]
    spec["analysis"]["metrics"].append({"name": "request-success-rate", "thresholdRange": {"min": 99}})
    _seed(kube, mf)
    ctl = Controller(cluster, log=lambda _l: None, sleep=lambda _s: None)
    with pytest.raises(ControllerError) as e:
        ctl.step("prod/backend")
    text = str(e.value)
    assert "spec.service.retries: retries are HTTP route settings" in text
    assert "spec.service.match[0]: a TCP route matches on the port only: Flagger drops uri" in text
    assert "spec.analysis.mirror: " in text and "spec.analysis.match: " in text
    assert "spec.analysis.metrics[2]: the built-in metric request-success-rate reads istio_requests_total" in text
    assert cluster.get("apps/v1", "Deployment", "prod", "backend-primary") is None
    assert cluster.get("networking.istio.io/v1beta1", "VirtualService", "prod", "backend") is None


def _gatewayapi_provider(manifests: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The shipped backend Canary as a Gateway API canary (Flagger's gatewayapi:v1 router): attached to the
    Gateway gateway/public for host backend.example.com, the Istio-only service.retries removed."""
    canary = copy.deepcopy(manifests["canary"])
    canary["spec"]["provider"] = "gatewayapi:v1"
    svc = canary["spec"]["service"]
    svc.pop("retries")
    svc.update(
        hosts=["backend.example.com"],
        gatewayRefs=[{"name": "public", "namespace": "gateway"}],
        timeout="30s",
        backendTimeout="10s",
    )
    return {**manifests, "canary": canary}


HTTPROUTE_PATH = "/apis/gateway.networking.k8s.io/v1/namespaces/prod/httproutes"


def test_gatewayapi_provider_golden_objects_and_weight_change_touches_only_the_http_route(kube, cluster, manifests):
    """provider gatewayapi:v1 on the kubernetes backend, through the controller: the golden objects are the
    primary Deployment, its HPA, the apex/primary/canary Services and the HTTPRoute (all traffic on the
    primary), no DestinationRule or VirtualService; a weight change PUTs the HTTPRoute only, and the weights are
    read back from it."""
    from playground import analysis, support
    from playground.controller import Controller

    mf = _gatewayapi_provider(manifests)
    assert support.refusal(mf["canary"]) is None
    _seed(kube, mf)
    seeded = {_key(o) for o in kube.objects()}
    ctl = Controller(cluster, log=lambda _l: None, sleep=lambda _s: None)
    canary = ctl.canary("prod/backend")
    ctl.bootstrap(canary)
    created = [o for o in kube.objects("prod") if _key(o) not in seeded]
    assert sorted((o["kind"], o["metadata"]["name"]) for o in created) == [
        ("Deployment", "backend-primary"),
        ("HTTPRoute", "backend"),
        ("HorizontalPodAutoscaler", "backend-primary"),
        ("Service", "backend"),
        ("Service", "backend-canary"),
        ("Service", "backend-primary"),
    ]
    _check_golden("bootstrap-backend-gatewayapi.yaml", created)
    assert ctl.load_state(canary).routes == analysis.ALL_TO_PRIMARY

    before = {_key(o): o["metadata"]["resourceVersion"] for o in kube.objects()}
    kube.clear_requests()
    ctl._set_routes(canary, analysis.Routes(90, 10, False))
    writes = [r for r in kube.requests if r.method != "GET"]
    assert writes and all(r.path.startswith(HTTPROUTE_PATH) for r in writes), writes
    after = {_key(o): o["metadata"]["resourceVersion"] for o in kube.objects()}
    assert {k for k in after if after[k] != before.get(k)} == {("gateway.networking.k8s.io/v1", "HTTPRoute", "backend")}
    route = kube.object("gateway.networking.k8s.io/v1", "HTTPRoute", "prod", "backend")
    assert routing.routes_in(canary, route) == (90, 10, False)
    _check_golden("httproute-backend-90-10.yaml", [route])
    assert ctl.load_state(canary).routes == analysis.Routes(90, 10, False)
    assert kube.object("networking.istio.io/v1beta1", "VirtualService", "prod", "backend") is None


def test_switching_a_released_canary_to_tcp_reconciles_services_and_routes(kube, cluster, manifests):
    """Flagger's router Reconcile: a Canary changed to appProtocol: TCP after its bootstrap gets Services with the
    TCP port and a VirtualService with a tcp route carrying the weights in force; nothing is written again when
    nothing changed."""
    from playground import analysis
    from playground.controller import Controller

    _seed(kube, manifests)
    ctl = Controller(cluster, log=lambda _l: None, sleep=lambda _s: None)
    canary = ctl.canary("prod/backend")
    ctl.bootstrap(canary)
    ctl._set_routes(canary, analysis.Routes(80, 20, False))
    stored = kube.object("flagger.app/v1beta1", "Canary", "prod", "backend")
    stored["spec"] = _tcp_service(manifests)["canary"]["spec"]
    kube.seed(stored)
    canary = ctl.canary("prod/backend")
    assert ctl.bootstrap(canary).routes == analysis.Routes(80, 20, False)  # the tick sees the weights in force
    for name in ("backend", "backend-primary", "backend-canary"):
        port = kube.object("v1", "Service", "prod", name)["spec"]["ports"][0]
        assert port["appProtocol"] == "TCP" and port["name"] == "tcp-backend", name
    vs = kube.object("networking.istio.io/v1beta1", "VirtualService", "prod", "backend")
    assert "http" not in vs["spec"] and routing.routes_of(canary, vs) == (80, 20, False)
    kube.clear_requests()
    ctl.bootstrap(canary)
    assert [r for r in kube.requests if r.method != "GET"] == []
