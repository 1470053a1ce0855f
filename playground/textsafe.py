"""Untrusted text on one line: what the engine prints or logs about files, names and commands it was given.

:func:`one_line` escapes every character that is not printable (``str.isprintable``: control characters such
as NUL, ESC, CR, LF and TAB, line and paragraph separators U+2028/U+2029, bidirectional overrides such as
U+202E, other format characters, unassigned code points) as ``\\xNN``/``\\uNNNN``/``\\UNNNNNNNN``, so a name
cannot split a finding into two lines, rewrite the terminal or reorder what is shown; and it caps the length,
keeping the head and the tail (where the fix is) around a ``...[N characters cut]...`` marker.
"""

from __future__ import annotations

#: Longest line :func:`one_line` returns by default.
MAX_LINE = 1000


def _escape(c: str) -> str:
    n = ord(c)
    if n < 0x100:
        return f"\\x{n:02x}"
    if n < 0x10000:
        return f"\\u{n:04x}"
    return f"\\U{n:08x}"


def one_line(text: str, limit: int = MAX_LINE) -> str:
    """``text`` with non-printable characters escaped and at most ``limit`` characters long."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() else _escape(c) for c in text)
    if len(text) <= limit:
        return text
    tail = min(300, limit // 3)
    head = max(0, limit - tail - len(f" ...[{len(text):,} characters cut]... "))
    marker = f" ...[{len(text) - head - tail:,} characters cut]... "
    return text[:head] + marker + text[len(text) - tail :]
