"""Hostile manifest files (issue 14's probes), shared by tests/test_hostile_input.py and bench/hostile_input.py.

Each probe writes ONE file (or FIFO, or symlink) named ``<probe>.yaml`` into a directory and names the text the
single finding about it must contain.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

# the classic 477-byte "billion laughs": 9 levels of 9 aliases = 9**9 = 387,420,489 "lol" strings expanded
BOMB = (
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
    "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
    "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
    "f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
    "g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n"
    "h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n"
    "i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\n"
)
DEPTH = 100_000
LONG_NAME_CHARS = 300_000


def bomb(d: Path) -> Path:
    p = d / "bomb.yaml"
    p.write_text(BOMB)
    return p


def nul(d: Path) -> Path:
    p = d / "nul.yaml"
    p.write_bytes(b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\x00x\ndata: {}\n")
    return p


def depth(d: Path) -> Path:
    p = d / "depth.yaml"
    p.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: deep}\ndata: " + "[" * DEPTH + "]" * DEPTH + "\n")
    return p


def fifo(d: Path) -> Path:
    p = d / "fifo.yaml"
    os.mkfifo(p)
    return p


def devzero(d: Path) -> Path:
    p = d / "devzero.yaml"
    p.symlink_to("/dev/zero")
    return p


def longname(d: Path) -> Path:
    """A 300 KB name full of line separators and right-to-left overrides (and a NEL)."""
    name = ("a\u2028b\u202ec\u0085" * (LONG_NAME_CHARS // 4))[:LONG_NAME_CHARS]
    p = d / "longname.yaml"
    p.write_text(f'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: "{name}"\n')
    return p


def huge(d: Path) -> Path:
    """A 3 MiB file (over the 2 MiB limit)."""
    p = d / "huge.yaml"
    with open(p, "w") as f:
        f.write("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: huge}\ndata:\n")
        line = "  k%07d: " + "x" * 90 + "\n"
        for i in range(3 * 1024 * 1024 // 100 + 1):
            f.write(line % i)
    return p


#: probe -> (writer, text the finding about it contains)
PROBES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "bomb": (bomb, "nodes with aliases expanded"),
    "nul": (nul, "U+0000 (NUL) is not allowed"),
    "depth": (depth, "nested more than 100 levels deep"),
    "fifo": (fifo, "a FIFO (named pipe), not a regular file"),
    "devzero": (devzero, "symlink to /dev/zero, outside the manifests tree"),
    "longname": (longname, "invalid name"),
    "huge": (huge, "over the limit of 2,097,152"),
}

#: probes git can hold (a FIFO cannot be committed)
IN_GIT = tuple(p for p in PROBES if p != "fifo")
