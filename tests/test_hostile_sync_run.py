"""The gitops_sync Dagster job (``execute_in_process``, against the shared real local playground) on a commit
holding every hostile probe git can carry (alias bomb, NUL byte, 100k-deep nesting, symlink to /dev/zero, 300 KB
name, 3 MiB file): the run fails with one line per probe in its validation report and applies nothing."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from jobs import gitops_sync
from playground.textsafe import MAX_LINE
from tests.support.hostile import IN_GIT, PROBES
from tests.support.playground_env import store_snapshot

pytestmark = pytest.mark.integration


def test_gitops_sync_run_of_a_hostile_commit_reports_each_probe_and_applies_nothing(playground) -> None:
    env = playground
    good = env.head()
    before = store_snapshot(env.home)
    with env.checkout() as repo:
        root = Path(str(repo.working_tree_dir))
        for name in IN_GIT:
            PROBES[name][0](root / "prod")
        repo.git.add(A=True)
        repo.git.commit("-q", "-m", "hostile files")
        repo.git.push("-q", "origin", "HEAD:refs/heads/main")
    try:
        with dg.DagsterInstance.ephemeral() as instance:
            result = gitops_sync.execute_in_process(
                resources={"playground": env.resource()}, instance=instance, raise_on_error=False
            )
        assert not result.success
        failure = result.get_step_failure_events()[0].event_specific_data.user_failure_data
        report = failure.metadata["validation report"].value
        lines = [line for line in report.splitlines() if line != "```"]  # a markdown code block
        for name in IN_GIT:
            (line,) = [line for line in lines if f"prod/{name}.yaml:" in line]
            assert PROBES[name][1] in line
        assert all(len(line) <= MAX_LINE and line.isprintable() for line in lines)
        assert lines[-1].endswith(f"{len(IN_GIT)} error(s), 0 warning(s); nothing was applied")
        assert store_snapshot(env.home) == before
    finally:
        env.reset_origin(good)
