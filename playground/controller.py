"""The canary control loop: observe -> decide -> act -> record -> persist, one tick at a time.

This is Flagger's scheduler, backend-agnostic: it talks to a ``Cluster`` (local or kubernetes), asks the pure
state machine (``playground.analysis.tick``) what to do, carries out the actions it returns with objects from
``playground.routing``, and persists the analysis state in the Canary's status after every tick, so that a
crashed or restarted run resumes where it stopped. On resume the mesh routes are read back from the
VirtualService (the mesh is the truth, as in Flagger's ``GetRoutes``), and every decision is taken on metrics
queried at that tick: nothing is promoted on data from before the restart.

The Dagster layer wraps ``Controller.run`` in the ``canary_release`` job; the CLI and the tests call it
directly.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from playground import analysis, hooks, metrics, routing, support
from playground.alerts import alert_fields, notify
from playground.cluster.base import Cluster, WorkloadStatus
from playground.durations import parse_duration
from playground.errors import PlaygroundError
from playground.models import (
    AlertProvider,
    Canary,
    CanaryMetric,
    CanaryStatus,
    CanaryWebhook,
    HookType,
    MetricTemplate,
    Phase,
)
from playground.observe import MetricValue, Observation, Readiness, WebhookAnswer

CANARY_API = ("flagger.app/v1beta1", "Canary")
# Phases in which a release of the current revision has nothing more to do.
IDLE = (Phase.Initialized, Phase.Succeeded, Phase.Failed)
RECENT_EVENTS = 20  # events kept in the Canary status for `playground watch`


def default_driver() -> str:
    """Who drives a release when the caller does not say: this process."""
    return f"pid {os.getpid()}@{socket.gethostname()}"


def driver_alive(status: CanaryStatus | None, now: float) -> bool:
    """Whether a release process is driving this canary: it recorded itself as driver and ticked (or took the
    release) within three of its intervals, plus a margin for a slow tick. A driver killed hard stops ticking and
    is not alive: another takes the release over then."""
    if status is None or not status.driver:
        return False
    times = []
    for stamp in (status.lastTickTime, status.driverSince):
        try:
            times.append(datetime.strptime(stamp or "", "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp())
        except ValueError:
            continue
    return bool(times) and now - max(times) <= 3 * (status.tickInterval or 60.0) + 10.0


class ControllerError(PlaygroundError, RuntimeError):
    """The release cannot proceed (missing Canary or target, bootstrap failure); the message says why."""


@dataclass
class Settings:
    """How the controller reaches the outside world."""

    default_prometheus: str = "http://prometheus.istio-system:9090"
    interval_override: float | None = None  # seconds; the local demo runs shorter ticks than the manifests
    http_proxy: str | None = None  # the local mesh proxy through which in-cluster names resolve
    secrets: Mapping[tuple[str, str], Mapping[str, str]] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    bootstrap_timeout: float = 120.0


@dataclass(frozen=True)
class TickRecord:
    """What one tick did, for logs, Dagster materializations and tests.

    ``at`` is the tick time in RFC 3339 (whole seconds); ``time`` the same instant as the controller's clock
    value in Unix seconds, rounded to milliseconds: the evaluation time of the tick's metric queries (a backtest
    querying Prometheus at ``time`` asks what the tick asked). ``observation`` is what the tick observed
    (revision, canary and primary readiness).
    """

    tick: int
    at: str
    revision: str
    result: analysis.TickResult
    time: float | None = None
    observation: Observation | None = None

    @property
    def state(self) -> analysis.CanaryState:
        return self.result.state

    @property
    def phase(self) -> Phase:
        return self.result.state.status.phase


def _now_iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class LiveProbe:
    """Answers the state machine's questions with real webhooks and Prometheus queries."""

    def __init__(self, controller: Controller, canary: Canary, checksum: str, at: float | None = None):
        self._c = controller
        self._canary = canary
        self._checksum = checksum
        self._at = at  # evaluation time of the tick's metric queries (Unix seconds); None = Prometheus' now
        self._templates: dict[tuple[str, str], MetricTemplate] | None = None

    def templates(self) -> dict[tuple[str, str], MetricTemplate]:
        """The MetricTemplates, read once per tick (not once per metric)."""
        if self._templates is None:
            self._templates = self._c.templates()
        return self._templates

    def webhook(self, hook: CanaryWebhook, phase: Phase) -> WebhookAnswer:
        return hooks.call_webhook(self._canary, hook, phase, self._checksum, proxy=self._c.settings.http_proxy)

    def metric(self, metric: CanaryMetric) -> MetricValue:
        return metrics.query_metric(
            self._canary,
            metric,
            self.templates(),
            secrets=self._c.settings.secrets,
            default_prometheus=self._c.settings.default_prometheus,
            proxy=self._c.settings.http_proxy,
            time=self._at,
        )

    def samples(self, metric: CanaryMetric):
        """Canary and primary samples over the metric interval; only asked for metrics with a judge (extension)."""
        from playground.history import query_samples

        return query_samples(
            self._canary,
            metric,
            self.templates(),
            secrets=self._c.settings.secrets,
            default_prometheus=self._c.settings.default_prometheus,
            proxy=self._c.settings.http_proxy,
            now=None if self._at is None else datetime.fromtimestamp(self._at, UTC),
        )


def _service_differs(current: dict[str, Any], desired: dict[str, Any]) -> bool:
    """Whether a stored Service differs from the desired one in what the controller manages."""
    cur_spec, spec = current.get("spec") or {}, desired.get("spec") or {}
    keys = ("name", "port", "targetPort", "protocol", "appProtocol")

    def ports(s: dict[str, Any]) -> list[tuple[Any, ...]]:
        return sorted(tuple(str(p.get(k)) for k in keys) for p in s.get("ports") or [])

    cur_meta, meta = current.get("metadata") or {}, desired.get("metadata") or {}
    return (
        ports(cur_spec) != ports(spec)
        or (cur_spec.get("selector") or {}) != (spec.get("selector") or {})
        or cur_spec.get("trafficDistribution") != spec.get("trafficDistribution")
        or (cur_meta.get("labels") or {}) != (meta.get("labels") or {})
        or (cur_meta.get("annotations") or {}) != (meta.get("annotations") or {})
    )


class Controller:
    def __init__(
        self,
        cluster: Cluster,
        settings: Settings | None = None,
        *,
        log: Callable[[str], None] = print,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.cluster = cluster
        self.settings = settings or Settings()
        self.log = log
        self.clock = clock
        self.sleep = sleep
        self.driver = default_driver()  # recorded in the status while this controller runs a release

    # ------------------------------------------------------------------------------------ reading
    def canary(self, key: str, *, supported: bool = True) -> Canary:
        """The Canary ``key`` as stored in the cluster. With ``supported`` (every release), a Canary using a
        field or provider the playground does not implement is refused by name (``playground.support``)
        instead of released with that field ignored."""
        ns, _, name = key.partition("/")
        if not name:
            raise ControllerError(f"target {key!r} must be NAMESPACE/NAME, e.g. prod/backend")
        obj = self.cluster.get(*CANARY_API, ns, name)
        if obj is None:
            raise ControllerError(
                f"Canary {key} not found in the {self.cluster.name} cluster; sync the GitOps repository first "
                f"(it must contain a flagger.app/v1beta1 Canary named {name} in namespace {ns})"
            )
        if supported and (obj.get("metadata") or {}).get("deletionTimestamp"):
            raise ControllerError(
                f"Canary {key} is being deleted (Terminating): the sync reverts its target (revertOnDeletion); "
                "nothing to release"
            )
        if supported:
            reason = support.refusal(obj)
            if reason:
                raise ControllerError(f"Canary {key} uses what the playground does not support: {reason}")
        return Canary.model_validate({k: v for k, v in obj.items() if k != "status"})

    def templates(self) -> dict[tuple[str, str], MetricTemplate]:
        out = {}
        for obj in self.cluster.list("flagger.app/v1beta1", "MetricTemplate"):
            t = MetricTemplate.model_validate({k: v for k, v in obj.items() if k != "status"})
            out[(t.metadata.namespace or "default", t.metadata.name)] = t
        return out

    def providers(self) -> dict[tuple[str, str], AlertProvider]:
        out = {}
        for obj in self.cluster.list("flagger.app/v1beta1", "AlertProvider"):
            p = AlertProvider.model_validate({k: v for k, v in obj.items() if k != "status"})
            out[(p.metadata.namespace or "default", p.metadata.name)] = p
        return out

    def _target(self, canary: Canary) -> dict[str, Any]:
        ref = canary.spec.targetRef
        obj = self.cluster.get("apps/v1", "Deployment", canary.namespace, ref.name)
        if obj is None:
            raise ControllerError(
                f"Canary {canary.key}: target Deployment {canary.namespace}/{ref.name} not found; "
                "check spec.targetRef and that the Deployment is in the GitOps repository"
            )
        return obj

    def _configs(self, canary: Canary, target: dict[str, Any]) -> list[dict[str, Any]]:
        out = []
        for kind, name in sorted(routing.referenced_configs(target["spec"]["template"].get("spec") or {})):
            obj = self.cluster.get("v1", kind, canary.namespace, name)
            if obj is not None:
                out.append(obj)
        return out

    def _hpa(self, canary: Canary) -> dict[str, Any] | None:
        ref = canary.spec.autoscalerRef
        if ref is None:
            return None
        return self.cluster.get(
            ref.apiVersion or "autoscaling/v2", "HorizontalPodAutoscaler", canary.namespace, ref.name
        )

    def revision(self, canary: Canary) -> str:
        target = self._target(canary)
        return routing.revision(target, self._configs(canary, target))

    def interval(self, canary: Canary) -> float:
        if self.settings.interval_override:
            return float(self.settings.interval_override)
        seconds = parse_duration(canary.spec.analysis.interval or "60s")
        # DESIGN: below 10s is raised to 10s on real clusters; the local backend accepts shorter intervals
        return seconds if self.cluster.name == "local" else max(10.0, seconds)

    # ------------------------------------------------------------------------------------ state
    def load_state(self, canary: Canary) -> analysis.CanaryState | None:
        """The persisted status, with the routes read back from the VirtualService (HTTPRoute for gatewayapi).

        The mesh is the truth for routes (as Flagger's GetRoutes): a run killed between acting and persisting
        resumes from the traffic split actually in force.
        """
        status = self.cluster.get_canary_status(canary.namespace, canary.name)
        if status is None:
            return None
        routes = analysis.ALL_TO_PRIMARY
        route = self.cluster.get(*routing.route_key(canary))
        if route is not None:
            routes = analysis.Routes(*routing.routes_in(canary, route))
        return analysis.CanaryState.from_status(status, routes)

    def save_state(
        self, canary: Canary, state: analysis.CanaryState, record: TickRecord | None = None, *, driving: bool = False
    ) -> CanaryStatus:
        """Persist ``state``. Atomic against operator requests written meanwhile: those the tick did not see stay
        pending; those it consumed (``record``'s interventions) are removed. With ``record`` the tick's time, its
        checks and events are kept for `playground watch`, and ``driving`` records this controller as the driver."""
        consumed = {i.request.id for i in record.result.interventions} if record is not None else set()

        def mutate(current: CanaryStatus | None) -> CanaryStatus:
            update: dict[str, Any] = {
                "requests": [r for r in (current.requests if current else []) if r.id not in consumed],
            }
            if current is not None:
                update.update(
                    lastChecks=current.lastChecks,
                    events=current.events,
                    lastTickTime=current.lastTickTime,
                    driver=current.driver,
                    driverSince=current.driverSince,
                    tickInterval=current.tickInterval,
                )
            if record is not None:
                update["lastTickTime"] = record.at
                update["driver"] = self.driver if driving else None
                update["tickInterval"] = self.interval(canary)
                if record.result.checks:
                    update["lastChecks"] = [
                        {"name": c.name, "value": c.value, "passed": c.passed, "message": c.message, "at": record.at}
                        for c in record.result.checks
                    ]
                if record.result.events:
                    new = [{"at": record.at, "message": e} for e in record.result.events]
                    update["events"] = (list(update.get("events") or []) + new)[-RECENT_EVENTS:]
            return state.status.model_copy(update=update)

        return self.cluster.update_canary_status(canary.namespace, canary.name, mutate)

    def request(self, key: str, request_: Any) -> CanaryStatus:
        """Queue an operator request (``models.ControlRequest``) in the Canary status; the next tick applies it."""
        canary = self.canary(key)

        def mutate(current: CanaryStatus | None) -> CanaryStatus:
            current = current or CanaryStatus()
            return current.model_copy(update={"requests": [*current.requests, request_]})

        return self.cluster.update_canary_status(canary.namespace, canary.name, mutate)

    def take_release(self, key: str) -> CanaryStatus | None:
        """Take the release of ``key`` for this controller, atomically: it becomes the status's driver unless
        another live driver (``driver_alive``) holds it. Returns None when taken (or already ours), else the
        status naming the driver that holds it. One driver per release: two processes never tick it at once."""
        canary = self.canary(key, supported=False)
        now = self.clock()
        holder: list[CanaryStatus] = []

        def mutate(current: CanaryStatus | None) -> CanaryStatus:
            holder.clear()
            current = current or CanaryStatus()
            if current.driver not in (None, self.driver) and driver_alive(current, now):
                holder.append(current)
                return current
            return current.model_copy(
                update={"driver": self.driver, "driverSince": _now_iso(now), "tickInterval": self.interval(canary)}
            )

        self.cluster.update_canary_status(canary.namespace, canary.name, mutate)
        return holder[0] if holder else None

    @contextmanager
    def claimed(self, key: str) -> Iterator[None]:
        """Hold the release of ``key`` for what comes before ``run`` (``release --image`` commits and syncs the
        image first: a sensor's run for that commit then follows this one instead of driving it too). Raises
        ``ControllerError`` when another live driver holds it, before anything is done; gives the release up
        again when the block fails."""
        held = self.take_release(key)
        if held is not None:
            raise ControllerError(
                f"{key}: its release is driven by {held.driver} (phase {held.phase.value}, weight "
                f"{held.canaryWeight}); nothing was committed. `playground watch {key}` follows it; run this again "
                f"when it has ended, or stop it first with `playground abort {key}`"
            )
        try:
            yield
        except BaseException:
            self.release_driver(key)
            raise

    def _follow(self, key: str) -> None:
        """Wait until this controller holds the release of ``key``: while another live driver holds it, follow
        it (its ticks are its own) and take the release when it ends or dies."""
        held = self.take_release(key)
        if held is None:
            return
        self.log(f"{key}: driven by {held.driver}; following it until its release ends (it is not ticked twice)")
        while held is not None:
            self.sleep(min(self.interval(self.canary(key, supported=False)), 2.0))
            held = self.take_release(key)
        self.log(f"{key}: {self.driver} drives the release now")

    def release_driver(self, key: str) -> None:
        """Record that this controller no longer drives ``key`` (its run ended)."""
        canary = self.canary(key)

        def mutate(current: CanaryStatus | None) -> CanaryStatus:
            current = current or CanaryStatus()
            return current.model_copy(update={"driver": None}) if current.driver == self.driver else current

        self.cluster.update_canary_status(canary.namespace, canary.name, mutate)

    # ------------------------------------------------------------------------------------ readiness
    def _readiness(self, canary: Canary, name: str, threshold: int | None) -> Readiness:
        ws: WorkloadStatus = self.cluster.workload_status(canary.namespace, name)
        ready = ws.is_ready(threshold or 100)
        exceeded = ws.deadline_exceeded
        if not ready and ws.unavailable_since is not None:
            exceeded = exceeded or (self.clock() - ws.unavailable_since) > canary.spec.progressDeadlineSeconds
        msg = ws.message or f"{ws.ready}/{ws.desired} replicas ready"
        return Readiness(ready=ready, deadline_exceeded=exceeded and not ready, message=msg)

    def observe(self, canary: Canary, now: float | None = None) -> Observation:
        """What the tick sees; ``now`` (the tick's clock value) defaults to the clock."""
        a = canary.spec.analysis
        return Observation(
            revision=self.revision(canary),
            canary=self._readiness(canary, canary.spec.targetRef.name, a.canaryReadyThreshold),
            primary=self._readiness(canary, routing.primary_name(canary.spec.targetRef.name), a.primaryReadyThreshold),
            now=_now_iso(self.clock() if now is None else now),
        )

    # ------------------------------------------------------------------------------------ bootstrap
    def bootstrap(self, canary: Canary) -> analysis.CanaryState:
        """Create the primary Deployment (+ configs, HPA), Services, DestinationRules and the VirtualService
        (all traffic to the primary) for a Canary seen for the first time, or whose primary is missing.

        Returns the persisted state; a new canary starts Initializing and the state machine moves it to
        Initialized (target scaled to zero) once the primary is ready.
        """
        state = self.load_state(canary)
        primary = routing.primary_name(canary.spec.targetRef.name)
        if state is not None and self.cluster.get("apps/v1", "Deployment", canary.namespace, primary) is not None:
            if self._reconcile_services(canary):
                state = self.load_state(canary) or state  # the routes in force, read as the new kind of route
            if routing.mesh_routed(canary) and self.cluster.get(*routing.route_key(canary)) is None:
                # As Flagger's router Reconcile: a missing route object is created (e.g. the provider changed to
                # gatewayapi, whose HTTPRoute did not exist yet), with the split read back (all to the primary).
                self.log(
                    f"{canary.key}: creating the missing {routing.route_key(canary)[1]} (all traffic to the primary)"
                )
                self._set_routes(canary, state.routes)
            return state
        target = self._target(canary)
        configs = self._configs(canary, target)
        hpa = self._hpa(canary)
        self.log(
            f"{canary.key}: initializing: creating {primary} (copy of {target['metadata']['name']}), "
            "services, destination rules and routes (all traffic to the primary)"
        )
        for obj in routing.bootstrap_objects(
            canary, target, hpa=hpa, configs=configs, replicas=self._canary_replicas(canary)
        ):
            self.cluster.apply(obj)
        if state is None:
            state = analysis.CanaryState.initial()
            self.save_state(canary, state)
        return state

    def _reconcile_services(self, canary: Canary) -> bool:
        """Flagger's router Reconcile on every run: the apex/primary/canary Services follow the Canary's service
        spec (ports, appProtocol, selector, metadata), written only when they differ; a VirtualService whose kind
        of route no longer matches the Canary (HTTP <-> TCP, ``service.appProtocol``) is rewritten with the routes
        in force (then True)."""
        target = self.cluster.get("apps/v1", "Deployment", canary.namespace, canary.spec.targetRef.name)
        if target is None:
            return False
        for svc in routing.services(canary, target):
            meta = svc["metadata"]
            cur = self.cluster.get("v1", "Service", canary.namespace, meta["name"])
            if cur is None or _service_differs(cur, svc):
                self.cluster.apply(svc)
        if routing.mesh_routed(canary) and routing.route_key(canary)[1] == "VirtualService":
            vs = self.cluster.get(*routing.route_key(canary))
            if vs is not None and routing.is_tcp(canary) != bool((vs.get("spec") or {}).get("tcp")):
                # the weights in force, read as the route's own kind (the Canary now says the other one)
                before = canary.model_copy(deep=True)
                before.spec.service.appProtocol = None if routing.is_tcp(canary) else "TCP"
                primary_weight, canary_weight, _ = routing.routes_of(before, vs)
                self.cluster.apply(routing.virtual_service(canary, primary_weight, canary_weight, False))
                return True
        return False

    # ------------------------------------------------------------------------------------ acting
    def _canary_replicas(self, canary: Canary) -> int:
        target = self._target(canary)
        replicas = target["spec"].get("replicas") or 1
        hpa = self._hpa(canary)
        if hpa is not None:
            replicas = max(replicas, hpa["spec"].get("minReplicas", 1))
        return replicas

    def _set_routes(self, canary: Canary, r: analysis.Routes, revision: str | None = None) -> None:
        if not routing.mesh_routed(canary):
            return  # kubernetes provider: no routes to set (Flagger's KubernetesDefaultRouter.SetRoutes)
        if revision is None and canary.spec.analysis.sessionAffinity is not None:
            status = self.cluster.get_canary_status(canary.namespace, canary.name)
            revision = status.lastAppliedSpec if status is not None else None
        self.cluster.apply(routing.route_object(canary, r.primary, r.canary, r.mirror, revision=revision))

    def _promote(self, canary: Canary) -> None:
        target = self._target(canary)
        configs = self._configs(canary, target)
        hpa = self._hpa(canary)
        for obj in routing.primary_configs(target, configs):
            self.cluster.apply(obj)
        current = self.cluster.get(
            "apps/v1", "Deployment", canary.namespace, routing.primary_name(target["metadata"]["name"])
        )
        replicas = (current or {}).get("spec", {}).get("replicas")
        self.cluster.apply(routing.primary_deployment(canary, target, configs, replicas=replicas))
        if hpa is not None:
            self.cluster.apply(routing.primary_hpa(canary, hpa))

    def _alert(self, canary: Canary, alert: analysis.Alert) -> None:
        if not canary.spec.analysis.alerts:
            return
        for d in notify(
            canary,
            alert.severity,
            alert.message,
            self.providers(),
            secrets=self.settings.secrets,
            env=self.settings.env,
            fields=alert_fields(canary),
            # Alerts go straight to their endpoints, never through the local mesh proxy: the mesh only knows
            # the cluster's Services (an outside webhook answered 404 there), and its access log would record
            # the webhook URL, whose path is the secret. A provider's own spec.proxy still applies.
        ):
            if not d.ok:
                self.log(f"{canary.key}: alert via {d.provider} failed: {d.error}")

    def act(self, canary: Canary, result: analysis.TickResult) -> None:
        for action in result.actions:
            if isinstance(action, analysis.SetRoutes):
                self._set_routes(canary, action.routes, result.state.lastAppliedSpec)
            elif isinstance(action, analysis.ScaleCanary):
                self.cluster.scale(canary.namespace, canary.spec.targetRef.name, self._canary_replicas(canary))
            elif isinstance(action, analysis.ScaleCanaryToZero):
                self.cluster.scale(canary.namespace, canary.spec.targetRef.name, 0)
            elif isinstance(action, analysis.PromoteCanarySpec):
                self._promote(canary)
            elif isinstance(action, analysis.RunHooks):
                for ans in hooks.call_hooks(
                    canary,
                    action.type,
                    action.phase,
                    result.state.lastAppliedSpec or "",
                    stop_on_failure=False,
                    proxy=self.settings.http_proxy,
                ):
                    self.log(
                        f"{canary.key}: {action.type.value} hook {ans.name}: "
                        f"{'ok' if ans.ok else 'failed'} ({ans.status or ans.error})"
                    )
            elif isinstance(action, analysis.Alert):
                self._alert(canary, action)
            else:  # pragma: no cover - a new action type must be handled here
                raise ControllerError(f"unknown action {action!r}")

    # ------------------------------------------------------------------------------------ loop
    def make_safe(self, key: str) -> None:
        """Route all traffic to the primary (used when the release of ``self.driver`` is terminated or crashes).
        Not when another live process drives the release (this one only followed it, or was refused by it): that
        release is the other driver's to end."""
        canary = self.canary(key, supported=False)
        status = self.cluster.get_canary_status(canary.namespace, canary.name)
        if status is not None and status.driver not in (None, self.driver) and driver_alive(status, self.clock()):
            self.log(f"{key}: left to {status.driver}, which drives its release")
            return
        self._set_routes(canary, analysis.Routes(100, 0, False))
        # The persisted status must agree with the mesh (its routes are not part of the status): weight 0, so
        # `playground status` and a relaunched run both see all traffic on the primary.
        if status is not None and (status.canaryWeight or status.driver == self.driver):

            def mutate(st: CanaryStatus | None) -> CanaryStatus:
                st = st or CanaryStatus()
                return st.model_copy(
                    update={"canaryWeight": 0, "driver": None if st.driver == self.driver else st.driver}
                )

            self.cluster.update_canary_status(canary.namespace, canary.name, mutate)
        self.log(f"{key}: all traffic routed to the primary")

    def _await_primary(self, canary: Canary) -> None:
        """`promote --full`: the next tick finishes the promotion, so it waits for the primary's rollout of the
        new spec (ready, or past its progress deadline: that tick then reports the failed promotion)."""
        name = routing.primary_name(canary.spec.targetRef.name)
        threshold = canary.spec.analysis.primaryReadyThreshold
        deadline = self.clock() + canary.spec.progressDeadlineSeconds
        while self.clock() < deadline:
            r = self._readiness(canary, name, threshold)
            if r.ready or r.deadline_exceeded:
                return
            self.sleep(0.25)

    def _event_hooks(self, canary: Canary, result: analysis.TickResult) -> None:
        """Forward the tick's events to the canary's event webhooks (Flagger's event hooks)."""
        event_hooks = hooks.hooks_of_type(canary, HookType.event)
        for message in result.events:
            for hook in event_hooks:
                hooks.call_event_webhook(canary, hook, result.state.phase, message, proxy=self.settings.http_proxy)

    def step(self, key: str, tick: int = 0, *, driving: bool = False) -> TickRecord:
        """One tick: observe, decide, act, then persist (so a crash repeats at most the actions of one tick,
        all of which are idempotent). Operator requests pending in the status are inputs of the tick.
        ``driving``: this tick is part of ``run`` (the status names this controller as the driver)."""
        canary = self.canary(key)
        state = self.bootstrap(canary)
        # One time per tick, in milliseconds (Prometheus' resolution): the tick's time and the evaluation time
        # of its metric queries, recorded so that a backtest can ask Prometheus the same questions.
        now = round(self.clock(), 3)
        obs = self.observe(canary, now)
        if state.base is not None and state.base.requests:
            obs = replace(obs, requests=tuple(state.base.requests))
        result = analysis.tick(canary, state, obs, LiveProbe(self, canary, obs.revision, at=now))
        self.act(canary, result)
        record = TickRecord(
            tick=tick, at=obs.now or "", revision=obs.revision, result=result, time=now, observation=obs
        )
        self.save_state(canary, result.state, record, driving=driving)
        self._event_hooks(canary, result)
        for line in result.events:
            self.log(f"{key}: {line}")
        return record

    def run(
        self,
        key: str,
        *,
        on_tick: Callable[[TickRecord], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        max_ticks: int | None = None,
    ) -> TickRecord:
        """Tick until the release of the current revision ends in Succeeded or Failed.

        A canary that is already Initialized/Succeeded/Failed for its current revision ends after one tick
        (nothing to do); a new revision found on that tick starts the analysis. The release is taken first
        (``take_release``): while another live process drives it, this one follows and ticks once it ended.
        """
        n = 0
        record: TickRecord | None = None
        self._follow(key)
        try:
            while True:
                start = self.clock()
                record = self.step(key, n, driving=True)
                if on_tick:
                    on_tick(record)
                n += 1
                phase = record.phase
                if phase in IDLE and record.revision == record.state.status.lastAppliedSpec:
                    return record
                if max_ticks is not None and n >= max_ticks:
                    return record
                if should_stop and should_stop():
                    return record
                canary = self.canary(key)
                # Initialization only waits for the primary: poll it faster than the analysis interval.
                wait = 1.0 if phase == Phase.Initializing else self.interval(canary)
                self.sleep(max(0.0, wait - (self.clock() - start)))
                if phase == Phase.Promoting and record.state.fullPromotion:
                    self._await_primary(canary)
        finally:  # this controller holds the release (``_follow`` returned): it gives it up
            try:
                self.release_driver(key)
            except Exception as exc:  # the release's own outcome (or error) matters more
                self.log(f"{key}: could not clear the driver in the status: {exc}")
