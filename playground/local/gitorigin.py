"""The local GitOps origin: a bare git repository at ``$PLAYGROUND_HOME/git/gitops.git`` (GitPython).

``playground up`` creates it and, when it has no commit yet, seeds branch ``main`` with one commit holding the
content of the project's ``manifests/`` directory at the repository root (``istio/``, ``metrics/``, ``prod/``,
``README.md``), exactly what a GitOps repository of this project looks like.

Helpers for syncing and tests: :func:`clone`, :func:`commit_and_push`, :func:`head_sha`, :func:`checkout_tree`.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import git

__all__ = ["ensure_origin", "clone", "commit_and_push", "head_sha", "checkout_tree", "AUTHOR", "BRANCH"]

BRANCH = "main"
AUTHOR = git.Actor("playground", "playground@localhost")


def ensure_origin(origin: Path, seed: Path | None = None, *, branch: str = BRANCH) -> str | None:
    """Create the bare repository ``origin`` if needed; seed ``branch`` from ``seed`` (a directory whose content
    becomes the repository root) when the branch has no commit. Returns the branch's head sha (None if empty)."""
    origin = Path(origin)
    if not (origin / "HEAD").exists():
        origin.mkdir(parents=True, exist_ok=True)
        with git.Repo.init(origin, bare=True) as repo:
            repo.git.symbolic_ref("HEAD", f"refs/heads/{branch}")
    sha = head_sha(origin, branch)
    if sha is not None or seed is None:
        return sha
    seed = Path(seed)
    if not seed.is_dir():
        raise FileNotFoundError(f"cannot seed the GitOps origin: {seed} is not a directory")
    with tempfile.TemporaryDirectory(prefix="gitops-seed-") as tmp:
        work = Path(tmp) / "work"
        with git.Repo.init(work) as repo:
            repo.git.checkout("-b", branch)
            # symlinks stay links (as git stores them): following one to /dev/zero would copy forever
            shutil.copytree(
                seed, work, symlinks=True, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".git", "__pycache__")
            )
            repo.git.add(A=True)
            repo.index.commit(f"Initial manifests (seeded from {seed.name}/)", author=AUTHOR, committer=AUTHOR)
            repo.create_remote("origin", str(origin))
            repo.git.push("origin", f"HEAD:refs/heads/{branch}")
    return head_sha(origin, branch)


def head_sha(origin: Path, branch: str = BRANCH) -> str | None:
    """The commit at the tip of ``branch`` in ``origin`` (a bare or working repository), or None."""
    with git.Repo(origin) as repo:  # closed: no `git cat-file` process left behind
        try:
            return repo.commit(f"refs/heads/{branch}").hexsha
        except (git.BadName, ValueError, git.GitCommandError):
            return None


def clone(origin: Path, dest: Path, *, branch: str = BRANCH) -> git.Repo:
    """A working clone of ``origin`` at ``dest`` on ``branch``, with the playground's commit identity."""
    repo = git.Repo.clone_from(str(origin), str(dest), branch=branch)
    with repo.config_writer() as cw:
        cw.set_value("user", "name", AUTHOR.name)
        cw.set_value("user", "email", AUTHOR.email)
    return repo


def commit_and_push(work: Path, message: str, *, branch: str = BRANCH) -> str:
    """Commit every change in the working clone ``work`` and push it to its origin; return the new sha."""
    with git.Repo(work) as repo:
        repo.git.add(A=True)
        commit = repo.index.commit(message, author=AUTHOR, committer=AUTHOR)
        repo.git.push("origin", f"HEAD:refs/heads/{branch}")
        return commit.hexsha


def checkout_tree(origin: Path, dest: Path, ref: str = BRANCH) -> str:
    """Write the files of ``ref`` (a branch or sha) of ``origin`` into the directory ``dest`` (no .git); return
    the commit sha."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with git.Repo(origin) as repo:
        commit = repo.commit(ref)
        for blob in commit.tree.traverse():
            if not isinstance(blob, git.Blob):
                continue
            target = dest / blob.path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(blob.data_stream.read())
        return commit.hexsha
