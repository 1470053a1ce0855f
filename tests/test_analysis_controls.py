"""Operator controls in the analysis state machine: requests are inputs of a tick (``Observation.requests``), the
state machine stays pure. Table-driven like tests/test_analysis.py, whose ``Sim`` drives the ticks."""

from __future__ import annotations

import itertools

import pytest

from playground.analysis import (
    AlertMessages,
    CanaryState,
    PromoteCanarySpec,
    ScaleCanary,
    ScaleCanaryToZero,
    allowed_actions,
    control_problem,
    tick,
)
from playground.models import Canary, ControlAction, ControlRequest, Phase
from playground.observe import Observation, Readiness
from tests.test_analysis import ALL_HOOKS, Sim, alerts, make_canary

_ids = itertools.count()
A = ControlAction


def req(action: ControlAction, by: str = "alice@laptop") -> ControlRequest:
    return ControlRequest(id=f"r{next(_ids)}", action=action, by=by, at="2026-01-01T00:00:00Z")


class ControlSim(Sim):
    """``Sim`` whose ticks may carry operator requests."""

    def control(self, *actions: ControlAction, revision: str = "r1", hooks: dict | None = None, **kw):
        self.asked = []
        self.hook_status = {"abort": 404, **(hooks or {})}
        self.values = kw.pop("values", {})
        obs = Observation(
            revision,
            kw.pop("canary", None) or Readiness(),
            kw.pop("primary", None) or Readiness(),
            now=f"t{self.n}",
            requests=tuple(req(a) for a in actions),
        )
        self.n += 1
        result = tick(self.canary, self.state, obs, self)
        self.state = result.state
        return result


def progressing(canary: Canary, weight_ticks: int = 1) -> ControlSim:
    """A weighted canary at Progressing after ``weight_ticks`` passing analysis ticks."""
    sim = ControlSim(canary)
    sim.step()  # new revision: scale up, Progressing
    for _ in range(weight_ticks):
        sim.step()
    return sim


# --------------------------------------------------------------------------------------------- validity


@pytest.mark.parametrize(
    "phase, paused, allowed",
    [
        (Phase.Progressing, False, ["promote", "promote-full", "abort", "pause"]),
        (Phase.Waiting, False, ["promote", "promote-full", "abort", "pause"]),
        (Phase.WaitingPromotion, True, ["promote", "promote-full", "abort", "resume"]),
        (Phase.Promoting, False, ["pause"]),
        (Phase.Failed, False, ["retry", "pause"]),
        (Phase.Failed, True, ["retry", "resume"]),
        (Phase.Succeeded, False, ["pause"]),
        (Phase.Initialized, True, ["resume"]),
    ],
)
def test_allowed_actions_by_phase(phase, paused, allowed):
    assert [a.value for a in allowed_actions(phase, paused)] == allowed


def test_control_problem_names_the_phase_and_what_is_possible():
    assert control_problem(A.promote, Phase.Progressing, False) is None
    assert control_problem(A.promote, Phase.Succeeded, False) == (
        "cannot promote a canary that is Succeeded; possible now: pause"
    )
    assert control_problem(A.resume, Phase.Progressing, False) == (
        "cannot resume a canary that is Progressing; possible now: promote, promote-full, abort, pause"
    )


# --------------------------------------------------------------------------------------------- pause


def test_pause_holds_weight_and_checks_then_resume_continues():
    sim = progressing(make_canary(stepWeight=10, threshold=2, webhooks=ALL_HOOKS))
    assert sim.summary() == ("Progressing", 10, [90, 10], 0, 0)
    r = sim.control(A.pause)
    assert sim.state.paused and sim.state.status.paused
    assert [i.applied for i in r.interventions] == [True] and r.actions == () and sim.asked == []
    for _ in range(3):  # held: failing metrics are not even asked, the weight does not move
        r = sim.control(values={"request-success-rate": 1})
        assert sim.summary() == ("Progressing", 10, [90, 10], 0, 0)
        assert sim.asked == [] and r.actions == () and "paused" in r.events[0]
    r = sim.control(A.resume)
    assert not sim.state.paused
    assert sim.summary() == ("Progressing", 20, [80, 20], 0, 0)  # the same tick goes on analysing


def test_pause_of_an_idle_canary_holds_its_next_revision():
    sim = ControlSim(make_canary(stepWeight=10), CanaryState.initialized("r0"))
    sim.control(A.pause, revision="r0")
    r = sim.control(revision="r1")
    assert sim.phase is Phase.Initialized and r.actions == () and "paused" in r.events[0]
    sim.control(A.resume, revision="r1")
    assert sim.phase is Phase.Progressing


def test_spec_suspend_holds_every_tick_as_in_flagger():
    sim = ControlSim(make_canary(stepWeight=10), CanaryState.initialized("r0"))
    suspended = make_canary(stepWeight=10).model_copy(deep=True)
    suspended.spec.suspend = True
    sim.canary = suspended
    for _ in range(3):
        r = sim.control(revision="r1")
        assert sim.phase is Phase.Initialized and r.actions == () and "suspended" in r.events[0]
    sim.canary = make_canary(stepWeight=10)
    sim.control(revision="r1")
    assert sim.phase is Phase.Progressing


def test_paused_state_round_trips_through_the_status():
    sim = progressing(make_canary(stepWeight=10))
    sim.control(A.pause)
    again = CanaryState.from_dict(sim.state.to_dict())
    assert again.paused and again == sim.state


# --------------------------------------------------------------------------------------------- promote


def test_promote_passes_the_current_gate_without_hooks_or_metrics():
    sim = progressing(make_canary(stepWeight=50, maxWeight=50, webhooks=ALL_HOOKS), weight_ticks=0)
    r = sim.control(A.promote, hooks={"more-traffic": 403}, values={"request-success-rate": 1})
    assert "hook:load" not in sim.asked and "metric:request-success-rate" not in sim.asked
    assert "hook:more-traffic" not in sim.asked and r.checks == ()
    assert sim.summary() == ("Progressing", 50, [50, 50], 0, 0)
    sim.control(A.promote, hooks={"promote": 403})  # at the max weight: promotes without confirm-promotion
    assert sim.phase is Phase.Promoting


def test_promote_confirms_a_waiting_rollout():
    sim = ControlSim(make_canary(stepWeight=10, webhooks=ALL_HOOKS))
    sim.step(hooks={"approve": 403})
    assert sim.phase is Phase.Waiting
    r = sim.control(A.promote, hooks={"approve": 403})
    assert sim.phase is Phase.Progressing and ScaleCanary(True) in r.actions and sim.asked == []


def test_promote_of_a_waiting_promotion_promotes():
    sim = progressing(make_canary(stepWeight=100, webhooks=ALL_HOOKS))
    sim.step(hooks={"promote": 403})
    assert sim.phase is Phase.WaitingPromotion
    r = sim.control(A.promote, hooks={"promote": 403})
    assert sim.phase is Phase.Promoting and PromoteCanarySpec() in r.actions


@pytest.mark.parametrize("start", ["Progressing", "Waiting", "WaitingPromotion"])
def test_promote_full_succeeds_on_the_next_tick(start):
    sim = ControlSim(make_canary(stepWeight=100 if start == "WaitingPromotion" else 10, webhooks=ALL_HOOKS))
    if start == "Waiting":
        sim.step(hooks={"approve": 403})
    else:
        sim.step()
        sim.step()
        sim.step(hooks={"promote": 403})
    assert sim.phase.value == start
    r = sim.control(A.promote_full, hooks={"approve": 403, "promote": 403})
    assert sim.phase is Phase.Promoting and PromoteCanarySpec() in r.actions and sim.state.fullPromotion
    # next tick: the canary may not even run (Waiting never scaled it up): all traffic to the primary, done
    r = sim.control(canary=Readiness(ready=False), hooks={"approve": 403, "promote": 403})
    assert sim.summary() == ("Succeeded", 0, [100, 0], 0, 0) and not sim.state.fullPromotion
    assert ScaleCanaryToZero() in r.actions and alerts(r) == [("info", AlertMessages.SUCCEEDED)]
    assert sim.state.status.lastPromotedSpec == "r1"


def test_promote_full_waits_for_the_primary_rollout():
    sim = progressing(make_canary(stepWeight=10))
    sim.control(A.promote_full)
    sim.control(primary=Readiness(ready=False, message="0/1 ready"))
    assert sim.phase is Phase.Promoting and sim.state.routes.as_list() == [90, 10]
    sim.control()
    assert sim.phase is Phase.Succeeded


# ------------------------------------------------------------------------------------------ abort, retry


@pytest.mark.parametrize("start", ["Progressing", "Waiting"])
def test_abort_rolls_back_now_with_an_error_alert(start):
    sim = ControlSim(make_canary(stepWeight=20, webhooks=ALL_HOOKS))
    sim.step(hooks={"approve": 403} if start == "Waiting" else None)
    if start == "Progressing":
        sim.step()
        sim.step()
    r = sim.control(A.abort, hooks={"approve": 403})
    assert sim.summary()[:3] == ("Failed", 0, [100, 0]) and ScaleCanaryToZero() in r.actions
    assert ("error", AlertMessages.aborted("alice@laptop")) in alerts(r)
    assert sim.state.status.lastAppliedSpec == "r1"  # settled: the revision is not released again by itself
    r = sim.control(hooks={"approve": 403})
    assert sim.phase is Phase.Failed and r.actions == ()


def test_retry_reanalyses_a_failed_revision_without_a_new_commit():
    sim = progressing(make_canary(stepWeight=50, threshold=1))
    sim.step(values={"request-success-rate": 1})
    sim.step()
    assert sim.phase is Phase.Failed
    r = sim.control()
    assert sim.phase is Phase.Failed and r.actions == ()  # idle: same revision
    r = sim.control(A.retry)
    assert sim.summary() == ("Progressing", 0, [100, 0], 0, 0) and ScaleCanary(True) in r.actions
    phases = [sim.control() and sim.phase.value for _ in range(6)]
    assert phases == ["Progressing", "Progressing", "Promoting", "Finalising", "Succeeded", "Succeeded"]


# -------------------------------------------------------------------------------------- stale requests


@pytest.mark.parametrize(
    "action, phase",
    [(A.promote, Phase.Succeeded), (A.abort, Phase.Succeeded), (A.retry, Phase.Progressing), (A.resume, None)],
)
def test_a_request_that_no_longer_fits_is_ignored_with_an_event(action, phase):
    sim = ControlSim(make_canary(stepWeight=50), CanaryState(phase or Phase.Progressing, lastAppliedSpec="r1"))
    before = sim.state
    r = sim.control(action)
    assert sim.state == before and r.actions == () or phase is Phase.Progressing or phase is None
    assert [i.applied for i in r.interventions] == [False]
    assert r.events[0].startswith(f"Ignored {action.value} by alice@laptop of backend.prod: cannot")


def test_requests_apply_in_order():
    sim = progressing(make_canary(stepWeight=10))
    r = sim.control(A.pause, A.resume, A.pause)
    assert [i.request.action for i in r.interventions] == [A.pause, A.resume, A.pause] and sim.state.paused
