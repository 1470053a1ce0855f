"""Operator controls on the kubernetes backend: the installed console script (from outside the repository) against
the fake API server through the real client. Requests go into the Canary's status subresource (a read-modify-write
with the resourceVersion), pause is persisted there and holds a new revision, bad input changes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from playground import routing
from playground.cluster.kubernetes import KubernetesCluster
from playground.controller import Controller, Settings
from playground.models import Phase
from tests.support.fake_kube import FakeKube
from tests.test_k8s_release import kubeconfig_for, new_revision, routing_canary, seed

pytestmark = pytest.mark.integration

PLAYGROUND = Path(sys.executable).parent / "playground"


def test_pause_resume_abort_and_bad_input_on_the_kubernetes_backend(tmp_path) -> None:
    with FakeKube(auto_rollout=True) as kube:
        seed(kube, "prod", "http://127.0.0.1:9", "http://127.0.0.1:9")
        api = kube.api_client()
        cluster = KubernetesCluster(api_client=api, sleep=lambda s: None)
        ctl = Controller(cluster, Settings(interval_override=0.05), log=lambda _l: None)
        assert ctl.run("prod/backend").phase == Phase.Initialized
        cfg = kubeconfig_for(kube, tmp_path / "kubeconfig")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PLAYGROUND_") and "proxy" not in k.lower()}
        env["PLAYGROUND_INTERVAL"] = "0.05s"

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [str(PLAYGROUND), *args, "prod/backend", "--kubeconfig", str(cfg)],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )

        def status() -> dict:
            return kube.object("flagger.app/v1beta1", "Canary", "prod", "backend")["status"]

        r = cli("pause")
        assert r.returncode == 0 and "pause applied" in r.stdout, r.stdout + r.stderr
        assert status()["paused"] is True and status().get("requests", []) == []

        new_revision(cluster, "prod")
        held = ctl.run("prod/backend", max_ticks=3)  # a restarted release keeps the pause from the status
        assert held.phase == Phase.Initialized and held.revision != status()["lastAppliedSpec"]
        assert kube.object("apps/v1", "Deployment", "prod", "backend")["spec"]["replicas"] == 0

        before = status()
        r = cli("promote")
        assert r.returncode == 1 and r.stderr.strip() == (
            "error: prod/backend: cannot promote a canary that is Initialized, paused; possible now: resume"
        ), r.stderr
        assert status() == before

        r = cli("resume")  # no release process drives it: the command ticks once; the held revision starts
        assert r.returncode == 0 and "resume applied" in r.stdout, r.stdout + r.stderr
        assert status()["phase"] == "Progressing" and status()["paused"] is False

        r = cli("abort")  # drives the release here, until it ends: at once
        assert r.returncode == 0 and "abort applied" in r.stdout, r.stdout + r.stderr
        assert status()["phase"] == "Failed"
        vs = kube.object("networking.istio.io/v1beta1", "VirtualService", "prod", "backend")
        assert routing.routes_of(routing_canary("prod"), vs)[:2] == (100, 0)
        assert kube.object("apps/v1", "Deployment", "prod", "backend")["spec"]["replicas"] == 0
        api.close()
