"""Command-line options that pick the backend, shared by every `playground` command that talks to a cluster.

    p = subparsers.add_parser("release", ...)
    add_backend_args(p)
    ...
    rt = runtime_from_args(args)        # a playground.runtime.Runtime; bad options raise BackendArgsError,
                                        # which cli.main prints as one line, exit status 2

Options left unset fall back to the environment (``PLAYGROUND_BACKEND``, ``KUBECONFIG``, ``PLAYGROUND_CONTEXT``,
``PLAYGROUND_HOME``; see ``playground.runtime``), so the CLI, the Dagster resources and a pod's environment
configure the same thing the same way. ``--kubeconfig`` or ``--context`` without ``--backend`` (and without
``PLAYGROUND_BACKEND``) means ``--backend kubernetes``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping

from playground.errors import PlaygroundError
from playground.runtime import Runtime, RuntimeConfig

__all__ = ["BACKENDS", "BackendArgsError", "add_backend_args", "runtime_from_args"]

BACKENDS = ("local", "kubernetes")


class BackendArgsError(PlaygroundError, ValueError):
    """Contradictory or invalid backend options; the message says which and what to do. Commands let it reach
    ``playground.cli.main``, the one place that prints it (``playground COMMAND: message``) and exits 2."""

    exit_code = 2


def add_backend_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group(
        "backend",
        "where the cluster is (unset options come from PLAYGROUND_BACKEND, KUBECONFIG, "
        "PLAYGROUND_CONTEXT, PLAYGROUND_HOME)",
    )
    g.add_argument(
        "--backend",
        choices=BACKENDS,
        default=None,
        help="local (the embedded playground, default) or kubernetes (a real cluster)",
    )
    g.add_argument(
        "--kubeconfig",
        metavar="FILE",
        default=None,
        help="kubeconfig for the kubernetes backend (default $KUBECONFIG, else ~/.kube/config; "
        "in-cluster service account inside a pod); implies --backend kubernetes",
    )
    g.add_argument(
        "--context",
        metavar="NAME",
        default=None,
        help="kubeconfig context (default: its current-context); implies --backend kubernetes",
    )
    g.add_argument(
        "--home",
        metavar="DIR",
        default=None,
        help="state directory of the local backend (default $PLAYGROUND_HOME or .playground)",
    )


def runtime_from_args(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Runtime:
    """The Runtime the options (and, for what they leave unset, the environment) describe."""
    e = dict(os.environ if env is None else env)
    backend = getattr(args, "backend", None)
    kubeconfig = getattr(args, "kubeconfig", None)
    context = getattr(args, "context", None)
    home = getattr(args, "home", None)
    if backend is None and not e.get("PLAYGROUND_BACKEND") and (kubeconfig or context):
        backend = "kubernetes"
    effective = backend or e.get("PLAYGROUND_BACKEND") or "local"
    if effective == "local" and (kubeconfig or context):
        given = "--kubeconfig" if kubeconfig else "--context"
        raise BackendArgsError(
            f"{given} only applies to the kubernetes backend, but the backend is local "
            "(--backend or PLAYGROUND_BACKEND); drop it or pass --backend kubernetes"
        )
    if kubeconfig and not os.path.exists(os.path.expanduser(kubeconfig)):
        raise BackendArgsError(
            f"--kubeconfig {kubeconfig}: no such file; point it at your cluster's kubeconfig "
            "(kind writes ~/.kube/config; `kind get kubeconfig --name NAME > FILE` writes one)"
        )
    try:
        cfg = RuntimeConfig.from_env(
            e, backend=backend, kubeconfig=kubeconfig, context=context, home=str(home) if home else None
        )
    except ValueError as exc:  # an unknown PLAYGROUND_BACKEND
        raise BackendArgsError(str(exc)) from exc
    return Runtime(cfg)
