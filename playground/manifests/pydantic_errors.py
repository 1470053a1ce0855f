"""Pydantic error translation: turn a pydantic ``ValidationError`` entry of a modelled kind into one
:class:`~playground.manifests.findings.Finding` with the field path as the user wrote it, the expected type in
words and, for an unknown field, a "did you mean" suggestion. Pure, no I/O.
"""

from __future__ import annotations

import difflib
import enum
import types
import typing
from typing import Any, Union

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from playground.manifests.findings import FieldPath, Finding
from playground.manifests.objects import ManifestObject

_TYPE_WORDS = {
    int: "an integer",
    float: "a number",
    bool: "true or false",
    str: "a string",
    dict: "a mapping",
    list: "a list",
}


def _candidates(tp: Any) -> list[Any]:
    """The concrete types behind an annotation (unwrapping Optional/Union/Annotated)."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _candidates(typing.get_args(tp)[0])
    if origin is Union or origin is types.UnionType:
        out = []
        for a in typing.get_args(tp):
            if a is not type(None):
                out.extend(_candidates(a))
        return out
    return [tp]


def _resolve_loc(cls: type[BaseModel], loc: tuple) -> tuple[FieldPath, list[Any], type[BaseModel] | None]:
    """Map a pydantic error location to the YAML field path.

    Drops the entries pydantic adds for union members (``int``, ``str``, ``function-after[...]``...). Returns
    (path, the candidate types at the end of the path, the model owning the last field).
    """
    cur: list[Any] = [cls]
    owner: type[BaseModel] | None = None
    path: list[str | int] = []
    for i, item in enumerate(loc):
        nxt: list[Any] = []
        new_owner = None
        for tp in (c for t in cur for c in _candidates(t)):
            origin = typing.get_origin(tp)
            if isinstance(item, int) and origin in (list, tuple, set):
                nxt.append(typing.get_args(tp)[0] if typing.get_args(tp) else Any)
            elif isinstance(item, str) and origin is dict:
                args = typing.get_args(tp)
                nxt.append(args[1] if len(args) == 2 else Any)
            elif isinstance(tp, type) and issubclass(tp, BaseModel) and isinstance(item, str):
                fld = tp.model_fields.get(item)
                if fld is None:
                    fld = next((f for f in tp.model_fields.values() if f.alias == item), None)
                if fld is not None:
                    nxt.append(fld.annotation)
                    new_owner = tp
        if nxt:
            path.append(item)
            cur = nxt
            owner = new_owner or owner
        elif isinstance(item, int) or (
            i == len(loc) - 1
            and any(
                typing.get_origin(c) is dict or (isinstance(c, type) and issubclass(c, (BaseModel, dict)))
                for t in cur
                for c in _candidates(t)
            )
        ):
            path.append(item)  # e.g. the unknown key of an extra_forbidden error
            owner = next(
                (c for t in cur for c in _candidates(t) if isinstance(c, type) and issubclass(c, BaseModel)), owner
            )
            cur = []
        # else: a union-member tag ("int", "str", "function-after[...]"), not a field: drop it
    return tuple(path), cur, owner


def _choices(types_: list[Any]) -> list[str]:
    for c in (c for t in types_ for c in _candidates(t)):
        if isinstance(c, type) and issubclass(c, enum.Enum):
            return [str(m.value) for m in c]
        if typing.get_origin(c) is typing.Literal:
            return [str(a) for a in typing.get_args(c)]
    return []


def _translate_error(obj: ManifestObject, cls: type[BaseModel], err: ErrorDetails) -> Finding:
    path, end_types, owner = _resolve_loc(cls, tuple(err["loc"]))
    typ = err["type"]
    inp = err.get("input")
    if typ == "extra_forbidden":
        key = str(path[-1])
        allowed = sorted(owner.model_fields) if owner is not None else []
        close = [a for a in allowed if a.lower() == key.lower()] or difflib.get_close_matches(key, allowed, n=1)
        if close:
            return obj.finding(path, f"unknown field; did you mean {close[0]}?", f"rename it to {close[0]}")
        return obj.finding(
            path, "unknown field", "remove it" + (f"; fields allowed here: {', '.join(allowed)}" if allowed else "")
        )
    if typ == "missing":
        return obj.finding(path, "required field missing", f"add {path[-1]}")
    choices = _choices(end_types)
    if typ in ("enum", "literal_error") or (choices and typ.endswith("_type") and isinstance(inp, str)):
        close = difflib.get_close_matches(str(inp), choices, n=1, cutoff=0.6)
        msg = f"invalid value {inp!r}" + (f"; did you mean {close[0]}?" if close else "")
        return obj.finding(path, msg, f"use one of {', '.join(choices)}" if choices else "")
    if typ == "value_error":
        text = str(err.get("msg", "")).removeprefix("Value error, ")
        return obj.finding(path, text)
    if typ in (
        "int_from_float",
        "int_parsing",
        "int_type",
        "float_parsing",
        "float_type",
        "bool_parsing",
        "bool_type",
        "string_type",
        "dict_type",
        "list_type",
        "model_type",
        "model_attributes_type",
    ):
        want = _expected_words(end_types, typ)
        return obj.finding(path, f"expected {want}, got {_show(inp)}", f"set it to {want}")
    return obj.finding(path, f"{err.get('msg', typ)} (got {_show(inp)})")


def _expected_words(types_: list[Any], typ: str) -> str:
    words = []
    for c in (c for t in types_ for c in _candidates(t)):
        origin = typing.get_origin(c) or c
        w: str | None
        if isinstance(origin, type) and issubclass(origin, BaseModel):
            w = "a mapping"
        else:
            w = _TYPE_WORDS.get(origin) if isinstance(origin, type) else None
        if w and w not in words:
            words.append(w)
    if words:
        return " or ".join(words)
    return {
        "int": "an integer",
        "float": "a number",
        "bool": "true or false",
        "string": "a string",
        "dict": "a mapping",
        "list": "a list",
        "model": "a mapping",
    }.get(typ.split("_")[0], "another type")


def _show(v: Any) -> str:
    if isinstance(v, dict):
        return "a mapping"
    if isinstance(v, list):
        return "a list"
    if v is None:
        return "nothing (null)"
    return repr(v)
