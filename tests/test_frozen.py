"""playground.frozen.fast_init: the per-tick constructors build the same objects as the dataclasses' own."""

from __future__ import annotations

import dataclasses

import pytest

from playground.analysis import ALL_TO_CANARY, CanaryState, TickResult
from playground.backtest import TraceRow
from playground.checks import MetricCheck
from playground.frozen import fast_init
from playground.models import Phase
from playground.observe import MetricValue, Observation, Readiness


def same(a: object, b: object) -> None:
    assert a == b and type(a) is type(b)
    for f in dataclasses.fields(a):  # type: ignore[arg-type]
        assert getattr(a, f.name) == getattr(b, f.name), f.name
    assert repr(a) == repr(b)


@pytest.mark.parametrize(
    ("cls", "args", "kwargs"),
    [
        (CanaryState, (), {}),
        (CanaryState, (Phase.Progressing, 10, 1, 2, "a", "b", "2000-01-01T00:00:00Z", ALL_TO_CANARY, None, True), {}),
        (TickResult, (CanaryState(),), {"events": ("x",)}),
        (MetricCheck, ("m", 1.5, True, "m 1.50 within thresholdRange"), {}),
        (MetricCheck, ("m", None, False, "no values"), {"query": "q", "critical": True}),
        (MetricValue, ("m", None), {}),
        (Observation, ("1",), {}),
        (Observation, ("2", Readiness(False)), {"now": "t"}),
        (TraceRow, (), {}),
        (TraceRow, ("3",), {"metrics": {"m": 1.0}, "webhooks": {"w": 404}}),
    ],
)
def test_fast_init_builds_what_the_class_builds(cls: type, args: tuple, kwargs: dict) -> None:
    build = fast_init(cls)
    assert build is not cls  # the fast path is taken for every class built per tick
    same(build(*args, **kwargs), cls(*args, **kwargs))
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(build(*args, **kwargs), dataclasses.fields(cls)[0].name, None)


def test_default_factories_are_called_per_instance() -> None:
    build = fast_init(TraceRow)
    a, b = build(), build()
    assert a.metrics == {} and a.metrics is not b.metrics


def test_classes_it_cannot_reproduce_get_their_own_constructor() -> None:
    @dataclasses.dataclass(frozen=True)
    class Checked:
        x: int

        def __post_init__(self) -> None:
            if self.x < 0:
                raise ValueError("negative")

    assert fast_init(Checked) is Checked
