"""Dagster wiring of the metric history and the delivery metrics (thin: the engine computes, this reads the
instance and records).

* ``attach_release_history`` (called by ``ReleaseRecorder.finish``): fetches the release window's Prometheus
  history (``playground.history.record_release``, in a child process so that the release worker never loads
  pandas/pyarrow/matplotlib), stores it as Parquet, draws the chart, and answers the metadata
  for the release's final materialization (promotion or rollback): parquet and chart paths, the chart inline, the
  release's start, strategy and worst metric.
* ``history/metrics`` asset: the Parquet dataset of every release (appended to by each release).
* ``history/delivery`` asset: deployment frequency, lead time, change failure rate and time to restore per target
  and week, from the promotions/rollbacks materializations (+ the commit times of their revisions).
* ``release_history``: the rows of `playground history` from an instance directory.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
from dagster import DagsterEventType

from playground import history  # light: numpy/pandas load inside its functions (and delivery's, imported below)
from playground.pipeline import Target

HISTORY_GROUP = "history"
METRIC_HISTORY = dg.AssetKey(["history", "metrics"])
DELIVERY = dg.AssetKey(["history", "delivery"])
OUTCOME_KINDS = ("promotions", "rollbacks")
DEFAULT_PROMETHEUS = "http://prometheus.istio-system:9090"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _home(env: Mapping[str, str] | None = None) -> Path:
    values = os.environ if env is None else env
    return Path(values.get("PLAYGROUND_HOME", ".playground")).absolute()


def _text(v: Any) -> Any:
    return getattr(v, "value", getattr(v, "text", v))


# ------------------------------------------------------------------------------------- per release (finish)


def _run_ticks(context, target) -> tuple[list[history.TickWeight], str | None]:
    """The tick weights of this run (from its release materializations) and its worst metric."""
    inst, run_id = context.instance, context.run_id
    key = dg.AssetKey(["releases", target.namespace, target.name])
    ticks = []
    for entry in inst.all_logs(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION):
        mat = entry.asset_materialization
        if mat is None or mat.asset_key != key:
            continue
        routes = str(_text(mat.metadata.get("routes", "100/0"))).split()[0]
        primary, _, canary = routes.partition("/")
        ticks.append(history.TickWeight(datetime.fromtimestamp(entry.timestamp, UTC), int(primary), int(canary)))
    failures: dict[str, list[Any]] = {}
    for entry in inst.all_logs(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION):
        ev = entry.dagster_event.event_specific_data
        if not ev.passed:
            failures.setdefault(ev.check_name, []).append(_text(ev.metadata.get("value")))
    worst = None
    if failures:
        name, values = max(failures.items(), key=lambda kv: len(kv[1]))
        worst = f"{name} ({len(values)} failed, last {values[-1]})"
    return ticks, worst


def attach_release_history(context, target, rec, outcome: dict) -> dict:
    """Metadata for the release's final materialization: history Parquet + chart (never raises)."""
    meta: dict[str, Any] = {"strategy": target.strategy}
    end = datetime.now(UTC)
    start = end - timedelta(seconds=float(outcome.get("duration_s") or 0))
    try:
        ticks, worst = _run_ticks(context, target)
        if ticks:
            start = min(start, ticks[0].time)
        meta["started"] = start.strftime("%Y-%m-%dT%H:%M:%SZ")
        meta["worst_metric"] = worst or "-"
        rt = context.resources.playground.runtime()
        canary = rt.controller(log=lambda _l: None).canary(target.key, supported=False)
        url = canary.spec.metricsServer or DEFAULT_PROMETHEUS
        interval = canary.spec.analysis.interval or "60s"
        window = history.ReleaseWindow(
            target.namespace,
            target.name,
            rec.revision,
            start - timedelta(minutes=1),
            end,
            step=_step(end - start),
            rate_window=_rate_window(interval),
        )
        # in a child process: the release worker stays small (no pandas, pyarrow, matplotlib)
        rel = history.record_release_isolated(
            rt.home, url, window, ticks, proxy=rt.http_proxy(), result=outcome["phase"]
        )
        png = rel.chart.read_bytes()
        meta.update(
            {
                "history": dg.MetadataValue.path(str(rel.parquet)),
                "history_rows": rel.rows,
                "chart": dg.MetadataValue.path(str(rel.chart)),
                "chart_preview": dg.MetadataValue.md(
                    f"![release chart](data:image/png;base64,{base64.b64encode(png).decode()})"
                ),
            }
        )
    except Exception as e:  # history is a report: a release must never fail because of it
        context.log.warning(f"{target.key}: metric history not recorded: {e}")
        meta["history"] = f"not recorded: {e}"[:500]
    return meta


def _step(duration: timedelta) -> str:
    """A range-query step giving at most about 600 points per series over the release."""
    return f"{max(1, int(duration.total_seconds() // 600) or 1)}s"


def _rate_window(interval: str) -> str:
    from playground.durations import parse_duration

    try:
        return f"{max(10, int(parse_duration(interval)))}s"
    except ValueError:
        return history.DEFAULT_RATE_WINDOW


# ------------------------------------------------------------------------------------------ reading lineage


def outcome_records(instance: dg.DagsterInstance, target: str | None = None) -> list[dict]:
    """Every promotion/rollback materialization as a dict (metadata + time), oldest first."""
    rows: list[dict[str, Any]] = []
    for key in instance.get_asset_keys():
        path = key.path
        if len(path) != 3 or path[0] not in OUTCOME_KINDS:
            continue
        if target and f"{path[1]}/{path[2]}" != target:
            continue
        cursor = None
        while True:
            res = instance.fetch_materializations(key, limit=1000, cursor=cursor, ascending=True)
            for r in res.records:
                mat = r.asset_materialization
                if mat is None:
                    continue
                meta = {k: _text(v) for k, v in (mat.metadata or {}).items()}
                duration = float(meta.get("duration_s") or 0)
                rows.append(
                    {
                        "target": meta.get("target") or f"{path[1]}/{path[2]}",
                        "revision": meta.get("revision") or mat.partition,
                        "strategy": meta.get("strategy"),
                        "started": meta.get("started") or _iso(r.timestamp - duration),
                        "finished": _iso(r.timestamp),
                        "duration_s": duration,
                        "result": meta.get("phase") or ("Succeeded" if path[0] == "promotions" else "Failed"),
                        "failed_checks": meta.get("failed_checks"),
                        "worst_metric": meta.get("worst_metric"),
                        "_ts": r.timestamp,
                    }
                )
            if not res.has_more:
                break
            cursor = res.cursor
    rows.sort(key=lambda row: float(row["_ts"]))
    for row in rows:
        row.pop("_ts")
    return rows


def release_history(dagster_home: str | Path, target: str | None = None) -> list[dict]:
    """Rows of `playground history` from the instance in ``dagster_home``."""
    home = Path(dagster_home)
    instance = (
        dg.DagsterInstance.from_config(str(home))
        if (home / "dagster.yaml").exists()
        else dg.DagsterInstance.local_temp(str(home))
    )
    try:
        return outcome_records(instance, target)
    finally:
        instance.dispose()


def commit_times(instance: dg.DagsterInstance) -> dict[tuple[str, str], str]:
    """(target, revision) -> when the commit introducing it was synced (first workloads materialization with it;
    the gitops/commit materialization of the same sha, when earlier)."""
    synced: dict[str, float] = {}
    res = instance.fetch_materializations(dg.AssetKey(["gitops", "commit"]), limit=10_000, ascending=True)
    for r in res.records:
        if r.asset_materialization is None:
            continue
        sha = _text(r.asset_materialization.metadata.get("sha"))
        synced.setdefault(str(sha), r.timestamp)
    out: dict[tuple[str, str], str] = {}
    for key in instance.get_asset_keys(prefix=["workloads"]):
        if len(key.path) != 3:
            continue
        res = instance.fetch_materializations(key, limit=10_000, ascending=True)
        for r in res.records:
            if r.asset_materialization is None:
                continue
            meta = r.asset_materialization.metadata
            rev = str(_text(meta.get("revision")))
            ts = min(r.timestamp, synced.get(str(_text(meta.get("sha"))), r.timestamp))
            out.setdefault((f"{key.path[1]}/{key.path[2]}", rev), _iso(ts))
    return out


# ------------------------------------------------------------------------------------------------- assets


def history_assets(targets: list[Target]) -> list[dg.AssetsDefinition]:
    """``history/metrics`` and ``history/delivery``, downstream of the assets they are computed from: the metric
    history of every target's releases (appended when a promotion or rollback is recorded) and the delivery
    metrics from the promotions and rollbacks (lead time from the workloads' and commits' sync times)."""
    metric_deps: list[dg.AssetKey] = []
    delivery_deps: list[dg.AssetKey] = [dg.AssetKey(["gitops", "commit"])]
    for t in targets:
        outcomes = [dg.AssetKey([kind, t.namespace, t.name]) for kind in OUTCOME_KINDS]
        metric_deps += [dg.AssetKey(["releases", t.namespace, t.name]), *outcomes]
        delivery_deps += [dg.AssetKey(["workloads", t.namespace, t.name]), *outcomes]

    @dg.asset(
        key=METRIC_HISTORY,
        deps=metric_deps,
        group_name=HISTORY_GROUP,
        kinds={"parquet", "pandas"},
        description="Prometheus range data of every release (success rate, p99 latency, request rate and traffic "
        "weight, canary vs primary) as a Parquet dataset partitioned by target and revision; each release "
        "appends its partition when it ends.",
    )
    def metric_history(context) -> dg.MaterializeResult:
        home = _home()
        frame = history.load_history(home)
        releases = frame[["target", "revision"]].drop_duplicates() if not frame.empty else frame
        return dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(str(history.history_root(home))),
                "rows": len(frame),
                "releases": len(releases),
                "targets": dg.MetadataValue.json(sorted(set(frame["target"])) if not frame.empty else []),
            }
        )

    @dg.asset(
        key=DELIVERY,
        deps=delivery_deps,
        group_name=HISTORY_GROUP,
        kinds={"pandas"},
        description="Delivery metrics per target and week from the release lineage: deployment frequency, lead "
        "time from commit to promotion, change failure rate (rollbacks / releases), time to restore.",
    )
    def delivery_metrics(context) -> dg.MaterializeResult:
        from playground import delivery  # pandas: loaded by this asset's runs only, never by a release worker

        inst = context.instance
        commits = commit_times(inst)
        rows = [{**r, "committed": commits.get((r["target"], str(r["revision"])))} for r in outcome_records(inst)]
        frame = delivery.releases_frame(rows)
        weekly = delivery.weekly(frame)
        out = _home() / "history" / "delivery"
        out.mkdir(parents=True, exist_ok=True)
        weekly.reset_index().to_csv(out / "weekly.csv", index=False)
        meta: dict[str, Any] = {
            "releases": len(frame),
            "weekly": dg.MetadataValue.md(delivery.to_markdown(weekly) if not weekly.empty else "no releases yet"),
            "summary": dg.MetadataValue.md(delivery.to_markdown(delivery.summary(frame)) if not weekly.empty else "-"),
            "table": dg.MetadataValue.path(str(out / "weekly.csv")),
        }
        if not weekly.empty:
            chart = delivery.plot(weekly, out / "delivery.png")
            meta["chart"] = dg.MetadataValue.path(str(chart))
            meta["chart_preview"] = dg.MetadataValue.md(
                f"![delivery](data:image/png;base64,{base64.b64encode(chart.read_bytes()).decode()})"
            )
        return dg.MaterializeResult(metadata=meta)

    return [metric_history, delivery_metrics]


# ------------------------------------------------------------------------------------ `playground history`


def run_history(args: argparse.Namespace) -> int:
    home = Path(args.dagster_home) if args.dagster_home else history.dagster_home()
    # errors are PlaygroundErrors: the CLI prints them as one line with their exit status
    if not home.exists():
        raise history.HistoryError(
            f"no Dagster instance at {home}: run releases first (`playground up`), or set DAGSTER_HOME / "
            "--dagster-home",
            exit_code=2,
        )
    try:
        rows = release_history(home, target=args.target)
    except Exception as e:  # Dagster's own errors (storage, schema): named with the instance
        raise history.HistoryError(f"cannot read the Dagster instance at {home}: {e}") from e
    sys.stdout.write(history.format_history(rows, args.format))
    return 0


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """`playground history`, registered through the ``playground.commands`` entry point (see playground/cli.py)."""
    p = subparsers.add_parser(
        "history",
        help="list finished releases (promotions and rollbacks) from the Dagster instance",
        description="Print the release history recorded by canary_release runs: target, revision, strategy, "
        "start time, duration, result (Succeeded = promoted, Failed = rolled back), failed checks and the worst "
        "metric (the one that failed most often). Reads $DAGSTER_HOME, else $PLAYGROUND_HOME/dagster.",
    )
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    p.add_argument("--target", metavar="NS/NAME", help="only this target")
    p.add_argument("--dagster-home", metavar="DIR", help="Dagster instance directory (default: see above)")
    p.set_defaults(func=run_history)
