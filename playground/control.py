"""Operator controls: `playground promote|abort|retry|pause|resume TARGET`, `playground sync` and `playground watch`.

    playground promote prod/backend [--full]   # pass the current gate, or skip the remaining steps and promote
    playground abort prod/backend              # roll back now (traffic to the primary, Failed, error alert)
    playground retry prod/backend              # analyse a Failed revision again, without a new commit
    playground pause prod/backend              # hold the analysis (no weight change, no checks counted)
    playground resume prod/backend
    playground sync                            # sync the cluster to the GitOps origin now
    playground watch prod/backend              # live view, one refresh per tick, until the release ends

A control is a request (``models.ControlRequest``: what, by whom, when) appended atomically to the Canary status.
The release process driving the canary (a Dagster ``canary_release`` run, `playground release`, or another
control) applies it at its next tick: the state machine gets it as an input (``Observation.requests``) and its
events and the release's asset materializations record it. When no process drives the canary (none ticked
within three intervals), the command drives it itself, in the foreground, as `playground release` would:
pause and resume take one tick; promote, abort and retry run until the release ends (Ctrl-C routes all traffic
to the primary).

Bad input (an unknown target, an action that makes no sense in the canary's phase) is one line naming the target,
its phase and what is possible, exit 1, and nothing is written. The Dagster job ``canary_control`` runs the same
``control`` function (jobs/).
"""

from __future__ import annotations

import argparse
import getpass
import socket
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from playground.backend_args import add_backend_args, runtime_from_args
from playground.commands import _err, interrupted, printers
from playground.errors import PlaygroundError

if TYPE_CHECKING:
    from playground.controller import TickRecord
    from playground.models import CanaryStatus, ControlAction, ControlRequest

__all__ = ["ControlError", "ControlOutcome", "add_cli", "control", "render_watch"]

EXIT_OK, EXIT_BAD, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130
ACTIONS = {
    "promote": "pass the current gate of TARGET's analysis (--full: skip the remaining steps and promote)",
    "abort": "roll TARGET back now: all traffic to the primary, Failed, an error alert",
    "retry": "analyse TARGET's Failed revision again, without a new commit",
    "pause": "hold TARGET's analysis (no weight change, no checks counted) until `playground resume`",
    "resume": "continue TARGET's paused analysis",
}


class ControlError(PlaygroundError, ValueError):
    """The control makes no sense (unknown target, wrong phase): one line naming the target, phase, what is
    possible. Nothing was written."""


def default_user() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # no login name (a container without passwd entry)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass
class ControlOutcome:
    """What a control did: the request, whether a tick applied it (``applied``; ``outcome`` is the tick's word
    for it), who applied it (``applied_by``: the driving process), and the canary status afterwards."""

    target: str
    request: ControlRequest
    applied: bool | None  # None: still queued (the driver did not tick before the wait ended)
    outcome: str
    applied_by: str
    status: CanaryStatus | None
    records: list[TickRecord] = field(default_factory=list)

    def line(self) -> str:
        phase = self.status.phase.value if self.status is not None else "?"
        weight = self.status.canaryWeight if self.status is not None else 0
        if self.applied is None:
            return f"{self.target}: {self.request.action.value} queued; {self.outcome}"
        verb = "applied" if self.applied else "ignored"
        return (
            f"{self.target}: {self.request.action.value} {verb} by {self.applied_by}: {self.outcome} "
            f"(now {phase}, canary weight {weight})"
        )


def _effective(status: CanaryStatus | None) -> tuple[Any, bool]:
    """(phase, paused) once the requests already queued are applied (pause/resume only: the others depend on
    the tick)."""
    from playground.models import ControlAction, Phase

    if status is None:
        return Phase.Initializing, False
    paused = status.paused
    for r in status.requests:
        if r.action is ControlAction.pause:
            paused = True
        elif r.action is ControlAction.resume:
            paused = False
    return status.phase, paused


def control(
    rt,
    target: str,
    action: ControlAction,
    *,
    by: str,
    log: Callable[[str], None] = lambda _line: None,
    on_tick: Callable[[TickRecord], None] | None = None,
    driver: str | None = None,
    wait: float | None = None,
    interval: float | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> ControlOutcome:
    """Queue ``action`` for ``target`` and see it applied: by the process driving the release (waiting up to
    ``wait`` seconds, default three of its intervals plus 15 s), or, when none drives it, by driving the release
    here (``driver`` names this process in the status; ``on_tick`` sees each tick). Raises ``ControlError`` for a
    control that makes no sense (nothing written), ``ControllerError``/``ClusterError`` for an unreachable
    cluster."""
    from playground import analysis
    from playground.controller import ControllerError, driver_alive
    from playground.models import ControlAction, ControlRequest

    if target.count("/") != 1 or not all(target.split("/")):
        raise ControlError(f"target {target!r} must be NAMESPACE/NAME, e.g. prod/backend")
    ctl = rt.controller(log=log, interval=interval)
    if driver:
        ctl.driver = driver
    try:
        canary = ctl.canary(target)
    except ControllerError as exc:
        raise ControlError(f"{target}: no such canary on the {rt.config.backend} backend ({exc})") from exc
    cluster = ctl.cluster
    status = cluster.get_canary_status(canary.namespace, canary.name)
    phase, paused = _effective(status)
    problem = analysis.control_problem(action, phase, paused)
    if problem is not None:
        raise ControlError(f"{target}: {problem}")
    request = ControlRequest(id=uuid.uuid4().hex[:12], action=action, by=by, at=_now_iso())
    status = ctl.request(target, request)
    if driver_alive(status, clock()):
        return _await(ctl, target, request, status, wait, clock, sleep)
    # Nobody drives the release: drive it here. Pause/resume are one tick; the others run the release to its end
    # (a paused release stops this foreground run: the pause is persisted, `resume` drives it on).
    records: list[TickRecord] = []

    def tick(rec: TickRecord) -> None:
        records.append(rec)
        if on_tick:
            on_tick(rec)

    if action in (ControlAction.pause, ControlAction.resume):
        rec = ctl.step(target)
        tick(rec)
    else:
        ctl.run(target, on_tick=tick, should_stop=lambda: bool(records and records[-1].state.paused))
    return _outcome_of(target, request, records, ctl.driver, cluster.get_canary_status(canary.namespace, canary.name))


def _outcome_of(target, request, records, driver, status) -> ControlOutcome:
    for rec in records:
        for i in rec.result.interventions:
            if i.request.id == request.id:
                return ControlOutcome(target, request, i.applied, i.outcome, driver, status, records)
    return ControlOutcome(target, request, None, "not applied by any tick", driver, status, records)


def _await(ctl, target, request, status, wait, clock, sleep) -> ControlOutcome:
    """Wait until the driving process consumed ``request``; its outcome is among the events it recorded."""
    driver = status.driver or "?"
    deadline = clock() + (wait if wait is not None else 3 * (status.tickInterval or 60.0) + 15.0)
    canary = ctl.canary(target)
    while True:
        status = ctl.cluster.get_canary_status(canary.namespace, canary.name)
        if status is None or all(r.id != request.id for r in status.requests):
            break
        if clock() >= deadline:
            return ControlOutcome(
                target, request, None, f"{driver} applies it at its next tick (`playground watch {target}`)",
                driver, status,
            )  # fmt: skip
        sleep(0.2)
    who = f" by {request.by}" if request.by else ""
    for ev in reversed(status.events if status else []):
        msg = ev.get("message", "")
        for prefix, applied in ((f"Operator {request.action.value}{who}: ", True), (f"Ignored {request.action.value}{who}", False)):  # fmt: skip
            if msg.startswith(prefix):
                return ControlOutcome(target, request, applied, msg[len(prefix) :].lstrip(": "), driver, status)
    return ControlOutcome(target, request, True, "applied", driver, status)


# ------------------------------------------------------------------------------------------------- CLI


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    for name, help_ in ACTIONS.items():
        p = subparsers.add_parser(name, help=help_, description=help_ + ". " + _DRIVE_NOTE)
        p.add_argument("target", metavar="TARGET", help="the Canary as NAMESPACE/NAME, e.g. prod/backend")
        if name == "promote":
            p.add_argument("--full", action="store_true", help="skip the remaining steps and promote now")
        p.add_argument(
            "--wait",
            metavar="SECONDS",
            type=float,
            default=None,
            help="how long to wait for the driving release to apply it (default: three of its intervals + 15 s)",
        )
        add_backend_args(p)
        p.set_defaults(func=cmd_control, action=name)

    p = subparsers.add_parser(
        "sync",
        help="sync the cluster to the GitOps origin now (instead of waiting for the sensor)",
        description="Fetch the GitOps origin, validate every manifest, apply them all in dependency order, and "
        "list the canary targets whose revision changed (a release is due). Under Dagster the git sensor then "
        "requests their canary_release runs; without it run `playground release TARGET`. Exit 0 synced, "
        "1 invalid manifests (nothing applied), 2 error.",
    )
    add_backend_args(p)
    p.set_defaults(func=cmd_sync)

    p = subparsers.add_parser(
        "watch",
        help="live view of TARGET's release, refreshed every tick, until it ends",
        description="Phase, a weight bar, iterations, failed checks, the last checks with canary and primary "
        "values, recent events; refreshed at every tick of the release; ends with the release (exit 0 "
        "Succeeded, 1 Failed).",
    )
    p.add_argument("target", metavar="TARGET", help="the Canary as NAMESPACE/NAME, e.g. prod/backend")
    p.add_argument("--once", action="store_true", help="print the view once and exit")
    p.add_argument("--timeout", metavar="SECONDS", type=float, default=None, help="stop watching after SECONDS")
    add_backend_args(p)
    p.set_defaults(func=cmd_watch)


_DRIVE_NOTE = (
    "The release driving TARGET (a Dagster run or `playground release`) applies it at its next tick; when none "
    "drives it, this command does, in the foreground, until the release ends (pause/resume: one tick). Exit 0 "
    "applied, 1 the action makes no sense now (nothing changed), 2 error."
)


def cmd_control(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    from playground.cluster.base import ClusterError
    from playground.controller import ControllerError
    from playground.models import ControlAction

    out = out or sys.stdout
    log, on_tick = printers(out)
    action = ControlAction.promote_full if args.action == "promote" and args.full else ControlAction(args.action)
    rt = runtime_from_args(args)  # bad options: BackendArgsError, one line and exit 2 from cli.main
    try:
        res = control(
            rt,
            args.target,
            action,
            by=default_user(),
            log=log,
            on_tick=on_tick,
            wait=args.wait,
        )
    except ControlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD
    except KeyboardInterrupt:
        return interrupted(args.target, lambda target: rt.controller(log=lambda _l: None).make_safe(target), out)
    except (ControllerError, ClusterError) as exc:
        _err(str(exc))
        return EXIT_ERROR
    finally:
        rt.close()
    print(res.line(), file=out, flush=True)
    return EXIT_OK


def cmd_sync(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    from playground import pipeline
    from playground.cluster.base import ClusterError
    from playground.gitops import GitError, SyncError

    out = out or sys.stdout
    rt = runtime_from_args(args)  # bad options: BackendArgsError, one line and exit 2 from cli.main
    try:
        outcome = pipeline.sync(rt, purpose="cli-sync")
    except SyncError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD
    except (GitError, ClusterError, ValueError) as exc:
        _err(str(exc))
        return EXIT_ERROR
    finally:
        rt.close()
    print(f"synced {outcome.sha[:12]} ({outcome.message.splitlines()[0] if outcome.message else ''}): "
          f"{outcome.plan.summary()}", file=out)  # fmt: skip
    for t in outcome.result.targets:
        if t.changed:
            print(
                f"{t.canary}: new revision {t.new_revision} (was {t.old_revision or 'none'}): release due "
                f"(the Dagster sensors request it; without Dagster: playground release {t.canary})",
                file=out,
            )
    return EXIT_OK


# ------------------------------------------------------------------------------------------------ watch

BAR = 40


def _bar(weight: int, width: int = BAR) -> str:
    filled = round(width * max(0, min(100, weight)) / 100)
    return "[" + "#" * filled + "." * (width - filled) + "]"


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


def render_watch(target: str, canary, status: CanaryStatus | None, primary: dict[str, Any], now: float) -> str:
    """The watch screen (plain text): pure, so it is tested without a terminal."""
    from playground import analysis
    from playground.controller import driver_alive

    lines = []
    if status is None:
        return f"{target}: no status yet (the canary was never synced or bootstrapped)"
    weight = status.canaryWeight
    flags = []
    if status.paused:
        flags.append("PAUSED")
    if canary.spec.suspend:
        flags.append("SUSPENDED (spec.suspend)")
    if status.requests:
        flags.append("pending: " + ", ".join(f"{r.action.value} by {r.by}" for r in status.requests))
    lines.append(f"{target}   {status.phase.value}   {'  '.join(flags)}".rstrip())
    driver = (
        f"driven by {status.driver}, a tick every {status.tickInterval:g}s"
        if driver_alive(status, now) and status.tickInterval
        else "no release process drives it"
    )
    lines.append(f"revision {status.lastAppliedSpec or '-'}   last tick {status.lastTickTime or '-'}   {driver}")
    strategy = analysis.strategy(canary)
    lines.append("")
    lines.append(
        f"weight      {_bar(weight)} {weight:3d}% canary / {100 - weight}% primary   (max {analysis.max_weight(canary)})"
    )
    total = canary.spec.analysis.iterations
    lines.append(
        f"iterations  {status.iterations}{f'/{total}' if total else ''} ({strategy})   failed checks "
        f"{status.failedChecks}/{analysis.analysis_threshold(canary)}"
    )
    lines.append("")
    at = status.lastChecks[0].get("at", "") if status.lastChecks else ""
    lines.append(f"last checks {at}".rstrip())
    if status.lastChecks:
        rows = [("METRIC", "CANARY", "PRIMARY", "RESULT")]
        for c in status.lastChecks:
            rows.append(
                (c["name"], _fmt(c.get("value")), _fmt(primary.get(c["name"])), "ok" if c["passed"] else "FAIL")
            )
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        for r in rows:
            lines.append("  " + "  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    else:
        lines.append("  (none yet)")
    lines.append("")
    lines.append("recent events")
    for ev in status.events[-8:]:
        lines.append(f"  {ev.get('at', '')[11:19]}  {ev.get('message', '')}")
    if not status.events:
        lines.append("  (none)")
    return "\n".join(lines)


def _primary_values(ctl, canary, status: CanaryStatus) -> dict[str, Any]:
    """The values of the last checks' metrics for the primary (the same queries with the primary as target)."""
    from playground import metrics, routing

    if not status.lastChecks:
        return {}
    primary = canary.model_copy(deep=True)
    primary.spec.targetRef.name = routing.primary_name(canary.spec.targetRef.name)
    by_name = {m.name: m for m in canary.spec.analysis.metrics}
    out: dict[str, Any] = {}
    templates = None
    for c in status.lastChecks:
        metric = by_name.get(c["name"])
        if metric is None or metric.judge is not None:
            continue
        templates = templates if templates is not None else ctl.templates()
        mv = metrics.query_metric(
            primary,
            metric,
            templates,
            secrets=ctl.settings.secrets,
            default_prometheus=ctl.settings.default_prometheus,
            proxy=ctl.settings.http_proxy,
            timeout=3.0,
        )
        out[c["name"]] = mv.value if mv.error is None else None
    return out


def cmd_watch(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    from playground.cluster.base import ClusterError
    from playground.controller import ControllerError
    from playground.models import Phase

    out = out or sys.stdout
    rt = runtime_from_args(args)  # bad options: BackendArgsError, one line and exit 2 from cli.main
    tty = out.isatty()
    started = time.monotonic()
    try:
        ctl = rt.controller(log=lambda _l: None)
        try:
            canary = ctl.canary(args.target)
        except ControllerError as exc:
            print(f"error: {args.target}: no such canary on the {rt.config.backend} backend ({exc})", file=sys.stderr)
            return EXIT_BAD
        seen_active = False
        last_key = None
        while True:
            status = ctl.cluster.get_canary_status(canary.namespace, canary.name)
            key = None if status is None else status.model_dump_json()
            if key != last_key:
                last_key = key
                canary = ctl.canary(args.target)  # spec changes (suspend) show too
                primary = _primary_values(ctl, canary, status) if status is not None else {}
                screen = render_watch(args.target, canary, status, primary, time.time())
                print(("\x1b[H\x1b[2J" if tty else "\n") + screen, file=out, flush=True)
            if args.once:
                return EXIT_OK
            if status is not None:
                if status.phase not in (Phase.Succeeded, Phase.Failed, Phase.Initialized) or status.requests:
                    seen_active = True
                elif seen_active or not status.paused:
                    ended = status.phase.value
                    print(f"\n{args.target}: release ended {ended}", file=out, flush=True)
                    return EXIT_BAD if status.phase is Phase.Failed else EXIT_OK
            if args.timeout is not None and time.monotonic() - started > args.timeout:
                return EXIT_OK
            time.sleep(0.5)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except (ControllerError, ClusterError) as exc:
        _err(str(exc))
        return EXIT_ERROR
    finally:
        rt.close()
