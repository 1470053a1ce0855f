"""Known Istio metric history for tests: generated series, an OpenMetrics file for promtool backfilling, and a
model that computes what Prometheus 2.42 answers for the built-in queries (same float operations).

Traffic is defined per one-minute segment k, covering (T0 + (k-1)*60, T0 + k*60]: per workload, requests per
second answering 200 and 500, and how many of them took (100, 250] ms ("fast") or (250, 500] ms ("slow").
Counters are sampled every 15 s on a grid aligned with T0, so a [1m] window ending on the grid holds 5 samples
from its first to its last second: Prometheus' rate() then does no extrapolation (factor 60/60) and equals
(last - first) / 60 exactly, which ``Model`` reproduces.

Three releases of prod/backend (ticks every 60 s from their start):
  A at T0:        healthy canary, except tick 3 (5% errors)         p99 248.5 ms
  B at T0 + 1h:   healthy success rate, p99 ~350 ms from tick 2
  C at T0 + 2h:   healthy success rate, p99 497.5 ms from tick 2
"""
from __future__ import annotations

import math
import subprocess
from dataclasses import dataclass
from pathlib import Path

T0 = 1704067200  # 2024-01-01T00:00:00Z
STEP = 15
FIRST = T0 - 900
LAST = T0 + 3 * 3600
NAMESPACE, NAME = "prod", "backend"
WORKLOADS = {"canary": NAME, "primary": f"{NAME}-primary"}
RELEASES = {"A": T0, "B": T0 + 3600, "C": T0 + 7200}
BUCKETS = ("100", "250", "500", "+Inf")


@dataclass(frozen=True)
class Traffic:
    ok: int = 0
    err: int = 0
    fast: int = 0  # of ok + err, in (100, 250] ms
    slow: int = 0  # in (250, 500] ms

    def __post_init__(self):
        assert self.fast + self.slow == self.ok + self.err


PRIMARY = Traffic(ok=40, fast=40)
IDLE = Traffic()


def traffic(role: str, k: int) -> Traffic:
    """Per-second traffic of a workload during segment k."""
    if role == "primary":
        return PRIMARY
    for name, start in RELEASES.items():
        i = k - (start - T0) // 60  # the tick of the release whose window this segment ends
        if 0 <= i <= 10:
            if name == "A":
                return Traffic(ok=19, err=1, fast=20) if i == 3 else Traffic(ok=20, fast=20)
            if name == "B":
                return Traffic(ok=60, fast=59, slow=1) if i >= 2 else Traffic(ok=60, fast=60)
            return Traffic(ok=20, slow=20) if i >= 2 else Traffic(ok=20, fast=20)
    return IDLE


def segment(ts: int) -> int:
    """Segment of the 15 s interval ending at ts."""
    return math.ceil((ts - T0) / 60)


def series() -> dict[tuple, dict[int, float]]:
    """Every series: key (metric, workload, label, value) -> {timestamp: counter value}."""
    out: dict[tuple, dict[int, float]] = {}
    for role, wl in WORKLOADS.items():
        counters = {("istio_requests_total", wl, "response_code", c): 1000.0 for c in ("200", "500")}
        counters.update({("istio_request_duration_milliseconds_bucket", wl, "le", b): 1000.0 for b in BUCKETS})
        for key in counters:
            out[key] = {}
        for ts in range(FIRST, LAST + 1, STEP):
            if ts > FIRST:
                t = traffic(role, segment(ts))
                inc = {"200": t.ok, "500": t.err, "100": 0, "250": t.fast, "500b": t.fast + t.slow,
                       "+Inf": t.fast + t.slow}
                for key in counters:
                    label = key[3]
                    if key[0].endswith("_bucket") and label == "500":
                        label = "500b"
                    counters[key] += STEP * inc[label]
            for key, v in counters.items():
                out[key][ts] = v
    return out


def openmetrics(data: dict[tuple, dict[int, float]]) -> str:
    lines = []
    for family, mtype in (("istio_requests", "counter"), ("istio_request_duration_milliseconds", "histogram")):
        lines.append(f"# TYPE {family} {mtype}")
        keys = [k for k in data if k[0].startswith(family + ("_total" if mtype == "counter" else "_bucket"))]
        for ts in range(FIRST, LAST + 1, STEP):
            for metric, wl, label, value in keys:
                labels = (f'reporter="destination",destination_workload_namespace="{NAMESPACE}",'
                          f'destination_workload="{wl}",{label}="{value}"')
                lines.append(f"{metric}{{{labels}}} {data[(metric, wl, label, value)][ts]:.1f} {ts}")
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def backfill(tsdb: Path, work: Path) -> dict[tuple, dict[int, float]]:
    """Write the OpenMetrics file and create TSDB blocks from it in ``tsdb`` (promtool)."""
    data = series()
    work.mkdir(parents=True, exist_ok=True)
    src = work / "history.om"
    src.write_text(openmetrics(data))
    tsdb.mkdir(parents=True, exist_ok=True)
    subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", str(src), str(tsdb)], check=True,
                   capture_output=True, timeout=120)
    return data


PROMETHEUS_ARGS = ["--storage.tsdb.retention.time=100y"]


class Model:
    """What Prometheus answers for the history and built-in queries at time ts (on the 15 s grid)."""

    def __init__(self, data: dict[tuple, dict[int, float]]):
        self.data = data

    def rate(self, key: tuple, ts: int, window: int = 60) -> float:
        v = self.data[key]
        sampled = float(window)
        return ((v[ts] - v[ts - window]) * (sampled / sampled)) / window

    def request_rate(self, role: str, ts: int) -> float:
        wl = WORKLOADS[role]
        return (self.rate(("istio_requests_total", wl, "response_code", "200"), ts)
                + self.rate(("istio_requests_total", wl, "response_code", "500"), ts))

    def success_rate(self, role: str, ts: int) -> float:
        wl = WORKLOADS[role]
        ok = self.rate(("istio_requests_total", wl, "response_code", "200"), ts)
        total = ok + self.rate(("istio_requests_total", wl, "response_code", "500"), ts)
        return ok / total * 100 if total else math.nan

    def latency_p99(self, role: str, ts: int) -> float:
        """Prometheus 2.42 bucketQuantile(0.99, ...) over the summed bucket rates."""
        wl = WORKLOADS[role]
        buckets = [(math.inf if b == "+Inf" else float(b),
                    self.rate(("istio_request_duration_milliseconds_bucket", wl, "le", b), ts)) for b in BUCKETS]
        observations = buckets[-1][1]
        if observations == 0:
            return math.nan
        rank = 0.99 * observations
        b = next(i for i in range(len(buckets) - 1) if buckets[i][1] >= rank) if any(
            buckets[i][1] >= rank for i in range(len(buckets) - 1)) else len(buckets) - 1
        if b == len(buckets) - 1:
            return buckets[-2][0]
        start, end, count = 0.0, buckets[b][0], buckets[b][1]
        if b > 0:
            start = buckets[b - 1][0]
            count -= buckets[b - 1][1]
            rank -= buckets[b - 1][1]
        return start + (end - start) * (rank / count)

    def value(self, metric: str, role: str, ts: int) -> float:
        return getattr(self, metric)(role, ts)
