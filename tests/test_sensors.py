"""The Dagster sensors, evaluated with Dagster's own test APIs against real git repositories, the real local
OCI registry and a real DagsterInstance:

- ``git_commit_sensor``: a new commit on the origin -> exactly one ``gitops_sync`` RunRequest (run key = sha,
  cursor moves to it); the same commit again -> no request (SkipReason);
- ``image_tag_sensor``: a newer tag matching the ImagePolicy pushed to the registry -> one commit on the origin
  rewriting the marked image lines, with Flux's message; a tag outside the range or older -> no commit;
- ``release_on_sync``: a successful ``gitops_sync`` run that changed a canary target -> one ``canary_release``
  RunRequest, run key ``target@revision``, tagged with the target (one run per target at a time).
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import dagster as dg
import git
import pytest

from jobs import gitops_sync
from jobs.resources import PlaygroundResource
from playground.local import gitorigin
from playground.local.registry import push_tag
from playground.pipeline import TARGET_TAG
from sensors import git_commit_sensor, image_tag_sensor, release_on_sync
from tests.support.playground_env import with_env_var

# every test here starts a process (Envoy, git, the workload programs, lint-imports...)
pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests"
IMAGE_FILES = (
    "prod/backend/deployment.yaml",
    "prod/frontend/deployment.yaml",
    "prod/backend/image-policy.yaml",
    "prod/frontend/image-policy.yaml",
)


def make_origin(tmp_path: Path, image: str | None = None) -> Path:
    """A bare GitOps origin seeded with the project's manifests (podinfo renamed to ``image`` if given)."""
    seed = tmp_path / "seed"
    shutil.copytree(MANIFESTS, seed)
    if image:
        for rel in IMAGE_FILES:
            p = seed / rel
            p.write_text(p.read_text().replace("ghcr.io/stefanprodan/podinfo", image))
    origin = tmp_path / "origin.git"
    assert gitorigin.ensure_origin(origin, seed)
    return origin


def head(origin: Path) -> str:
    return gitorigin.head_sha(origin)


def show(origin: Path, rel: str, rev: str = "main") -> str:
    repo = git.Repo(origin)
    try:
        return repo.git.show(f"{rev}:{rel}")
    finally:
        repo.close()


def commit(origin: Path, tmp_path: Path, rel: str, edit, message: str) -> str:
    work = tmp_path / f"w-{uuid.uuid4().hex[:6]}"
    repo = git.Repo.clone_from(str(origin), str(work), branch="main")
    try:
        p = work / rel
        p.write_text(edit(p.read_text()))
        repo.git.add(rel)
        with repo.git.custom_environment(
            GIT_AUTHOR_NAME="test",
            GIT_AUTHOR_EMAIL="test@localhost",
            GIT_COMMITTER_NAME="test",
            GIT_COMMITTER_EMAIL="test@localhost",
        ):
            repo.git.commit("-q", "-m", message)
        repo.git.push("-q", "origin", "HEAD:refs/heads/main")
        return repo.head.commit.hexsha
    finally:
        repo.close()
        shutil.rmtree(work, ignore_errors=True)


def resource(home: Path, origin: Path, registry: str | None = None) -> PlaygroundResource:
    return PlaygroundResource(backend="local", home=str(home), gitops_url=str(origin), registry=registry)


def tick(sensor, instance: dg.DagsterInstance, res: PlaygroundResource, cursor: str | None = None):
    # entered as the daemon does: the resource is set up for the tick and torn down after it
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources={"playground": res}) as ctx:
        return sensor.evaluate_tick(ctx)


# ------------------------------------------------------------------------------------------- git sensor


def test_git_sensor_requests_one_sync_per_new_commit(tmp_path: Path) -> None:
    origin = make_origin(tmp_path)
    res = resource(tmp_path / "home", origin)
    with dg.DagsterInstance.ephemeral() as instance:
        first = head(origin)
        data = tick(git_commit_sensor, instance, res, cursor=None)
        assert [r.run_key for r in data.run_requests] == [first]
        assert data.run_requests[0].run_config == {"ops": {"sync_manifests": {"config": {"sha": first}}}}
        assert data.cursor == first
        # the GitOps revision is observed from git, its sha as the data version
        (obs,) = data.asset_events
        assert obs.asset_key == dg.AssetKey(["gitops", "commit"]) and obs.metadata["sha"].value == first
        assert obs.tags["dagster/data_version"] == first

        second = commit(
            origin, tmp_path, "prod/backend/deployment.yaml", with_env_var("GREETING", "hi"), "backend: add GREETING"
        )
        data = tick(git_commit_sensor, instance, res, cursor=first)
        assert len(data.run_requests) == 1
        assert data.run_requests[0].run_key == second
        assert data.run_requests[0].tags["gitops-playground/sha"] == second
        assert data.cursor == second


def test_git_sensor_same_commit_requests_nothing(tmp_path: Path) -> None:
    origin = make_origin(tmp_path)
    res = resource(tmp_path / "home", origin)
    with dg.DagsterInstance.ephemeral() as instance:
        sha = head(origin)
        data = tick(git_commit_sensor, instance, res, cursor=sha)
        assert data.run_requests == []
        assert data.skip_message and "no new commit" in data.skip_message
        assert data.cursor in (None, sha)
        # an unreachable origin is a skip with the reason, not a crash and not a run
        data = tick(git_commit_sensor, instance, resource(tmp_path / "home2", tmp_path / "missing.git"), cursor=sha)
        assert data.run_requests == [] and "cannot read the GitOps origin" in (data.skip_message or "")


# ----------------------------------------------------------------------------------------- image sensor


@pytest.fixture
def image_origin(tmp_path: Path, playground):
    """A fresh origin whose podinfo image is a repository of its own on the shared local registry (so tags
    pushed by one test are invisible to the others), with the current tag 6.7.0 pushed."""
    repo = f"t{uuid.uuid4().hex[:10]}/podinfo"
    origin = make_origin(tmp_path, image=f"ghcr.io/{repo}")
    push_tag(playground.registry_url, repo, "6.7.0")
    return origin, repo, resource(tmp_path / "home", origin, registry=playground.registry_url)


def test_image_sensor_commits_a_newer_matching_tag(image_origin, playground, tmp_path: Path) -> None:
    origin, repo, res = image_origin
    before = head(origin)
    push_tag(playground.registry_url, repo, "6.7.1")
    with dg.DagsterInstance.ephemeral() as instance:
        data = tick(image_tag_sensor, instance, res)
        assert data.run_requests == []  # it commits; the git sensor launches the sync
        after = head(origin)
        assert after != before
        r = git.Repo(origin)
        try:
            c = r.commit(after)
            assert c.parents[0].hexsha == before  # exactly one new commit
            message = c.message
            changed = sorted(c.stats.files)
        finally:
            r.close()
        image = f"ghcr.io/{repo}"
        assert message.splitlines()[0] == (
            f"Update images: {image} to 6.7.1 (prod:backend), {image} to 6.7.1 (prod:frontend)"
        )
        assert f"- {image}: 6.7.0 -> 6.7.1 (ImagePolicy prod:backend) in prod/backend/deployment.yaml" in message
        assert changed == ["prod/backend/deployment.yaml", "prod/frontend/deployment.yaml"]
        for name in ("backend", "frontend"):
            text = show(origin, f"prod/{name}/deployment.yaml")
            assert f'          image: {image}:6.7.1 # {{"$imagepolicy": "prod:{name}"}}\n' in text + "\n"
            # nothing else on the file changed
            old = show(origin, f"prod/{name}/deployment.yaml", before)
            assert text == old.replace(f"{image}:6.7.0", f"{image}:6.7.1")
        assert "committed to the GitOps repo" in (data.skip_message or "")

        # the next scan finds nothing newer: no second commit
        data = tick(image_tag_sensor, instance, res)
        assert head(origin) == after and data.run_requests == []
        # and the git sensor takes it from there: one sync for the image commit
        sync = tick(git_commit_sensor, instance, res, cursor=before)
        assert [q.run_key for q in sync.run_requests] == [after]


@pytest.mark.parametrize(
    "tags",
    [["7.0.0"], ["6.6.9", "5.9.0"], ["7.1.0", "6.6.0", "6.7.1-rc.1", "latest"]],
    ids=["outside-range", "older", "mixed"],
)
def test_image_sensor_ignores_non_matching_or_older_tags(image_origin, playground, tags) -> None:
    origin, repo, res = image_origin
    before = head(origin)
    for t in tags:
        push_tag(playground.registry_url, repo, t)
    with dg.DagsterInstance.ephemeral() as instance:
        data = tick(image_tag_sensor, instance, res)
    assert head(origin) == before
    assert data.run_requests == []
    assert "no newer image tag" in (data.skip_message or "")


# ------------------------------------------------------------------------------------- release_on_sync


def test_release_on_sync_requests_one_release_for_the_changed_target(tmp_path: Path) -> None:
    """A real gitops_sync run (on a store of its own: the cluster objects, no processes needed) in a real
    DagsterInstance; the canaries were initialized at the seeded revision, then a commit changes the backend."""
    from playground.local.cluster import LocalCluster
    from playground.models import CanaryStatus, Phase

    origin = make_origin(tmp_path)
    res = resource(tmp_path / "home", origin)
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        first = gitops_sync.execute_in_process(resources={"playground": res}, instance=instance)
        assert first.success
        # both canaries initialized at the synced revisions (what the first canary_release run records)
        cluster = LocalCluster(tmp_path / "home")
        try:
            for rec in first.get_asset_materialization_events():
                mat = rec.event_specific_data.materialization
                if mat.asset_key.path[0] == "workloads":
                    ns, name = mat.asset_key.path[1:]
                    rev = mat.metadata["revision"].value
                    cluster.set_canary_status(
                        ns, name, CanaryStatus(phase=Phase.Initialized, lastAppliedSpec=rev, lastPromotedSpec=rev)
                    )
        finally:
            cluster.close()

        commit(
            origin, tmp_path, "prod/backend/deployment.yaml", with_env_var("GREETING", "hello"), "backend: say hello"
        )
        result = gitops_sync.execute_in_process(resources={"playground": res}, instance=instance)
        assert result.success
        due = {}
        for rec in result.get_asset_materialization_events():
            mat = rec.event_specific_data.materialization
            if mat.asset_key.path[0] == "workloads":
                due["/".join(mat.asset_key.path[1:])] = (
                    mat.metadata["release_due"].value,
                    mat.metadata["revision"].value,
                )
        assert due["prod/frontend"][0] is False and due["prod/backend"][0] is True
        revision = due["prod/backend"][1]

        run = instance.get_run_by_id(result.run_id)
        ctx = dg.build_run_status_sensor_context(
            sensor_name="release_on_sync",
            dagster_instance=instance,
            dagster_run=run,
            dagster_event=result.get_run_success_event(),
        )
        requests = release_on_sync(ctx)
        assert isinstance(requests, list) and len(requests) == 1
        req = requests[0]
        assert req.run_key == f"prod/backend@{revision}"
        assert req.run_config == {"ops": {"release": {"config": {"target": "prod/backend"}}}}
        assert req.tags[TARGET_TAG] == "prod-backend"
        assert req.tags["gitops-playground/revision"] == revision

        # once the release ran (status as canary_release leaves it), a sync that changes nothing requests nothing
        cluster = LocalCluster(tmp_path / "home")
        try:
            cluster.set_canary_status(
                "prod",
                "backend",
                CanaryStatus(phase=Phase.Succeeded, lastAppliedSpec=revision, lastPromotedSpec=revision),
            )
        finally:
            cluster.close()
        again = gitops_sync.execute_in_process(resources={"playground": res}, instance=instance)
        assert again.success
        ctx = dg.build_run_status_sensor_context(
            sensor_name="release_on_sync",
            dagster_instance=instance,
            dagster_run=instance.get_run_by_id(again.run_id),
            dagster_event=again.get_run_success_event(),
        )
        skipped = release_on_sync(ctx)
        assert isinstance(skipped, dg.SkipReason) and "changed no canary target" in skipped.skip_message


def _child_git_processes() -> dict[str, str]:
    """This process's live git children, pid -> command line (GitPython keeps `git cat-file` running per open
    Repo). A zombie has an empty command line and does not count."""
    me = Path(f"/proc/{os.getpid()}")
    pids = [pid for task in (me / "task").iterdir() for pid in (task / "children").read_text().split()]
    out = {}
    for pid in pids:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue  # exited meanwhile
        if cmd.startswith("git"):
            out[pid] = cmd
    return out


def test_sensor_ticks_leave_no_checkout_open(tmp_path: Path) -> None:
    """The resource's runtime is torn down after each evaluation: the checkouts' git processes are gone."""
    origin = make_origin(tmp_path)
    res = resource(tmp_path / "home", origin)
    before = set(_child_git_processes())  # whatever earlier tests in this process left is not this test's
    with dg.DagsterInstance.ephemeral() as instance:
        first = tick(git_commit_sensor, instance, res, cursor=None)
        assert [r.run_key for r in first.run_requests] == [head(origin)]
        second = tick(image_tag_sensor, instance, res)  # no registry configured: the scan reads git, then skips
        assert second.skip_message

    # Repo.close() terminates the checkout's `git cat-file` and waits for it: none of the sensors' is left
    assert {pid: cmd for pid, cmd in _child_git_processes().items() if pid not in before} == {}
