"""Mutated manifest trees for the fuzz tests (tests/test_fuzz_manifests.py).

``mutated_tree(files, seed)`` takes the project's manifests (relative path -> bytes) and returns a copy with 1 to
3 mutations, chosen and applied deterministically from ``seed``: truncation, byte flips, type swaps, deletions
(of lines or keys), odd or huge unicode, control characters, duplicated or emptied documents, renamed kinds.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import yaml

ODD_TEXT = [
    "\u2028",  # line separator
    "\u2029",  # paragraph separator
    "\u202e",  # right-to-left override
    "\u200b",  # zero width space
    "\ufeff",  # byte order mark
    "\u0085",  # next line
    "e\u0301" * 50,  # combining accents
    "\U0001f4a3\U0001f600",  # emoji outside the BMP
    "\u0645\u0631\u062d\u0628\u0627",  # right-to-left script
    "x" * 100_000,  # huge
    "\u2028" * 5_000,
    "{{ name }}",
    "%s%n%x",
    "../../etc/passwd",
    "'\"`$(id)`",
    "\ud7ff\ue000\ufffd",
]
CONTROL = ["\x00", "\x01", "\x07", "\x08", "\x1b[31m", "\x7f", "\x85", "\r", "\t", "\x0b", "\x0c"]
SWAP_VALUES: list[Any] = [
    None,
    True,
    0,
    -1,
    2**63,
    1.5,
    "",
    "text",
    [],
    [1, "a"],
    {},
    {"k": "v"},
    "1m",
    "-5s",
    100050,
    -20,
]


def _truncate(text: bytes, rnd: random.Random) -> bytes:
    return text[: rnd.randrange(len(text) + 1)]


def _flip(text: bytes, rnd: random.Random) -> bytes:
    data = bytearray(text)
    for _ in range(rnd.randint(1, 8)):
        if data:
            i = rnd.randrange(len(data))
            data[i] ^= 1 << rnd.randrange(8)
    return bytes(data)


def _delete_lines(text: bytes, rnd: random.Random) -> bytes:
    lines = text.splitlines(keepends=True)
    if not lines:
        return text
    i = rnd.randrange(len(lines))
    del lines[i : i + rnd.randint(1, 4)]
    return b"".join(lines)


def _insert(text: bytes, rnd: random.Random, pieces: list[str]) -> bytes:
    piece = rnd.choice(pieces).encode("utf-8", "surrogatepass")
    i = rnd.randrange(len(text) + 1)
    return text[:i] + piece + text[i:]


def _odd_unicode(text: bytes, rnd: random.Random) -> bytes:
    """Odd text inside a value (where YAML takes it), or anywhere."""
    lines = text.splitlines(keepends=True)
    values = [i for i, line in enumerate(lines) if b": " in line and not line.rstrip().endswith(b":")]
    if values and rnd.random() < 0.7:
        i = rnd.choice(values)
        head, _, _ = lines[i].partition(b": ")
        odd = rnd.choice(ODD_TEXT).replace('"', "")
        lines[i] = head + b': "' + odd.encode("utf-8", "surrogatepass").replace(b"\\", b"") + b'"\n'
        return b"".join(lines)
    return _insert(text, rnd, ODD_TEXT)


def _control(text: bytes, rnd: random.Random) -> bytes:
    return _insert(text, rnd, CONTROL)


def _structured(text: bytes, rnd: random.Random, change: Callable[[Any, random.Random], None]) -> bytes:
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except (yaml.YAMLError, ValueError):
        return _flip(text, rnd)
    if not docs:
        return text
    change(docs, rnd)
    return yaml.safe_dump_all(docs, sort_keys=False, allow_unicode=True).encode()


def _paths(node: Any, path: tuple = ()) -> list[tuple]:
    out = [path]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, path + (i,))
    return out


def _set(root: Any, path: tuple, value: Any, delete: bool = False) -> None:
    parent = root
    for p in path[:-1]:
        parent = parent[p]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value


def _swap_type(docs: list, rnd: random.Random) -> None:
    doc = rnd.choice(docs)
    paths = [p for p in _paths(doc) if p]
    if paths:
        _set(doc, rnd.choice(paths), rnd.choice(SWAP_VALUES))
    else:
        docs[docs.index(doc)] = rnd.choice(SWAP_VALUES)


def _delete_key(docs: list, rnd: random.Random) -> None:
    doc = rnd.choice(docs)
    paths = [p for p in _paths(doc) if p]
    if paths:
        _set(doc, rnd.choice(paths), None, delete=True)


def _duplicate_doc(docs: list, rnd: random.Random) -> None:
    docs.append(rnd.choice(docs))


def _rename_kind(docs: list, rnd: random.Random) -> None:
    doc = rnd.choice(docs)
    if isinstance(doc, dict):
        doc["kind"] = rnd.choice(
            ["Canary", "MetricTemplate", "AlertProvider", "Deployment", "HorizontalPodAutoscaler", "ImagePolicy",
             "Secret", "Namespace", "Service", "Gateway", "Unknown", ""]
        )  # fmt: skip


MUTATIONS: dict[str, Callable[[bytes, random.Random], bytes]] = {
    "truncate": _truncate,
    "flip": _flip,
    "delete-lines": _delete_lines,
    "odd-unicode": _odd_unicode,
    "control": _control,
    "swap-type": lambda t, r: _structured(t, r, _swap_type),
    "delete-key": lambda t, r: _structured(t, r, _delete_key),
    "duplicate-doc": lambda t, r: _structured(t, r, _duplicate_doc),
    "rename-kind": lambda t, r: _structured(t, r, _rename_kind),
}


def mutated_tree(files: dict[str, bytes], seed: int) -> tuple[dict[str, bytes], list[str]]:
    """A mutated copy of ``files`` (only the changed files) and the mutations applied, as ``name@file``."""
    rnd = random.Random(seed)
    changed: dict[str, bytes] = {}
    applied = []
    for _ in range(rnd.randint(1, 3)):
        rel = rnd.choice(sorted(files))
        name = rnd.choice(sorted(MUTATIONS))
        changed[rel] = MUTATIONS[name](changed.get(rel, files[rel]), rnd)
        applied.append(f"{name}@{rel}")
    return changed, applied
