"""Benchmark: overhead of the canary control loop on the local playground.

Brings up its own local playground (free ports, temporary home, no Dagster daemon), initializes prod/backend,
commits a 10-step canary (stepWeight 10, maxWeight 100) to the GitOps origin, then commits a new podinfo image
and follows it through the real Dagster pieces, each evaluated in this process:

    git commit -> git_commit_sensor (one tick) -> gitops_sync run -> release_on_sync -> canary_release run
    (analysis interval 1 s)

and prints:

- the release's wall time, its number of ticks and the ratio wall time / (ticks x interval), plus the ratio to
  the ideal tick count of a clean 10-step release;
- the time from the git commit to the canary's first traffic step (the VirtualService first sending weight > 0
  to the canary), with its parts. Sensor polling periods (the daemon evaluates sensors every few seconds) are
  not included: each sensor is evaluated as soon as the previous stage finished.

Usage: .venv/bin/python bench/control_loop.py [--interval 1s]
Prints figures only.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dagster as dg

from jobs import canary_release, gitops_sync
from playground.durations import parse_duration
from sensors import git_commit_sensor, release_on_sync
from tests.support.playground_env import PODINFO, playground_env, routes

QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}  # figures only on the terminal
TEN_STEPS = {"maxWeight: 50": "maxWeight: 100", "stepWeight: 5\n": "stepWeight: 10\n"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--interval", default="1s", help="analysis interval (default 1s)")
    args = ap.parse_args()
    interval = parse_duration(args.interval)

    with (
        tempfile.TemporaryDirectory(prefix="bench-control-loop-") as tmp,
        playground_env(Path(tmp) / "home", interval=args.interval) as env,
    ):
        res = env.resource()
        instance = dg.DagsterInstance.ephemeral()

        # a 10-step weighted canary in git, synced, and the backend initialized
        def ten_steps(text: str) -> str:
            for a, b in TEN_STEPS.items():
                assert a in text, a
                text = text.replace(a, b)
            return text

        env.commit({"prod/backend/canary.yaml": ten_steps}, "bench: 10-step canary")
        assert gitops_sync.execute_in_process(
            run_config=QUIET, resources={"playground": res}, instance=instance
        ).success
        init = canary_release.execute_in_process(
            run_config={"ops": {"release": {"config": {"target": "prod/backend", "interval": args.interval}}}, **QUIET},
            resources={"playground": res},
            instance=instance,
        )
        assert init.output_for_node("release")["phase"] == "Initialized"
        cursor = env.head()
        time.sleep(2.0)  # let Prometheus and the agent settle after initialization

        # watch the mesh: when does the canary first get traffic?
        first_step: dict[str, float] = {}
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                if routes(env)[1] > 0:
                    first_step["t"] = time.monotonic()
                    return
                time.sleep(0.01)

        image = f"{PODINFO}:6.9.0"
        sha = env.commit(
            {"prod/backend/deployment.yaml": lambda t: t.replace(f"{PODINFO}:6.7.0", image)}, f"bench: release {image}"
        )
        t_commit = time.monotonic()  # the commit is on the origin
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            tick = git_commit_sensor.evaluate_tick(
                dg.build_sensor_context(instance=instance, cursor=cursor, resources={"playground": res})
            )
            assert [r.run_key for r in tick.run_requests] == [sha], tick
            t_sensor = time.monotonic()
            sync = gitops_sync.execute_in_process(
                run_config={**tick.run_requests[0].run_config, **QUIET},
                resources={"playground": res},
                instance=instance,
            )
            assert sync.success
            t_synced = time.monotonic()
            ctx = dg.build_run_status_sensor_context(
                sensor_name="release_on_sync",
                dagster_instance=instance,
                dagster_run=instance.get_run_by_id(sync.run_id),
                dagster_event=sync.get_run_success_event(),
            )
            # (prod/frontend, never initialized here, is requested too: only the backend's release is timed)
            (request,) = [r for r in release_on_sync(ctx) if r.run_key.startswith("prod/backend@")]
            t_requested = time.monotonic()
            config = {**request.run_config, **QUIET}
            config["ops"]["release"]["config"]["interval"] = args.interval
            t_run = time.monotonic()
            result = canary_release.execute_in_process(
                run_config=config, resources={"playground": res}, instance=instance, tags=request.tags
            )
            t_end = time.monotonic()
        finally:
            stop.set()
            watcher.join(timeout=5)

        outcome = result.output_for_node("release")
        ticks = outcome["ticks"]
        mats = [
            e.event_specific_data.materialization
            for e in result.get_asset_materialization_events()
            if e.event_specific_data.materialization.asset_key == dg.AssetKey(["releases", "prod", "backend"])
        ]
        first_tick = mats[0].metadata if mats else {}
        wall = outcome["duration_s"]
        # a clean 10-step release: start, canary ready, pre-rollout (weight 10), 9 more steps to 100, one
        # passing tick at 100 to promote, promotion (primary rollout), finalising, succeeded
        ideal = 1 + 1 + 1 + 9 + 1 + 1 + 1 + 1

        print(
            f"release            {outcome['target']} -> {image}: {outcome['phase']}, "
            f"{outcome['failed_checks']} failed checks"
        )
        print(f"interval           {interval:g} s")
        print(f"ticks              {ticks} (clean 10-step release: {ideal})")
        print(f"wall time          {wall:.1f} s (run including Dagster start: {t_end - t_run:.1f} s)")
        print(f"wall / (ticks x interval)        {wall / (ticks * interval):.3f}")
        print(
            f"wall / ((ticks - 1) x interval)  {wall / ((ticks - 1) * interval):.3f}  "
            "(the last tick ends the run without waiting)"
        )
        print(f"wall / (clean ticks x interval)  {wall / (ideal * interval):.3f}")
        print(f"first tick phase   {first_tick['phase'].value if first_tick else '-'}")
        if "t" in first_step:
            print(f"commit -> first traffic step     {first_step['t'] - t_commit:.2f} s")
        else:
            print("commit -> first traffic step     (never)")
        print(f"  commit -> sensor run request   {t_sensor - t_commit:.2f} s")
        print(f"  gitops_sync run                {t_synced - t_sensor:.2f} s")
        print(f"  release_on_sync request        {t_requested - t_synced:.2f} s")
        if "t" in first_step:
            print(f"  canary_release start -> weight > 0  {first_step['t'] - t_run:.2f} s")
        instance.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
