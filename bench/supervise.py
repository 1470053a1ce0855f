"""Benchmark: healing of the local playground by its supervisor (``playground.local.supervisor``).

Brings up its own local playground (free ports, temporary home, no Dagster daemon), initializes prod/backend and
prod/frontend, makes the backend canary long (stepWeight 1 to 50, interval 1 s) and releases a new image with
``playground release`` in a process of its own. While the release runs, each component is killed with SIGKILL in
turn (Envoy, the second Envoy, Prometheus, the registry, the node agent; ``--rounds`` times), each kill inside a
window of load from ``hey`` through the gateway (the frontend) and through the mesh proxy (``backend.prod``),
and it prints per kill:

- the time from the SIGKILL until the component answers again (Envoy /ready, Prometheus /-/ready, the registry's
  /v2/, the node agent's heartbeat), measured from outside;
- the requests of that window and how many got no 2xx answer (transport errors included), next to the number that
  can be in flight at once (hey's concurrency, per listener);
- the release's failed metric checks during the window (a metric query that fails or finds no values counts, as
  in Flagger), and why.

Usage: .venv/bin/python bench/supervise.py [--rounds 3] [--concurrency 8]
Prints figures only.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.playground_env import TARGETS, new_podinfo_image, playground_env, routes, status
from tests.support.procs import finish_hey, start_hey, stop_process
from tests.support.supervision import KILLABLE, kill_and_wait_healed

# 50 steps of 1% (analysis interval 1 s); the metric windows stay the manifests' 30 s (``--window`` changes them)
LONG_CANARY = {"hey -z 1m": "hey -z 5s", "stepWeight: 5\n": "stepWeight: 1\n"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="kills per component (default 3)")
    ap.add_argument("--concurrency", type=int, default=8, help="hey workers per listener (default 8)")
    ap.add_argument("--window", default="30s", help="metric query window (default 30s, the manifests')")
    ap.add_argument("--rate", type=float, default=25, help="requests/s per hey worker (default 25)")
    args = ap.parse_args()

    with (
        tempfile.TemporaryDirectory(prefix="bench-supervise-") as tmp,
        playground_env(Path(tmp) / "home", interval="1s") as env,
    ):

        def long_canary(text: str) -> str:
            text = text.replace("interval: 30s", f"interval: {args.window}")
            for a, b in LONG_CANARY.items():
                assert a in text, a
                text = text.replace(a, b)
            return text

        env.commit({"prod/backend/canary.yaml": long_canary}, "bench: a long canary")
        rt = env.runtime()
        try:
            from playground import pipeline

            pipeline.sync(rt)
            ctl = rt.controller(log=lambda _line: None, interval=1.0)
            for key in TARGETS:
                assert ctl.run(key, max_ticks=120).phase.value == "Initialized", key
        finally:
            rt.close()

        log = Path(tmp) / "release.log"
        with open(log, "ab") as out:
            release = subprocess.Popen(
                [str(Path(sys.executable).parent / "playground"), "release", "prod/backend"]
                + ["--image", new_podinfo_image()],
                cwd=tmp,
                env=env.subprocess_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            deadline = time.monotonic() + 180
            while not ((st := status(env)) and st.phase.value == "Progressing" and routes(env)[1] > 0):
                if release.poll() is not None or time.monotonic() > deadline:
                    print(f"the release did not start:\n{log.read_text()[-3000:]}")
                    return 1
                time.sleep(0.1)

            c = args.concurrency
            print(f"kills during a release of prod/backend; load per window: gateway and mesh, {c} workers each")
            print(
                f"{'component':<11} {'round':>5} {'healed':>8} {'phase':<12} {'requests':>8} {'lost':>5} "
                f"{'in flight':>9} {'failed checks':>13}"
            )

            def failed_ticks() -> list[str]:
                return [ln for ln in log.read_text(errors="replace").splitlines() if " FAIL" in ln]

            seen = len(failed_ticks())
            totals: dict[str, list[float]] = {}
            for rnd in range(1, args.rounds + 1):
                for name in KILLABLE:
                    load = [
                        start_hey(url, duration=3, concurrency=c, rate_per_worker=args.rate, proxy=proxy, timeout=20)
                        for url, proxy in ((env.gateway_url + "/", None), ("http://backend.prod:9898/", env.mesh_proxy))
                    ]
                    time.sleep(1.0)
                    phase = status(env).phase.value
                    seconds, _old, _new = kill_and_wait_healed(env, name)
                    results = [finish_hey(h, timeout=60) for h in load]
                    requests = sum(r.responses + r.error_count for r in results)
                    lost = sum(r.lost for r in results)
                    totals.setdefault(name, []).append(seconds)
                    time.sleep(1.0)  # ticks analysing the window's metrics
                    now_failed = failed_ticks()
                    reasons = "; ".join(sorted({ln.split("|")[1].strip() for ln in now_failed[seen:] if "|" in ln}))
                    print(
                        f"{name:<11} {rnd:>5} {seconds:>7.2f}s {phase:<12} {requests:>8} {lost:>5} {2 * c:>9} "
                        f"{len(now_failed) - seen:>13}  {reasons[:120]}"
                    )
                    seen = len(now_failed)
            print()
            for name, values in totals.items():
                print(
                    f"{name:<11} healed in {min(values):.2f}-{max(values):.2f}s (mean {sum(values) / len(values):.2f}s)"
                )
            code = release.wait(timeout=600)
            print(f"release: exit {code} ({status(env).phase.value})")
            failed = failed_ticks()
            if failed:
                print(f"ticks with failed checks ({len(failed)}):")
                print("\n".join("  " + ln[:200] for ln in failed[-12:]))
        finally:
            if release.poll() is None:
                release.send_signal(signal.SIGINT)
            stop_process(release)
    return 0


if __name__ == "__main__":
    sys.exit(main())
