"""`playground release` and `playground canaries`: releases and their state on any backend, without Dagster.

    playground release prod/backend --backend kubernetes [--image IMG] [--interval 2s] [--max-ticks N]
    playground canaries [-n NAMESPACE] --backend kubernetes

``release`` runs the same control loop as the Dagster ``canary_release`` job (``Runtime.controller().run``) in
the foreground: one progress line per tick, then a summary. ``--image`` first commits the image to the target's
Deployment in the GitOps repository and syncs (as the job's ``image`` config does). Exit status: 0 when the
release ends Succeeded (or there was nothing to release: Initialized), 1 when it ends Failed (rolled back),
2 when it cannot run (bad target, unreachable cluster, missing permissions: the message says what to do),
3 when ``--max-ticks`` stopped it before it finished (the next run resumes from the persisted status),
130 when interrupted (all traffic is routed back to the primary first).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from playground.backend_args import add_backend_args, runtime_from_args

__all__ = ["add_cli", "cmd_canaries", "cmd_release", "format_tick", "interrupted", "printers"]

EXIT_OK, EXIT_FAILED, EXIT_ERROR, EXIT_UNFINISHED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "release",
        help="run the canary release of one target in the foreground (no Dagster needed)",
        description="Drive the canary analysis of TARGET tick by tick until it is promoted or rolled back, "
        "printing one line per tick. Exit 0 Succeeded/Initialized, 1 Failed (rolled back), 2 error, "
        "3 stopped by --max-ticks, 130 interrupted (traffic routed back to the primary).",
    )
    p.add_argument("target", metavar="TARGET", help="the Canary as NAMESPACE/NAME, e.g. prod/backend")
    p.add_argument(
        "--image",
        metavar="IMG",
        default=None,
        help="first commit IMG as the target's image in the GitOps repository and sync it",
    )
    p.add_argument(
        "--interval",
        metavar="DURATION",
        default=None,
        help="analysis interval override, e.g. 2s (default: the Canary's analysis.interval, "
        "at least 10s on real clusters)",
    )
    p.add_argument("--max-ticks", metavar="N", type=int, default=None, help="stop after N ticks")
    add_backend_args(p)
    p.set_defaults(func=cmd_release)

    p = subparsers.add_parser(
        "canaries",
        help="list canaries with phase, weight, failed checks and last transition (any backend)",
    )
    p.add_argument("-n", "--namespace", default=None, help="only this namespace (default: all)")
    add_backend_args(p)
    p.set_defaults(func=cmd_canaries)


def _err(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)


def printers(out: TextIO) -> tuple[Callable[[str], None], Callable[[Any], None]]:
    """``(log, on_tick)`` of a release driven in the foreground (``release``, and the control commands when no
    process drives the release): each controller line, and each tick's :func:`format_tick` line, on ``out``."""

    def log(line: str) -> None:
        print(line, file=out, flush=True)

    def on_tick(rec: Any) -> None:
        log(format_tick(rec))

    return log, on_tick


def interrupted(target: str, make_safe: Callable[[str], None] | None, out: TextIO) -> int:
    """Ctrl-C in a release driven in the foreground: all traffic back to the primary (``make_safe``, None when
    nothing was routed yet), one line saying where the traffic is; a failure to route is reported, but the
    interrupt wins. Returns ``EXIT_INTERRUPTED``."""
    safe = False
    if make_safe is not None:
        try:
            make_safe(target)
            safe = True
        except Exception as exc:  # report, but the interrupt wins
            _err(f"{target}: could not route traffic back to the primary: {exc}")
    print(f"{target}: interrupted{', all traffic on the primary' if safe else ''}", file=out, flush=True)
    return EXIT_INTERRUPTED


def format_tick(rec) -> str:
    """One progress line for a ``playground.controller.TickRecord``."""
    st = rec.state.status
    routes = rec.state.routes
    line = (
        f"tick {rec.tick}: {st.phase.value} routes {routes.primary}/{routes.canary}"
        f"{' mirror' if routes.mirror else ''} weight {st.canaryWeight} iterations {st.iterations} "
        f"failedChecks {st.failedChecks}"
    )
    checks = ", ".join(
        f"{c.name}={'-' if c.value is None else round(c.value, 3)}{'' if c.passed else ' FAIL'}"
        for c in rec.result.checks
    )
    if checks:
        line += f" | {checks}"
    if rec.result.events:
        line += f" | {'; '.join(rec.result.events)}"
    return line


def cmd_release(
    args: argparse.Namespace, *, out: TextIO | None = None, clock: Callable[[], float] = time.monotonic
) -> int:
    from playground.cluster.base import ClusterError
    from playground.controller import ControllerError
    from playground.durations import parse_duration
    from playground.models import Phase

    out = out or sys.stdout
    target = args.target
    if target.count("/") != 1 or not all(target.split("/")):
        _err(f"target {target!r} must be NAMESPACE/NAME, e.g. prod/backend")
        return EXIT_ERROR
    try:
        interval = parse_duration(args.interval) if args.interval else None
    except ValueError as exc:
        _err(f"--interval: {exc}")
        return EXIT_ERROR
    if args.max_ticks is not None and args.max_ticks < 1:
        _err("--max-ticks must be at least 1")
        return EXIT_ERROR
    rt = runtime_from_args(args)  # bad options: BackendArgsError, one line and exit 2 from cli.main
    started = clock()
    log, print_tick = printers(out)
    ctl = None
    try:
        ctl = rt.controller(log=log, interval=interval)
        if args.image:
            from playground import pipeline
            from playground.images import set_workload_image

            ns, name = target.split("/")
            with ctl.claimed(target):  # a sensor's run for the commit follows this release, never drives it too
                sha = set_workload_image(rt.git(f"release-{ns}-{name}"), target, args.image)
                print(f"{target}: committed image {args.image} ({sha[:12]}); syncing", file=out, flush=True)
                outcome = pipeline.sync(rt, purpose=f"release-{ns}-{name}")
                print(f"synced {outcome.sha[:12]}: {outcome.plan.summary()}", file=out, flush=True)
        canary = ctl.canary(target)
        from playground import analysis

        print(
            f"{target}: {analysis.strategy(canary)} release on the {rt.config.backend} backend, interval "
            f"{ctl.interval(canary):g}s",
            file=out,
            flush=True,
        )
        ticks = 0

        def on_tick(rec) -> None:
            nonlocal ticks
            ticks += 1
            print_tick(rec)

        final = ctl.run(target, on_tick=on_tick, max_ticks=args.max_ticks)
    except KeyboardInterrupt:
        return interrupted(target, ctl.make_safe if ctl is not None else None, out)
    except (ControllerError, ClusterError, ValueError) as exc:
        _err(str(exc))
        return EXIT_ERROR
    finally:
        rt.close()
    st = final.state.status
    elapsed = clock() - started
    summary = (
        f"{target}: {st.phase.value} after {ticks} ticks ({elapsed:.1f}s, {st.failedChecks} failed checks, "
        f"revision {final.revision})"
    )
    settled = final.revision == st.lastAppliedSpec  # a held (paused, suspended) new revision is not released yet
    if st.phase in (Phase.Succeeded, Phase.Initialized) and settled:
        print(summary, file=out, flush=True)
        return EXIT_OK
    if st.phase == Phase.Failed and settled:
        print(summary + ": rolled back, all traffic on the primary", file=out, flush=True)
        return EXIT_FAILED
    print(summary + f": stopped by --max-ticks {args.max_ticks}; run again to resume", file=out, flush=True)
    return EXIT_UNFINISHED


def cmd_canaries(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    from playground.cluster.base import ClusterError

    out = out or sys.stdout
    rt = runtime_from_args(args)  # bad options: BackendArgsError, one line and exit 2 from cli.main
    try:
        cluster = rt.cluster()
        rows = []
        for obj in cluster.list("flagger.app/v1beta1", "Canary", args.namespace):
            meta = obj.get("metadata") or {}
            ns, name = meta.get("namespace") or "default", meta.get("name", "")
            status = cluster.get_canary_status(ns, name)
            if status is None:
                rows.append((ns, name, "-", "-", "-", "-"))
            else:
                rows.append(
                    (
                        ns,
                        name,
                        status.phase.value,
                        str(status.canaryWeight),
                        str(status.failedChecks),
                        status.lastTransitionTime or "-",
                    )
                )
    except (ClusterError, ValueError) as exc:
        _err(str(exc))
        return EXIT_ERROR
    finally:
        rt.close()
    if not rows:
        where = f"namespace {args.namespace}" if args.namespace else "any namespace"
        print(f"no canaries in {where} on the {rt.config.backend} backend", file=out)
        return EXIT_OK
    header = ("NAMESPACE", "NAME", "PHASE", "WEIGHT", "FAILEDCHECKS", "LASTTRANSITIONTIME")
    rows.sort()
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip(), file=out)
    return EXIT_OK
