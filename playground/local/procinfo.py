"""Recognising a local process across restarts of the tools that started it: its pid plus its start time (clock
ticks since boot, field 22 of ``/proc/<pid>/stat``), so that a reused pid is never taken for ours.

The one reader of ``/proc/<pid>/stat`` for the local backend: ``playground up``/``down`` (components in
env.json), the supervisor (components it forks) and the node agent (replicas it adopts after a restart) record
``(pid, start_ticks(pid))`` and later ask :func:`process_alive`; the run launcher and its zygote
(``launcher/``) identify run workers the same way. Also the few helpers of processes that fork without exec (the
zygote, the history recorder): :func:`exit_forked_child`, :func:`reap_children`, :func:`nice_at_least`, and
:func:`cpu_seconds` for the benches. Linux only, as the local backend.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NoReturn

__all__ = [
    "cpu_seconds",
    "exit_forked_child",
    "nice_at_least",
    "proc_stat",
    "process_alive",
    "reap_children",
    "start_ticks",
]


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (field 3 on), None when there is no process."""
    try:
        text = Path(f"/proc/{int(pid)}/stat").read_text()
    except (OSError, ValueError):
        return None
    return text.rpartition(")")[2].split()  # the command name (in parentheses) may contain spaces


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start ticks) of process ``pid``, or None when there is none (or /proc cannot be read)."""
    fields = _stat_fields(pid)
    try:
        return (fields[0], int(fields[19])) if fields else None
    except (IndexError, ValueError):
        return None


def cpu_seconds(pid: int) -> float | None:
    """The CPU-seconds (user + system) process ``pid`` itself has used so far (not its children's), or None."""
    fields = _stat_fields(pid)
    try:
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK") if fields else None
    except (IndexError, ValueError):
        return None


def nice_at_least(level: int) -> None:
    """Lower this process's CPU priority to nice ``level`` unless it is lower already (best effort)."""
    try:
        current = os.nice(0)
        if current < level:
            os.nice(level - current)
    except OSError:
        pass


def start_ticks(pid: int) -> int | None:
    """The start time of process ``pid`` (clock ticks since boot): with the pid it identifies the process."""
    st = proc_stat(pid)
    return st[1] if st else None


def process_alive(pid: int | None, ticks: int | None = None, *, reap: bool = True) -> bool:
    """True when ``pid`` runs (not a zombie) and, if ``ticks`` is given, started at ``ticks`` (so a reused pid is
    not ours). A zombie is reaped when it is our child and ``reap`` (in-process use without a ``Popen``)."""
    if not pid:
        return False
    st = proc_stat(int(pid))
    if st is None:
        return False
    if st[0] == "Z":
        if reap:
            try:
                os.waitpid(int(pid), os.WNOHANG)
            except ChildProcessError:
                pass
        return False
    return ticks is None or st[1] == int(ticks)


def exit_forked_child(code: int) -> NoReturn:
    """The end of a child forked without exec (the history recorder's recordings, the zygote's run workers):
    flush what it printed, then leave with ``os._exit`` so that no exit handler or buffer of the parent it was
    copied from runs twice."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def reap_children() -> list[int]:
    """Reap every child of this process that has exited (without waiting for the others); their pids."""
    reaped: list[int] = []
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return reaped
        if pid == 0:
            return reaped
        reaped.append(pid)
