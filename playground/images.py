"""Image automation: registry tag scanning, Flux image policies, setter markers and update commits.

This replaces Flux's image-reflector-controller (scan tags, pick the latest by policy) and
image-automation-controller (rewrite the marked lines in git and push one commit). Manifests keep Flux's
schema, so a Flux user's ``ImageRepository``/``ImagePolicy`` objects and markers work unchanged::

    apiVersion: image.toolkit.fluxcd.io/v1beta2
    kind: ImagePolicy
    metadata: {name: backend, namespace: prod}
    spec:
      imageRepositoryRef: {name: backend}
      policy: {semver: {range: ">=6.0.0 <7.0.0"}}

    image: ghcr.io/stefanprodan/podinfo:6.7.0 # {"$imagepolicy": "prod:backend"}

Pieces:

* :class:`RegistryClient` (``playground.registry``) lists tags over the OCI distribution API.
* :class:`SemverRange` (``playground.versions``) is a port of Masterminds/semver v3 constraints (what
  ``policy.semver.range`` means in Flux), :func:`latest` picks the highest matching tag.
* :func:`load_policies` reads ImageRepository + ImagePolicy objects of a manifest tree.
* :func:`find_markers` / :func:`apply_policy_update` rewrite only the marked values, byte for byte otherwise.
* :func:`scan_and_update` ties them together and pushes one commit through :class:`playground.gitops.GitSource`.

Local registry overrides: the local playground pushes tags to its own registry (``127.0.0.1:PORT``) while the
manifests keep the public image name. ``overrides = {"ghcr.io/stefanprodan/podinfo":
"127.0.0.1:5000/stefanprodan/podinfo"}`` makes the scan read tags from the local registry; the rewritten image
line keeps the public name with the new tag (``ghcr.io/stefanprodan/podinfo:6.8.0``), because git must stay
valid for a real cluster and the local image catalog maps both names to the same program.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playground import yamlload
from playground.errors import PlaygroundError
from playground.manifests import ManifestSet, load_tree
from playground.registry import ImageRef, RegistryClient, RegistryError, parse_image
from playground.versions import SemverRange, Version, latest

__all__ = [
    "RegistryError",
    "RegistryClient",
    "ImageRef",
    "parse_image",
    "Version",
    "SemverRange",
    "latest",
    "ImagePolicy",
    "PolicyError",
    "load_policies",
    "Marker",
    "find_markers",
    "apply_policy_update",
    "ImageUpdate",
    "scan_and_update",
    "commit_message",
]


# ============================================================================================= policies


class PolicyError(PlaygroundError, ValueError):
    """An ImagePolicy cannot be evaluated (missing ImageRepository, invalid range, unsupported policy)."""


def _go_regex(pattern: str) -> re.Pattern[str]:
    """Compile a Go (RE2) regular expression: ``(?<name>`` becomes Python's ``(?P<name>``."""
    return re.compile(re.sub(r"\(\?<(?![=!])", "(?P<", pattern))


def _go_expand(m: re.Match[str], template: str) -> str:
    """Go's ``Regexp.Expand``: ``$name``, ``${name}``, ``$1`` replaced by the match's groups (unknown: "")."""

    def group(g: str) -> str:
        try:
            return m.group(int(g) if g.isdigit() else g) or ""
        except IndexError:
            return ""

    return re.sub(r"\$(?:\{(\w+)\}|(\w+))", lambda x: group(x.group(1) or x.group(2)), template)


@dataclass(frozen=True)
class ImagePolicy:
    """A Flux ImagePolicy joined with its ImageRepository.

    ``key`` is ``namespace:name`` as markers write it; ``image`` is the ImageRepository's ``spec.image`` (the
    public name written into manifests); ``kind`` is ``semver``, ``alphabetical`` or ``numerical``.
    """

    namespace: str
    name: str
    image: str
    kind: str = "semver"
    range: str | None = None
    order: str = "asc"
    filter_pattern: str | None = None
    filter_extract: str | None = None
    source: str = ""

    @property
    def key(self) -> str:
        return f"{self.namespace}:{self.name}"

    def candidates(self, tags: Iterable[str]) -> list[tuple[str, str]]:
        """(tag, value compared by the policy) after ``filterTags`` (pattern + extract)."""
        if not self.filter_pattern:
            return [(t, t) for t in tags]
        rx = _go_regex(self.filter_pattern)
        out = []
        for t in tags:
            m = rx.search(t)
            if m:
                out.append((t, _go_expand(m, self.filter_extract) if self.filter_extract else t))
        return out

    def select(self, tags: Iterable[str]) -> str | None:
        """The tag this policy picks from ``tags`` (None when none qualifies)."""
        cands = self.candidates(tags)
        if self.kind == "semver":
            rng = SemverRange(self.range or "*")
            best: tuple[Version, str] | None = None
            for tag, value in cands:
                v = Version.try_parse(value)
                if v is not None and rng.matches(v) and (best is None or v > best[0]):
                    best = (v, tag)
            return best[1] if best else None
        if self.kind == "numerical":
            nums = []
            for tag, value in cands:
                try:
                    nums.append((float(value), tag))
                except ValueError:
                    continue
            if not nums:
                return None
            return (max(nums) if self.order == "asc" else min(nums))[1]
        if not cands:
            return None
        pick = max(cands, key=lambda c: c[1]) if self.order == "asc" else min(cands, key=lambda c: c[1])
        return pick[0]

    def is_newer(self, candidate: str, current: str | None) -> bool:
        """Whether ``candidate`` should replace ``current`` (the tag now in git) under this policy."""
        if current is None or candidate == current:
            return current is None
        if self.kind == "semver":
            new, old = Version.try_parse(candidate), Version.try_parse(current)
            if old is None:
                return True
            return new is not None and new > old
        pair = dict(self.candidates([candidate, current]))
        if current not in pair:
            return True
        if candidate not in pair:
            return False
        a, b = pair[candidate], pair[current]
        if self.kind == "numerical":
            try:
                return (float(a) > float(b)) if self.order == "asc" else (float(a) < float(b))
            except ValueError:
                return True
        return a > b if self.order == "asc" else a < b


def load_policies(
    manifests: ManifestSet | Path | str,
    errors: list[tuple[str, PolicyError]] | None = None,
) -> list[ImagePolicy]:
    """The ImagePolicies of a manifest tree (a loaded set or a directory), joined with their ImageRepository.

    A policy that cannot be evaluated raises :class:`PolicyError` naming the file and the fix; when an
    ``errors`` list is given, ``(policy key, error)`` is appended to it instead and the policy skipped.
    """
    mset = manifests if isinstance(manifests, ManifestSet) else load_tree(manifests)
    repos = {(o.namespace, o.name): o for o in mset.of_kind("ImageRepository") if o.group == "image.toolkit.fluxcd.io"}
    out = []
    for o in mset.of_kind("ImagePolicy"):
        if o.group != "image.toolkit.fluxcd.io":
            continue
        try:
            out.append(_policy(o, repos))
        except PolicyError as e:
            if errors is None:
                raise
            errors.append((f"{o.namespace}:{o.name}", e))
    return out


def _mapping(value: Any) -> dict:
    """``value`` if it is a mapping, else ``{}`` (the manifests come from git: any field may have any type)."""
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str:
    """``value`` if it is a string, else ``""``."""
    return value if isinstance(value, str) else ""


def _policy(o: Any, repos: dict) -> ImagePolicy:
    where = f"{o.location}: ImagePolicy {o.qualified_name}"
    spec = _mapping(o.raw.get("spec"))
    ref = _mapping(spec.get("imageRepositoryRef"))
    rkey = (_text(ref.get("namespace")) or o.namespace, _text(ref.get("name")))
    repo = repos.get(rkey)
    if repo is None:
        raise PolicyError(
            f"{where}: ImageRepository {rkey[0]}/{rkey[1] or '(no name)'} not found; add it or fix "
            "spec.imageRepositoryRef"
        )
    image = _text(_mapping(repo.raw.get("spec")).get("image")).strip()
    if not image:
        raise PolicyError(f"{repo.location}: ImageRepository {repo.qualified_name}: missing spec.image")
    policy = _mapping(spec.get("policy"))
    ft = _mapping(spec.get("filterTags"))
    common = dict(
        namespace=o.namespace or "default",
        name=o.name,
        image=image,
        source=o.location,
        filter_pattern=_text(ft.get("pattern")) or None,
        filter_extract=_text(ft.get("extract")) or None,
    )
    if "semver" in policy:
        rng = str(_mapping(policy.get("semver")).get("range") or "")
        try:
            SemverRange(rng)
        except ValueError as e:
            raise PolicyError(f"{where}: spec.policy.semver.range: {e}") from e
        return ImagePolicy(kind="semver", range=rng, **common)
    if "alphabetical" in policy or "numerical" in policy:
        kind = "alphabetical" if "alphabetical" in policy else "numerical"
        order = str(_mapping(policy.get(kind)).get("order") or "asc").lower()
        return ImagePolicy(kind=kind, order=order, **common)
    raise PolicyError(
        f"{where}: spec.policy must have semver, alphabetical or numerical; got {sorted(map(str, policy)) or 'nothing'}"
    )


# ============================================================================================== markers

# A marked YAML value: optional "- ", optional "key: ", the (optionally quoted) value, then the marker comment.
_MARKER_LINE = re.compile(
    r"""^(?P<prefix>[ \t]*(?:-[ \t]+)*(?:(?:"[^"\n]*"|'[^'\n]*'|[^\s#'"][^:#\n]*?):[ \t]+)?)"""
    r"""(?P<quote>["']?)(?P<value>[^\s"'#]+)(?P=quote)"""
    r"""(?P<gap>[ \t]+)(?P<marker>\#[ \t]*\{[ \t]*"\$imagepolicy"[ \t]*:[ \t]*"(?P<ref>[^"]+)"[ \t]*\})"""
)


@dataclass(frozen=True)
class Marker:
    """A setter marker on one line: ``field`` is ``image`` (whole ``name:tag``), ``tag`` or ``name``."""

    line: int  # 1-based
    policy: str  # namespace:name
    field: str
    value: str  # the value now on the line

    @property
    def tag(self) -> str | None:
        """The tag the line carries now (None for a ``name`` marker or an image without a tag)."""
        if self.field == "tag":
            return self.value
        if self.field == "image":
            try:
                return parse_image(self.value).tag
            except ValueError:
                return None
        return None


def _split_ref(ref: str) -> tuple[str, str]:
    """``prod:backend`` -> (``prod:backend``, ``image``); ``prod:backend:tag`` -> (``prod:backend``, ``tag``)."""
    parts = ref.split(":")
    if len(parts) == 3 and parts[2] in ("tag", "name", "digest"):
        return f"{parts[0]}:{parts[1]}", parts[2]
    return ref, "image"


def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def find_markers(text: str) -> list[Marker]:
    """Every ``# {"$imagepolicy": "ns:name[:tag|:name]"}`` marker on a YAML value line."""
    out = []
    for i, line in enumerate(_lines(text), 1):
        if "$imagepolicy" not in line:
            continue
        m = _MARKER_LINE.match(line)
        if m:
            policy, fld = _split_ref(m.group("ref"))
            out.append(Marker(i, policy, fld, m.group("value")))
    return out


def apply_policy_update(
    text: str,
    policy_key: str,
    new_tag: str,
    *,
    image: str | None = None,
    if_newer: Callable[[str | None], bool] | None = None,
) -> tuple[str, bool]:
    """Rewrite the values marked for ``policy_key``; return (new text, whether anything changed).

    * ``image`` markers (``# {"$imagepolicy": "ns:name"}``) get ``<image>:<new_tag>``: ``image`` when given, else
      the name already on the line (a digest suffix is dropped);
    * ``:tag`` markers get ``new_tag``; ``:name`` markers get ``image`` (left alone when ``image`` is None);
    * ``:digest`` markers are left alone (digest pinning is not supported).

    ``if_newer(current_tag)``, when given, must return True for an ``image``/``tag`` marker to be rewritten
    (so that a line already on a newer tag is kept). Everything but the marked values is preserved byte for
    byte (quotes, spacing, comments, line endings).
    """
    out = []
    changed = False
    for line in _lines(text):
        m = _MARKER_LINE.match(line) if "$imagepolicy" in line else None
        if m is None:
            out.append(line)
            continue
        policy, fld = _split_ref(m.group("ref"))
        value = m.group("value")
        new_value = value
        if policy == policy_key:
            if fld == "image":
                try:
                    ref = parse_image(value)
                    current_tag, current_name = ref.tag, value.split("@", 1)[0]
                    if ref.tag:
                        current_name = current_name[: -(len(ref.tag) + 1)]
                except ValueError:
                    current_tag, current_name = None, value
                if if_newer is None or if_newer(current_tag):
                    new_value = f"{image or current_name}:{new_tag}"
            elif fld == "tag":
                if if_newer is None or if_newer(value):
                    new_value = new_tag
            elif fld == "name" and image:
                new_value = image
        if new_value != value:
            start, end = m.span("value")
            line = line[:start] + new_value + line[end:]
            changed = True
        out.append(line)
    return "".join(out), changed


# ============================================================================================ scan + commit


@dataclass
class ImageUpdate:
    """One policy's update: ``image`` moved from ``old_tag`` to ``new_tag`` in ``files`` (repository-relative)."""

    policy: str
    image: str
    old_tag: str | None
    new_tag: str
    files: list[str] = field(default_factory=list)
    commit: str | None = None  # sha of the pushed commit

    def line(self) -> str:
        return f"Update image {self.image} to {self.new_tag} ({self.policy})"


def commit_message(updates: list[ImageUpdate]) -> str:
    """Flux-style message: ``Update image ghcr.io/stefanprodan/podinfo to 6.8.0 (prod:backend)`` for one
    update, ``Update images: ...`` for several, then one line per change with the old tag and the files."""
    if len(updates) == 1:
        subject = updates[0].line()
    else:
        subject = "Update images: " + ", ".join(f"{u.image} to {u.new_tag} ({u.policy})" for u in updates)
    body = []
    for u in updates:
        body.append(
            f"- {u.image}: {u.old_tag or '(none)'} -> {u.new_tag} (ImagePolicy {u.policy}) in " + ", ".join(u.files)
        )
    return subject + "\n\n" + "\n".join(body) + "\n"


def scan_and_update(
    git_source: Any,
    registry: RegistryClient,
    overrides: Mapping[str, str] | None = None,
    *,
    on_error: Callable[[str, Exception], None] | None = None,
    author: tuple[str, str] | None = None,
) -> list[ImageUpdate]:
    """Scan every ImagePolicy of the GitOps repository and push ONE commit with all the newer tags found.

    ``git_source`` is a :class:`playground.gitops.GitSource`; it is fetched first, so the update applies to
    the origin's latest commit. For each policy the tags of its image (or of ``overrides[image]``, a repository
    to scan instead, e.g. the local registry's copy) are listed, the policy's latest tag chosen, and every
    marker of that policy whose current tag is older is rewritten. Policies with no matching tag, or whose
    markers already carry that tag or a newer one, change nothing. Returns the updates pushed ([] = no commit).

    Errors: a registry or policy error raises, unless ``on_error(policy_key, exc)`` is given, in which case
    that policy is skipped and the others still update. A push that fails raises ``GitError`` (nothing committed).
    """
    from playground.gitops import DEFAULT_AUTHOR

    overrides = dict(overrides or {})
    git_source.fetch()
    mset = load_tree(git_source.path)
    prefix = f"{git_source.subdir}/" if getattr(git_source, "subdir", "") else ""
    texts: dict[str, str] = {}
    for rel in mset.files:
        try:
            text = yamlload.read_text(Path(git_source.path) / rel, root=git_source.path)
        except yamlload.Refused:
            continue
        if "$imagepolicy" in text:
            texts[rel] = text
    policy_errors: list[tuple[str, PolicyError]] = []
    policies = load_policies(mset, errors=None if on_error is None else policy_errors)
    for key, err in policy_errors:
        on_error(key, err)  # type: ignore[misc]
    updates: list[ImageUpdate] = []
    new_texts = dict(texts)
    scanned: dict[str, list[str]] = {}  # repository -> tags (several policies often share one image)
    for policy in policies:
        marked = {rel: [mk for mk in find_markers(t) if mk.policy == policy.key] for rel, t in new_texts.items()}
        marked = {rel: mks for rel, mks in marked.items() if mks}
        if not marked:
            continue
        try:
            repository = overrides.get(policy.image, policy.image)
            if repository not in scanned:
                scanned[repository] = registry.list_tags(repository)
            tags = scanned[repository]
            chosen = policy.select(tags)
        except (RegistryError, ValueError) as e:
            if on_error is None:
                raise
            on_error(policy.key, e)
            continue
        if chosen is None:
            continue
        tagged = [mk for mks in marked.values() for mk in mks if mk.field in ("image", "tag")]
        if not any(policy.is_newer(chosen, mk.tag) for mk in tagged):
            continue  # every marked line already carries the chosen tag or a newer one
        current = [mk.tag for mk in tagged if mk.tag is not None]
        old_tag = _newest(policy, current)
        files = []
        for rel in sorted(marked):
            text, changed = apply_policy_update(
                new_texts[rel],
                policy.key,
                chosen,
                image=policy.image,
                if_newer=functools.partial(policy.is_newer, chosen),
            )
            if changed:
                new_texts[rel] = text
                files.append(prefix + rel)
        if files:
            updates.append(ImageUpdate(policy.key, policy.image, old_tag, chosen, files))
    if not updates:
        return []
    changes = {prefix + rel: t for rel, t in new_texts.items() if t != texts[rel]}
    sha = git_source.commit_and_push(changes, commit_message(updates), author=author or DEFAULT_AUTHOR)
    for u in updates:
        u.commit = sha
    return updates


def _newest(policy: ImagePolicy, tags: list[str]) -> str | None:
    best = None
    for t in tags:
        if best is None or policy.is_newer(t, best):
            best = t
    return best


_IMAGE_LINE = re.compile(r"^(?P<head>\s*(?:-\s+)?image:\s*)(?P<q>['\"]?)(?P<image>[^\s'\"#]+)(?P=q)(?P<tail>.*)$")


def set_workload_image(
    git_source: Any, target: str, image: str, *, container: str | None = None, author: tuple[str, str] | None = None
) -> str:
    """Commit ``image`` as the image of ``target``'s Deployment (``fluxctl release --update-image``).

    ``target`` is ``namespace/name`` of a Canary (its targetRef Deployment is updated) or of a Deployment.
    Only the image value on that line changes (a ``$imagepolicy`` marker comment stays). Returns the pushed
    commit's sha, or the current HEAD when the Deployment already runs ``image``. Raises ValueError naming the
    file and what is missing when the Deployment or its image line cannot be found.
    """
    from playground.gitops import DEFAULT_AUTHOR

    parse_image(image)  # a clear error for a malformed reference before touching git
    head = git_source.fetch()
    mset = load_tree(git_source.path)
    ns, _, name = target.partition("/")
    canary = mset.canary(target)
    dep_name = canary.spec.targetRef.name if canary is not None else name
    obj = mset.get("Deployment", ns, dep_name)
    if obj is None:
        raise ValueError(
            f"no Deployment {ns}/{dep_name} in the GitOps repository {git_source.url}"
            f"{' (target of Canary ' + target + ')' if canary is not None else ''}"
        )
    containers = obj.raw.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or []
    index = next((i for i, c in enumerate(containers) if container is None or c.get("name") == container), None)
    if index is None:
        raise ValueError(f"{obj.location}: Deployment {ns}/{dep_name} has no container {container!r}")
    if containers[index].get("image") == image:
        return head
    field = ("spec", "template", "spec", "containers", index, "image")
    if field in obj.sources:  # rendered from a Kustomize directory whose kustomization sets this image
        kfile, kline = obj.sources[field]
        raise ValueError(
            f"{os.path.relpath(kfile, git_source.path)}:{kline}: the image of Deployment {ns}/{dep_name} is set by "
            "this kustomization (images or a patch), so editing the Deployment's file would change nothing: set "
            f"the new tag there (images: newTag), or put an $imagepolicy marker on it for the image automation"
        )
    line_no = obj.line_of(field)
    path = Path(git_source.path) / obj.file
    lines = yamlload.read_text(path, root=git_source.path).splitlines(keepends=True)
    m = _IMAGE_LINE.match(lines[line_no - 1].rstrip("\r\n")) if 0 < line_no <= len(lines) else None
    if m is None:
        raise ValueError(
            f"{obj.file}:{line_no}: cannot find the image line of container {containers[index].get('name')} to update"
        )
    ending = lines[line_no - 1][len(lines[line_no - 1].rstrip("\r\n")) :]
    lines[line_no - 1] = f"{m['head']}{m['q']}{image}{m['q']}{m['tail']}{ending}"
    prefix = f"{git_source.subdir}/" if getattr(git_source, "subdir", "") else ""
    message = (
        f"Release {image} to {ns}/{dep_name}\n\nRequested by canary_release (like fluxctl release --update-image).\n"
    )
    return git_source.commit_and_push({prefix + obj.file: "".join(lines)}, message, author=author or DEFAULT_AUTHOR)
