"""Recognising a local process across restarts of the tools that started it: its pid plus its start time (clock
ticks since boot, field 22 of ``/proc/<pid>/stat``), so that a reused pid is never taken for ours.

The one reader of ``/proc/<pid>/stat`` for the local backend: ``playground up``/``down`` (components in
env.json), the supervisor (components it forks) and the node agent (replicas it adopts after a restart) record
``(pid, start_ticks(pid))`` and later ask :func:`process_alive`. Linux only, as the local backend.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NoReturn

__all__ = ["exit_forked_child", "proc_stat", "process_alive", "start_ticks"]


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start ticks) of process ``pid``, or None when there is none (or /proc cannot be read)."""
    try:
        text = Path(f"/proc/{int(pid)}/stat").read_text()
        fields = text.rsplit(")", 1)[1].split()  # the command name (in parentheses) may contain spaces
        return fields[0], int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


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
