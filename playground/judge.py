"""Statistical judgement of a canary metric (opt-in analysis extension): canary vs primary, Mann-Whitney U.

A canary metric with a ``judge`` block (``playground.models.MetricJudge``) is judged on samples rather than on
one instant value: ``Probe.samples(metric)`` answers the metric's samples over its interval for the canary
workload (``<target>``) and for the primary (``<target>-primary``), and ``judge`` compares them. Pure: numpy and
scipy only, no I/O (the live samples are queried by ``playground.history.query_samples``).

The test -- ``scipy.stats.mannwhitneyu(canary, primary, alternative=..., method=..., use_continuity=True)``:

* non-finite samples (NaN, inf) are dropped first; fewer than ``minSamples`` on either side is "no data": the
  check fails (``noData: fail``, default) or passes (``noData: pass``), decision ``fail``/``pass`` with
  ``no_data: true`` in the details;
* ``alternative``: ``direction: increase`` (an increase is bad, e.g. latency) -> ``greater`` (canary greater
  than primary); ``decrease`` (e.g. success rate) -> ``less``; ``either`` -> ``two-sided``;
* ``method`` follows R's ``wilcox.test``: ``exact`` when both samples have fewer than 50 values and there are no
  ties in the pooled sample, else ``asymptotic`` (normal approximation with tie correction and continuity
  correction). ``U`` is the statistic of the canary sample (R's ``W``);
* a NaN p-value (possible only for degenerate input) counts as 1 (not significant).

Effect: the Hodges-Lehmann shift (median of all pairwise differences canary - primary) relative to the median of
the primary, in percent (primary median 0: 0 when the shift is 0, else +/-inf). Also reported: the common-language
effect size ``U / (n1 n2)`` and the rank-biserial correlation ``2U / (n1 n2) - 1``.

Decision, with ``alpha = 1 - confidence``: *significant* = ``p < alpha``; *beyond* = the relative shift exceeds
the allowance in the bad direction (``> allowedIncrease`` for increase, ``< -allowedDecrease`` for decrease,
either of them for either). ``fail`` = significant and beyond; ``marginal`` = exactly one of them (the check
passes; the message says marginal); ``pass`` = neither.

Mapping onto failedChecks: a ``fail`` is a failed check like any other (failedChecks + 1, rollback once the
threshold is reached). With ``critical: true`` a ``fail`` sets failedChecks to the analysis threshold, so the next
tick rolls back whatever the threshold (``MetricCheck.critical``; see ``playground.analysis``). A query error
always fails the check (never critical). If the metric also has ``thresholdRange`` (or ``threshold``), the
threshold check on the instant value runs first and a failure there is the check's result.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
from scipy import stats

from playground.checks import MetricCheck, evaluate_metric
from playground.models import CanaryMetric, MetricJudge

if TYPE_CHECKING:  # pragma: no cover
    from playground.observe import MetricSamples, Probe

Decision = Literal["pass", "marginal", "fail"]
EXACT_LIMIT = 50  # R: exact p-values when both samples have fewer than 50 values and no ties

_ALTERNATIVE = {"increase": "greater", "decrease": "less", "either": "two-sided"}


@dataclass(frozen=True)
class Judgement:
    """The decision and the statistics of one canary-vs-primary comparison."""

    decision: Decision
    passed: bool
    critical: bool  # a critical metric failed: failedChecks goes to the threshold
    no_data: bool
    n_canary: int
    n_primary: int
    alternative: str
    method: str | None = None
    u: float | None = None  # statistic of the canary sample (R's W)
    p_value: float | None = None
    alpha: float | None = None
    hl_shift: float | None = None  # Hodges-Lehmann estimate of canary - primary
    primary_median: float | None = None
    canary_median: float | None = None
    relative_shift_pct: float | None = None
    cles: float | None = None  # U / (n1 n2)
    rank_biserial: float | None = None  # 2U / (n1 n2) - 1
    significant: bool | None = None
    beyond_allowance: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def clean(values: Iterable[float | None] | None) -> npt.NDArray[np.float64]:
    """Finite values as a float array (NaN, inf and None dropped)."""
    if values is None:
        return np.empty(0)
    arr = np.asarray([np.nan if v is None else v for v in values], dtype=float)
    finite: npt.NDArray[np.float64] = arr[np.isfinite(arr)]
    return finite


def choose_method(canary: np.ndarray, primary: np.ndarray) -> str:
    """R's rule: exact without ties when both samples have fewer than 50 values, else asymptotic."""
    pooled = np.concatenate([canary, primary])
    ties = np.unique(pooled).size < pooled.size
    return "exact" if (canary.size < EXACT_LIMIT and primary.size < EXACT_LIMIT and not ties) else "asymptotic"


def hodges_lehmann(canary: np.ndarray, primary: np.ndarray) -> float:
    """Median of all pairwise differences canary[i] - primary[j]."""
    return float(np.median(np.subtract.outer(canary, primary)))


def relative_shift(shift: float, baseline: float) -> float:
    """``shift`` in percent of ``|baseline|`` (baseline 0: 0 for no shift, else +/-inf)."""
    if baseline == 0:
        return 0.0 if shift == 0 else math.copysign(math.inf, shift)
    return shift / abs(baseline) * 100.0


def judge(
    canary: Iterable[float] | None, primary: Iterable[float] | None, config: MetricJudge | None = None
) -> Judgement:
    """Compare canary with primary samples (see the module docstring for the exact rule)."""
    cfg = config or MetricJudge()
    c, p = clean(canary), clean(primary)
    alternative = _ALTERNATIVE[cfg.direction]
    if c.size < cfg.minSamples or p.size < cfg.minSamples:
        passed = cfg.noData == "pass"
        return Judgement("pass" if passed else "fail", passed, False, True, int(c.size), int(p.size), alternative)
    method = choose_method(c, p)
    res = stats.mannwhitneyu(c, p, alternative=alternative, method=method, use_continuity=True)
    u = float(res.statistic)
    pv = float(res.pvalue)
    if pv != pv:
        pv = 1.0
    alpha = 1.0 - cfg.confidence
    shift = hodges_lehmann(c, p)
    base = float(np.median(p))
    rel = relative_shift(shift, base)
    significant = pv < alpha
    if cfg.direction == "increase":
        beyond = rel > cfg.allowedIncrease
    elif cfg.direction == "decrease":
        beyond = rel < -cfg.allowedDecrease
    else:
        beyond = rel > cfg.allowedIncrease or rel < -cfg.allowedDecrease
    decision: Decision = "fail" if (significant and beyond) else "marginal" if (significant or beyond) else "pass"
    nn = c.size * p.size
    return Judgement(
        decision, decision != "fail", decision == "fail" and cfg.critical, False, int(c.size), int(p.size),
        alternative, method, u, pv, alpha, shift, base, float(np.median(c)), rel, u / nn, 2 * u / nn - 1,
        significant, beyond,
    )  # fmt: skip


def message(name: str, j: Judgement, cfg: MetricJudge) -> str:
    """One line for events and the check's message, with the statistics."""
    if j.no_data:
        return (
            f"{name}: judge: no data (canary {j.n_canary}, primary {j.n_primary} samples, need "
            f"{cfg.minSamples}): {'passing' if j.passed else 'failing'} (noData: {cfg.noData})"
        )
    crit = " (critical)" if j.critical else ""
    return (
        f"{name}: judge {j.decision.upper()}{crit}: canary {j.relative_shift_pct:+.1f}% vs primary "
        f"(HL shift {j.hl_shift:.4g}, medians {j.canary_median:.4g}/{j.primary_median:.4g}), "
        f"Mann-Whitney U={j.u:g} p={j.p_value:.4g} ({j.alternative}, {j.method}, alpha {j.alpha:.3g}), "
        f"n={j.n_canary}/{j.n_primary}"
    )


def evaluate_samples(metric: CanaryMetric, samples: MetricSamples) -> MetricCheck:
    """The check of a judged metric from its samples."""
    cfg = metric.judge or MetricJudge()
    name = metric.name
    if samples.error is not None:
        return MetricCheck(
            name,
            None,
            False,
            f"{name}: judge: samples query failed: {samples.error}",
            samples.query,
            {"decision": "fail", "error": samples.error},
        )
    j = judge(samples.canary, samples.primary, cfg)
    return MetricCheck(name, j.canary_median, j.passed, message(name, j, cfg), samples.query, j.as_dict(), j.critical)


def evaluate_judged(metric: CanaryMetric, probe: Probe) -> MetricCheck:
    """Threshold check first when the metric has one, then the judgement of ``probe.samples(metric)``."""
    if metric.thresholdRange is not None or metric.threshold is not None:
        check = evaluate_metric(metric, probe.metric(metric))
        if not check.passed:
            return check
    return evaluate_samples(metric, probe.samples(metric))
