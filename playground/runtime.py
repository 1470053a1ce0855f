"""Wiring of one installation: which backend, which GitOps origin, which registry.

The CLI and the Dagster layer both build a ``Runtime`` and ask it for the pieces (cluster, git checkout,
controller, registry client), so there is one place that knows how the local playground and a real cluster
differ. Configuration comes from arguments or environment variables:

==========================  ============================================================================
``PLAYGROUND_BACKEND``       ``local`` (default) or ``kubernetes``
``PLAYGROUND_HOME``          local playground state (default ``.playground``)
``KUBECONFIG``               kubeconfig for the kubernetes backend (in-cluster config when unset in a pod)
``PLAYGROUND_CONTEXT``       kubeconfig context
``PLAYGROUND_GITOPS_URL``    GitOps origin (local default: the playground's bare repository)
``PLAYGROUND_GITOPS_BRANCH`` branch (default ``main``)
``PLAYGROUND_GITOPS_PATH``   folder of the manifests inside the repository (default: repository root)
``PLAYGROUND_REGISTRY``      registry scanned for image tags instead of the images' own (local default:
                             the playground's registry)
``PLAYGROUND_INTERVAL``      analysis interval override, e.g. ``2s`` (the local demo runs faster ticks)
==========================  ============================================================================
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from playground.cluster.base import Cluster
from playground.durations import parse_duration

if TYPE_CHECKING:
    from playground.controller import Controller
    from playground.gitops import GitSource
    from playground.secrets import ClusterSecrets


@dataclass
class RuntimeConfig:
    backend: str = "local"
    home: str = ".playground"
    kubeconfig: str | None = None
    context: str | None = None
    gitops_url: str | None = None
    gitops_branch: str = "main"
    gitops_path: str = ""
    registry: str | None = None
    interval: str | None = None
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: object) -> RuntimeConfig:
        e = dict(os.environ if env is None else env)
        cfg = cls(
            backend=e.get("PLAYGROUND_BACKEND", "local"),
            home=e.get("PLAYGROUND_HOME", ".playground"),
            kubeconfig=e.get("KUBECONFIG") or None,
            context=e.get("PLAYGROUND_CONTEXT") or None,
            gitops_url=e.get("PLAYGROUND_GITOPS_URL") or None,
            gitops_branch=e.get("PLAYGROUND_GITOPS_BRANCH", "main"),
            gitops_path=e.get("PLAYGROUND_GITOPS_PATH", ""),
            registry=e.get("PLAYGROUND_REGISTRY") or None,
            interval=e.get("PLAYGROUND_INTERVAL") or None,
            env=e,
        )
        for k, v in overrides.items():
            if v is not None:
                setattr(cfg, k, v)
        if cfg.backend not in ("local", "kubernetes"):
            raise ValueError(
                f"unknown backend {cfg.backend!r}: use local or kubernetes (PLAYGROUND_BACKEND / --backend)"
            )
        return cfg


class Runtime:
    """The pieces of one installation, built on demand. A context manager: leaving it (or :meth:`close`)
    closes the cluster client and every git checkout it handed out; it can be used again afterwards."""

    def __init__(self, config: RuntimeConfig | None = None):
        self.config = config or RuntimeConfig.from_env()
        self._cluster: Cluster | None = None
        self._checkouts: list[GitSource] = []

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def home(self) -> Path:
        return Path(self.config.home).absolute()

    # -- cluster ---------------------------------------------------------------------------------
    def cluster(self) -> Cluster:
        if self._cluster is None:
            if self.config.backend == "kubernetes":
                from playground.cluster.kubernetes import KubernetesCluster

                self._cluster = KubernetesCluster(kubeconfig=self.config.kubeconfig, context=self.config.context)
            else:
                from playground.local.cluster import LocalCluster

                self._cluster = LocalCluster(self.home)
        return self._cluster

    def http_proxy(self) -> str | None:
        c = self.cluster()
        proxy = getattr(c, "http_proxy", None)
        return proxy() if callable(proxy) else None

    def close(self) -> None:
        """Close the cluster client and the git checkouts' repositories (idempotent)."""
        checkouts, self._checkouts = self._checkouts, []
        cluster, self._cluster = self._cluster, None
        try:
            for checkout in checkouts:
                checkout.close()
        finally:
            if cluster is not None:
                cluster.close()

    # -- git ---------------------------------------------------------------------------------------
    def gitops_url(self) -> str:
        if self.config.gitops_url:
            return self.config.gitops_url
        if self.config.backend == "local":
            return str(self.home / "git" / "gitops.git")
        raise ValueError("no GitOps repository configured: set PLAYGROUND_GITOPS_URL (or --gitops-url)")

    def git(self, purpose: str) -> GitSource:
        """A checkout of the GitOps origin for one purpose (sensors and runs never share a work tree); closed
        with the runtime."""
        from playground.gitops import GitSource

        base = (
            self.home if self.config.backend == "local" else Path(self.config.env.get("TMPDIR", "/tmp")) / "playground"
        )
        checkout = GitSource(
            self.gitops_url(),
            base / "git" / "work" / purpose,
            branch=self.config.gitops_branch,
            subdir=self.config.gitops_path,
        )
        self._checkouts.append(checkout)
        return checkout

    # -- registry ----------------------------------------------------------------------------------
    def registry_url(self) -> str | None:
        if self.config.registry:
            return self.config.registry
        if self.config.backend == "local":
            from playground.local.store import Home

            ports = Home.of(self.home).ports() or {}
            if ports.get("registry"):
                return f"http://127.0.0.1:{ports['registry']}"
        return None

    # -- controller --------------------------------------------------------------------------------
    def interval_override(self) -> float | None:
        return parse_duration(self.config.interval) if self.config.interval else None

    def secrets(self) -> ClusterSecrets:
        """Secrets the engine may read (alert addresses, Prometheus credentials): read from the cluster on
        demand, only those referenced (``playground.secrets.ClusterSecrets``)."""
        from playground.secrets import ClusterSecrets

        return ClusterSecrets(self.cluster())

    def controller(self, log: Callable[[str], None] = print, *, interval: float | None = None) -> Controller:
        from playground.controller import Controller, Settings

        settings = Settings(
            interval_override=interval if interval is not None else self.interval_override(),
            http_proxy=self.http_proxy(),
            secrets=self.secrets(),
            env=self.config.env,
        )
        return Controller(self.cluster(), settings, log=log)
