"""``revertOnDeletion``: Flagger's finalizer, on both backends.

As Flagger v1.44 (``pkg/controller/finalizer.go``, ``controller.go``'s syncHandler):

- a Canary with ``spec.revertOnDeletion: true`` carries the finalizer ``finalizer.flagger.app`` (added when it
  is synced; removed again when it opts out), so deleting it only marks it for deletion (``deletionTimestamp``);
- a Canary marked for deletion that carries the finalizer is finalized: phase ``Terminating``, the target
  Deployment scaled back to the primary's replica count (scaled from zero when there is no primary), the revert
  waits until the target is ready, the apex Service is pointed at the target's pods, the mesh routes and every
  generated object (primary Deployment and its HPA and ConfigMap/Secret copies, the ``-primary``/``-canary``
  Services, DestinationRules, VirtualService) are removed, and the finalizer is removed, which lets the
  Canary go.

Who deletes the Canary: the GitOps sync, for a Canary with ``revertOnDeletion`` that was removed from git (as
Flux's ``prune`` does), or anyone else (``kubectl delete``); the next sync finalizes it either way. Without
``revertOnDeletion`` nothing changes: a Canary removed from git is left as it is (the sync does not prune).

Differences from Flagger, on purpose: Flagger leaves an apex Service it created to the garbage collector (the
service name stops answering until something else serves it, fluxcd/flagger#1562); here the apex Service is kept,
no longer owned by the Canary, selecting the target's pods, so callers of the service keep being served. The
mesh stops routing to the primary a short drain before the primary is deleted. Flagger copies nothing back to
the target: the target keeps its own spec (the one in git), as here.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from playground import routing
from playground.cluster.base import Cluster
from playground.errors import PlaygroundError
from playground.models import Canary, CanaryStatus, Phase

__all__ = ["FINALIZER", "FinalizeError", "Reconciled", "finalize", "reconcile"]

FINALIZER = "finalizer.flagger.app"
CANARY_API = ("flagger.app/v1beta1", "Canary")
#: Seconds between taking the primary out of the routes and deleting it (in-flight requests finish).
DRAIN_SECONDS = 3.0


class FinalizeError(PlaygroundError, RuntimeError):
    """A revert could not finish; the Canary keeps its finalizer and the next sync tries again."""


@dataclass
class Reconciled:
    """What one pass did: finalizers added/removed, Canaries deleted (removed from git) and finalized."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    finalized: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _key(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace') or 'default'}/{meta.get('name')}"


def _finalizers(obj: dict[str, Any]) -> list[str]:
    return list((obj.get("metadata") or {}).get("finalizers") or [])


def _with_finalizers(obj: dict[str, Any], finalizers: list[str]) -> dict[str, Any]:
    body = {k: copy.deepcopy(v) for k, v in obj.items() if k != "status"}
    body["metadata"]["finalizers"] = finalizers  # explicit (an empty list removes them all)
    return body


def _revert_on_deletion(obj: dict[str, Any]) -> bool:
    return bool((obj.get("spec") or {}).get("revertOnDeletion"))


def reconcile(
    cluster: Cluster,
    in_git: list[Canary] | None,
    *,
    log: Callable[[str], None] = lambda _line: None,
    clock: Callable[[], float] | None = None,
    sleep: Callable[[float], None] | None = None,
    drain: float = DRAIN_SECONDS,
) -> Reconciled:
    """One pass of Flagger's finalizer handling over every Canary in the cluster (run by each GitOps sync).

    ``in_git``: the Canaries of the synced revision; a Canary in the cluster that is not among them and has
    ``revertOnDeletion`` is deleted (then finalized); ``None`` deletes nothing (finalizers are still handled).
    A revert that cannot finish is reported in ``errors`` and left for the next pass (traffic stays where it
    was, the Canary keeps its finalizer)."""
    import time

    clock = clock or time.time
    sleep = sleep or time.sleep
    out = Reconciled()
    keys = None if in_git is None else {c.key for c in in_git}

    def finalize_into(key: str, obj: dict[str, Any]) -> None:
        """Finalize one Canary; a revert that cannot finish is an error of this pass, retried on the next."""
        try:
            finalize(cluster, obj, log=log, clock=clock, sleep=sleep, drain=drain)
        except FinalizeError as e:
            out.errors.append(str(e))
            log(str(e))
            return
        out.finalized.append(key)

    for obj in cluster.list(*CANARY_API):
        key = _key(obj)
        meta = obj.get("metadata") or {}
        ns, name = key.split("/", 1)
        has = FINALIZER in _finalizers(obj)
        if meta.get("deletionTimestamp"):
            if has:  # else not ours to hold
                finalize_into(key, obj)
            continue
        if keys is not None and key not in keys and _revert_on_deletion(obj):
            if not has:  # never synced with the finalizer (e.g. added and removed between two syncs): add it now
                obj = cluster.apply(_with_finalizers(obj, [*_finalizers(obj), FINALIZER]))
            log(f"{key}: removed from git with revertOnDeletion: deleting it (the finalizer reverts the target)")
            cluster.delete(*CANARY_API, ns, name)
            out.deleted.append(key)
            current = cluster.get(*CANARY_API, ns, name)
            if current is not None and FINALIZER in _finalizers(current):
                finalize_into(key, current)
            continue
        if _revert_on_deletion(obj) and not has:
            cluster.apply(_with_finalizers(obj, [*_finalizers(obj), FINALIZER]))
            out.added.append(key)
        elif has and not _revert_on_deletion(obj):
            # Flagger: a Canary that no longer desires reverting has its finalizer removed
            cluster.apply(_with_finalizers(obj, [f for f in _finalizers(obj) if f != FINALIZER]))
            out.removed.append(key)
    return out


def finalize(
    cluster: Cluster,
    obj: dict[str, Any],
    *,
    log: Callable[[str], None] = lambda _line: None,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    drain: float = DRAIN_SECONDS,
) -> None:
    """Revert the target of the Canary ``obj`` (marked for deletion) and remove its finalizer."""
    canary = Canary.model_validate({k: v for k, v in obj.items() if k != "status"})
    ns, key = canary.namespace, canary.key
    target_name = canary.spec.targetRef.name
    primary_name = routing.primary_name(target_name)

    if (obj.get("status") or {}).get("phase") != Phase.Terminating.value:

        def terminating(st: CanaryStatus | None) -> CanaryStatus:
            return (st or CanaryStatus()).model_copy(update={"phase": Phase.Terminating, "canaryWeight": 0})

        cluster.update_canary_status(ns, canary.name, terminating)
        log(f"{key}: Terminating canary {canary.name}.{ns}")

    target = cluster.get("apps/v1", "Deployment", ns, target_name)
    if target is not None:
        # Flagger's DeploymentController.Finalize: the target gets the primary's replica count.
        primary = cluster.get("apps/v1", "Deployment", ns, primary_name)
        current = int((target.get("spec") or {}).get("replicas") or 0)
        if primary is not None:
            replicas = int((primary.get("spec") or {}).get("replicas") or 1)
        else:
            replicas = current if current > 0 else 1
        if current != replicas:
            cluster.scale(ns, target_name, replicas)
            log(f"{key}: target {ns}/{target_name} scaled to {replicas} (the primary's replicas)")
        deadline = clock() + canary.spec.progressDeadlineSeconds
        while True:
            ws = cluster.workload_status(ns, target_name)
            if ws.is_ready(canary.spec.analysis.canaryReadyThreshold or 100):
                break
            if clock() > deadline or ws.deadline_exceeded:
                raise FinalizeError(
                    f"{key}: cannot revert: target {ns}/{target_name} not ready after "
                    f"{canary.spec.progressDeadlineSeconds}s ({ws.message or f'{ws.ready}/{ws.desired} ready'}); "
                    "traffic stays on the primary and the Canary keeps its finalizer: fix the target and sync again"
                )
            sleep(1.0)
        log(f"{key}: target {ns}/{target_name} ready")

        # The apex Service selects the target's pods and is no longer owned by the Canary (it outlives it).
        apex = routing.services(canary, target)[0]
        label, value = routing.selector_label(target)
        apex["spec"]["selector"] = {label: value}
        apex["metadata"].pop("ownerReferences", None)
        cluster.apply(apex)
        log(f"{key}: service {ns}/{apex['metadata']['name']} routes to the target {target_name}")

    apex_name, primary_svc, canary_svc = routing.service_names(canary)
    if routing.mesh_routed(canary):
        # The mesh routes go: traffic for the apex host follows the apex Service (now the target's pods).
        # gatewayapi: the HTTPRoute (owned by the Canary, so removed with it as Kubernetes' garbage collector would).
        cluster.delete(*routing.route_key(canary))
        if routing.route_key(canary)[1] == "VirtualService":
            for host in (primary_svc, canary_svc):
                cluster.delete(routing.ISTIO_API, "DestinationRule", ns, host)
    sleep(drain)

    for svc in (primary_svc, canary_svc):
        cluster.delete("v1", "Service", ns, svc)
    if canary.spec.autoscalerRef is not None:
        cluster.delete(
            canary.spec.autoscalerRef.apiVersion or "autoscaling/v2",
            "HorizontalPodAutoscaler",
            ns,
            routing.primary_name(canary.spec.autoscalerRef.name),
        )
    primary = cluster.get("apps/v1", "Deployment", ns, primary_name)
    if primary is not None:
        spec = (primary.get("spec") or {}).get("template", {}).get("spec") or {}
        for kind, name in sorted(routing.referenced_configs(spec)):
            if name.endswith("-primary"):
                cluster.delete("v1", kind, ns, name)
        cluster.delete("apps/v1", "Deployment", ns, primary_name)
    log(f"{key}: primary {ns}/{primary_name}, its services and routes removed")

    held = cluster.get(*CANARY_API, ns, canary.name)
    if held is not None:
        cluster.apply(_with_finalizers(held, [f for f in _finalizers(held) if f != FINALIZER]))
    log(f"{key}: Terminated canary {canary.name}.{ns}")
