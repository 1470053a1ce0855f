"""The loaded objects: :class:`ManifestObject` (one Kubernetes object with its file, document and the line of
every field) and :class:`ManifestSet` (all the objects of a tree, with typed look-ups: canaries, templates,
alert providers, Deployments, HPAs), plus the apply order of a tree (:data:`PHASES`, :func:`apply_phase`:
mesh, metrics, namespaces, workloads). Pure, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from playground.manifests.findings import ERROR, FieldPath, Finding, format_field
from playground.models import (
    AlertProvider,
    Canary,
    Deployment,
    HorizontalPodAutoscaler,
    MetricTemplate,
)

#: Kinds that live outside namespaces.
CLUSTER_SCOPED = frozenset({
    "Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding", "PersistentVolume",
    "StorageClass", "PriorityClass", "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration",
    "APIService", "IngressClass", "Node", "ClusterIssuer",
})  # fmt: skip


@dataclass
class ManifestObject:
    """One Kubernetes object read from the manifests, with where it came from.

    ``raw`` is the object exactly as parsed from YAML; ``model`` is its typed model for the kinds in
    :data:`playground.models.MODELS` (``None`` for other kinds, or when the object failed schema validation).
    """

    raw: dict[str, Any]
    file: str  # path relative to the tree root, with "/" separators
    path: str  # path for messages: the root as given joined with ``file``
    document: int  # 0-based index of the YAML document in the file
    line: int  # 1-based line where the document's content starts
    model: BaseModel | None = None
    lines: dict[FieldPath, int] = field(default_factory=dict, repr=False)
    #: fields written by a kustomization (rendered by :mod:`playground.kustomize`): field path -> (path for
    #: messages, line) of the kustomization field or patch file that wrote it; a finding about such a field
    #: names that file instead of the resource file
    sources: dict[FieldPath, tuple[str, int]] = field(default_factory=dict, repr=False)

    @property
    def api_version(self) -> str:
        v = self.raw.get("apiVersion")
        return v if isinstance(v, str) else ""

    @property
    def group(self) -> str:
        """API group (``""`` for the core group): ``flagger.app/v1beta1`` -> ``flagger.app``."""
        return self.api_version.rpartition("/")[0]

    @property
    def kind(self) -> str:
        v = self.raw.get("kind")
        return v if isinstance(v, str) else ""

    @property
    def metadata(self) -> dict[str, Any]:
        m = self.raw.get("metadata")
        return m if isinstance(m, dict) else {}

    @property
    def name(self) -> str:
        v = self.metadata.get("name")
        return v if isinstance(v, str) else ""

    @property
    def namespace(self) -> str | None:
        """The object's namespace (``default`` when unset); ``None`` for cluster-scoped kinds."""
        if self.kind in CLUSTER_SCOPED:
            return None
        v = self.metadata.get("namespace")
        return v if isinstance(v, str) and v else "default"

    @property
    def qualified_name(self) -> str:
        """``namespace/name`` (just ``name`` for cluster-scoped objects; ``""`` without a name)."""
        if not self.name:
            return ""
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    @property
    def key(self) -> tuple[str, str, str | None, str]:
        """Identity of the object in a cluster: (API group, kind, namespace, name)."""
        return (self.group, self.kind, self.namespace, self.name)

    @property
    def location(self) -> str:
        return f"{self.path}:{self.line}"

    def line_of(self, path: Iterable[str | int]) -> int:
        """Line of the field at ``path``, or of its nearest ancestor present in the YAML."""
        p = tuple(path)
        while p:
            if p in self.lines:
                return self.lines[p]
            p = p[:-1]
        return self.line

    def finding(self, path: Iterable[str | int], message: str, fix: str = "", severity: str = ERROR) -> Finding:
        """A :class:`Finding` about the field at ``path`` of this object."""
        p = tuple(path)
        file, line = self.source_of(p)
        return Finding(
            file=file, line=line, message=message, fix=fix, kind=self.kind,
            name=self.qualified_name, field=format_field(p), document=self.document, severity=severity,
        )  # fmt: skip

    def source_of(self, path: Iterable[str | int]) -> tuple[str, int]:
        """(file for messages, line) of the field at ``path``: the kustomization or patch that wrote it (see
        :attr:`sources`), else this object's file at the line of the field or its nearest ancestor."""
        p = tuple(path)
        while p and self.sources:
            if p in self.sources:
                return self.sources[p]
            if p in self.lines:
                break
            p = p[:-1]
        return self.path, self.line_of(path)

    def __str__(self) -> str:
        return f"{self.kind} {self.qualified_name} ({self.location})"


#: Apply phases, in order. See :meth:`ManifestSet.apply_order`.
PHASES = ("mesh", "metrics", "namespaces", "workloads")

_MESH_GROUP_SUFFIXES = ("istio.io",)
_WORKLOAD_KIND_ORDER = {
    "ServiceAccount": 0, "ConfigMap": 1, "Secret": 1, "PersistentVolumeClaim": 2, "Role": 2, "RoleBinding": 2,
    "Deployment": 4, "Service": 5, "HorizontalPodAutoscaler": 6, "Canary": 7,
}  # fmt: skip
_WORKLOAD_OTHER = 3  # unknown kinds: after configuration, before Deployments
_WORKLOAD_LAST = 8  # automation objects (Flux image policies, ...): after everything they may refer to


def apply_phase(obj: ManifestObject) -> str:
    """Which apply phase an object belongs to (Namespaces are placed by :meth:`ManifestSet.apply_order`)."""
    if obj.kind == "CustomResourceDefinition" or obj.group.endswith(_MESH_GROUP_SUFFIXES):
        return "mesh"
    if obj.kind in ("MetricTemplate", "AlertProvider") and obj.group == "flagger.app":
        return "metrics"
    if obj.kind == "Namespace":
        return "namespaces"
    return "workloads"


class ManifestSet:
    """The objects of a manifest tree, with lookups used by validation, sync and the canary controller."""

    def __init__(self, root: str, objects: list[ManifestObject], problems: list[Finding], files: list[str]):
        self.root = root  #: the path given to :func:`load_tree`
        self.objects = objects  #: every object, in file order then document order
        self.problems = problems  #: problems found while loading (YAML and schema errors)
        self.files = files  #: the files read, relative to the root

    def __iter__(self) -> Iterator[ManifestObject]:
        return iter(self.objects)

    def __len__(self) -> int:
        return len(self.objects)

    # -- generic lookups ----------------------------------------------------------------------------------
    def of_kind(self, kind: str, namespace: str | None = None) -> list[ManifestObject]:
        """Objects of ``kind`` (optionally only those in ``namespace``), in file order."""
        return [o for o in self.objects if o.kind == kind and (namespace is None or o.namespace == namespace)]

    def get(self, kind: str, namespace: str | None, name: str) -> ManifestObject | None:
        """The first object of ``kind`` named ``namespace/name`` (namespace ``None`` for cluster-scoped kinds)."""
        for o in self.objects:
            if o.kind == kind and o.name == name and o.namespace == namespace:
                return o
        return None

    def source(self, model: BaseModel) -> ManifestObject | None:
        """The object a model was parsed from (to report a problem found later at its file and line)."""
        for o in self.objects:
            if o.model is model:
                return o
        return None

    # -- typed lookups ------------------------------------------------------------------------------------
    def canaries(self) -> list[Canary]:
        """All valid Canaries."""
        return [o.model for o in self.of_kind("Canary") if isinstance(o.model, Canary)]

    def canary(self, key: str) -> Canary | None:
        """The Canary ``namespace/name`` (a bare name means namespace ``default``)."""
        ns, _, name = key.rpartition("/")
        o = self.get("Canary", ns or "default", name)
        return o.model if o is not None and isinstance(o.model, Canary) else None

    def templates(self) -> dict[tuple[str, str], MetricTemplate]:
        """Valid MetricTemplates by (namespace, name)."""
        return {
            (o.namespace or "default", o.name): o.model
            for o in self.of_kind("MetricTemplate") if isinstance(o.model, MetricTemplate)
        }  # fmt: skip

    def template(self, namespace: str, name: str) -> MetricTemplate | None:
        return self.templates().get((namespace, name))

    def template_for(self, canary: Canary, metric_index: int) -> MetricTemplate | None:
        """The MetricTemplate of ``canary.spec.analysis.metrics[metric_index]`` (its namespace defaults to the
        canary's, as in Flagger), or ``None`` for a built-in/inline metric or a missing template."""
        ref = canary.spec.analysis.metrics[metric_index].templateRef
        if ref is None:
            return None
        return self.template(ref.namespace or canary.namespace, ref.name)

    def alert_providers(self) -> dict[tuple[str, str], AlertProvider]:
        """Valid AlertProviders by (namespace, name)."""
        return {
            (o.namespace or "default", o.name): o.model
            for o in self.of_kind("AlertProvider") if isinstance(o.model, AlertProvider)
        }  # fmt: skip

    def alert_provider(self, namespace: str, name: str) -> AlertProvider | None:
        return self.alert_providers().get((namespace, name))

    def deployments(self) -> list[Deployment]:
        return [o.model for o in self.of_kind("Deployment") if isinstance(o.model, Deployment)]

    def deployment(self, namespace: str, name: str) -> Deployment | None:
        o = self.get("Deployment", namespace, name)
        return o.model if o is not None and isinstance(o.model, Deployment) else None

    def deployment_for(self, canary: Canary) -> Deployment | None:
        """The Deployment named by the canary's ``targetRef`` (in the canary's namespace)."""
        return self.deployment(canary.namespace, canary.spec.targetRef.name)

    def hpa_for(self, canary: Canary) -> HorizontalPodAutoscaler | None:
        """The HPA named by the canary's ``autoscalerRef``, if any."""
        ref = canary.spec.autoscalerRef
        if ref is None:
            return None
        o = self.get("HorizontalPodAutoscaler", canary.namespace, ref.name)
        return o.model if o is not None and isinstance(o.model, HorizontalPodAutoscaler) else None

    def canary_for(self, namespace: str, deployment: str) -> Canary | None:
        """The Canary whose target is the Deployment ``namespace/deployment``."""
        for c in self.canaries():
            if c.namespace == namespace and c.spec.targetRef.name == deployment:
                return c
        return None

    # -- apply order --------------------------------------------------------------------------------------
    def apply_order(self) -> list[ManifestObject]:
        """Every object in the order a sync applies them: mesh (Istio objects, CRDs), metrics (MetricTemplates,
        AlertProviders), namespaces, workloads (ServiceAccounts, ConfigMaps/Secrets, other kinds, Deployments,
        Services, HPAs, Canaries, then automation objects such as Flux image policies).

        A Namespace is applied at the start of the earliest phase that has an object in it (``istio-system``
        with the mesh, a namespace holding AlertProviders with the metrics), so no object is ever applied
        before its namespace. Within a rank, file order is kept.
        """
        ns_phases = self._namespace_phases()
        return [o for _, o in sorted(enumerate(self.objects), key=lambda item: self._rank(item[0], item[1], ns_phases))]

    def apply_phases(self) -> list[tuple[str, list[ManifestObject]]]:
        """:meth:`apply_order` grouped by phase (one of :data:`PHASES`; phases with no object are left out)."""
        groups: dict[str, list[ManifestObject]] = {}
        ns_phases = self._namespace_phases()
        for o in self.apply_order():
            groups.setdefault(PHASES[self._rank(0, o, ns_phases)[0]], []).append(o)
        return list(groups.items())

    @staticmethod
    def _rank(index: int, o: ManifestObject, ns_phases: dict[str, int]) -> tuple[int, int, int]:
        """Sort key of an object in apply order: (phase index, rank within the phase, file order)."""
        if o.kind == "Namespace":
            first = ns_phases.get(o.name, PHASES.index("namespaces"))
            return (min(first, PHASES.index("namespaces")), -1, index)
        phase = PHASES.index(apply_phase(o))
        if phase == PHASES.index("mesh"):
            # CRDs, then the control plane (IstioOperator), then the mesh configuration (Gateways...)
            sub = 0 if o.kind == "CustomResourceDefinition" else 1 if o.group == "install.istio.io" else 2
        elif phase == PHASES.index("workloads"):
            sub = (
                _WORKLOAD_LAST
                if o.group.endswith("toolkit.fluxcd.io")
                else _WORKLOAD_KIND_ORDER.get(o.kind, _WORKLOAD_OTHER)
            )
        else:
            sub = 0
        return (phase, sub, index)

    def _namespace_phases(self) -> dict[str, int]:
        """Earliest apply phase (index) of an object in each namespace."""
        first: dict[str, int] = {}
        for o in self.objects:
            if o.kind != "Namespace" and o.namespace:
                p = PHASES.index(apply_phase(o))
                first[o.namespace] = min(first.get(o.namespace, p), p)
        return first
