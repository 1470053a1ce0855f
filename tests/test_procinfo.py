"""playground.local.procinfo: a process is recognised by its pid and its start time, never by a reused pid."""

from __future__ import annotations

import os
from pathlib import Path

from playground.local.procinfo import proc_stat, process_alive, start_ticks


def test_this_process_is_alive_with_its_own_start_time_only() -> None:
    pid = os.getpid()
    ticks = start_ticks(pid)
    assert ticks is not None and ticks > 0
    assert proc_stat(pid) == ("R", ticks)  # running: it is reading its own /proc entry
    assert process_alive(pid) and process_alive(pid, ticks) and process_alive(pid, ticks, reap=False)
    assert not process_alive(pid, ticks + 1)  # the same pid with another start time: a reused pid, not ours


def test_no_process_is_not_alive() -> None:
    beyond = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1  # no process can have this pid
    assert proc_stat(beyond) is None and start_ticks(beyond) is None
    assert not process_alive(beyond) and not process_alive(None) and not process_alive(0)
