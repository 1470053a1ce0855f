"""Small helpers of the Envoy renderer: Go/protobuf durations (``10s``, ``1.5s``, ``1m30s``) to seconds and
to Envoy durations, percentages to Envoy fractional percents, allowed-key checks that name the object and the
field, object names and labels. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from playground.local.envoy.common import RenderError

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns)")
_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def _seconds(value: Any, where: str) -> float:
    """A Go/protobuf duration (``10s``, ``1.5s``, ``500ms``, ``1m30s``) in seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    pos, total = 0, 0.0
    for m in _DURATION_RE.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if not text or pos != len(text):
        raise RenderError(f"{where}: {value!r} is not a duration (examples: 10s, 1.5s, 500ms, 1m)")
    return total


def _duration(value: Any, where: str) -> str:
    """A duration in protobuf JSON form (``"1.5s"``)."""
    seconds = _seconds(value, where)
    text = f"{seconds:.9f}".rstrip("0").rstrip(".")
    return f"{text}s"


def _fraction(percent: Any, where: str) -> dict[str, Any]:
    """An Envoy FractionalPercent (per million) from an Istio percentage (0..100, may be fractional)."""
    try:
        value = float(percent)
    except (TypeError, ValueError):
        raise RenderError(f"{where}: {percent!r} is not a percentage") from None
    if not 0 <= value <= 100:
        raise RenderError(f"{where}: {value} is not within 0..100")
    return {"numerator": int(round(value * 10000)), "denominator": "MILLION"}


def _check_keys(obj: dict[str, Any], allowed: Iterable[str], where: str) -> None:
    unknown = sorted(set(obj) - set(allowed))
    if unknown:
        raise RenderError(
            f"{where}: field {unknown[0]!r} is not supported by the local mesh "
            f"(supported: {', '.join(sorted(allowed))})"
        )


def _meta(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return meta.get("namespace") or "default", meta.get("name") or "?"


def _label(obj: dict[str, Any]) -> str:
    ns, name = _meta(obj)
    return f"{obj.get('kind')} {ns}/{name}"


def _safe_name(text: str) -> str:
    """A cluster-name fragment without dots or colons (Envoy's stat tag extraction splits on dots)."""
    return re.sub(r"[^A-Za-z0-9-]", "-", text)
