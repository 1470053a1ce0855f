"""PostgreSQL as the Dagster instance storage, for real: `playground up --storage postgres` (the console script,
from outside the repository) starts Debian's PostgreSQL for the playground; the real daemon then syncs the GitOps
origin and releases three targets of ONE commit concurrently, everything recorded in PostgreSQL; `down --purge`
stops the server and removes its data.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from playground.local.env import port_open, process_alive
from playground.local.store import Store
from tests.support.dagster_playground import wait_for
from tests.support.procs import free_port
from tests.support.scale_targets import NEW, PODINFO, commit_new_image, write_manifests

pytestmark = pytest.mark.integration

PLAYGROUND = Path(sys.executable).parent / "playground"
N = 3


def _cli(*args: str, home: Path, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLAYGROUND_") and k != "DAGSTER_HOME"}
    env = {k: v for k, v in env.items() if k.lower() not in ("http_proxy", "https_proxy", "no_proxy")}
    return subprocess.run(
        [str(PLAYGROUND), *args, "--home", str(home)], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def _phases(home: Path, targets: list[str]) -> dict[str, str]:
    store = Store(home / "state.db")
    try:
        out = {}
        for t in targets:
            st = store.get_canary_status(*t.split("/"))
            out[t] = (st[0] or {}).get("phase", "") if st else ""
        return out
    finally:
        store.close()


def test_sync_and_concurrent_releases_on_postgres(tmp_path_factory) -> None:
    work = tmp_path_factory.mktemp("pg")
    work.chmod(0o755)
    home = work / "home"
    manifests = work / "manifests"
    targets = write_manifests(manifests, N, "1s")
    ports = {
        "--gateway-port": free_port(),
        "--mesh-port": free_port(),
        "--envoy-admin-port": free_port(),
        "--prometheus-port": free_port(),
        "--registry-port": free_port(),
        "--dagster-port": free_port(),
    }
    args = ["up", "--storage", "postgres", "--manifests", str(manifests), "--timeout", "180"]
    for k, v in ports.items():
        args += [k, str(v)]
    pg = None
    try:
        up = _cli(*args, home=home, cwd=work)
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        env = json.loads((home / "env.json").read_text())
        pg = env["components"]["postgres"]
        pg_port = env["ports"]["postgres"]
        assert "postgres     started" in up.stdout and port_open(pg_port)
        assert env["settings"]["storage"] == "postgres"
        assert "postgres" in (home / "dagster" / "dagster.yaml").read_text()

        os.environ["DAGSTER_HOME"] = str(home / "dagster")
        with dg.DagsterInstance.get() as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
            # the daemon syncs the origin and initializes every canary through its sensors
            wait_for(
                lambda: set(_phases(home, targets).values()) == {"Initialized"},
                300,
                "the canaries to be initialized",
                poll=1.0,
            )
            syncs = instance.get_run_records(dg.RunsFilter(job_name="gitops_sync"))
            assert syncs and syncs[0].dagster_run.status == dg.DagsterRunStatus.SUCCESS

            # ONE commit releases all targets: they run at the same time, each recorded in PostgreSQL
            sha = commit_new_image(home, targets, work)

            def released():
                sync = instance.get_run_records(
                    dg.RunsFilter(job_name="gitops_sync", tags={"gitops-playground/sha": sha})
                )
                if not sync:
                    return None
                runs = instance.get_run_records(
                    dg.RunsFilter(job_name="canary_release", created_after=sync[0].create_timestamp)
                )
                return runs if len(runs) == N and all(r.dagster_run.is_finished for r in runs) else None

            runs = wait_for(released, 600, f"{N} releases to end", poll=1.0)
            assert {r.dagster_run.status for r in runs} == {dg.DagsterRunStatus.SUCCESS}
            assert set(_phases(home, targets).values()) == {"Succeeded"}
            # concurrent: every release started before any other ended
            assert max(r.start_time for r in runs) < min(r.end_time for r in runs)
            for t in targets:
                ns, name = t.split("/")
                ticks = instance.fetch_materializations(dg.AssetKey(["releases", ns, name]), limit=1000).records
                promotions = instance.fetch_materializations(dg.AssetKey(["promotions", ns, name]), limit=10).records
                assert len(promotions) == 1 and len(ticks) >= 7, (t, len(ticks))
                checks = instance.event_log_storage.get_asset_check_execution_history(
                    dg.AssetCheckKey(dg.AssetKey(["release_metrics", ns, name]), "scraped"), limit=100
                )
                assert checks, t
        store = Store(home / "state.db")
        try:
            for t in targets:  # the new image is promoted to every primary
                ns, name = t.split("/")
                primary = store.get("apps/v1", "Deployment", ns, f"{name}-primary")
                assert primary["spec"]["template"]["spec"]["containers"][0]["image"] == f"{PODINFO}:{NEW}"
        finally:
            store.close()
        status = _cli("status", home=home, cwd=work)
        assert any(ln.startswith("postgres ") and "running" in ln for ln in status.stdout.splitlines()), status.stdout
    finally:
        os.environ.pop("DAGSTER_HOME", None)
        down = _cli("down", "--purge", home=home, cwd=work, timeout=180)
    assert down.returncode == 0, down.stderr
    assert pg is not None and not process_alive(pg["pid"], pg.get("ticks"))
    assert not port_open(pg_port) and not home.exists()
