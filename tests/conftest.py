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
"""

from __future__ import annotations

import pytest

from tests.support.playground_env import TARGETS, PlaygroundEnv, playground_env


@pytest.fixture(scope="session")
def playground(tmp_path_factory) -> PlaygroundEnv:
    home = tmp_path_factory.mktemp("playground") / "home"
    with playground_env(home, interval="1s") as env:
        env.commit(
            {
                "prod/backend/canary.yaml": lambda t: t.replace("interval: 30s", "interval: 5s").replace(
                    "hey -z 1m", "hey -z 5s"
                )
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
