"""Property tests of the analysis state machine over random canaries and random observation sequences."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from playground.analysis import CanaryState, PromoteCanarySpec, SetRoutes, TickResult, tick
from playground.models import Canary, Phase
from playground.observe import MetricValue, Observation, Readiness, WebhookAnswer

HOOKS = [
    {"name": "approve", "type": "confirm-rollout", "url": "http://lt/"},
    {"name": "smoke", "type": "pre-rollout", "url": "http://lt/"},
    {"name": "load", "type": "rollout", "url": "http://lt/"},
    {"name": "more", "type": "confirm-traffic-increase", "url": "http://lt/"},
    {"name": "promote", "type": "confirm-promotion", "url": "http://lt/"},
    {"name": "abort", "type": "rollback", "url": "http://lt/"},
    {"name": "notify", "type": "post-rollout", "url": "http://lt/"},
]
HOOK_NAMES = [h["name"] for h in HOOKS]
METRICS = [
    {"name": "request-success-rate", "thresholdRange": {"min": 99}},
    {"name": "request-duration", "thresholdRange": {"max": 500}},
]
READY = Readiness()
NOT_READY = Readiness(ready=False)
DEAD = Readiness(ready=False, deadline_exceeded=True)
TERMINAL = (Phase.Succeeded, Phase.Failed)
PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass(frozen=True)
class Obs:
    """One tick's inputs."""

    sr: float | None = 100.0
    duration: float | None = 100.0
    hooks: tuple[tuple[str, int], ...] = ()
    canary: Readiness = READY
    primary: Readiness = READY
    new_revision: bool = False


PASS = Obs(hooks=(("abort", 404),))
FAIL = Obs(sr=50.0, duration=900.0, hooks=(("abort", 404), ("smoke", 500), ("load", 500)))


class Probe:
    def __init__(self) -> None:
        self.obs = PASS

    def webhook(self, hook, phase):
        return WebhookAnswer(hook.name, dict(self.obs.hooks).get(hook.name, 200))

    def metric(self, metric):
        return MetricValue(metric.name, self.obs.sr if metric.name == "request-success-rate" else self.obs.duration)


@st.composite
def canaries(draw) -> Canary:
    kind = draw(st.sampled_from(["canary", "ab", "bluegreen"]))
    analysis: dict = {
        "threshold": draw(st.integers(0, 4)),
        "metrics": METRICS,
        "webhooks": draw(st.lists(st.sampled_from(HOOKS), unique_by=lambda h: h["name"], max_size=7)),
        "stepWeightPromotion": draw(st.sampled_from([0, 10, 35, 100])),
        "mirror": draw(st.booleans()),
    }
    if kind == "canary":
        if draw(st.booleans()):
            analysis["stepWeight"] = draw(st.integers(5, 60))
            analysis["maxWeight"] = draw(st.sampled_from([0, 30, 50, 80, 100]))
        else:
            analysis["stepWeights"] = sorted(draw(st.lists(st.integers(1, 130), min_size=1, max_size=5, unique=True)))
    else:
        analysis["iterations"] = draw(st.integers(1, 6))
        if kind == "ab":
            analysis["match"] = [{"headers": {"x-canary": {"exact": "insider"}}}]
    return Canary.model_validate(
        {
            "metadata": {"name": "backend", "namespace": "prod"},
            "spec": {
                "targetRef": {"kind": "Deployment", "name": "backend"},
                "service": {"port": 9898},
                "skipAnalysis": draw(st.integers(0, 9)) == 0,
                "analysis": analysis,
            },
        }
    )


observations = st.builds(
    Obs,
    sr=st.sampled_from([100.0, 99.0, 50.0, None]),
    duration=st.sampled_from([100.0, 500.0, 900.0, None]),
    hooks=st.lists(st.tuples(st.sampled_from(HOOK_NAMES), st.sampled_from([200, 202, 403, 404, 500])), max_size=4).map(
        tuple
    ),
    canary=st.sampled_from([READY, READY, READY, NOT_READY, DEAD]),
    primary=st.sampled_from([READY, READY, READY, NOT_READY, DEAD]),
    new_revision=st.integers(0, 12).map(lambda n: n == 0),
)


def run(canary: Canary, inputs: list[Obs]) -> list[tuple[CanaryState, TickResult]]:
    """Tick over ``inputs`` from an initialized canary that just got revision 1; returns (state before, result)."""
    probe = Probe()
    state = CanaryState.initialized("0")
    revision = 1
    out = []
    for i, obs in enumerate(inputs):
        revision += obs.new_revision
        probe.obs = obs
        result = tick(canary, state, Observation(str(revision), obs.canary, obs.primary, now=str(i)), probe)
        out.append((state, result))
        state = result.state
    return out


@PROPS
@given(canaries(), st.lists(observations, max_size=40))
def test_routes_and_weights_stay_valid(canary, inputs):
    for before, result in run(canary, inputs):
        state = result.state
        r = state.routes
        assert r.primary + r.canary == 100 and 0 <= r.canary <= 100 and 0 <= r.primary <= 100
        s = state.status
        assert 0 <= s.canaryWeight <= 100 and s.failedChecks >= 0 and s.iterations >= 0
        routes_set = [a.routes for a in result.actions if isinstance(a, SetRoutes)]
        assert state.routes == (routes_set[-1] if routes_set else before.routes)
        assert CanaryState.from_dict(state.to_dict()) == state


@PROPS
@given(canaries(), st.lists(observations, max_size=30), st.sampled_from([PASS, FAIL]))
def test_a_run_ends_when_checks_stop_failing_or_keep_failing(canary, prefix, outcome):
    results = run(canary, prefix + [outcome] * 150)
    assert results[-1][1].state.status.phase in TERMINAL


@PROPS
@given(canaries(), st.lists(observations, max_size=40))
def test_no_promotion_on_a_tick_with_a_failing_check(canary, inputs):
    for before, result in run(canary, inputs):
        if any(isinstance(a, PromoteCanarySpec) for a in result.actions):
            assert all(c.passed for c in result.checks)
            assert result.state.status.failedChecks == before.status.failedChecks
            assert result.state.status.phase in (Phase.Promoting, Phase.Succeeded)


@settings(max_examples=30, deadline=None)
@given(canaries(), st.lists(observations, max_size=30))
def test_ticks_are_deterministic(canary, inputs):
    assert run(canary, inputs) == run(canary, inputs)
