"""Benchmark: many releases at once on the production path.

For each storage (SQLite, PostgreSQL) and each N, in a fresh temporary home:

1. ``playground up`` (the installed console script, from outside the repository, on free ports) with
   ``--storage`` and a GitOps origin seeded with the project's ``manifests/istio`` and ``manifests/metrics`` plus
   N canary targets ``scale/app-XX`` (podinfo, 1 replica; a weighted canary of 5 steps, stepWeight 10 up to 50,
   two Prometheus metric checks per analysis tick (the replica is scraped; scrape duration), no webhooks, no
   load test: what is measured is the orchestration, not traffic), analysis interval ``--interval``;
2. the real ``dagster-daemon`` initializes the N canaries through its sensors (git_commit_sensor ->
   gitops_sync -> release_on_sync -> N canary_release runs) and the bench waits until all are Initialized;
3. ONE commit changes the image of all N targets; the daemon syncs it and starts N canary_release runs, each a
   run worker process forked by the run launcher of the instance (launcher.ZygoteRunLauncher), recording
   each tick in the instance.

It prints, per release: request (sync run end -> run enqueued by the release_on_sync sensor), queue wait
(enqueued -> dequeued), start (sync run end -> run started: request + queue + worker process launch), first tick
(run started -> first tick recorded), peak RSS of the run worker process (VmHWM, sampled from /proc every
0.25 s) and its peak PSS (its share of the pages it shares with the zygote and its siblings, once a second),
its CPU-seconds up to its first tick and in all (load-independent costs), ticks, wall / (ticks x interval) with wall = first tick -> last tick + one interval (1.0 = every tick
exactly on time), max tick lateness (the longest gap between two ticks minus the interval) and the outcome;
then one summary line per run (with the 1-minute load average while the releases ran) and the same N side by side for both storages.

The instance is read (run records, event log) through Dagster's API from DAGSTER_HOME, as the UI reads it; the
bench never executes anything in-process.

Usage: .venv/bin/python bench/scale.py [--n 1 5 10 20 50] [--storage sqlite postgres] [--interval 2s]
Prints figures only. Needs the apt packages of scripts/setup.sh (postgresql for --storage postgres).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from playground import history_recorder  # noqa: E402
from playground.local.procinfo import cpu_seconds  # noqa: E402
from tests.support.procs import free_port  # noqa: E402
from tests.support.scale_targets import commit_new_image, write_manifests  # noqa: E402

PLAYGROUND = Path(sys.executable).parent / "playground"


def parse_seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0}
    for u in ("ms", "s", "m"):
        if text.endswith(u):
            return float(text[: -len(u)]) * units[u]
    return float(text)


# ------------------------------------------------------------------------------------------- worker memory


def _proc_children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def _vm_hwm_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _pss_kb(pid: int) -> int | None:
    """Proportional set size: the process's own pages plus its share of the pages it shares (a worker forked
    from the zygote shares the imported code with it and its siblings; VmHWM counts all of them as its own)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class RssSampler:
    """Peak RSS (VmHWM) and CPU-seconds of every process below the given roots (the daemon: its zygote forks the
    run workers; the code server: run workers launched through it), sampled until stopped; the workers' own
    children (if any) are kept apart. Also samples the machine's 1-minute load average."""

    def __init__(self, roots: list[int], components: dict[str, int] | None = None, period: float = 0.25):
        self.roots = roots
        self.components = components or {}  # name -> pid: CPU-seconds of each component's process tree
        self.first_cpu: dict[int, float] = {}
        self.last_cpu: dict[int, float] = {}
        self.owner: dict[int, str] = {}
        self._seen_once = False
        self.machine_busy: list[tuple[float, float]] = []  # (time, busy CPU-seconds of the whole machine)
        self.period = period
        self.peak_kb: dict[int, int] = {}
        self.peak_pss_kb: dict[int, int] = {}
        self._sweeps = 0
        self.cpu: dict[int, list[tuple[float, float]]] = {}  # pid -> [(time, CPU-seconds so far)]
        self.parent: dict[int, int] = {}
        self.load: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            kids = _proc_children()
            stack = [k for root in self.roots for k in kids.get(root, [])]
            now = time.time()
            while stack:
                pid = stack.pop()
                for child in kids.get(pid, []):
                    self.parent[child] = pid
                    stack.append(child)
                hwm = _vm_hwm_kb(pid)
                if hwm is not None and hwm > self.peak_kb.get(pid, 0):
                    self.peak_kb[pid] = hwm
                cpu = cpu_seconds(pid)
                if cpu is not None:
                    self.cpu.setdefault(pid, []).append((now, cpu))
                if self._sweeps % 4 == 0:  # once a second: smaps_rollup walks the page tables
                    pss = _pss_kb(pid)
                    if pss is not None and pss > self.peak_pss_kb.get(pid, 0):
                        self.peak_pss_kb[pid] = pss
            self._sweeps += 1
            self.load.append(os.getloadavg()[0])
            self._sample_components(kids)
            self._stop.wait(self.period)

    def _sample_components(self, kids: dict[int, list[int]]) -> None:
        for name, root in self.components.items():
            stack = [(root, name)]
            while stack:
                pid, owner = stack.pop()
                cpu = cpu_seconds(pid)
                if cpu is None:
                    continue
                if pid not in self.first_cpu:
                    # a process already there at the first sample counts from then, a new one from its start
                    self.first_cpu[pid] = cpu if not self._seen_once else 0.0
                    self.owner[pid] = owner
                self.last_cpu[pid] = cpu
                for child in kids.get(pid, []):
                    stack.append((child, self._child_owner(owner, pid, child)))
        self._seen_once = True
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        ticks = sum(int(v) for i, v in enumerate(fields[:8]) if i not in (3, 4))  # all but idle and iowait
        busy = ticks / os.sysconf("SC_CLK_TCK")
        self.machine_busy.append((time.time(), busy))

    def _child_owner(self, owner: str, pid: int, child: int) -> str:
        if owner == "dagster-daemon" and self.owner.get(pid) == "dagster-daemon" and pid != self.components[owner]:
            return "run workers"  # children of the daemon's zygote
        if owner == "run workers" and pid in self.owner and self.owner[pid] == "run workers":
            return "workers' children (history)"
        return owner

    def cpu_by_component(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for pid, last in self.last_cpu.items():
            name = self.owner[pid]
            out[name] = out.get(name, 0.0) + last - self.first_cpu[pid]
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    def machine_cpu(self) -> tuple[float, float] | None:
        """(busy CPU-seconds of the whole machine, wall seconds) over the sampling."""
        if len(self.machine_busy) < 2:
            return None
        (t0, b0), (t1, b1) = self.machine_busy[0], self.machine_busy[-1]
        return b1 - b0, t1 - t0

    def children_peak_mb(self, pid: int) -> float:
        return max((self.peak_kb.get(c, 0) for c, p in self.parent.items() if p == pid), default=0) / 1024

    def cpu_at(self, pid: int, when: float | None = None) -> float | None:
        """CPU-seconds of ``pid`` at the last sample before ``when`` (None: its last sample)."""
        samples = [c for t, c in self.cpu.get(pid, []) if when is None or t <= when]
        return samples[-1] if samples else None


# ------------------------------------------------------------------------------------------- one scenario


@dataclass
class Release:
    target: str
    run_id: str
    status: str
    requested: float | None = None
    queue_wait: float | None = None
    start_after_sync: float | None = None
    first_tick: float | None = None
    peak_rss_mb: float | None = None
    peak_pss_mb: float | None = None
    child_rss_mb: float = 0.0
    cpu_first_tick: float | None = None
    cpu_total: float | None = None
    ticks: int = 0
    ratio: float | None = None
    max_late: float | None = None
    outcome: str = "?"


@dataclass
class Scenario:
    storage: str
    n: int
    interval: float
    releases: list[Release] = field(default_factory=list)
    sync_s: float | None = None
    setup_s: float = 0.0
    load: tuple[float, float] | None = None  # 1-minute load average (min, max) while the releases ran
    cpu_by_component: dict[str, float] = field(default_factory=dict)  # CPU-seconds from commit to the last run end
    machine_cpu: tuple[float, float] | None = None  # (busy CPU-seconds of the machine, wall seconds), same span
    error: str = ""

    def summary(self) -> dict[str, object]:
        """Per target: its first start, the outcome of its last run (a retried run counts once)."""
        rs = self.releases
        by_target: dict[str, list[Release]] = {}
        for r in rs:
            by_target.setdefault(r.target, []).append(r)
        started = []
        outcomes: dict[str, int] = {}
        for runs in by_target.values():
            starts = [r.start_after_sync for r in runs if r.start_after_sync is not None]
            if starts:
                started.append(min(starts))
            last = max(runs, key=lambda r: r.requested or 0.0).outcome
            outcomes[last] = outcomes.get(last, 0) + 1
        ratios = [r.ratio for r in rs if r.ratio is not None]
        rss = [r.peak_rss_mb for r in rs if r.peak_rss_mb]
        pss = [r.peak_pss_mb for r in rs if r.peak_pss_mb]
        late = [r.max_late for r in rs if r.max_late is not None]
        cpu1 = [r.cpu_first_tick for r in rs if r.cpu_first_tick is not None]
        per_tick = [r.cpu_total / r.ticks for r in rs if r.cpu_total is not None and r.ticks]
        return {
            "targets / runs": f"{len(by_target)} / {len(rs)}",
            "all started after sync (max s)": round(max(started), 1) if started and len(started) == self.n else None,
            "median ratio": round(statistics.median(ratios), 3) if ratios else None,
            "max ratio": round(max(ratios), 3) if ratios else None,
            "max lateness s": round(max(late), 2) if late else None,
            "peak worker RSS MB (max)": round(max(rss)) if rss else None,
            "peak worker PSS MB (max)": round(max(pss)) if pss else None,
            "worker CPU s to 1st tick (median)": round(statistics.median(cpu1), 2) if cpu1 else None,
            "worker CPU s per tick (median)": round(statistics.median(per_tick), 3) if per_tick else None,
            "load 1-min (min-max)": f"{self.load[0]:.1f}-{self.load[1]:.1f}" if self.load else None,
            "outcomes": ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())),
        }


def _cli(*args: str, home: Path, timeout: float) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLAYGROUND_") and k != "DAGSTER_HOME"}
    env = {k: v for k, v in env.items() if k.lower() not in ("http_proxy", "https_proxy", "no_proxy")}
    return subprocess.run(
        [str(PLAYGROUND), *args, "--home", str(home)],
        cwd=tempfile.gettempdir(),
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _instance(home: Path):
    os.environ["DAGSTER_HOME"] = str(home / "dagster")
    import dagster as dg

    return dg.DagsterInstance.get()


def _canary_phases(home: Path, targets: list[str]) -> dict[str, str]:
    from playground.local.store import Store

    store = Store(home / "state.db")
    try:
        out = {}
        for t in targets:
            ns, name = t.split("/")
            st = store.get_canary_status(ns, name)
            out[t] = (st[0] or {}).get("phase", "") if st else ""
        return out
    finally:
        store.close()


def _wait(what: str, check, timeout: float, period: float = 2.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(period)


def run_scenario(storage: str, n: int, interval: str, timeout: float, keep: bool = False) -> Scenario:
    import dagster as dg

    sc = Scenario(storage, n, parse_seconds(interval))
    work = Path(tempfile.mkdtemp(prefix=f"bench-scale-{storage}-{n}-"))
    work.chmod(0o755)  # a root-run PostgreSQL server (user postgres) keeps its data in the home
    home = work / "home"
    t0 = time.monotonic()
    try:
        manifests = work / "manifests"
        targets = write_manifests(manifests, n, interval)
        ports = {
            "--gateway-port": free_port(),
            "--mesh-port": free_port(),
            "--envoy-admin-port": free_port(),
            "--prometheus-port": free_port(),
            "--registry-port": free_port(),
            "--dagster-port": free_port(),
        }
        args = ["up", "--storage", storage, "--manifests", str(manifests), "--timeout", str(120 + 6 * n)]
        for k, v in ports.items():
            args += [k, str(v)]
        res = _cli(*args, home=home, timeout=900)
        if res.returncode != 0:
            raise RuntimeError(f"playground up failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
        env = json.loads((home / "env.json").read_text())
        # run workers are forked by the daemon's zygote (or children of the code server, the fallback launch)
        comps = env["components"]
        roots = [int(comps[c]["pid"]) for c in ("dagster-daemon", "dagster-code-server") if c in comps]
        instance = _instance(home)
        try:
            # the daemon initializes every canary (primary, routes) through its sensors
            _wait(
                f"{n} canaries to be initialized by the daemon",
                lambda: all(p == "Initialized" for p in _canary_phases(home, targets).values()),
                timeout=300 + 10 * n,
            )
            active = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]
            _wait(
                "the initialization runs to end",
                lambda: not instance.get_run_records(dg.RunsFilter(statuses=active)),
                timeout=120,
            )
            sc.setup_s = time.monotonic() - t0
            components = {c: int(v["pid"]) for c, v in comps.items() if v.get("pid")}
            with RssSampler(roots, components) as sampler:
                t_commit = time.time()
                sha = commit_new_image(home, targets, work)

                def sync_run():
                    rs = instance.get_run_records(
                        dg.RunsFilter(job_name="gitops_sync", tags={"gitops-playground/sha": sha})
                    )
                    return rs[0] if rs and rs[0].dagster_run.status == dg.DagsterRunStatus.SUCCESS else None

                sync = _wait("the gitops_sync run of the release commit", sync_run, timeout=300, period=1.0)
                sc.sync_s = sync.end_time - t_commit

                def release_runs():
                    # every target released (promoted or rolled back) and no run left in progress (a run whose
                    # worker died is retried by the daemon: the retry is one more run of the same target)
                    phases = _canary_phases(home, targets)
                    if not all(ph in ("Succeeded", "Failed") for ph in phases.values()):
                        return None
                    rs = instance.get_run_records(
                        dg.RunsFilter(job_name="canary_release", created_after=sync.create_timestamp)
                    )
                    return rs if rs and all(r.dagster_run.is_finished for r in rs) else None

                max_wait = 600 + 20 * n * sc.interval
                runs = _wait(f"{n} canary_release runs to end", release_runs, timeout=max_wait, period=2.0)
                if sampler.load:
                    sc.load = (min(sampler.load), max(sampler.load))
                sc.cpu_by_component = sampler.cpu_by_component()
                # The history recorder is started by the first release that ends and leaves the workers' tree
                # (its parent is init): it reports its own CPU-seconds and those of the recordings it reaped.
                recorder = history_recorder.ping(home)
                if recorder:
                    sc.cpu_by_component["history recorder (+ its recordings)"] = float(recorder["cpu_s"])
                    sc.cpu_by_component = dict(sorted(sc.cpu_by_component.items(), key=lambda kv: -kv[1]))
                sc.machine_cpu = sampler.machine_cpu()
            for rec in sorted(runs, key=lambda r: (_target(r.dagster_run), r.create_timestamp)):
                sc.releases.append(_measure(instance, rec, sync.end_time, sc.interval, sampler))
        finally:
            instance.dispose()
    except Exception as e:  # a scenario that fails is reported, the next one still runs
        sc.error = f"{type(e).__name__}: {e}"
    finally:
        if keep:
            print(f"   (kept: {home}; stop it with `playground down --purge --home {home}`)")
        else:
            _cli("down", "--purge", home=home, timeout=180)
            shutil.rmtree(work, ignore_errors=True)
    return sc


def _target(run) -> str:
    return ((run.run_config or {}).get("ops", {}).get("release", {}).get("config", {}) or {}).get("target", "?")


def _failure_reason(instance, run_id: str) -> str:
    import dagster as dg

    for entry in reversed(instance.all_logs(run_id)):
        ev = entry.dagster_event
        if ev is not None and ev.event_type in (dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.RUN_FAILURE):
            return " ".join((ev.message or "").split())[:160]
    return "?"


def _measure(instance, rec, sync_end: float, interval: float, sampler: RssSampler) -> Release:
    import dagster as dg

    run = rec.dagster_run
    r = Release(target=_target(run), run_id=run.run_id, status=run.status.value)
    starting = started = None
    ticks: list[float] = []
    phases: list[str] = []
    pid = None
    for entry in instance.all_logs(run.run_id):
        ev = entry.dagster_event
        if ev is None:
            continue
        if ev.event_type == dg.DagsterEventType.RUN_STARTING and starting is None:
            starting = entry.timestamp
        elif ev.event_type == dg.DagsterEventType.RUN_START:
            started = entry.timestamp
        elif ev.event_type == dg.DagsterEventType.ENGINE_EVENT and "Started process for run (pid:" in (
            ev.message or ""
        ):
            pid = int(ev.message.split("pid:")[1].split(")")[0])
        elif ev.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
            mat = ev.event_specific_data.materialization
            if mat.asset_key.path[0] == "releases":
                ticks.append(entry.timestamp)
                phases.append(str(mat.metadata["phase"].value))
    r.requested = rec.create_timestamp.timestamp() - sync_end
    if starting is not None:
        r.queue_wait = starting - rec.create_timestamp.timestamp()
    if started is not None:
        r.start_after_sync = started - sync_end
        if ticks:
            r.first_tick = ticks[0] - started
    if pid is not None and pid in sampler.peak_kb:
        r.peak_rss_mb = sampler.peak_kb[pid] / 1024
        r.child_rss_mb = sampler.children_peak_mb(pid)
        if pid in sampler.peak_pss_kb:
            r.peak_pss_mb = sampler.peak_pss_kb[pid] / 1024
    if pid is not None:
        r.cpu_total = sampler.cpu_at(pid)
        if ticks:
            r.cpu_first_tick = sampler.cpu_at(pid, ticks[0])
    r.ticks = len(ticks)
    if len(ticks) >= 2:
        r.ratio = (ticks[-1] - ticks[0] + interval) / (len(ticks) * interval)
        r.max_late = max(b - a for a, b in zip(ticks, ticks[1:])) - interval
    r.outcome = phases[-1] if phases and run.status == dg.DagsterRunStatus.SUCCESS else f"run {run.status.value}"
    if run.status == dg.DagsterRunStatus.FAILURE:
        r.outcome += ": " + _failure_reason(instance, run.run_id)
    if run.tags.get("dagster/parent_run_id"):
        r.outcome += " (retry)"
    return r


# ------------------------------------------------------------------------------------------- printing


def _f(v: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if v is None else fmt.format(v)


def print_scenario(sc: Scenario) -> None:
    print(f"\n== {sc.storage}, N = {sc.n}, interval {sc.interval:g} s")
    if sc.error:
        print(f"   FAILED: {sc.error}")
    if sc.sync_s is not None:
        print(f"   commit -> sync run end: {sc.sync_s:.1f} s (setup: up + initialization {sc.setup_s:.0f} s)")
    if not sc.releases:
        return
    print(
        f"   {'target':<14} {'request s':>9} {'queue s':>8} {'start s':>8} {'1st tick s':>10} {'RSS MB':>7} {'PSS MB':>6} {'ticks':>5} "
        f"{'ratio':>6} {'late s':>7} {'CPU@1st':>7} {'CPU s':>6}  outcome"
    )
    for r in sc.releases:
        child = f" (+child {r.child_rss_mb:.0f})" if r.child_rss_mb else ""
        print(
            f"   {r.target:<14} {_f(r.requested):>9} {_f(r.queue_wait):>8} {_f(r.start_after_sync):>8} {_f(r.first_tick):>10} "
            f"{_f(r.peak_rss_mb, '{:.0f}'):>7} {_f(r.peak_pss_mb, '{:.0f}'):>6} {r.ticks:>5} {_f(r.ratio, '{:.3f}'):>6} {_f(r.max_late, '{:.2f}'):>7}"
            f" {_f(r.cpu_first_tick, '{:.2f}'):>7} {_f(r.cpu_total, '{:.1f}'):>6}  {r.outcome}{child}"
        )
    s = sc.summary()
    print("   summary: " + "; ".join(f"{k} {v}" for k, v in s.items()))
    if sc.cpu_by_component:
        own = sum(sc.cpu_by_component.values())
        line = ", ".join(f"{k} {v:.1f}" for k, v in sc.cpu_by_component.items() if v >= 0.05)
        print(f"   CPU-seconds from the commit to the last run end: {line}; playground total {own:.1f}")
    if sc.machine_cpu:
        busy, wall = sc.machine_cpu
        print(
            f"   machine: {busy:.0f} busy CPU-seconds in {wall:.0f} s on {os.cpu_count()} CPUs (every process, other users too)"
        )


def print_side_by_side(scenarios: list[Scenario]) -> None:
    storages = sorted({s.storage for s in scenarios}, key=lambda x: (x != "sqlite", x))
    if len(storages) < 2:
        return
    print("\n== side by side")
    keys = list(Scenario("", 0, 1.0).summary().keys())
    for n in sorted({s.n for s in scenarios}):
        print(f"   N = {n}")
        by = {s.storage: s.summary() for s in scenarios if s.n == n}
        print(f"     {'':<30}" + "".join(f"{st:>28}" for st in storages))
        for k in keys:
            print(f"     {k:<30}" + "".join(f"{str(by.get(st, {}).get(k, '-')):>28}" for st in storages))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, nargs="+", default=[1, 5, 10, 20, 50], help="targets per commit")
    ap.add_argument("--storage", nargs="+", default=["sqlite", "postgres"], help="Dagster instance storages to compare")
    ap.add_argument("--interval", default="2s", help="analysis interval of the canaries (the manifests use 15s)")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per scenario")
    ap.add_argument("--keep", action="store_true", help="leave each environment running (for inspection)")
    args = ap.parse_args()
    print(
        f"bench/scale.py: N = {args.n}, storage {args.storage}, interval {args.interval}; "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start, "
        f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}"
    )
    scenarios = []
    for n in args.n:
        for storage in args.storage:
            sc = run_scenario(storage, n, args.interval, args.timeout, keep=args.keep)
            print_scenario(sc)
            print(f"   load average now {os.getloadavg()[0]:.1f}", flush=True)
            scenarios.append(sc)
    print_side_by_side(scenarios)
    return 0 if all(not s.error for s in scenarios) else 1


if __name__ == "__main__":
    sys.exit(main())
