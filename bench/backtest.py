"""Analysis ticks per second in backtests (one core).

Replays a weighted canary (stepWeight 2, so about 55 ticks per release, two metric checks and a rollout webhook
on every analysis tick, one failed check on the way) through ``playground.backtest.replay`` until the total
number of ticks is reached, and reports ticks per second, of CPU time (the figure for one core, whatever else the
machine runs) and of wall time. Also reports the bare ``analysis.tick`` rate on the
same rows (observations built beforehand, no output dicts).

    .venv/bin/python bench/backtest.py [--ticks 1000000]
"""

from __future__ import annotations

import argparse
import time

from playground.analysis import CanaryState, tick
from playground.backtest import TraceProbe, TraceRow, replay
from playground.models import Canary
from playground.observe import Observation

CANARY = Canary.model_validate(
    {
        "metadata": {"name": "backend", "namespace": "prod"},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "backend"},
            "service": {"port": 9898},
            "analysis": {
                "interval": "15s",
                "threshold": 3,
                "stepWeight": 2,
                "metrics": [
                    {"name": "request-success-rate", "thresholdRange": {"min": 99}},
                    {"name": "request-duration", "thresholdRange": {"max": 500}},
                ],
                "webhooks": [
                    {"name": "smoke", "type": "pre-rollout", "url": "http://flagger-loadtester.prod/"},
                    {"name": "load", "url": "http://flagger-loadtester.prod/"},
                ],
            },
        },
    }
)


def trace(length: int) -> list[TraceRow]:
    rows = [TraceRow(metrics={"request-success-rate": 99.9, "request-duration": 180.0}) for _ in range(length)]
    rows[10] = TraceRow(metrics={"request-success-rate": 95.0, "request-duration": 180.0})  # one failed check
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ticks", type=int, default=1_000_000, help="total ticks to replay (default 1,000,000)")
    args = parser.parse_args()
    rows = trace(200)

    per_release = sum(1 for line in replay(CANARY, rows) if "tick" in line)
    releases = max(1, args.ticks // per_release)
    wall, cpu = time.perf_counter(), time.process_time()
    ticks = 0
    for _ in range(releases):
        for _line in replay(CANARY, rows):
            ticks += 1
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    ticks -= releases  # the final {"result": ...} line of each release is not a tick
    print(
        f"backtest replay: {ticks:,} ticks ({releases:,} releases of {per_release} ticks, 2 metric checks per "
        f"analysis tick): {ticks / cpu:,.0f} ticks/s of CPU time, {ticks / wall:,.0f} ticks/s of wall time"
    )

    probe = TraceProbe()
    observations = [Observation(row.revision, row.canary, row.primary, now=None) for row in rows[:per_release]]
    wall, cpu = time.perf_counter(), time.process_time()
    n = 0
    for _ in range(releases):
        state = CanaryState.initialized("0")
        for row, obs in zip(rows, observations):
            probe.row = row
            state = tick(CANARY, state, obs, probe).state
        n += per_release
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"analysis.tick alone: {n:,} ticks: {n / cpu:,.0f} ticks/s of CPU time, {n / wall:,.0f} ticks/s of wall time")


if __name__ == "__main__":
    main()
