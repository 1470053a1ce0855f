"""Typed models of the manifests the engine reads.

Canary, MetricTemplate and AlertProvider follow Flagger's ``flagger.app/v1beta1`` schema (field names in
camelCase, exactly as in YAML). Deployment and HorizontalPodAutoscaler are modelled only as far as the engine
reads them; everything else in those objects is kept verbatim in ``raw``.

Models are strict about the fields they own (``extra="forbid"``) so that a typo such as ``stepweight`` is
reported instead of silently ignored; free-form Istio fields (trafficPolicy, corsPolicy, ...) stay dicts.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from playground.durations import parse_duration  # noqa: F401  (re-exported: models name the duration fields)

CANARY_API: Final = "flagger.app/v1beta1"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class ObjectMeta(_Open):
    name: str
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class CrossNamespaceRef(_Model):
    apiVersion: str | None = None
    kind: str | None = None
    name: str
    namespace: str | None = None


class LocalObjectRef(_Open):
    apiVersion: str | None = None
    kind: str | None = None
    name: str


# ---------------------------------------------------------------------------------------------- Canary


class StringMatch(_Model):
    exact: str | None = None
    prefix: str | None = None
    suffix: str | None = None
    regex: str | None = None


class HTTPMatchRequest(_Open):
    """Istio HTTPMatchRequest subset used by A/B testing (``analysis.match``)."""

    name: str | None = None
    headers: dict[str, StringMatch] = Field(default_factory=dict)
    uri: StringMatch | None = None
    method: StringMatch | None = None
    queryParams: dict[str, StringMatch] = Field(default_factory=dict)
    sourceLabels: dict[str, str] = Field(default_factory=dict)


class ThresholdRange(_Model):
    min: float | None = None
    max: float | None = None


class MetricJudge(_Model):
    """Extension (off unless set): judge a metric by comparing canary samples with primary samples over the
    metric's interval with a Mann-Whitney U test (``playground.judge``), instead of (or after) a threshold.

    ``confidence``: 1 - alpha of the test. ``direction``: which change is bad (``increase`` e.g. latency,
    ``decrease`` e.g. success rate, ``either``); the test is one-sided for increase/decrease. ``allowedIncrease`` /
    ``allowedDecrease``: tolerated change of the canary relative to the primary, in percent (Hodges-Lehmann
    shift / primary median). Decision: ``fail`` = significant and beyond the allowance; ``marginal`` = only one
    of the two (the check passes, flagged); ``pass`` = neither. ``critical``: a failed judgement sets
    failedChecks to the analysis threshold, so the next tick rolls back whatever the threshold. ``noData``:
    fewer than ``minSamples`` finite samples on either side fails (default) or passes the check. ``step``:
    spacing of the samples queried live (a range query over the last ``interval``).
    """

    confidence: float = Field(0.95, gt=0, lt=1)
    direction: Literal["increase", "decrease", "either"] = "increase"
    allowedIncrease: float = Field(10.0, ge=0)
    allowedDecrease: float = Field(10.0, ge=0)
    critical: bool = False
    noData: Literal["fail", "pass"] = "fail"
    minSamples: int = Field(3, ge=1)
    step: str = "10s"


class CanaryMetric(_Model):
    name: str
    interval: str | None = None
    threshold: float | None = None  # deprecated by Flagger, kept for compatibility
    thresholdRange: ThresholdRange | None = None
    query: str | None = None
    templateRef: CrossNamespaceRef | None = None
    templateVariables: dict[str, str] = Field(default_factory=dict)
    # Extension (documented in README): what an empty/NaN result means. Flagger's behaviour is "fail".
    noData: Literal["fail", "pass"] = "fail"
    # Extension (off by default): statistical canary-vs-primary judgement, see MetricJudge.
    judge: MetricJudge | None = None


class HookType(str, Enum):
    confirm_rollout = "confirm-rollout"
    pre_rollout = "pre-rollout"
    rollout = "rollout"
    confirm_traffic_increase = "confirm-traffic-increase"
    confirm_promotion = "confirm-promotion"
    post_rollout = "post-rollout"
    rollback = "rollback"
    event = "event"


class CanaryWebhook(_Model):
    name: str
    type: HookType = HookType.rollout
    url: str
    timeout: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    retries: int = 0
    muteAlert: bool = False
    disableTLS: bool = False

    @field_validator("type", mode="before")
    @classmethod
    def _default_type(cls, v: Any) -> Any:
        # Flagger's CRD accepts "" for the default type.
        return HookType.rollout if v in ("", None) else v


class AlertSeverity(str, Enum):
    info = "info"
    warn = "warn"
    error = "error"


class CanaryAlert(_Model):
    name: str
    severity: AlertSeverity = AlertSeverity.info
    providerRef: CrossNamespaceRef

    @field_validator("severity", mode="before")
    @classmethod
    def _default_severity(cls, v: Any) -> Any:
        # Flagger's CRD accepts "" for the default severity.
        return AlertSeverity.info if v in ("", None) else v


class SessionAffinity(_Model):
    cookieName: str
    maxAge: int = 86400
    primaryCookieName: str | None = None
    domain: str | None = None
    httpOnly: bool = False
    partitioned: bool = False
    path: str | None = None
    sameSite: str | None = None
    secure: bool = False


class CanaryAnalysis(_Model):
    interval: str | None = None
    iterations: int = 0
    mirror: bool = False
    mirrorWeight: int = 0
    maxWeight: int = 0
    stepWeight: int = 0
    stepWeights: list[int] = Field(default_factory=list)
    stepWeightPromotion: int = 0
    threshold: int = 0
    primaryReadyThreshold: int | None = None
    canaryReadyThreshold: int | None = None
    alerts: list[CanaryAlert] = Field(default_factory=list)
    metrics: list[CanaryMetric] = Field(default_factory=list)
    webhooks: list[CanaryWebhook] = Field(default_factory=list)
    match: list[HTTPMatchRequest] = Field(default_factory=list)
    sessionAffinity: SessionAffinity | None = None


class CanaryService(_Model):
    name: str | None = None
    port: int
    portName: str | None = None
    targetPort: int | str | None = None
    portDiscovery: bool = False
    appProtocol: str | None = None
    trafficDistribution: str | None = None
    headless: bool = False
    backendTimeout: str | None = None
    meshName: str | None = None
    gatewayRefs: list[dict[str, Any]] = Field(default_factory=list)
    unmanagedMetadata: dict[str, Any] | None = None
    hosts: list[str] = Field(default_factory=list)
    gateways: list[str] = Field(default_factory=list)
    delegation: bool = False
    match: list[HTTPMatchRequest] = Field(default_factory=list)
    rewrite: dict[str, Any] | None = None
    retries: dict[str, Any] | None = None
    headers: dict[str, Any] | None = None
    mirror: dict[str, Any] | list[dict[str, Any]] | None = None  # a list for the Gateway API provider
    corsPolicy: dict[str, Any] | None = None
    trafficPolicy: dict[str, Any] | None = None
    timeout: str | None = None
    apex: dict[str, Any] | None = None
    primary: dict[str, Any] | None = None
    canary: dict[str, Any] | None = None
    backends: list[str] = Field(default_factory=list)


class CanarySpec(_Model):
    provider: str | None = None
    metricsServer: str | None = None
    targetRef: LocalObjectRef
    autoscalerRef: LocalObjectRef | None = None
    ingressRef: LocalObjectRef | None = None
    routeRef: LocalObjectRef | None = None
    upstreamRef: LocalObjectRef | None = None
    service: CanaryService
    analysis: CanaryAnalysis = Field(default_factory=CanaryAnalysis)
    progressDeadlineSeconds: int = 600
    skipAnalysis: bool = False
    revertOnDeletion: bool = False
    suspend: bool = False


class Phase(str, Enum):
    Initializing = "Initializing"
    Initialized = "Initialized"
    Waiting = "Waiting"
    Progressing = "Progressing"
    WaitingPromotion = "WaitingPromotion"
    Promoting = "Promoting"
    Finalising = "Finalising"
    Succeeded = "Succeeded"
    Failed = "Failed"
    Terminating = "Terminating"


class ControlAction(str, Enum):
    """Operator controls (``playground promote|abort|retry|pause|resume``), as requests in the Canary status."""

    promote = "promote"  # pass the current gate (one step)
    promote_full = "promote-full"  # skip the remaining steps and promote
    abort = "abort"  # roll back now
    retry = "retry"  # analyse a Failed revision again
    pause = "pause"  # hold the analysis
    resume = "resume"  # continue a paused analysis


class ControlRequest(_Open):
    """One operator request, persisted in ``CanaryStatus.requests`` until the controller consumes it at its next
    tick (a release driven by another process sees it there)."""

    id: str
    action: ControlAction
    by: str = ""  # who asked: a user (user@host) or a Dagster run
    at: str | None = None  # RFC 3339 time of the request


class CanaryStatus(_Open):
    phase: Phase = Phase.Initializing
    canaryWeight: int = 0
    failedChecks: int = 0
    iterations: int = 0
    lastAppliedSpec: str | None = None
    lastPromotedSpec: str | None = None
    lastTransitionTime: str | None = None
    trackedConfigs: dict[str, str] = Field(default_factory=dict)
    conditions: list[dict[str, Any]] = Field(default_factory=list)
    # Extensions (operator controls, docs/design.md "Operator controls"):
    paused: bool = False  # held by `playground pause` until `playground resume`
    fullPromotion: bool = False  # `promote --full`: the promotion routes, finalises and succeeds in one tick
    requests: list[ControlRequest] = Field(default_factory=list)  # operator requests not consumed yet
    lastTickTime: str | None = None  # RFC 3339 time of the controller's last tick (who drives: see ``driver``)
    driver: str | None = None  # the process driving the release (a Dagster run, `playground release`...)
    driverSince: str | None = None  # RFC 3339 time the driver took the release (alive before its first tick)
    tickInterval: float | None = None  # seconds between the driver's ticks
    lastChecks: list[dict[str, Any]] = Field(default_factory=list)  # the last analysis tick's metric checks
    events: list[dict[str, Any]] = Field(default_factory=list)  # recent events (time, message), newest last


class Canary(_Model):
    apiVersion: Literal["flagger.app/v1beta1"] = CANARY_API
    kind: Literal["Canary"] = "Canary"
    metadata: ObjectMeta
    spec: CanarySpec
    status: CanaryStatus | None = None

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace or "default"

    @property
    def key(self) -> str:
        """``namespace/name``: how targets are named on the command line and in Dagster."""
        return f"{self.namespace}/{self.name}"


# ------------------------------------------------------------------------------------- MetricTemplate


class MetricProvider(_Model):
    type: str = "prometheus"
    address: str | None = None
    headers: dict[str, list[str]] = Field(default_factory=dict)
    secretRef: LocalObjectRef | None = None
    insecureSkipVerify: bool = False
    region: str | None = None


class MetricTemplateSpec(_Model):
    provider: MetricProvider
    query: str


class MetricTemplate(_Model):
    apiVersion: Literal["flagger.app/v1beta1"] = CANARY_API
    kind: Literal["MetricTemplate"] = "MetricTemplate"
    metadata: ObjectMeta
    spec: MetricTemplateSpec


# -------------------------------------------------------------------------------------- AlertProvider


class AlertProviderType(str, Enum):
    slack = "slack"
    msteams = "msteams"
    discord = "discord"
    rocket = "rocket"
    gchat = "gchat"
    webhook = "webhook"  # generic JSON


class AlertProviderSpec(_Model):
    type: AlertProviderType
    channel: str | None = None
    username: str | None = None
    # Flagger allows an inline address; we reject it in validation (addresses come from secrets/env).
    address: str | None = None
    proxy: str | None = None
    secretRef: LocalObjectRef | None = None
    # Extension: name of an environment variable holding the address (for the local playground).
    addressFromEnv: str | None = None


class AlertProvider(_Model):
    apiVersion: Literal["flagger.app/v1beta1"] = CANARY_API
    kind: Literal["AlertProvider"] = "AlertProvider"
    metadata: ObjectMeta
    spec: AlertProviderSpec


# --------------------------------------------------------------------------- Deployment / HPA (subset)


class Probe(_Open):
    httpGet: dict[str, Any] | None = None
    tcpSocket: dict[str, Any] | None = None
    exec: dict[str, Any] | None = None
    initialDelaySeconds: int = 0
    periodSeconds: int = 10
    timeoutSeconds: int = 1
    failureThreshold: int = 3
    successThreshold: int = 1


class Container(_Open):
    name: str
    image: str
    command: list[str] = Field(default_factory=list)
    args: list[str] = Field(default_factory=list)
    env: list[dict[str, Any]] = Field(default_factory=list)
    envFrom: list[dict[str, Any]] = Field(default_factory=list)
    ports: list[dict[str, Any]] = Field(default_factory=list)
    readinessProbe: Probe | None = None
    livenessProbe: Probe | None = None


class PodSpec(_Open):
    containers: list[Container]
    volumes: list[dict[str, Any]] = Field(default_factory=list)


class PodTemplate(_Open):
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: PodSpec


class DeploymentSpec(_Open):
    replicas: int | None = None
    selector: dict[str, Any] = Field(default_factory=dict)
    template: PodTemplate
    progressDeadlineSeconds: int | None = None
    minReadySeconds: int = 0


class Deployment(_Open):
    apiVersion: Literal["apps/v1"] = "apps/v1"
    kind: Literal["Deployment"] = "Deployment"
    metadata: ObjectMeta
    spec: DeploymentSpec


class HPASpec(_Open):
    scaleTargetRef: LocalObjectRef
    minReplicas: int = 1
    maxReplicas: int

    @field_validator("maxReplicas")
    @classmethod
    def _positive(cls, v: int) -> int:
        if v < 1:
            raise ValueError("maxReplicas must be at least 1")
        return v


class HorizontalPodAutoscaler(_Open):
    apiVersion: str = "autoscaling/v2"
    kind: Literal["HorizontalPodAutoscaler"] = "HorizontalPodAutoscaler"
    metadata: ObjectMeta
    spec: HPASpec


MODELS: dict[str, type[BaseModel]] = {
    "Canary": Canary,
    "MetricTemplate": MetricTemplate,
    "AlertProvider": AlertProvider,
    "Deployment": Deployment,
    "HorizontalPodAutoscaler": HorizontalPodAutoscaler,
}
