"""`playground backtest --prometheus`: replaying real Prometheus history (backfilled with promtool) reproduces the
decisions of the live analysis on the same data; `--sweep` tells which settings roll back which releases."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import pytest

from playground import cli
from playground.analysis import CanaryState, tick
from playground.backtest import PrometheusHistory, load_canary, parse_sweep, sweep
from playground.models import Phase
from playground.observe import MetricSamples, MetricValue, Observation, WebhookAnswer
from tests.data.history import synthetic
from tests.support.prometheus import PrometheusProcess, prometheus_available

DATA = Path(__file__).parent / "data" / "history"
CANARY = DATA / "canary.yaml"


@pytest.fixture(scope="module")
def prom(tmp_path_factory):
    assert prometheus_available(), "prometheus binary not found: apt-get install prometheus"
    work = tmp_path_factory.mktemp("prom-backtest")
    data = synthetic.backfill(work / "data", work)
    with PrometheusProcess(work, extra_args=synthetic.PROMETHEUS_ARGS) as p:
        yield p, synthetic.Model(data)


def iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ModelProbe:
    """The live analysis' view of the same data: metric values computed directly from the known series."""

    def __init__(self, model, ts: int):
        self.model, self.ts = model, ts

    def webhook(self, hook, phase):
        return WebhookAnswer(hook.name, 404 if hook.type.value == "rollback" else 200)

    def metric(self, metric):
        if metric.name == "request-success-rate":
            v = self.model.success_rate("canary", self.ts)
        else:
            v = self.model.latency_p99("canary", self.ts)
            v = float(math.trunc(v)) if math.isfinite(v) else v
        return MetricValue(metric.name, None if v != v else v)

    def samples(self, metric):  # pragma: no cover - no judge here
        return MetricSamples(metric.name)


def live_decisions(canary, model, start: int, end: int) -> list[dict]:
    state = CanaryState.initialized("previous")
    out = []
    for i, ts in enumerate(range(start, end + 1, 60)):
        state = tick(canary, state, Observation("1", now=iso(ts)), ModelProbe(model, ts)).state
        out.append(
            {
                "tick": i,
                "phase": state.phase.value,
                "canaryWeight": state.canaryWeight,
                "routes": [state.routes.primary, state.routes.canary],
                "failedChecks": state.failedChecks,
                "iterations": state.iterations,
            }
        )
        if state.phase in (Phase.Succeeded, Phase.Failed):
            break
    return out + [{"result": state.phase.value, "ticks": len(out)}]


def backtest(capsys, *args) -> tuple[int, str, str]:
    code = cli.main(["backtest", str(CANARY), *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("release", ["A", "B", "C"])
def test_backtest_reproduces_the_live_decisions(prom, capsys, release):
    p, model = prom
    start = synthetic.RELEASES[release]
    code, out, err = backtest(capsys, "--prometheus", p.url, "--from", iso(start), "--to", str(start + 600))
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines == live_decisions(load_canary(CANARY), model, start, start + 600)


def test_backtest_outcomes_are_the_expected_ones(prom, capsys):
    p, _ = prom
    results = {}
    for name, start in synthetic.RELEASES.items():
        code, out, _ = backtest(capsys, "--prometheus", p.url, "--from", str(start), "--to", str(start + 600))
        lines = [json.loads(line) for line in out.splitlines()]
        results[name] = (lines[-1]["result"], max(line.get("failedChecks", 0) for line in lines))
    # A: one failed success-rate check (95% at tick 3), promoted; B, C: p99 350 / 497 > 300 twice: rolled back
    assert results == {"A": ("Succeeded", 1), "B": ("Failed", 2), "C": ("Failed", 2)}


def test_metric_values_equal_the_known_data(prom):
    p, model = prom
    canary = load_canary(CANARY)
    start = synthetic.RELEASES["B"]
    hist = PrometheusHistory(
        canary, p.url, datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(start + 300, UTC)
    )
    try:
        rows = list(hist)
    finally:
        hist.close()
    assert len(rows) == 6
    for i, row in enumerate(rows):
        ts = start + 60 * i
        assert row.metrics["request-success-rate"] == model.success_rate("canary", ts)
        assert row.metrics["request-duration"] == float(math.trunc(model.latency_p99("canary", ts)))
        assert row.webhooks == {"manual-rollback": 404}
    assert [r.metrics["request-duration"] for r in rows] == [248.0, 248.0, 349.0, 349.0, 349.0, 349.0]


def test_sweep_table_says_which_settings_roll_back_which_releases(prom, capsys):
    p, _ = prom
    args = ["--prometheus", p.url, "--sweep", "thresholdRange.max=300,400,500"]
    for start in synthetic.RELEASES.values():
        args += ["--from", str(start), "--to", str(start + 600)]
    code, out, err = backtest(capsys, *args)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[0] == "setting" and "release 3 (2024-01-01T02:00:00Z)" in lines[0]
    assert lines[1].startswith("request-duration:thresholdRange.max=300") and lines[1].endswith("2/3")
    assert lines[1].count("ROLLED BACK") == 2 and "promoted" in lines[1]
    assert lines[2].startswith("request-duration:thresholdRange.max=400") and lines[2].endswith("1/3")
    assert lines[3].startswith("request-duration:thresholdRange.max=500") and lines[3].endswith("0/3")

    canary = load_canary(CANARY)
    histories = [
        PrometheusHistory(canary, p.url, datetime.fromtimestamp(s, UTC), datetime.fromtimestamp(s + 600, UTC))
        for s in synthetic.RELEASES.values()
    ]
    try:
        rows = sweep(
            canary,
            [
                parse_sweep("request-duration:thresholdRange.max=300,400,500", canary),
                parse_sweep("analysis.threshold=1,3", canary),
            ],
            histories,
        )
    finally:
        for h in histories:
            h.close()
    table = {r["setting"]: [x["rolled_back"] for x in r["results"]] for r in rows}
    assert table == {
        "request-duration:thresholdRange.max=300, analysis.threshold=1": [True, True, True],  # A's 95% tick too
        "request-duration:thresholdRange.max=300, analysis.threshold=3": [False, True, True],
        "request-duration:thresholdRange.max=400, analysis.threshold=1": [True, False, True],
        "request-duration:thresholdRange.max=400, analysis.threshold=3": [False, False, True],
        "request-duration:thresholdRange.max=500, analysis.threshold=1": [True, False, False],
        "request-duration:thresholdRange.max=500, analysis.threshold=3": [False, False, False],
    }


def test_sweep_and_window_errors(prom, capsys):
    p, _ = prom
    code, _, err = backtest(
        capsys,
        "--prometheus",
        p.url,
        "--from",
        "1704067200",
        "--to",
        "1704067800",
        "--sweep",
        "latency:thresholdRange.max=1",
    )
    assert code == 2 and "no metric 'latency'" in err
    code, _, err = backtest(
        capsys, "--prometheus", p.url, "--from", "1704067200", "--to", "1704067800", "--from", "1704071000"
    )
    assert code == 2 and "one pair per release window" in err
    code, _, err = backtest(capsys, DATA / "canary.yaml", "--sweep", "threshold=1")
    assert code == 2
