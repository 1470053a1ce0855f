"""Reading untrusted YAML files (the GitOps manifests, canary files, catalogs) with limits.

Everything in the engine that reads YAML from users or from git goes through this module, so a hostile file
costs at most a bounded amount of time and memory and gives one clear error instead of a hang or a crash:

* files (:func:`read_text`): regular files only (a FIFO, a device, a socket is refused without being opened
  for reading: ``stat`` first, then ``open`` with ``O_NONBLOCK`` and ``fstat`` again); inside ``root`` when one
  is given (a symlink whose target leaves the tree is refused); at most :data:`MAX_FILE_BYTES`; UTF-8;
* YAML (:func:`iter_documents`, :func:`load_all`): nesting at most :data:`MAX_DEPTH` levels; at most
  :data:`MAX_NODES` nodes and :data:`MAX_CHARS` characters of scalars per file *with aliases expanded* (a
  477-byte "billion laughs" alias bomb is refused after a few hundred nodes, not expanded to gigabytes);
  recursive aliases refused; only the types JSON (hence Kubernetes) has: mappings, sequences, strings,
  integers, finite floats, booleans, null. Timestamps stay strings (as Kubernetes reads them); ``.inf``,
  ``.nan``, ``1e400``, integers over 4,300 digits and the ``!!binary``/``!!set``/``!!omap``/``!!pairs`` tags
  are refused with their position.

Errors are :class:`Refused` (the file itself) or ``yaml.MarkedYAMLError`` subclasses with a ``problem_mark``
(line and column); their messages are one line.
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from yaml.error import Mark, MarkedYAMLError
from yaml.reader import ReaderError

from playground.errors import PlaygroundError

__all__ = [
    "MAX_FILE_BYTES",
    "MAX_DEPTH",
    "MAX_NODES",
    "MAX_CHARS",
    "Refused",
    "LimitError",
    "read_text",
    "iter_documents",
    "load_all",
    "load_file",
]

#: Largest file read (Kubernetes stores at most 1.5 MiB per object).
MAX_FILE_BYTES = 2 * 1024 * 1024
#: Deepest nesting of mappings and sequences (Kubernetes objects, CRD schemas included, stay far below).
MAX_DEPTH = 100
#: Most nodes per file, counting every alias as a copy of what it names.
MAX_NODES = 250_000
#: Most characters of scalars per file, counting every alias as a copy of what it names.
MAX_CHARS = 4 * MAX_FILE_BYTES


class Refused(PlaygroundError):
    """A file that is not read: not a regular file, outside the tree, too large, not UTF-8, unreadable.

    ``message`` says what the file is, ``fix`` what to do; ``str()`` is both, on one line."""

    def __init__(self, message: str, fix: str = "") -> None:
        super().__init__(message + (f". Fix: {fix}" if fix else ""))
        self.message = message
        self.fix = fix


class LimitError(MarkedYAMLError, PlaygroundError):
    """A YAML document over a limit (depth, expanded size) or holding a value Kubernetes cannot store."""

    def __init__(self, problem: str, mark: Mark | None, fix: str = "") -> None:
        super().__init__(problem=problem, problem_mark=mark)
        self.fix = fix or "keep to plain Kubernetes objects: no alias bombs, no deep nesting, JSON values only"


# =============================================================================================== files

_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a directory"),
)


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def read_text(path: str | os.PathLike[str], *, root: str | os.PathLike[str] | None = None,
              max_bytes: int = MAX_FILE_BYTES) -> str:  # fmt: skip
    """The text of the regular file ``path``; raises :class:`Refused` for anything else (see the module doc).

    With ``root``, ``path`` (after following symlinks) must lie inside ``root``'s real path. Never blocks on a
    FIFO and never reads more than ``max_bytes + 1`` bytes.
    """
    p = os.fspath(path)
    if root is not None:
        real, real_root = os.path.realpath(p), os.path.realpath(os.fspath(root))
        if not _within(real, real_root):
            raise Refused(
                f"symlink to {real}, outside the manifests tree {real_root}: not read",
                "commit the file itself instead of a link leaving the repository",
            )
    try:
        st = os.stat(p)
    except OSError as e:
        raise Refused(f"cannot read file: {e.strerror or e}", "make it a readable UTF-8 text file") from None
    if not stat.S_ISREG(st.st_mode):
        raise Refused(f"{_kind(st.st_mode)}, not a regular file: not read", "only regular YAML files are read")
    if st.st_size > max_bytes:
        raise Refused(
            f"file of {st.st_size:,} bytes, over the limit of {max_bytes:,}: not read",
            "split it into smaller files (a Kubernetes object holds at most 1.5 MiB)",
        )
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise Refused(f"cannot read file: {e.strerror or e}", "make it a readable UTF-8 text file") from None
    try:
        st = os.fstat(fd)  # what was opened: it may have been replaced since the stat
        if not stat.S_ISREG(st.st_mode):
            raise Refused(f"{_kind(st.st_mode)}, not a regular file: not read", "only regular YAML files are read")
        chunks, size = [], 0
        while size <= max_bytes:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as e:
        raise Refused(f"cannot read file: {e.strerror or e}", "make it a readable UTF-8 text file") from None
    finally:
        os.close(fd)
    if size > max_bytes:
        raise Refused(f"file over the limit of {max_bytes:,} bytes: not read", "split it into smaller files")
    data = b"".join(chunks)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise Refused(
            f"not UTF-8 text: byte 0x{data[e.start]:02x} at line {line} (offset {e.start})",
            "save the file as UTF-8 text",
        ) from None


# ================================================================================================ YAML


class _Resolver(yaml.resolver.Resolver):
    """The YAML 1.1 resolver without timestamps: ``2024-05-01`` stays a string, as Kubernetes reads it."""


_Resolver.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.resolver.Resolver.yaml_implicit_resolvers.items()
}


class _Constructor(yaml.constructor.SafeConstructor):
    """JSON types only, finite numbers only."""

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        try:
            return super().construct_yaml_int(node)
        except ValueError:
            raise LimitError(
                f"integer of {len(node.value):,} characters is too large for Kubernetes (int64)", node.start_mark
            ) from None

    def construct_yaml_float(self, node: yaml.ScalarNode) -> float:
        value = super().construct_yaml_float(node)
        if not math.isfinite(value):
            raise LimitError(
                f"{node.value[:40]!r} is not a finite number: Kubernetes objects are JSON, which has no "
                "infinity or NaN",
                node.start_mark,
            )
        return value

    def construct_as_string(self, node: yaml.Node) -> str:
        return str(self.construct_scalar(node))  # type: ignore[arg-type]

    def construct_refused(self, node: yaml.Node) -> Any:
        raise LimitError(
            f"YAML tag {node.tag.replace('tag:yaml.org,2002:', '!!')} is not allowed: Kubernetes objects hold only "
            "mappings, lists, strings, numbers, booleans and null",
            node.start_mark,
        )


_Constructor.yaml_constructors = {
    **yaml.constructor.SafeConstructor.yaml_constructors,
    "tag:yaml.org,2002:int": _Constructor.construct_yaml_int,
    "tag:yaml.org,2002:float": _Constructor.construct_yaml_float,
    "tag:yaml.org,2002:timestamp": _Constructor.construct_as_string,
    **{"tag:yaml.org,2002:" + t: _Constructor.construct_refused for t in ("binary", "set", "omap", "pairs")},
}


if getattr(yaml, "__with_libyaml__", False):
    from yaml._yaml import CParser as _Events  # libyaml scans and parses (~5x faster than pure Python)
else:  # pragma: no cover - PyYAML built without libyaml

    class _Events(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser):  # type: ignore[no-redef]
        def __init__(self, text: str) -> None:
            yaml.reader.Reader.__init__(self, text)
            yaml.scanner.Scanner.__init__(self)
            yaml.parser.Parser.__init__(self)


class _Loader(yaml.composer.Composer, _Events, _Constructor, _Resolver):
    """A safe loader: events from libyaml (or PyYAML's pure-Python parser), composed into nodes by PyYAML's
    Python composer -- which pulls events one at a time, so the depth limit and the expanded-size budget
    checked here stop a hostile document before the rest of it is even parsed."""

    def __init__(self, text: str) -> None:
        _Events.__init__(self, text)
        yaml.composer.Composer.__init__(self)
        _Constructor.__init__(self)
        _Resolver.__init__(self)
        self._depth = 0
        self._sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (nodes, scalar characters), aliases expanded
        self.nodes = 0  # per file, aliases expanded
        self.chars = 0

    def compose_document(self) -> yaml.Node | None:
        self._sizes = {}
        try:
            node = super().compose_document()
        finally:
            self._sizes = {}
        return node

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self._depth >= MAX_DEPTH:
            event: Any = self.peek_event()
            raise LimitError(f"nested more than {MAX_DEPTH} levels deep (mappings and lists)", event.start_mark)
        is_alias = self.check_event(yaml.AliasEvent)
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if node is None:
            return None
        size = self._sizes.get(id(node))
        if size is None:
            if is_alias:  # an alias to a collection still being composed
                raise LimitError("recursive alias: a node contains itself", node.start_mark)
            if isinstance(node, yaml.ScalarNode):
                size = (1, len(node.value))
            elif isinstance(node, yaml.SequenceNode):
                size = (
                    1 + sum(self._sizes[id(c)][0] for c in node.value),
                    sum(self._sizes[id(c)][1] for c in node.value),
                )
            else:
                pairs = [self._sizes[id(c)] for kv in node.value for c in kv]
                size = (1 + sum(p[0] for p in pairs), sum(p[1] for p in pairs))
            self._sizes[id(node)] = size
        if parent is None:  # the document's root: charge the file's budget
            self.nodes += size[0]
            self.chars += size[1]
        if size[0] > MAX_NODES or self.nodes > MAX_NODES:
            raise LimitError(f"more than {MAX_NODES:,} nodes with aliases expanded (an alias bomb?)", node.start_mark)
        if size[1] > MAX_CHARS or self.chars > MAX_CHARS:
            raise LimitError(
                f"more than {MAX_CHARS:,} characters with aliases expanded (an alias bomb?)", node.start_mark
            )
        return node


def _reader_error(text: str, e: ReaderError) -> LimitError:
    """A ReaderError (no line, multi-line message) as a one-line error with its line and column."""
    data = text.encode("utf-8", "surrogatepass")  # libyaml counts bytes of the UTF-8 text
    pos = max(0, min(e.position, len(data)))
    line = data.count(b"\n", 0, pos)
    column = len(data[data.rfind(b"\n", 0, pos) + 1 : pos].decode("utf-8", "replace"))
    code = e.character if isinstance(e.character, int) else ord(str(e.character)[:1] or "\0")
    name = {0: " (NUL)", 0x1B: " (ESC)", 0x7F: " (DEL)"}.get(code, "")
    return LimitError(
        f"character U+{code:04X}{name} is not allowed in YAML (control characters are not text)",
        Mark("<text>", pos, line, column, None, None),  # type: ignore[arg-type]
        "remove the character (or the file, if it is binary)",
    )


def iter_documents(text: str) -> Iterator[tuple[yaml.Node, Any]]:
    """(node, data) of every YAML document of ``text``, within the limits; ``data`` is ``None`` for an empty
    document. Raises ``yaml.YAMLError`` (a ``MarkedYAMLError`` with ``problem_mark`` for every problem but an
    I/O one) at the first problem, after yielding the documents before it."""
    try:
        loader = _Loader(text)
    except ReaderError as e:
        raise _reader_error(text, e) from None
    try:
        while True:
            try:
                if not loader.check_node():
                    break
                node = loader.get_node()
                if node is None:
                    break
                data = loader.construct_document(node)
            except ReaderError as e:
                raise _reader_error(text, e) from None
            except MarkedYAMLError as e:
                if "maximum nesting depth" in str(e.problem):  # libyaml's own limit (1,000), met while scanning ahead
                    raise LimitError(
                        f"nested more than {MAX_DEPTH} levels deep (mappings and lists)", e.problem_mark
                    ) from None
                raise
            except RecursionError:  # a safety net: MAX_DEPTH keeps far below the interpreter's limit
                raise LimitError("nested too deeply", None) from None
            yield node, data
    finally:
        loader.dispose()


def load_all(text: str) -> list[Any]:
    """Every document of ``text`` (``None`` for empty ones), within the limits."""
    return [data for _, data in iter_documents(text)]


def load_file(path: str | os.PathLike[str], *, root: str | os.PathLike[str] | None = None) -> list[Any]:
    """Every document of the YAML file ``path`` (see :func:`read_text` and :func:`load_all`)."""
    return load_all(read_text(Path(path), root=root))


def describe(e: yaml.YAMLError) -> tuple[str, int, int | None]:
    """(one-line message, 1-based line, 1-based column or None) of a YAML error."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, None)
    problem = getattr(e, "problem", None) or str(e)
    context = getattr(e, "context", None)
    cmark = getattr(e, "context_mark", None)
    msg = str(problem)
    if context:
        msg += f" {context}"
        if cmark is not None and mark is not None and (cmark.line, cmark.column) != (mark.line, mark.column):
            msg += f" started at line {cmark.line + 1}, column {cmark.column + 1}"
    return " ".join(msg.split()), line, col
