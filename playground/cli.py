"""`playground` command line.

Each feature module contributes its subcommands through ``add_cli(subparsers)``; the handler it registers
(``set_defaults(func=...)``) returns the exit code.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# Modules that add subcommands. Keep one line per module.
CLI_MODULES = [
    "playground.manifests",
    "playground.backtest",
    "playground.history",
    "playground.local.env",
    "playground.commands",
    "playground.demo",
]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="playground",
        description="Progressive delivery for Kubernetes services: validate manifests, replay canary analyses, "
        "run the local playground and its releases.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for mod in CLI_MODULES:
        importlib.import_module(mod).add_cli(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
