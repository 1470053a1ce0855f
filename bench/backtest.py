"""Analysis ticks per second in backtests (one core), in memory and end to end through the console script.

Replays a weighted canary (stepWeight 2, so about 55 ticks per release, two metric checks and a rollout webhook
on every analysis tick, one failed check on the way) through ``playground.backtest.replay`` until the total
number of ticks is reached, and reports ticks per second, of CPU time (the figure for one core, whatever else the
machine runs) and of wall time. Also reports the bare ``analysis.tick`` rate on the
same rows (observations built beforehand, no output dicts).

End to end (``--cli-rows``, default 100,000 and 1,000,000): writes a CSV trace of that many rows (a blue/green
canary with 2 metric checks and a load-test webhook whose iterations never run out, so every row is replayed,
one failed check on the way), runs ``playground backtest CANARY TRACE`` (the installed console script, from a
temporary directory, stdout to /dev/null) and prints ticks per second of its CPU time (user + system, the
figure for one core) and of wall time, and its peak RSS, per trace length: the trace is streamed, so the peak
RSS stays flat from 100k to 1M rows. Then ``playground backtest ... | head -1`` on the longest trace: its exit
status and whatever it printed on stderr (nothing: a closed pipe ends it quietly).

    .venv/bin/python bench/backtest.py [--ticks 1000000] [--cli-rows 100000,1000000] [--skip-replay]
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


CLI_CANARY = """\
apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {name: backend, namespace: prod}
spec:
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: backend}
  service: {port: 9898}
  analysis:
    interval: 15s
    threshold: 5
    iterations: 100000000
    metrics:
      - {name: request-success-rate, thresholdRange: {min: 99}}
      - {name: request-duration, thresholdRange: {max: 500}}
    webhooks:
      - {name: load, url: "http://flagger-loadtester.prod/", metadata: {cmd: "hey -z 1m -q 10 -c 2 http://backend-canary.prod:9898/"}}
"""


def write_trace(path: Path, rows: int) -> None:
    rnd = random.Random(1)
    with open(path, "w") as f:
        f.write("request-success-rate,request-duration,canary_ready,webhook:load\n")
        for i in range(rows):
            rate = 95.0 if i == 10 else 99.5 + rnd.random() * 0.5  # one failed check
            f.write(f"{rate:.3f},{100 + rnd.random() * 300:.1f},true,200\n")


def run_child(argv: list[str], cwd: Path, stdout) -> tuple[int, float, float, int]:
    """(exit status, wall s, CPU s (user + system), peak RSS in KiB) of one child process."""
    wall = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, stdout=stdout, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - wall
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss


def cli_bench(sizes: list[int], replay_rate: float | None = None) -> None:
    """End-to-end runs; ``replay_rate`` (in-memory ticks/s of CPU time, measured just before) gives each a ratio
    that does not depend on how loaded the machine is."""
    playground = str(Path(sys.executable).parent / "playground")
    with tempfile.TemporaryDirectory(prefix="bench-backtest-") as tmp:
        d = Path(tmp)
        (d / "canary.yaml").write_text(CLI_CANARY)
        for rows in sizes:
            trace_path = d / f"trace-{rows}.csv"
            write_trace(trace_path, rows)
            with open(os.devnull, "w") as devnull:
                code, wall, cpu, rss = run_child([playground, "backtest", "canary.yaml", trace_path.name], d, devnull)
            print(
                f"playground backtest, {rows:,}-row CSV ({trace_path.stat().st_size / 1e6:.0f} MB), streamed: exit {code}, "
                f"{rows / cpu:,.0f} ticks/s of CPU time, {rows / wall:,.0f} ticks/s of wall time, "
                f"peak RSS {rss / 1024:.0f} MiB"
                + (f", {rows / cpu / replay_rate:.0%} of the in-memory replay rate" if replay_rate else "")
            )
        longest = d / f"trace-{max(sizes)}.csv"
        proc = subprocess.Popen(
            f"{playground} backtest canary.yaml {longest.name} 2>err.txt | head -1 >/dev/null; "
            'echo "${PIPESTATUS[0]}"',
            shell=True,
            executable="/bin/bash",
            cwd=d,
            stdout=subprocess.PIPE,
            text=True,
        )
        out, _ = proc.communicate(timeout=600)
        err = (d / "err.txt").read_text()
        print(
            f"playground backtest ... | head -1 on {max(sizes):,} rows: exit status {out.strip()}, "
            f"stderr {len(err)} bytes{': ' + err[:200] if err else ''}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ticks", type=int, default=1_000_000, help="total ticks to replay (default 1,000,000)")
    parser.add_argument(
        "--cli-rows",
        default="100000,1000000",
        help="trace lengths for the end-to-end console-script runs (comma-separated; empty: skip them)",
    )
    parser.add_argument("--skip-replay", action="store_true", help="only the end-to-end runs")
    args = parser.parse_args()
    rate = None if args.skip_replay else replay_bench(args.ticks)
    if args.cli_rows:
        cli_bench([int(n) for n in args.cli_rows.split(",") if n], rate)


def replay_bench(total: int) -> float:
    """Prints the in-memory figures; returns the replay's ticks/s of CPU time."""
    rows = trace(200)

    per_release = sum(1 for line in replay(CANARY, rows) if "tick" in line)
    releases = max(1, total // per_release)
    wall, cpu = time.perf_counter(), time.process_time()
    ticks = 0
    for _ in range(releases):
        for _line in replay(CANARY, rows):
            ticks += 1
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    ticks -= releases  # the final {"result": ...} line of each release is not a tick
    replay_rate = ticks / cpu
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
    return replay_rate


if __name__ == "__main__":
    main()
