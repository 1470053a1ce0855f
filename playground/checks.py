"""One metric check: the result type and the threshold rule, shared by the analysis (``playground.analysis``)
and the statistical judge (``playground.judge``), so neither imports the other's module to reach them.

Flagger's rule: a query error and no values fail (unless ``noData: pass``); ``thresholdRange`` bounds are
inclusive; without it the deprecated ``threshold`` (0 when unset) applies: the metric fails above it, except
the built-in ``request-success-rate``, which fails below it. Pure, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from playground.frozen import fast_init
from playground.models import CanaryMetric
from playground.observe import MetricValue

__all__ = ["MetricCheck", "MetricChecker", "evaluate_metric", "default_threshold_rule"]


@dataclass(frozen=True, slots=True)
class MetricCheck:
    """The result of one metric check."""

    name: str
    value: float | None
    passed: bool
    message: str
    query: str = ""
    # Judge extension (``playground.judge``): the decision and test statistics, and whether a failure is critical
    # (a critical failure sets failedChecks to the threshold, so the next tick rolls back).
    details: Any = None
    critical: bool = False


_check = fast_init(MetricCheck)  # MetricCheck(...) without the frozen __init__ (a check per metric per tick)


def evaluate_metric(metric: CanaryMetric, mv: MetricValue) -> MetricCheck:
    """Judge one metric value: query error and no values fail (unless ``noData: pass``); ``thresholdRange``
    bounds are inclusive; without it the deprecated ``threshold`` applies as in Flagger."""
    name = metric.name
    if mv.error is not None:
        return _check(name, None, False, f"{name}: query failed: {mv.error}", mv.query)
    v = mv.value
    if v is None or v != v:  # empty result or NaN
        if metric.noData == "pass":
            return _check(name, None, True, f"{name}: no values, passing (noData: pass)", mv.query)
        return _check(name, None, False, f"{name}: no values found (is the target receiving traffic?)", mv.query)
    tr = metric.thresholdRange
    if tr is not None:
        if tr.min is not None and v < tr.min:
            return _check(name, v, False, f"{name} {v:.2f} < {tr.min:g} (thresholdRange.min)", mv.query)
        if tr.max is not None and v > tr.max:
            return _check(name, v, False, f"{name} {v:.2f} > {tr.max:g} (thresholdRange.max)", mv.query)
        return _check(name, v, True, f"{name} {v:.2f} within thresholdRange", mv.query)
    threshold = metric.threshold or 0.0
    if name == "request-success-rate" and metric.templateRef is None:
        if v < threshold:
            return _check(name, v, False, f"{name} {v:.2f} < {threshold:g} (threshold)", mv.query)
        return _check(name, v, True, f"{name} {v:.2f} >= {threshold:g} (threshold)", mv.query)
    if v > threshold:
        return _check(name, v, False, f"{name} {v:.2f} > {threshold:g} (threshold)", mv.query)
    return _check(name, v, True, f"{name} {v:.2f} <= {threshold:g} (threshold)", mv.query)


class MetricChecker:
    """``evaluate_metric`` for one metric, remembering the checks of the values it saw last.

    A check is a pure function of the metric and of the value's ``value`` and ``query`` (when it has no
    ``error``), and ``MetricCheck`` is immutable, so a value seen before gets the same check object back: a
    backtest replays long traces whose values repeat (a success rate of 100, a latency rounded to the
    millisecond), and judging and formatting them again was a tenth of its time. Only non-zero numbers are
    remembered (0.0 and -0.0 are equal keys but print differently; NaN never equals itself); at most ``size``
    of them (a latency to 0.1 ms between 100 and 500 ms is 4,000 values), forgotten all at once when full.
    """

    __slots__ = ("metric", "_memo", "_size")

    def __init__(self, metric: CanaryMetric, size: int = 4096) -> None:
        self.metric = metric
        self._memo: dict[tuple[float, str], MetricCheck] = {}
        self._size = size

    def __call__(self, mv: MetricValue) -> MetricCheck:
        v = mv.value
        if not v or v != v or mv.error is not None:
            return evaluate_metric(self.metric, mv)
        key = (v, mv.query)
        check = self._memo.get(key)
        if check is None:
            check = evaluate_metric(self.metric, mv)
            if len(self._memo) >= self._size:
                self._memo.clear()
            self._memo[key] = check
        return check


def default_threshold_rule(metric: CanaryMetric) -> str:
    """How ``evaluate_metric`` judges ``metric`` when it has no ``thresholdRange`` (for messages)."""
    threshold = metric.threshold or 0.0
    if metric.name == "request-success-rate" and metric.templateRef is None:
        return f"it fails only below {threshold:g} (threshold)"
    return f"it fails whenever its value is above {threshold:g} (threshold, as in Flagger)"
