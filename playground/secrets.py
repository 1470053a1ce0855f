"""Secret data as the engine reads it (alert addresses, Prometheus credentials). Secrets never come from git:
they are read from the cluster (or, for alert providers, the environment)."""
from __future__ import annotations

import base64
from typing import Any, Mapping


def decode_secret(obj: dict[str, Any]) -> dict[str, str]:
    """A Secret's values: ``data`` (base64) decoded, ``stringData`` as is (wins, as in Kubernetes)."""
    out = {}
    for k, v in (obj.get("data") or {}).items():
        try:
            out[k] = base64.b64decode(str(v)).decode()
        except (ValueError, UnicodeDecodeError):
            out[k] = str(v)
    out.update({k: str(v) for k, v in (obj.get("stringData") or {}).items()})
    return out


def lookup_secret(secrets: Mapping[Any, Mapping[str, Any]] | None, namespace: str, name: str) -> dict[str, str] | None:
    """Find a secret's data by ``(namespace, name)`` (or ``"namespace/name"``); values are decoded to str."""
    if not secrets:
        return None
    data = secrets.get((namespace, name))
    if data is None:
        data = secrets.get(f"{namespace}/{name}")
    if data is None:
        return None
    return {k: v.decode() if isinstance(v, (bytes, bytearray)) else str(v) for k, v in data.items()}
