"""Load the GitOps manifests into typed models and validate them (``playground validate``).

Loading (:func:`load_tree`) reads every ``*.yaml``/``*.yml`` file under a directory (or one file), all YAML
documents of each, and keeps where every object came from: its file (relative to the tree root), its document
index in that file and the line of every field, so that each problem can be reported as one precise line::

    manifests/prod/backend/canary.yaml:39: Canary prod/backend: spec.analysis.metrics[0].templateRef: MetricTemplate istio-system/error-rat not found. Fix: use one of istio-system/error-rate, istio-system/latency

Kinds listed in :data:`playground.models.MODELS` (Canary, MetricTemplate, AlertProvider, Deployment,
HorizontalPodAutoscaler) are parsed into their pydantic models; everything else (Namespaces, Services, Istio
objects, Flux image policies, ConfigMaps, Secrets...) is kept as a plain dict.

Validation (:func:`validate`) reports, as :class:`Finding` objects:

* load problems: invalid YAML (line and column), documents that are not objects, duplicate keys, missing
  ``apiVersion``/``kind``/``metadata.name``, schema errors translated into field paths (an unknown field gets a
  "did you mean" suggestion), duplicate objects;
* canary semantics: durations, weights, strategy vs provider (A/B testing needs HTTP matching), metric
  thresholds, webhook types/timeouts, duplicate metric/webhook/alert names;
* references: MetricTemplates, AlertProviders, the target Deployment, its HPA, Gateways, image policies;
* policy: alert addresses never live in git; canary targets should have a readiness probe.

Only findings with ``severity == "error"`` make a manifest set invalid; warnings are printed but do not fail
``playground validate``. This module does no I/O besides reading the files and never imports Dagster.

Modules (one per part; every name is re-exported here, so ``from playground.manifests import X`` keeps
working): :mod:`~playground.manifests.findings`, :mod:`~playground.manifests.objects`,
:mod:`~playground.manifests.loading`, :mod:`~playground.manifests.pydantic_errors`,
:mod:`~playground.manifests.validation`, :mod:`~playground.manifests.cli`.
"""

from __future__ import annotations

from playground.manifests.cli import add_cli as add_cli
from playground.manifests.findings import ERROR as ERROR
from playground.manifests.findings import WARNING as WARNING
from playground.manifests.findings import FieldPath as FieldPath
from playground.manifests.findings import Finding as Finding
from playground.manifests.findings import format_field as format_field
from playground.manifests.loading import KUSTOMIZATION_FILES as KUSTOMIZATION_FILES
from playground.manifests.loading import load_tree as load_tree
from playground.manifests.objects import CLUSTER_SCOPED as CLUSTER_SCOPED
from playground.manifests.objects import PHASES as PHASES
from playground.manifests.objects import ManifestObject as ManifestObject
from playground.manifests.objects import ManifestSet as ManifestSet
from playground.manifests.objects import apply_phase as apply_phase
from playground.manifests.validation import AB_TESTING_PROVIDERS as AB_TESTING_PROVIDERS
from playground.manifests.validation import BUILTIN_METRICS as BUILTIN_METRICS
from playground.manifests.validation import BUILTIN_NAMESPACES as BUILTIN_NAMESPACES
from playground.manifests.validation import DEFAULT_PROVIDER as DEFAULT_PROVIDER
from playground.manifests.validation import MIRROR_PROVIDERS as MIRROR_PROVIDERS
from playground.manifests.validation import PROVIDERS as PROVIDERS
from playground.manifests.validation import validate as validate
from playground.manifests.validation import validate_set as validate_set

__all__ = [
    "ERROR",
    "WARNING",
    "Finding",
    "ManifestObject",
    "ManifestSet",
    "load_tree",
    "validate",
    "validate_set",
    "add_cli",
    "BUILTIN_METRICS",
    "PROVIDERS",
    "AB_TESTING_PROVIDERS",
]
