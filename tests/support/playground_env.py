"""A real local playground (Envoy, Prometheus, docker-registry, the node agent and the workloads of the
manifests) on free ports in a temporary ``PLAYGROUND_HOME``, for tests and benchmarks.

    with playground_env(tmp_path / "home") as env:
        env.resource()              # a PlaygroundResource for Dagster ops and sensors
        env.cluster()               # a LocalCluster on the environment's store (close it, or use env.close_all)
        env.commit({"prod/backend/deployment.yaml": text}, "message")   # push to the GitOps origin
    # everything the environment started is stopped (even when the body raised), the home is deleted

Dagster is not started (``up(..., dagster=False)``): tests drive jobs with ``execute_in_process`` and sensors
with Dagster's test APIs, and the control loop through ``playground.controller`` directly.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import git
import httpx

from playground.local.env import Ports, down, process_alive, up
from playground.local.store import Home, Store
from tests.support.procs import free_port

__all__ = ["PlaygroundEnv", "playground_env", "start_environment", "stop_environment"]

TARGETS = ("prod/backend", "prod/frontend")
PODINFO = "ghcr.io/stefanprodan/podinfo"
_tags = itertools.count(1)


def _recorded_pids(home: Path) -> list[tuple[int, int | None]]:
    out: list[tuple[int, int | None]] = []
    env = Home(home).read_env() or {}
    out += [(c["pid"], c.get("ticks")) for c in (env.get("components") or {}).values() if c.get("pid")]
    if (home / "state.db").exists():
        s = Store(home / "state.db")
        try:
            out += [(r.pid, r.proc_start_ticks) for row in s.list_workload_status() for r in row.replicas if r.pid]
        finally:
            s.close()
    return out


@dataclass
class PlaygroundEnv:
    home: Path
    ports: dict[str, int]
    interval: str = "1s"
    _clusters: list[Any] = field(default_factory=list)

    # -- addresses --------------------------------------------------------------------------------------------
    @property
    def origin(self) -> Path:
        return self.home / "git" / "gitops.git"

    @property
    def registry_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['registry']}"

    @property
    def mesh_proxy(self) -> str:
        return f"http://127.0.0.1:{self.ports['mesh']}"

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['gateway']}"

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['prometheus']}"

    def subprocess_env(self) -> dict[str, str]:
        """Environment for a child process working on this playground (PLAYGROUND_* set, no proxies)."""
        env = {
            k: v
            for k, v in os.environ.items()
            if k.lower() not in ("http_proxy", "https_proxy", "no_proxy") and not k.startswith("PLAYGROUND_")
        }
        env.update(
            {"PLAYGROUND_HOME": str(self.home), "PLAYGROUND_BACKEND": "local", "PLAYGROUND_INTERVAL": self.interval}
        )
        return env

    # -- engine pieces ----------------------------------------------------------------------------------------
    def resource(self, **overrides: Any):
        from jobs.resources import PlaygroundResource

        kw = {"backend": "local", "home": str(self.home), "interval": self.interval}
        kw.update(overrides)
        return PlaygroundResource(**kw)

    def runtime(self, **overrides: Any):
        from playground.runtime import Runtime, RuntimeConfig

        kw = {"backend": "local", "home": str(self.home), "interval": self.interval}
        kw.update(overrides)
        return Runtime(RuntimeConfig.from_env({}, **kw))

    def cluster(self):
        """A LocalCluster on the environment's store (one per environment; closed when it goes down)."""
        from playground.local.cluster import LocalCluster

        if not self._clusters:
            self._clusters.append(LocalCluster(self.home))
        return self._clusters[0]

    def close_all(self) -> None:
        for c in self._clusters:
            with contextlib.suppress(Exception):
                c.close()
        self._clusters.clear()

    # -- git ----------------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def checkout(self) -> Iterator[git.Repo]:
        """A throwaway working clone of the GitOps origin (main)."""
        tmp = Path(tempfile.mkdtemp(prefix="gitops-test-"))
        try:
            repo = git.Repo.clone_from(str(self.origin), str(tmp / "w"), branch="main")
            with repo.config_writer() as cw:
                cw.set_value("user", "name", "test")
                cw.set_value("user", "email", "test@localhost")
            yield repo
            repo.close()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def read(self, relpath: str) -> str:
        """A file of the origin's main branch."""
        repo = git.Repo(str(self.origin))
        try:
            return repo.git.show(f"main:{relpath}")
        finally:
            repo.close()

    def head(self) -> str:
        repo = git.Repo(str(self.origin))
        try:
            return repo.commit("refs/heads/main").hexsha
        finally:
            repo.close()

    def commit(self, changes: dict[str, str | Callable[[str], str]], message: str) -> str:
        """Commit ``changes`` (path -> new text, or a function of the old text) to the origin; return the sha."""
        with self.checkout() as repo:
            root = Path(repo.working_tree_dir)
            for rel, change in changes.items():
                p = root / rel
                text = change(p.read_text()) if callable(change) else change
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_text(text)
                repo.git.add(rel)
            repo.git.commit("-q", "-m", message)
            repo.git.push("-q", "origin", "HEAD:refs/heads/main")
            return repo.head.commit.hexsha

    def reset_origin(self, sha: str) -> None:
        """Move the origin's main back to ``sha`` (tests that commit put the origin back afterwards)."""
        repo = git.Repo(str(self.origin))
        try:
            repo.git.update_ref("refs/heads/main", sha)
        finally:
            repo.close()

    # -- mesh ---------------------------------------------------------------------------------------------------
    def get_via_mesh(self, url: str, timeout: float = 5.0, **kw: Any) -> httpx.Response:
        with httpx.Client(proxy=self.mesh_proxy, trust_env=False, timeout=timeout) as c:
            return c.get(url, **kw)


def start_environment(
    home: Path, *, interval: str = "1s", timeout: float = 120.0, out: Callable[[str], None] = lambda _l: None
) -> PlaygroundEnv:
    """``up(home, free ports, dagster=False)``; on failure everything started is stopped before raising."""
    ports = Ports(
        gateway=free_port(),
        mesh=free_port(),
        envoy_admin=free_port(),
        prometheus=free_port(),
        registry=free_port(),
        dagster=free_port(),
    )
    try:
        env = up(home, ports, dagster=False, interval=interval, timeout=timeout, out=out)
    except BaseException:
        stop_environment(home)
        raise
    return PlaygroundEnv(home=Path(home), ports={k: int(v) for k, v in env["ports"].items()}, interval=interval)


def stop_environment(home: Path, *, purge: bool = True) -> None:
    """``down(home, purge)`` plus a last sweep: no process recorded by the environment may outlive it."""
    seen = []
    with contextlib.suppress(Exception):
        seen = _recorded_pids(Path(home))
    with contextlib.suppress(Exception):
        down(home, purge=False, out=lambda _l: None)
    with contextlib.suppress(Exception):
        seen += _recorded_pids(Path(home))
    for pid, ticks in seen:
        if process_alive(pid, ticks):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    if purge:
        # a process may still be closing files: retry briefly
        for _ in range(20):
            shutil.rmtree(home, ignore_errors=True)
            if not Path(home).exists():
                break
            time.sleep(0.1)


@contextlib.contextmanager
def playground_env(
    home: Path, *, interval: str = "1s", timeout: float = 120.0, out: Callable[[str], None] = lambda _l: None
) -> Iterator[PlaygroundEnv]:
    env = None
    try:
        env = start_environment(home, interval=interval, timeout=timeout, out=out)
        yield env
    finally:
        if env is not None:
            env.close_all()
        stop_environment(home)


def new_podinfo_image() -> str:
    """A podinfo tag no test used yet in this session (every release needs a new revision)."""
    return f"{PODINFO}:6.8.{next(_tags)}"


# ------------------------------------------------------------------------------------------------ helpers


def container(dep: dict[str, Any]) -> dict[str, Any]:
    return dep["spec"]["template"]["spec"]["containers"][0]


def deployment(env: PlaygroundEnv, name: str, ns: str = "prod") -> dict[str, Any]:
    c = env.cluster()
    obj = c.get("apps/v1", "Deployment", ns, name)
    assert obj is not None, f"Deployment {ns}/{name} missing"
    return obj


def routes(env: PlaygroundEnv, key: str = "prod/backend") -> tuple[int, int]:
    """(primary, canary) weights of the target's VirtualService as stored (what Envoy serves)."""
    from playground import routing
    from playground.controller import Controller

    c = env.cluster()
    canary = Controller(c, log=lambda _l: None).canary(key)
    vs = c.get("networking.istio.io/v1beta1", "VirtualService", canary.namespace, routing.service_names(canary)[0])
    assert vs is not None
    p, w, *_ = routing.routes_of(canary, vs)
    return p, w


def status(env: PlaygroundEnv, key: str = "prod/backend"):
    ns, name = key.split("/")
    return env.cluster().get_canary_status(ns, name)


def store_snapshot(home: Path) -> dict[str, Any]:
    """Every stored object (with its resourceVersion), every canary status and the object change counter."""
    conn = sqlite3.connect(f"file:{home / 'state.db'}?mode=ro", uri=True)
    try:
        objects = sorted(
            conn.execute("SELECT grp, kind, namespace, name, resource_version, body FROM objects").fetchall()
        )
        statuses = sorted(conn.execute("SELECT namespace, name, body FROM canary_status").fetchall())
        counter = conn.execute("SELECT value FROM meta WHERE key = 'objects'").fetchone()[0]
    finally:
        conn.close()
    return {"objects": objects, "canary_status": statuses, "counter": counter}


BACKEND_DEPLOYMENT = "prod/backend/deployment.yaml"


def with_env_var(name: str, value: str):
    """A text edit of the backend deployment adding ``name=value`` to its container env."""

    def edit(text: str) -> str:
        marker = "          env:\n"
        assert marker in text
        return text.replace(marker, marker + f'            - name: {name}\n              value: "{value}"\n', 1)

    return edit


def without_env_var(name: str):
    def edit(text: str) -> str:
        lines = text.splitlines(keepends=True)
        out, skip = [], 0
        for ln in lines:
            if skip:
                skip -= 1
                continue
            if ln.strip() == f"- name: {name}":
                skip = 1
                continue
            out.append(ln)
        return "".join(out)

    return edit
