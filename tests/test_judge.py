"""The Mann-Whitney judge (opt-in analysis extension): scipy agreement, R-style reference values, analysis wiring."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from playground import analysis
from playground.analysis import CanaryState, tick
from playground.judge import judge
from playground.models import Canary, MetricJudge, Phase
from playground.observe import MetricSamples, MetricValue, Observation, WebhookAnswer

DATA = Path(__file__).parent / "data" / "judge"
rng = np.random.default_rng(20240501)

# 20 fixed sample sets: (name, canary, primary, judge config)
SETS = [
    ("clear_increase", [220, 231, 245, 238, 250, 229, 241, 236], [200, 198, 205, 202, 199, 201, 204, 203], {}),
    ("no_change", [200, 203, 198, 201, 205, 199, 202], [201, 199, 204, 200, 198, 203, 202.5], {}),
    ("small_increase_within_allowance", [203, 204, 205, 206, 207, 208], [200, 201, 202, 199, 198, 197], {}),
    ("ties", [1, 2, 2, 3, 3, 3, 4, 4], [1, 1, 2, 2, 2, 3, 3, 4], {}),
    (
        "ties_success_rate_decrease",
        [99.5, 99.0, 98.5, 99.0, 98.0, 99.5, 98.5, 97.0],
        [99.5, 100.0, 99.5, 100.0, 99.5, 100.0, 100.0, 99.5],
        {"direction": "decrease", "allowedDecrease": 0.5},
    ),
    ("constant_equal", [5.0] * 10, [5.0] * 10, {}),
    ("constant_different", [7.0] * 10, [5.0] * 10, {}),
    ("constant_canary_only", [5.0] * 10, [4.0, 5.0, 6.0, 5.5, 4.5, 5.0, 6.5, 3.5, 5.0, 4.0], {}),
    ("empty_canary", [], [1.0, 2.0, 3.0, 4.0], {}),
    ("empty_both_nodata_pass", [], [], {"noData": "pass"}),
    ("nans", [math.nan, 230, 240, math.nan, 250, 260, 245], [200, math.nan, 205, 210, 198, 202, math.nan], {}),
    ("all_nan_canary", [math.nan] * 5, [1.0, 2.0, 3.0], {}),
    ("inf_dropped", [math.inf, 10, 11, 12, 13], [10, 10.5, 11, 11.5, -math.inf], {}),
    ("too_few_samples", [300.0, 310.0], [200.0, 201.0, 202.0], {"minSamples": 3}),
    ("large_normal_shift", list(rng.normal(110, 10, 80)), list(rng.normal(100, 10, 70)), {}),
    ("large_no_shift", list(rng.normal(100, 10, 60)), list(rng.normal(100, 10, 60)), {}),
    ("either_decrease", list(rng.normal(80, 5, 30)), list(rng.normal(100, 5, 30)), {"direction": "either"}),
    ("confidence_99", [210, 215, 212, 220, 218], [200, 205, 201, 203, 199], {"confidence": 0.99}),
    (
        "rounded_large_ties",
        list(np.round(rng.normal(50, 3, 100))),
        list(np.round(rng.normal(48, 3, 100))),
        {"allowedIncrease": 1},
    ),
    ("zero_baseline", [0.0, 0.0, 1.0, 2.0, 1.0, 3.0], [0.0] * 6, {}),
]
assert len(SETS) == 20


def expected(canary, primary, cfg: MetricJudge):
    """The decision computed directly with scipy.stats.mannwhitneyu, following the documented rule."""
    c = np.array([v for v in canary if math.isfinite(v)], dtype=float)
    p = np.array([v for v in primary if math.isfinite(v)], dtype=float)
    if len(c) < cfg.minSamples or len(p) < cfg.minSamples:
        return {"decision": "pass" if cfg.noData == "pass" else "fail", "no_data": True}
    alternative = {"increase": "greater", "decrease": "less", "either": "two-sided"}[cfg.direction]
    pooled = list(c) + list(p)
    exact = len(c) < 50 and len(p) < 50 and len(set(pooled)) == len(pooled)
    res = stats.mannwhitneyu(
        c, p, alternative=alternative, method="exact" if exact else "asymptotic", use_continuity=True
    )
    pv = 1.0 if np.isnan(res.pvalue) else float(res.pvalue)
    shift = float(np.median([a - b for a in c for b in p]))
    base = float(np.median(p))
    rel = (0.0 if shift == 0 else math.copysign(math.inf, shift)) if base == 0 else shift / abs(base) * 100
    sig = pv < 1 - cfg.confidence
    up, down = rel > cfg.allowedIncrease, rel < -cfg.allowedDecrease
    beyond = {"increase": up, "decrease": down, "either": up or down}[cfg.direction]
    decision = "fail" if sig and beyond else "marginal" if sig or beyond else "pass"
    return {
        "decision": decision,
        "no_data": False,
        "u": float(res.statistic),
        "p": pv,
        "shift": shift,
        "rel": rel,
        "n": (len(c), len(p)),
        "method": "exact" if exact else "asymptotic",
    }


@pytest.mark.parametrize("name,canary,primary,config", SETS, ids=[s[0] for s in SETS])
def test_judge_matches_scipy(name, canary, primary, config):
    cfg = MetricJudge(**config)
    want = expected(canary, primary, cfg)
    got = judge(canary, primary, cfg)
    assert got.decision == want["decision"]
    assert got.no_data == want["no_data"]
    assert got.passed == (want["decision"] != "fail")
    if want["no_data"]:
        assert got.u is None and got.p_value is None
        return
    assert got.u == want["u"]
    assert got.p_value == want["p"]
    assert got.method == want["method"]
    assert got.hl_shift == want["shift"]
    assert got.relative_shift_pct == want["rel"]
    assert (got.n_canary, got.n_primary) == want["n"]
    assert got.cles == want["u"] / (want["n"][0] * want["n"][1])


def test_the_sets_cover_every_decision():
    decisions = {judge(c, p, MetricJudge(**cfg)).decision for _, c, p, cfg in SETS}
    assert decisions == {"pass", "marginal", "fail"}


REFERENCE = json.loads((DATA / "reference.json").read_text())


@pytest.mark.parametrize("ref", REFERENCE, ids=[r["name"] for r in REFERENCE])
def test_judge_matches_r_reference_values(ref):
    direction = {"greater": "increase", "less": "decrease", "two.sided": "either"}[ref["alternative"]]
    got = judge(ref["x"], ref["y"], MetricJudge(direction=direction, minSamples=1))
    assert got.u == ref["W"]
    assert got.method == ("exact" if ref["method"] == "exact" else "asymptotic")
    assert got.p_value == pytest.approx(ref["p_value"], rel=1e-9, abs=0)


def test_r_documentation_example_is_reproduced():
    ref = REFERENCE[0]
    assert ref["name"] == "r_doc_example" and ref["W"] == 35 and round(ref["p_value"], 4) == 0.1272


# -------------------------------------------------------------------------------------- analysis wiring


def canary(judge_cfg: dict | None, threshold: int = 5, **metric) -> Canary:
    m = {"name": "request-duration", **metric}
    if judge_cfg is not None:
        m["judge"] = judge_cfg
    return Canary.model_validate(
        {
            "metadata": {"name": "backend", "namespace": "prod"},
            "spec": {
                "targetRef": {"kind": "Deployment", "name": "backend"},
                "service": {"port": 9898},
                "analysis": {
                    "interval": "1m",
                    "threshold": threshold,
                    "stepWeight": 20,
                    "maxWeight": 60,
                    "metrics": [m],
                },
            },
        }
    )


class SampleProbe:
    def __init__(self, canary_samples, primary_samples, value=100.0):
        self.c, self.p, self.value = canary_samples, primary_samples, value
        self.sample_calls = 0

    def webhook(self, hook, phase):
        return WebhookAnswer(hook.name, 200)

    def metric(self, metric):
        return MetricValue(metric.name, self.value)

    def samples(self, metric):
        self.sample_calls += 1
        return MetricSamples(metric.name, tuple(self.c), tuple(self.p))


BAD = ([250, 260, 255, 270, 265, 258], [200, 201, 199, 202, 198, 200])
GOOD = ([200, 202, 199, 201, 198, 203], [200, 201, 199, 202, 198, 200])


def run_ticks(c: Canary, probe, n: int):
    state = CanaryState.initialized("r0")
    out = []
    for _i in range(n):
        res = tick(c, state, Observation("r1"), probe)
        state = res.state
        out.append(res)
    return out


def test_judge_fail_counts_one_failed_check():
    probe = SampleProbe(*BAD)
    res = run_ticks(canary({}), probe, 3)  # detect, first analysis (no metrics), judged analysis
    check = res[2].checks[0]
    assert not check.passed and check.details["decision"] == "fail" and not check.critical
    assert "Mann-Whitney U=36" in check.message and "p=" in check.message
    assert res[2].state.failedChecks == 1 and res[2].state.phase is Phase.Progressing


def test_critical_fail_sets_failed_checks_to_threshold_and_rolls_back_next_tick():
    probe = SampleProbe(*BAD)
    res = run_ticks(canary({"critical": True}, threshold=5), probe, 4)
    assert res[2].checks[0].critical
    assert res[2].state.failedChecks == 5
    assert res[3].state.phase is Phase.Failed


def test_judge_pass_advances_and_threshold_applies_first():
    res = run_ticks(canary({}), SampleProbe(*GOOD), 3)
    assert res[2].checks[0].passed and res[2].state.canaryWeight == 40
    probe = SampleProbe(*GOOD, value=900.0)
    res = run_ticks(canary({}, thresholdRange={"max": 500}), probe, 3)
    assert not res[2].checks[0].passed and "thresholdRange.max" in res[2].checks[0].message
    assert probe.sample_calls == 0


def test_samples_are_never_asked_without_a_judge():
    class NoSamples(SampleProbe):
        def samples(self, metric):  # pragma: no cover - must not be called
            raise AssertionError("samples asked for a metric without judge")

    res = run_ticks(canary(None, thresholdRange={"max": 500}), NoSamples(*GOOD), 3)
    assert res[2].checks[0].passed and res[2].checks[0].details is None
    assert not analysis._plan(canary(None)).judged


def test_sample_query_error_fails_the_check():
    class Broken(SampleProbe):
        def samples(self, metric):
            return MetricSamples(metric.name, error="cannot reach Prometheus")

    res = run_ticks(canary({"noData": "pass"}), Broken(*GOOD), 3)
    assert not res[2].checks[0].passed and "cannot reach Prometheus" in res[2].checks[0].message
