"""revertOnDeletion (playground/finalizer.py): Flagger's finalizer, through the GitOps sync, on the kubernetes
backend with the real ``kubernetes`` client against the protocol-level fake API server (finalizers and
deletionTimestamp as kube-apiserver), and on the local backend's store."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from playground import finalizer
from playground.cluster.kubernetes import KubernetesCluster
from playground.controller import Controller, ControllerError
from playground.gitops import apply_sync, plan_sync
from playground.local.cluster import LocalCluster
from tests.support.fake_kube import FakeKube

ROOT = Path(__file__).resolve().parent.parent
BACKEND = ROOT / "manifests" / "prod" / "backend"
CANARY = ("flagger.app/v1beta1", "Canary")
VS = ("networking.istio.io/v1beta1", "VirtualService")


def _canary(revert: bool = True) -> dict[str, Any]:
    """The shipped backend Canary with revertOnDeletion, without the templates/providers it references (not
    part of this small tree)."""
    c = yaml.safe_load((BACKEND / "canary.yaml").read_text())
    a = c["spec"]["analysis"]
    a["metrics"], a["webhooks"], a["alerts"] = [], [], []
    if revert:
        c["spec"]["revertOnDeletion"] = True
    return c


def _tree(path: Path, canary: dict[str, Any] | None) -> Path:
    """A GitOps tree: namespace prod, the backend Deployment and HPA, and ``canary`` (None: removed)."""
    (path / "prod").mkdir(parents=True, exist_ok=True)
    (path / "prod" / "namespace.yaml").write_text(
        yaml.safe_dump({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "prod"}})
    )
    for name in ("deployment.yaml", "hpa.yaml", "image-policy.yaml"):
        shutil.copy(BACKEND / name, path / "prod" / name)
    if canary is not None:
        (path / "prod" / "canary.yaml").write_text(yaml.safe_dump(canary))
    elif (path / "prod" / "canary.yaml").exists():
        (path / "prod" / "canary.yaml").unlink()
    return path


def _sync(cluster, path: Path):
    plan = plan_sync(cluster, path)
    assert plan.ok, plan.report()
    return apply_sync(cluster, plan, log=lambda _l: None)


@pytest.fixture
def kube():
    with FakeKube(auto_rollout=True) as fake:
        yield fake


@pytest.fixture
def k8s(kube):
    api = kube.api_client()
    c = KubernetesCluster(api_client=api, sleep=lambda s: None)
    yield c
    api.close()


def _released(cluster, kube: FakeKube | None = None) -> Controller:
    """Bootstrap prod/backend through the controller and leave it as Flagger does after initialization: the
    primary serves (2 replicas), the target is scaled to zero."""
    ctl = Controller(cluster, log=lambda _l: None, sleep=lambda _s: None)
    canary = ctl.canary("prod/backend")
    ctl.bootstrap(canary)
    cluster.scale("prod", "backend", 0)
    if kube is not None:
        kube.set_deployment_status("prod", "backend")
    return ctl


def test_kubernetes_sync_adds_the_finalizer_keeps_it_and_reverts_a_canary_removed_from_git(kube, k8s, tmp_path):
    """The sync adds finalizer.flagger.app to a Canary with revertOnDeletion (a later sync's PUT keeps it);
    removing the Canary from git and syncing deletes it (deletionTimestamp, held by the finalizer), reverts the
    target (scaled to the primary's replicas and ready before the apex Service selects it), removes the routes
    and the generated objects, then removes the finalizer, and the API server deletes the Canary."""
    tree = _tree(tmp_path / "git", _canary())
    result = _sync(k8s, tree)
    assert result.finalizers.added == ["prod/backend"]
    assert kube.object(*CANARY, "prod", "backend")["metadata"]["finalizers"] == [finalizer.FINALIZER]
    _released(k8s, kube)
    changed = _canary()
    changed["metadata"]["labels"] = {"team": "a"}  # a spec/metadata change: the sync PUTs the Canary
    _sync(k8s, _tree(tree, changed))
    stored = kube.object(*CANARY, "prod", "backend")
    assert stored["metadata"]["labels"] == {"team": "a"}
    assert stored["metadata"]["finalizers"] == [finalizer.FINALIZER], "the sync's PUT dropped the finalizer"
    assert kube.object("apps/v1", "Deployment", "prod", "backend")["spec"]["replicas"] == 0

    kube.clear_requests()
    result = _sync(k8s, _tree(tree, None))

    assert result.finalizers.deleted == ["prod/backend"] and result.finalizers.finalized == ["prod/backend"]
    assert result.finalizers.errors == []
    assert kube.object(*CANARY, "prod", "backend") is None
    target = kube.object("apps/v1", "Deployment", "prod", "backend")
    assert target["spec"]["replicas"] == 2  # the primary's replicas
    apex = kube.object("v1", "Service", "prod", "backend")
    assert apex["spec"]["selector"] == {"app": "backend"} and "ownerReferences" not in apex["metadata"]
    left = sorted((o["kind"], o["metadata"]["name"]) for o in kube.objects("prod"))
    assert left == [
        ("Deployment", "backend"),
        ("HorizontalPodAutoscaler", "backend"),
        ("Service", "backend"),
    ]
    # Order, as Flagger's finalize: mark for deletion, status Terminating, scale the target, (it is ready) point
    # the apex at it, remove the routes, the generated objects, and last the finalizer.
    writes = [(r.method, r.path.rsplit("/", 2)[-2:]) for r in kube.requests if r.method != "GET"]
    names = [f"{m} {'/'.join(p)}" for m, p in writes]
    i_delete = names.index("DELETE canaries/backend")
    i_status = names.index("PUT backend/status")
    i_scale = names.index("PATCH backend/scale")
    i_apex = names.index("PUT services/backend")
    i_vs = names.index("DELETE virtualservices/backend")
    i_primary = names.index("DELETE deployments/backend-primary")
    i_final = names.index("PUT canaries/backend")
    assert i_delete < i_status < i_scale < i_apex < i_vs < i_primary < i_final, names
    final_put = [r for r in kube.requests if r.method == "PUT" and r.path.endswith("/canaries/backend")][-1]
    assert final_put.body["metadata"]["finalizers"] == []


def test_kubernetes_without_revert_on_deletion_a_canary_removed_from_git_is_left_alone(kube, k8s, tmp_path):
    """Today's behaviour without revertOnDeletion: no finalizer, the sync deletes nothing."""
    tree = _tree(tmp_path / "git", _canary(revert=False))
    assert _sync(k8s, tree).finalizers.added == []
    _released(k8s, kube)
    before = sorted((o["kind"], o["metadata"]["name"]) for o in kube.objects("prod"))
    result = _sync(k8s, _tree(tree, None))
    assert result.finalizers.deleted == [] and result.finalizers.finalized == []
    assert sorted((o["kind"], o["metadata"]["name"]) for o in kube.objects("prod")) == before
    assert "finalizers" not in kube.object(*CANARY, "prod", "backend")["metadata"]


def test_kubernetes_opting_out_removes_the_finalizer_and_kubectl_delete_is_finalized(kube, k8s, tmp_path):
    """As Flagger: revertOnDeletion set to false removes the finalizer; a Canary deleted by someone else
    (kubectl delete) while it has the finalizer is finalized by the next sync; a release refuses it meanwhile."""
    tree = _tree(tmp_path / "git", _canary())
    _sync(k8s, tree)
    assert _sync(k8s, _tree(tree, _canary(revert=False))).finalizers.removed == ["prod/backend"]
    assert "finalizers" not in kube.object(*CANARY, "prod", "backend")["metadata"]

    _sync(k8s, _tree(tree, _canary()))
    ctl = _released(k8s, kube)
    assert k8s.delete(*CANARY, "prod", "backend")  # kubectl delete canary backend
    marked = kube.object(*CANARY, "prod", "backend")
    assert marked["metadata"]["deletionTimestamp"] and marked["metadata"]["finalizers"] == [finalizer.FINALIZER]
    with pytest.raises(ControllerError, match="being deleted"):
        ctl.step("prod/backend")
    result = _sync(k8s, tree)  # still in git: the sync finalizes it (deleted objects are not re-created)
    assert result.finalizers.finalized == ["prod/backend"]
    assert kube.object(*CANARY, "prod", "backend") is None
    assert kube.object("v1", "Service", "prod", "backend")["spec"]["selector"] == {"app": "backend"}


def test_kubernetes_target_never_ready_keeps_traffic_on_the_primary_and_the_finalizer(kube, tmp_path):
    """A target that does not become ready within progressDeadlineSeconds: the revert stops before touching
    the routes (all traffic stays on the primary), the Canary keeps its finalizer, the error names the fix."""
    with FakeKube() as fake:  # no auto rollout: the target never becomes ready
        api = fake.api_client()
        clock = [1000.0]
        c = KubernetesCluster(api_client=api, sleep=lambda s: None)
        tree = _tree(tmp_path / "git", _canary())
        _sync(c, tree)
        ctl = Controller(c, log=lambda _l: None, sleep=lambda _s: None)
        ctl.bootstrap(ctl.canary("prod/backend"))
        c.scale("prod", "backend", 0)
        c.delete(*CANARY, "prod", "backend")
        obj = c.get(*CANARY, "prod", "backend")

        def tick(_s: float) -> None:
            clock[0] += 10

        with pytest.raises(finalizer.FinalizeError, match="not ready after 60s.*traffic stays on the primary"):
            finalizer.finalize(c, obj, clock=lambda: clock[0], sleep=tick)
        vs = fake.object(*VS, "prod", "backend")
        assert vs is not None and vs["spec"]["http"][0]["route"][0]["weight"] == 100
        assert fake.object("v1", "Service", "prod", "backend")["spec"]["selector"] == {"app": "backend-primary"}
        assert fake.object(*CANARY, "prod", "backend")["metadata"]["finalizers"] == [finalizer.FINALIZER]
        assert fake.object(*CANARY, "prod", "backend")["status"]["phase"] == "Terminating"
        api.close()


def test_local_store_holds_a_canary_with_the_finalizer_until_reverted(tmp_path):
    """The local backend's store behaves as the API server for finalizers: deleting a Canary with the finalizer
    marks it, the sync reverts it, removing the finalizer deletes it (and its status)."""
    cluster = LocalCluster(tmp_path / "home")
    try:
        tree = _tree(tmp_path / "git", _canary())
        _sync(cluster, tree)
        assert cluster.get(*CANARY, "prod", "backend")["metadata"]["finalizers"] == [finalizer.FINALIZER]
        changed = copy.deepcopy(_canary())
        changed["spec"]["analysis"]["interval"] = "20s"
        _sync(cluster, _tree(tree, changed))
        assert cluster.get(*CANARY, "prod", "backend")["metadata"]["finalizers"] == [finalizer.FINALIZER]
        assert cluster.delete(*CANARY, "prod", "backend")
        assert cluster.get(*CANARY, "prod", "backend")["metadata"]["deletionTimestamp"]
        obj = cluster.get(*CANARY, "prod", "backend")
        cluster.apply(finalizer._with_finalizers(obj, []))
        assert cluster.get(*CANARY, "prod", "backend") is None
        assert cluster.get_canary_status("prod", "backend") is None
    finally:
        cluster.close()
