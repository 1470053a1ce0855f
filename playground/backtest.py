"""`playground backtest`: replay the analysis of one Canary over a recorded trace, without any cluster.

The replay engine (``replay``) feeds ``playground.analysis.tick`` one ``TraceRow`` per tick through a
``TraceProbe`` and yields the lines the command prints: one dict per tick with exactly the keys ``tick, phase,
canaryWeight, routes, failedChecks, iterations`` (in that order), then ``{"result": <final phase>, "ticks": N}``.
It stops at Succeeded or Failed, or when the rows run out. Rows come from a CSV file (``load_trace``) or, later,
from Prometheus history; both produce ``TraceRow`` objects.

The replay starts from a canary that was initialized (primary ready, phase Initialized) and whose target got a
new revision just before row 0, so row 0 is the tick that detects it (Progressing, weight 0, canary scaled up).
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import ValidationError

from playground.analysis import CanaryState, analysis_interval, tick
from playground.models import Canary, CanaryMetric, CanaryWebhook, Phase, parse_duration
from playground.observe import MetricValue, Observation, Readiness, WebhookAnswer

DEFAULT_REVISION = "1"
DEFAULT_WEBHOOK_STATUS = 200
WEBHOOK_PREFIX = "webhook:"
BOOL_COLUMNS = ("canary_ready", "primary_ready", "canary_deadline_exceeded", "primary_deadline_exceeded")
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})
_END_PHASES = frozenset({Phase.Succeeded, Phase.Failed})
_EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)

TRACE_HELP = """\
TRACE.csv has a header and one row per analysis tick; row 0 is the first tick after a new revision was applied.
Columns, all optional:
  <metric name>              a metric of analysis.metrics: a number; empty or NaN = no values
  webhook:<name>             HTTP status that webhook answers on that tick (default 200; success iff <= 202;
                             a rollback webhook answering success rolls back: give it a column, e.g. 404)
  canary_ready, primary_ready                       true/false (default true)
  canary_deadline_exceeded, primary_deadline_exceeded  true/false (default false; true means not ready)
  revision                   a change from the previous row = a newer revision applied before this tick
                             (empty = unchanged)
Output: one JSON object per tick, then {"result": "<final phase>", "ticks": N}; the replay stops at Succeeded or
Failed, or at the end of the trace. Exit status: 0 after a replay (whatever its result), 2 on invalid input."""


class InputError(Exception):
    """Invalid backtest input; the message names the file and the row, column or field."""


# ------------------------------------------------------------------------------------------------ trace


@dataclass(frozen=True, slots=True)
class TraceRow:
    """What one tick observes: revision, readiness, metric values and webhook statuses.

    A metric missing from ``metrics`` has no values; a webhook missing from ``webhooks`` answers 200.
    """

    revision: str = DEFAULT_REVISION
    canary: Readiness = field(default_factory=Readiness)
    primary: Readiness = field(default_factory=Readiness)
    metrics: Mapping[str, float | None] = field(default_factory=dict)
    webhooks: Mapping[str, int] = field(default_factory=dict)


class TraceProbe:
    """A ``Probe`` answering from the current ``TraceRow`` (set ``row`` before each tick)."""

    __slots__ = ("row", "_answers")

    def __init__(self, row: TraceRow | None = None) -> None:
        self.row = row or TraceRow()
        self._answers: dict[tuple[str, int], WebhookAnswer] = {}  # answers are immutable: one per name and status

    def webhook(self, hook: CanaryWebhook, phase: Phase) -> WebhookAnswer:
        key = (hook.name, self.row.webhooks.get(hook.name, DEFAULT_WEBHOOK_STATUS))
        answer = self._answers.get(key)
        if answer is None:
            answer = self._answers[key] = WebhookAnswer(*key)
        return answer

    def metric(self, metric: CanaryMetric) -> MetricValue:
        return MetricValue(metric.name, self.row.metrics.get(metric.name))


def replay(canary: Canary, rows: Iterable[TraceRow]) -> Iterator[dict]:
    """Run the analysis of ``canary`` over ``rows`` (one per tick); yield the backtest output lines.

    Tick times start at 2000-01-01T00:00:00Z and advance by the analysis interval (they only feed
    ``lastTransitionTime``, which the output does not show).
    """
    interval = parse_duration(analysis_interval(canary))
    probe = TraceProbe()
    state: CanaryState | None = None
    ticks = 0
    for i, row in enumerate(rows):
        if state is None:
            # initialized at the revision that preceded row 0, so row 0 sees a new one
            state = CanaryState.initialized(f"{row.revision}~previous")
        probe.row = row
        now = _tick_time(i * interval)
        state = tick(canary, state, Observation(row.revision, row.canary, row.primary, now), probe).state
        ticks += 1
        yield {
            "tick": i,
            "phase": state.phase.value,
            "canaryWeight": state.canaryWeight,
            "routes": [state.routes.primary, state.routes.canary],
            "failedChecks": state.failedChecks,
            "iterations": state.iterations,
        }
        if state.phase in _END_PHASES:
            break
    yield {"result": (state.phase if state else Phase.Initialized).value, "ticks": ticks}


@lru_cache(maxsize=4096)
def _tick_time(seconds: float) -> str:
    """RFC 3339 time of a tick ``seconds`` after the backtest epoch (the same for every replay: cached)."""
    return (_EPOCH + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def load_trace(path: Path, canary: Canary) -> tuple[list[TraceRow], list[str]]:
    """Parse TRACE.csv for ``canary``: the rows, and notes about metrics without a column.

    Raises InputError naming the file, row (0-based tick index, plus the line) and column on any invalid value,
    on unknown or duplicate columns, and on a file without rows.
    """
    try:
        with open(path, newline="", encoding="utf-8") as f:
            lines = list(csv.reader(f))
    except OSError as e:
        raise InputError(f"{path}: cannot read trace: {e.strerror or e}") from e
    except (csv.Error, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not a readable CSV file: {e}") from e
    if not lines or not any(c.strip() for c in lines[0]):
        raise InputError(f"{path}: empty trace: expected a header line, then one row per tick")
    header = [c.strip() for c in lines[0]]
    metrics = {m.name for m in canary.spec.analysis.metrics}
    hooks = {w.name for w in canary.spec.analysis.webhooks}
    seen: set[str] = set()
    for col in header:
        if col in seen:
            raise InputError(f"{path}: column {col!r} appears twice in the header")
        seen.add(col)
        if col in metrics or col in BOOL_COLUMNS or col == "revision":
            continue
        if col.startswith(WEBHOOK_PREFIX):
            if col[len(WEBHOOK_PREFIX):] not in hooks:
                raise InputError(
                    f"{path}: column {col!r}: the canary has no webhook named {col[len(WEBHOOK_PREFIX):]!r}"
                    f" (its webhooks: {', '.join(sorted(hooks)) or 'none'})"
                )
            continue
        raise InputError(
            f"{path}: unknown column {col!r}: expected a metric of analysis.metrics "
            f"({', '.join(sorted(metrics)) or 'none'}), webhook:<name>, {', '.join(BOOL_COLUMNS)} or revision"
        )
    notes = [
        f"note: {path} has no column for metric {m!r}: every check of it sees no values"
        for m in sorted(metrics - seen)
    ]

    rows: list[TraceRow] = []
    revision = DEFAULT_REVISION
    for line_no, cells in enumerate(lines[1:], start=2):
        if not cells or (len(cells) == 1 and not cells[0].strip()):
            continue  # blank line
        where = f"{path}: row {len(rows)} (line {line_no})"
        if len(cells) != len(header):
            raise InputError(f"{where} has {len(cells)} fields, the header has {len(header)}")
        values = {col: cell.strip() for col, cell in zip(header, cells)}
        flags = {c: _parse_bool(values.get(c, ""), c == "canary_ready" or c == "primary_ready", where, c)
                 for c in BOOL_COLUMNS}
        revision = values.get("revision") or revision
        rows.append(
            TraceRow(
                revision=revision,
                canary=Readiness(flags["canary_ready"], flags["canary_deadline_exceeded"]),
                primary=Readiness(flags["primary_ready"], flags["primary_deadline_exceeded"]),
                metrics={c: _parse_metric(values[c], where, c) for c in header if c in metrics},
                webhooks={
                    c[len(WEBHOOK_PREFIX):]: _parse_status(values[c], where, c)
                    for c in header
                    if c.startswith(WEBHOOK_PREFIX)
                },
            )
        )
    if not rows:
        raise InputError(f"{path}: the trace has a header but no rows: add one row per analysis tick")
    return rows, notes


def _parse_bool(text: str, default: bool, where: str, col: str) -> bool:
    if not text:
        return default
    low = text.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise InputError(f"{where}, column {col!r}: {text!r} is not true or false")


def _parse_metric(text: str, where: str, col: str) -> float | None:
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise InputError(
            f"{where}, column {col!r}: {text!r} is not a number (leave it empty or write NaN for no values)"
        ) from None
    return None if value != value else value


def _parse_status(text: str, where: str, col: str) -> int:
    if not text:
        return DEFAULT_WEBHOOK_STATUS
    try:
        status = int(text)
    except ValueError:
        status = 0
    if not 100 <= status <= 599:
        raise InputError(f"{where}, column {col!r}: {text!r} is not an HTTP status (100..599)")
    return status


# ----------------------------------------------------------------------------------------------- canary


def load_canary(path: Path) -> Canary:
    """The first Canary document of a YAML file, validated. Raises InputError naming the file and field."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(f"{path}: cannot read canary: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not a UTF-8 text file: {e}") from e
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as e:
        raise InputError(f"{path}: invalid YAML: {e}") from e
    for index, doc in enumerate(docs):
        if isinstance(doc, dict) and doc.get("kind") == "Canary":
            try:
                canary = Canary.model_validate(doc)
            except ValidationError as e:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in err['loc']) or '(document)'}: {err['msg']}" for err in e.errors()
                )
                raise InputError(f"{path}: document {index + 1}: invalid Canary: {problems}") from None
            try:
                parse_duration(analysis_interval(canary))
            except ValueError as e:
                raise InputError(f"{path}: spec.analysis.interval: {e}") from None
            return canary
    raise InputError(f"{path}: no document with kind: Canary found")


# ------------------------------------------------------------------------------------------------- CLI


def _parse_time(text: str, flag: str) -> datetime:
    try:
        return datetime.fromtimestamp(float(text), timezone.utc)
    except ValueError:
        pass
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise InputError(f"{flag} {text!r}: use an RFC 3339 time (2024-05-01T12:00:00Z) or a Unix timestamp") from None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def prometheus_rows(canary: Canary, url: str, start: datetime, end: datetime) -> Iterator[TraceRow]:
    """Rows from Prometheus history between ``start`` and ``end`` (one per analysis interval)."""
    raise NotImplementedError(
        "replaying Prometheus history (--prometheus) is not implemented yet: record the metrics into a TRACE.csv "
        "and run `playground backtest CANARY.yaml TRACE.csv`"
    )


def run(args: argparse.Namespace) -> int:
    try:
        if (args.trace is None) == (args.prometheus is None):
            raise InputError("give either TRACE.csv or --prometheus URL --from T --to T (exactly one of them)")
        if args.prometheus is None and (args.start or args.end):
            raise InputError("--from and --to only apply with --prometheus")
        canary = load_canary(Path(args.canary))
        if args.prometheus is not None:
            if not (args.start and args.end):
                raise InputError("--prometheus needs both --from T and --to T")
            start, end = _parse_time(args.start, "--from"), _parse_time(args.end, "--to")
            if end <= start:
                raise InputError(f"--to {args.end!r} is not after --from {args.start!r}")
            rows: Iterable[TraceRow] = prometheus_rows(canary, args.prometheus, start, end)
        else:
            rows, notes = load_trace(Path(args.trace), canary)
            for note in notes:
                print(note, file=sys.stderr)
        out = sys.stdout
        for line in replay(canary, rows):
            out.write(json.dumps(line) + "\n")
    except InputError as e:
        print(f"playground backtest: {e}", file=sys.stderr)
        return 2
    except NotImplementedError as e:
        print(f"playground backtest: {e}", file=sys.stderr)
        return 1
    return 0


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "backtest",
        help="replay a canary analysis over a recorded trace (no cluster needed)",
        description="Replay the analysis of one Canary (flagger.app/v1beta1 YAML; the first Canary of the file)\n"
        "tick by tick over a recorded trace, without any cluster, and print one JSON line per tick with the\n"
        "phase, canary weight, mesh routes [primary, canary], failed checks and iterations, then the result.\n"
        "The replay starts from an initialized canary whose target has just got a new revision.",
        epilog=TRACE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("canary", metavar="CANARY.yaml", help="file holding the Canary manifest")
    p.add_argument("trace", metavar="TRACE.csv", nargs="?", help="recorded trace, one row per tick (see below)")
    p.add_argument("--prometheus", metavar="URL", help="replay real history from this Prometheus instead of a CSV")
    p.add_argument("--from", dest="start", metavar="T", help="start of the history (RFC 3339 or Unix time)")
    p.add_argument("--to", dest="end", metavar="T", help="end of the history (RFC 3339 or Unix time)")
    p.set_defaults(func=run)
