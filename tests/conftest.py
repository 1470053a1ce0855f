"""Shared fixtures.

``playground``: ONE real local playground per test session (Envoy, Prometheus, docker-registry, node agent and
the workloads of ``manifests/``) on free ports in a temporary home, with both canaries initialized (primary
created, all traffic on it, canary scaled to zero). It is expensive (~15 s), so the tests that need a running
playground share it; each such test starts from whatever idle state the previous one left (a release of a
new revision always starts from there) and puts the GitOps origin back in a consistent state. Tests that need
isolation (rewriting git history, a pristine store) build their own origin or home.

Short windows for back-to-back releases: the backend Canary of the session's origin runs its load test for 5 s
(not 1 min) and queries its metrics over 5 s (not 30 s), so that each release's metrics see only its own
traffic and the tests run fast.

``dagster_backend``: ONE real playground WITH Dagster (``playground up --manifests DIR`` as users run it; DIR = the
project's manifests without prod/frontend, short windows) shared by tests/test_graph.py and
tests/test_run_takeover.py. The tests that use it run one after the other (their order is otherwise kept) and it
is stopped after the last of them, so no Dagster daemon runs idle beside the rest of the suite. Each such test
starts with no Dagster run in flight, works on what it creates (its own commit, target or revision) and compares
with what it saw before it started, never with a pristine playground.
"""

from __future__ import annotations

import pytest

from tests.support.dagster_playground import DagsterPlayground, short_windows
from tests.support.playground_env import TARGETS, PlaygroundEnv, playground_env


@pytest.fixture(scope="session")
def playground(tmp_path_factory) -> PlaygroundEnv:
    home = tmp_path_factory.mktemp("playground") / "home"
    with playground_env(home, interval="1s") as env:
        env.commit(
            {
                "prod/backend/canary.yaml": short_windows,
            },
            "tests: short load test and metric windows",
        )
        rt = env.runtime()
        try:
            from playground import pipeline

            pipeline.sync(rt)
            ctl = rt.controller(log=lambda _line: None, interval=1.0)
            for key in TARGETS:
                final = ctl.run(key, max_ticks=120)
                assert final.phase.value == "Initialized", f"{key} did not initialize: {final.phase}"
        finally:
            rt.close()
        yield env


SHARED_DAGSTER = "dagster_backend"
#: the running shared Dagster playground (or why it could not start), between the tests that use it
_shared_dagster: dict[str, object] = {}


@pytest.fixture
def dagster_backend(tmp_path_factory) -> DagsterPlayground:
    from tests.support import dagster_playground as dp

    if "error" in _shared_dagster:
        pytest.fail(f"the shared Dagster playground did not start: {_shared_dagster['error']}", pytrace=False)
    pg = _shared_dagster.get("pg")
    if pg is None:
        try:
            pg = _shared_dagster["pg"] = dp.start_backend_only(tmp_path_factory.mktemp("dagster-backend"))
        except Exception as e:
            _shared_dagster["error"] = str(e)[-3000:]
            raise
    assert isinstance(pg, DagsterPlayground)
    dp.wait_idle(pg)
    return pg


def _stop_shared_dagster() -> None:
    pg = _shared_dagster.pop("pg", None)
    _shared_dagster.pop("error", None)
    if isinstance(pg, DagsterPlayground):
        from tests.support import dagster_playground as dp

        dp.stop(pg.home)


def pytest_collection_modifyitems(session, config, items) -> None:
    """The tests using the shared Dagster playground run together, where the first of them was."""
    users = [item for item in items if SHARED_DAGSTER in getattr(item, "fixturenames", ())]
    if users:
        first = items.index(users[0])
        others = [item for item in items if SHARED_DAGSTER not in getattr(item, "fixturenames", ())]
        items[:] = others[:first] + users + others[first:]


def pytest_runtest_teardown(item, nextitem) -> None:
    """Stop the shared Dagster playground after the last test in a row that used it."""
    if _shared_dagster and (nextitem is None or SHARED_DAGSTER not in getattr(nextitem, "fixturenames", ())):
        _stop_shared_dagster()


def pytest_sessionfinish(session, exitstatus) -> None:
    _stop_shared_dagster()  # e.g. after -x stopped the session in the middle of the tests that use it


# ------------------------------------------------------------------------------------- test layers, enforced
# `pytest -m "not integration"` is the fast layer: no test in it may start a process (a subprocess, git through
# GitPython, Envoy, Prometheus, the console script, a Dagster daemon...). A test that does must be marked
# `@pytest.mark.integration` (or its module `pytestmark = pytest.mark.integration`); an unmarked one fails here.


#: Commands the stdlib's ``platform`` module runs on first use (``uname -p``, ``file -b``), e.g. when Dagster is
#: first imported: probes of the machine, not processes a test starts.
PLATFORM_PROBES = {"uname", "file"}


@pytest.fixture(autouse=True)
def _unit_tests_start_no_process(request, monkeypatch):
    if request.node.get_closest_marker("integration") is not None:
        yield
        return
    import os
    import subprocess

    started: list[str] = []

    def refuse(what: str):
        def blocked(*args, **kwargs):
            started.append(what)
            raise RuntimeError(f"{request.node.nodeid} starts a process ({what}): mark it @pytest.mark.integration")

        return blocked

    real_execute_child = subprocess.Popen._execute_child

    def execute_child(self, args, *rest, **kwargs):
        argv = [args] if isinstance(args, str) else list(args)
        if argv and str(argv[0]) in PLATFORM_PROBES:  # the stdlib's platform module asking about the machine
            return real_execute_child(self, args, *rest, **kwargs)
        started.append(f"subprocess {args if isinstance(args, str) else ' '.join(map(str, args))}")
        raise RuntimeError(f"{request.node.nodeid} starts a process ({started[-1]}): mark it @pytest.mark.integration")

    monkeypatch.setattr(subprocess.Popen, "_execute_child", execute_child)
    monkeypatch.setattr(os, "fork", refuse("os.fork"))
    monkeypatch.setattr(os, "posix_spawn", refuse("os.posix_spawn"))
    monkeypatch.setattr(os, "posix_spawnp", refuse("os.posix_spawnp"))
    yield
    assert real_execute_child is not None
    if started:
        pytest.fail(f"a unit test started a process ({started[0]}): mark it @pytest.mark.integration", pytrace=False)
