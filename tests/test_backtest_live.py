"""A backtest over the real Prometheus history of LIVE releases reproduces the decisions those releases made.

On the shared local playground (1 s ticks) two real releases of prod/backend run with the controller:

- a faulty revision (a new image with ``PODINFO_ERROR_RATE: "0.5"``, half of the canary's requests answer 500) that is rolled back
  once the failed checks reach the threshold;
- then a clean revision (the error injection removed, a new image) that is promoted.

Every live tick is recorded: its time (``TickRecord.time``, the milliseconds at which its metric queries were
evaluated), what it observed (revision, canary/primary readiness), the webhook answers and metric values it got,
and the state it ended in. The backtest engine then replays the same canary over the same Prometheus (the
playground's) with instant queries at exactly those times (``PrometheusHistory(times=...)``), the webhook answers
and readiness taken from the live run (neither is in Prometheus). The jsonl decisions of the replay (phase,
canaryWeight, routes, failedChecks, iterations per tick, and the final result) must equal the live ones, and
every metric value the live analysis checked must agree with the value the backtest read.

Why they agree: the live controller evaluates its instant queries at the tick's time (``time=``, recorded as
``TickRecord.time``), so the backtest asks the same Prometheus exactly the same questions and gets the same answers,
including at the edges (the first ticks with traffic on the canary, where a metric has "no values" or the 5xx series
does not exist yet). The one thing that could still differ is a sample stamped at or before the tick time but
ingested after the live query ran; the live query runs after the tick's observation and its load-test webhook call
(70-160 ms after the tick time on this playground), well after a scrape of the local Envoy has completed (its
scrape_duration_seconds stays around 20 ms). Values are therefore compared with a small tolerance, decisions
exactly. The test leaves the origin without the error injection and both canaries idle (backend Succeeded), as the
other tests of the shared playground expect.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from playground import pipeline
from playground.backtest import PrometheusHistory, TraceRow, replay
from playground.checks import evaluate_metric
from playground.controller import TickRecord
from playground.models import Canary, Phase
from playground.observe import MetricValue, WebhookAnswer
from tests.support.playground_env import (
    BACKEND_DEPLOYMENT,
    PlaygroundEnv,
    new_podinfo_image,
    status,
    with_env_var,
    without_env_var,
)

pytestmark = pytest.mark.integration

KEY = "prod/backend"
# Same query, same evaluation time, same Prometheus: the values have always come out identical. The tolerance only
# absorbs a sample stamped before the tick but ingested after the live query (see the module docstring).
VALUE_TOLERANCE = {"rel_tol": 0.05, "abs_tol": 0.5}
ERROR_RATE = "PODINFO_ERROR_RATE"
_IMAGE_LINE = re.compile(r"(image: )\S+( # \{\"\$imagepolicy\": \"prod:backend\"\})")


def with_image(image: str):
    def edit(text: str) -> str:
        new, n = _IMAGE_LINE.subn(lambda m: f"{m.group(1)}{image}{m.group(2)}", text)
        assert n == 1, "the backend deployment has no image line with its $imagepolicy marker"
        return new

    return edit


def both(*edits):
    def edit(text: str) -> str:
        for e in edits:
            text = e(text)
        return text

    return edit


class LiveRelease:
    """One release of prod/backend driven by the controller, every tick recorded."""

    def __init__(self, canary: Canary, templates: dict, records: list[TickRecord]):
        self.canary, self.templates, self.records = canary, templates, records

    def decisions(self) -> list[dict[str, Any]]:
        """The live run in the backtest's jsonl shape."""
        out = [decision(r.tick, r.result.state) for r in self.records]
        return out + [{"result": self.records[-1].phase.value, "ticks": len(self.records)}]


def decision(i: int, state) -> dict[str, Any]:
    return {
        "tick": i,
        "phase": state.phase.value,
        "canaryWeight": state.canaryWeight,
        "routes": [state.routes.primary, state.routes.canary],
        "failedChecks": state.failedChecks,
        "iterations": state.iterations,
    }


def run_release(env: PlaygroundEnv) -> LiveRelease:
    """Sync the origin's HEAD, then tick prod/backend until its release ends."""
    rt = env.runtime()
    try:
        pipeline.sync(rt)
        ctl = rt.controller(log=lambda _line: None, interval=1.0)
        records: list[TickRecord] = []
        ctl.run(KEY, on_tick=records.append, max_ticks=120)
        return LiveRelease(ctl.canary(KEY), ctl.templates(), records)
    finally:
        rt.close()


def status_of(answer: WebhookAnswer) -> int:
    """The HTTP status that gives the backtest's webhook the live answer's outcome (an error counts as 503)."""
    return answer.status if answer.ok or (answer.status or 0) > 202 else 503


def backtest(env: PlaygroundEnv, live: LiveRelease) -> tuple[list[dict[str, Any]], list[TraceRow]]:
    """Replay the live release with the backtest engine: metric values from Prometheus at the live tick times,
    webhook answers and readiness as the live ticks saw them."""
    times = [datetime.fromtimestamp(r.time, UTC) for r in live.records]
    history = PrometheusHistory(live.canary, env.prometheus_url, templates=live.templates, times=times)
    try:
        rows = [
            replace(
                history.row(i),
                revision=r.observation.revision,
                canary=r.observation.canary,
                primary=r.observation.primary,
                webhooks={a.name: status_of(a) for a in r.result.hooks},
            )
            for i, r in enumerate(live.records)
        ]
    finally:
        history.close()
    return list(replay(live.canary, rows)), rows


def assert_reproduced(env: PlaygroundEnv, live: LiveRelease) -> list[tuple[str, float | None, float | None]]:
    """The backtest's decisions equal the live ones, exactly; every metric value the live analysis checked agrees
    with the value the backtest read at that tick: both "no values", or equal within VALUE_TOLERANCE, and judged
    alike. Returns (metric, live value, backtest value) per live check."""
    records = live.records
    assert all(r.time is not None and r.observation is not None for r in records)
    assert [r.tick for r in records] == list(range(len(records)))
    # ms precision, one tick per interval, in order
    assert all(round(r.time, 3) == r.time for r in records)
    assert all(b.time > a.time for a, b in zip(records, records[1:]))
    assert all(r.at == datetime.fromtimestamp(r.time, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") for r in records)

    replayed, rows = backtest(env, live)
    expected = live.decisions()
    assert replayed == expected, "\n".join(
        f"tick {i}: live {e} / backtest {g}"
        + (f" / checks {checks_of(records[i])} / read {rows[i].metrics}" if i < len(records) else "")
        for i, (e, g) in enumerate(zip(expected, replayed))
        if e != g
    )

    metrics = {m.name: m for m in live.canary.spec.analysis.metrics}
    compared = []
    for r, row in zip(records, rows):
        for check in r.result.checks:
            got = row.metrics[check.name]
            compared.append((check.name, check.value, got))
            where = f"tick {r.tick} ({r.at}) {check.name}: live {check.value}, backtest {got}"
            assert check.query, check  # a real query ran (not an error before it)
            assert (got is None) == (check.value is None), where
            if got is not None:
                assert math.isclose(got, check.value, **VALUE_TOLERANCE), where
            assert evaluate_metric(metrics[check.name], MetricValue(check.name, got)).passed == check.passed, where
    return compared


def checks_of(record: TickRecord) -> list[tuple[str, float | None, bool]]:
    return [(c.name, c.value, c.passed) for c in record.result.checks]


def test_backtest_over_prometheus_reproduces_live_releases(playground) -> None:
    env = playground
    threshold = 10  # analysis.threshold of manifests/prod/backend/canary.yaml
    injected = False
    try:
        # 1. a faulty revision: rolled back
        # (with a new image too: the revision must be new even if another test released this same fault before)
        env.commit(
            {BACKEND_DEPLOYMENT: both(with_env_var(ERROR_RATE, "0.5"), with_image(new_podinfo_image()))},
            "backend: inject errors (backtest)",
        )
        injected = True
        faulty = run_release(env)
        phases = [r.phase for r in faulty.records]
        assert phases[0] == Phase.Progressing and phases[-1] == Phase.Failed, phases
        assert faulty.records[-1].state.failedChecks >= threshold
        failed_metric_checks = [c for r in faulty.records for c in r.result.checks if not c.passed]
        assert any(c.name == "error-rate" and c.value is not None and c.value > 1 for c in failed_metric_checks)

        # 2. the error injection removed and a new image: promoted
        env.commit(
            {BACKEND_DEPLOYMENT: both(without_env_var(ERROR_RATE), with_image(new_podinfo_image()))},
            "backend: revert error injection, new image (backtest)",
        )
        injected = False
        clean = run_release(env)
        phases = [r.phase for r in clean.records]
        assert phases[0] == Phase.Progressing and phases[-1] == Phase.Succeeded, phases
        weights = sorted({r.state.canaryWeight for r in clean.records if r.phase == Phase.Progressing} - {0})
        assert weights == list(range(5, 55, 5))
        passed = [c for r in clean.records for c in r.result.checks if c.passed]
        assert {c.name for c in passed} == {"error-rate", "latency"} and len(passed) >= 2 * len(weights)
    finally:
        if injected:
            env.commit({BACKEND_DEPLOYMENT: without_env_var(ERROR_RATE)}, "backend: revert error injection")
            rt = env.runtime()
            try:
                pipeline.sync(rt)
            finally:
                rt.close()
    st = status(env)
    assert st.phase == Phase.Succeeded and st.lastAppliedSpec == st.lastPromotedSpec

    # 3. the backtest over the playground's Prometheus reproduces both releases, tick by tick
    compared = assert_reproduced(env, faulty) + assert_reproduced(env, clean)
    # the comparison covered real numbers of both metrics, failing and passing ones
    values = [(name, v) for name, v, _ in compared if v is not None]
    assert any(name == "error-rate" and v > 1 for name, v in values)
    assert any(name == "error-rate" and v <= 1 for name, v in values)
    assert any(name == "latency" for name, _ in values)
