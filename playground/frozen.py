"""Fast constructors for the frozen, slotted dataclasses built on every analysis tick (and every backtest row).

A frozen dataclass's generated ``__init__`` sets each field through ``object.__setattr__`` (a global lookup, an
attribute lookup and a call per field); a streamed backtest builds a ``CanaryState``, a ``TickResult`` and one
``MetricCheck`` per metric on every tick, and those ``__init__`` calls were about a fifth of its time.
``fast_init(cls)`` returns a function with the same parameters (names, order, defaults) that builds the same
instance by calling each slot descriptor's ``__set__`` directly (or, without ``__slots__``, by setting its
``__dict__`` at once): the object is equal to, and indistinguishable from, ``cls(...)`` (a ``default_factory``
is called per instance, as by ``__init__``). Classes it cannot reproduce exactly (a ``__post_init__``,
keyword-only fields, slots mixed with a ``__dict__``) get ``cls`` itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def fast_init(cls: type[T]) -> Callable[..., T]:
    """A constructor equivalent to ``cls(...)`` for a frozen dataclass without ``__post_init__``."""
    if not dataclasses.is_dataclass(cls) or hasattr(cls, "__post_init__"):
        return cls
    fields = dataclasses.fields(cls)
    slotted = "__slots__" in cls.__dict__
    if slotted and len(fields) != len(cls.__dict__["__slots__"]):
        return cls
    if not slotted and (not cls.__dictoffset__ or any("__slots__" in b.__dict__ for b in cls.__mro__[1:-1])):
        return cls
    if any(f.kw_only or not f.name.isidentifier() or f.name.startswith("_f_") for f in fields):
        return cls
    ns: dict[str, Any] = {"_f_new": object.__new__, "_f_cls": cls, "_f_set": object.__setattr__, "_f_none": _NONE}
    params: list[str] = []
    body = ["    _f_o = _f_new(_f_cls)"]
    values: list[tuple[str, str]] = []
    for i, f in enumerate(fields):
        if f.default is not dataclasses.MISSING:
            ns[f"_f_d{i}"] = f.default
            default = f"_f_d{i}"
        elif f.default_factory is not dataclasses.MISSING:
            ns[f"_f_df{i}"] = f.default_factory
            default = f"_f_df{i}()"
        else:
            default = ""
        if f.init:
            if default.endswith("()"):
                params.append(f"{f.name}=_f_none")
                body.append(f"    if {f.name} is _f_none:\n        {f.name} = {default}")
            else:
                params.append(f"{f.name}={default}" if default else f.name)
            values.append((f.name, f.name))
        elif default:
            values.append((f.name, default))
        # a field with neither init nor default is left unset, as by __init__
    if slotted:
        for i, (name, value) in enumerate(values):
            ns[f"_f_s{i}"] = getattr(cls, name).__set__
            body.append(f"    _f_s{i}(_f_o, {value})")
    else:
        body.append(f"    _f_set(_f_o, '__dict__', {{{', '.join(f'{n!r}: {v}' for n, v in values)}}})")
    body.append("    return _f_o")
    exec(f"def {cls.__name__}({', '.join(params)}):\n" + "\n".join(body), ns)
    build: Callable[..., T] = ns[cls.__name__]
    build.__doc__ = f"Same as {cls.__qualname__}(...), without the frozen __init__'s object.__setattr__ per field."
    return build


_NONE: Any = object()  # "argument not given" for fields with a default_factory
