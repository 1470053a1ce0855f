"""Loading: :func:`load_tree` reads every ``*.yaml``/``*.yml`` file under a directory (or one file), all YAML
documents of each, through :mod:`playground.yamlload` and its limits, and keeps where every object came from.
Kinds of :data:`playground.models.MODELS` are parsed into their pydantic models (schema errors become
findings through :mod:`playground.manifests.pydantic_errors`). A directory holding a kustomization is rendered by
:mod:`playground.kustomize` (as Flux's kustomize-controller builds it) instead of read file by file. Never raises for
bad content: problems are collected in ``ManifestSet.problems``. Reads files, nothing else.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from playground import kustomize, support, yamlload
from playground.kustomize import KUSTOMIZATION_FILES as KUSTOMIZATION_FILES
from playground.manifests.findings import FieldPath, Finding, format_field
from playground.manifests.objects import ManifestObject, ManifestSet
from playground.manifests.pydantic_errors import _translate_error
from playground.models import (
    MODELS,
)

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


def load_tree(path: str | os.PathLike[str]) -> ManifestSet:
    """Load every ``*.yaml``/``*.yml`` file under ``path`` (a directory, searched recursively, hidden entries
    skipped) or the single file ``path``. A directory holding a kustomization (``path`` itself or one below it)
    is built with :mod:`playground.kustomize` and not descended into, as Flux's kustomize-controller does.

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
        kustomized: list[str] = []
        real_root = os.path.realpath(root)
        for dirpath, dirnames, filenames in os.walk(p):  # symlinked directories are not followed
            if kustomize.kustomization_file(dirpath) is not None:
                # Flux builds a directory that has a kustomization, and does not descend into it
                kustomized.append(Path(dirpath).relative_to(p).as_posix() if Path(dirpath) != p else "")
                dirnames[:] = []
                continue
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
        kustomized = []
    read: list[str] = []
    if kustomized and tree is not None:
        k_objects, k_problems, k_files = _load_kustomizations(tree, sorted(kustomized))
        objects.extend(k_objects)
        problems.extend(k_problems)
        read.extend(f for f in dict.fromkeys(k_files) if f not in read)
    for full, rel, display in files:
        objs, probs, ok = _load_file(full, rel, display, tree)
        objects.extend(objs)
        problems.extend(probs)
        if ok:
            read.append(rel)
    return ManifestSet(root, objects, problems, read)


def _load_kustomizations(root: str, dirs: list[str]) -> tuple[list[ManifestObject], list[Finding], list[str]]:
    """Render each Kustomize directory ``dirs`` (relative to ``root``) with :mod:`playground.kustomize`, as
    Flux's kustomize-controller runs ``kustomize build`` on it: (objects, findings, files read).

    Each resource file is read as any manifest file (its YAML problems and duplicate keys are findings, its
    field lines are kept); the rendered objects are then checked and parsed like read ones, with the fields
    the kustomization wrote (patches, images, namespace, name prefix) attributed to the kustomization or patch
    file. A kustomization the renderer refuses gives one finding naming its file, line and field, and none of
    its objects (``kustomize build`` fails as a whole)."""
    objects: list[ManifestObject] = []
    problems: list[Finding] = []
    files: list[str] = []

    def display(rel: str) -> str:
        return os.path.join(root, *rel.split("/")) if rel else root

    def reader(rel: str) -> tuple[list[kustomize.Doc], list[kustomize.Problem]]:
        objs, probs, _ = _load_file(Path(display(rel)), rel, display(rel), root, check=False)
        problems.extend(probs)
        return [kustomize.Doc(o.raw, o.file, o.document, o.line, o.lines) for o in objs], []

    for directory in dirs:
        built = kustomize.build(root, directory, reader)
        files.extend(built.files)
        for p in built.problems:
            problems.append(Finding(
                display(p.file), p.line, p.message, p.fix, kind="Kustomization", field=p.field, severity=p.severity,
            ))  # fmt: skip
        for d in built.objects:
            obj = ManifestObject(
                raw=d.raw, file=d.file, path=display(d.file), document=d.document, line=d.line, lines=d.lines,
                sources={path: (display(f), line) for path, (f, line) in d.sources.items()},
            )  # fmt: skip
            identity = _check_identity(obj)
            problems.extend(identity)
            if not identity:
                _parse_model(obj, problems)
            objects.append(obj)
    return objects, problems, files


def _load_file(
    full: Path, rel: str, display: str, tree: str | None, *, check: bool = True
) -> tuple[list[ManifestObject], list[Finding], bool]:
    """The objects of one file, its problems, and whether it could be read. Without ``check``, objects are
    not checked nor parsed into models (a Kustomize resource: it is checked once rendered)."""
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
            identity = _check_identity(obj) if check else []
            problems.extend(identity)
            if check and not identity:  # a typed model needs apiVersion, kind and a name
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
