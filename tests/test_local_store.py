"""The local object store (SQLite) and LocalCluster over it, without the node agent."""

from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path

import pytest

from playground import routing
from playground.cluster.base import ClusterError, Conflict, NotFound
from playground.local.cluster import LocalCluster
from playground.local.store import Home, Store, WorkloadRow
from playground.models import Canary, CanaryStatus, Phase


def _deployment(
    name: str = "web", ns: str = "prod", replicas: int | None = 1, image: str = "stefanprodan/podinfo:6.7.0", **spec
) -> dict:
    dep = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": name, "image": image}]},
            },
            **spec,
        },
    }
    if replicas is not None:
        dep["spec"]["replicas"] = replicas
    return dep


# ------------------------------------------------------------------------------------------ store


def test_put_get_list_delete_and_versions(tmp_path: Path) -> None:
    s = Store(tmp_path / "state.db")
    c0 = s.change_counter()
    a = s.put(_deployment("a"))
    b = s.put(_deployment("b"))
    assert int(b["metadata"]["resourceVersion"]) > int(a["metadata"]["resourceVersion"]) > c0
    assert a["metadata"]["generation"] == 1 and a["metadata"]["uid"]
    assert (
        s.get("apps/v1", "Deployment", "prod", "a")["metadata"]["resourceVersion"] == a["metadata"]["resourceVersion"]
    )
    assert [o["metadata"]["name"] for o in s.list("apps/v1", "Deployment", "prod")] == ["a", "b"]
    assert s.list("apps/v1", "Deployment", "other") == []
    # same spec: new resourceVersion, same generation; changed spec: generation + 1; uid kept
    a2 = s.put(_deployment("a"))
    assert a2["metadata"]["generation"] == 1 and a2["metadata"]["uid"] == a["metadata"]["uid"]
    a3 = s.put(_deployment("a", replicas=3))
    assert a3["metadata"]["generation"] == 2
    assert s.change_counter() == int(a3["metadata"]["resourceVersion"])
    # cluster-scoped kinds have no namespace; namespaced ones default to "default"
    ns = s.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "prod", "namespace": "x"}})
    assert "namespace" not in ns["metadata"]
    cm = s.put({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {}})
    assert cm["metadata"]["namespace"] == "default"
    before = s.change_counter()
    assert s.delete("apps/v1", "Deployment", "prod", "a") is True
    assert s.delete("apps/v1", "Deployment", "prod", "a") is False
    assert s.change_counter() == before + 1
    assert s.get("apps/v1", "Deployment", "prod", "a") is None


def test_optimistic_concurrency(tmp_path: Path) -> None:
    s = Store(tmp_path / "state.db")
    first = s.put(_deployment("a"))
    rv = first["metadata"]["resourceVersion"]
    s.put(_deployment("a", replicas=2), expected_version=rv)
    with pytest.raises(Conflict, match="changed by someone else"):
        s.put(_deployment("a", replicas=5), expected_version=rv)
    with pytest.raises(Conflict):
        s.put(_deployment("new"), expected_version=7)  # must exist with that version
    s.put(_deployment("new"), expected_version=0)  # 0 = create only
    with pytest.raises(Conflict):
        s.put(_deployment("new"), expected_version=0)
    with pytest.raises(Conflict):
        s.delete("apps/v1", "Deployment", "prod", "a", expected_version=rv)
    assert s.get("apps/v1", "Deployment", "prod", "a")["spec"]["replicas"] == 2


def _increment_many(db: str, n: int) -> None:
    s = Store(db)
    for _ in range(n):

        def inc(obj):
            obj["data"]["count"] = str(int(obj["data"]["count"]) + 1)

        s.update("v1", "ConfigMap", "default", "counter", inc, retries=1000)
    s.close()


def test_concurrent_writers_lose_no_update(tmp_path: Path) -> None:
    """Several processes doing read-modify-write with resourceVersions: every increment lands."""
    db = str(tmp_path / "state.db")
    Store(db).put({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "counter"}, "data": {"count": "0"}})
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_increment_many, args=(db, 40)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert Store(db).get("v1", "ConfigMap", "default", "counter")["data"]["count"] == "160"


def test_status_rows_and_canary_status_cas(tmp_path: Path) -> None:
    s = Store(tmp_path / "state.db")
    c = s.status_counter()
    s.put_workload_status(WorkloadRow("prod", "web", revision="r1", desired=2, ready=1, message="x"))
    row = s.get_workload_status("prod", "web")
    assert (row.revision, row.desired, row.ready, row.message) == ("r1", 2, 1, "x")
    assert s.status_counter() == c + 1
    assert s.get_canary_status("prod", "web") is None
    v1 = s.put_canary_status("prod", "web", {"phase": "Initialized"}, expected_version=0)
    with pytest.raises(Conflict):
        s.put_canary_status("prod", "web", {"phase": "Progressing"}, expected_version=0)
    s.put_canary_status("prod", "web", {"phase": "Progressing"}, expected_version=v1)
    assert s.get_canary_status("prod", "web") == ({"phase": "Progressing"}, v1 + 1)


# ------------------------------------------------------------------------------------------ cluster


def test_local_cluster_objects_and_scale(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path)
    stored = c.apply({**_deployment("web", replicas=2), "status": {"readyReplicas": 99}})
    assert stored["status"]["readyReplicas"] == 0  # status comes from the agent, never from the applier
    c.scale("prod", "web", 0)
    # applied again from git without replicas: the scaled count stays (kubectl apply semantics)
    c.apply(_deployment("web", replicas=None, image="stefanprodan/podinfo:6.7.1"))
    assert c.get("apps/v1", "Deployment", "prod", "web")["spec"]["replicas"] == 0
    with pytest.raises(NotFound):
        c.scale("prod", "nope", 1)
    with pytest.raises(NotFound):
        c.workload_status("prod", "nope")
    # a stale resourceVersion in the applied object is a conflict
    old = c.get("apps/v1", "Deployment", "prod", "web")
    c.scale("prod", "web", 3)
    with pytest.raises(Conflict):
        c.apply(old)
    with pytest.raises(ClusterError):
        c.apply({"apiVersion": "v1", "kind": "Service", "metadata": {}})
    assert c.delete("apps/v1", "Deployment", "prod", "web") and c.get("apps/v1", "Deployment", "prod", "web") is None


def test_workload_status_without_agent_and_progress_deadline(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path)
    c.apply(_deployment("web", replicas=1, progressDeadlineSeconds=1))
    ws = c.workload_status("prod", "web")
    assert (ws.desired, ws.updated, ws.ready, ws.deadline_exceeded) == (1, 0, 0, False)
    assert "node agent is not running" in ws.message and not ws.is_ready()
    assert ws.unavailable_since is not None
    time.sleep(1.2)
    ws = c.workload_status("prod", "web")
    assert ws.deadline_exceeded and "progress deadline" in ws.message
    c.scale("prod", "web", 0)
    ws = c.workload_status("prod", "web")
    assert ws.desired == 0 and not ws.deadline_exceeded and ws.unavailable_since is None


def _canary(cmds: list[str]) -> dict:
    return {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": "web", "namespace": "prod"},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "service": {"port": 9898},
            "analysis": {
                "interval": "10s",
                "webhooks": [
                    {"name": f"h{i}", "url": "http://flagger-loadtester.prod/", "metadata": {"cmd": cmd}}
                    for i, cmd in enumerate(cmds)
                ],
            },
        },
    }


def test_canary_status_and_loadtester_allowlist(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path)
    c.apply(_canary(["hey -z 1m http://web-canary.prod:9898/", "curl -s http://web-canary.prod:9898/"]))
    allow = json.loads((tmp_path / "loadtester-allowlist.json").read_text())
    assert allow == {"commands": ["curl -s http://web-canary.prod:9898/", "hey -z 1m http://web-canary.prod:9898/"]}
    assert c.get_canary_status("prod", "web") is None
    c.set_canary_status("prod", "web", CanaryStatus(phase=Phase.Progressing, canaryWeight=10))
    st = c.get_canary_status("prod", "web")
    assert st.phase == Phase.Progressing and st.canaryWeight == 10
    # the status is visible on the object and survives a re-apply of the Canary from git
    c.apply(_canary(["hey -z 1m http://web-canary.prod:9898/"]))
    assert c.get("flagger.app/v1beta1", "Canary", "prod", "web")["status"]["canaryWeight"] == 10
    assert json.loads((tmp_path / "loadtester-allowlist.json").read_text())["commands"] == [
        "hey -z 1m http://web-canary.prod:9898/"
    ]
    assert c.delete("flagger.app/v1beta1", "Canary", "prod", "web")
    assert c.get_canary_status("prod", "web") is None
    assert json.loads((tmp_path / "loadtester-allowlist.json").read_text())["commands"] == []


def test_routing_objects_render_envoy_config_on_apply(tmp_path: Path) -> None:
    """With an environment's ports recorded, applying routes rewrites the Envoy files at once."""
    home = Home(tmp_path)
    home.write_env(
        {"ports": {"gateway": 18080, "mesh": 18081, "envoy_admin": 18082, "prometheus": 18090, "registry": 18050}}
    )
    c = LocalCluster(tmp_path)
    canary = Canary.model_validate(_canary([]))
    target = _deployment("web")
    for obj in routing.bootstrap_objects(canary, target):
        c.apply(obj)
    cds = (tmp_path / "envoy" / "cds.yaml").read_text()
    assert "prod_web-primary" in cds
    mesh = (tmp_path / "envoy" / "rds-mesh.yaml").read_text()
    before = mesh
    c.apply(routing.virtual_service(canary, 60, 40))
    mesh = (tmp_path / "envoy" / "rds-mesh.yaml").read_text()
    assert mesh != before and "40" in mesh
    assert c.http_proxy() == "http://127.0.0.1:18081" and c.gateway_url() == "http://127.0.0.1:18080"
    assert c.resolve_url("http://prometheus.istio-system:9090/api") == "http://127.0.0.1:18090/api"


def test_a_route_change_is_rendered_once_and_marked_for_the_node_agent(tmp_path: Path) -> None:
    """Storing a route writes the files its check rendered (the same as a render of the store after it) and
    marks the store's counter they reflect; a Deployment stored later leaves the mark behind (the node agent
    renders then: which replicas a Service selects may have changed)."""
    from playground.local.cluster import _render, rendered_counter

    home = Home(tmp_path)
    home.write_env(
        {"ports": {"gateway": 18080, "mesh": 18081, "envoy_admin": 18082, "prometheus": 18090, "registry": 18050}}
    )
    c = LocalCluster(tmp_path)
    canary = Canary.model_validate(_canary([]))
    c.apply(_deployment("web"))
    for obj in routing.bootstrap_objects(canary, _deployment("web")):
        c.apply(obj)
    assert rendered_counter(home) == c.store.change_counter()
    from playground.local import cluster as local_cluster

    renders = []
    real_render = local_cluster._render

    def counting_render(*args, **kwargs):
        renders.append(1)
        return real_render(*args, **kwargs)

    for weight in (10, 20, 30):
        renders.clear()
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(local_cluster, "_render", counting_render)
            c.apply(routing.virtual_service(canary, 100 - weight, weight))
        assert len(renders) == 1  # the check's render is the one written
        assert rendered_counter(home) == c.store.change_counter()
        # what was written is exactly what a full render of the stored objects gives
        from playground.local import envoy

        fresh = tmp_path / "fresh"
        envoy.write_config(_render(home, c.store, home.ports() or {}), fresh)
        for f in fresh.iterdir():
            assert (tmp_path / "envoy" / f.name).read_text() == f.read_text().replace(str(fresh), str(home.envoy_dir))
    c.apply(_deployment("other"))
    assert rendered_counter(home) != c.store.change_counter()
