"""GitOps sync: GitSource against real temporary git repositories (a bare origin + clones), and
plan_sync/apply_sync against the local backend (LocalCluster over SQLite in a tmp home)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import git
import pytest

from playground.gitops import (
    GitError,
    GitSource,
    SyncError,
    apply_sync,
    plan_sync,
)
from playground.local import gitorigin
from playground.local.cluster import LocalCluster
from playground.models import CanaryStatus, Phase
from tests.support.procs import free_port

# every test here starts a process (Envoy, git, the workload programs, lint-imports...)
pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests"


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture
def origin(tmp_path) -> Path:
    """A bare GitOps origin seeded with the project's manifests (at the repository root)."""
    path = tmp_path / "origin.git"
    gitorigin.ensure_origin(path, seed=MANIFESTS)
    return path


@pytest.fixture
def person(tmp_path, origin) -> Path:
    """A working clone where 'a person' edits and pushes."""
    work = tmp_path / "person"
    gitorigin.clone(origin, work)
    return work


@pytest.fixture
def source(tmp_path, origin) -> GitSource:
    src = GitSource(str(origin), tmp_path / "checkout")
    src.fetch()
    return src


@pytest.fixture
def cluster(tmp_path):
    c = LocalCluster(tmp_path / "home")
    try:
        yield c
    finally:
        c.close()


def _edit(work: Path, rel: str, old: str, new: str) -> None:
    p = work / rel
    text = p.read_text()
    assert old in text, f"{old!r} not in {rel}"
    p.write_text(text.replace(old, new))


def _push(work: Path, message: str) -> str:
    return gitorigin.commit_and_push(work, message)


def _all_objects(cluster: LocalCluster) -> list[dict[str, Any]]:
    rows = cluster.store._read("SELECT body FROM objects")
    return rows


def _mark_released(cluster: LocalCluster, result) -> None:
    """What the canary controller does after a release: lastAppliedSpec = the current revision."""
    for t in result.targets:
        ns, name = t.canary.split("/")
        cluster.set_canary_status(
            ns,
            name,
            CanaryStatus(phase=Phase.Succeeded, lastAppliedSpec=t.new_revision, lastPromotedSpec=t.new_revision),
        )


class CountingCluster:
    """Delegates to a real cluster, counting applies and failing on one object if asked."""

    def __init__(self, inner, fail_on: str | None = None):
        self.inner = inner
        self.fail_on = fail_on
        self.applied: list[str] = []

    def apply(self, obj):
        key = f"{obj['kind']} {obj['metadata'].get('namespace')}/{obj['metadata']['name']}"
        if key == self.fail_on:
            raise RuntimeError("simulated API failure")
        self.applied.append(key)
        return self.inner.apply(obj)

    def __getattr__(self, name):
        return getattr(self.inner, name)


# ---------------------------------------------------------------------------------------------- git


def test_fetch_clones_then_follows_origin(source, person):
    first = source.head()
    assert (source.path / "prod/backend/canary.yaml").exists()
    _edit(person, "prod/backend/deployment.yaml", '"#34577c"', '"#ff0000"')
    second = _push(person, "Change the UI color")
    # local junk in the checkout is discarded by fetch
    (source.path / "prod/backend/deployment.yaml").write_text("garbage")
    (source.path / "untracked.yaml").write_text("x: 1")
    assert source.fetch() == second != first
    assert "#ff0000" in (source.path / "prod/backend/deployment.yaml").read_text()
    assert not (source.path / "untracked.yaml").exists()
    assert source.changed_paths(first, second) == ["prod/backend/deployment.yaml"]
    assert "prod/frontend/canary.yaml" in source.changed_paths(None, second)


def test_fetch_unreachable_origin_is_a_clear_git_error(tmp_path):
    missing = tmp_path / "nowhere" / "gitops.git"
    with pytest.raises(GitError) as e:
        GitSource(str(missing), tmp_path / "co").fetch()
    msg = str(e.value)
    assert str(missing) in msg and "cannot reach the git origin" in msg and "Check that the URL" in msg
    assert not (tmp_path / "co").exists()  # no half-made checkout

    url = f"http://127.0.0.1:{free_port()}/gitops.git"
    with pytest.raises(GitError, match=f"cannot reach the git origin {url}"):
        GitSource(url, tmp_path / "co2").fetch()


def test_fetch_unreachable_after_clone(tmp_path, origin, source):
    source.url = str(tmp_path / "moved.git")
    with pytest.raises(GitError, match="moved.git"):
        source.fetch()


def test_fetch_missing_branch(tmp_path, origin):
    with pytest.raises(GitError, match="no branch 'release'"):
        GitSource(str(origin), tmp_path / "co", branch="release").fetch()


def test_commit_and_push_rebases_once_on_non_fast_forward(source, person, origin):
    rel = "prod/frontend/deployment.yaml"
    new_text = source.read(rel).replace("podinfo:6.7.0", "podinfo:6.8.0")
    # meanwhile a person pushes an unrelated change: our push is rejected, rebased, pushed
    _edit(person, "prod/backend/hpa.yaml", "maxReplicas", "maxReplicas")  # no-op edit is not a commit
    (person / "NOTES.md").write_text("notes\n")
    theirs = _push(person, "Add notes")
    sha = source.commit_and_push({rel: new_text}, "Update image ghcr.io/stefanprodan/podinfo to 6.8.0 (prod:frontend)")
    repo = git.Repo(origin)
    head = repo.commit("main")
    assert head.hexsha == sha and head.parents[0].hexsha == theirs
    assert head.author.name == "gitops-playground" and head.committer.email == "playground@localhost"
    assert "podinfo:6.8.0" in head.tree[rel].data_stream.read().decode()
    assert source.head() == sha
    # no change -> no commit
    assert source.commit_and_push({rel: new_text}, "nothing") == sha


def test_commit_and_push_conflict_leaves_checkout_at_origin(source, person, origin):
    rel = "prod/frontend/deployment.yaml"
    ours = source.read(rel).replace("podinfo:6.7.0", "podinfo:6.8.0")
    _edit(person, rel, "podinfo:6.7.0", "podinfo:6.9.0")
    theirs = _push(person, "Person bumps the frontend")
    with pytest.raises(GitError, match="conflicts with a newer commit"):
        source.commit_and_push({rel: ours}, "Update image")
    repo = git.Repo(source.workdir)
    assert repo.head.commit.hexsha == theirs  # reset to the new origin head
    assert not repo.is_dirty(untracked_files=True)
    assert git.Repo(origin).commit("main").hexsha == theirs


def test_commit_and_push_refuses_paths_outside(source):
    with pytest.raises(GitError, match="relative to the repository root"):
        source.commit_and_push({"../evil.yaml": "x"}, "nope")


# --------------------------------------------------------------------------------------------- sync


def test_plan_orders_by_dependency(source, cluster):
    plan = plan_sync(cluster, source.path)
    assert plan.ok and plan.errors == []
    assert {i.action for i in plan.items} == {"create"}
    phases = [i.phase for i in plan.items]
    order = ["mesh", "metrics", "namespaces", "workloads"]
    assert phases == sorted(phases, key=order.index)
    keys = [i.key for i in plan.items]

    def pos(key):
        return keys.index(key)

    assert pos("IstioOperator istio-system/istio-default") < pos("Gateway istio-system/public-gateway")
    assert pos("Namespace istio-system") < pos("MetricTemplate istio-system/error-rate")
    assert pos("Namespace prod") < pos("AlertProvider prod/on-call")  # its namespace comes first
    assert pos("Namespace prod") < pos("Deployment prod/backend")
    assert (
        pos("Deployment prod/backend")
        < pos("Service prod/flagger-loadtester")
        < pos("HorizontalPodAutoscaler prod/backend")
        < pos("Canary prod/backend")
        < pos("ImagePolicy prod/backend")
    )
    rank = {"ConfigMap": 0, "Secret": 0, "Deployment": 1, "Service": 2, "HorizontalPodAutoscaler": 3, "Canary": 4}
    ranks = [rank[i.kind] for i in plan.items if i.phase == "workloads" and i.kind in rank]
    assert ranks == sorted(ranks)
    assert [i.name for i in plan.items if i.canary_target] == ["backend", "frontend"]


def test_apply_then_unchanged_objects_are_not_reapplied(source, cluster):
    plan = plan_sync(cluster, source.path)
    result = apply_sync(cluster, plan)
    assert len(result.applied) == len(plan.items) and result.unchanged == []
    stored = cluster.get("apps/v1", "Deployment", "prod", "backend")
    assert stored["spec"]["template"]["spec"]["containers"][0]["image"] == "ghcr.io/stefanprodan/podinfo:6.7.0"
    assert cluster.get("image.toolkit.fluxcd.io/v1beta2", "ImagePolicy", "prod", "backend") is not None

    counting = CountingCluster(cluster)
    plan2 = plan_sync(counting, source.path)
    assert {i.action for i in plan2.items} == {"unchanged"}, plan2.summary()
    result2 = apply_sync(counting, plan2)
    assert counting.applied == [] and result2.applied == []
    assert len(result2.unchanged) == len(plan2.items)


def test_invalid_commit_applies_nothing(source, person, cluster):
    # a valid first sync, then a commit with an error (and a valid change next to it)
    apply_sync(cluster, plan_sync(cluster, source.path))
    before = sorted(r[0] for r in _all_objects(cluster))
    _edit(
        person,
        "prod/backend/canary.yaml",
        "name: error-rate\n          namespace",
        "name: error-rat\n          namespace",
    )
    _edit(person, "prod/frontend/deployment.yaml", "podinfo:6.7.0", "podinfo:6.8.0")
    _push(person, "Broken template reference")
    source.fetch()
    plan = plan_sync(cluster, source.path)
    assert plan.errors and plan.items == []
    assert any("error-rat" in str(f) for f in plan.errors)
    with pytest.raises(SyncError) as e:
        apply_sync(cluster, plan)
    assert "nothing was applied" in str(e.value) and e.value.findings
    assert sorted(r[0] for r in _all_objects(cluster)) == before  # byte for byte unchanged


def test_invalid_tree_on_empty_cluster(tmp_path, cluster):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "ns.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: prod\n")
    (bad / "broken.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n   bad: [\n")
    plan = plan_sync(cluster, bad)
    assert plan.errors and not plan.items
    with pytest.raises(SyncError):
        apply_sync(cluster, plan)
    assert _all_objects(cluster) == []


def test_canary_target_keeps_cluster_replicas(source, person, cluster):
    _edit(person, "prod/backend/deployment.yaml", "spec:\n  minReadySeconds", "spec:\n  replicas: 2\n  minReadySeconds")
    _edit(person, "prod/loadtester.yaml", "spec:\n  selector", "spec:\n  replicas: 1\n  selector")
    _push(person, "Explicit replicas")
    source.fetch()
    apply_sync(cluster, plan_sync(cluster, source.path))
    assert cluster.get("apps/v1", "Deployment", "prod", "backend")["spec"]["replicas"] == 2  # created as in git
    cluster.scale("prod", "backend", 0)  # Flagger scaled the target to zero after promotion
    cluster.scale("prod", "frontend", 0)
    cluster.scale("prod", "flagger-loadtester", 5)  # drift on a Deployment that is not a canary target

    plan = plan_sync(cluster, source.path)
    actions = {i.key: i.action for i in plan.items}
    assert actions["Deployment prod/backend"] == "unchanged"  # replicas of a target are not git's business
    assert actions["Deployment prod/frontend"] == "unchanged"  # git sets no replicas
    assert actions["Deployment prod/flagger-loadtester"] == "update"  # git's replicas win for non-targets

    _edit(person, "prod/backend/deployment.yaml", "podinfo:6.7.0", "podinfo:6.8.0")
    _push(person, "Bump backend")
    source.fetch()
    plan = plan_sync(cluster, source.path)
    assert {i.key: i.action for i in plan.items}["Deployment prod/backend"] == "update"
    apply_sync(cluster, plan)
    backend = cluster.get("apps/v1", "Deployment", "prod", "backend")
    assert backend["spec"]["replicas"] == 0  # not scaled back up by git
    assert backend["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":6.8.0")
    assert cluster.get("apps/v1", "Deployment", "prod", "frontend")["spec"]["replicas"] == 0
    assert cluster.get("apps/v1", "Deployment", "prod", "flagger-loadtester")["spec"]["replicas"] == 1


def test_target_changes_on_image_and_configmap(source, person, cluster):
    # the backend reads a ConfigMap
    (person / "prod/backend/config.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: backend-config\n  namespace: prod\n"
        "data:\n  PODINFO_UI_MESSAGE: hello\n"
    )
    _edit(
        person,
        "prod/backend/deployment.yaml",
        "          env:\n",
        "          envFrom:\n            - configMapRef:\n                name: backend-config\n          env:\n",
    )
    _push(person, "Backend config")
    source.fetch()

    first = apply_sync(cluster, plan_sync(cluster, source.path))
    targets = {t.canary: t for t in first.targets}
    assert set(targets) == {"prod/backend", "prod/frontend"}
    assert all(t.old_revision is None and t.changed for t in first.targets)
    keys = first.applied
    assert keys.index("ConfigMap prod/backend-config") < keys.index("Deployment prod/backend")
    _mark_released(cluster, first)

    # same commit again: nothing changed
    again = apply_sync(cluster, plan_sync(cluster, source.path))
    assert again.applied == [] and not again.changed_targets

    # image change of the frontend -> only the frontend has a new revision
    _edit(person, "prod/frontend/deployment.yaml", "podinfo:6.7.0", "podinfo:6.8.0")
    _push(person, "Bump frontend")
    source.fetch()
    r = apply_sync(cluster, plan_sync(cluster, source.path))
    changed = {t.canary: t for t in r.changed_targets}
    assert set(changed) == {"prod/frontend"}
    assert changed["prod/frontend"].old_revision == targets["prod/frontend"].new_revision
    assert changed["prod/frontend"].new_revision != changed["prod/frontend"].old_revision
    _mark_released(cluster, r)

    # ConfigMap data change -> the backend (which references it) has a new revision, the Deployment is unchanged
    _edit(person, "prod/backend/config.yaml", "hello", "bonjour")
    _push(person, "New greeting")
    source.fetch()
    plan = plan_sync(cluster, source.path)
    actions = {i.key: i.action for i in plan.items if i.action != "unchanged"}
    assert actions == {"ConfigMap prod/backend-config": "update"}
    r = apply_sync(cluster, plan)
    assert [t.canary for t in r.changed_targets] == ["prod/backend"]


def test_kind_not_served_by_cluster(source, cluster):
    """Flux image policies are git-only: a cluster without their CRDs skips them (warning); any other kind the
    cluster cannot serve is a plan error, and nothing is applied."""
    from playground.cluster.base import ClusterError

    class NoCRDs(CountingCluster):
        def __init__(self, inner, missing):
            super().__init__(inner)
            self.missing = missing

        def get(self, api_version, kind, namespace, name):
            if kind in self.missing:
                raise ClusterError(f"the cluster does not serve {api_version} (needed for {kind})")
            return self.inner.get(api_version, kind, namespace, name)

    c = NoCRDs(cluster, {"ImagePolicy", "ImageRepository"})
    plan = plan_sync(c, source.path)
    assert plan.ok and len(plan.of_action("skip")) == 4
    assert any("Flux image automation CRDs" in str(w) for w in plan.warnings)
    result = apply_sync(c, plan)
    assert len(result.skipped) == 4 and not any("Image" in k for k in c.applied)

    c = NoCRDs(cluster, {"Canary"})
    plan = plan_sync(c, source.path)
    assert plan.items == [] and any("Canary" in f.kind and "does not serve" in str(f) for f in plan.errors)


def test_failure_midway_names_object_and_rerun_completes(source, cluster):
    plan = plan_sync(cluster, source.path)
    failing = CountingCluster(cluster, fail_on="Deployment prod/frontend")
    with pytest.raises(SyncError) as e:
        apply_sync(failing, plan)
    msg = str(e.value)
    assert "Deployment prod/frontend" in msg and "simulated API failure" in msg
    assert "Deployment prod/backend" in e.value.applied and "Namespace prod" in e.value.applied
    assert "Already applied:" in msg and "run the sync again" in msg
    assert cluster.get("apps/v1", "Deployment", "prod", "frontend") is None
    # re-running completes it: only what is missing is applied
    plan2 = plan_sync(cluster, source.path)
    result = apply_sync(cluster, plan2)
    assert "Deployment prod/frontend" in result.applied and "Deployment prod/backend" in result.unchanged
    assert {i.action for i in plan_sync(cluster, source.path).items} == {"unchanged"}
