"""Findings: one problem in the manifests (:class:`Finding`), printable as one line
``file:line: Kind ns/name: field: message. Fix: ...``, with its severity (:data:`ERROR` or :data:`WARNING`) and
the dotted field path helpers (:data:`FieldPath`, :func:`format_field`). Pure, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from playground.textsafe import one_line

ERROR = "error"


WARNING = "warning"


FieldPath = tuple[str | int, ...]


@dataclass(frozen=True)
class Finding:
    """One problem in the manifests, printable as one line: ``file:line: Kind ns/name: field: message. Fix: ...``.

    ``file`` is the path as the user would open it (the PATH given to ``validate`` joined with the path inside
    it); ``line`` (and ``column`` when known) are 1-based; ``document`` is the 0-based index of the YAML
    document in the file; ``field`` is a dotted path like ``spec.analysis.metrics[0].templateRef``.
    """

    file: str
    line: int
    message: str
    fix: str = ""
    kind: str = ""
    name: str = ""
    field: str = ""
    document: int = 0
    column: int | None = None
    severity: str = ERROR

    @property
    def is_error(self) -> bool:
        return self.severity == ERROR

    def __str__(self) -> str:
        """One line: every part escaped (names and values come from the files) and capped, so that a 300 KB
        name still leaves the message and the fix readable."""
        where = one_line(f"{self.file}", 300) + f":{self.line}" + (f":{self.column}" if self.column else "")
        parts = [where]
        if self.severity != ERROR:
            parts.append(self.severity)
        if self.kind:
            parts.append(one_line(f"{self.kind} {self.name}".rstrip(), 160))
        if self.field:
            parts.append(one_line(self.field, 160))
        text = ": ".join(parts) + ": " + one_line(self.message, 400)
        if self.fix:
            text += ("" if text.endswith((".", "?", "!")) else ".") + f" Fix: {one_line(self.fix, 300)}"
        return one_line(text)

    def sort_key(self) -> tuple:
        return (self.file, self.line, self.column or 0, self.field, self.message)


def format_field(path: Iterable[str | int]) -> str:
    """``("spec", "analysis", "metrics", 0, "name")`` -> ``spec.analysis.metrics[0].name``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out
