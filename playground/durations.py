"""Durations, parsed in one place for manifests, flags and the runtime. Two grammars, one parser each:

* :func:`parse_duration`: Go's ``time.ParseDuration`` as the playground uses it ("15s", "1m30s", "500ms",
  "1.5m"): Flagger's own durations (``analysis.interval``, webhook timeouts) and command-line flags;
* :func:`parse_prometheus_duration`: Prometheus's duration grammar, for text that is substituted into PromQL
  (a metric's ``interval`` becomes ``[{{ interval }}]``): whole numbers with the units ``y w d h m s ms``,
  largest first, each at most once ("30s", "1m30s", "1d"), no fractions, greater than zero.

Kept free of heavy imports: the local workload programs (podinfo, loadtester) use it at start-up.
"""

from __future__ import annotations

import re

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")

# Prometheus common/model ParseDuration (what the PromQL parser applies to a range selector's duration).
_PROM_UNITS = (("y", 365 * 86400_000), ("w", 7 * 86400_000), ("d", 86400_000), ("h", 3600_000), ("m", 60_000),
               ("s", 1000), ("ms", 1))  # fmt: skip
_PROM_DURATION = re.compile("".join(f"(?:([0-9]+){u})?" for u, _ in _PROM_UNITS))
_PROM_MAX_MS = 2**63 - 1  # a Go time.Duration in milliseconds


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


#: How a valid Prometheus duration looks, for messages and fixes.
PROMETHEUS_DURATION_HINT = (
    "use whole numbers with the units ms, s, m, h, d, w, y, largest first, like 30s, 1m, 1m30s or 1d "
    "(Prometheus durations have no fractions: 90s, not 1.5m)"
)


def parse_prometheus_duration(text: str) -> float:
    """Seconds from a Prometheus duration as PromQL accepts it in a range selector ``[...]``: the grammar of
    Prometheus's ``model.ParseDuration`` (``1m30s``, ``500ms``, ``1d``, ``2w``) and greater than zero.
    Raises ValueError naming the problem; :data:`PROMETHEUS_DURATION_HINT` says what a valid value looks like."""
    s = str(text)
    if len(s) > 64:  # no valid duration is that long (and int() of thousands of digits is refused)
        raise ValueError(f"invalid Prometheus duration {s[:20]!r}...: too long")
    m = _PROM_DURATION.fullmatch(s)
    if not s or m is None:
        raise ValueError(f"invalid Prometheus duration {text!r}")
    ms = sum(int(n) * factor for n, (_, factor) in zip(m.groups(), _PROM_UNITS) if n is not None)
    if ms > _PROM_MAX_MS:
        raise ValueError(f"invalid Prometheus duration {text!r}: too long")
    if ms == 0:
        raise ValueError(f"invalid Prometheus duration {text!r}: must be greater than 0")
    return ms / 1000
