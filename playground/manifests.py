"""Load the GitOps manifests into typed models and validate them (``playground validate``).

Loading (:func:`load_tree`) reads every ``*.yaml``/``*.yml`` file under a directory (or one file), all YAML
documents of each, and keeps where every object came from: its file (relative to the tree root), its document
index in that file and the line of every field, so that each problem can be reported as one precise line::

    manifests/prod/backend/canary.yaml:39: Canary prod/backend: spec.analysis.metrics[0].templateRef: \
MetricTemplate istio-system/error-rat not found. Fix: use one of istio-system/error-rate, istio-system/latency

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
"""

from __future__ import annotations

import argparse
import base64
import binascii
import difflib
import enum
import os
import re
import sys
import types
import typing
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from playground import support, yamlload
from playground.checks import default_threshold_rule
from playground.durations import parse_duration
from playground.hooks import hook_timeout
from playground.metrics import template_problems, template_variables
from playground.models import (
    MODELS,
    AlertProvider,
    Canary,
    Deployment,
    HorizontalPodAutoscaler,
    MetricTemplate,
)
from playground.textsafe import one_line
from playground.versions import SemverRange

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

ERROR = "error"
WARNING = "warning"

FieldPath = tuple[str | int, ...]

#: Metrics Flagger computes without a MetricTemplate (for the istio provider: success rate in %, p99 in ms).
BUILTIN_METRICS = ("request-success-rate", "request-duration")

#: Values of ``spec.provider`` accepted by Flagger v1.44's Canary CRD.
PROVIDERS = support.ALL_PROVIDERS

#: Providers that can route by HTTP headers and cookies (Flagger docs, deployment strategies, v1.44).
AB_TESTING_PROVIDERS = (
    "istio",
    "appmesh",
    "appmesh:v1beta2",
    "nginx",
    "contour",
    "gloo",
    "gatewayapi:v1",
    "gatewayapi:v1beta1",
)

#: Providers that can mirror traffic ("Traffic shadowing, compatible with Istio only").
MIRROR_PROVIDERS = ("istio",)

#: Provider assumed when a Canary has no ``spec.provider``: this playground's mesh.
DEFAULT_PROVIDER = support.DEFAULT_PROVIDER

#: Kinds that live outside namespaces.
CLUSTER_SCOPED = frozenset({
    "Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding", "PersistentVolume",
    "StorageClass", "PriorityClass", "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration",
    "APIService", "IngressClass", "Node", "ClusterIssuer",
})  # fmt: skip

#: Namespaces every cluster has: objects may live there without a Namespace manifest.
BUILTIN_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})

#: API group each modelled kind must belong to (other groups are kept as raw dicts: a different CRD).
_MODEL_GROUPS = {
    "Canary": "flagger.app",
    "MetricTemplate": "flagger.app",
    "AlertProvider": "flagger.app",
    "Deployment": "apps",
    "HorizontalPodAutoscaler": "autoscaling",
}
_MODEL_VERSIONS = {
    "Canary": ("flagger.app/v1beta1",),
    "MetricTemplate": ("flagger.app/v1beta1",),
    "AlertProvider": ("flagger.app/v1beta1",),
    "Deployment": ("apps/v1",),
    "HorizontalPodAutoscaler": ("autoscaling/v2", "autoscaling/v1", "autoscaling/v2beta2"),
}

_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_IMAGEPOLICY_MARKER = re.compile(r"""#\s*\{\s*"\$imagepolicy"\s*:\s*"([^"]*)"\s*\}""")
_SELECTOR_LABELS = ("app", "name", "app.kubernetes.io/name")  # Flagger's default -selector-labels


# =============================================================================================== findings


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


# =============================================================================================== objects


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
        return Finding(
            file=self.path, line=self.line_of(p), message=message, fix=fix, kind=self.kind,
            name=self.qualified_name, field=format_field(p), document=self.document, severity=severity,
        )  # fmt: skip

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


# =============================================================================================== loading


def load_tree(path: str | os.PathLike[str]) -> ManifestSet:
    """Load every ``*.yaml``/``*.yml`` file under ``path`` (a directory, searched recursively, hidden entries
    skipped) or the single file ``path``.

    Never raises for bad content: YAML and schema problems are collected in ``ManifestSet.problems`` and the
    objects that could be read are kept. Files are read through :mod:`playground.yamlload`, with its limits:
    a FIFO, a device, a symlink leaving the tree, a file over the size limit, an alias bomb, NUL bytes or deep
    nesting give one finding each (their file is then not in ``ManifestSet.files``). Raises
    ``FileNotFoundError`` if ``path`` does not exist.
    """
    root = os.fspath(path)
    p = Path(root)
    if not os.path.lexists(root):
        raise FileNotFoundError(f"{root}: no such file or directory")
    objects: list[ManifestObject] = []
    problems: list[Finding] = []
    tree: str | None
    if p.is_dir():
        tree = root
        files = []
        real_root = os.path.realpath(root)
        for dirpath, dirnames, filenames in os.walk(p):  # symlinked directories are not followed
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for d in dirnames:
                link = Path(dirpath) / d
                target = os.path.realpath(link)
                if link.is_symlink() and not (target == real_root or target.startswith(real_root + os.sep)):
                    rel = link.relative_to(p).as_posix()
                    problems.append(Finding(
                        os.path.join(root, *rel.split("/")), 1,
                        f"symlink to the directory {target}, outside the manifests tree: not read",
                        "commit the files themselves instead of a link leaving the repository",
                    ))  # fmt: skip
            for fn in sorted(filenames):
                if fn.startswith(".") or not fn.endswith((".yaml", ".yml")):
                    continue
                full = Path(dirpath) / fn
                rel = full.relative_to(p).as_posix()
                files.append((full, rel, os.path.join(root, *rel.split("/"))))
        files.sort(key=lambda f: f[1])
    else:
        files = [(p, p.name, root)]  # a single file (read_text refuses a FIFO, a device, a dangling link)
        tree = None
    read: list[str] = []
    files, kustomize_problems = _without_kustomize(files, tree)
    problems.extend(kustomize_problems)
    for full, rel, display in files:
        objs, probs, ok = _load_file(full, rel, display, tree)
        objects.extend(objs)
        problems.extend(probs)
        if ok:
            read.append(rel)
    return ManifestSet(root, objects, problems, read)


KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")


def _without_kustomize(
    files: list[tuple[Path, str, str]], tree: str | None
) -> tuple[list[tuple[Path, str, str]], list[Finding]]:
    """Kustomize directories are not rendered by the playground (the supported layout is plain manifests): each
    ``kustomization.yaml`` gives one finding saying so, and its own file and the patch files it names are not read
    as objects (they are not objects: reading them would only give misleading "broken object" findings)."""
    out: list[Finding] = []
    skip: set[str] = set()
    for full, rel, display in files:
        if full.name not in KUSTOMIZATION_FILES:
            continue
        skip.add(rel)
        try:
            docs = yamlload.load_file(full, root=tree)
        except (OSError, yaml.YAMLError, ValueError, yamlload.Refused):
            docs = []  # the file itself is refused above all else: the finding below still names it
        k = docs[0] if docs and isinstance(docs[0], dict) else {}
        base = rel.rpartition("/")[0]
        names: list[str] = []
        for key in ("patches", "patchesJson6902", "patchesStrategicMerge"):
            for item in k.get(key) or []:
                name = item.get("path") if isinstance(item, dict) else item if isinstance(item, str) else None
                if isinstance(name, str) and not name.startswith(("/", "..")) and "\n" not in name:
                    skip.add(os.path.normpath(f"{base}/{name}" if base else name).replace(os.sep, "/"))
                    names.append(name)
        used = sorted({key for key in k if key not in ("apiVersion", "kind")})
        out.append(
            Finding(
                display,
                1,
                "Kustomize directory: the playground does not render Kustomize "
                f"({', '.join(used) or 'empty kustomization'}), so its objects would be applied unpatched",
                "commit the rendered manifests instead (kubectl kustomize "
                f"{os.path.dirname(display) or '.'} > rendered.yaml) and remove the kustomization"
                + (f" and its patch files ({', '.join(names)})" if names else ""),
                kind="Kustomization",
            )
        )
    return [f for f in files if f[1] not in skip], out


def _load_file(
    full: Path, rel: str, display: str, tree: str | None
) -> tuple[list[ManifestObject], list[Finding], bool]:
    try:
        text = yamlload.read_text(full, root=tree)
    except yamlload.Refused as e:
        return [], [Finding(display, 1, e.message, e.fix)], False
    objects: list[ManifestObject] = []
    problems: list[Finding] = []
    index = 0
    try:
        for node, data in yamlload.iter_documents(text):
            doc, index = index, index + 1
            start = node.start_mark.line + 1
            if data is None:  # an empty document ("---" followed by nothing)
                continue
            if not isinstance(data, dict):
                problems.append(Finding(
                    display, start, f"document is a {_yaml_type(data)}, not a Kubernetes object", document=doc,
                    fix="each YAML document must be a mapping with apiVersion, kind and metadata",
                ))  # fmt: skip
                continue
            lines: dict[FieldPath, int] = {}
            dups: list[tuple[FieldPath, int]] = []
            _index_lines(node, (), lines, dups)
            obj = ManifestObject(raw=data, file=rel, path=display, document=doc, line=start, lines=lines)
            for dpath, dline in dups:
                problems.append(Finding(
                    display, dline, "duplicate key: YAML keeps only the last value", kind=obj.kind,
                    name=obj.qualified_name, field=format_field(dpath), document=doc,
                    fix="remove or merge the duplicated key",
                ))  # fmt: skip
            identity = _check_identity(obj)
            problems.extend(identity)
            if not identity:  # a typed model needs apiVersion, kind and a name
                _parse_model(obj, problems)
            objects.append(obj)
    except yaml.YAMLError as e:
        msg, line, col = yamlload.describe(e)
        fix = getattr(e, "fix", "") or "correct the YAML syntax at this position (indentation, quoting, ':' and '-')"
        problems.append(Finding(display, line, f"invalid YAML: {msg}", column=col, document=index, fix=fix))
    return objects, problems, True


def _yaml_type(v: Any) -> str:
    if isinstance(v, list):
        return "list"
    if isinstance(v, str):
        return "string"
    return type(v).__name__


def _index_lines(node: yaml.Node, path: FieldPath, lines: dict[FieldPath, int], dups: list) -> None:
    """Record the 1-based line of every key (mappings) and item (sequences) below ``node``."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for knode, vnode in node.value:
            key = knode.value if isinstance(knode, yaml.ScalarNode) else str(knode.value)
            if key == "<<":  # merge key: fields come from the merged mapping
                _index_lines(vnode, path, lines, dups)
                continue
            p = path + (key,)
            if key in seen:
                dups.append((p, knode.start_mark.line + 1))
            seen.add(key)
            lines[p] = knode.start_mark.line + 1
            _index_lines(vnode, p, lines, dups)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            p = path + (i,)
            lines[p] = item.start_mark.line + 1
            _index_lines(item, p, lines, dups)


def _check_identity(obj: ManifestObject) -> list[Finding]:
    """apiVersion, kind and metadata.name must be present (and a well-formed name)."""
    out = []
    for key, example in (("apiVersion", "apps/v1"), ("kind", "Deployment")):
        v = obj.raw.get(key)
        if not isinstance(v, str) or not v.strip():
            msg = f"missing {key}" if v in (None, "") else f"{key} must be a string, got {v!r}"
            out.append(obj.finding((key,), msg, f"add {key} (for example {key}: {example})"))
    md = obj.raw.get("metadata")
    if not isinstance(md, dict):
        out.append(
            obj.finding(
                ("metadata",),
                "missing metadata" if md is None else "metadata must be a mapping",
                "add metadata with at least a name",
            )
        )
        return out
    name = md.get("name")
    if not isinstance(name, str) or not name:
        out.append(
            obj.finding(
                ("metadata", "name"),
                "missing metadata.name" if name in (None, "") else f"metadata.name must be a string, got {name!r}",
                "add metadata.name",
            )
        )
    elif not _DNS1123.match(name) or len(name) > 253:
        out.append(
            obj.finding(
                ("metadata", "name"),
                f"invalid name {name!r}",
                "use lower case letters, digits, '-' and '.', starting and ending with a letter or digit",
            )
        )
    ns = md.get("namespace")
    if ns is not None and (not isinstance(ns, str) or not _DNS1123.match(ns)):
        out.append(
            obj.finding(
                ("metadata", "namespace"), f"invalid namespace {ns!r}", "use lower case letters, digits and '-'"
            )
        )
    return out


def _parse_model(obj: ManifestObject, problems: list[Finding]) -> None:
    """Parse ``obj`` into its typed model if its kind has one; translate schema errors into findings."""
    cls = MODELS.get(obj.kind)
    if cls is None or obj.group != _MODEL_GROUPS.get(obj.kind):
        return  # not modelled, or a same-named kind of another API group: keep the raw dict
    if obj.api_version not in _MODEL_VERSIONS[obj.kind]:
        problems.append(
            obj.finding(
                ("apiVersion",),
                f"unsupported apiVersion {obj.api_version!r} for {obj.kind}",
                f"use apiVersion: {_MODEL_VERSIONS[obj.kind][0]}",
            )
        )
        return
    try:
        obj.model = cls.model_validate(obj.raw)
    except ValidationError as e:
        seen = set()
        blocked = obj.kind == "Canary" and support.blocks_target(obj.raw)
        for err in e.errors(include_url=False):
            if obj.kind == "Canary" and tuple(err["loc"]) == ("spec", "service") and err["type"] == "missing":
                if blocked:
                    continue  # its target/provider is refused by name: "add service" would not help
                problems.append(
                    obj.finding(
                        ("spec", "service"),
                        "required field missing: the playground creates the apex, primary and canary Services "
                        "of a Deployment target from it",
                        "add service with at least port (the port the app listens on, like 9898)",
                    )
                )
                continue
            f = _translate_error(obj, cls, err)
            if (f.field, f.message) not in seen:
                seen.add((f.field, f.message))
                problems.append(f)


# ------------------------------------------------------------------------------ pydantic error translation

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


# ============================================================================================= validation


def validate(path: str | os.PathLike[str]) -> list[Finding]:
    """Load the manifests under ``path`` and return every problem found, errors and warnings, sorted by file
    and line. Raises ``FileNotFoundError`` if ``path`` does not exist."""
    return validate_set(load_tree(path))


def validate_set(mset: ManifestSet) -> list[Finding]:
    """All findings for an already loaded :class:`ManifestSet` (load problems included)."""
    out = list(mset.problems)
    out.extend(_check_duplicates(mset))
    checks = {
        "Canary": _check_canary,
        "MetricTemplate": _check_template,
        "AlertProvider": _check_alert_provider,
        "HorizontalPodAutoscaler": _check_hpa,
        "ImagePolicy": _check_image_policy,
        "Secret": _check_secret,
    }
    canary_targets: dict[tuple[str | None, str], ManifestObject] = {}
    undefined_ns: set[str] = set()
    for obj in mset.objects:
        check = checks.get(obj.kind)
        if check is not None:
            try:
                out.extend(check(obj, mset))
            except Exception as e:  # a rule that did not expect this content: one finding, never a traceback
                out.append(
                    obj.finding(
                        (),
                        f"cannot check this object ({type(e).__name__}: {e})",
                        "look for a field of an unexpected type here, and report this as a bug of playground",
                    )
                )
        if obj.kind == "Canary" and obj.group == "flagger.app" and obj.name:
            out.extend(_check_support(obj))
        if obj.kind == "Canary" and isinstance(obj.model, Canary):
            tkey = (obj.namespace, obj.model.spec.targetRef.name)
            if tkey in canary_targets:
                other = canary_targets[tkey]
                out.append(
                    obj.finding(
                        ("spec", "targetRef", "name"),
                        f"Deployment {tkey[0]}/{tkey[1]} is already the target of Canary "
                        f"{other.qualified_name} ({other.location})",
                        "one Canary per Deployment: remove one of them",
                    )
                )
            canary_targets.setdefault(tkey, obj)
        ns = obj.namespace
        if ns and ns not in BUILTIN_NAMESPACES and ns not in undefined_ns and mset.get("Namespace", None, ns) is None:
            undefined_ns.add(ns)  # reported once, on its first object
            out.append(
                obj.finding(
                    ("metadata", "namespace"),
                    f"namespace {obj.namespace} is not defined in the manifests",
                    f"add a Namespace manifest named {obj.namespace}",
                    WARNING,
                )
            )
    out.extend(_check_image_markers(mset))
    out.sort(key=Finding.sort_key)
    return list(dict.fromkeys(out))  # a finding repeated (same place, same words) is reported once


def _check_support(obj: ManifestObject) -> list[Finding]:
    """Fields Flagger's CRD requires that are missing, and every field the playground does not implement
    (:mod:`playground.support`), each by name with what to do."""
    return [
        obj.finding(g.path, g.message, g.fix, WARNING if g.severity == "warning" else ERROR)
        for g in support.required_gaps(obj.raw) + support.unsupported(obj.raw)
    ]


def _check_duplicates(mset: ManifestSet) -> list[Finding]:
    first: dict[tuple, ManifestObject] = {}
    out = []
    for obj in mset.objects:
        if not obj.kind or not obj.name:
            continue
        if obj.key in first:
            other = first[obj.key]
            out.append(
                obj.finding(
                    ("metadata", "name"),
                    f"duplicate object: {obj.kind} {obj.qualified_name} is already defined at {other.location}",
                    "rename or remove one of them",
                )
            )
        else:
            first[obj.key] = obj
    return out


def _check_duration(obj: ManifestObject, path: FieldPath, value: str | None, out: list[Finding]) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError:
        out.append(obj.finding(path, f"invalid duration {value!r}", "use a number with a unit, like 30s, 1m or 1m30s"))
        return None


def _suggest(wanted: str, available: Iterable[str], what: str) -> str:
    """Fix text naming the closest available choices (or all of them when none is close)."""
    avail = sorted(set(available))
    if not avail:
        return f"add the {what} {wanted} to the manifests"
    close = difflib.get_close_matches(wanted, avail, n=5, cutoff=0.6)
    return "use one of " + ", ".join(close or avail)


def _duplicate_names(obj: ManifestObject, items: list[Any], base: FieldPath, what: str) -> list[Finding]:
    counts = Counter(i.name for i in items)
    out, seen = [], set()
    for i, item in enumerate(items):
        if counts[item.name] > 1:
            if item.name in seen:
                out.append(
                    obj.finding(
                        base + (i, "name"), f"duplicate {what} name {item.name!r}", f"give each {what} a unique name"
                    )
                )
            seen.add(item.name)
    return out


def _check_canary(obj: ManifestObject, mset: ManifestSet) -> list[Finding]:
    c = obj.model
    if not isinstance(c, Canary):
        return []
    out: list[Finding] = []
    spec, a = c.spec, c.spec.analysis
    A: FieldPath = ("spec", "analysis")
    provider = spec.provider or DEFAULT_PROVIDER
    if spec.provider is not None and spec.provider not in PROVIDERS:
        out.append(
            obj.finding(
                ("spec", "provider"),
                f"unknown provider {spec.provider!r}",
                _suggest(spec.provider, PROVIDERS, "provider"),
            )
        )

    # -- durations and ranges
    _check_duration(obj, A + ("interval",), a.interval, out)
    _check_duration(obj, ("spec", "service", "timeout"), spec.service.timeout, out)
    if spec.progressDeadlineSeconds <= 0:
        out.append(
            obj.finding(
                ("spec", "progressDeadlineSeconds"),
                "must be a positive number of seconds",
                "set it to how long a new version may take to become ready, like 60",
            )
        )
    for fname in ("maxWeight", "stepWeight", "stepWeightPromotion", "mirrorWeight"):
        v = getattr(a, fname)
        if not 0 <= v <= 100:
            out.append(obj.finding(A + (fname,), f"{v} is outside 0..100", f"set {fname} to a percentage (1..100)"))
    for fname in ("primaryReadyThreshold", "canaryReadyThreshold"):
        v = getattr(a, fname)
        if v is not None and not 0 < v <= 100:
            out.append(obj.finding(A + (fname,), f"{v} is outside 1..100", f"set {fname} to a percentage (1..100)"))
    if a.iterations < 0:
        out.append(obj.finding(A + ("iterations",), "must not be negative", "set iterations to 1 or more"))
    if a.threshold < 0:
        out.append(
            obj.finding(
                A + ("threshold",),
                "must not be negative",
                "set threshold to the number of failed checks that triggers a rollback, like 5",
            )
        )

    # -- strategy
    if a.match and a.iterations > 0:
        strategy = "A/B testing"
        if provider not in AB_TESTING_PROVIDERS:
            out.append(
                obj.finding(
                    A + ("match",),
                    f"provider {provider} cannot route by HTTP headers or cookies, "
                    "so A/B testing (match with iterations) is not possible",
                    "use a provider that supports HTTP matching ("
                    f"{', '.join(p for p in AB_TESTING_PROVIDERS if p in support.SUPPORTED_PROVIDERS)} here), "
                    "or remove match for a blue/green deployment",
                )
            )
    elif a.iterations > 0:
        strategy = "blue/green"
    else:
        strategy = "canary"
        if a.match:
            out.append(
                obj.finding(
                    A + ("match",),
                    "match has no effect without iterations",
                    "set analysis.iterations for A/B testing, or remove match",
                    WARNING,
                )
            )
        if provider == "kubernetes":
            out.append(
                obj.finding(
                    A,
                    "the kubernetes provider cannot shift traffic gradually: it only supports blue/green",
                    "set analysis.iterations (and no stepWeight/stepWeights), or use a mesh provider such as istio",
                )
            )
        elif a.stepWeight == 0 and not a.stepWeights:
            out.append(
                obj.finding(
                    A,
                    "a weighted canary needs stepWeight or stepWeights (both are empty and iterations is not set)",
                    "set stepWeight (e.g. 10) and maxWeight (e.g. 50), or stepWeights, or iterations for blue/green",
                )
            )
    if strategy != "canary" and (a.stepWeight or a.stepWeights or a.maxWeight):
        which = [n for n in ("stepWeight", "stepWeights", "maxWeight") if getattr(a, n)]
        out.append(
            obj.finding(
                A + (which[0],),
                f"{', '.join(which)} ignored: with iterations this canary is {strategy}",
                f"remove {', '.join(which)}, or remove iterations for a weighted canary",
                WARNING,
            )
        )
    if a.stepWeights:
        prev = 0
        for i, w in enumerate(a.stepWeights):
            if not 1 <= w <= 100:
                out.append(
                    obj.finding(
                        A + ("stepWeights", i),
                        f"step weight {w} is outside 1..100",
                        "use percentages between 1 and 100",
                    )
                )
            elif w <= prev:
                out.append(
                    obj.finding(
                        A + ("stepWeights", i),
                        f"step weights must increase: {w} follows {prev}",
                        "list the weights in increasing order, like [5, 10, 20, 50]",
                    )
                )
            prev = max(prev, w)
        if a.stepWeight and strategy == "canary":
            out.append(
                obj.finding(
                    A + ("stepWeight",), "stepWeight is ignored when stepWeights is set", "remove stepWeight", WARNING
                )
            )
    if a.mirror and provider not in MIRROR_PROVIDERS:
        out.append(
            obj.finding(
                A + ("mirror",),
                f"provider {provider} cannot mirror traffic",
                "use the istio provider or set mirror: false",
            )
        )
    if a.mirror and strategy == "A/B testing":
        out.append(
            obj.finding(
                A + ("mirror",),
                "mirroring is not supported with A/B testing",
                "remove mirror, or remove match for blue/green with mirroring",
            )
        )

    # -- metrics
    out.extend(_duplicate_names(obj, a.metrics, A + ("metrics",), "metric"))
    tkeys = {f"{ns}/{n}" for ns, n in _all_named(mset, "MetricTemplate")}
    for i, m in enumerate(a.metrics):
        M = A + ("metrics", i)
        _check_duration(obj, M + ("interval",), m.interval, out)
        r = m.thresholdRange
        if r is not None and r.min is not None and r.max is not None and r.min > r.max:
            out.append(
                obj.finding(
                    M + ("thresholdRange",),
                    f"min {r.min:g} is greater than max {r.max:g}: every value fails",
                    "swap min and max",
                )
            )
        if m.templateRef is not None:
            ns = m.templateRef.namespace or c.namespace
            key = f"{ns}/{m.templateRef.name}"
            if key not in tkeys:
                out.append(
                    obj.finding(
                        M + ("templateRef",), f"MetricTemplate {key} not found", _suggest(key, tkeys, "MetricTemplate")
                    )
                )
            else:
                t = mset.template(ns, m.templateRef.name)
                if t is not None:
                    missing = sorted(v for v in template_variables(t.spec.query) if v not in m.templateVariables)
                    if missing:
                        out.append(
                            obj.finding(
                                M + ("templateVariables",),
                                f"MetricTemplate {key} uses "
                                f"{', '.join('variables.' + v for v in missing)}, not set here",
                                f"add templateVariables: {{{', '.join(f'{v}: ...' for v in missing)}}}",
                            )
                        )
        elif m.query:
            pass  # inline PromQL query: Flagger's legacy form
        elif m.name not in BUILTIN_METRICS:
            same = [k for k in tkeys if k.endswith("/" + m.name)]
            fix = (
                f"add templateRef: {{name: {m.name}, namespace: {same[0].split('/')[0]}}}"
                if same
                else f"use a built-in metric ({', '.join(BUILTIN_METRICS)}), or add a templateRef or a query"
            )
            out.append(
                obj.finding(M, f"metric {m.name!r} has no templateRef or query and is not a built-in metric", fix)
            )
        if r is None and m.threshold is None:
            out.append(
                obj.finding(
                    M,
                    f"no thresholdRange: {default_threshold_rule(m)}",
                    "add thresholdRange with min and/or max to set the bounds this metric must stay within",
                    WARNING,
                )
            )

    # -- webhooks
    out.extend(_duplicate_names(obj, a.webhooks, A + ("webhooks",), "webhook"))
    for i, h in enumerate(a.webhooks):
        W = A + ("webhooks", i)
        if _check_duration(obj, W + ("timeout",), h.timeout, out) is not None:
            try:
                hook_timeout(h)  # the runtime's rule on top of the duration grammar: greater than zero
            except ValueError as e:
                out.append(obj.finding(W + ("timeout",), str(e), "set a timeout greater than zero, like 10s"))
        if not re.match(r"^https?://[^/\s]+", h.url):
            out.append(
                obj.finding(
                    W + ("url",),
                    f"invalid URL {h.url!r}",
                    "use an http:// or https:// URL, like http://flagger-loadtester.prod/",
                )
            )
        else:
            absent = _missing_service(h.url, mset)
            if absent:
                out.append(
                    obj.finding(
                        W + ("url",),
                        f"Service {absent} is not in the manifests",
                        "check the host name, or add the Service",
                        WARNING,
                    )
                )
        if h.retries < 0:
            out.append(obj.finding(W + ("retries",), "must not be negative", "set retries to 0 or more"))

    # -- alerts
    out.extend(_duplicate_names(obj, a.alerts, A + ("alerts",), "alert"))
    pkeys = {f"{ns}/{n}" for ns, n in _all_named(mset, "AlertProvider")}
    for i, al in enumerate(a.alerts):
        key = f"{al.providerRef.namespace or c.namespace}/{al.providerRef.name}"
        if key not in pkeys:
            out.append(
                obj.finding(
                    A + ("alerts", i, "providerRef"),
                    f"AlertProvider {key} not found",
                    _suggest(key, pkeys, "AlertProvider"),
                )
            )

    # -- target, autoscaler, gateways
    out.extend(_check_target(obj, c, mset))
    if spec.autoscalerRef is not None:
        ref = spec.autoscalerRef
        hobj = mset.get("HorizontalPodAutoscaler", c.namespace, ref.name)
        if ref.kind not in (None, "HorizontalPodAutoscaler"):
            pass  # reported by _check_support
        elif hobj is None:
            names = [f"{o.namespace}/{o.name}" for o in mset.of_kind("HorizontalPodAutoscaler", c.namespace)]
            out.append(
                obj.finding(
                    ("spec", "autoscalerRef"),
                    f"HorizontalPodAutoscaler {c.namespace}/{ref.name} not found",
                    _suggest(f"{c.namespace}/{ref.name}", names, "HorizontalPodAutoscaler")
                    if names
                    else "add the HPA to the manifests or remove autoscalerRef",
                )
            )
        elif (
            isinstance(hobj.model, HorizontalPodAutoscaler)
            and hobj.model.spec.scaleTargetRef.name != spec.targetRef.name
        ):
            out.append(
                obj.finding(
                    ("spec", "autoscalerRef"),
                    f"HorizontalPodAutoscaler {hobj.qualified_name} scales "
                    f"{hobj.model.spec.scaleTargetRef.name}, not the canary target "
                    f"{spec.targetRef.name}",
                    f"set the HPA's scaleTargetRef.name to {spec.targetRef.name}",
                )
            )
    for i, gw in enumerate(spec.service.gateways):
        if gw == "mesh":
            continue
        gname, gns = _gateway_ref(gw, c.namespace)
        if mset.get("Gateway", gns, gname) is None:
            gws = [o.qualified_name for o in mset.of_kind("Gateway")]
            out.append(
                obj.finding(
                    ("spec", "service", "gateways", i),
                    f"Gateway {gns}/{gname} is not in the manifests",
                    _suggest(f"{gns}/{gname}", gws, "Gateway")
                    if gws
                    else "add the Gateway to the manifests, or check the name",
                    WARNING,
                )
            )
    return out


def _all_named(mset: ManifestSet, kind: str) -> set[tuple[str, str]]:
    """(namespace, name) of every object of ``kind``, valid or not (so a schema error is not reported twice
    as a dangling reference too)."""
    return {(o.namespace or "default", o.name) for o in mset.of_kind(kind) if o.name}


def _missing_service(url: str, mset: ManifestSet) -> str | None:
    """``ns/name`` if ``url`` addresses an in-cluster Service (``name.ns[.svc.cluster.local]``) of a namespace
    defined in the manifests, but neither the manifests nor a Canary (``name``, ``name-primary``,
    ``name-canary``) provide that Service; else ``None``."""
    host = re.sub(r"^https?://", "", url).split("/")[0].split(":")[0]
    parts = host.split(".")
    if len(parts) == 2 or (len(parts) == 5 and parts[2:] == ["svc", "cluster", "local"]):
        name, ns = parts[0], parts[1]
    else:
        return None
    if mset.get("Namespace", None, ns) is None or mset.get("Service", ns, name) is not None:
        return None
    for c in mset.canaries():
        base = c.spec.service.name or c.spec.targetRef.name
        if c.namespace == ns and name in (base, f"{base}-primary", f"{base}-canary"):
            return None
    return f"{ns}/{name}"


def _gateway_ref(ref: str, default_ns: str) -> tuple[str, str]:
    """Istio gateway reference (``name``, ``ns/name`` or ``name.ns.svc.cluster.local``) -> (name, namespace)."""
    if "/" in ref:
        ns, _, name = ref.partition("/")
        return name, ns
    parts = ref.split(".")
    if len(parts) >= 2:
        return parts[0], parts[1]
    return ref, default_ns


def _check_target(obj: ManifestObject, c: Canary, mset: ManifestSet) -> list[Finding]:
    out: list[Finding] = []
    ref = c.spec.targetRef
    if ref.kind not in (None, "Deployment"):
        return []  # reported by _check_support
    dobj = mset.get("Deployment", c.namespace, ref.name)
    if dobj is None:
        names = [o.qualified_name for o in mset.of_kind("Deployment", c.namespace)]
        return [
            obj.finding(
                ("spec", "targetRef", "name"),
                f"Deployment {c.namespace}/{ref.name} not found",
                _suggest(f"{c.namespace}/{ref.name}", names, "Deployment")
                if names
                else f"add the Deployment {ref.name} in namespace {c.namespace} to the manifests",
            )
        ]
    d = dobj.model
    if not isinstance(d, Deployment):
        return out  # its schema errors are already reported
    labels = (d.spec.selector or {}).get("matchLabels") or {}
    if not any(k in labels for k in _SELECTOR_LABELS):
        out.append(
            dobj.finding(
                ("spec", "selector"),
                f"the target of Canary {c.key} needs a selector label "
                f"{', '.join(_SELECTOR_LABELS[:-1])} or {_SELECTOR_LABELS[-1]}",
                f"add spec.selector.matchLabels.app: {ref.name} (and the same pod label)",
            )
        )
    containers = d.spec.template.spec.containers
    if containers and not any(ct.readinessProbe for ct in containers):
        C = ("spec", "template", "spec", "containers", 0)
        out.append(
            dobj.finding(
                C,
                f"no readinessProbe on the target of Canary {c.key}: a new version counts as "
                "ready as soon as it starts",
                "add a readinessProbe (podinfo: httpGet path /readyz on its http port)",
                WARNING,
            )
        )
    ports = {p.get("containerPort") for ct in containers for p in ct.ports} | {
        p.get("name") for ct in containers for p in ct.ports
    }
    tp = c.spec.service.targetPort if c.spec.service.targetPort is not None else c.spec.service.port
    if any(ct.ports for ct in containers) and tp not in ports:
        field_ = "targetPort" if c.spec.service.targetPort is not None else "port"
        out.append(
            obj.finding(
                ("spec", "service", field_),
                f"port {tp} is not a container port of Deployment {dobj.qualified_name}",
                "set service.targetPort to the container port the app listens on",
                WARNING,
            )
        )
    return out


def _check_template(obj: ManifestObject, mset: ManifestSet) -> list[Finding]:
    t = obj.model
    if not isinstance(t, MetricTemplate):
        return []
    out = []
    if t.spec.provider.type != "prometheus":
        out.append(
            obj.finding(
                ("spec", "provider", "type"),
                f"provider type {t.spec.provider.type!r} is not supported by the playground",
                "use type: prometheus",
            )
        )
    addr = t.spec.provider.address
    if addr is not None and not re.match(r"^https?://[^/\s]+", addr):
        out.append(
            obj.finding(
                ("spec", "provider", "address"),
                f"invalid address {addr!r}",
                "use an http:// or https:// URL, like http://prometheus.istio-system:9090",
            )
        )
    if not t.spec.query.strip():
        out.append(obj.finding(("spec", "query"), "empty query", "write the PromQL query of this metric"))
    # the runtime's renderer decides (playground.metrics): what it would refuse is reported, nothing else
    for problem in template_problems(t.spec.query):
        out.append(obj.finding(("spec", "query"), problem.problem, problem.fix))
    return out


def _check_alert_provider(obj: ManifestObject, mset: ManifestSet) -> list[Finding]:
    p = obj.model
    if not isinstance(p, AlertProvider):
        return []
    s = p.spec
    if s.address:
        return [
            obj.finding(
                ("spec", "address"),
                "inline alert address: webhook URLs are credentials and must not be stored in git",
                "remove address; put the URL in a Secret (key address) referenced "
                "by secretRef, or name an environment variable holding it with addressFromEnv",
            )
        ]
    if s.secretRef is None and not s.addressFromEnv:
        return [
            obj.finding(
                ("spec",),
                "no address: set secretRef or addressFromEnv",
                "add secretRef (a Secret with key address) or addressFromEnv (an environment variable)",
            )
        ]
    if s.addressFromEnv and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", s.addressFromEnv):
        return [
            obj.finding(
                ("spec", "addressFromEnv"),
                f"invalid environment variable name {s.addressFromEnv!r}",
                "use letters, digits and '_', like PLAYGROUND_ALERT_WEBHOOK_URL",
            )
        ]
    return []


def _check_secret(obj: ManifestObject, mset: ManifestSet) -> list[Finding]:
    """Secrets never live in git: a Secret's data is only base64-encoded, readable by anyone with the repository
    (a webhook URL in it lets anyone post to the on-call channel)."""
    if obj.group != "":
        return []  # another API group's Secret kind (an external or sealed secret is encrypted or a reference)
    keys: list[tuple[str, str, str]] = []  # (field, key, value)
    for fname in ("data", "stringData"):
        values = obj.raw.get(fname)
        if isinstance(values, dict):
            for key, value in values.items():
                text = str(value)
                if fname == "data":
                    try:
                        text = base64.b64decode(text, validate=True).decode("utf-8", "replace")
                    except (binascii.Error, ValueError):
                        pass
                keys.append((fname, str(key), text))
    if not keys:
        return []
    urls = [(f, k) for f, k, v in keys if re.match(r"^\s*https?://", v)]
    fname, key = urls[0] if urls else keys[0][:2]
    what = f"key {key!r} holds a URL (a webhook address is a credential)" if urls else f"key {key!r} holds a secret"
    return [
        obj.finding(
            (fname, key),
            f"Secret committed to git: {what}, and a Secret's data is only base64-encoded, readable by anyone "
            "with the repository",
            "remove it from the manifests and create it in the cluster (kubectl create secret generic "
            f"{obj.name} --from-literal={key}=...) or use an external/sealed secret; an AlertProvider can also "
            "read its address from the environment with addressFromEnv",
        )
    ]


def _check_hpa(obj: ManifestObject, mset: ManifestSet) -> list[Finding]:
    h = obj.model
    if not isinstance(h, HorizontalPodAutoscaler):
        return []
    out = []
    ref = h.spec.scaleTargetRef
    if ref.kind in (None, "Deployment") and mset.get("Deployment", obj.namespace, ref.name) is None:
        names = [o.qualified_name for o in mset.of_kind("Deployment", obj.namespace)]
        out.append(
            obj.finding(
                ("spec", "scaleTargetRef", "name"),
                f"Deployment {obj.namespace}/{ref.name} not found",
                _suggest(f"{obj.namespace}/{ref.name}", names, "Deployment"),
            )
        )
    if h.spec.minReplicas > h.spec.maxReplicas:
        out.append(
            obj.finding(
                ("spec", "minReplicas"),
                f"minReplicas {h.spec.minReplicas} is greater than maxReplicas {h.spec.maxReplicas}",
                "make minReplicas <= maxReplicas",
            )
        )
    elif h.spec.minReplicas < 1:
        out.append(obj.finding(("spec", "minReplicas"), "must be at least 1", "set minReplicas to 1 or more"))
    return out


def _check_image_policy(obj: ManifestObject, mset: ManifestSet) -> list[Finding]:
    """Flux ImagePolicy (raw): it must name an ImageRepository of the manifests and have a policy."""
    spec = obj.raw.get("spec")
    if not isinstance(spec, dict):
        return [obj.finding(("spec",), "missing spec", "add spec.imageRepositoryRef and spec.policy")]
    out = []
    ref = spec.get("imageRepositoryRef")
    rname = ref.get("name") if isinstance(ref, dict) else None
    if not rname:
        out.append(
            obj.finding(
                ("spec", "imageRepositoryRef"),
                "missing imageRepositoryRef.name",
                "name the ImageRepository that scans this image",
            )
        )
    else:
        assert isinstance(ref, dict)  # rname came from it
        rns = ref.get("namespace") or obj.namespace
        if mset.get("ImageRepository", rns, rname) is None:
            names = [o.qualified_name for o in mset.of_kind("ImageRepository")]
            out.append(
                obj.finding(
                    ("spec", "imageRepositoryRef"),
                    f"ImageRepository {rns}/{rname} not found",
                    _suggest(f"{rns}/{rname}", names, "ImageRepository"),
                )
            )
    policy = spec.get("policy")
    if not isinstance(policy, dict) or not policy:
        out.append(obj.finding(("spec", "policy"), "missing policy", 'add policy.semver.range, like ">=6.0.0 <7.0.0"'))
    elif "semver" in policy:
        rng = (policy.get("semver") or {}).get("range") if isinstance(policy.get("semver"), dict) else None
        if not rng or not _valid_semver_range(str(rng)):
            out.append(
                obj.finding(
                    ("spec", "policy", "semver", "range"),
                    f"invalid semver range {rng!r}",
                    'use comparisons like ">=6.0.0 <7.0.0", "~6.1" or "6.x"',
                )
            )
    return out


def _valid_semver_range(rng: str) -> bool:
    """Whether the image automation accepts the range (the same Masterminds parser, playground.versions)."""
    try:
        SemverRange(rng)
    except ValueError:
        return False
    return True


def _check_image_markers(mset: ManifestSet) -> list[Finding]:
    """Every ``# {"$imagepolicy": "ns:name"}`` marker must name an ImagePolicy of the manifests."""
    out = []
    root = Path(mset.root)
    policies = {(o.namespace, o.name) for o in mset.of_kind("ImagePolicy")}
    by_file: dict[str, list[ManifestObject]] = {}
    for o in mset.objects:
        by_file.setdefault(o.file, []).append(o)
    for rel, objs in by_file.items():
        full = root if not root.is_dir() else root / rel
        try:
            text = yamlload.read_text(full, root=root if root.is_dir() else None)
        except yamlload.Refused:
            continue
        if "$imagepolicy" not in text:
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            m = _IMAGEPOLICY_MARKER.search(line)
            if not m:
                continue
            owner = max((o for o in objs if o.line <= lineno), key=lambda o: o.line, default=objs[0])
            parts = m.group(1).split(":")
            if len(parts) not in (2, 3) or not all(parts[:2]):
                out.append(
                    Finding(
                        owner.path,
                        lineno,
                        f"invalid image policy marker {m.group(1)!r}",
                        'write it as # {"$imagepolicy": "NAMESPACE:NAME"}',
                        owner.kind,
                        owner.qualified_name,
                        document=owner.document,
                    )
                )
            elif (parts[0], parts[1]) not in policies:
                names = [f"{ns}:{n}" for ns, n in policies]
                fix = (
                    _suggest(m.group(1), names, "ImagePolicy")
                    if names
                    else f"add an ImagePolicy named "
                    f"{parts[1]} in namespace {parts[0]} (image.toolkit.fluxcd.io/v1beta2), or remove the marker"
                )
                out.append(
                    Finding(
                        owner.path,
                        lineno,
                        f"image policy marker names ImagePolicy {parts[0]}/{parts[1]}, which is not in the manifests",
                        fix,
                        owner.kind,
                        owner.qualified_name,
                        document=owner.document,
                    )
                )
    return out


# ==================================================================================================== CLI


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register ``playground validate``."""
    p = subparsers.add_parser(
        "validate",
        help="check the GitOps manifests (YAML, Flagger schema, references, canary settings)",
        description="Load every *.yaml/*.yml file under PATH (or the single file PATH) and check it: YAML "
        "syntax, required fields, the Flagger v1beta1 schema of Canaries, MetricTemplates and AlertProviders, "
        "durations and weights, references between objects (templates, alert providers, target Deployments, "
        "HPAs, gateways, image policies) and the rule that alert addresses never live in git. Prints one line "
        "per problem (file:line: object: field: message. Fix: ...) and a summary.",
        epilog="Exit status: 0 no errors (warnings allowed), 1 errors found, 2 PATH does not exist.",
    )
    p.add_argument(
        "path",
        nargs="?",
        default="manifests",
        metavar="PATH",
        help="directory or file to validate (default: manifests)",
    )
    p.add_argument("--no-warnings", action="store_true", help="print errors only")
    p.add_argument("--strict", action="store_true", help="count warnings as errors for the exit status")
    p.set_defaults(func=_cli_validate)


def _cli_validate(args: argparse.Namespace) -> int:
    try:
        mset = load_tree(args.path)
    except FileNotFoundError as e:
        print(
            f"playground validate: {e}. Give the directory of your manifests, like: playground validate manifests",
            file=sys.stderr,
        )
        return 2
    findings = validate_set(mset)
    errors = [f for f in findings if f.is_error]
    warnings = [f for f in findings if not f.is_error]
    for f in findings:
        if f.is_error or not args.no_warnings:
            print(f)
    n_err, n_warn = len(errors), len(warnings)
    print(
        f"{one_line(args.path)}: {len(mset)} objects in {len(mset.files)} files: "
        f"{n_err} error{'s' if n_err != 1 else ''}, {n_warn} warning{'s' if n_warn != 1 else ''}"
    )
    if n_err or (args.strict and n_warn):
        return 1
    return 0
