"""Engine helpers the Dagster layer is wired onto (no Dagster import here).

Names of assets, partitions and tags are derived here once, so the Dagster modules (assets/, jobs/, sensors/)
stay thin and the CLI can compute the same names (e.g. ``playground history``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported lazily at run time: the asset definitions only need the names below
    from playground.checks import MetricCheck
    from playground.gitops import SyncPlan, SyncResult
    from playground.models import Canary

REPO_ROOT = Path(__file__).resolve().parents[1]

# Cluster components recorded by gitops_sync, with how each is recognised among the applied objects.
COMPONENTS = {
    "mesh": "Istio control plane (IstioOperator) and the mesh configuration.",
    "gateway": "Istio ingress Gateway(s) exposing services to users.",
    "prometheus": "The Prometheus the metric templates query (reachability checked at sync).",
    "metric_templates": "MetricTemplates and AlertProviders used by the canaries.",
    "namespaces": "Namespaces of the workloads.",
    "loadtester": "Flagger's load tester that runs the canaries' webhooks.",
}

TARGET_TAG = "gitops-playground/target"  # one canary_release run per target at a time (tag concurrency)


def component_of(obj: dict) -> str | None:
    """Which cluster component an applied object belongs to (None for workloads and others)."""
    kind = obj.get("kind")
    name = (obj.get("metadata") or {}).get("name", "")
    if kind == "IstioOperator":
        return "mesh"
    if kind == "Gateway":
        return "gateway"
    if kind in ("MetricTemplate", "AlertProvider"):
        return "metric_templates"
    if kind == "Namespace":
        return "namespaces"
    if "loadtester" in name and kind in ("Deployment", "Service"):
        return "loadtester"
    return None


def check_name(metric: str) -> str:
    """A Dagster-safe asset check name for a canary metric (``error-rate`` -> ``error_rate``)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", metric)


@dataclass(frozen=True)
class Target:
    """A canary target as the pipeline names it."""

    namespace: str
    name: str
    strategy: str = "canary"
    metrics: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def ident(self) -> str:
        return check_name(f"{self.namespace}_{self.name}")

    @property
    def partitions_name(self) -> str:
        return f"revisions_{self.ident}"

    @property
    def tag_value(self) -> str:
        return f"{self.namespace}-{self.name}"


def target_of(canary: Canary) -> Target:
    """The pipeline's name for a Canary (its strategy and metric names)."""
    from playground import analysis

    return Target(
        canary.namespace, canary.name, analysis.strategy(canary), tuple(m.name for m in canary.spec.analysis.metrics)
    )


def targets_from(manifest_dir: Path) -> list[Target]:
    """Canary targets declared in a manifests tree (invalid files are skipped here; sync reports them)."""
    from playground.manifests import load_tree

    return sorted((target_of(c) for c in load_tree(manifest_dir).canaries()), key=lambda t: t.key)


def targets_to_json(targets: list[Target]) -> str:
    """The targets as the sync records them (``gitops/commit`` metadata) and the code location reads them."""
    return json.dumps(
        [
            {"namespace": t.namespace, "name": t.name, "strategy": t.strategy, "metrics": list(t.metrics)}
            for t in targets
        ],
        sort_keys=True,
    )


def targets_from_json(text: str) -> list[Target]:
    rows = json.loads(text)
    return sorted(
        (Target(r["namespace"], r["name"], r.get("strategy", "canary"), tuple(r.get("metrics") or ())) for r in rows),
        key=lambda t: t.key,
    )


def gitops_head_targets(runtime) -> tuple[str, list[Target]]:
    """(sha, targets) of the GitOps origin's HEAD, read from a checkout of its own (``runtime.git("graph")``):
    the local playground's origin or ``PLAYGROUND_GITOPS_URL`` on a real cluster. Raises ``GitError`` or
    ``ValueError`` (no GitOps repository configured)."""
    git = runtime.git("graph")
    try:
        sha = git.fetch()
        return sha, targets_from(git.path)
    finally:
        git.close()


# ------------------------------------------------------------------------------------------ gitops sync


@dataclass
class SyncOutcome:
    """A sync of the cluster to the GitOps origin's HEAD."""

    sha: str
    message: str
    plan: SyncPlan
    result: SyncResult

    def targets(self) -> list[Target]:
        """The canary targets of the applied revision (what the asset graph shows)."""
        return sorted((target_of(c) for c in self.plan.canaries), key=lambda t: t.key)

    def components(self) -> dict[str, list[str]]:
        """Applied (created or updated) objects per cluster component."""
        applied = set(self.result.applied)
        out: dict[str, list[str]] = {}
        for item in self.plan.items:
            comp = component_of(item.desired)
            if comp and item.key in applied:
                out.setdefault(comp, []).append(item.key)
        return out


def sync(runtime, *, purpose: str = "sync") -> SyncOutcome:
    """Fetch the GitOps origin, validate every manifest, then apply them all in dependency order.

    Raises ``playground.gitops.SyncError`` carrying the validation report when any manifest is invalid;
    nothing is applied then. ``runtime`` is a ``playground.runtime.Runtime``.
    """
    from playground.gitops import SyncError, apply_sync, plan_sync

    git = runtime.git(purpose)
    sha = git.fetch()
    message = git.repo.commit(sha).message.strip()
    cluster = runtime.cluster()
    plan = plan_sync(cluster, git.path)
    if not plan.ok:
        raise SyncError(f"commit {sha[:12]}: invalid manifests, nothing applied\n{plan.report()}", findings=plan.errors)
    result = apply_sync(cluster, plan)
    return SyncOutcome(sha=sha, message=message, plan=plan, result=result)


def route_to_primary(
    runtime: Any, target: str, *, failed_driver: str | None = None, log: Callable[[str], None] = lambda _line: None
) -> None:
    """All of ``target``'s traffic to the primary, the persisted weight 0: for a release nobody drives any more
    (its run, ``failed_driver``, failed and will not be retried). A later release resumes from there; a release
    another live process drives is left to it (``Controller.make_safe``)."""
    from playground.controller import Controller

    ctl = Controller(runtime.cluster(), log=log)
    if failed_driver:
        ctl.driver = failed_driver  # made safe on behalf of the failed run
    ctl.make_safe(target)


def alert_failed_run(runtime, *, job: str, run_id: str, target: str | None, message: str) -> list[str]:
    """Send an error alert for a failed run to the target canary's providers (all canaries' for a sync)."""
    from playground.alerts import notify
    from playground.controller import Controller

    ctl = Controller(runtime.cluster(), log=lambda _: None)
    keys = (
        [target]
        if target
        else [
            f"{(o.get('metadata') or {}).get('namespace', 'default')}/{o['metadata']['name']}"
            for o in runtime.cluster().list("flagger.app/v1beta1", "Canary")
        ]
    )
    text = f"Dagster run {run_id[:8]} of {job} failed: {message}"
    out = []
    providers = ctl.providers()
    secrets = runtime.secrets()
    for key in keys:
        try:
            canary = ctl.canary(key, supported=False)
        except Exception as e:  # the canary may be gone or invalid: say so, keep alerting the others
            out.append(f"{key}: cannot alert: {e}")
            continue
        for d in notify(canary, "error", text, providers, secrets=secrets, env=runtime.config.env):
            out.append(f"{key}: alert via {d.provider}: {'sent' if d.ok else d.error}")
    return out


# ------------------------------------------------------------------------------------------ metric checks

#: Phases in which the canary workload receives traffic under analysis (its metrics are the release's).
RELEASING = ("Progressing", "WaitingPromotion", "Promoting", "Finalising")


@dataclass
class MetricsNow:
    """The metrics of one canary evaluated now, as a ``canary_release`` tick would judge them."""

    target: str  # namespace/name of the Canary
    workload: str  # the workload measured: the canary while a release runs, else the primary
    phase: str  # the canary's phase ("" when never initialized)
    checks: list[MetricCheck]


def check_metrics_now(runtime, key: str, names: set[str] | None = None) -> MetricsNow:
    """Evaluate a canary's metrics against Prometheus now and judge them by their thresholds.

    While a release runs (phase Progressing .. Finalising) the canary workload is measured, as the release's
    ticks do; otherwise the primary, which serves the traffic. ``names``: only these metrics (check names, see
    :func:`check_name`). Query errors and "no values" fail (unless the metric says ``noData: pass``).
    """
    from playground import analysis, routing
    from playground.checks import evaluate_metric
    from playground.controller import LiveProbe

    ctl = runtime.controller(log=lambda _line: None)
    canary = ctl.canary(key)
    status = runtime.cluster().get_canary_status(canary.namespace, canary.name)
    phase = status.phase.value if status is not None else ""
    subject = canary
    if phase not in RELEASING:
        subject = canary.model_copy(deep=True)
        subject.spec.service.name = canary.spec.service.name or canary.spec.targetRef.name
        subject.spec.targetRef.name = routing.primary_name(canary.spec.targetRef.name)
    probe = LiveProbe(ctl, subject, checksum="")
    checks = [
        evaluate_metric(m, probe.metric(m))
        for m in analysis.checked_metrics(canary)
        if names is None or check_name(m.name) in names
    ]
    return MetricsNow(
        target=canary.key, workload=f"{canary.namespace}/{subject.spec.targetRef.name}", phase=phase, checks=checks
    )
