"""Delivery metrics (DORA) from the release lineage: a pure pandas computation plus a chart.

Input: one row per finished release (``releases_frame``): ``target`` (ns/name), ``revision``, ``result``
(``Succeeded`` = promoted, ``Failed`` = rolled back), ``started`` and ``finished`` (UTC times of the release's
first tick and of its promotion/rollback) and ``committed`` (UTC time of the GitOps commit that introduced the
revision; may be missing). The Dagster asset (``assets.history``) builds it from the instance's ``promotions`` /
``rollbacks`` materializations and the ``gitops/commit`` + ``workloads`` ones.

Per target and per week (weeks start on Monday 00:00 UTC; a release belongs to the week in which it finished):

* ``releases``, ``promotions``, ``rollbacks``: counts;
* ``deployment_frequency``: promotions per day over the week (``promotions / 7``);
* ``change_failure_rate``: ``rollbacks / releases``;
* ``lead_time_median_s``: median of ``finished - committed`` over the week's promotions (commit to promotion;
  promotions without a commit time are left out; NaN when none);
* ``time_to_restore_median_s``: median of ``finished - started`` over the week's rollbacks: how long the bad
  revision was exposed before all traffic was back on the primary (NaN when no rollback).

``summary`` gives the same figures per target over the whole history, with ``deployment_frequency`` as
promotions per day over the span from the first week's Monday to the end of the last week.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

RELEASE_COLUMNS = ["target", "revision", "result", "started", "finished", "committed"]
METRIC_COLUMNS = [
    "releases",
    "promotions",
    "rollbacks",
    "deployment_frequency",
    "change_failure_rate",
    "lead_time_median_s",
    "time_to_restore_median_s",
]
PROMOTED, ROLLED_BACK = "Succeeded", "Failed"


def releases_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """A releases table from dicts with the ``RELEASE_COLUMNS`` keys (times: datetimes, ISO strings or epoch s)."""
    frame = pd.DataFrame(list(rows), columns=RELEASE_COLUMNS)
    for col in ("started", "finished", "committed"):
        frame[col] = _times(frame[col]).astype("datetime64[ns, UTC]")
    frame["target"] = frame["target"].astype(str)
    frame["result"] = frame["result"].astype(str)
    return frame


def _times(col: pd.Series) -> pd.Series:
    if col.dtype.kind in "if":
        return pd.to_datetime(col, unit="s", utc=True)
    return pd.to_datetime(col, utc=True, format="mixed")


def _prepare(releases: pd.DataFrame) -> pd.DataFrame:
    df = releases[releases["result"].isin([PROMOTED, ROLLED_BACK])]
    finished = df["finished"].astype("datetime64[ns, UTC]")
    week = finished.dt.floor("D") - pd.to_timedelta(finished.dt.day_of_week, unit="D")
    promoted = df["result"].to_numpy() == PROMOTED
    lead = (df["finished"] - df["committed"]).dt.total_seconds().to_numpy()
    restore = (df["finished"] - df["started"]).dt.total_seconds().to_numpy()
    return pd.DataFrame(
        {
            "target": df["target"],
            "week": week,
            "promotion": promoted.astype(np.int64),
            "rollback": (~promoted).astype(np.int64),
            "lead_time_s": np.where(promoted, lead, np.nan),
            "restore_s": np.where(promoted, np.nan, restore),
        }
    )


def _figures(g: pd.core.groupby.DataFrameGroupBy) -> pd.DataFrame:
    out = g.agg(
        releases=("promotion", "size"),
        promotions=("promotion", "sum"),
        rollbacks=("rollback", "sum"),
        lead_time_median_s=("lead_time_s", "median"),
        time_to_restore_median_s=("restore_s", "median"),
    )
    out["change_failure_rate"] = out["rollbacks"] / out["releases"]
    return out


def weekly(releases: pd.DataFrame) -> pd.DataFrame:
    """Delivery metrics per target and week (index: target, week)."""
    df = _prepare(releases)
    out = _figures(df.groupby(["target", "week"], sort=True))
    out["deployment_frequency"] = out["promotions"] / 7.0
    return out[METRIC_COLUMNS]


def summary(releases: pd.DataFrame) -> pd.DataFrame:
    """Delivery metrics per target over the whole history (index: target)."""
    df = _prepare(releases)
    out = _figures(df.groupby("target", sort=True))
    span = df.groupby("target")["week"].agg(["min", "max"])
    days = ((span["max"] - span["min"]).dt.days + 7).astype(float)
    out["deployment_frequency"] = out["promotions"] / days
    return out[METRIC_COLUMNS]


def plot(weekly_table: pd.DataFrame, path: str | Path, title: str = "Delivery metrics per week") -> Path:
    """PNG: promotions and rollbacks per week, and the change failure rate, per target."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 6), dpi=100)
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    for target, rows in weekly_table.groupby(level="target"):
        weeks = rows.index.get_level_values("week").tz_convert(None)
        ax1.plot(weeks, rows["promotions"], marker="o", label=f"{target} promotions")
        ax1.plot(weeks, rows["rollbacks"], marker="x", linestyle="--", label=f"{target} rollbacks")
        ax2.plot(weeks, rows["change_failure_rate"] * 100, marker="o", label=target)
    ax1.set_ylabel("releases per week")
    ax2.set_ylabel("change failure rate (%)")
    ax2.set_xlabel("week (starting Monday, UTC)")
    for ax in (ax1, ax2):
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best", fontsize="small")
    fig.suptitle(title)
    fig.autofmt_xdate()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def to_markdown(table: pd.DataFrame) -> str:
    """A markdown table (no tabulate dependency) for Dagster metadata."""
    t = table.reset_index()
    cols = list(t.columns)

    def fmt(v: object) -> str:
        if isinstance(v, float):
            return "-" if v != v else f"{v:.4g}"
        if isinstance(v, pd.Timestamp):
            return str(v.strftime("%Y-%m-%d"))
        return str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in t.itertuples(index=False)]
    return "\n".join(lines)
