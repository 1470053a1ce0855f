"""Contracts between the pure analysis state machine and the I/O that feeds it.

The state machine (``playground.analysis``) never performs I/O. What it must know during a tick that can only
be learned by asking the outside world (a webhook's answer, a metric's current value) it asks through a
``Probe``. Live runs use a probe that calls real webhooks and Prometheus (``playground.hooks``,
``playground.metrics``); backtests use a probe that reads a recorded trace. Side effects (routing, scaling,
promotion, post-rollout/event hooks, alerts) are returned by the state machine as actions and carried out by
the controller.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from playground.models import CanaryMetric, CanaryWebhook, ControlRequest, Phase


@dataclass(frozen=True)
class MetricValue:
    """One metric query result. ``value is None`` means "no values" (empty result or NaN)."""

    name: str
    value: float | None
    query: str = ""
    error: str | None = None  # the query could not be run (unreachable provider, bad template...): a failed check


@dataclass(frozen=True)
class MetricSamples:
    """Canary and primary samples of one metric over its interval, for metrics with a ``judge`` (extension).

    Non-finite values are kept here; the judge drops them. ``error`` set means the samples could not be read.
    """

    name: str
    canary: tuple[float, ...] = ()
    primary: tuple[float, ...] = ()
    query: str = ""
    error: str | None = None


@dataclass(frozen=True)
class WebhookAnswer:
    """One webhook call. Success iff an HTTP status was received and it is <= 202."""

    name: str
    status: int | None
    error: str | None = None
    body: str = ""
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.status is not None and self.status <= 202 and self.error is None


@dataclass(frozen=True)
class Readiness:
    ready: bool = True
    deadline_exceeded: bool = False
    message: str = ""


@dataclass(frozen=True)
class Observation:
    """What the controller observed before a tick (data only)."""

    revision: str  # checksum of the target's pod template (+ referenced ConfigMaps/Secrets)
    canary: Readiness = field(default_factory=Readiness)
    primary: Readiness = field(default_factory=Readiness)
    now: str | None = None  # RFC 3339 time of the tick, stored as lastTransitionTime on phase changes
    # Operator requests (promote, abort, retry, pause, resume) to apply at the start of this tick, in order.
    requests: tuple[ControlRequest, ...] = ()


class Probe(Protocol):
    """Answers the questions a tick asks. Implementations: live (HTTP, Prometheus) and trace (backtest)."""

    def webhook(self, hook: CanaryWebhook, phase: Phase) -> WebhookAnswer: ...

    def metric(self, metric: CanaryMetric) -> MetricValue: ...

    # Only asked for metrics with a ``judge`` (opt-in extension); probes of canaries without one may omit it.
    def samples(self, metric: CanaryMetric) -> MetricSamples: ...
