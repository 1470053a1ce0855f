"""Atomic file replacement, shared by everything that writes files other processes read (Envoy's dynamic
configuration, Prometheus' file_sd targets, env.json)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same directory and a rename: readers see
    the old or the new content, never half a file. No fsync: readers go through the page cache and the
    rename alone makes the switch atomic for them (an fsync costs ~50 ms per file here)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def replace_if_changed(path: Path, text: str) -> bool:
    """``atomic_write`` unless the file already holds ``text``; True when it was written."""
    try:
        if Path(path).read_text() == text:
            return False
    except FileNotFoundError:
        pass
    atomic_write(path, text)
    return True
