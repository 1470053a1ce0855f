"""A real local playground WITH Dagster (daemon and webserver), started the way users start it: the installed
console script ``playground up`` as a subprocess, from a directory outside the repository, on free ports.

    pg = start(tmp / "home", manifests=DIR, cwd=tmp)      # playground up --manifests DIR ...
    pg.asset_keys()                                       # the webserver's graph, through its GraphQL API
    pg.commit({"prod/api/canary.yaml": text, "prod/old.yaml": None}, "message")   # None deletes a file
    stop(tmp / "home")                                    # playground down --purge (+ a last sweep)

Used by tests/test_graph.py, tests/test_run_takeover.py (through the shared ``dagster_backend`` fixture of
tests/conftest.py: ``start_backend_only``) and bench/graph_follow.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import git

from tests.support.playground_env import stop_environment
from tests.support.procs import free_ports

PLAYGROUND = Path(sys.executable).parent / "playground"
TARGET_KINDS = ("workloads", "releases", "release_metrics", "promotions", "rollbacks")


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k.lower() not in ("http_proxy", "https_proxy", "no_proxy")
        and not k.startswith("PLAYGROUND_")
        and k != "DAGSTER_HOME"
    }
    env.update(extra)
    return env


def run_cli(
    *args: str, cwd: Path, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(PLAYGROUND), *args], cwd=cwd, env=env or clean_env(), capture_output=True, text=True, timeout=timeout
    )


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, poll: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as e:  # the webserver may be reloading: keep polling until the deadline
            last_error = e
        time.sleep(poll)
    raise AssertionError(
        f"timed out after {timeout:.0f}s waiting for {what}" + (f" (last error: {last_error})" if last_error else "")
    )


@dataclass
class DagsterPlayground:
    home: Path
    ports: dict[str, int]
    cwd: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['dagster']}"

    @property
    def origin(self) -> Path:
        return self.home / "git" / "gitops.git"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return run_cli(*args, cwd=self.cwd, timeout=timeout, env=clean_env(DAGSTER_HOME=str(self.dagster_home)))

    # -- GraphQL (what the UI shows) ---------------------------------------------------------------------
    def graphql(self, query: str, variables: dict | None = None) -> dict:
        from assets.graph import graphql

        return graphql(self.url, query, variables)

    def asset_keys(self) -> set[tuple[str, ...]]:
        data = self.graphql("{ assetNodes { assetKey { path } } }")
        return {tuple(n["assetKey"]["path"]) for n in data["assetNodes"]}

    def target_keys(self) -> set[tuple[str, ...]]:
        return {k for k in self.asset_keys() if len(k) == 3 and k[0] in TARGET_KINDS}

    def check_keys(self) -> set[tuple[tuple[str, ...], str]]:
        data = self.graphql(
            "{ assetNodes { assetKey { path } assetChecksOrError { ... on AssetChecks { checks { name } } } } }"
        )
        out = set()
        for n in data["assetNodes"]:
            for c in (n["assetChecksOrError"] or {}).get("checks") or []:
                out.add((tuple(n["assetKey"]["path"]), c["name"]))
        return out

    def instance_assets(self) -> dict[tuple[str, ...], bool]:
        """Every asset key with events in the instance -> whether the graph defines it."""
        data = self.graphql("{ assetsOrError { ... on AssetConnection { nodes { key { path } definition { id } } } } }")
        return {tuple(n["key"]["path"]): n["definition"] is not None for n in data["assetsOrError"]["nodes"]}

    def materializations(self, key: tuple[str, ...], limit: int = 200) -> list[dict]:
        data = self.graphql(
            "query($k: AssetKeyInput!, $n: Int) { assetOrError(assetKey: $k) { __typename ... on Asset {"
            " assetMaterializations(limit: $n) { runId partition timestamp } } } }",
            {"k": {"path": list(key)}, "n": limit},
        )["assetOrError"]
        return data.get("assetMaterializations") or [] if data["__typename"] == "Asset" else []

    def check_executions(self, key: tuple[str, ...], check: str, limit: int = 50) -> list[dict]:
        data = self.graphql(
            "query($k: AssetKeyInput!, $c: String!, $n: Int!) { assetCheckExecutions(assetKey: $k, checkName: $c,"
            " limit: $n) { runId status partition evaluation { success metadataEntries { label"
            " ... on TextMetadataEntry { text } ... on FloatMetadataEntry { floatValue }"
            " ... on IntMetadataEntry { intValue } } } } }",
            {"k": {"path": list(key)}, "c": check, "n": limit},
        )
        return data["assetCheckExecutions"]

    def runs(self, job: str | None = None, limit: int = 100) -> list[dict]:
        flt: dict[str, Any] = {"pipelineName": job} if job else {}
        data = self.graphql(
            "query($f: RunsFilter, $n: Int) { runsOrError(filter: $f, limit: $n) { ... on Runs { results {"
            " runId status jobName startTime endTime tags { key value } } } } }",
            {"f": flt, "n": limit},
        )
        return data["runsOrError"]["results"]

    def run_failure(self, run_id: str) -> str:
        data = self.graphql(
            "query($id: ID!) { logsForRun(runId: $id) { ... on EventConnection { events { __typename"
            " ... on ExecutionStepFailureEvent { failureMetadata { description metadataEntries { label"
            " ... on MarkdownMetadataEntry { mdStr } } } } } } } }",
            {"id": run_id},
        )
        out = []
        for e in data["logsForRun"]["events"]:
            if e["__typename"] == "ExecutionStepFailureEvent":
                meta = e.get("failureMetadata") or {}
                out.append(meta.get("description") or "")
                out += [m.get("mdStr", "") for m in meta.get("metadataEntries") or []]
        return "\n".join(out)

    def location(self) -> tuple[str, str]:
        data = self.graphql(
            "{ workspaceOrError { ... on Workspace { locationEntries { name locationOrLoadError {"
            " ... on RepositoryLocation { repositories { name } } } } } } }"
        )
        entry = data["workspaceOrError"]["locationEntries"][0]
        return entry["name"], entry["locationOrLoadError"]["repositories"][0]["name"]

    # -- git -----------------------------------------------------------------------------------------------
    def commit(self, changes: dict[str, str | None | Callable[[str], str]], message: str) -> str:
        tmp = Path(tempfile.mkdtemp(prefix="gitops-graph-"))
        try:
            repo = git.Repo.clone_from(str(self.origin), str(tmp / "w"), branch="main")
            root = Path(repo.working_tree_dir or "")
            for rel, change in changes.items():
                p = root / rel
                if change is None:
                    repo.git.rm("-q", rel)
                    continue
                text = change(p.read_text()) if callable(change) else change
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_text(text)
                repo.git.add(rel)
            with repo.git.custom_environment(
                GIT_AUTHOR_NAME="test",
                GIT_AUTHOR_EMAIL="test@localhost",
                GIT_COMMITTER_NAME="test",
                GIT_COMMITTER_EMAIL="test@localhost",
            ):
                repo.git.commit("-q", "-m", message)
            repo.git.push("-q", "origin", "HEAD:refs/heads/main")
            sha = repo.head.commit.hexsha
            repo.close()
            return sha
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def head(self) -> str:
        repo = git.Repo(str(self.origin))
        try:
            return repo.commit("refs/heads/main").hexsha
        finally:
            repo.close()

    def read(self, relpath: str) -> str:
        repo = git.Repo(str(self.origin))
        try:
            return repo.git.show(f"main:{relpath}")
        finally:
            repo.close()

    def sync_run_of(self, sha: str) -> dict | None:
        for r in self.runs("gitops_sync"):
            tags = {t["key"]: t["value"] for t in r["tags"]}
            if tags.get("gitops-playground/sha") == sha:
                return r
        return None


def start(home: Path, *, manifests: Path, cwd: Path, interval: str = "1s", timeout: float = 300) -> DagsterPlayground:
    """``playground up --manifests DIR`` on free ports (console script, from ``cwd``); stopped again on failure."""
    names = ("gateway", "mesh", "envoy_admin", "prometheus", "registry", "dagster")
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    args = ["up", "--home", str(home), "--manifests", str(manifests), "--interval", interval, "--timeout", "240"]
    for name, port in ports.items():
        args += [f"--{name.replace('_', '-')}-port", str(port)]
    try:
        done = run_cli(*args, cwd=cwd, timeout=timeout)
        if done.returncode != 0:
            raise AssertionError(
                f"playground up failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            )
    except BaseException:
        stop(home)
        raise
    return DagsterPlayground(home=home, ports=ports, cwd=cwd)


def stop(home: Path) -> None:
    stop_environment(home)


def copy_target(text: str, old: str = "backend", new: str = "api") -> str:
    """A manifest of ``prod/backend`` made into one of ``prod/api`` (names, labels, webhooks, image policy)."""
    return text.replace(old, new)


def short_windows(text: str) -> str:
    """Short load tests and metric windows (as tests/conftest.py does), so releases take seconds."""
    return text.replace("interval: 30s", "interval: 5s").replace("hey -z 1m", "hey -z 5s")


IN_FLIGHT = ("QUEUED", "STARTING", "STARTED", "CANCELING")
FINISHED = ("SUCCESS", "FAILURE", "CANCELED")


def start_backend_only(base: Path) -> DagsterPlayground:
    """``playground up --manifests DIR`` with DIR = the project's manifests without prod/frontend (the backend's
    load test and metric windows shortened), then its bootstrap through the sensors: the first gitops_sync run and
    prod/backend's first canary_release (Initialized). Stopped again on failure."""
    root = Path(__file__).resolve().parents[2]
    manifests = base / "my-gitops"
    shutil.copytree(root / "manifests", manifests)
    shutil.rmtree(manifests / "prod" / "frontend")  # DIR: only prod/backend
    canary = manifests / "prod" / "backend" / "canary.yaml"
    canary.write_text(short_windows(canary.read_text()))
    home = base / "home"
    env = start(home, manifests=manifests, cwd=base)
    try:
        wait_for(lambda: env.sync_run_of(env.head()), 240, "the first gitops_sync run")
        wait_for(
            lambda: any(r["status"] == "SUCCESS" for r in env.runs("canary_release")),
            240,
            "prod/backend's first canary_release run",
        )
    except BaseException:
        stop(home)
        raise
    return env


def wait_idle(pg: DagsterPlayground, timeout: float = 300) -> None:
    """Until no run is queued, starting or running (a test sharing the playground starts from an idle one)."""
    wait_for(lambda: not [r for r in pg.runs() if r["status"] in IN_FLIGHT], timeout, "no Dagster run in flight")
