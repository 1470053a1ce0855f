"""Process identity on this host, read from /proc (no Dagster import: the zygote and the launcher share it)."""

from __future__ import annotations


def start_ticks(pid: int) -> int | None:
    """The process start time in clock ticks since boot (field 22 of /proc/PID/stat), None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):  # exited, not reaped yet
        return None
    return int(fields[19])
