"""Metric history of releases: Prometheus range data into pandas, partitioned Parquet, charts; `playground history`.

For a release window (``ReleaseWindow``: target namespace/name, revision, start, end, step) ``fetch_history``
runs range queries (prometheus-api-client ``custom_query_range``, split into chunks of at most 10,000 points
per series) for the canary workload ``<name>`` and the primary ``<name>-primary``, with the Istio metric names:

* ``success_rate``  percent of non-5xx requests: ``sum(rate(istio_requests_total{..,response_code!~"5.*"}[w]))
  / sum(rate(istio_requests_total{..}[w])) * 100``
* ``latency_p99``   ms: ``histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{..}[w]))
  by (le))`` (not truncated: the history keeps what Prometheus answers)
* ``request_rate``  requests per second: ``sum(rate(istio_requests_total{..}[w]))``

with ``reporter="destination", destination_workload_namespace="<ns>", destination_workload="<workload>"`` and
``w`` the rate window (default 1m, Flagger's default metric interval). The traffic weights do not come from
Prometheus: they are the routes of the release's tick records (``TickWeight``), as metric ``weight``.

The result is a long table, one row per sample: ``time`` (UTC), ``role`` (``canary``/``primary``), ``metric``,
``value``, plus ``namespace`` and ``name``. ``store_history`` writes it to
``$PLAYGROUND_HOME/history/metrics/target=<ns>_<name>/revision=<rev>/metrics.parquet`` (Hive-style partitions: a
release rewrites only its own file), so ``load_history`` reads the dataset of every release at once, with
``target`` and ``revision`` as columns. ``plot_release`` draws weight, success rate and latency over the
release, primary vs canary, to a PNG (matplotlib, Agg backend).

``query_samples`` answers ``Probe.samples`` of the judge extension live: the metric's query rendered for the
canary and for the primary, as range queries over the metric interval at the judge's step.

``format_history`` prints the finished releases that ``playground history`` reads from the Dagster instance.
Reading a Dagster instance is the Dagster layer's job: the command itself lives in ``assets/history.py`` and
reaches the CLI through the ``playground.commands`` entry point; this module never imports Dagster.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

# numpy, pandas (and pyarrow, matplotlib) are imported where they are used: a release worker records its
# history through ``record_release_isolated`` and never loads them.
if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

from playground.durations import parse_duration, parse_prometheus_duration
from playground.errors import PlaygroundError
from playground.models import Canary, CanaryMetric, MetricTemplate

ROLES = ("canary", "primary")
METRICS = ("weight", "success_rate", "latency_p99", "request_rate")
MAX_POINTS = 10_000  # Prometheus refuses more than 11,000 points per series in one range query
DEFAULT_RATE_WINDOW = "1m"
DEFAULT_STEP = "15s"
COLUMNS = ["time", "role", "metric", "value", "namespace", "name"]

_SELECTOR = 'reporter="destination",destination_workload_namespace="{ns}",destination_workload="{wl}"'
HISTORY_QUERIES = {
    "success_rate": (
        'sum(rate(istio_requests_total{{{sel},response_code!~"5.*"}}[{w}])) / '
        "sum(rate(istio_requests_total{{{sel}}}[{w}])) * 100"
    ),
    "latency_p99": "histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{{{sel}}}[{w}])) by (le))",
    "request_rate": "sum(rate(istio_requests_total{{{sel}}}[{w}]))",
}


class HistoryError(PlaygroundError):
    """Metric history could not be fetched or stored; the message says what and where."""


@dataclass(frozen=True)
class ReleaseWindow:
    """The time window of one release of a target."""

    namespace: str
    name: str
    revision: str
    start: datetime
    end: datetime
    step: str = DEFAULT_STEP
    rate_window: str = DEFAULT_RATE_WINDOW

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def workload(self, role: str) -> str:
        return self.name if role == "canary" else f"{self.name}-primary"


@dataclass(frozen=True)
class TickWeight:
    """The mesh routes after one tick of the release."""

    time: datetime
    primary: int
    canary: int


@dataclass(frozen=True)
class ReleaseHistory:
    """What ``record_release`` stored."""

    parquet: Path
    chart: Path
    rows: int
    frame: pd.DataFrame


def history_queries(namespace: str, name: str, rate_window: str = DEFAULT_RATE_WINDOW) -> dict[tuple[str, str], str]:
    """PromQL per (role, metric) for the canary workload ``name`` and the primary ``name-primary``."""
    out = {}
    for role in ROLES:
        sel = _SELECTOR.format(ns=namespace, wl=name if role == "canary" else f"{name}-primary")
        for metric, q in HISTORY_QUERIES.items():
            out[(role, metric)] = q.format(sel=sel, w=rate_window)
    return out


def _utc(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def connect(url: str, *, proxy: str | None = None, timeout: float = 30.0):
    """A ``PrometheusConnect`` for ``url`` (optionally through an HTTP proxy), no retries on HTTP status."""
    import requests
    from prometheus_api_client import PrometheusConnect

    session = requests.Session()
    if proxy:
        session.proxies = {"http": proxy, "https": proxy}
    return PrometheusConnect(url=url.rstrip("/"), session=session, timeout=timeout)


def parse_range_result(result: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Times (float seconds) and values of a range-query ``data.result``; several series are concatenated."""
    import numpy as np

    times, values = [], []
    for series in result:
        pairs = series.get("values") or []
        if not pairs:
            continue
        n = len(pairs)
        times.append(np.fromiter((p[0] for p in pairs), dtype=float, count=n))
        values.append(np.array([p[1] for p in pairs], dtype=float))  # "NaN", "+Inf" parse as floats
    if not times:
        return np.empty(0), np.empty(0)
    return np.concatenate(times), np.concatenate(values)


def query_range(client, query: str, start: datetime, end: datetime, step: str) -> tuple[np.ndarray, np.ndarray]:
    """Run a range query in chunks of at most ``MAX_POINTS`` steps; answer times and values."""
    import numpy as np

    step_s = parse_duration(step)
    chunk = timedelta(seconds=step_s * (MAX_POINTS - 1))
    t0, end = _utc(start), _utc(end)
    times, values = [], []
    while t0 <= end:
        t1 = min(end, t0 + chunk)
        try:
            result = client.custom_query_range(query, start_time=t0, end_time=t1, step=f"{step_s:g}s")
        except Exception as e:  # requests errors, PrometheusApiClientException: name the address and the query
            raise HistoryError(
                f"range query to Prometheus at {client.url} failed ({type(e).__name__}: {str(e)[:300]}); query: {query}"
            ) from None
        ts, vs = parse_range_result(result)
        times.append(ts)
        values.append(vs)
        t0 = t1 + timedelta(seconds=step_s)
    return np.concatenate(times), np.concatenate(values)


def _rows(times: np.ndarray, values: np.ndarray, role: str, metric: str) -> pd.DataFrame:
    import numpy as np
    import pandas as pd

    return pd.DataFrame(
        {
            "time": pd.to_datetime(np.round(times * 1000).astype("int64"), unit="ms", utc=True),
            "role": role,
            "metric": metric,
            "value": values.astype(float),
        }
    )


def weights_frame(ticks: Iterable[TickWeight]) -> pd.DataFrame:
    """The traffic weights of the tick records as history rows (metric ``weight``, both roles)."""
    import numpy as np
    import pandas as pd

    ticks = list(ticks)
    times = np.array([_utc(t.time).timestamp() for t in ticks], dtype=float)
    return pd.concat(
        [
            _rows(times, np.array([t.canary for t in ticks], dtype=float), "canary", "weight"),
            _rows(times, np.array([t.primary for t in ticks], dtype=float), "primary", "weight"),
        ],
        ignore_index=True,
    )


def fetch_history(
    url: str, window: ReleaseWindow, ticks: Iterable[TickWeight] = (), *, proxy: str | None = None, client=None
) -> pd.DataFrame:
    """The metric history of one release window as a long table (see the module docstring)."""
    import pandas as pd

    client = client or connect(url, proxy=proxy)
    parts = [weights_frame(ticks)] if ticks else []
    for (role, metric), q in history_queries(window.namespace, window.name, window.rate_window).items():
        ts, vs = query_range(client, q, window.start, window.end, window.step)
        parts.append(_rows(ts, vs, role, metric))
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=COLUMNS[:4])
    frame["namespace"] = window.namespace
    frame["name"] = window.name
    order = {m: i for i, m in enumerate(METRICS)}
    frame = frame.assign(_m=frame["metric"].map(order)).sort_values(["_m", "role", "time"], kind="stable")
    return frame.drop(columns="_m").reset_index(drop=True)[COLUMNS]


# ------------------------------------------------------------------------------------------------ storage


def history_root(home: str | Path) -> Path:
    return Path(home) / "history" / "metrics"


def partition_dir(home: str | Path, namespace: str, name: str, revision: str) -> Path:
    return history_root(home) / f"target={namespace}_{name}" / f"revision={revision}"


def store_history(home: str | Path, window: ReleaseWindow, frame: pd.DataFrame) -> Path:
    """Write one release's rows to its partition (replacing a previous write of the same release)."""
    d = partition_dir(home, window.namespace, window.name, window.revision)
    d.mkdir(parents=True, exist_ok=True)
    path = d / "metrics.parquet"
    tmp = d / ".metrics.parquet.tmp"
    frame[COLUMNS].to_parquet(tmp, index=False)
    os.replace(tmp, path)
    return path


def load_history(home: str | Path, *, target: str | None = None) -> pd.DataFrame:
    """Every stored release (or one target's, ``ns/name``): the long table plus ``target`` and ``revision``."""
    import pandas as pd

    root = history_root(home)
    if target:
        root = root / f"target={target.replace('/', '_')}"
    if not root.exists() or not any(root.rglob("*.parquet")):
        return pd.DataFrame(columns=COLUMNS + ["target", "revision"])
    import pyarrow.dataset as ds

    # the Parquet files only: each partition also holds the release's chart.png
    files = sorted(str(p) for p in root.rglob("*.parquet"))
    dataset = ds.dataset(
        files, format="parquet", partitioning=ds.partitioning(flavor="hive"), partition_base_dir=str(root)
    )
    frame = dataset.to_table().to_pandas()
    if target:
        frame["target"] = target.replace("/", "_")
    for col in ("target", "revision"):
        frame[col] = frame[col].astype(str)
    return frame


# ------------------------------------------------------------------------------------------------- charts

_PANELS = (("weight", "traffic weight (%)"), ("success_rate", "success rate (%)"), ("latency_p99", "p99 latency (ms)"))


def plot_release(frame: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """PNG of weight, success rate and p99 latency over the release, primary vs canary."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 8), dpi=100)
    axes = fig.subplots(len(_PANELS), 1, sharex=True)
    for ax, (metric, label) in zip(axes, _PANELS):
        for role, color in (("primary", "tab:blue"), ("canary", "tab:orange")):
            rows = frame[(frame["metric"] == metric) & (frame["role"] == role)].sort_values("time")
            if rows.empty:
                continue
            x = rows["time"].dt.tz_convert(None) if rows["time"].dt.tz is not None else rows["time"]
            if metric == "weight":
                ax.step(x, rows["value"], where="post", label=role, color=color)
            else:
                ax.plot(x, rows["value"], label=role, color=color, marker=".", markersize=3)
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best", fontsize="small")
    axes[-1].set_xlabel("time (UTC)")
    if title:
        fig.suptitle(title)
    fig.autofmt_xdate()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def record_release(
    home: str | Path,
    url: str,
    window: ReleaseWindow,
    ticks: Iterable[TickWeight] = (),
    *,
    proxy: str | None = None,
    result: str = "",
) -> ReleaseHistory:
    """Fetch, store and chart one release's history: the engine call behind the release's final materialization."""
    frame = fetch_history(url, window, ticks, proxy=proxy)
    parquet = store_history(home, window, frame)
    title = f"{window.key} revision {window.revision}" + (f": {result}" if result else "")
    chart = plot_release(frame, parquet.with_name("chart.png"), title)
    return ReleaseHistory(parquet, chart, len(frame), frame)


@dataclass(frozen=True)
class StoredRelease:
    """What ``record_release_isolated`` stored (the rows stay on disk), with who recorded it: the pid of the
    pre-imported recorder (None for a fresh child) and the recording process's CPU-seconds."""

    parquet: Path
    chart: Path
    rows: int
    recorder: int | None = None
    cpu_s: float | None = None


def record_release_isolated(
    home: str | Path,
    url: str,
    window: ReleaseWindow,
    ticks: Iterable[TickWeight] = (),
    *,
    proxy: str | None = None,
    result: str = "",
    timeout: float = 300.0,
    fresh_child: bool = False,
) -> StoredRelease:
    """``record_release`` in another process: the caller, a release worker that lives for the whole release,
    never loads numpy, pandas, pyarrow and matplotlib (about 150 MB), which only this last step needs. The
    recording is a fork of the home's pre-imported history recorder (``playground.history_recorder``, started
    by the first caller), so it costs its own work, not the imports; when no recorder can be started, a fresh
    child (``python -m playground.history``), as with ``fresh_child`` (benchmarks compare the two). Raises
    HistoryError with the recording's reason."""
    from playground import history_recorder

    request = {
        "home": str(home),
        "url": url,
        "window": {
            "namespace": window.namespace,
            "name": window.name,
            "revision": window.revision,
            "start": _utc(window.start).isoformat(),
            "end": _utc(window.end).isoformat(),
            "step": window.step,
            "rate_window": window.rate_window,
        },
        "ticks": [[_utc(t.time).isoformat(), t.primary, t.canary] for t in ticks],
        "proxy": proxy,
        "result": result,
        "timeout": timeout,
    }
    try:
        out = (
            _record_in_fresh_child(request) if fresh_child else history_recorder.request(home, request, timeout=timeout)
        )
    except TimeoutError:
        raise _late(request) from None
    except history_recorder.RecorderUnavailable:
        out = _record_in_fresh_child(request)
    except ConnectionError as e:
        raise HistoryError(str(e)) from None
    if "error" in out:
        raise HistoryError(str(out["error"]))
    return StoredRelease(
        Path(out["parquet"]), Path(out["chart"]), int(out["rows"]), out.get("recorder"), out.get("cpu_s")
    )


def _late(request: Mapping[str, Any]) -> HistoryError:
    w = request["window"]
    return HistoryError(
        f"recording the history of {w['namespace']}/{w['name']} took more than {request['timeout']:.0f}s"
    )


def _record_in_fresh_child(request: Mapping[str, Any]) -> dict[str, Any]:
    """Run ``request`` in a fresh child (``python -m playground.history``): the recording when no history
    recorder can be started. Its answer, or ``{"error": ...}``; raises HistoryError past the request's timeout."""
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "playground.history"],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            timeout=request["timeout"],
        )
    except subprocess.TimeoutExpired:
        raise _late(request) from None
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        return {"error": lines[-1] if lines else f"history recorder exited with code {proc.returncode}"}
    return json.loads(proc.stdout)


def record_request(req: Mapping[str, Any]) -> dict[str, Any]:
    """Run one request of ``record_release_isolated`` (its JSON) in this process: the answer's ``parquet``,
    ``chart``, ``rows`` and ``cpu_s`` (this process's CPU-seconds so far). Raises HistoryError."""
    import resource

    w = req["window"]
    window = ReleaseWindow(
        w["namespace"],
        w["name"],
        w["revision"],
        datetime.fromisoformat(w["start"]),
        datetime.fromisoformat(w["end"]),
        step=w["step"],
        rate_window=w["rate_window"],
    )
    ticks = [TickWeight(datetime.fromisoformat(t), int(p), int(c)) for t, p, c in req["ticks"]]
    rel = record_release(req["home"], req["url"], window, ticks, proxy=req["proxy"], result=req["result"])
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {"parquet": str(rel.parquet), "chart": str(rel.chart), "rows": rel.rows, "cpu_s": ru.ru_utime + ru.ru_stime}


def _record_main() -> int:
    """The fresh child of ``record_release_isolated`` (no recorder): a JSON request on stdin, a JSON answer on
    stdout. It runs at a lower CPU priority (nice 10): its 2 CPU-seconds of imports and pandas/matplotlib at the
    end of a release must not delay the ticks of the releases still running beside it."""
    from playground.history_recorder import NICE
    from playground.local.procinfo import nice_at_least

    nice_at_least(NICE)
    try:
        answer = record_request(json.load(sys.stdin))
    except HistoryError as e:
        print(str(e), file=sys.stderr)
        return 2
    json.dump(answer, sys.stdout)
    return 0


# ----------------------------------------------------------------------------------- judge: live samples


def query_samples(
    canary: Canary,
    metric: CanaryMetric,
    templates: Mapping[tuple[str, str], MetricTemplate] | None,
    *,
    secrets: Mapping[Any, Mapping[str, Any]] | None = None,
    default_prometheus: str | None = None,
    proxy: str | None = None,
    address_resolver=None,
    now: datetime | None = None,
):
    """``Probe.samples`` live: the metric's query for the canary and for ``<target>-primary``, as range queries
    over the metric interval (default 1m) ending ``now``, at the judge's step. Never raises."""
    from playground import metrics
    from playground.observe import MetricSamples

    query = ""
    try:
        primary_canary = canary.model_copy(deep=True)
        primary_canary.spec.targetRef.name = f"{canary.spec.targetRef.name}-primary"
        rc = metrics.resolve_query(canary, metric, templates, secrets=secrets, default_prometheus=default_prometheus)
        rp = metrics.resolve_query(
            primary_canary, metric, templates, secrets=secrets, default_prometheus=default_prometheus
        )
        query = rc.query
        address = address_resolver(rc.address) if address_resolver else rc.address
        end = now or datetime.now(UTC)
        start = end - timedelta(seconds=parse_prometheus_duration(metric.interval or DEFAULT_RATE_WINDOW))
        step = metric.judge.step if metric.judge else "10s"
        with metrics.PrometheusProvider(
            address,
            credentials=rc.credentials,
            credentials_source=rc.credentials_source,
            insecure_skip_verify=rc.insecure_skip_verify,
            shown_address=rc.address,
            proxy=proxy,
        ) as prom:
            client = prom._client
            _, c = query_range(client, " ".join(rc.query.split()), start, end, step)
            _, p = query_range(client, " ".join(rp.query.split()), start, end, step)
        return MetricSamples(metric.name, tuple(float(v) for v in c), tuple(float(v) for v in p), query)
    except Exception as e:  # a failed query is a failed check, never a crash of the tick
        return MetricSamples(metric.name, query=query, error=f"metric {metric.name!r}: {e}")


# ------------------------------------------------------------------------------------ `playground history`

HISTORY_FIELDS = ["target", "revision", "strategy", "started", "duration_s", "result", "failed_checks", "worst_metric"]


def dagster_home(env: Mapping[str, str] | None = None) -> Path:
    """``$DAGSTER_HOME``, else ``$PLAYGROUND_HOME/dagster`` (what `playground up` uses)."""
    env = os.environ if env is None else env
    if env.get("DAGSTER_HOME"):
        return Path(env["DAGSTER_HOME"])
    return Path(env.get("PLAYGROUND_HOME", ".playground")).absolute() / "dagster"


def format_history(rows: list[dict[str, Any]], fmt: str) -> str:
    """Render release history rows as ``table``, ``csv`` or ``json`` (one JSON array)."""
    rows = [{k: r.get(k) for k in HISTORY_FIELDS} for r in rows]
    if fmt == "json":
        return json.dumps(rows, indent=1) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, HISTORY_FIELDS, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: "" if v is None else v for k, v in r.items()})
        return buf.getvalue()
    cells = [[_cell(r[k]) for k in HISTORY_FIELDS] for r in rows]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(HISTORY_FIELDS)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(HISTORY_FIELDS, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    if not rows:
        lines.append("(no finished releases recorded)")
    return "\n".join(lines) + "\n"


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:g}" if math.isfinite(v) else str(v)
    return str(v)


if __name__ == "__main__":
    sys.exit(_record_main())
