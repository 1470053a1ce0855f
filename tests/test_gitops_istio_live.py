"""gitops-istio's Kustomize layout synced live on the local playground.

A playground is brought up (Envoy, Prometheus, registry, node agent) with ``up(manifests=DIR)`` as ``playground
up --manifests DIR`` does, DIR being the corrected copy of gitops-istio (tests/support/gitops_istio.py: its
apps/backend and apps/frontend kustomizations, the JSON 6902 sidecar patch and the images transformer as
written). The GitOps sync renders the kustomizations, applies them, and the controller initializes both
canaries. Then:

- the Deployments in the store are the rendered ones (the images transformer's tags, the patch's sidecar);
- the canaries' primaries run: backend answers through the mesh (``backend.prod:9898``) from
  ``backend-primary`` with version 6.1.0 (the kustomization's ``newTag``), frontend through the public gateway
  from ``frontend-primary`` with version 5.0.0;
- Envoy's running configuration (admin ``/config_dump``) routes both services, all weight on the primaries.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import httpx
import pytest

from playground import pipeline
from playground.local.env import Ports, up
from tests.support.gitops_istio import corrected_gitops_istio
from tests.support.playground_env import PlaygroundEnv, routes, stop_environment
from tests.support.procs import free_port

pytestmark = pytest.mark.integration

TARGETS = ("prod/backend", "prod/frontend")


def wait_for(condition, what: str, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            value = condition()
        except (httpx.HTTPError, OSError, ValueError) as e:
            value, last = None, e
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last})")
        time.sleep(0.5)


def envoy_routes(env: PlaygroundEnv, host: str) -> list[dict[str, int]]:
    """For every virtual host of Envoy's running routes serving ``host``: its last route's clusters -> weight."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{env.ports['envoy_admin']}/config_dump", timeout=5) as resp:
        dump = json.load(resp)
    out = []
    for section in dump.get("configs", []):
        for rc in section.get("dynamic_route_configs", []):
            for vh in rc["route_config"].get("virtual_hosts", []):
                if host in vh.get("domains", []):
                    action = vh["routes"][-1].get("route", {})
                    if "cluster" in action:
                        out.append({action["cluster"]: 100})
                    elif "weighted_clusters" in action:
                        out.append({c["name"]: int(c["weight"]) for c in action["weighted_clusters"]["clusters"]})
    return out


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("gitops-istio")
    manifests = corrected_gitops_istio(base / "gitops-istio")
    home = base / "home"
    ports = Ports(
        gateway=free_port(), mesh=free_port(), envoy_admin=free_port(), prometheus=free_port(),
        registry=free_port(), dagster=free_port(),
    )  # fmt: skip
    try:
        record = up(home, ports, dagster=False, manifests=manifests, interval="1s", timeout=180, out=lambda _l: None)
        e = PlaygroundEnv(home=Path(home), ports={k: int(v) for k, v in record["ports"].items()}, interval="1s")
        rt = e.runtime()
        try:
            pipeline.sync(rt)
            ctl = rt.controller(log=lambda _line: None, interval=1.0)
            for key in TARGETS:
                final = ctl.run(key, max_ticks=180)
                assert final.phase.value == "Initialized", f"{key} did not initialize: {final.phase}"
        finally:
            rt.close()
        yield e
        e.close_all()
    finally:
        stop_environment(home)


def test_rendered_objects_are_what_the_sync_applied(env):
    c = env.cluster()
    backend = c.get("apps/v1", "Deployment", "prod", "backend")
    frontend = c.get("apps/v1", "Deployment", "prod", "frontend")
    assert backend is not None and frontend is not None
    containers = backend["spec"]["template"]["spec"]["containers"]
    assert [x["name"] for x in containers] == ["backend", "istio-proxy"]  # the JSON 6902 patch
    assert containers[0]["image"] == "ghcr.io/stefanprodan/podinfo:6.1.0"  # images: newTag
    assert frontend["spec"]["template"]["spec"]["containers"][0]["image"] == "ghcr.io/stefanprodan/podinfo:5.0.0"
    assert c.get("autoscaling/v2", "HorizontalPodAutoscaler", "prod", "backend-primary") is not None


def test_canary_targets_run_and_answer(env):
    with httpx.Client(proxy=env.mesh_proxy, trust_env=False, timeout=10) as mesh:
        info = wait_for(
            lambda: (r := mesh.get("http://backend.prod:9898/")).status_code == 200 and r.json(),
            "backend.prod answering through the mesh",
        )
    assert str(info["hostname"]).startswith("backend-primary") and info["version"] == "6.1.0"
    with httpx.Client(trust_env=False, timeout=10) as client:
        info = wait_for(
            lambda: (
                (r := client.get(f"{env.gateway_url}/", headers={"Host": "www.example.com"})).status_code == 200
                and r.json()
            ),
            "the frontend answering through the public gateway",
        )
    assert str(info["hostname"]).startswith("frontend-primary") and info["version"] == "5.0.0"


def test_envoy_routes_both_services_to_their_primaries(env):
    for key in TARGETS:
        assert routes(env, key) == (100, 0)
    backend = wait_for(lambda: envoy_routes(env, "backend.prod:9898"), "Envoy's route for backend.prod:9898")
    assert all(sum(w for name, w in r.items() if "primary" in name) == 100 for r in backend), backend
    frontend = wait_for(lambda: envoy_routes(env, "*"), "Envoy's gateway route for the frontend")
    assert any(sum(w for name, w in r.items() if "frontend-primary" in name) == 100 for r in frontend), frontend
