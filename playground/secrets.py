"""Secret data as the engine reads it (alert addresses, Prometheus credentials). Secrets never come from git:
they are read from the cluster (or, for alert providers, the environment)."""

from __future__ import annotations

import base64
from collections.abc import Iterator, Mapping
from typing import Any


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


class ClusterSecrets(Mapping):
    """Secrets read from a cluster on demand, by ``(namespace, name)`` (or ``"namespace/name"``), decoded and
    cached: only the secrets a MetricTemplate or AlertProvider references are ever read (a namespaced ``get``,
    never a cluster-wide ``list``). Missing secrets are ``None``/absent, so callers report them by name."""

    def __init__(self, cluster: Any):
        self._cluster = cluster
        self._cache: dict[tuple[str, str], dict[str, str] | None] = {}

    @staticmethod
    def _key(key: Any) -> tuple[str, str]:
        if isinstance(key, tuple):
            return key
        ns, _, name = str(key).partition("/")
        return ns, name

    def __getitem__(self, key: Any) -> dict[str, str]:
        ns, name = self._key(key)
        if (ns, name) not in self._cache:
            obj = self._cluster.get("v1", "Secret", ns, name)
            self._cache[(ns, name)] = decode_secret(obj) if obj is not None else None
        data = self._cache[(ns, name)]
        if data is None:
            raise KeyError(key)
        return data

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(k for k, v in self._cache.items() if v is not None)

    def __len__(self) -> int:
        return sum(1 for v in self._cache.values() if v is not None)

    def __bool__(self) -> bool:  # a mapping that can still answer, even before the first read
        return True
