"""The canary analysis state machine: pure, deterministic, one tick at a time (Flagger v1.44 semantics).

``tick(canary, state, obs, probe)`` takes the Canary spec, the state persisted after the previous tick, what the
controller observed before this tick (revision, readiness), and a ``Probe`` through which it asks the questions
only the outside world can answer (webhook gates, metric values). It returns the new state, the side effects the
controller must carry out (in order), human-readable events, the metric checks and the webhook answers of the
tick. It never performs I/O itself, so the same code runs live (``playground.hooks`` / ``playground.metrics``
behind the probe) and in backtests (``playground.backtest``, a probe reading a recorded trace).

The order of one tick follows docs/design.md ("Canary semantics"), itself Flagger's ``advanceCanary``:

0. Initializing: once the primary is ready (not checked with skipAnalysis) the canary is scaled to zero, all
   traffic goes to the primary and the phase becomes Initialized with ``lastAppliedSpec = lastPromotedSpec =``
   the observed revision, so the revision that was there at bootstrap is never analysed.
   Initialized/Succeeded/Failed with an unchanged revision, and Terminating, are idle ticks.
   While a run is active (or a new revision starts one) a primary that is not ready makes the tick wait
   (skipAnalysis skips that check); past its deadline while Promoting/Finalising the promotion failed.
1.-9. See ``_Tick.run``.

Operator controls (extension, docs/design.md "Operator controls") are inputs like any other: the requests in
``Observation.requests`` are applied in order at the start of the tick, each checked with ``control_problem``
(a request that no longer makes sense, e.g. ``promote`` of a canary that ended meanwhile, is ignored with an
event). ``pause``/``resume`` set ``paused``; ``abort`` rolls back now (alert of severity error);
``retry`` restarts the analysis of a Failed revision (confirm-rollout asked again); ``promote`` passes the current
gate (Waiting: the rollout is confirmed; otherwise the tick's analysis passes without asking hooks or metrics and
advances, promoting without confirm-promotion at the max weight); ``promote-full`` copies the spec to the primary
at once (Promoting) and the next tick with a ready primary routes all traffic to it and succeeds. A paused
canary, or one with ``spec.suspend: true`` (as in Flagger), holds every tick: no traffic change, no checks.

Choices where docs/design.md or Flagger leave room (each covered by a test):
- A workload whose progress deadline is exceeded counts as not ready, whatever ``ready`` says.
- On rollback ``failedChecks`` keeps its count (DESIGN: "weight and iterations go to 0"); Flagger 1.44 resets it.
- WaitingPromotion sets ``iterations`` to ``max(0, iterations - 1)`` (Flagger would store -1 for weighted
  canaries, which are always at iteration 0).
- A metric without ``thresholdRange`` is compared with the deprecated ``threshold`` (0 when unset), as Flagger
  does: ``request-success-rate`` fails below it, every other metric fails above it.
- A metric that is neither built in, nor has a ``query`` or ``templateRef``, is never checked (as in Flagger).
- With neither ``stepWeight`` nor ``stepWeights`` a weighted canary cannot advance (as in Flagger); the tick
  reports it as an event instead of failing.
- In Promoting with ``stepWeightPromotion`` > 0 and no traffic left on the canary, the phase moves on to
  Finalising (Flagger would wait forever).
- Event webhooks (type ``event``) are not actions: the controller forwards ``TickResult.events`` to them.
- Extension: a metric with ``judge`` (``playground.judge``) is checked by comparing ``Probe.samples`` of the
  canary and the primary (after its threshold, if it has one). A ``fail`` is a failed check (failedChecks + 1);
  a critical one sets failedChecks to the threshold, so the next tick rolls back. ``Probe.samples`` is only
  asked for judged metrics, and scipy is only imported for canaries that have one.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal, Union

from playground.checks import MetricCheck, MetricChecker
from playground.frozen import fast_init
from playground.models import (
    AlertSeverity,
    Canary,
    CanaryMetric,
    CanaryStatus,
    CanaryWebhook,
    ControlAction,
    ControlRequest,
    HookType,
    Phase,
)
from playground.observe import Observation, Probe, Readiness, WebhookAnswer

TOTAL_WEIGHT = 100
DEFAULT_INTERVAL = "60s"
BUILTIN_METRICS = ("request-success-rate", "request-duration")

Strategy = Literal["canary", "ab", "bluegreen"]


# ------------------------------------------------------------------------------------------------ routes


@dataclass(frozen=True, slots=True)
class Routes:
    """Traffic split in the mesh: percent of requests to the primary and to the canary, plus mirroring.

    With A/B testing the split applies to the requests that match ``analysis.match``; the others always go to the
    primary. ``mirror`` copies primary-bound requests to the canary (responses are discarded).
    """

    primary: int = TOTAL_WEIGHT
    canary: int = 0
    mirror: bool = False

    def __post_init__(self) -> None:
        if not (0 <= self.primary <= TOTAL_WEIGHT and 0 <= self.canary <= TOTAL_WEIGHT) or (
            self.primary + self.canary != TOTAL_WEIGHT
        ):
            raise ValueError(f"invalid routes primary={self.primary} canary={self.canary}: weights 0..100, sum 100")

    def as_list(self) -> list[int]:
        """``[primary, canary]``, as the backtest prints it."""
        return [self.primary, self.canary]


# Unmirrored splits by canary weight, shared (a tick builds no Routes of its own).
_SPLITS = tuple(Routes(TOTAL_WEIGHT - c, c, False) for c in range(TOTAL_WEIGHT + 1))
ALL_TO_PRIMARY = _SPLITS[0]
ALL_TO_CANARY = _SPLITS[TOTAL_WEIGHT]
MIRRORED = Routes(TOTAL_WEIGHT, 0, True)


# ----------------------------------------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class ScaleCanary:
    """Scale the canary (target) Deployment up from zero.

    ``replicas_from_target``: use the replica count of the target Deployment spec (its HPA, if any, takes over
    from there); the state machine always asks for this, the controller resolves the number.
    """

    replicas_from_target: bool = True


@dataclass(frozen=True, slots=True)
class ScaleCanaryToZero:
    """Scale the canary (target) Deployment to zero replicas."""


@dataclass(frozen=True, slots=True)
class SetRoutes:
    """Apply this traffic split to the mesh (VirtualService/DestinationRule)."""

    routes: Routes


@dataclass(frozen=True, slots=True)
class PromoteCanarySpec:
    """Copy the canary's pod template and the ConfigMaps/Secrets it references to the primary."""


@dataclass(frozen=True, slots=True)
class RunHooks:
    """Call every webhook of ``type`` (post-rollout) with ``phase`` in the payload; answers do not matter."""

    type: HookType
    phase: Phase


@dataclass(frozen=True, slots=True)
class Alert:
    """Send ``message`` to the alert providers whose severity filter accepts ``severity``."""

    severity: AlertSeverity
    message: str


Action = Union[  # noqa: UP007 - a runtime alias used in isinstance checks
    ScaleCanary, ScaleCanaryToZero, SetRoutes, PromoteCanarySpec, RunHooks, Alert
]


class AlertMessages:
    """The alert texts (Flagger's wording). Parametrised ones are functions."""

    NEW_REVISION = "New revision detected, progressing canary analysis."
    WAITING_APPROVAL = "Canary is waiting for approval."
    TRAFFIC_WAITING_APPROVAL = "Canary traffic increase is waiting for approval."
    PROMOTION_WAITING_APPROVAL = "Canary promotion is waiting for approval."
    ROLLBACK_WEBHOOK = "Rolling back manual webhook invoked"
    PROMOTION_FAILED = (
        "Promotion failed: the primary is not ready past its progress deadline, all traffic is on the canary."
    )
    SUCCEEDED = "Canary analysis completed successfully, promotion finished."
    SKIPPED = "Canary analysis was skipped, promotion finished."

    @staticmethod
    def aborted(by: str) -> str:
        return f"Canary aborted by {by or 'an operator'}: rolled back, all traffic on the primary."

    @staticmethod
    def initialized(kind: str) -> str:
        return f"New {kind} detected, initialization completed."

    @staticmethod
    def threshold_reached(failed_checks: int) -> str:
        return f"Failed checks threshold reached {failed_checks}"


# ------------------------------------------------------------------------------------------------- state


_STATUS_FIELDS = (
    "phase", "canaryWeight", "failedChecks", "iterations", "lastAppliedSpec", "lastPromotedSpec", "lastTransitionTime",
    "paused", "fullPromotion",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class CanaryState:
    """What persists between ticks: the analysis fields of the Canary status, and the mesh routes (which carry the
    mirroring flag).

    The status fields are plain attributes (named as in ``CanaryStatus``) so that a tick builds no pydantic model;
    ``status`` assembles the full ``CanaryStatus`` on first use, on top of ``base`` (the status this state was read
    from, whose other fields such as conditions and trackedConfigs are kept). Equality ignores ``base``.
    """

    phase: Phase = Phase.Initializing
    canaryWeight: int = 0
    failedChecks: int = 0
    iterations: int = 0
    lastAppliedSpec: str | None = None
    lastPromotedSpec: str | None = None
    lastTransitionTime: str | None = None
    routes: Routes = ALL_TO_PRIMARY
    base: CanaryStatus | None = field(default=None, compare=False, repr=False)
    paused: bool = False  # operator controls (extension): held by `playground pause`
    fullPromotion: bool = False  # `playground promote --full`: the next Promoting tick finishes the promotion
    _status: CanaryStatus | None = field(default=None, init=False, compare=False, repr=False)

    @property
    def status(self) -> CanaryStatus:
        """The Canary status with this state's analysis fields."""
        status = self._status
        if status is None:
            values = {name: getattr(self, name) for name in _STATUS_FIELDS}
            status = self.base.model_copy(update=values) if self.base is not None else CanaryStatus(**values)
            object.__setattr__(self, "_status", status)
        return status

    @classmethod
    def initial(cls) -> CanaryState:
        """A canary never analysed: phase Initializing, all traffic to the primary."""
        return cls()

    @classmethod
    def initialized(cls, revision: str, now: str | None = None) -> CanaryState:
        """A canary bootstrapped while its target ran ``revision`` (phase Initialized, primary runs it)."""
        return cls(Phase.Initialized, lastAppliedSpec=revision, lastPromotedSpec=revision, lastTransitionTime=now)

    @classmethod
    def from_status(cls, status: CanaryStatus, routes: Routes = ALL_TO_PRIMARY) -> CanaryState:
        """A state from a Canary status (routes default to all traffic on the primary)."""
        return cls(
            status.phase, status.canaryWeight, status.failedChecks, status.iterations, status.lastAppliedSpec,
            status.lastPromotedSpec, status.lastTransitionTime, routes, status, status.paused, status.fullPromotion,
        )  # fmt: skip

    def with_routes(self, routes: Routes) -> CanaryState:
        """The same status with other mesh routes (e.g. as read back from the mesh)."""
        return replace(self, routes=routes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, for persisting in the Canary status."""
        r = self.routes
        return {
            "status": self.status.model_dump(mode="json", exclude_none=True),
            "routes": {"primary": r.primary, "canary": r.canary, "mirror": r.mirror},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CanaryState:
        """Inverse of ``to_dict``; a missing ``routes`` means all traffic on the primary."""
        routes = data.get("routes") or {}
        return cls.from_status(
            CanaryStatus.model_validate(data.get("status") or {}),
            Routes(
                int(routes.get("primary", TOTAL_WEIGHT)),
                int(routes.get("canary", 0)),
                bool(routes.get("mirror", False)),
            ),
        )


@dataclass(frozen=True, slots=True)
class Intervention:
    """An operator request consumed by a tick: ``applied`` False when it no longer made sense (``outcome`` says
    why, e.g. the release ended before the request was seen)."""

    request: ControlRequest
    applied: bool
    outcome: str


@dataclass(frozen=True, slots=True)
class TickResult:
    state: CanaryState
    actions: tuple[Action, ...] = ()
    events: tuple[str, ...] = ()
    checks: tuple[MetricCheck, ...] = ()
    hooks: tuple[WebhookAnswer, ...] = ()
    interventions: tuple[Intervention, ...] = ()


# Built on every tick: CanaryState(...) / TickResult(...) without the frozen __init__ (playground.frozen).
_new_state = fast_init(CanaryState)
_new_result = fast_init(TickResult)


# ----------------------------------------------------------------------------------------------- helpers


def strategy(canary: Canary) -> Strategy:
    """``ab`` (match + iterations), ``bluegreen`` (iterations without match) or ``canary`` (weighted)."""
    a = canary.spec.analysis
    if a.iterations > 0:
        return "ab" if a.match else "bluegreen"
    return "canary"


def max_weight(canary: Canary) -> int:
    """Effective max weight: min(100, last stepWeights entry); else maxWeight if > 0; else 100."""
    a = canary.spec.analysis
    if a.stepWeights:
        return min(TOTAL_WEIGHT, a.stepWeights[-1])
    return a.maxWeight if a.maxWeight > 0 else TOTAL_WEIGHT


def next_weight(canary: Canary, current: int) -> int:
    """The canary weight one step after ``current``, within 0..100.

    ``stepWeight`` wins when set; ``stepWeights`` moves to the entry after ``current`` (the first one from 0, all
    the rest when ``current`` is not listed). With neither, the weight cannot move: returns ``current``.
    """
    a = canary.spec.analysis
    if a.stepWeight > 0:
        return min(TOTAL_WEIGHT, current + a.stepWeight)
    steps = a.stepWeights
    if not steps:
        return current
    if current == 0:
        return max(0, min(TOTAL_WEIGHT, steps[0]))
    for i in range(len(steps) - 1):
        if steps[i] == current:
            return max(0, min(TOTAL_WEIGHT, steps[i + 1]))
    return TOTAL_WEIGHT


def analysis_threshold(canary: Canary) -> int:
    """Failed checks that trigger a rollback (``analysis.threshold``, 1 when <= 0)."""
    t = canary.spec.analysis.threshold
    return t if t > 0 else 1


def analysis_interval(canary: Canary) -> str:
    """``analysis.interval`` or the 60s default (as written; parse with ``durations.parse_duration``)."""
    return canary.spec.analysis.interval or DEFAULT_INTERVAL


def checked_metrics(canary: Canary) -> list[CanaryMetric]:
    """The metrics a tick checks, in Flagger's order: built-in and inline-query ones, then template ones."""
    metrics = canary.spec.analysis.metrics
    first = [m for m in metrics if m.templateRef is None and (m.name in BUILTIN_METRICS or m.query)]
    return first + [m for m in metrics if m.templateRef is not None]


# ---------------------------------------------------------------------------------------- operator controls

# Phases in which an analysis can be promoted or aborted by hand.
_STEERABLE = (Phase.Progressing, Phase.Waiting, Phase.WaitingPromotion)


def allowed_actions(phase: Phase, paused: bool) -> list[ControlAction]:
    """The operator controls that make sense for a canary in ``phase`` (``paused``: held by an operator).

    promote / promote-full / abort while the analysis runs (Progressing, Waiting, WaitingPromotion); retry on a
    Failed canary; pause when not paused, resume when paused (in any phase: pausing an idle canary holds its next
    release).
    """
    out: list[ControlAction] = []
    if phase in _STEERABLE:
        out += [ControlAction.promote, ControlAction.promote_full, ControlAction.abort]
    if phase is Phase.Failed:
        out.append(ControlAction.retry)
    out.append(ControlAction.resume if paused else ControlAction.pause)
    return out


def control_problem(action: ControlAction, phase: Phase, paused: bool) -> str | None:
    """Why ``action`` makes no sense for a canary in ``phase`` (None when it does): names the phase and what is
    possible, for the one-line error of the CLI and the event of a tick that ignores a stale request."""
    allowed = allowed_actions(phase, paused)
    if action in allowed:
        return None
    state = f"{phase.value}{', paused' if paused else ''}"
    return f"cannot {action.value} a canary that is {state}; possible now: {', '.join(a.value for a in allowed)}"


def _ready(r: Readiness) -> bool:
    return r.ready and not r.deadline_exceeded


# Phase members as plain globals: enum member access goes through the enum metaclass, and a tick compares phases
# often enough for it to show in the backtest benchmark.
_INITIALIZING = Phase.Initializing
_INITIALIZED = Phase.Initialized
_WAITING = Phase.Waiting
_PROGRESSING = Phase.Progressing
_WAITING_PROMOTION = Phase.WaitingPromotion
_PROMOTING = Phase.Promoting
_FINALISING = Phase.Finalising
_SUCCEEDED = Phase.Succeeded
_FAILED = Phase.Failed
_TERMINATING = Phase.Terminating

# Phases in which a tick works on the current run even without a new revision.
_ACTIVE = frozenset({Phase.Progressing, Phase.Waiting, Phase.WaitingPromotion, Phase.Promoting, Phase.Finalising})
# Phases that keep the status weight and iterations when entered.
_KEEP_COUNTERS = frozenset({Phase.Progressing, Phase.Waiting, Phase.Promoting})


# -------------------------------------------------------------------------------------------------- tick


@dataclass(frozen=True, slots=True)
class _Plan:
    """What a tick needs from the Canary spec, derived once per Canary object."""

    id: str  # name.namespace, as in Flagger's events
    kind: str  # targetRef kind, for the initialization alert
    strategy: Strategy
    skip: bool
    threshold: int
    max_weight: int
    can_step: bool  # stepWeight or stepWeights configured
    mirror: bool
    iterations: int
    step_promotion: int
    suspend: bool  # spec.suspend: every tick is held, as in Flagger
    checkers: tuple[MetricChecker, ...]  # one per checked metric, in order (``checker.metric``)
    judged: bool  # some metric has a judge (extension): checked through playground.judge
    # webhooks asked during a tick, by type, in spec order
    hooks_confirm_rollout: tuple[CanaryWebhook, ...]
    hooks_pre_rollout: tuple[CanaryWebhook, ...]
    hooks_rollout: tuple[CanaryWebhook, ...]
    hooks_confirm_traffic_increase: tuple[CanaryWebhook, ...]
    hooks_confirm_promotion: tuple[CanaryWebhook, ...]
    hooks_rollback: tuple[CanaryWebhook, ...]

    @classmethod
    def of(cls, canary: Canary) -> _Plan:
        a = canary.spec.analysis

        def hooks(type_: HookType) -> tuple[CanaryWebhook, ...]:
            return tuple(w for w in a.webhooks if w.type is type_)

        return cls(
            id=f"{canary.metadata.name}.{canary.namespace}",
            kind=canary.spec.targetRef.kind or "Deployment",
            strategy=strategy(canary),
            skip=canary.spec.skipAnalysis,
            threshold=analysis_threshold(canary),
            max_weight=max_weight(canary),
            can_step=a.stepWeight > 0 or bool(a.stepWeights),
            mirror=a.mirror,
            iterations=a.iterations,
            step_promotion=a.stepWeightPromotion,
            suspend=canary.spec.suspend,
            checkers=tuple(MetricChecker(m) for m in checked_metrics(canary)),
            judged=any(m.judge is not None for m in a.metrics),
            hooks_confirm_rollout=hooks(HookType.confirm_rollout),
            hooks_pre_rollout=hooks(HookType.pre_rollout),
            hooks_rollout=hooks(HookType.rollout),
            hooks_confirm_traffic_increase=hooks(HookType.confirm_traffic_increase),
            hooks_confirm_promotion=hooks(HookType.confirm_promotion),
            hooks_rollback=hooks(HookType.rollback),
        )


_PLANS: dict[int, tuple[Canary, _Plan]] = {}
_PLAN_CACHE_SIZE = 64


def _plan(canary: Canary) -> _Plan:
    """The plan of ``canary``, memoised per object (a Canary is treated as immutable while it is ticked)."""
    hit = _PLANS.get(id(canary))
    if hit is not None and hit[0] is canary:
        return hit[1]
    plan = _Plan.of(canary)
    if len(_PLANS) >= _PLAN_CACHE_SIZE:
        _PLANS.pop(next(iter(_PLANS)), None)  # the oldest entry
    _PLANS[id(canary)] = (canary, plan)  # holding the Canary keeps its id from being reused
    return plan


def tick(canary: Canary, state: CanaryState, obs: Observation, probe: Probe) -> TickResult:
    """Advance the analysis of ``canary`` by one tick. Pure apart from the questions asked through ``probe``.

    ``canary`` must not be mutated in place between ticks (derive a new one instead): what the tick reads from it
    is memoised per object.
    """
    t = _Tick(canary, state, obs, probe)
    t.run()
    return t.result()


def advance(canary: Canary, state: CanaryState, obs: Observation, probe: Probe) -> CanaryState:
    """``tick(canary, state, obs, probe).state``, without assembling the rest of the ``TickResult`` (a backtest
    only needs the state)."""
    t = _Tick(canary, state, obs, probe)
    t.run()
    return t.new_state()


class _Tick:
    """The working memory of one tick: status fields as locals, accumulated actions/events/checks/hooks."""

    __slots__ = (
        "canary", "plan", "obs", "probe", "state",
        "phase", "weight", "failed", "iterations", "applied", "promoted", "changed_at", "routes",
        "paused", "full", "forced", "actions", "events", "checks", "hooks", "interventions",
    )  # fmt: skip

    def __init__(self, canary: Canary, state: CanaryState, obs: Observation, probe: Probe) -> None:
        self.canary = canary
        self.plan = _plan(canary)
        self.obs = obs
        self.probe = probe
        self.state = state
        self.phase = state.phase
        self.weight = state.canaryWeight
        self.failed = state.failedChecks
        self.iterations = state.iterations
        self.applied = state.lastAppliedSpec
        self.promoted = state.lastPromotedSpec
        self.changed_at = state.lastTransitionTime
        self.routes = state.routes
        self.paused = state.paused
        self.full = state.fullPromotion
        self.forced = False  # `promote`: this tick passes the current gate without asking hooks or metrics
        self.actions: list[Action] = []
        self.events: list[str] = []
        self.checks: list[MetricCheck] = []
        self.hooks: list[WebhookAnswer] = []
        self.interventions: list[Intervention] = []

    # -- result ----------------------------------------------------------------------------------
    def result(self) -> TickResult:
        return _new_result(
            self.new_state(), tuple(self.actions), tuple(self.events), tuple(self.checks), tuple(self.hooks),
            tuple(self.interventions),
        )  # fmt: skip

    def new_state(self) -> CanaryState:
        """The state after the tick: the previous one when the tick changed none of its fields."""
        state = self.state
        if (
            self.phase is not state.phase
            or self.weight != state.canaryWeight
            or self.failed != state.failedChecks
            or self.iterations != state.iterations
            or self.applied != state.lastAppliedSpec
            or self.promoted != state.lastPromotedSpec
            or self.routes is not state.routes
            or self.paused != state.paused
            or self.full != state.fullPromotion
        ):
            state = _new_state(
                self.phase, self.weight, self.failed, self.iterations, self.applied, self.promoted,
                self.changed_at, self.routes, state.base, self.paused, self.full,
            )  # fmt: skip
        return state

    # -- status and effects ------------------------------------------------------------------------
    def set_phase(self, phase: Phase) -> None:
        """Flagger's SetStatusPhase: weight/iterations reset outside Progressing/Waiting/Promoting."""
        if phase is self.phase:
            return
        if phase not in _KEEP_COUNTERS:
            self.iterations = max(0, self.iterations - 1) if phase is _WAITING_PROMOTION else 0
            self.weight = 0
        if phase is _INITIALIZED or phase is _SUCCEEDED:
            self.promoted = self.applied
        self.phase = phase
        self.changed_at = self.obs.now

    def start_run(self) -> None:
        """Flagger's SyncStatus(Progressing): a fresh run of the observed revision."""
        self.set_phase(_PROGRESSING)
        self.weight = self.failed = self.iterations = 0
        self.applied = self.obs.revision

    def set_routes(self, routes: Routes) -> None:
        self.routes = routes
        self.actions.append(SetRoutes(routes))

    def alert(self, severity: AlertSeverity, message: str) -> None:
        self.actions.append(Alert(severity, message))

    def ask(self, hook: CanaryWebhook, phase: Phase = _PROGRESSING) -> bool:
        answer = self.probe.webhook(hook, phase)
        self.hooks.append(answer)
        return answer.ok

    def gate(self, hooks: tuple[CanaryWebhook, ...], label: str) -> bool:
        """Ask ``hooks`` in order; the first failure closes the gate."""
        for hook in hooks:
            if not self.ask(hook):
                self.events.append(f"Halt {self.plan.id} advancement {label} {hook.name} denied")
                return False
        return True

    def rollback(self) -> None:
        """Route all traffic to the primary, scale the canary to zero, Failed, post-rollout hooks."""
        if self.failed >= self.plan.threshold:
            self.events.append(f"Rolling back {self.plan.id} failed checks threshold reached {self.failed}")
            self.alert(AlertSeverity.error, AlertMessages.threshold_reached(self.failed))
        self.set_routes(ALL_TO_PRIMARY)
        self.events.append(f"Canary failed! Scaling down {self.plan.id}")
        self.actions.append(ScaleCanaryToZero())
        self.set_phase(_FAILED)
        self.actions.append(RunHooks(HookType.post_rollout, _FAILED))

    def promote(self) -> None:
        self.events.append(f"Copying {self.plan.id} template spec to primary")
        self.actions.append(PromoteCanarySpec())
        self.set_phase(_PROMOTING)

    # -- operator controls -------------------------------------------------------------------------
    def operator(self) -> bool:
        """Apply the operator requests of the observation, in order. True when one of them ended the tick."""
        for req in self.obs.requests:
            action = req.action
            who = f" by {req.by}" if req.by else ""
            problem = control_problem(action, self.phase, self.paused)
            if problem is not None:
                self.events.append(f"Ignored {action.value}{who} of {self.plan.id}: {problem}")
                self.interventions.append(Intervention(req, False, problem))
                continue
            outcome = self.apply_request(action, req.by)
            self.events.append(f"Operator {action.value}{who}: {outcome}")
            self.interventions.append(Intervention(req, True, outcome))
            if action is not ControlAction.pause and action is not ControlAction.resume:
                return not self.forced  # a passed gate goes on with the tick; the other controls end it
        return False

    def apply_request(self, action: ControlAction, by: str) -> str:
        plan = self.plan
        if action is ControlAction.pause:
            self.paused = True
            return f"{plan.id} paused at canary weight {self.routes.canary} ({self.phase.value})"
        if action is ControlAction.resume:
            self.paused = False
            return f"{plan.id} resumed ({self.phase.value})"
        self.paused = False  # promote, abort and retry end a pause, as in Argo Rollouts
        if action is ControlAction.abort:
            self.applied = self.obs.revision  # a Waiting revision is settled too: it is not released again
            self.alert(AlertSeverity.error, AlertMessages.aborted(by))
            self.rollback()
            return f"{plan.id} rolled back, all traffic on the primary"
        if action is ControlAction.retry:
            self.events.append(f"Retrying the analysis of revision {self.obs.revision} of {plan.id}")
            self.confirm_rollout()
            return f"{plan.id} analysis restarted ({self.phase.value})"
        if action is ControlAction.promote_full:
            self.applied = self.obs.revision
            self.full = True
            self.promote()
            return f"{plan.id} promoting now, remaining steps skipped"
        # promote: pass the current gate
        if self.phase is _WAITING:
            self.events.append(f"New revision detected! Scaling up {plan.id} (confirm-rollout passed by hand)")
            self.alert(AlertSeverity.info, AlertMessages.NEW_REVISION)
            self.actions.append(ScaleCanary(True))
            self.start_run()
            return f"{plan.id} rollout confirmed"
        self.forced = True  # the analysis below passes without hooks or metrics, and advances
        return f"{plan.id} passes the current gate ({self.phase.value})"

    # -- the tick ----------------------------------------------------------------------------------
    def run(self) -> None:
        if self.obs.requests and self.operator():
            return
        if (self.paused or self.plan.suspend) and not (self.forced or self.full):
            if self.phase is _INITIALIZING or self.phase in _ACTIVE or self.obs.revision != self.applied:
                why = "suspended (spec.suspend)" if self.plan.suspend else "paused by an operator"
                self.events.append(f"Halt {self.plan.id} advancement: {why}, canary weight {self.routes.canary}")
            return
        phase = self.phase
        obs = self.obs
        plan = self.plan
        if phase is _INITIALIZING or phase is _TERMINATING:
            if phase is _INITIALIZING:
                self.initialize()
            return
        new_revision = obs.revision != self.applied
        if phase not in _ACTIVE and not new_revision:
            return  # Initialized / Succeeded / Failed and nothing new to analyse
        if not plan.skip and not _ready(obs.primary):
            self.primary_not_ready()
            return

        # 1. a new revision (or a Waiting one): confirm-rollout gate, then scale up and start on the next tick
        if phase is _INITIALIZED or phase is _SUCCEEDED or phase is _FAILED or phase is _WAITING:
            self.confirm_rollout()
            return
        # 2. a newer revision during the analysis restarts it
        if new_revision and (phase is _PROGRESSING or phase is _WAITING_PROMOTION):
            self.events.append(f"New revision detected! Restarting analysis for {plan.id}")
            self.set_routes(ALL_TO_PRIMARY)
            self.start_run()
            return
        # 3. canary readiness: wait, unless past its deadline (then roll back below)
        canary_dead = obs.canary.deadline_exceeded
        if not obs.canary.ready and not canary_dead and not self.full:
            self.events.append(f"Waiting for canary {plan.id} to be ready {obs.canary.message}".rstrip())
            return
        # 4. skipAnalysis: promote at once (or roll back a canary past its deadline)
        if plan.skip:
            if canary_dead:
                self.events.append(f"Rolling back {plan.id} progress deadline exceeded {obs.canary.message}".rstrip())
                self.rollback()
                return
            self.set_routes(ALL_TO_PRIMARY)
            self.actions.append(PromoteCanarySpec())
            self.actions.append(ScaleCanaryToZero())
            self.set_phase(_SUCCEEDED)
            self.events.append(f"Promotion completed! Canary analysis was skipped for {plan.id}")
            self.alert(AlertSeverity.info, AlertMessages.SKIPPED)
            return
        # 5. a rollback webhook answering success rolls back
        if phase is _PROGRESSING or phase is _WAITING_PROMOTION:
            for hook in plan.hooks_rollback:
                if self.ask(hook, phase):
                    self.events.append(f"Rolling back {plan.id} manual webhook {hook.name} invoked")
                    self.alert(AlertSeverity.warn, AlertMessages.ROLLBACK_WEBHOOK)
                    self.rollback()
                    return
        # 6. promotion traffic shift, then finalisation
        if phase is _PROMOTING and self.full:  # `promote --full`: all traffic to the primary and finish now
            self.full = False
            self.events.append(f"Routing all traffic to primary of {plan.id}")
            self.set_routes(ALL_TO_PRIMARY)
            self.finalise()
            return
        if phase is _PROMOTING:
            self.shift_to_primary()
            return
        if phase is _FINALISING:
            self.finalise()
            return
        # 7. threshold reached on the previous ticks (or canary past its deadline): roll back before analysing
        if canary_dead or self.failed >= plan.threshold:
            if canary_dead:
                self.events.append(f"Rolling back {plan.id} progress deadline exceeded {obs.canary.message}".rstrip())
            self.rollback()
            return
        # 8. analysis
        routes = self.routes
        if self.forced:
            ok = True  # `promote`: the current gate is passed by hand
        elif routes.canary == 0 and self.iterations == 0 and not (plan.mirror and routes.mirror):
            self.events.append(f"Starting canary analysis for {plan.id}")
            ok = self.gate(self.plan.hooks_pre_rollout, "pre-rollout check")
        else:
            ok = self.gate(self.plan.hooks_rollout, "external check") and self.run_metrics()
        if not ok:
            self.failed += 1
            if self.checks and self.checks[-1].critical:  # judge extension: a critical metric failed
                self.failed = max(self.failed, plan.threshold)
            return
        # 9. advance
        if plan.strategy == "canary":
            self.advance_canary()
        elif plan.strategy == "ab":
            self.advance_ab()
        else:
            self.advance_bluegreen()

    def finalise(self) -> None:
        self.actions.append(ScaleCanaryToZero())
        self.set_phase(_SUCCEEDED)
        self.actions.append(RunHooks(HookType.post_rollout, _SUCCEEDED))
        self.events.append(f"Promotion completed! Scaling down {self.plan.id}")
        self.alert(AlertSeverity.info, AlertMessages.SUCCEEDED)

    def initialize(self) -> None:
        if not self.plan.skip and not _ready(self.obs.primary):
            self.events.append(f"Waiting for primary of {self.plan.id} to be ready {self.obs.primary.message}".rstrip())
            return
        self.actions.append(ScaleCanaryToZero())
        self.set_routes(ALL_TO_PRIMARY)
        self.applied = self.obs.revision
        self.set_phase(_INITIALIZED)
        self.events.append(f"Initialization done! {self.plan.id}")
        self.alert(AlertSeverity.info, AlertMessages.initialized(self.plan.kind))

    def primary_not_ready(self) -> None:
        primary = self.obs.primary
        if primary.deadline_exceeded and (self.phase is _PROMOTING or self.phase is _FINALISING):
            # The primary already runs the new spec and cannot become ready: keep serving from the canary.
            self.events.append(
                f"Promotion of {self.plan.id} failed: primary not ready past its deadline {primary.message}".rstrip()
            )
            self.set_routes(ALL_TO_CANARY)
            self.set_phase(_FAILED)
            self.weight = TOTAL_WEIGHT
            self.alert(AlertSeverity.error, AlertMessages.PROMOTION_FAILED)
            return
        self.events.append(f"Waiting for primary of {self.plan.id} to be ready {primary.message}".rstrip())

    def confirm_rollout(self) -> None:
        for hook in self.plan.hooks_confirm_rollout:
            if not self.ask(hook):
                if self.phase is not _WAITING:
                    self.set_phase(_WAITING)
                    self.events.append(f"Halt {self.plan.id} advancement waiting for approval {hook.name}")
                    if not hook.muteAlert:  # Flagger: muteAlert silences this webhook's approval alert
                        self.alert(AlertSeverity.warn, AlertMessages.WAITING_APPROVAL)
                return
        self.events.append(f"New revision detected! Scaling up {self.plan.id}")
        self.alert(AlertSeverity.info, AlertMessages.NEW_REVISION)
        self.actions.append(ScaleCanary(True))
        self.start_run()

    def run_metrics(self) -> bool:
        probe = self.probe
        metric_of = probe.metric
        plan = self.plan
        for checker in plan.checkers:
            metric = checker.metric
            if plan.judged and metric.judge is not None:
                from playground.judge import evaluate_judged  # scipy: imported only by canaries that use a judge

                check = evaluate_judged(metric, probe)
            else:
                check = checker(metric_of(metric))
            self.checks.append(check)
            if not check.passed:
                self.events.append(f"Halt {plan.id} advancement {check.message}")
                return False
        return True

    def confirm_promotion(self) -> bool:
        if self.forced:
            return True
        for hook in self.plan.hooks_confirm_promotion:
            if not self.ask(hook):
                if self.phase is not _WAITING_PROMOTION:
                    self.set_phase(_WAITING_PROMOTION)
                    self.events.append(f"Halt {self.plan.id} advancement waiting for promotion approval {hook.name}")
                    if not hook.muteAlert:  # Flagger: muteAlert silences this webhook's approval alert
                        self.alert(AlertSeverity.warn, AlertMessages.PROMOTION_WAITING_APPROVAL)
                return False
        return True

    def shift_to_primary(self) -> None:
        step = self.plan.step_promotion
        canary = self.routes.canary
        if step <= 0 or canary == 0:
            self.events.append(f"Routing all traffic to primary of {self.plan.id}")
            self.set_routes(ALL_TO_PRIMARY)
            self.set_phase(_FINALISING)
            return
        canary = max(0, canary - step)
        self.set_routes(_SPLITS[canary])
        self.events.append(f"Advance {self.plan.id} primary weight {TOTAL_WEIGHT - canary}")
        if canary == 0:
            self.set_phase(_FINALISING)
        else:
            self.weight = canary

    def advance_canary(self) -> None:
        plan = self.plan
        routes = self.routes
        current = routes.canary
        if not plan.can_step:
            self.events.append(f"{plan.id} has no stepWeight or stepWeights: traffic cannot advance")
            return
        if not routes.mirror and self.phase is not _WAITING_PROMOTION and not self.forced:
            for hook in plan.hooks_confirm_traffic_increase:
                if not self.ask(hook):
                    self.events.append(f"Halt {plan.id} advancement waiting for traffic increase approval {hook.name}")
                    if not hook.muteAlert:  # Flagger: muteAlert silences this webhook's approval alert
                        self.alert(AlertSeverity.warn, AlertMessages.TRAFFIC_WAITING_APPROVAL)
                    return
        if current < plan.max_weight:
            nxt = next_weight(self.canary, current)
            if plan.mirror and current == 0 and not routes.mirror:
                new = MIRRORED  # one mirrored tick at weight 0, then the first weight without mirroring
            else:
                new = _SPLITS[nxt]
            self.set_routes(new)
            self.weight = new.canary
            self.events.append(f"Advance {plan.id} canary weight {new.canary}")
            return
        if self.confirm_promotion():
            self.promote()

    def advance_ab(self) -> None:
        total = self.plan.iterations
        if total > self.iterations:
            self.set_routes(ALL_TO_CANARY)
            self.iterations += 1
            self.events.append(f"Advance {self.plan.id} canary iteration {self.iterations}/{total}")
            return
        if self.confirm_promotion() and total == self.iterations:
            self.promote()

    def advance_bluegreen(self) -> None:
        total = self.plan.iterations
        if total > self.iterations:
            if self.plan.mirror and not self.routes.mirror:
                self.events.append(f"Start traffic mirroring for {self.plan.id}")
                self.set_routes(MIRRORED)
            self.iterations += 1
            self.events.append(f"Advance {self.plan.id} canary iteration {self.iterations}/{total}")
            return
        if not self.confirm_promotion():
            return
        if total == self.iterations:
            self.events.append(f"Routing all traffic to canary {self.plan.id}")
            self.set_routes(ALL_TO_CANARY)
            self.iterations += 1
            return
        self.promote()
