"""The zygote of the run workers: a single-threaded process that imports Dagster and the code location once and
forks one child per run; the child executes the run exactly as ``dagster api execute_run`` does (it runs the
``dagster`` console script's own entry point with those arguments), so a launch costs a fork, not the 1.5-3
CPU-seconds of a fresh interpreter importing Dagster and the code location.

Started by :class:`launcher.ZygoteRunLauncher` (``python -m launcher.zygote``) with pipes on stdin and stdout:

- it prints ``{"ready": true, "threads": N}`` once the imports are done;
- each request is one JSON line ``{"args": "<serialized ExecuteRunArgs>"}``; the reply is one JSON line
  ``{"pid": PID, "start": START_TICKS}`` (start time of the child, from /proc, to tell it from a reused pid) or
  ``{"error": "..."}``;
- it exits when its stdin closes (the launching process is gone or disposed its launcher).

The zygote never opens the Dagster instance (no database connection, no thread to inherit across a fork); its
children do, after the fork. Children stay in the zygote's process group (stopping the daemon's group stops its
releases, as stopping the code server did with its run workers) and are reaped here.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import select
import signal
import sys
import threading
import traceback

from playground.local.procinfo import exit_forked_child, reap_children, start_ticks

#: Imported before the first fork besides dagster and the code location: what a run worker would import anyway.
DEFAULT_PRELOAD = (
    "dagster",
    "dagster._core.execution.api",  # the run execution (internal: listed to be imported once, never called)
    "dagster_postgres",
    "sqlalchemy.dialects.sqlite",
)


def _dagster_main():
    """The ``dagster`` console script's entry point (what ``dagster api execute_run`` runs)."""
    from importlib.metadata import entry_points

    (ep,) = [e for e in entry_points(group="console_scripts") if e.name == "dagster"]
    return ep.load()


def _preload(modules: list[str], python_file: str | None, working_directory: str | None) -> None:
    if working_directory and working_directory not in sys.path:
        sys.path.insert(0, working_directory)
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as e:  # an optional library: the child imports it if it needs it
            print(f"launcher.zygote: not preloaded: {name}: {e}", file=sys.stderr)
    if python_file:
        # the code location's module and everything it imports; a child's load of the file then only runs it
        spec = importlib.util.spec_from_file_location("_launcher_zygote_code_location", python_file)
        if spec and spec.loader:
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)


def _child(args: str, main, channels: list[int]) -> None:
    """In the forked child: become ``dagster api execute_run <args>``; never returns."""
    code = 1
    try:
        for fd in channels:
            os.close(fd)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as in any Python program
        sys.argv = ["dagster", "api", "execute_run", args]
        try:
            main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        exit_forked_child(code)


def serve(modules: list[str], python_file: str | None, working_directory: str | None) -> None:
    # replies go to a private copy of stdout; anything printed (by imports, by children) goes to stderr
    reply = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    requests = sys.stdin.buffer
    _preload(modules, python_file, working_directory)
    main = _dagster_main()
    threads = threading.active_count()
    reply.write(json.dumps({"ready": True, "threads": threads}) + "\n")
    channels = [0, reply.fileno()]
    while True:
        readable, _, _ = select.select([requests], [], [], 0.5)
        reap_children()
        if not readable:
            continue
        line = requests.readline()
        if not line:
            return  # the launcher is gone: running children go on
        try:
            args = json.loads(line)["args"]
        except (ValueError, KeyError, TypeError) as e:
            reply.write(json.dumps({"error": f"bad request: {e}"}) + "\n")
            continue
        try:
            pid = os.fork()
        except OSError as e:
            reply.write(json.dumps({"error": f"fork failed: {e}"}) + "\n")
            continue
        if pid == 0:
            _child(args, main, channels)
        reply.write(json.dumps({"pid": pid, "start": start_ticks(pid)}) + "\n")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m launcher.zygote")
    p.add_argument("--preload", action="append", default=[], help="a module to import before forking")
    p.add_argument("--python-file", help="the code location's file")
    p.add_argument("--working-directory", help="the code location's working directory")
    a = p.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    serve([*DEFAULT_PRELOAD, *a.preload], a.python_file, a.working_directory)


if __name__ == "__main__":
    main()
