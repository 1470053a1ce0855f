"""Go/Prometheus style durations ("15s", "1m30s", "500ms"), parsed in one place for manifests and flags.

Kept free of heavy imports: the local workload programs (podinfo, loadtester) use it at start-up.
"""

from __future__ import annotations

import re

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")


def parse_duration(text: str | int | float, *, allow_plain: bool = False) -> float:
    """Seconds from a duration with units ("30s", "1m30s", "500ms"); with ``allow_plain`` a bare number is
    seconds too (command-line flags). Raises ValueError saying what a valid value looks like."""
    s = str(text).strip()
    if allow_plain:
        try:
            return float(s)
        except ValueError:
            pass
    parts = _PART.findall(s)
    if not parts or "".join(n + u for n, u in parts) != s:
        raise ValueError(f"invalid duration {text!r}: use a number with a unit, like 30s, 1m or 1m30s")
    return sum(float(n) * _UNITS[u] for n, u in parts)
