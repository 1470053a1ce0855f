"""The Cluster interface: what every backend (local, kubernetes) provides.

Backends are deliberately low level: they store and read Kubernetes-style objects (plain dicts in the
Kubernetes/Istio JSON schema), scale Deployments, report workload readiness and persist the canary status.
Everything canary-specific that produces objects (primary Deployment, Services, VirtualService,
DestinationRule, HPA copies, revision checksums) is computed once, in pure engine code
(``playground.routing`` / ``playground.rollout``), and applied through this interface, so the two backends
never duplicate rollout logic and never import each other.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from playground.errors import PlaygroundError
from playground.models import CanaryStatus


class ClusterError(PlaygroundError, RuntimeError):
    """A backend operation failed; the message names the object and what to do."""


class NotFound(ClusterError):
    pass


class Conflict(ClusterError):
    """The object changed since it was read (stale resourceVersion)."""


@dataclass(frozen=True)
class WorkloadStatus:
    """Readiness of one Deployment as the analysis needs it."""

    desired: int
    updated: int
    ready: int
    available: int
    deadline_exceeded: bool = False
    message: str = ""
    # Epoch seconds since when the workload has been short of ready replicas (None when it is fully ready).
    # The controller compares it with the Canary's progressDeadlineSeconds (Flagger's rule); backends set
    # ``deadline_exceeded`` themselves only for their own deadline (the Deployment's ProgressDeadlineExceeded).
    unavailable_since: float | None = None

    def is_ready(self, threshold_percent: int = 100) -> bool:
        """Ready when ``threshold_percent`` of desired replicas are updated and available (Flagger rule)."""
        if self.desired <= 0:
            return False
        needed = max(1, -(-self.desired * threshold_percent // 100))  # ceil
        return self.updated >= needed and self.available >= needed


class Cluster(ABC):
    """A cluster backend. Object arguments and results are plain dicts (Kubernetes JSON)."""

    name: str = "abstract"

    # -- generic objects -------------------------------------------------------------------------
    @abstractmethod
    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or replace ``obj`` (identified by apiVersion, kind, namespace, name); return it stored."""

    @abstractmethod
    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The stored object, or None."""

    @abstractmethod
    def list(self, api_version: str, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """All stored objects of a kind (in a namespace, or all namespaces when None)."""

    @abstractmethod
    def delete(self, api_version: str, kind: str, namespace: str | None, name: str) -> bool:
        """Delete; True when something was deleted."""

    # -- workloads -------------------------------------------------------------------------------
    @abstractmethod
    def scale(self, namespace: str, name: str, replicas: int) -> None:
        """Set a Deployment's replica count."""

    @abstractmethod
    def workload_status(self, namespace: str, name: str) -> WorkloadStatus:
        """Readiness and progress-deadline state of a Deployment."""

    # -- canary status ---------------------------------------------------------------------------
    @abstractmethod
    def get_canary_status(self, namespace: str, name: str) -> CanaryStatus | None:
        """The persisted status of a Canary, or None if it has none yet."""

    @abstractmethod
    def set_canary_status(self, namespace: str, name: str, status: CanaryStatus) -> None:
        """Persist a Canary's status (conflict-safe)."""

    @abstractmethod
    def update_canary_status(
        self, namespace: str, name: str, mutate: Callable[[CanaryStatus | None], CanaryStatus]
    ) -> CanaryStatus:
        """Read-modify-write of a Canary's status, atomic against every other writer: ``mutate`` gets the current
        status (None when it has none yet) and returns the new one; on a concurrent write it is called again with
        the newer status. Returns what was stored. Operator requests and the controller's ticks both write the
        status this way, so neither loses the other's change."""

    # -- addressing ------------------------------------------------------------------------------
    def resolve_url(self, url: str) -> str:
        """Map an in-cluster URL (``http://backend-canary.prod:9898/``) to one reachable from here."""
        return url

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release connections and files; a backend without any keeps this no-op."""
