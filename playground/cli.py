"""`playground` command line.

Every command is listed once in ``COMMANDS`` with the module that defines it and its one-line help. Only the
module of the command being run is imported, so ``playground --help`` and light commands stay fast (pandas,
Dagster, the Kubernetes client are imported by the commands that use them). A module contributes its
subcommands through ``add_cli(subparsers)``; the handler it registers (``set_defaults(func=...)``) returns the
exit code.

Commands whose module is ``plugin:NAME`` are provided by another installed package through the entry point
``NAME`` of the group ``playground.commands`` (an ``add_cli`` function). The Dagster layer provides its commands
(``history``, reading the Dagster instance) this way: the engine never imports Dagster or the Dagster layer.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from playground.errors import PlaygroundError

PLUGIN_GROUP = "playground.commands"

# (command, module defining it, one-line help). Keep the order: it is the order of `playground --help`.
COMMANDS: list[tuple[str, str, str]] = [
    (
        "validate",
        "playground.manifests.cli",
        "check the GitOps manifests (YAML, Flagger schema, references, canary settings)",
    ),
    ("backtest", "playground.backtest", "replay a canary analysis over a recorded trace (no cluster needed)"),
    (
        "demo",
        "playground.demo",
        "the main job: a fresh local playground and three real releases (promotion, A/B, rollback)",
    ),
    ("up", "playground.local.env", "start the local playground (idempotent) and sync the GitOps manifests"),
    ("down", "playground.local.env", "stop the local playground's processes"),
    ("status", "playground.local.env", "components and workloads of the local playground (canaries on a real cluster)"),
    ("release", "playground.commands", "run the canary release of one target in the foreground (no Dagster needed)"),
    (
        "canaries",
        "playground.commands",
        "list canaries with phase, weight, failed checks and last transition (any backend)",
    ),
    ("promote", "playground.control", "pass the current gate of a release (--full: skip the remaining steps)"),
    ("abort", "playground.control", "roll a release back now (all traffic to the primary, Failed)"),
    ("retry", "playground.control", "analyse a Failed revision again, without a new commit"),
    ("pause", "playground.control", "hold a release's analysis (no weight change, no checks counted)"),
    ("resume", "playground.control", "continue a paused release"),
    ("sync", "playground.control", "sync the cluster to the GitOps origin now (instead of waiting for the sensor)"),
    ("watch", "playground.control", "live view of a release, refreshed every tick, until it ends"),
    ("history", "plugin:history", "list finished releases (promotions and rollbacks) from the Dagster instance"),
]

DESCRIPTION = (
    "Progressive delivery for Kubernetes services: validate manifests, replay canary analyses, run the local "
    "playground and its releases."
)


class CommandUnavailable(PlaygroundError):
    """A plugin command whose providing package is not installed."""


def _add_cli_of(module: str) -> Callable[[argparse._SubParsersAction], None]:
    if module.startswith("plugin:"):
        from importlib.metadata import entry_points

        name = module.split(":", 1)[1]
        found = entry_points(group=PLUGIN_GROUP, name=name)
        if not found:
            raise CommandUnavailable(
                f"the command {name!r} is provided by the Dagster layer (entry point {PLUGIN_GROUP}:{name}), which "
                "is not installed: install the project with `pip install -c constraints.txt -e .`"
            )
        add_cli: Callable[..., None] = next(iter(found)).load()
        return add_cli
    add_cli = importlib.import_module(module).add_cli
    return add_cli


def _selected(argv: Sequence[str]) -> str | None:
    """The command named on the command line (the first argument that is not an option), if it is known."""
    known = {c for c, _, _ in COMMANDS}
    for a in argv:
        if a.startswith("-"):
            continue
        return a if a in known else None
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser: every command as a stub with its help, and the full parser of ``command``'s module (all
    modules when ``command`` is None and ``full`` parsing is needed, e.g. by tests that walk every command)."""
    p = argparse.ArgumentParser(prog="playground", description=DESCRIPTION)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    module = next((m for c, m, _ in COMMANDS if c == command), None)
    for name, mod, help_ in COMMANDS:
        if mod == module:
            continue
        sub.add_parser(name, help=help_, add_help=False)
    if module is not None:
        _add_cli_of(module)(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _selected(argv)
    try:
        parser = build_parser(command)
    except CommandUnavailable as e:
        print(f"playground {command}: {e}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here rather than at exit
        return code
    except PlaygroundError as e:
        # any error for the user that the command did not report itself: one line and an exit status
        print(f"playground {args.command}: {_first_line(e)}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`playground backtest ... | head -1`): stop quietly, as a command killed by SIGPIPE
        _silence_stdout()
        return 141


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not report the closed pipe again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
