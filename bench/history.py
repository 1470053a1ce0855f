"""Metric history and delivery metrics throughput.

1. Loading 7 days of 15 s samples for 20 series (806,400 rows) into pandas, two ways:
   * ``prometheus``: from a real Prometheus (Debian ``prometheus``) whose TSDB was backfilled with
     ``promtool tsdb create-blocks-from openmetrics``: ``playground.history.query_range`` (prometheus-api-client
     range queries, chunks of 10,000 points) + the DataFrame build, per series; backfill time is not counted;
   * ``json``: the Prometheus JSON response parsing path only (``parse_range_result`` on already decoded
     ``data.result`` lists, as the client hands them over) + the same DataFrame build.
2. Delivery metrics (``playground.delivery.weekly`` + ``summary``) over 10,000 releases of 20 targets.
3. Recording one release's history the way a release worker does (``record_release_isolated``: 5 min of the
   tests' synthetic Istio series from a real backfilled Prometheus, Parquet + PNG chart), CPU-seconds and wall:
   * ``fresh child``: ``python -m playground.history`` per recording (the fallback; what it cost before the
     recorder): CPU from the caller's ``RUSAGE_CHILDREN``;
   * ``recorder, first``: the home's recorder is started by this recording (its own CPU at ready, from
     /proc, plus the forked child's);
   * ``recorder, warm``: later recordings, a fork of the running recorder (the child's CPU).

    .venv/bin/python bench/history.py [--source both|prometheus|json] [--releases 10000] [--recordings 5]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from playground import delivery, history, history_recorder
from playground.local.procinfo import cpu_seconds

SERIES = 20
STEP = 15
DAYS = 7
POINTS = DAYS * 86400 // STEP  # 40,320 per series
END = 1704067200  # 2024-01-01T00:00:00Z
START = END - (POINTS - 1) * STEP


def values(i: int) -> np.ndarray:
    return np.round(100 + 10 * np.sin(np.arange(POINTS) / (50 + i)) + i, 3)


def frame_of(parts: list[tuple[np.ndarray, np.ndarray, str]]) -> pd.DataFrame:
    return pd.concat([history._rows(ts, vs, "canary", name) for ts, vs, name in parts], ignore_index=True)


def bench_json() -> tuple[int, float]:
    results = []
    for i in range(SERIES):
        ts = START + STEP * np.arange(POINTS)
        results.append(
            [{"metric": {"series": str(i)}, "values": [[float(t), repr(float(v))] for t, v in zip(ts, values(i))]}]
        )
    t0 = time.perf_counter()
    parts = []
    for i, result in enumerate(results):
        ts, vs = history.parse_range_result(result)
        parts.append((ts, vs, f"s{i}"))
    frame = frame_of(parts)
    return len(frame), time.perf_counter() - t0


def bench_prometheus() -> tuple[int, float, float]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.support.prometheus import PrometheusProcess

    work = Path(tempfile.mkdtemp(prefix="bench-history-"))
    try:
        om = work / "bench.om"
        with open(om, "w") as f:
            f.write("# TYPE bench_metric gauge\n")
            for i in range(SERIES):
                ts = START + STEP * np.arange(POINTS)
                f.writelines(f'bench_metric{{series="{i}"}} {v} {t}\n' for t, v in zip(ts, values(i)))
            f.write("# EOF\n")
        t0 = time.perf_counter()
        subprocess.run(
            ["promtool", "tsdb", "create-blocks-from", "openmetrics", str(om), str(work / "data")],
            check=True,
            capture_output=True,
        )
        backfill = time.perf_counter() - t0
        with PrometheusProcess(work, extra_args=["--storage.tsdb.retention.time=100y"]) as prom:
            client = history.connect(prom.url)
            start, end = datetime.fromtimestamp(START, UTC), datetime.fromtimestamp(END, UTC)
            t0 = time.perf_counter()
            parts = []
            for i in range(SERIES):
                ts, vs = history.query_range(client, f'bench_metric{{series="{i}"}}', start, end, f"{STEP}s")
                parts.append((ts, vs, f"s{i}"))
            frame = frame_of(parts)
            elapsed = time.perf_counter() - t0
        assert len(frame) == SERIES * POINTS, len(frame)
        return len(frame), elapsed, backfill
    finally:
        shutil.rmtree(work, ignore_errors=True)


def bench_delivery(n: int) -> tuple[int, float]:
    rng = np.random.default_rng(1)
    started = END + np.sort(rng.integers(0, 365 * 86400, n))
    rows = pd.DataFrame(
        {
            "target": [f"prod/svc{i % 20}" for i in range(n)],
            "revision": [f"r{i}" for i in range(n)],
            "result": np.where(rng.random(n) < 0.15, "Failed", "Succeeded"),
            "started": pd.to_datetime(started, unit="s", utc=True),
            "finished": pd.to_datetime(started + rng.integers(60, 3600, n), unit="s", utc=True),
            "committed": pd.to_datetime(started - rng.integers(60, 86400, n), unit="s", utc=True),
        }
    )
    t0 = time.perf_counter()
    frame = delivery.releases_frame(rows.to_dict("records"))
    weekly = delivery.weekly(frame)
    delivery.summary(frame)
    elapsed = time.perf_counter() - t0
    assert weekly["releases"].sum() == n
    return n, elapsed


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bench_recording(n: int) -> None:

    from tests.data.history import synthetic
    from tests.support.prometheus import PrometheusProcess

    work = Path(tempfile.mkdtemp(prefix="bench-recording-"))
    start = datetime.fromtimestamp(synthetic.RELEASES["B"], UTC)
    ticks = [history.TickWeight(datetime.fromtimestamp(start.timestamp() + 60 * i, UTC), 80, 20) for i in range(6)]

    def window(i: int) -> history.ReleaseWindow:
        return history.ReleaseWindow(
            "prod", "backend", f"r{i}", start, datetime.fromtimestamp(start.timestamp() + 300, UTC)
        )

    try:
        synthetic.backfill(work / "data", work)
        with PrometheusProcess(work, extra_args=synthetic.PROMETHEUS_ARGS) as prom:
            # the fresh child: what every recording cost before the recorder (and the fallback now)
            fresh = []
            for i in range(n):
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                t0 = time.perf_counter()
                history.record_release_isolated(
                    work / "fresh", prom.url, window(i), ticks, result="Succeeded", fresh_child=True
                )
                wall = time.perf_counter() - t0
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                fresh.append((after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, wall))
            home = work / "recorder"
            t0 = time.perf_counter()
            first = history.record_release_isolated(home, prom.url, window(0), ticks, result="Succeeded")
            first_wall = time.perf_counter() - t0
            assert first.recorder is not None, "the recorder did not start"
            server_cpu = cpu_seconds(first.recorder) or 0.0
            warm = []
            for i in range(1, n + 1):
                t0 = time.perf_counter()
                rel = history.record_release_isolated(home, prom.url, window(i), ticks, result="Succeeded")
                warm.append((rel.cpu_s or 0.0, time.perf_counter() - t0))
                assert rel.recorder == first.recorder
            rss = _rss_mb(first.recorder)
            history_recorder.stop(home)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def med(rows: list[tuple[float, float]], k: int) -> float:
        return statistics.median(r[k] for r in rows)

    print(f"recording one release's history ({first.rows} rows, Parquet + PNG chart), median of {n}:")
    print(f"  fresh child (python -m playground.history): {med(fresh, 0):.2f} CPU-s, {med(fresh, 1):.2f} s wall")
    print(
        f"  recorder, first (starts it): {server_cpu + (first.cpu_s or 0):.2f} CPU-s "
        f"(recorder start {server_cpu:.2f} + recording {first.cpu_s or 0:.2f}), {first_wall:.2f} s wall"
    )
    print(f"  recorder, warm (a fork of it): {med(warm, 0):.2f} CPU-s, {med(warm, 1):.2f} s wall")
    print(f"  recorder process RSS {rss:.0f} MB (once per playground home, exits when idle)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", choices=("both", "prometheus", "json"), default="both")
    parser.add_argument("--releases", type=int, default=10_000)
    parser.add_argument("--recordings", type=int, default=5, help="recordings per way (0: skip part 3)")
    args = parser.parse_args()
    print(f"history load: {SERIES} series x {POINTS} samples ({DAYS} days at {STEP}s)")
    if args.source in ("both", "json"):
        rows, s = bench_json()
        print(f"  json parsing path (decoded response -> DataFrame): {rows} rows in {s:.2f}s = {rows / s:,.0f} rows/s")
    if args.source in ("both", "prometheus"):
        if shutil.which("promtool") is None:
            print("  real Prometheus: promtool not found (apt-get install prometheus)")
        else:
            rows, s, backfill = bench_prometheus()
            print(
                f"  real Prometheus 2.42, backfilled ({backfill:.1f}s, not counted), range queries -> DataFrame: "
                f"{rows} rows in {s:.2f}s = {rows / s:,.0f} rows/s"
            )
    n, s = bench_delivery(args.releases)
    print(
        f"delivery metrics (weekly + summary incl. building the releases table): {n} releases in {s:.3f}s = "
        f"{n / s:,.0f} releases/s"
    )
    if args.recordings > 0:
        bench_recording(args.recordings)


if __name__ == "__main__":
    main()
