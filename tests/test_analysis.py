"""The analysis state machine driven tick by tick: what each tick asks, the actions it returns, alerts, status."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from playground.analysis import (
    ALL_TO_CANARY,
    ALL_TO_PRIMARY,
    MIRRORED,
    Alert,
    AlertMessages,
    CanaryState,
    PromoteCanarySpec,
    Routes,
    RunHooks,
    ScaleCanary,
    ScaleCanaryToZero,
    SetRoutes,
    TickResult,
    advance,
    analysis_threshold,
    checked_metrics,
    max_weight,
    next_weight,
    strategy,
    tick,
)
from playground.checks import MetricChecker, evaluate_metric
from playground.models import AlertSeverity, Canary, CanaryMetric, CanaryStatus, HookType, Phase
from playground.observe import MetricValue, Observation, Readiness, WebhookAnswer

ALL_HOOKS = [
    {"name": "approve", "type": "confirm-rollout", "url": "http://lt/gate"},
    {"name": "smoke", "type": "pre-rollout", "url": "http://lt/"},
    {"name": "load", "url": "http://lt/"},
    {"name": "more-traffic", "type": "confirm-traffic-increase", "url": "http://lt/gate"},
    {"name": "promote", "type": "confirm-promotion", "url": "http://lt/gate"},
    {"name": "abort", "type": "rollback", "url": "http://lt/rollback"},
    {"name": "notify", "type": "post-rollout", "url": "http://lt/"},
]
SR = {"name": "request-success-rate", "thresholdRange": {"min": 99}}
LATENCY = {"name": "request-duration", "thresholdRange": {"max": 500}}
ERRORS = {"name": "error-rate", "templateRef": {"name": "error-rate"}, "thresholdRange": {"max": 1}}
PASSING = {"request-success-rate": 100.0, "request-duration": 120.0, "error-rate": 0.0}


def make_canary(skip: bool = False, **analysis: Any) -> Canary:
    analysis.setdefault("metrics", [SR])
    return Canary.model_validate(
        {
            "metadata": {"name": "backend", "namespace": "prod"},
            "spec": {
                "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "backend"},
                "service": {"port": 9898},
                "skipAnalysis": skip,
                "analysis": analysis,
            },
        }
    )


class Sim:
    """Drives tick() with scripted answers; records the questions asked."""

    def __init__(self, canary: Canary, state: CanaryState | None = None) -> None:
        self.canary = canary
        self.state = state or CanaryState.initialized("r0")
        self.asked: list[str] = []
        self.hook_status: dict[str, int] = {}
        self.values: dict[str, float | None] = {}
        self.n = 0

    # Probe
    def webhook(self, hook, phase):
        self.asked.append(f"hook:{hook.name}")
        return WebhookAnswer(hook.name, self.hook_status.get(hook.name, 200))

    def metric(self, metric):
        self.asked.append(f"metric:{metric.name}")
        value = self.values.get(metric.name, PASSING[metric.name])
        return MetricValue(metric.name, value, query=f"q({metric.name})")

    def step(
        self,
        revision: str = "r1",
        hooks: dict | None = None,
        values: dict | None = None,
        canary: Readiness | None = None,
        primary: Readiness | None = None,
    ) -> TickResult:
        self.asked = []
        self.hook_status = {"abort": 404, **(hooks or {})}  # the rollback hook does not signal by default
        self.values = values or {}
        obs = Observation(revision, canary or Readiness(), primary or Readiness(), now=f"t{self.n}")
        self.n += 1
        state_only = advance(self.canary, self.state, obs, self)  # the backtest's path, asked the same questions
        self.asked = []
        result = tick(self.canary, self.state, obs, self)
        assert state_only == result.state and (state_only is self.state) == (result.state is self.state)
        # routes changes are actions and state at once
        for action in result.actions:
            if isinstance(action, SetRoutes):
                assert action.routes == result.state.routes or action is not result.actions[-1]
        set_routes = [a.routes for a in result.actions if isinstance(a, SetRoutes)]
        assert (set_routes[-1] if set_routes else self.state.routes) == result.state.routes
        self.state = result.state
        return result

    @property
    def phase(self) -> Phase:
        return self.state.status.phase

    def summary(self) -> tuple:
        s = self.state.status
        return s.phase.value, s.canaryWeight, self.state.routes.as_list(), s.failedChecks, s.iterations


def alerts(result: TickResult) -> list[tuple[str, str]]:
    return [(a.severity.value, a.message) for a in result.actions if isinstance(a, Alert)]


# ------------------------------------------------------------------------------------------------ helpers


@pytest.mark.parametrize(
    "analysis, expected",
    [
        ({}, 100),
        ({"maxWeight": 50, "stepWeight": 20}, 50),
        ({"stepWeights": [10, 40]}, 40),
        ({"stepWeights": [10, 50, 120], "maxWeight": 30}, 100),
    ],
)
def test_max_weight(analysis, expected):
    assert max_weight(make_canary(**analysis)) == expected


@pytest.mark.parametrize(
    "analysis, current, expected",
    [
        ({"stepWeight": 20, "maxWeight": 50}, 40, 60),  # maxWeight is not a clamp
        ({"stepWeight": 30}, 90, 100),
        ({"stepWeights": [5, 10, 30]}, 0, 5),
        ({"stepWeights": [5, 10, 30]}, 10, 30),
        ({"stepWeights": [10, 50, 120]}, 50, 100),
        ({"stepWeights": [10, 50]}, 20, 100),  # not a listed weight: all the rest
        ({"stepWeights": [10, 50], "stepWeight": 5}, 10, 15),  # stepWeight wins
        ({}, 30, 30),  # no step configured
    ],
)
def test_next_weight(analysis, current, expected):
    assert next_weight(make_canary(**analysis), current) == expected


def test_strategy_and_threshold():
    assert strategy(make_canary(stepWeight=10)) == "canary"
    assert strategy(make_canary(iterations=3)) == "bluegreen"
    assert strategy(make_canary(iterations=3, match=[{"headers": {"x": {"exact": "1"}}}])) == "ab"
    assert strategy(make_canary(match=[{"headers": {"x": {"exact": "1"}}}], stepWeight=10)) == "canary"
    assert analysis_threshold(make_canary()) == 1
    assert analysis_threshold(make_canary(threshold=-3)) == 1
    assert analysis_threshold(make_canary(threshold=4)) == 4


def test_metrics_are_checked_builtin_and_inline_first_then_templates():
    canary = make_canary(metrics=[ERRORS, SR, {"name": "custom", "query": "up", "threshold": 1}, {"name": "orphan"}])
    assert [m.name for m in checked_metrics(canary)] == ["request-success-rate", "custom", "error-rate"]


def metric(**kw: Any) -> CanaryMetric:
    return CanaryMetric.model_validate({"name": "m", **kw})


@pytest.mark.parametrize(
    "spec, value, passed, message",
    [
        ({"thresholdRange": {"min": 99}}, 99.0, True, "within"),  # bounds are inclusive
        ({"thresholdRange": {"min": 99}}, 98.99, False, "< 99 (thresholdRange.min)"),
        ({"thresholdRange": {"max": 500}}, 500.0, True, "within"),
        ({"thresholdRange": {"max": 500}}, 501.0, False, "> 500 (thresholdRange.max)"),
        ({"thresholdRange": {"min": 1, "max": 2}}, 0.5, False, "< 1"),
        ({"name": "request-success-rate", "threshold": 99}, 98.0, False, "< 99 (threshold)"),
        ({"name": "request-success-rate", "threshold": 99}, 99.0, True, ">= 99"),
        ({"name": "request-duration", "threshold": 500}, 501.0, False, "> 500 (threshold)"),
        ({"name": "request-duration", "threshold": 500}, 500.0, True, "<= 500"),
        ({"templateRef": {"name": "t"}, "threshold": 5}, 6.0, False, "> 5 (threshold)"),
        ({"templateRef": {"name": "t"}}, 0.1, False, "> 0 (threshold)"),  # Flagger's zero default
        ({"thresholdRange": {"min": 99}}, None, False, "no values found"),
        ({"thresholdRange": {"min": 99}}, math.nan, False, "no values found"),
        ({"thresholdRange": {"min": 99}, "noData": "pass"}, None, True, "noData: pass"),
        ({"thresholdRange": {"min": 99}, "noData": "pass"}, math.nan, True, "noData: pass"),
    ],
)
def test_evaluate_metric(spec, value, passed, message):
    m = metric(**spec)
    check = evaluate_metric(m, MetricValue(m.name, value, query="q"))
    assert check.passed is passed
    assert message in check.message
    assert check.name == m.name and check.query == "q"


def test_query_error_is_a_failed_check_even_with_nodata_pass():
    m = metric(thresholdRange={"min": 1}, noData="pass")
    check = evaluate_metric(m, MetricValue("m", None, error="connection refused"))
    assert not check.passed and "query failed: connection refused" in check.message


def test_metric_checker_gives_the_check_of_evaluate_metric_and_reuses_it_for_a_value_seen_before():
    m = metric(thresholdRange={"min": 1, "max": 200})
    checker = MetricChecker(m, size=3)  # small: the memory fills and is forgotten several times below
    for v in [150.0, 0.5, 150.0, 250.0, 150.0, 7.25, 8.0, 9.0, 150.0, 0.5]:
        for query in ("q", "other query"):
            mv = MetricValue("m", v, query=query)
            check = checker(mv)
            assert check == evaluate_metric(m, mv)  # same verdict, message, value and query
            assert checker(MetricValue("m", v, query=query)) is check  # remembered: not judged again


@pytest.mark.parametrize("value", [0.0, -0.0, None, math.nan])
def test_metric_checker_judges_zero_and_missing_values_each_time(value):
    # 0.0 == -0.0 as dict keys, but their messages differ ("-0.00"); NaN never equals itself
    m = metric(thresholdRange={"max": 1})
    checker = MetricChecker(m)
    assert checker(MetricValue("m", 0.0)).message == "m 0.00 within thresholdRange"
    check = checker(MetricValue("m", value))
    assert check == evaluate_metric(m, MetricValue("m", value))
    if value == 0.0:
        assert check.message == f"m {value:.2f} within thresholdRange"  # "m -0.00 ..." for -0.0


def test_metric_checker_does_not_remember_a_query_error():
    m = metric(thresholdRange={"min": 1})
    checker = MetricChecker(m)
    assert checker(MetricValue("m", 5.0, error="timeout")).message == "m: query failed: timeout"
    assert checker(MetricValue("m", 5.0)).passed
    assert checker(MetricValue("m", 5.0, error="refused")).message == "m: query failed: refused"


def test_routes_are_validated():
    assert Routes(70, 30).as_list() == [70, 30]
    for bad in ((70, 20), (110, -10), (-1, 101)):
        with pytest.raises(ValueError, match="sum 100"):
            Routes(*bad)


def test_state_round_trips_through_json():
    status = CanaryStatus(
        phase=Phase.WaitingPromotion,
        canaryWeight=0,
        failedChecks=2,
        iterations=1,
        lastAppliedSpec="abc",
        lastPromotedSpec="xyz",
        lastTransitionTime="2024-01-01T00:00:00Z",
        trackedConfigs={"configmap/backend-env": "123"},
        conditions=[{"type": "Promoted"}],
    )
    state = CanaryState.from_status(status, Routes(40, 60, False))
    assert state.status == status and state.failedChecks == 2
    data = json.loads(json.dumps(state.to_dict()))
    assert CanaryState.from_dict(data) == state
    assert CanaryState.from_dict(data).status == status
    assert CanaryState.from_dict({"status": {"phase": "Failed"}}).routes == ALL_TO_PRIMARY
    assert CanaryState.from_status(status).routes == ALL_TO_PRIMARY
    assert state.with_routes(MIRRORED).routes == MIRRORED and state.with_routes(MIRRORED).status == status
    assert CanaryState.initial().status.phase is Phase.Initializing


def test_fields_other_than_the_analysis_ones_survive_ticks():
    base = CanaryStatus(
        phase=Phase.Initialized, lastAppliedSpec="r0", lastPromotedSpec="r0", trackedConfigs={"configmap/x": "1"}
    )
    sim = Sim(make_canary(stepWeight=50), CanaryState.from_status(base))
    sim.step()
    sim.step()
    assert sim.state.status.trackedConfigs == {"configmap/x": "1"}
    assert sim.state.status.canaryWeight == 50 and sim.state.status.lastAppliedSpec == "r1"


# ---------------------------------------------------------------------------------------- initialization


def test_initialization_waits_for_the_primary_then_scales_the_canary_down():
    sim = Sim(make_canary(), CanaryState.initial())
    r = sim.step("r0", primary=Readiness(False, message="0/2 replicas ready"))
    assert sim.phase is Phase.Initializing and r.actions == () and "0/2 replicas ready" in r.events[0]
    r = sim.step("r0")
    assert r.actions == (
        ScaleCanaryToZero(),
        SetRoutes(ALL_TO_PRIMARY),
        Alert(AlertSeverity.info, "New Deployment detected, initialization completed."),
    )
    s = sim.state.status
    assert (s.phase, s.lastAppliedSpec, s.lastPromotedSpec, s.lastTransitionTime) == (
        Phase.Initialized,
        "r0",
        "r0",
        "t1",
    )
    idle = sim.step("r0")
    assert idle.actions == () and idle.events == () and sim.asked == [] and idle.state is r.state


def test_new_revision_scales_up_and_analysis_starts_on_the_next_tick():
    sim = Sim(make_canary(stepWeight=10, webhooks=ALL_HOOKS))
    r = sim.step("r1")
    assert sim.asked == ["hook:approve"]  # only the confirm-rollout gate
    assert r.actions == (Alert(AlertSeverity.info, AlertMessages.NEW_REVISION), ScaleCanary(True))
    s = sim.state.status
    assert (s.phase, s.lastAppliedSpec, s.lastTransitionTime) == (Phase.Progressing, "r1", "t0")


def test_confirm_rollout_denial_waits_with_one_alert_then_proceeds():
    sim = Sim(make_canary(stepWeight=10, webhooks=ALL_HOOKS))
    r = sim.step(hooks={"approve": 403})
    assert sim.phase is Phase.Waiting and alerts(r) == [("warn", AlertMessages.WAITING_APPROVAL)]
    assert not any(isinstance(a, ScaleCanary) for a in r.actions)
    r = sim.step(hooks={"approve": 403})
    assert sim.phase is Phase.Waiting and r.actions == ()
    r = sim.step()
    assert sim.phase is Phase.Progressing and ScaleCanary(True) in r.actions
    assert sim.state.status.lastAppliedSpec == "r1"


# --------------------------------------------------------------------------------------- what is asked


def test_questions_asked_on_each_tick_of_a_weighted_canary():
    sim = Sim(make_canary(stepWeight=50, metrics=[ERRORS, SR, LATENCY], webhooks=ALL_HOOKS))
    sim.step()
    r = sim.step()  # first analysis tick: pre-rollout hooks only, no metrics
    assert sim.asked == ["hook:abort", "hook:smoke", "hook:more-traffic"]
    assert r.checks == () and sim.summary()[:3] == ("Progressing", 50, [50, 50])
    r = sim.step()
    assert sim.asked == [
        "hook:abort",
        "hook:load",
        "metric:request-success-rate",
        "metric:request-duration",
        "metric:error-rate",
        "hook:more-traffic",
    ]
    assert [c.name for c in r.checks] == ["request-success-rate", "request-duration", "error-rate"]
    assert all(c.passed for c in r.checks) and r.checks[0].query == "q(request-success-rate)"
    assert sim.summary()[:3] == ("Progressing", 100, [0, 100])
    r = sim.step()  # at max weight: traffic gate, then promotion gate, then promote
    assert sim.asked[-2:] == ["hook:more-traffic", "hook:promote"]
    assert PromoteCanarySpec() in r.actions and sim.phase is Phase.Promoting
    sim.step()
    assert sim.asked == [] and sim.phase is Phase.Finalising
    r = sim.step()
    assert sim.asked == [] and sim.phase is Phase.Succeeded
    assert r.actions == (
        ScaleCanaryToZero(),
        RunHooks(HookType.post_rollout, Phase.Succeeded),
        Alert(AlertSeverity.info, AlertMessages.SUCCEEDED),
    )
    assert sim.state.status.lastPromotedSpec == "r1"


def test_failed_rollout_hook_skips_metrics_and_failed_metric_stops_the_checks():
    sim = Sim(make_canary(stepWeight=50, threshold=5, metrics=[ERRORS, SR, LATENCY], webhooks=ALL_HOOKS))
    sim.step()
    sim.step()
    r = sim.step(hooks={"load": 500})
    assert sim.asked == ["hook:abort", "hook:load"] and r.checks == ()
    assert sim.state.status.failedChecks == 1 and r.actions == ()
    r = sim.step(values={"request-duration": 900})
    assert sim.asked == ["hook:abort", "hook:load", "metric:request-success-rate", "metric:request-duration"]
    assert [c.passed for c in r.checks] == [True, False] and "900.00 > 500" in r.checks[1].message
    assert sim.state.status.failedChecks == 2 and sim.summary()[2] == [50, 50]


def test_threshold_rollback_happens_on_the_tick_after_the_last_failure():
    sim = Sim(make_canary(stepWeight=50, threshold=2, webhooks=ALL_HOOKS))
    sim.step()
    sim.step()
    sim.step(values={"request-success-rate": 10})
    sim.step()  # passing ticks do not reset failedChecks
    sim.step(values={"request-success-rate": 10})
    assert sim.summary() == ("Progressing", 100, [0, 100], 2, 0)
    r = sim.step()
    assert "metric:request-success-rate" not in sim.asked
    assert r.actions == (
        Alert(AlertSeverity.error, "Failed checks threshold reached 2"),
        SetRoutes(ALL_TO_PRIMARY),
        ScaleCanaryToZero(),
        RunHooks(HookType.post_rollout, Phase.Failed),
    )
    assert sim.summary() == ("Failed", 0, [100, 0], 2, 0)
    assert sim.step().actions == ()  # failed revision: idle until a newer one


def test_rollback_webhook():
    sim = Sim(make_canary(stepWeight=50, webhooks=ALL_HOOKS))
    sim.step()
    sim.step(hooks={"abort": 404})
    r = sim.step(hooks={"abort": 202})
    assert sim.asked == ["hook:abort"]
    assert alerts(r) == [("warn", AlertMessages.ROLLBACK_WEBHOOK)]
    assert sim.summary() == ("Failed", 0, [100, 0], 0, 0)


def test_traffic_increase_denial_halts_without_failure():
    sim = Sim(make_canary(stepWeight=50, webhooks=ALL_HOOKS))
    sim.step()
    r = sim.step(hooks={"more-traffic": 403})
    assert alerts(r) == [("warn", AlertMessages.TRAFFIC_WAITING_APPROVAL)]
    assert sim.summary() == ("Progressing", 0, [100, 0], 0, 0)


def test_promotion_denial_keeps_analysing_and_asks_again():
    sim = Sim(make_canary(stepWeight=100, threshold=2, webhooks=ALL_HOOKS))
    sim.step()
    sim.step()
    r = sim.step(hooks={"promote": 403})
    assert alerts(r) == [("warn", AlertMessages.PROMOTION_WAITING_APPROVAL)]
    assert sim.summary() == ("WaitingPromotion", 0, [0, 100], 0, 0)
    r = sim.step(hooks={"promote": 403}, values={"request-success-rate": 1})
    assert sim.asked == ["hook:abort", "hook:load", "metric:request-success-rate"]  # analysis continues
    assert sim.summary() == ("WaitingPromotion", 0, [0, 100], 1, 0) and alerts(r) == []
    r = sim.step(hooks={"promote": 403})
    assert sim.asked[-1] == "hook:promote" and "hook:more-traffic" not in sim.asked and alerts(r) == []
    sim.step()
    assert sim.phase is Phase.Promoting


def test_newer_revision_while_waiting_promotion_restarts():
    sim = Sim(make_canary(stepWeight=100, webhooks=ALL_HOOKS))
    sim.step()
    sim.step()
    sim.step(hooks={"promote": 403})
    r = sim.step("r2")
    assert r.actions == (SetRoutes(ALL_TO_PRIMARY),) and sim.asked == []
    assert sim.summary() == ("Progressing", 0, [100, 0], 0, 0)
    assert sim.state.status.lastAppliedSpec == "r2"


# ------------------------------------------------------------------------------------------- strategies


def test_ab_testing_routes_matching_traffic_to_the_canary_and_counts_iterations():
    sim = Sim(make_canary(iterations=2, match=[{"headers": {"x-canary": {"exact": "1"}}}], webhooks=ALL_HOOKS))
    sim.step()
    sim.step()
    assert sim.summary() == ("Progressing", 0, [0, 100], 0, 1) and "hook:more-traffic" not in sim.asked
    sim.step()
    assert sim.summary() == ("Progressing", 0, [0, 100], 0, 2)
    sim.step(hooks={"promote": 403})
    assert sim.summary() == ("WaitingPromotion", 0, [0, 100], 0, 1)  # iterations - 1
    sim.step(hooks={"promote": 403})
    assert sim.summary() == ("WaitingPromotion", 0, [0, 100], 0, 2) and "hook:promote" not in sim.asked
    r = sim.step()
    assert PromoteCanarySpec() in r.actions and sim.phase is Phase.Promoting


@pytest.mark.parametrize("mirror", [False, True])
def test_blue_green_keeps_traffic_on_primary_then_switches(mirror):
    sim = Sim(make_canary(iterations=2, mirror=mirror, webhooks=ALL_HOOKS))
    during = MIRRORED if mirror else ALL_TO_PRIMARY
    sim.step()
    r = sim.step()
    assert sim.state.routes == during and sim.state.status.iterations == 1
    assert (SetRoutes(MIRRORED) in r.actions) is mirror
    r = sim.step()
    assert sim.state.routes == during and sim.state.status.iterations == 2
    assert not any(isinstance(a, SetRoutes) for a in r.actions)  # mirroring set once
    sim.step()
    assert sim.asked[-1] == "hook:promote" and sim.state.routes == ALL_TO_CANARY
    r = sim.step()
    assert sim.asked[-1] == "hook:promote" and PromoteCanarySpec() in r.actions
    assert sim.summary() == ("Promoting", 0, [0, 100], 0, 3)


def test_canary_mirroring_is_one_mirrored_tick_at_weight_zero():
    sim = Sim(make_canary(stepWeight=30, maxWeight=60, mirror=True, webhooks=ALL_HOOKS))
    sim.step()
    r = sim.step()
    assert sim.asked == ["hook:abort", "hook:smoke", "hook:more-traffic"] and r.checks == ()
    assert sim.state.routes == MIRRORED and sim.state.status.canaryWeight == 0
    r = sim.step()  # metrics on the mirrored traffic; no traffic gate when leaving the mirror
    assert sim.asked == ["hook:abort", "hook:load", "metric:request-success-rate"]
    assert sim.state.routes == Routes(70, 30, False) and sim.state.status.canaryWeight == 30
    sim.step()
    assert sim.state.routes == Routes(40, 60, False) and sim.asked[-1] == "hook:more-traffic"


def test_canary_without_step_weights_does_not_advance():
    sim = Sim(make_canary())
    sim.step()
    r = sim.step()
    assert sim.summary() == ("Progressing", 0, [100, 0], 0, 0)
    assert "cannot advance" in r.events[-1]


# ------------------------------------------------------------------------------------ readiness, skip


def test_canary_not_ready_waits_then_rolls_back_past_its_deadline():
    sim = Sim(make_canary(stepWeight=50))
    sim.step()
    r = sim.step(canary=Readiness(False, message="0/1 ready"))
    assert sim.asked == [] and r.actions == () and sim.phase is Phase.Progressing
    r = sim.step(canary=Readiness(True, deadline_exceeded=True))  # a deadline means not ready
    assert sim.summary() == ("Failed", 0, [100, 0], 0, 0)
    assert RunHooks(HookType.post_rollout, Phase.Failed) in r.actions


def test_primary_not_ready_waits_outside_promotion():
    sim = Sim(make_canary(stepWeight=50))
    sim.step()
    r = sim.step(primary=Readiness(False, deadline_exceeded=True))
    assert sim.asked == [] and r.actions == () and sim.summary() == ("Progressing", 0, [100, 0], 0, 0)


@pytest.mark.parametrize("step_promotion", [0, 30])
def test_primary_failing_during_promotion_keeps_traffic_on_the_canary(step_promotion):
    sim = Sim(make_canary(stepWeight=100, stepWeightPromotion=step_promotion))
    for _ in range(3):
        sim.step()
    assert sim.phase is Phase.Promoting
    sim.step(primary=Readiness(False))
    assert sim.phase is Phase.Promoting
    r = sim.step(primary=Readiness(False, deadline_exceeded=True))
    assert r.actions == (SetRoutes(ALL_TO_CANARY), Alert(AlertSeverity.error, AlertMessages.PROMOTION_FAILED))
    assert sim.summary() == ("Failed", 100, [0, 100], 0, 0)
    assert sim.state.status.lastPromotedSpec == "r0"


def test_canary_past_deadline_does_not_stop_a_promotion():
    sim = Sim(make_canary(stepWeight=100, stepWeightPromotion=60))
    for _ in range(3):
        sim.step()
    sim.step(canary=Readiness(False, deadline_exceeded=True))
    assert sim.summary() == ("Promoting", 40, [60, 40], 0, 0)


def test_skip_analysis_promotes_in_one_tick():
    sim = Sim(make_canary(skip=True, stepWeight=10, webhooks=ALL_HOOKS))
    sim.step()
    r = sim.step(primary=Readiness(False), values={"request-success-rate": 0})
    assert sim.asked == []
    assert r.actions == (
        SetRoutes(ALL_TO_PRIMARY),
        PromoteCanarySpec(),
        ScaleCanaryToZero(),
        Alert(AlertSeverity.info, AlertMessages.SKIPPED),
    )
    assert sim.summary() == ("Succeeded", 0, [100, 0], 0, 0) and sim.state.status.lastPromotedSpec == "r1"


def test_skip_analysis_rolls_back_a_canary_past_its_deadline():
    sim = Sim(make_canary(skip=True, stepWeight=10))
    sim.step()
    sim.step(canary=Readiness(False, deadline_exceeded=True))
    assert sim.phase is Phase.Failed


def test_last_transition_time_changes_only_with_the_phase():
    sim = Sim(make_canary(stepWeight=50))
    sim.step()
    assert sim.state.status.lastTransitionTime == "t0"
    sim.step()
    sim.step()
    assert sim.state.status.lastTransitionTime == "t0"
    sim.step()
    assert sim.phase is Phase.Promoting and sim.state.status.lastTransitionTime == "t3"


def test_promoting_with_no_traffic_on_the_canary_finalises():
    state = CanaryState(Phase.Promoting, lastAppliedSpec="r1", lastPromotedSpec="r0")
    sim = Sim(make_canary(stepWeight=50, stepWeightPromotion=30), state)
    r = sim.step()
    assert r.actions == (SetRoutes(ALL_TO_PRIMARY),) and sim.phase is Phase.Finalising


def test_terminating_is_idle():
    sim = Sim(make_canary(stepWeight=50), CanaryState(Phase.Terminating, lastAppliedSpec="r0"))
    r = sim.step("r1")
    assert r.actions == () and r.events == () and sim.asked == [] and sim.phase is Phase.Terminating


def test_mute_alert_silences_the_approval_alert_of_that_webhook_only():
    """Flagger's webhook muteAlert: a denied gate with muteAlert waits exactly as without it, sending no alert."""
    hooks = [dict(h, muteAlert=True) if h["name"] == "approve" else h for h in ALL_HOOKS]
    sim = Sim(make_canary(stepWeight=10, webhooks=hooks))
    r = sim.step(hooks={"approve": 403})
    assert sim.phase is Phase.Waiting and alerts(r) == []
    assert any("waiting for approval approve" in e for e in r.events)
    r = sim.step()
    assert sim.phase is Phase.Progressing and ScaleCanary(True) in r.actions
