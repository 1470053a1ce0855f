"""One driver per release: a controller takes the release (``driver`` and ``driverSince`` in the Canary status,
written atomically) before it ticks; while another live process holds it, a second one follows and never ticks
it too; a dead holder's release is taken over. Against the fake API server through the real kubernetes client."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from playground import pipeline, routing
from playground.cluster.kubernetes import KubernetesCluster
from playground.controller import Controller, ControllerError, Settings, driver_alive
from playground.models import Phase
from tests.support.fake_kube import FakeKube
from tests.support.http_server import RecordingServer
from tests.test_k8s_release import new_revision, routing_canary, seed

KEY = "prod/backend"
INTERVAL = 0.05  # s: a holder is alive for 3 intervals + 10 s after its last tick or its taking the release


class Clock:
    """A clock the test moves by hand, starting at the real time (route_to_primary reads the real one)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def kube() -> Iterator[tuple[FakeKube, KubernetesCluster]]:
    # webhooks answer 200 (the canary gets traffic); no Prometheus: the analysis halts at the first weight
    with FakeKube(auto_rollout=True) as kube, RecordingServer() as hooks:
        seed(kube, "prod", "http://127.0.0.1:9", hooks.url)
        api = kube.api_client()
        try:
            yield kube, KubernetesCluster(api_client=api, sleep=lambda s: None)
        finally:
            api.close()


def controller(cluster: KubernetesCluster, name: str, clock: Clock, log: list[str] | None = None) -> Controller:
    ctl = Controller(
        cluster,
        Settings(interval_override=INTERVAL),
        log=(log.append if log is not None else lambda _line: None),
        clock=clock,
        sleep=lambda _s: None,
    )
    ctl.driver = name
    return ctl


def status(kube: FakeKube) -> dict:
    return kube.object("flagger.app/v1beta1", "Canary", "prod", "backend").get("status") or {}


def test_a_live_holder_keeps_the_release_and_a_dead_one_loses_it(kube) -> None:
    fake, cluster = kube
    clock = Clock()
    a, b = controller(cluster, "run A", clock), controller(cluster, "pid B", clock)
    assert a.take_release(KEY) is None
    assert status(fake)["driver"] == "run A" and status(fake)["driverSince"]
    held = b.take_release(KEY)
    assert held is not None and held.driver == "run A"
    assert status(fake)["driver"] == "run A"  # refused: nothing written
    assert a.take_release(KEY) is None  # its own: taken again (the time renewed)
    clock.now += 3 * INTERVAL + 9  # still within its liveness
    assert b.take_release(KEY) is not None
    clock.now += 2  # A neither ticked nor renewed for 3 intervals + 11 s: it is dead, B takes over
    assert b.take_release(KEY) is None and status(fake)["driver"] == "pid B"
    b.release_driver(KEY)
    assert status(fake).get("driver") is None
    assert not driver_alive(cluster.get_canary_status("prod", "backend"), clock.now)
    assert a.take_release(KEY) is None


def test_run_follows_a_live_driver_and_ticks_only_after_it_ended(kube) -> None:
    fake, cluster = kube
    clock = Clock()
    a = controller(cluster, "run A", clock)
    assert a.run(KEY).phase == Phase.Initialized  # bootstrap; A gives the release up at the end
    new_revision(cluster, "prod")
    assert a.take_release(KEY) is None  # A holds the new revision's release (as `release --image` before its commit)

    log: list[str] = []
    b = controller(cluster, "pid B", clock, log)
    waits: list[dict] = []

    def sleep(_s: float) -> None:  # what B sees while it follows; A drives the release to its end meanwhile
        waits.append(status(fake))
        if len(waits) == 3:
            a.run(KEY, max_ticks=2)  # A ticks (B does not) ...
            a.release_driver(KEY)  # ... and ends

    b.sleep = sleep
    ticks: list[int] = []
    b.run(KEY, on_tick=lambda rec: ticks.append(rec.tick), max_ticks=1)
    assert any("driven by run A; following it" in line for line in log), log
    assert len(waits) == 3 and all(w["driver"] == "run A" for w in waits)
    assert ticks == [0]  # B's ticks start after A's release ended: one tick, its own
    assert any("pid B drives the release now" in line for line in log), log
    assert status(fake).get("driver") is None  # B gave it up at the end of its run


def test_claimed_refuses_before_anything_and_gives_the_release_up_on_failure(kube) -> None:
    fake, cluster = kube
    clock = Clock()
    a, b = controller(cluster, "run A", clock), controller(cluster, "pid B", clock)
    assert a.take_release(KEY) is None
    done: list[str] = []
    with pytest.raises(ControllerError, match=r"prod/backend: its release is driven by run A .* nothing was committed"):
        with b.claimed(KEY):
            done.append("committed")
    assert done == [] and status(fake)["driver"] == "run A"
    a.release_driver(KEY)
    with pytest.raises(RuntimeError, match="sync failed"):
        with b.claimed(KEY):
            assert status(fake)["driver"] == "pid B"
            raise RuntimeError("sync failed")
    assert status(fake).get("driver") is None  # the failed claim does not keep others waiting


def test_a_follower_stopped_or_failed_leaves_the_drivers_traffic_alone(kube) -> None:
    fake, cluster = kube
    clock = Clock()
    a = controller(cluster, "dagster run A", clock)
    assert a.run(KEY).phase == Phase.Initialized
    new_revision(cluster, "prod")
    for _ in range(10):  # A drives until the canary has traffic
        if a.run(KEY, max_ticks=1).state.status.canaryWeight:
            break
    assert a.take_release(KEY) is None

    def vs_routes() -> tuple[int, int]:
        vs = fake.object("networking.istio.io/v1beta1", "VirtualService", "prod", "backend")
        primary, canary, _ = routing.routes_of(routing_canary("prod"), vs)
        return primary, canary

    shifted = vs_routes()
    assert shifted[1] > 0, shifted
    b = controller(cluster, "pid B", clock)

    def interrupted(_s: float) -> None:
        raise KeyboardInterrupt

    b.sleep = interrupted
    with pytest.raises(KeyboardInterrupt):
        b.run(KEY)  # Ctrl-C while following: what `playground release` does next is make_safe
    b.make_safe(KEY)
    assert vs_routes() == shifted and status(fake)["driver"] == "dagster run A"

    class Runtime:  # the runtime argument of route_to_primary: only its cluster is used
        def cluster(self) -> KubernetesCluster:
            return cluster

    # the failed-run sensor for a run that only followed (or was refused): A still drives, its traffic stays
    lines: list[str] = []
    pipeline.route_to_primary(Runtime(), KEY, failed_driver="dagster run B", log=lines.append)
    assert vs_routes() == shifted and lines == ["prod/backend: left to dagster run A, which drives its release"]
    # ... and for the driver itself: nobody drives any more, all traffic to the primary
    pipeline.route_to_primary(Runtime(), KEY, failed_driver="dagster run A", log=lines.append)
    assert vs_routes() == (100, 0) and status(fake)["canaryWeight"] == 0
