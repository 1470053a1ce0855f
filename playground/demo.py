"""`playground demo`: the main job. A fresh local playground and three real releases through the sensors.

1. ``playground up`` (Envoy, Prometheus, registry, git origin, node agent, dagster-daemon and -webserver).
2. Bootstrap from git: the git sensor launches ``gitops_sync``; ``release_on_sync`` launches a
   ``canary_release`` per canary, which creates the primaries and routes (Initialized).
3. A new podinfo tag pushed to the local registry: ``image_tag_sensor`` commits it to the GitOps repo; the
   sync releases ``prod/backend`` (weighted canary, promoted) and ``prod/frontend`` (A/B test, promoted).
4. A faulty backend commit (an injected 50% error rate): the analysis fails and rolls back.

Meanwhile user traffic goes through the public gateway; the final table lists the releases and how many
gateway requests failed (none: the primary serves throughout). Everything is observed from the outside, the
way a user would: the cluster's canary statuses and the Dagster webserver's GraphQL API (this module does not
import Dagster: the engine never does).
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from playground.errors import PlaygroundError
from playground.models import Phase

Out = Callable[[str], None]
PODINFO_REPO = "stefanprodan/podinfo"
FINAL = (Phase.Succeeded.value, Phase.Failed.value)


class DemoError(PlaygroundError, RuntimeError):
    pass


@dataclass
class Release:
    target: str
    strategy: str
    trigger: str
    revision: str = ""
    started: float | None = None
    ended: float | None = None
    result: str = ""
    failed_checks: int = 0
    run_id: str = ""

    @property
    def duration(self) -> str:
        if self.started is None or self.ended is None:
            return "-"
        return f"{self.ended - self.started:.0f}s"


@dataclass
class GatewayTraffic:
    """Requests through the public gateway during the demo (what users see)."""

    url: str
    ok: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self, rate: float = 10.0) -> None:
        def loop() -> None:
            with httpx.Client(timeout=5.0, trust_env=False) as c:
                while not self._stop.is_set():
                    try:
                        r = c.get(self.url, headers={"User-Agent": "curl/8 (demo user)"})
                        if r.status_code < 400:
                            self.ok += 1
                        else:
                            self.failed += 1
                            self.errors.append(f"HTTP {r.status_code}")
                    except httpx.HTTPError as e:
                        self.failed += 1
                        self.errors.append(type(e).__name__)
                    self._stop.wait(1.0 / rate)

        self._thread = threading.Thread(target=loop, name="gateway-traffic", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _semver_key(tag: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in tag.split("."))
    except ValueError:
        return (-1,)


class Demo:
    def __init__(self, home: Path, ports, *, interval: str, out: Out, timeout: float):
        self.home = home
        self.ports = ports
        self.interval = interval
        self.out = out
        self.timeout = timeout
        self.t0 = time.monotonic()
        self.releases: list[Release] = []

    # -- helpers -----------------------------------------------------------------------------------
    def say(self, line: str) -> None:
        self.out(f"[{time.monotonic() - self.t0:5.0f}s] {line}")

    def _runtime(self):
        from playground.runtime import Runtime, RuntimeConfig

        return Runtime(RuntimeConfig.from_env(backend="local", home=str(self.home)))

    def _statuses(self, rt) -> dict[str, dict]:
        out = {}
        cluster = rt.cluster()
        for obj in cluster.list("flagger.app/v1beta1", "Canary"):
            meta = obj["metadata"]
            key = f"{meta.get('namespace', 'default')}/{meta['name']}"
            st = cluster.get_canary_status(meta.get("namespace", "default"), meta["name"])
            out[key] = st.model_dump(mode="json") if st is not None else {}
        return out

    def _wait(self, what: str, done: Callable[[dict[str, dict]], bool], rt) -> dict[str, dict]:
        """Poll the canary statuses until ``done``; print each change of phase/weight as it happens."""
        deadline = time.monotonic() + self.timeout
        last: dict[str, tuple] = {}
        while True:
            st = self._statuses(rt)
            for key, s in sorted(st.items()):
                view = (
                    s.get("phase") or "(not initialized)",
                    s.get("canaryWeight", 0),
                    s.get("iterations", 0),
                    s.get("failedChecks", 0),
                )
                if last.get(key) != view:
                    last[key] = view
                    self.say(
                        f"  {key:<14} {view[0]:<17} weight {view[1]:>3}  iterations {view[2]:>2}  "
                        f"failed checks {view[3]}"
                    )
            if done(st):
                return st
            if time.monotonic() > deadline:
                raise DemoError(
                    f"timed out after {self.timeout:.0f}s waiting for {what}; open the Dagster UI "
                    f"(runs, sensors) and see the logs in {self.home / 'logs'}"
                )
            time.sleep(1.0)

    def _release(self, rt, releases: list[Release], before: dict[str, dict]) -> None:
        """Wait until each release's target runs a new revision and its analysis ended; fill in the rows."""
        pending = {r.target: r for r in releases}

        def done(st: dict[str, dict]) -> bool:
            now = time.monotonic()
            for key, rel in list(pending.items()):
                s = st.get(key) or {}
                prev = (before.get(key) or {}).get("lastAppliedSpec")
                if s.get("lastAppliedSpec") and s.get("lastAppliedSpec") != prev:
                    rel.revision = s["lastAppliedSpec"]
                    if rel.started is None:
                        rel.started = now
                    if s.get("phase") in FINAL:
                        rel.ended = now
                        rel.result = "promoted" if s["phase"] == Phase.Succeeded.value else "rolled back"
                        rel.failed_checks = int(s.get("failedChecks", 0))
                        del pending[key]
            return not pending

        self._wait(" and ".join(f"the release of {r.target}" for r in releases), done, rt)

    def _dagster_runs(self, port: int) -> dict[str, str]:
        """run ids of canary_release runs by run key (target@revision), from the webserver's GraphQL API."""
        query = """{ runsOrError(filter: {pipelineName: "canary_release"}) {
            ... on Runs { results { runId status tags { key value } } } } }"""
        try:
            r = httpx.post(f"http://127.0.0.1:{port}/graphql", json={"query": query}, timeout=10, trust_env=False)
            runs = r.json()["data"]["runsOrError"]["results"]
        except (httpx.HTTPError, KeyError, TypeError, ValueError):
            return {}
        out = {}
        for run in runs:
            tags = {t["key"]: t["value"] for t in run["tags"]}
            if "dagster/run_key" in tags:
                out[tags["dagster/run_key"]] = f"{run['runId'][:8]} {run['status'].lower()}"
        return out

    # -- the demo ----------------------------------------------------------------------------------
    def run(self) -> int:
        from playground.local import env as localenv
        from playground.local.registry import list_tags, push_tag
        from playground.local.store import Home

        h = Home.of(self.home)
        if h.root.exists():
            self.say(f"removing the previous playground in {h.root} (the demo starts from a fresh one)")
            localenv.down(h.root, purge=True, out=lambda _: None)
        self.say("[1/4] starting the local playground (Envoy, Prometheus, registry, git, node agent, Dagster)")
        env = localenv.up(
            h.root, self.ports, dagster=True, interval=self.interval, out=lambda line: self.out("        " + line)
        )
        ports = env["ports"]
        rt = self._runtime()
        traffic = GatewayTraffic(f"http://127.0.0.1:{ports['gateway']}/")
        try:
            registry = f"http://127.0.0.1:{ports['registry']}"
            push_tag(registry, PODINFO_REPO, "6.7.0")  # the image the manifests run: the policy's baseline

            self.say(
                "[2/4] bootstrapping the cluster from git: git_commit_sensor -> gitops_sync -> "
                "canary_release initializes each canary (primary + routes)"
            )
            self._wait(
                "the canaries to be initialized",
                lambda st: bool(st) and all(s.get("phase") == Phase.Initialized.value for s in st.values()),
                rt,
            )
            traffic.start()

            latest = max(list_tags(registry, PODINFO_REPO), key=_semver_key)
            major, minor, patch = (int(x) for x in latest.split("."))
            tag = f"{major}.{minor}.{patch + 1}"
            self.say(
                f"[3/4] release: pushing podinfo:{tag} to the local registry; image_tag_sensor commits it, "
                "the sync releases prod/backend (weighted canary) and prod/frontend (A/B test)"
            )
            before = self._statuses(rt)
            wave = [Release("prod/backend", "canary", f"image {tag}"), Release("prod/frontend", "A/B", f"image {tag}")]
            push_tag(registry, PODINFO_REPO, tag)
            self._release(rt, wave, before)
            self.releases.extend(wave)

            self.say(
                "[4/4] faulty release: committing an injected 50% error rate to prod/backend; "
                "the analysis must roll it back"
            )
            before = self._statuses(rt)
            faulty = Release("prod/backend", "canary", "commit: PODINFO_ERROR_RATE=0.5")
            self._commit_fault(rt)
            self._release(rt, [faulty], before)
            self.releases.append(faulty)
        finally:
            traffic.stop()
            rt.close()

        runs = self._dagster_runs(ports["dagster"])
        deadline = time.monotonic() + 60  # the last run ends right after its final tick: let it finish
        while any(v.endswith(("started", "starting", "queued")) for v in runs.values()) and time.monotonic() < deadline:
            time.sleep(1.0)
            runs = self._dagster_runs(ports["dagster"])
        for r in self.releases:
            r.run_id = runs.get(f"{r.target}@{r.revision}", "")
        self.out("")
        self.out(self.table())
        self.out("")
        self.out(
            f"gateway traffic during the releases: {traffic.ok + traffic.failed} requests, "
            f"{traffic.failed} failed" + (f" ({', '.join(sorted(set(traffic.errors)))})" if traffic.errors else "")
        )
        self.out(
            f"Dagster UI: http://127.0.0.1:{ports['dagster']}/  (asset lineage: "
            f"http://127.0.0.1:{ports['dagster']}/asset-groups ; releases: "
            f"http://127.0.0.1:{ports['dagster']}/assets/releases/prod/backend)"
        )
        self.out(f"the playground keeps running: `playground status`, `playground down` (home {h.root})")
        ok = [r.result for r in self.releases] == ["promoted", "promoted", "rolled back"] and traffic.failed == 0
        return 0 if ok else 1

    def _commit_fault(self, rt) -> None:
        git = rt.git("demo")
        git.fetch()
        rel = "prod/backend/deployment.yaml"
        text = git.read(rel)
        marker = "            - name: PODINFO_UI_COLOR"
        if marker not in text:
            raise DemoError(f"{rel} in the GitOps repo has no PODINFO_UI_COLOR env entry to add the fault next to")
        text = text.replace(marker, '            - name: PODINFO_ERROR_RATE\n              value: "0.5"\n' + marker, 1)
        sha = git.commit_and_push({rel: text}, "backend: enable the new retry path (injects 50% errors)")
        self.say(f"        committed {sha[:12]} to the GitOps repo; git_commit_sensor picks it up")

    def table(self) -> str:
        rows = [["TARGET", "REVISION", "STRATEGY", "TRIGGER", "RESULT", "DURATION", "FAILED CHECKS", "DAGSTER RUN"]]
        for r in self.releases:
            rows.append(
                [
                    r.target,
                    r.revision,
                    r.strategy,
                    r.trigger,
                    r.result,
                    r.duration,
                    str(r.failed_checks),
                    r.run_id or "-",
                ]
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="the main job: a fresh local playground and three real releases (promotion, A/B, rollback)",
        description="Start a fresh local playground (removing the previous one in --home), bootstrap it from git "
        "through the Dagster sensors, then run three releases end to end: a new podinfo tag pushed to the "
        "local registry (prod/backend weighted canary and prod/frontend A/B test, both promoted) and a faulty "
        "backend commit that is rolled back. Prints progress, a table of the releases and the Dagster UI URL; "
        "the playground keeps running afterwards (`playground down` stops it). Exit 0 when the releases ended "
        "as expected and no gateway request failed.",
    )
    p.add_argument(
        "--home",
        type=Path,
        default=None,
        help="environment directory (default: $PLAYGROUND_HOME or ./.playground); it is purged first",
    )
    p.add_argument(
        "--interval",
        default="2s",
        help="analysis interval of the demo releases (default 2s; the manifests keep their own 15s for real clusters)",
    )
    p.add_argument(
        "--free-ports",
        action="store_true",
        help="use free ports instead of the defaults (8080, 9090, 3000, ...), e.g. to run beside another playground",
    )
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for each stage (default 300)")
    p.set_defaults(func=_cli)


def _cli(args: argparse.Namespace) -> int:
    from playground.local import env as localenv
    from playground.local.store import default_home

    ports = localenv.Ports()
    if args.free_ports:
        ports = localenv.Ports(**{name: _free_port() for name in localenv.DEFAULT_PORTS})
    demo = Demo(
        args.home or default_home(),
        ports,
        interval=args.interval,
        out=lambda line: print(line, flush=True),
        timeout=args.timeout,
    )
    try:
        return demo.run()
    except (DemoError, localenv.EnvError) as e:
        print(f"playground demo: {e}", file=sys.stderr)
        if "already in use" in str(e) and not args.free_ports:
            print("playground demo: or run it on free ports: playground demo --free-ports", file=sys.stderr)
        return 1
