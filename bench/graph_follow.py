"""Benchmark: how fast the asset graph follows the GitOps repository.

Starts its own local playground with Dagster (``playground up --manifests DIR`` on free ports, a temporary home),
waits for the bootstrap, then commits a Canary (prod/api, a copy of prod/backend) and removes it again, ROUNDS
times, and for each commit prints, from the commit's push:

- when the gitops_sync run of the commit started and finished (the git sensor polls every 5 s, the run queue
  and the run worker add their own delay),
- when the webserver's graph (GraphQL, what the UI shows) first showed the change (polled every 0.2 s),
- visible - sync end: negative when the graph had changed before the sync finished (the sync reloads the code
  location before recording the workloads); the goal is at most two sensor intervals (10 s).

Usage: .venv/bin/python bench/graph_follow.py [--rounds 2]
Prints figures only.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.dagster_playground import copy_target, start, stop, wait_for  # noqa: E402

API_FILES = ("canary.yaml", "deployment.yaml", "hpa.yaml", "image-policy.yaml")
KINDS = ("workloads", "releases", "release_metrics", "promotions", "rollbacks")
SENSOR_INTERVAL = 5


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-graph-"))
    manifests = base / "my-gitops"
    shutil.copytree(ROOT / "manifests", manifests)
    home = base / "home"
    print(f"starting a playground with Dagster in {home} ...", flush=True)
    t = time.monotonic()
    pg = start(home, manifests=manifests, cwd=base)
    try:
        print(f"up: {time.monotonic() - t:.1f}s", flush=True)
        wait_for(lambda: pg.sync_run_of(pg.head()), 300, "the bootstrap sync")
        wait_for(lambda: pg.sync_run_of(pg.head())["status"] == "SUCCESS", 300, "the bootstrap sync to succeed")
        api = {(k, "prod", "api") for k in KINDS}
        rows = []
        for i in range(args.rounds):
            for action in ("add", "remove"):
                if action == "add":
                    changes = {f"prod/api/{f}": copy_target(pg.read(f"prod/backend/{f}")) for f in API_FILES}
                else:
                    changes = {f"prod/api/{f}": None for f in API_FILES}
                pushed = time.time()
                sha = pg.commit(changes, f"bench: {action} prod/api ({i})")

                def changed(action: str = action) -> bool:
                    keys = pg.asset_keys()
                    return api <= keys if action == "add" else not (api & keys)

                wait_for(changed, 300, f"the graph after '{action} prod/api'", poll=0.2)
                visible = time.time()
                run = wait_for(
                    lambda sha=sha: (r := pg.sync_run_of(sha)) and r["status"] in ("SUCCESS", "FAILURE") and r,
                    300,
                    "sync",
                )
                rows.append(
                    (
                        f"{action} prod/api",
                        sha[:12],
                        run["startTime"] - pushed,
                        run["endTime"] - pushed,
                        visible - pushed,
                        visible - run["endTime"],
                        run["status"],
                    )
                )
                print(
                    f"{rows[-1][0]:<16} {rows[-1][1]}  sync started {rows[-1][2]:5.1f}s  sync ended {rows[-1][3]:5.1f}s  "
                    f"assets visible {rows[-1][4]:5.1f}s  visible - sync end {rows[-1][5]:+5.1f}s  ({rows[-1][6]})",
                    flush=True,
                )
        vis = [r[4] for r in rows]
        after = [r[5] for r in rows]
        print()
        print(f"commits: {len(rows)}; sensor interval {SENSOR_INTERVAL}s")
        print(f"commit -> assets visible: median {sorted(vis)[len(vis) // 2]:.1f}s, max {max(vis):.1f}s")
        print(
            f"assets visible relative to the sync's end: max {max(after):+.1f}s "
            f"(goal: <= {2 * SENSOR_INTERVAL}s after the sync)"
        )
    finally:
        stop(home)
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
