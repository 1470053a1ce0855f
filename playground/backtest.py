"""`playground backtest`: replay the analysis of one Canary over a recorded trace, without any cluster.

The replay engine (``replay``) feeds ``playground.analysis.tick`` one ``TraceRow`` per tick through a
``TraceProbe`` and yields the lines the command prints: one dict per tick with exactly the keys ``tick, phase,
canaryWeight, routes, failedChecks, iterations`` (in that order), then ``{"result": <final phase>, "ticks": N}``.
It stops at Succeeded or Failed, or when the rows run out. Rows come from a CSV file (``load_trace``) or from
Prometheus history (``PrometheusHistory``: instant queries at each tick time); both produce ``TraceRow`` objects.
``--sweep`` replays the same history once per combination of setting values (``sweep``) and prints a table of
which settings would have rolled back which releases.

The replay starts from a canary that was initialized (primary ready, phase Initialized) and whose target got a
new revision just before row 0, so row 0 is the tick that detects it (Progressing, weight 0, canary scaled up).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from playground.analysis import CanaryState, advance, analysis_interval
from playground.durations import parse_duration
from playground.errors import PlaygroundError
from playground.frozen import fast_init
from playground.models import Canary, CanaryMetric, CanaryWebhook, MetricTemplate, Phase
from playground.observe import MetricSamples, MetricValue, Observation, Readiness, WebhookAnswer
from playground.textsafe import one_line

if TYPE_CHECKING:
    from playground.metrics import ResolvedQuery

DEFAULT_REVISION = "1"
DEFAULT_WEBHOOK_STATUS = 200
WEBHOOK_PREFIX = "webhook:"
BOOL_COLUMNS = ("canary_ready", "primary_ready", "canary_deadline_exceeded", "primary_deadline_exceeded")
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})
_END_PHASES = frozenset({Phase.Succeeded, Phase.Failed})

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
The trace is read row by row (any length, constant memory); a UTF-8 byte order mark is skipped; inf and 1e400
are refused. CANARY.yaml is checked as `playground validate` checks it (missing target Deployment, templates
and alert providers aside).
Output: one JSON object per tick, then {"result": "<final phase>", "ticks": N}; the replay stops at Succeeded or
Failed, or at the end of the trace. Exit status: 0 after a replay (whatever its result), 2 on invalid input (a
bad row ends the output early, without a result line), 141 when the reader closes the pipe."""


class InputError(PlaygroundError):
    """Invalid backtest input; each line of the message names the file and the row, column or field."""

    def __init__(self, *lines: str) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


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
    samples: Mapping[str, MetricSamples] = field(default_factory=dict)  # judged metrics only (extension)


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
        return _metric_value(metric.name, self.row.metrics.get(metric.name))

    def samples(self, metric: CanaryMetric) -> MetricSamples:
        return self.row.samples.get(metric.name) or MetricSamples(metric.name)


def replay(canary: Canary, rows: Iterable[TraceRow]) -> Iterator[dict]:
    """Run the analysis of ``canary`` over ``rows`` (one per tick); yield the backtest output lines.

    The ticks have no time (``Observation.now`` is None): it would only feed ``lastTransitionTime``, which the
    output does not show, and the analysis decides nothing by it.
    """
    ticks = 0
    state: CanaryState | None = None
    for ticks, state in _states(canary, rows):
        yield {
            "tick": ticks - 1,
            "phase": state.phase.value,
            "canaryWeight": state.canaryWeight,
            "routes": [state.routes.primary, state.routes.canary],
            "failedChecks": state.failedChecks,
            "iterations": state.iterations,
        }
    yield {"result": (state.phase if state else Phase.Initialized).value, "ticks": ticks}


def replay_jsonl(canary: Canary, rows: Iterable[TraceRow]) -> Iterator[str]:
    """``json.dumps(line) + "\\n"`` for every line of :func:`replay`, formatted straight from the states (the
    command's path: no dict per tick; the text between the tick and the iterations is formatted again only when
    the phase, weight, routes or failed checks change)."""
    ticks = 0
    state: CanaryState | None = None
    shown: tuple = ()
    middle = ""
    for ticks, state in _states(canary, rows):
        phase, weight, routes, failed = state.phase, state.canaryWeight, state.routes, state.failedChecks
        if shown != (phase, weight, routes, failed):
            shown = (phase, weight, routes, failed)
            middle = (
                f', "phase": "{phase.value}", "canaryWeight": {weight}, "routes": [{routes.primary}, '
                f'{routes.canary}], "failedChecks": {failed}, "iterations": '
            )
        yield f'{{"tick": {ticks - 1}{middle}{state.iterations}}}\n'
    yield json.dumps({"result": (state.phase if state else Phase.Initialized).value, "ticks": ticks}) + "\n"


def _states(canary: Canary, rows: Iterable[TraceRow]) -> Iterator[tuple[int, CanaryState]]:
    """(ticks so far, state after the tick) per row, up to Succeeded or Failed."""
    probe = TraceProbe()
    state: CanaryState | None = None
    obs: Observation | None = None
    for i, row in enumerate(rows):
        if state is None:
            # initialized at the revision that preceded row 0, so row 0 sees a new one
            state = CanaryState.initialized(f"{row.revision}~previous")
        if (
            obs is None
            or row.revision != obs.revision
            or row.canary is not obs.canary
            or row.primary is not obs.primary
        ):
            obs = _observation(row.revision, row.canary, row.primary)  # immutable: kept while the row repeats it
        probe.row = row
        state = advance(canary, state, obs, probe)
        yield i + 1, state
        if state.phase in _END_PHASES:
            break


# built per row (a TraceRow, a MetricValue per metric, an Observation when the row changes): no frozen __init__
_trace_row = fast_init(TraceRow)
_metric_value = fast_init(MetricValue)
_observation = fast_init(Observation)


class _BadCell(Exception):
    def __init__(self, col: str, message: str) -> None:
        self.col, self.message = col, message


def _read_error(path: object, e: Exception) -> InputError:
    """The error for a trace that cannot be read on (``csv.Error``, ``UnicodeDecodeError``, ``OSError``)."""
    if isinstance(e, OSError):
        return InputError(f"{path}: cannot read trace: {e.strerror or e}")
    return InputError(f"{path}: not a readable CSV file: {e}")


class Trace:
    """TRACE.csv for ``canary``, read row by row (a trace of millions of rows is never held in memory).

    Opening reads and checks the header (unknown or duplicate columns raise :class:`InputError`); ``notes`` are
    the metrics without a column. Iterating yields one ``TraceRow`` per data row and raises ``InputError``
    naming the file, row (0-based tick index, plus the line) and column at the first invalid value, or at the
    end when the file has no rows. A UTF-8 byte order mark (Excel's "CSV UTF-8") is skipped.
    """

    def __init__(self, path: Path, canary: Canary) -> None:
        self.path = path
        try:
            self._file = open(path, newline="", encoding="utf-8-sig")
        except OSError as e:
            raise InputError(f"{path}: cannot read trace: {e.strerror or e}") from e
        try:
            self._reader = csv.reader(self._file)
            header = self._next()
            if header is None or not any(c.strip() for c in header):
                raise InputError(f"{path}: empty trace: expected a header line, then one row per tick")
            self.header = [c.strip() for c in header]
            self.notes = self._check_header(canary)
        except BaseException:
            self._file.close()
            raise
        self._line = 1

    def _next(self) -> list[str] | None:
        try:
            return next(self._reader)
        except StopIteration:
            return None
        except (csv.Error, UnicodeDecodeError, OSError) as e:
            raise _read_error(self.path, e) from None

    def _check_header(self, canary: Canary) -> list[str]:
        path = self.path
        metrics = {m.name for m in canary.spec.analysis.metrics}
        hooks = {w.name for w in canary.spec.analysis.webhooks}
        seen: set[str] = set()
        for col in self.header:
            if col in seen:
                raise InputError(f"{path}: column {col!r} appears twice in the header")
            seen.add(col)
            if col in metrics or col in BOOL_COLUMNS or col == "revision":
                continue
            if col.startswith(WEBHOOK_PREFIX):
                if col[len(WEBHOOK_PREFIX) :] not in hooks:
                    raise InputError(
                        f"{path}: column {col!r}: the canary has no webhook named {col[len(WEBHOOK_PREFIX) :]!r}"
                        f" (its webhooks: {', '.join(sorted(hooks)) or 'none'})"
                    )
                continue
            raise InputError(
                f"{path}: unknown column {col!r}: expected a metric of analysis.metrics "
                f"({', '.join(sorted(metrics)) or 'none'}), webhook:<name>, {', '.join(BOOL_COLUMNS)} or revision"
            )
        self._metrics = [(i, c) for i, c in enumerate(self.header) if c in metrics]
        self._hooks = [
            (i, c, c[len(WEBHOOK_PREFIX) :]) for i, c in enumerate(self.header) if c.startswith(WEBHOOK_PREFIX)
        ]
        self._flags = [(i, c) for i, c in enumerate(self.header) if c in BOOL_COLUMNS]
        self._revision = self.header.index("revision") if "revision" in self.header else None
        return [
            f"note: {path} has no column for metric {m!r}: every check of it sees no values"
            for m in sorted(metrics - seen)
        ]

    def __iter__(self) -> Iterator[TraceRow]:
        width = len(self.header)
        metrics, rev_col = self._metrics, self._revision
        aux = [i for i, _, _ in self._hooks] + [i for i, _ in self._flags]  # webhook and readiness columns
        # rows repeat a handful of webhook/readiness combinations: each is parsed once (its parts are immutable)
        aux_cache: dict[tuple[str, ...], tuple[Readiness, Readiness, Mapping[str, int]]] = {}
        if len(aux) > 1:
            aux_key: Callable[[list[str]], tuple[str, ...]] = itemgetter(*aux)  # a tuple of those cells
        else:
            aux_key = (lambda cells: (cells[aux[0]],)) if aux else (lambda cells: ())
        make_row = _trace_row
        reader, path = self._reader, self.path
        revision = DEFAULT_REVISION
        n = 0
        try:
            while True:
                try:  # as self._next(), inline (once per row)
                    cells = next(reader, None)
                except (csv.Error, UnicodeDecodeError, OSError) as e:
                    raise _read_error(path, e) from None
                if cells is None:
                    break
                self._line += 1
                if len(cells) != width:
                    if not cells or (len(cells) == 1 and not cells[0].strip()):
                        continue  # blank line
                    raise InputError(
                        f"{self.path}: row {n} (line {self._line}) has {len(cells)} fields, the header has {width}"
                    )
                try:
                    values: dict[str, float | None] = {}
                    for i, c in metrics:
                        try:
                            v: float | None = float(cells[i])  # float() takes the surrounding blanks
                        except ValueError:
                            v = _parse_metric(cells[i].strip(), c)
                        else:
                            if v != v:
                                v = None
                            elif v in _INFINITE:
                                v = _parse_metric(cells[i].strip(), c)
                        values[c] = v
                    key = aux_key(cells)
                    parts = aux_cache.get(key)
                    if parts is None:
                        parts = self._aux(cells)
                        if len(aux_cache) < 4096:
                            aux_cache[key] = parts
                except _BadCell as e:
                    raise InputError(f"{self._where(n)}, column {e.col!r}: {e.message}") from None
                if rev_col is not None:
                    revision = cells[rev_col].strip() or revision
                n += 1
                yield make_row(revision, parts[0], parts[1], values, parts[2], _NO_SAMPLES)
            if n == 0:
                raise InputError(f"{self.path}: the trace has a header but no rows: add one row per analysis tick")
        finally:
            self.close()

    def _aux(self, cells: list[str]) -> tuple[Readiness, Readiness, Mapping[str, int]]:
        """Canary and primary readiness and webhook statuses of a row."""
        webhooks = {name: _parse_status(cells[i].strip(), c) for i, c, name in self._hooks}
        flag = {"canary_ready": True, "primary_ready": True}
        for i, c in self._flags:
            text = cells[i].strip()
            if text:
                flag[c] = _parse_bool(text, c)
        canary = _READINESS[flag["canary_ready"], flag.get("canary_deadline_exceeded", False)]
        primary = _READINESS[flag["primary_ready"], flag.get("primary_deadline_exceeded", False)]
        return canary, primary, webhooks

    def _where(self, row: int) -> str:
        return f"{self.path}: row {row} (line {self._line})"

    def close(self) -> None:
        self._file.close()


def load_trace(path: Path, canary: Canary) -> tuple[list[TraceRow], list[str]]:
    """Parse the whole TRACE.csv for ``canary``: the rows, and notes about metrics without a column (see
    :class:`Trace`, which the command uses to read a trace row by row)."""
    trace = Trace(path, canary)
    return list(trace), trace.notes


def _parse_bool(text: str, col: str) -> bool:
    low = text.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise _BadCell(col, f"{text!r} is not true or false")


def _parse_metric(text: str, col: str) -> float | None:
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise _BadCell(col, f"{text!r} is not a number (leave it empty or write NaN for no values)") from None
    if value != value:
        return None
    if value in _INFINITE:
        raise _BadCell(
            col,
            f"{text!r} is not a finite number (Prometheus values are finite; leave it empty or write NaN for no values)",
        )
    return value


_INFINITE = (float("inf"), float("-inf"))
_NO_SAMPLES: Mapping[str, MetricSamples] = MappingProxyType({})  # a CSV row has no samples: one shared, read-only
_READINESS = {(r, d): Readiness(r, d) for r in (True, False) for d in (True, False)}


def _parse_status(text: str, col: str) -> int:
    if not text:
        return DEFAULT_WEBHOOK_STATUS
    try:
        status = int(text) if len(text) <= 3 else 0
    except ValueError:
        status = 0
    if not 100 <= status <= 599:
        raise _BadCell(col, f"{text!r} is not an HTTP status (100..599)")
    return status


# ----------------------------------------------------------------------------------------------- canary

#: Findings about objects a standalone canary file does not hold (its target Deployment, MetricTemplates,
#: AlertProviders, HPA): the analysis replayed does not need them, so backtest does not refuse them.
_MISSING_REFERENCE = re.compile(r" not found$")


def canary_findings(path: Path) -> tuple[list[Canary], list[str]]:
    """The valid Canaries of a YAML file and the problems ``playground validate`` reports about the file
    (errors only, one line each), except missing references to objects the file does not hold."""
    from playground.manifests import load_tree, validate_set

    try:
        mset = load_tree(path)
    except FileNotFoundError:
        raise InputError(f"{path}: cannot read canary: No such file or directory") from None
    problems = [str(f) for f in validate_set(mset) if f.is_error and not _MISSING_REFERENCE.search(f.message)]
    return mset.canaries(), problems


def load_canary(path: Path) -> Canary:
    """The first Canary document of a YAML file, checked exactly as ``playground validate`` checks it (same
    loader with its limits, same rules). Raises InputError naming the file, line and field of every problem."""
    canaries, problems = canary_findings(Path(path))
    if problems:
        raise InputError(*problems)
    if not canaries:
        raise InputError(f"{path}: no document with kind: Canary found")
    canary = canaries[0]
    try:
        parse_duration(analysis_interval(canary))
    except ValueError as e:
        raise InputError(f"{path}: spec.analysis.interval: {e}") from None
    return canary


# ------------------------------------------------------------------------------------------------- CLI


def _parse_time(text: str, flag: str) -> datetime:
    try:
        return datetime.fromtimestamp(float(text), UTC)
    except ValueError:
        pass
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise InputError(f"{flag} {text!r}: use an RFC 3339 time (2024-05-01T12:00:00Z) or a Unix timestamp") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


class PrometheusHistory:
    """Rows from Prometheus history: one per analysis interval from ``start`` (row 0) up to ``end``, or one per
    time of ``times`` (e.g. the recorded tick times of a live release, ``TickRecord.time``) instead.

    Each row holds the value of every analysis metric from an instant query at the tick time (``time=`` of the
    tick), with the same PromQL as the live analysis (``metrics.resolve_query``, MetricTemplates from
    ``templates``) and the same result handling (last sample wins, empty/NaN = no values, ``request-duration``
    truncated to whole ms). Every query goes to ``url``: in-cluster provider addresses are not reachable from a
    backtest. Judged metrics also get their canary/primary samples over the metric interval. Webhooks are not in
    Prometheus: gates answer 200 and rollback webhooks 404 (no manual rollback), canary and primary are ready.
    Rows are queried lazily (a replay that ends early queries no more) and cached, so sweeps reuse them.
    A Prometheus that cannot be reached, or that rejects a query, is an ``InputError``.
    """

    def __init__(
        self,
        canary: Canary,
        url: str,
        start: datetime | None = None,
        end: datetime | None = None,
        templates: Mapping | None = None,
        *,
        times: Iterable[datetime] | None = None,
        timeout: float = 30.0,
    ) -> None:
        from playground.metrics import PrometheusProvider

        self.canary = canary
        self.url = url
        self.templates = templates or {}
        self.interval = parse_duration(analysis_interval(canary))
        if times is not None:
            if start is not None or end is not None:
                raise ValueError("give either start and end, or times")
            self.times = list(times)
            if not self.times or any(b < a for a, b in zip(self.times, self.times[1:])):
                raise ValueError("times must be a non-empty, non-decreasing sequence")
            start, end = self.times[0], self.times[-1]
        elif start is None or end is None:
            raise ValueError("give start and end, or times")
        else:
            self.times = []
            t = start
            while t <= end:
                self.times.append(t)
                t = t + timedelta(seconds=self.interval)
        self.start, self.end = start, end
        self._rows: list[TraceRow] = []
        self._prom = PrometheusProvider(url, timeout=timeout)
        self._queries: dict[str, ResolvedQuery | None] = {}
        self._webhooks = {w.name: 404 for w in canary.spec.analysis.webhooks if w.type.value == "rollback"}

    def _query_of(self, metric: CanaryMetric) -> ResolvedQuery | None:
        from playground.metrics import MetricError, resolve_query

        if metric.name not in self._queries:
            try:
                rq = resolve_query(self.canary, metric, self.templates, default_prometheus=self.url)
            except MetricError as e:
                if metric.templateRef is None and not metric.query and metric.name not in _BUILTIN:
                    self._queries[metric.name] = None  # never checked by the analysis either
                else:
                    raise InputError(f"{e} (MetricTemplates come from the canary file and --templates)") from None
            else:
                self._queries[metric.name] = rq
        return self._queries[metric.name]

    def _value(self, metric: CanaryMetric, at: datetime) -> float | None:

        import requests
        from prometheus_api_client import PrometheusApiClientException

        from playground.metrics import MetricError, _reason, _value_of

        rq = self._query_of(metric)
        if rq is None:
            return None
        query = rq.query
        try:
            result = self._prom._client.custom_query(" ".join(query.split()), params={"time": at.timestamp()})
            value = _value_of(result, self._prom.shown)
        except MetricError as e:
            raise InputError(f"metric {metric.name!r}: {e}") from None
        except requests.exceptions.ConnectionError as e:
            raise InputError(
                f"cannot reach Prometheus at {self.url} ({_reason(e)}): check --prometheus URL "
                f"and that Prometheus is running"
            ) from None
        except PrometheusApiClientException as e:
            raise InputError(
                f"metric {metric.name!r}: Prometheus at {self.url} rejected the query at "
                f"{at.isoformat()} ({str(e)[:300]}); query: {query}"
            ) from None
        except Exception as e:
            raise InputError(
                f"metric {metric.name!r}: query to Prometheus at {self.url} failed at "
                f"{at.isoformat()} ({type(e).__name__}: {str(e)[:300]}); query: {query}"
            ) from None
        return rq.finish(value)

    def row(self, i: int) -> TraceRow:
        while len(self._rows) <= i:
            at = self.times[len(self._rows)]
            metrics = {}
            samples = {}
            for m in self.canary.spec.analysis.metrics:
                metrics[m.name] = self._value(m, at)
                if m.judge is not None:
                    from playground.history import query_samples

                    samples[m.name] = query_samples(
                        self.canary,
                        m,
                        self.templates,
                        default_prometheus=self.url,
                        address_resolver=lambda _a: self.url,
                        now=at,
                    )
                    if samples[m.name].error:
                        raise InputError(samples[m.name].error)
            self._rows.append(TraceRow(metrics=metrics, webhooks=self._webhooks, samples=samples))
        return self._rows[i]

    def __iter__(self) -> Iterator[TraceRow]:
        for i in range(len(self.times)):
            yield self.row(i)

    def close(self) -> None:
        self._prom.close()


_BUILTIN = ("request-success-rate", "request-duration")


def prometheus_rows(
    canary: Canary, url: str, start: datetime, end: datetime, templates: Mapping | None = None
) -> PrometheusHistory:
    """Rows from Prometheus history between ``start`` and ``end`` (one per analysis interval)."""
    return PrometheusHistory(canary, url, start, end, templates)


# ------------------------------------------------------------------------------------------------ sweep

_METRIC_FIELDS = ("thresholdRange.min", "thresholdRange.max", "threshold")
_ANALYSIS_FIELDS = ("analysis.threshold", "analysis.stepWeight", "analysis.maxWeight", "analysis.iterations")


@dataclass(frozen=True)
class SweepAxis:
    """One ``--sweep`` option: a setting (``metric`` None for analysis settings) and its values."""

    metric: str | None
    field: str
    values: tuple[float, ...]

    def label(self, value: float) -> str:
        return f"{self.metric + ':' if self.metric else ''}{self.field}={value:g}"


def parse_sweep(text: str, canary: Canary) -> SweepAxis:
    """``[METRIC:]FIELD=V1,V2,...``; FIELD is thresholdRange.min|max or threshold (a metric's), or
    analysis.threshold|stepWeight|maxWeight|iterations. METRIC may be left out when one metric has the field."""
    spec, eq, values = text.partition("=")
    if not eq or not values.strip():
        raise InputError(
            f"--sweep {text!r}: use [METRIC:]FIELD=V1,V2,... e.g. request-duration:thresholdRange.max=300,400"
        )
    try:
        vals = tuple(float(v) for v in values.split(",") if v.strip())
    except ValueError:
        raise InputError(f"--sweep {text!r}: values must be numbers separated by commas") from None
    metric, colon, field_ = spec.strip().rpartition(":")
    if field_ in _ANALYSIS_FIELDS:
        if colon:
            raise InputError(f"--sweep {text!r}: {field_} is an analysis setting, not a metric's")
        return SweepAxis(None, field_, vals)
    if field_ not in _METRIC_FIELDS:
        raise InputError(
            f"--sweep {text!r}: unknown setting {field_!r}; use one of {', '.join(_METRIC_FIELDS + _ANALYSIS_FIELDS)}"
        )
    names = [m.name for m in canary.spec.analysis.metrics]
    if colon:
        if metric not in names:
            raise InputError(f"--sweep {text!r}: the canary has no metric {metric!r} (its metrics: {', '.join(names)})")
        return SweepAxis(metric, field_, vals)
    having = [
        m.name
        for m in canary.spec.analysis.metrics
        if (m.thresholdRange is not None and getattr(m.thresholdRange, field_.split(".")[-1]) is not None)
        or (field_ == "threshold" and m.threshold is not None)
    ]
    if len(having) != 1:
        raise InputError(
            f"--sweep {text!r}: say which metric, e.g. {names[0] if names else 'METRIC'}:{field_}=... "
            f"({len(having)} metrics set {field_})"
        )
    return SweepAxis(having[0], field_, vals)


def with_setting(canary: Canary, axis: SweepAxis, value: float) -> Canary:
    """A copy of ``canary`` with one setting changed."""
    data = canary.model_dump(mode="json", exclude_none=True, by_alias=True)
    analysis = data["spec"]["analysis"]
    if axis.metric is None:
        analysis[axis.field.split(".", 1)[1]] = int(value)
    else:
        for m in analysis.get("metrics", []):
            if m["name"] == axis.metric:
                if axis.field == "threshold":
                    m["threshold"] = value
                else:
                    m.setdefault("thresholdRange", {})[axis.field.split(".")[1]] = value
    return Canary.model_validate(data)


def sweep(canary: Canary, axes: list[SweepAxis], histories: Sequence[Iterable[TraceRow]]) -> list[dict]:
    """Replay every release history once per combination of sweep values: one dict per combination with
    ``setting`` and ``results`` (per release: result, ticks, rolled_back)."""
    import itertools

    out = []
    for combo in itertools.product(*[a.values for a in axes]):
        c = canary
        for axis, value in zip(axes, combo):
            c = with_setting(c, axis, value)
        results = []
        for rows in histories:
            lines = list(replay(c, rows))
            final = lines[-1]
            results.append(
                {
                    "result": final["result"],
                    "ticks": final["ticks"],
                    "rolled_back": final["result"] == Phase.Failed.value,
                }
            )
        out.append({"setting": ", ".join(a.label(v) for a, v in zip(axes, combo)), "results": results})
    return out


def format_sweep(rows: list[dict], releases: list[str]) -> str:
    """The sweep as a text table: one line per setting, one column per release."""

    def cell(r: dict) -> str:
        if r["rolled_back"]:
            return f"ROLLED BACK (tick {r['ticks'] - 1})"
        return {"Succeeded": "promoted"}.get(r["result"], r["result"]) + f" ({r['ticks']} ticks)"

    header = ["setting"] + releases + ["rolled back"]
    table = [
        [row["setting"]]
        + [cell(r) for r in row["results"]]
        + [f"{sum(r['rolled_back'] for r in row['results'])}/{len(row['results'])}"]
        for row in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *table)]
    return (
        "\n".join("  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip() for line in [header] + table) + "\n"
    )


def load_templates(paths: list[Path]) -> dict[tuple[str, str], MetricTemplate]:
    """MetricTemplates from YAML files (or every *.yaml/*.yml under directories), keyed by (namespace, name)."""
    from playground.manifests import load_tree

    out = {}
    for p in paths:
        try:
            mset = load_tree(p)
        except FileNotFoundError:
            raise InputError(f"{p}: cannot read MetricTemplates: No such file or directory") from None
        errors = [str(f) for f in mset.problems if f.is_error]
        if errors:
            raise InputError(*errors)
        for o in mset.of_kind("MetricTemplate"):
            if isinstance(o.model, MetricTemplate):
                out[(o.namespace or "default", o.name)] = o.model
    return out


def run(args: argparse.Namespace) -> int:
    histories: list[PrometheusHistory] = []
    try:
        starts, ends = list(args.start or []), list(args.end or [])
        if (args.trace is None) == (args.prometheus is None):
            raise InputError("give either TRACE.csv or --prometheus URL --from T --to T (exactly one of them)")
        if args.prometheus is None and (starts or ends or args.sweep):
            raise InputError("--from, --to and --sweep only apply with --prometheus")
        canary = load_canary(Path(args.canary))
        out = sys.stdout
        if args.prometheus is not None:
            if not starts or len(starts) != len(ends):
                raise InputError("--prometheus needs --from T and --to T (one pair per release window)")
            windows = []
            for a, b in zip(starts, ends):
                start, end = _parse_time(a, "--from"), _parse_time(b, "--to")
                if end <= start:
                    raise InputError(f"--to {b!r} is not after --from {a!r}")
                windows.append((start, end))
            templates = load_templates([Path(args.canary)] + [Path(t) for t in (args.templates or [])])
            histories = [PrometheusHistory(canary, args.prometheus, s, e, templates) for s, e in windows]
            if args.sweep:
                axes = [parse_sweep(text, canary) for text in args.sweep]
                rows = sweep(canary, axes, histories)
                labels = [f"release {i + 1} ({s.strftime('%Y-%m-%dT%H:%M:%SZ')})" for i, (s, _) in enumerate(windows)]
                out.write(format_sweep(rows, labels))
                return 0
            for history in histories:
                for text in replay_jsonl(canary, history):
                    out.write(text)
            return 0
        trace = Trace(Path(args.trace), canary)
        for note in trace.notes:
            print(one_line(note), file=sys.stderr)
        import gc

        gc.freeze()  # what is loaded so far lives to the end: keep the collector from rescanning it every tick
        write = out.write
        batch: list[str] = []  # written 256 lines at a time (and before an error on a later row)
        try:
            for text in replay_jsonl(canary, trace):
                batch.append(text)
                if len(batch) >= 256:
                    write("".join(batch))
                    batch.clear()
        finally:
            write("".join(batch))
    except InputError as e:
        for text in e.lines or (str(e),):
            print(f"playground backtest: {one_line(text)}", file=sys.stderr)
        return 2
    finally:
        for h in histories:
            h.close()
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
    p.add_argument(
        "--from",
        dest="start",
        metavar="T",
        action="append",
        help="start of a release window (RFC 3339 or Unix time); repeat --from/--to for several releases",
    )
    p.add_argument("--to", dest="end", metavar="T", action="append", help="end of a release window")
    p.add_argument(
        "--templates",
        metavar="PATH",
        action="append",
        help="MetricTemplate YAML file or directory (with --prometheus; the canary file is read too)",
    )
    p.add_argument(
        "--sweep",
        metavar="[METRIC:]FIELD=V1,V2",
        action="append",
        help="with --prometheus: replay once per value (several --sweep: every combination) and print "
        "which settings would have rolled back which releases; FIELD: thresholdRange.min, "
        "thresholdRange.max, threshold, analysis.threshold, analysis.stepWeight, analysis.maxWeight, "
        "analysis.iterations",
    )
    p.set_defaults(func=run)
