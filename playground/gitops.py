"""GitOps engine: a local checkout of the GitOps origin, and the sync of its manifests into a cluster.

This is what Flux's source-controller and kustomize-controller do, as plain functions the Dagster layer calls
(the git sensor, the ``gitops_sync`` job and the image-tag sensor); nothing here imports Dagster.

Git (:class:`GitSource`)::

    src = GitSource("/srv/gitops.git", Path(".playground/checkout"), branch="main", subdir="manifests")
    sha = src.fetch()                      # clone or fetch + hard reset to origin/main; returns HEAD
    src.changed_paths(old_sha, sha)        # what a commit range touched (repository-relative paths)
    src.commit_and_push({"manifests/prod/backend/deployment.yaml": text}, "Update image ...")

The checkout is owned by the playground: ``fetch`` throws away local changes, and ``commit_and_push`` never
leaves a half-made commit behind (on any failure it resets to ``origin/<branch>``). A lock file next to the
checkout serialises users of the same checkout (the git sensor and the image sensor may run at once).

Sync (:func:`plan_sync`, :func:`apply_sync`)::

    plan = plan_sync(cluster, src.path)    # validate everything first; then create/update/unchanged per object
    if plan.errors: report(plan.report()) # nothing is applied from an invalid tree
    result = apply_sync(cluster, plan)     # apply in dependency order
    for t in result.targets:
        if t.changed: request_canary_release(t.canary, t.new_revision)

Ordering is :meth:`playground.manifests.ManifestSet.apply_order`: mesh (Istio), metrics (MetricTemplates,
AlertProviders), namespaces, workloads (ConfigMaps/Secrets, Deployments, Services, HPAs, Canaries, then Flux
image automation objects). "Unchanged" compares the content git manages: ``status`` and server-set metadata
(resourceVersion, uid, generation, timestamps, managedFields) are ignored, and so is ``spec.replicas`` of a
Deployment that git leaves unset or that is a Canary target (see below).

Canary targets: Flagger owns the replica count of a target Deployment once the Canary is initialized (it
scales the target to zero after promotion and up again for the next analysis), so when the target already
exists in the cluster the sync keeps the cluster's ``spec.replicas``; git must not scale a promoted canary
back up. A new revision of a target (its pod template, or the data of a ConfigMap/Secret it references) is
reported as a :class:`TargetChange` for the caller to start a ``canary_release`` run.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import git

from playground import routing
from playground.cluster.base import Cluster, ClusterError
from playground.errors import PlaygroundError
from playground.manifests import Finding, ManifestObject, apply_phase, load_tree, validate_set
from playground.models import Canary

__all__ = [
    "GitError",
    "GitSource",
    "SyncError",
    "SyncItem",
    "SyncPlan",
    "SyncResult",
    "TargetChange",
    "plan_sync",
    "apply_sync",
    "managed_content",
    "DEFAULT_AUTHOR",
]

DEFAULT_AUTHOR = ("gitops-playground", "playground@localhost")

#: Seconds a network git operation (clone, fetch, push) may take before it is killed.
GIT_TIMEOUT = 120

#: Environment for git commands: never prompt for credentials (a sensor must not hang on a password prompt),
#: and fail fast on unreachable SSH hosts.
_GIT_ENV = {
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_SSH_COMMAND": os.environ.get("GIT_SSH_COMMAND", "ssh -o BatchMode=yes -o ConnectTimeout=15"),
}


# ================================================================================================ git


class GitError(PlaygroundError, RuntimeError):
    """A git operation on the GitOps repository failed; the message names the repository and what to check."""


def _git_detail(e: Exception) -> str:
    """The useful part of a GitPython error (git's stderr, without the command line noise)."""
    stderr = getattr(e, "stderr", None)
    text = (stderr if isinstance(stderr, str) else "") or str(e)
    lines = [ln.strip() for ln in text.replace("stderr:", "").splitlines() if ln.strip().strip("'")]
    return "; ".join(ln.strip("'").strip() for ln in lines)[:600] or type(e).__name__


class GitSource:
    """A local checkout of the GitOps origin (``url``: a path, ``file://``, ``https://`` or SSH URL).

    ``workdir`` is the checkout directory (created by :meth:`fetch`); ``subdir`` is where the manifests live
    inside the repository (``""`` = the repository root), so :attr:`path` is what :func:`plan_sync` reads.
    """

    def __init__(self, url: str, workdir: Path | str, branch: str = "main", subdir: str = ""):
        self.url = str(url)
        self.workdir = Path(workdir)
        self.branch = branch
        self.subdir = subdir.strip("/")
        self._lock_path = self.workdir.parent / f".{self.workdir.name}.lock"
        self._repo: git.Repo | None = None

    def __repr__(self) -> str:
        return f"GitSource({self.url!r}, branch={self.branch!r}, workdir={str(self.workdir)!r})"

    # -- properties ----------------------------------------------------------------------------------------
    @property
    def path(self) -> Path:
        """The manifests directory inside the checkout."""
        return self.workdir / self.subdir if self.subdir else self.workdir

    @property
    def repo(self) -> git.Repo:
        """The GitPython repository of the checkout (kept open; :meth:`close` releases its git processes)."""
        if self._repo is None:
            try:
                self._repo = git.Repo(self.workdir)
            except (git.exc.InvalidGitRepositoryError, git.exc.NoSuchPathError) as e:
                raise GitError(f"{self.workdir} is not a checkout of {self.url}: call fetch() first") from e
        return self._repo

    def close(self) -> None:
        if self._repo is not None:
            self._repo.close()
            self._repo = None

    # -- locking -------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self._lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self._lock_path, "a+") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    # -- reading -------------------------------------------------------------------------------------------
    def fetch(self) -> str:
        """Bring the checkout to ``origin/<branch>`` (clone when missing) and return the HEAD commit sha.

        Local changes in the checkout are discarded (it mirrors the origin). Raises :class:`GitError` when the
        origin cannot be reached or has no such branch.
        """
        with self._locked():
            return self._fetch()

    def _fetch(self) -> str:
        if not (self.workdir / ".git").exists():
            self._clone()
        repo = self.repo
        try:
            with repo.git.custom_environment(**_GIT_ENV):
                if "origin" not in [r.name for r in repo.remotes]:
                    repo.create_remote("origin", self.url)
                elif repo.remotes.origin.url != self.url:
                    repo.git.remote("set-url", "origin", self.url)
                repo.git.fetch("--prune", "origin", kill_after_timeout=GIT_TIMEOUT)
        except git.exc.GitCommandError as e:
            raise self._unreachable(e) from e
        ref = f"origin/{self.branch}"
        try:
            repo.git.rev_parse("--verify", "--quiet", f"{ref}^{{commit}}")
        except git.exc.GitCommandError as e:
            raise GitError(
                f"git origin {self.url} has no branch {self.branch!r}: push the manifests to that branch, or "
                "configure the branch the playground should follow"
            ) from e
        try:
            repo.git.checkout("-f", "-B", self.branch, ref)
            repo.git.reset("--hard", ref)
            repo.git.clean("-ffdx")
        except git.exc.GitCommandError as e:
            raise GitError(
                f"cannot update the checkout {self.workdir} of {self.url}: {_git_detail(e)}; "
                f"delete {self.workdir} and fetch again"
            ) from e
        return repo.head.commit.hexsha

    def _clone(self) -> None:
        """Clone into a temporary sibling directory, then rename it into place (no half-made checkout)."""
        self.close()
        self.workdir.parent.mkdir(parents=True, exist_ok=True)
        if self.workdir.exists() and any(self.workdir.iterdir()):
            raise GitError(f"{self.workdir} exists and is not a git checkout: remove it or choose another workdir")
        tmp = Path(tempfile.mkdtemp(prefix=f".{self.workdir.name}-clone-", dir=self.workdir.parent))
        try:
            git.Repo.clone_from(self.url, tmp, env=dict(os.environ, **_GIT_ENV), no_checkout=True).close()
            if self.workdir.exists():
                self.workdir.rmdir()
            tmp.rename(self.workdir)
        except git.exc.GitCommandError as e:
            raise self._unreachable(e) from e
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def _unreachable(self, e: Exception) -> GitError:
        return GitError(
            f"cannot reach the git origin {self.url} (branch {self.branch}): {_git_detail(e)}. Check that the URL "
            "is right, that the repository exists and is reachable from this machine, and that credentials "
            "(SSH key or token) are configured"
        )

    def head(self) -> str:
        """The sha of the checked-out commit."""
        try:
            return self.repo.head.commit.hexsha
        except ValueError as e:  # an empty repository
            raise GitError(f"the checkout {self.workdir} of {self.url} has no commit yet") from e

    def changed_paths(self, old_sha: str | None, new_sha: str) -> list[str]:
        """Repository-relative paths that differ between two commits (every file of ``new_sha`` when
        ``old_sha`` is None, e.g. on the first sync). Sorted; renames list both paths."""
        repo = self.repo
        try:
            if not old_sha:
                out = repo.git.ls_tree("-r", "--name-only", new_sha)
            else:
                out = repo.git.diff("--name-only", "--no-renames", old_sha, new_sha)
        except git.exc.GitCommandError as e:
            raise GitError(
                f"cannot compare {old_sha} and {new_sha} in {self.url}: {_git_detail(e)}; "
                "is the old commit still in the history (fetch again)?"
            ) from e
        return sorted({p for p in out.splitlines() if p})

    def read(self, relpath: str) -> str:
        """Text of a repository-relative file in the checkout (a regular file inside it, within the size limit:
        :func:`playground.yamlload.read_text`, which raises ``yamlload.Refused`` otherwise)."""
        from playground import yamlload

        return yamlload.read_text(self.workdir / self._safe(relpath), root=self.workdir)

    # -- writing -------------------------------------------------------------------------------------------
    def _safe(self, relpath: str) -> str:
        p = PurePosixPath(relpath.replace(os.sep, "/"))
        if p.is_absolute() or ".." in p.parts or not p.parts or p.parts[0] == ".git":
            raise GitError(
                f"refusing to write {relpath!r}: paths must be relative to the repository root and stay inside it"
            )
        return str(p)

    def commit_and_push(
        self,
        changes: dict[str, str],
        message: str,
        author: tuple[str, str] = DEFAULT_AUTHOR,
    ) -> str:
        """Write ``changes`` (repository-relative path -> new file text), commit them as ``author`` and push to
        ``origin/<branch>``; return the pushed commit sha.

        The commit is made on top of the checkout's HEAD (the commit the caller computed the changes from). When
        the push is rejected because the origin moved on, the commit is rebased onto the new origin head once
        and pushed again. If nothing changes, no commit is made and HEAD is returned. On any failure the
        checkout is reset to ``origin/<branch>`` and :class:`GitError` raised: nothing is left half-modified.
        """
        if not changes:
            return self.head()
        safe = {self._safe(k): v for k, v in changes.items()}
        with self._locked():
            repo = self.repo
            try:
                for rel, text in safe.items():
                    full = self.workdir / rel
                    full.parent.mkdir(parents=True, exist_ok=True)
                    with open(full, "w", encoding="utf-8", newline="") as f:
                        f.write(text)
                repo.git.add("--", *safe)
                if not repo.git.diff("--cached", "--name-only"):
                    return repo.head.commit.hexsha
                name, email = author
                env = {
                    "GIT_AUTHOR_NAME": name,
                    "GIT_AUTHOR_EMAIL": email,
                    "GIT_COMMITTER_NAME": name,
                    "GIT_COMMITTER_EMAIL": email,
                }
                with repo.git.custom_environment(**env):
                    repo.git.commit("--no-verify", "-q", "-m", message)
                self._push_with_retry(repo, env)
                return repo.head.commit.hexsha
            except BaseException as e:
                self._reset_to_origin(repo)
                if isinstance(e, GitError):
                    raise
                if isinstance(e, git.exc.GitCommandError):
                    raise GitError(
                        f"cannot commit and push to {self.url} (branch {self.branch}): "
                        f"{_git_detail(e)}; the checkout was reset to origin/{self.branch}"
                    ) from e
                raise

    def _push_with_retry(self, repo: git.Repo, env: dict[str, str]) -> None:
        refspec = f"HEAD:refs/heads/{self.branch}"
        with repo.git.custom_environment(**_GIT_ENV):
            try:
                repo.git.push("origin", refspec, kill_after_timeout=GIT_TIMEOUT)  # also moves origin/<branch>
                return
            except git.exc.GitCommandError as e:
                detail = _git_detail(e)
                if not any(w in detail for w in ("rejected", "non-fast-forward", "fetch first")):
                    raise self._unreachable(e) from e
            # The origin moved on: rebase our commit onto it once and retry.
            try:
                repo.git.fetch("origin", kill_after_timeout=GIT_TIMEOUT)
                with repo.git.custom_environment(**env):
                    repo.git.rebase(f"origin/{self.branch}")
            except git.exc.GitCommandError as e:
                with contextlib.suppress(git.exc.GitCommandError):
                    repo.git.rebase("--abort")
                raise GitError(
                    f"the push to {self.url} was rejected because origin/{self.branch} moved on, and rebasing onto "
                    f"it failed ({_git_detail(e)}): the change conflicts with a newer commit; it was dropped, "
                    "fetch and compute it again"
                ) from e
            try:
                repo.git.push("origin", refspec, kill_after_timeout=GIT_TIMEOUT)
            except git.exc.GitCommandError as e:
                raise GitError(
                    f"the push to {self.url} (branch {self.branch}) failed again after a rebase: "
                    f"{_git_detail(e)}; retry later"
                ) from e

    def _reset_to_origin(self, repo: git.Repo) -> None:
        with contextlib.suppress(git.exc.GitCommandError):
            repo.git.rebase("--abort")
        with contextlib.suppress(git.exc.GitCommandError):
            repo.git.reset("--hard", f"origin/{self.branch}")
            repo.git.clean("-ffdx")


# =============================================================================================== sync


class SyncError(PlaygroundError, RuntimeError):
    """A sync could not (fully) apply. ``findings``: the validation report of a refused plan; ``applied``: keys
    of the objects applied before the failure (re-running the sync completes it: apply is idempotent)."""

    def __init__(self, message: str, findings: list[Finding] | None = None, applied: list[str] | None = None):
        super().__init__(message)
        self.findings = list(findings or [])
        self.applied = list(applied or [])


CREATE, UPDATE, UNCHANGED, SKIP = "create", "update", "unchanged", "skip"

#: API groups of objects the playground reads from git only (the image sensor reads Flux image policies from
#: the manifests): a cluster that does not serve them (no Flux CRDs) skips them with a warning.
GIT_ONLY_GROUPS = ("image.toolkit.fluxcd.io",)

#: Metadata the API server (or the local store) sets; never compared, never sent.
_SERVER_METADATA = (
    "resourceVersion",
    "uid",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)


@dataclass
class SyncItem:
    """One object of a sync plan. ``key`` is ``Kind namespace/name`` (``Kind name`` when cluster-scoped)."""

    key: str
    api_version: str
    kind: str
    namespace: str | None
    name: str
    phase: str  # mesh | metrics | namespaces | workloads
    action: str  # create | update | unchanged | skip
    desired: dict[str, Any]  # what will be applied
    source: str  # file:line in the manifests
    canary_target: bool = False  # a Deployment that is the target of a Canary (replicas owned by Flagger)


@dataclass
class SyncPlan:
    """What a sync would do. With ``errors`` the plan has no items: nothing may be applied."""

    root: str
    items: list[SyncItem] = field(default_factory=list)
    errors: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    canaries: list[Canary] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def of_action(self, action: str) -> list[SyncItem]:
        return [i for i in self.items if i.action == action]

    def report(self) -> str:
        """The validation report: one line per finding, then a summary."""
        lines = [str(f) for f in self.errors + self.warnings]
        lines.append(
            f"{self.root}: {len(self.errors)} error(s), {len(self.warnings)} warning(s)"
            + ("; nothing was applied" if self.errors else "")
        )
        return "\n".join(lines)

    def summary(self) -> str:
        if self.errors:
            return f"invalid manifests ({len(self.errors)} errors): nothing to apply"
        text = (
            f"{len(self.of_action(CREATE))} to create, {len(self.of_action(UPDATE))} to update, "
            f"{len(self.of_action(UNCHANGED))} unchanged"
        )
        skipped = len(self.of_action(SKIP))
        return text + (f", {skipped} skipped (not served by the cluster)" if skipped else "")


@dataclass(frozen=True)
class TargetChange:
    """The revision of a Canary's target after a sync. ``changed``: a canary_release run is due."""

    canary: str  # namespace/name of the Canary
    old_revision: str | None  # the canary status' lastAppliedSpec (None: never initialized)
    new_revision: str  # routing.revision(target, its configs in the cluster after the sync)
    changed: bool


@dataclass
class SyncResult:
    applied: list[str] = field(default_factory=list)  # keys of created/updated objects, in apply order
    unchanged: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # kinds the cluster does not serve (git-only objects)
    targets: list[TargetChange] = field(default_factory=list)
    # revertOnDeletion (playground.finalizer): finalizers added/removed, Canaries deleted and reverted
    finalizers: Any = None

    @property
    def changed_targets(self) -> list[TargetChange]:
        return [t for t in self.targets if t.changed]


def _json_copy(obj: Any) -> Any:
    """A deep copy as JSON would store it (YAML dates become strings; keys become strings)."""
    return json.loads(json.dumps(obj, default=str))


def _desired(o: ManifestObject) -> dict[str, Any]:
    """The object to apply: as in git, without status or server metadata, with its namespace made explicit."""
    body = {k: v for k, v in _json_copy(o.raw).items() if k != "status"}
    meta = body.setdefault("metadata", {})
    for k in _SERVER_METADATA:
        meta.pop(k, None)
    if o.namespace is not None:
        meta["namespace"] = o.namespace
    else:
        meta.pop("namespace", None)
    return body


def managed_content(obj: dict[str, Any], *, ignore_replicas: bool = False) -> dict[str, Any]:
    """The part of an object git manages: no ``status``, metadata reduced to name, namespace and non-empty
    labels/annotations; ``spec.replicas`` left out with ``ignore_replicas``."""
    body = {k: copy.deepcopy(v) for k, v in obj.items() if k != "status"}
    meta = body.get("metadata") or {}
    kept = {k: meta[k] for k in ("name", "namespace") if meta.get(k)}
    for k in ("labels", "annotations"):
        if meta.get(k):
            kept[k] = meta[k]
    body["metadata"] = kept
    if ignore_replicas and isinstance(body.get("spec"), dict):
        body["spec"].pop("replicas", None)
    return _json_copy(body)


def _item_key(kind: str, namespace: str | None, name: str) -> str:
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"


def plan_sync(cluster: Cluster, manifest_dir: Path | str) -> SyncPlan:
    """Validate the whole manifest tree, then compare every object with what the cluster holds.

    Any validation error gives a plan with ``errors`` and no items. Otherwise the items are in apply order
    (:meth:`ManifestSet.apply_order`), each ``create``, ``update`` or ``unchanged`` -- or ``skip`` for a Flux
    image automation object on a cluster that does not serve its kind (a warning; any other kind the cluster
    cannot read is an error, so again nothing is applied).
    """
    root = str(manifest_dir)
    try:
        mset = load_tree(manifest_dir)
    except FileNotFoundError as e:
        return SyncPlan(
            root,
            errors=[
                Finding(root, 1, str(e), "check the manifests directory of the GitOps repository (GitSource subdir)")
            ],
        )
    findings = validate_set(mset)  # the whole tree first: an error anywhere means nothing is applied
    plan = SyncPlan(root, errors=[f for f in findings if f.is_error], warnings=[f for f in findings if not f.is_error])
    if plan.errors:
        return plan
    plan.canaries = mset.canaries()
    targets = {(c.namespace, c.spec.targetRef.name) for c in plan.canaries}
    for o in mset.apply_order():
        desired = _desired(o)
        try:
            current = cluster.get(o.api_version, o.kind, o.namespace, o.name)
        except ClusterError as e:
            if o.group in GIT_ONLY_GROUPS:
                plan.warnings.append(
                    o.finding(
                        (),
                        f"not applied: {e}",
                        "install the Flux image automation CRDs "
                        "to store it in the cluster; the image sensor reads it from git",
                        severity="warning",
                    )
                )
                plan.items.append(
                    SyncItem(
                        _item_key(o.kind, o.namespace, o.name),
                        o.api_version,
                        o.kind,
                        o.namespace,
                        o.name,
                        _phase_of(o, mset),
                        SKIP,
                        desired,
                        o.location,
                    )
                )
                continue
            plan.errors.append(
                o.finding(
                    (),
                    f"cannot read it from the cluster: {e}",
                    "make the cluster serve this kind (install its CRD) or remove it",
                )
            )
            continue
        is_target = o.kind == "Deployment" and o.group == "apps" and (o.namespace, o.name) in targets
        if is_target and current is not None:
            _keep_cluster_replicas(desired, current)
        ignore_replicas = o.kind == "Deployment" and "replicas" not in (desired.get("spec") or {})
        if current is None:
            action = CREATE
        elif managed_content(desired, ignore_replicas=ignore_replicas) == managed_content(
            current, ignore_replicas=ignore_replicas
        ):
            action = UNCHANGED
        else:
            action = UPDATE
        plan.items.append(SyncItem(
            key=_item_key(o.kind, o.namespace, o.name), api_version=o.api_version, kind=o.kind,
            namespace=o.namespace, name=o.name, phase=_phase_of(o, mset), action=action, desired=desired,
            source=o.location, canary_target=is_target,
        ))  # fmt: skip
    if plan.errors:
        plan.items = []  # a plan with errors applies nothing
    return plan


def _phase_of(o: ManifestObject, mset: Any) -> str:
    if o.kind == "Namespace":
        for phase, objs in mset.apply_phases():
            if any(x is o for x in objs):
                return phase
    return apply_phase(o)


def _keep_cluster_replicas(desired: dict[str, Any], current: dict[str, Any]) -> None:
    """Make ``desired`` carry the cluster's replica count (Flagger owns the replicas of a canary target)."""
    replicas = (current.get("spec") or {}).get("replicas")
    spec = desired.setdefault("spec", {})
    if replicas is None:
        spec.pop("replicas", None)
    else:
        spec["replicas"] = replicas


def apply_sync(cluster: Cluster, plan: SyncPlan, *, log: Callable[[str], None] = lambda _line: None) -> SyncResult:
    """Apply a plan in order; report each Canary target's revision.

    Refuses a plan with validation errors (:class:`SyncError` carrying the findings; nothing applied).
    Unchanged objects are not re-applied. A canary target that exists in the cluster keeps the cluster's
    current ``spec.replicas`` (read again right before applying). If an apply fails, :class:`SyncError` names
    the object and lists what was already applied (re-running the sync completes it).
    """
    if plan.errors:
        raise SyncError(
            f"refusing to sync {plan.root}: the manifests have {len(plan.errors)} error(s); nothing was applied\n"
            + plan.report(),
            findings=plan.errors + plan.warnings,
        )
    result = SyncResult()
    for item in plan.items:
        if item.action == UNCHANGED:
            result.unchanged.append(item.key)
            continue
        if item.action == SKIP:
            result.skipped.append(item.key)
            continue
        body = copy.deepcopy(item.desired)
        try:
            if item.canary_target:
                current = cluster.get(item.api_version, item.kind, item.namespace, item.name)
                if current is not None:
                    _keep_cluster_replicas(body, current)
            cluster.apply(body)
        except Exception as e:
            done = ", ".join(result.applied) if result.applied else "none"
            raise SyncError(
                f"sync of {plan.root} failed at {item.key} ({item.source}): {e}. Already applied: {done}. "
                "Fix the cause and run the sync again: applying is idempotent, so it completes the sync",
                applied=result.applied,
            ) from e
        result.applied.append(item.key)
    result.targets = target_changes(cluster, plan.canaries)
    # Flagger's finalizer: a Canary with revertOnDeletion carries it; one removed from git is deleted and its
    # target reverted (Canaries without revertOnDeletion are never deleted by the sync).
    from playground import finalizer

    result.finalizers = finalizer.reconcile(cluster, plan.canaries, log=log)
    return result


def target_changes(cluster: Cluster, canaries: list[Canary]) -> list[TargetChange]:
    """For each Canary: its target's revision in the cluster now vs the status' ``lastAppliedSpec``.

    The revision is computed exactly as the canary controller does (the target Deployment plus the
    ConfigMaps/Secrets its pod template references, read from the cluster). Canaries whose target is not in
    the cluster are left out.
    """
    out = []
    for c in canaries:
        target = cluster.get("apps/v1", "Deployment", c.namespace, c.spec.targetRef.name)
        if target is None:
            continue
        configs = []
        for kind, name in sorted(
            routing.referenced_configs((target.get("spec") or {}).get("template", {}).get("spec") or {})
        ):
            obj = cluster.get("v1", kind, c.namespace, name)
            if obj is not None:
                configs.append(obj)
        new = routing.revision(target, configs)
        status = cluster.get_canary_status(c.namespace, c.name)
        old = status.lastAppliedSpec if status is not None else None
        out.append(TargetChange(canary=c.key, old_revision=old, new_revision=new, changed=old != new))
    return out
