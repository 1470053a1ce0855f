"""``playground validate``: the command line of :mod:`playground.manifests` (one line per finding, a summary,
exit status 0 / 1 errors / 2 no such path).
"""

from __future__ import annotations

import argparse
import sys

from playground.manifests.loading import load_tree
from playground.manifests.validation import validate_set
from playground.textsafe import one_line


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register ``playground validate``."""
    p = subparsers.add_parser(
        "validate",
        help="check the GitOps manifests (YAML, Flagger schema, references, canary settings)",
        description="Load every *.yaml/*.yml file under PATH (or the single file PATH) and check it: YAML "
        "syntax, required fields, the Flagger v1beta1 schema of Canaries, MetricTemplates and AlertProviders, "
        "durations and weights, references between objects (templates, alert providers, target Deployments, "
        "HPAs, gateways, image policies) and the rule that alert addresses never live in git. Prints one line "
        "per problem (file:line: object: field: message. Fix: ...) and a summary.",
        epilog="Exit status: 0 no errors (warnings allowed), 1 errors found, 2 PATH does not exist.",
    )
    p.add_argument(
        "path",
        nargs="?",
        default="manifests",
        metavar="PATH",
        help="directory or file to validate (default: manifests)",
    )
    p.add_argument("--no-warnings", action="store_true", help="print errors only")
    p.add_argument("--strict", action="store_true", help="count warnings as errors for the exit status")
    p.set_defaults(func=_cli_validate)


def _cli_validate(args: argparse.Namespace) -> int:
    try:
        mset = load_tree(args.path)
    except FileNotFoundError as e:
        print(
            f"playground validate: {e}. Give the directory of your manifests, like: playground validate manifests",
            file=sys.stderr,
        )
        return 2
    findings = validate_set(mset)
    errors = [f for f in findings if f.is_error]
    warnings = [f for f in findings if not f.is_error]
    for f in findings:
        if f.is_error or not args.no_warnings:
            print(f)
    n_err, n_warn = len(errors), len(warnings)
    print(
        f"{one_line(args.path)}: {len(mset)} objects in {len(mset.files)} files: "
        f"{n_err} error{'s' if n_err != 1 else ''}, {n_warn} warning{'s' if n_warn != 1 else ''}"
    )
    if n_err or (args.strict and n_warn):
        return 1
    return 0
