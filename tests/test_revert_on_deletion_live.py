"""revertOnDeletion on the real local playground: the Canary removed from git, the target serves all traffic.

The shared playground's prod/backend Canary gets ``revertOnDeletion: true`` (the sync puts Flagger's finalizer on
it), then its file is removed from the GitOps repository and the sync runs, as Flux would with prune, while a
client calls the apex Service ``backend.prod:9898`` through the local mesh the whole time. The sync finalizes it:
the target Deployment is scaled back up to the primary's replicas, and once it is ready the apex Service selects
its pods, the VirtualService and DestinationRules go and, after a drain, the primary and its Services. Every
request of the client must succeed; afterwards nothing of the canary is left but the target and the apex Service,
and the target answers. The Canary is put back (without revertOnDeletion) and initialized again afterwards.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from playground import finalizer, pipeline
from playground.models import Phase
from tests.support.mesh_client import MeshClient
from tests.support.playground_env import PlaygroundEnv, deployment

pytestmark = pytest.mark.integration

KEY = "prod/backend"
CANARY = "prod/backend/canary.yaml"
CANARY_API = ("flagger.app/v1beta1", "Canary")


def remove_from_git(env: PlaygroundEnv, rel: str, message: str) -> None:
    with env.checkout() as repo:
        repo.git.rm("-q", rel)
        repo.git.commit("-q", "-m", message)
        repo.git.push("-q", "origin", "HEAD:refs/heads/main")


def sync(env: PlaygroundEnv):
    rt = env.runtime()
    try:
        return pipeline.sync(rt)
    finally:
        rt.close()


def test_canary_removed_from_git_reverts_the_target_with_no_failed_request(playground) -> None:
    env = playground
    original = env.read(CANARY)
    primary_replicas = deployment(env, "backend-primary")["spec"]["replicas"]
    assert deployment(env, "backend")["spec"]["replicas"] == 0, "the test starts from an idle canary"
    try:
        env.commit(
            {CANARY: lambda t: t.replace("spec:\n", "spec:\n  revertOnDeletion: true\n", 1)},
            "backend: revertOnDeletion (test)",
        )
        sync(env)
        assert env.cluster().get(*CANARY_API, "prod", "backend")["metadata"]["finalizers"] == [finalizer.FINALIZER]

        with MeshClient(env.mesh_proxy, "http://backend.prod:9898/version", pause=0.02) as client:
            time.sleep(1.0)
            before = client.ok
            remove_from_git(env, CANARY, "backend: canary removed (test)")
            started = time.monotonic()
            outcome = sync(env)
            took = time.monotonic() - started
            fin = outcome.result.finalizers
            assert fin.deleted == [KEY] and fin.finalized == [KEY] and fin.errors == [], fin
            during = client.ok - before
            time.sleep(2.0)  # the target alone serves
        assert client.ok > 0 and client.failures == [], client.failures[:5]

        c = env.cluster()
        assert c.get(*CANARY_API, "prod", "backend") is None
        assert c.get("apps/v1", "Deployment", "prod", "backend-primary") is None
        for name in ("backend-primary", "backend-canary"):
            assert c.get("v1", "Service", "prod", name) is None
        assert c.get("networking.istio.io/v1beta1", "VirtualService", "prod", "backend") is None
        target = deployment(env, "backend")
        assert target["spec"]["replicas"] == primary_replicas
        apex = c.get("v1", "Service", "prod", "backend")
        assert apex["spec"]["selector"] == {"app": "backend"} and not apex["metadata"].get("ownerReferences")
        r = env.get_via_mesh("http://backend.prod:9898/version")
        assert r.status_code == 200  # served by the target: the primary is gone
        print(
            f"revertOnDeletion: sync with the revert took {took:.1f}s; {client.ok} requests to backend.prod "
            f"({during} during the sync), {len(client.failures)} failed; target scaled to {primary_replicas}"
        )
    finally:
        with env.checkout() as repo:
            (Path(repo.working_tree_dir) / CANARY).write_text(original)
            repo.git.add(CANARY)
            if repo.is_dirty(index=True):
                repo.git.commit("-q", "-m", "backend: canary back (test)")
                repo.git.push("-q", "origin", "HEAD:refs/heads/main")
        rt = env.runtime()
        try:
            pipeline.sync(rt)
            final = rt.controller(log=lambda _line: None, interval=1.0).run(KEY, max_ticks=120)
            assert final.phase == Phase.Initialized, final.phase
        finally:
            rt.close()
