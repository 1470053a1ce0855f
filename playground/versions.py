"""Semantic versions and Flux's semver ranges: a port of Masterminds/semver v3 (what an ImagePolicy's
``policy.semver.range`` means in Flux). Pure: no I/O, no third-party imports, so validation
(``playground.manifests``) and the image automation (``playground.images``) share one parser cheaply.

* :class:`Version` parses tags as Masterminds' ``NewVersion`` (``v`` prefix, ``6.7`` = 6.7.0, prerelease, metadata).
* :class:`SemverRange` is a constraint (``>= 6.0.0 <7.0.0``, ``~>6.1``, ``^6``, ``6.x``, ``1.2 - 1.4``, ``||``).
* :func:`latest` picks the highest matching tag.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import total_ordering
from typing import Any

__all__ = ["Version", "SemverRange", "latest"]


_VERSION_RE = re.compile(
    r"^v?(\d+)(?:\.(\d+))?(?:\.(\d+))?"
    r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
    r"(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$"
)


@total_ordering
@dataclass(frozen=True, eq=False)
class Version:
    """A semantic version as Masterminds' ``NewVersion`` parses tags: optional ``v``, minor and patch optional
    (``6.7`` = 6.7.0), prerelease and build metadata. Ordering follows semver precedence (metadata ignored)."""

    major: int
    minor: int
    patch: int
    prerelease: str = ""
    metadata: str = ""
    original: str = ""

    @classmethod
    def parse(cls, text: str) -> Version:
        m = _VERSION_RE.match(text.strip())
        if not m:
            raise ValueError(f"{text!r} is not a semantic version")
        pre = m.group(4) or ""
        for ident in pre.split(".") if pre else []:
            if ident.isdigit() and len(ident) > 1 and ident[0] == "0":
                raise ValueError(f"{text!r}: numeric prerelease identifiers must not have leading zeros")
        return cls(int(m.group(1)), int(m.group(2) or 0), int(m.group(3) or 0), pre, m.group(5) or "", text)

    @classmethod
    def try_parse(cls, text: str) -> Version | None:
        try:
            return cls.parse(text)
        except ValueError:
            return None

    def _pre_key(self) -> tuple[Any, ...]:
        if not self.prerelease:
            return (1,)  # a release ranks above all its prereleases
        parts: list[tuple[int, int, str]] = []
        for ident in self.prerelease.split("."):
            parts.append((0, int(ident), "") if ident.isdigit() else (1, 0, ident))
        return (0, tuple(parts))

    def key(self) -> tuple[Any, ...]:
        return (self.major, self.minor, self.patch, self._pre_key())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Version) and self.key() == other.key()

    def __lt__(self, other: Version) -> bool:
        return self.key() < other.key()

    def __hash__(self) -> int:
        return hash(self.key())

    def __str__(self) -> str:
        s = f"{self.major}.{self.minor}.{self.patch}"
        if self.prerelease:
            s += f"-{self.prerelease}"
        if self.metadata:
            s += f"+{self.metadata}"
        return s


# Masterminds/semver v3 constraint grammar (constraints.go), ported.
_CV = (
    r"v?([0-9xX*]+)(\.[0-9xX*]+)?(\.[0-9xX*]+)?"
    r"(-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
    r"(\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
)
_OPS = r"!=|>=|=>|<=|=<|~>|>|<|=|~|\^|"
_CONSTRAINT_RE = re.compile(rf"^\s*({_OPS})\s*({_CV})\s*$")
_FIND_RE = re.compile(rf"({_OPS})\s*({_CV})")
_VALID_RE = re.compile(rf"^(\s*({_OPS})\s*({_CV})\s*)((?:\s+|,\s*)({_OPS})\s*({_CV})\s*)*$")
_RANGE_RE = re.compile(rf"\s*({_CV})\s+-\s+({_CV})\s*")


def _is_x(s: str) -> bool:
    return s in ("x", "X", "*")


@dataclass(frozen=True)
class _Constraint:
    op: str
    con: Version
    orig: str
    dirty: bool = False
    minor_dirty: bool = False
    patch_dirty: bool = False

    @classmethod
    def parse(cls, text: str) -> _Constraint:
        m = _CONSTRAINT_RE.match(text)
        if not m:
            raise ValueError(f"improper constraint: {text}")
        op, orig, major, minor, patch, pre = m.group(1), m.group(2), m.group(3), m.group(4), m.group(5), m.group(6)
        pre = pre or ""
        dirty = minor_dirty = patch_dirty = False
        if _is_x(major):
            ver, dirty = f"0.0.0{pre}", True
        elif not minor or _is_x(minor[1:]):
            ver, dirty, minor_dirty = f"{major}.0.0{pre}", True, True
        elif not patch or _is_x(patch[1:]):
            ver, dirty, patch_dirty = f"{major}{minor}.0{pre}", True, True
        else:
            ver = orig
        if any(_is_x(p.lstrip(".")) for p in (minor or "", patch or "") if p) and not dirty:
            raise ValueError(f"improper constraint: {text}")
        return cls(
            {"=>": ">=", "=<": "<=", "~>": "~"}.get(op, op), Version.parse(ver), orig, dirty, minor_dirty, patch_dirty
        )

    # Each check returns whether ``v`` satisfies this constraint. A prerelease version never satisfies a
    # constraint whose own version has no prerelease (Masterminds' rule, as in npm and Cargo).
    def check(self, v: Version) -> bool:
        if v.prerelease and not self.con.prerelease:
            return False
        return {
            "": self._tilde_or_equal,
            "=": self._tilde_or_equal,
            "!=": self._not_equal,
            ">": self._greater,
            "<": self._less,
            ">=": self._greater_equal,
            "<=": self._less_equal,
            "~": self._tilde,
            "^": self._caret,
        }[self.op](v)

    def _not_equal(self, v: Version) -> bool:
        c = self.con
        if self.dirty:
            if c.major != v.major:
                return True
            if c.minor != v.minor and not self.minor_dirty:
                return True
            if self.minor_dirty:
                return False
            if c.patch != v.patch and not self.patch_dirty:
                return True
            if self.patch_dirty:
                if v.prerelease or c.prerelease:
                    return Version(0, 0, 0, v.prerelease)._pre_key() != Version(0, 0, 0, c.prerelease)._pre_key()
                return False
        return v != c

    def _greater(self, v: Version) -> bool:
        c = self.con
        if not self.dirty:
            return v > c
        if v.major > c.major:
            return True
        if v.major < c.major or self.minor_dirty:
            return False
        if self.patch_dirty:
            return v.minor > c.minor
        return v > c

    def _less(self, v: Version) -> bool:
        return v < self.con

    def _greater_equal(self, v: Version) -> bool:
        return v >= self.con

    def _less_equal(self, v: Version) -> bool:
        c = self.con
        if not self.dirty:
            return v <= c
        if v.major > c.major:
            return False
        if v.major == c.major and v.minor > c.minor and not self.minor_dirty:
            return False
        return True

    def _tilde(self, v: Version) -> bool:
        c = self.con
        if v < c:
            return False
        if (c.major, c.minor, c.patch) == (0, 0, 0) and not self.minor_dirty and not self.patch_dirty:
            return True  # ~0.0.0 and ~* accept everything
        if v.major != c.major:
            return False
        return not (v.minor != c.minor and not self.minor_dirty)

    def _tilde_or_equal(self, v: Version) -> bool:
        if self.dirty:
            return self._tilde(v)
        return v == self.con

    def _caret(self, v: Version) -> bool:
        c = self.con
        if v < c:
            return False
        if c.major > 0 or self.minor_dirty:
            return v.major == c.major
        if v.major > 0:
            return False
        if c.minor > 0 or self.patch_dirty:
            return v.minor == c.minor
        if v.minor > 0:
            return False
        return v.patch == c.patch

    def __str__(self) -> str:
        return f"{self.op}{self.orig}"


class SemverRange:
    """A semver range with Masterminds/semver v3 semantics, as Flux's ``ImagePolicy.spec.policy.semver.range``.

    * AND: constraints separated by spaces or commas (``>=6.0.0 <7.0.0``, ``>= 1.2, < 3``); OR: ``||``.
    * Operators ``=`` (default) ``!=`` ``>`` ``<`` ``>=`` ``<=`` ``~`` (``~>``) ``^``; a leading ``v`` is allowed.
    * X-ranges: ``6.x``, ``6.1.*``, ``*`` (``6.x`` = ``>=6.0.0 <7.0.0``); hyphen ranges ``1.2 - 1.4.5``
      (= ``>=1.2 <=1.4.5``).
    * ``~1.2.3`` = ``>=1.2.3 <1.3.0``, ``~1`` = ``>=1 <2``; ``^1.2.3`` = ``>=1.2.3 <2.0.0``, ``^0.2.3`` =
      ``>=0.2.3 <0.3.0``, ``^0.0.3`` = ``0.0.3`` only.
    * A prerelease version (``6.8.0-rc.1``) only satisfies a constraint that itself names a prerelease
      (``>=6.8.0-0``): ranges without prereleases never pick release candidates.

    Raises ``ValueError`` (with the expression) for an invalid range.
    """

    def __init__(self, expr: str):
        self.expr = str(expr)
        text = _RANGE_RE.sub(lambda m: f">= {m.group(1)}, <= {m.group(9)}", self.expr)
        self.alternatives: list[list[_Constraint]] = []
        for segment in text.split("||"):
            if not segment.strip():
                self.alternatives.append([_Constraint.parse("*")])  # "" is "*", as in Masterminds
                continue
            if not _VALID_RE.match(segment):
                raise ValueError(
                    f"invalid semver range {self.expr!r}: improper constraint {segment.strip()!r}; "
                    'use comparisons like ">=6.0.0 <7.0.0", "~6.1", "^6" or "6.x"'
                )
            self.alternatives.append(
                [_Constraint.parse(m.group(0)) for m in _FIND_RE.finditer(segment) if m.group(0).strip()]
            )

    def __repr__(self) -> str:
        return f"SemverRange({self.expr!r})"

    def __str__(self) -> str:
        return " || ".join(" ".join(str(c) for c in alt) for alt in self.alternatives)

    def matches(self, version: str | Version) -> bool:
        """Whether ``version`` (a Version or tag text; non-semver text never matches) is in the range."""
        v = version if isinstance(version, Version) else Version.try_parse(str(version))
        if v is None:
            return False
        return any(all(c.check(v) for c in alt) for alt in self.alternatives)

    __contains__ = matches


def latest(tags: Iterable[str], range_: str | SemverRange) -> str | None:
    """The tag with the highest semantic version in ``range_`` (tags that are not semver are ignored); the first
    one listed wins among equal versions (``6.7`` and ``6.7.0``). None when nothing matches."""
    rng = range_ if isinstance(range_, SemverRange) else SemverRange(range_)
    best: tuple[Version, str] | None = None
    for tag in tags:
        v = Version.try_parse(tag)
        if v is None or not rng.matches(v):
            continue
        if best is None or v > best[0]:
            best = (v, tag)
    return best[1] if best else None
