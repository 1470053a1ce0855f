"""The node agent of the local playground: runs every Deployment's replicas as local processes.

Run: ``python -m playground.local.agent --home $PLAYGROUND_HOME`` (``playground up`` starts it detached).

Every ~100 ms the agent compares the store's change counter with the last one it saw and, when it moved (and
at least once a second anyway), reloads the Deployments, ConfigMaps, Secrets and HPAs. For each Deployment it:

* runs ``spec.replicas`` processes of the first container's image, through the image catalog
  (:mod:`playground.local.catalog`); each replica gets a free 127.0.0.1 port, the container's environment
  (``env`` with ``value`` / ``valueFrom`` configMapKeyRef, secretKeyRef, fieldRef metadata.name/namespace, and
  ``envFrom`` ConfigMaps/Secrets, Secret data base64-decoded), ``HTTP_PROXY``/``http_proxy`` = the mesh proxy
  (``NO_PROXY`` = 127.0.0.1,localhost) so calls to ``backend.prod:9898`` go through Envoy, and
  ``HOSTNAME`` = the pod name; stdout/stderr go to ``$HOME/logs/<ns>_<deploy>-<n>.log``;
* replaces replicas when the pod revision (template + referenced config data) changes, surge-style: new
  replicas start first and an old replica stops only when enough new ones are ready, so a Service never
  loses all its ready endpoints (an image that cannot run keeps the old replicas serving);
* restarts replicas that exit, with exponential backoff (0.5 s doubling to 10 s);
* probes readiness (``readinessProbe.httpGet`` on the replica's port, an ``exec`` probe that fetches a
  localhost URL becomes the same GET, anything else a TCP connect) with ``periodSeconds`` capped at 1 s, and
  liveness (restart after ``failureThreshold`` failures);
* writes one status row per Deployment (counts of the current revision, replicas, errors, progress times).

When the set of ready endpoints changes, or the store holds objects the Envoy configuration on disk was not
rendered from (a route stored by a release is rendered by that release: ``rendered_counter``), the Envoy
configuration is re-rendered through :func:`playground.local.cluster.render_envoy`, and the Prometheus file_sd
targets of the replicas' /metrics are
rewritten (``$HOME/prometheus/targets.json``). HPAs get the minimal Kubernetes behaviour: a Deployment with a
non-zero replica count is kept within ``minReplicas..maxReplicas``.

SIGTERM/SIGINT stop every replica (SIGTERM to its process group, SIGKILL after 5 s) before the agent exits.
Replicas left running by an agent that was killed (the supervisor restarts it) are recognised by pid and process
start time and adopted at start-up: they keep serving with their ports and readiness, are probed and stopped
like the agent's own, and are replaced by new replicas when they exit (they are not the agent's children, so
their exit code is unknown). Nothing restarts, and Envoy's endpoints do not change.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from playground.errors import PlaygroundError
from playground.local.cluster import (
    HEARTBEAT_KEY,
    HEARTBEAT_PERIOD,
    configs_index,
    desired_replicas,
    pod_revision,
    render_envoy,
    rendered_counter,
)
from playground.local.procinfo import process_alive, start_ticks
from playground.local.store import Home, ReplicaInfo, Store, WorkloadRow
from playground.secrets import decode_secret

if TYPE_CHECKING:
    from playground.local.catalog import Catalog

log = logging.getLogger("playground.agent")

POLL_INTERVAL = 0.1
FULL_RESYNC = 1.0
PROBE_PERIOD_CAP = 1.0
STARTUP_PROBE_PERIOD = 0.2
INITIAL_DELAY_CAP = 1.0
MIN_READY_CAP = 1.0
BACKOFF_START, BACKOFF_MAX = 0.5, 10.0
TERMINATION_DELAY = 0.5  # keep a ready replica alive this long after Envoy stopped routing to it
KILL_AFTER = 5.0
_EXEC_URL = re.compile(r"https?://(?:localhost|127\.0\.0\.1)(?::\d+)?(/[^\s'\"]*)?")
_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


#: The readiness and liveness probes' HTTP client (no proxy), built once: urllib's openers are shared between
#: threads (``urlopen`` has one per process); building one per probe cost more than the probe.
_PROBE_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ContainerEnvError(PlaygroundError, ValueError):
    """A container's environment cannot be built (a missing ConfigMap, Secret or key)."""


# ------------------------------------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def image_tag(image: str) -> str | None:
    ref = image.split("@", 1)[0]
    last = ref.rsplit("/", 1)[-1]
    return last.rsplit(":", 1)[1] if ":" in last else None


def resolve_env(
    container: dict[str, Any], namespace: str, pod_name: str, configs: dict[tuple[str, str, str], dict[str, Any]]
) -> dict[str, str]:
    """The container's environment as Kubernetes builds it: ``envFrom`` first, then ``env`` (which wins), with
    ``$(VAR)`` references to earlier variables expanded. Raises :class:`ContainerEnvError` for a missing reference that
    is not ``optional``."""

    def source(kind: str, name: str, optional: bool) -> dict[str, str] | None:
        obj = configs.get((kind, namespace, name))
        if obj is None:
            if optional:
                return None
            raise ContainerEnvError(
                f"{kind} {namespace}/{name} not found (referenced by container {container.get('name')})"
            )
        if kind == "Secret":
            return decode_secret(obj)
        values = {k: str(v) for k, v in (obj.get("data") or {}).items()}
        return values

    env: dict[str, str] = {}
    for ef in container.get("envFrom") or []:
        prefix = str(ef.get("prefix") or "")
        for key, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
            ref = ef.get(key)
            if ref:
                values = source(kind, ref["name"], bool(ref.get("optional")))
                for k, v in (values or {}).items():
                    env[prefix + k] = v
    for item in container.get("env") or []:
        name = item.get("name")
        if not name:
            continue
        if "value" in item or "valueFrom" not in item:
            raw = "" if item.get("value") is None else str(item["value"])
            env[name] = _VAR_REF.sub(lambda m: env.get(m.group(1), m.group(0)), raw)
            continue
        vf = item["valueFrom"] or {}
        for key, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
            ref = vf.get(key)
            if ref:
                optional = bool(ref.get("optional"))
                values = source(kind, ref["name"], optional)
                if values is None:
                    break
                if ref["key"] not in values:
                    if optional:
                        break
                    raise ContainerEnvError(f"{kind} {namespace}/{ref['name']} has no key {ref['key']!r} (env {name})")
                env[name] = values[ref["key"]]
                break
        else:
            path = (vf.get("fieldRef") or {}).get("fieldPath")
            if path == "metadata.name":
                env[name] = pod_name
            elif path == "metadata.namespace":
                env[name] = namespace
            elif path in ("status.podIP", "status.hostIP"):
                env[name] = "127.0.0.1"
            elif path == "spec.nodeName":
                env[name] = socket.gethostname()
            # resourceFieldRef and other paths have no local meaning: left unset
    return env


# ---------------------------------------------------------------------------------------------- probes


@dataclass
class ProbeSpec:
    kind: str  # http | tcp
    path: str = "/"
    period: float = PROBE_PERIOD_CAP
    initial_delay: float = 0.0
    timeout: float = 1.0
    failure_threshold: int = 3

    @classmethod
    def of(cls, probe: dict[str, Any] | None) -> ProbeSpec:
        probe = probe or {}
        period = min(float(probe.get("periodSeconds") or 10), PROBE_PERIOD_CAP)
        common: dict[str, Any] = dict(
            period=period,
            initial_delay=min(float(probe.get("initialDelaySeconds") or 0), INITIAL_DELAY_CAP),
            timeout=min(float(probe.get("timeoutSeconds") or 1), 2.0),
            failure_threshold=max(1, int(probe.get("failureThreshold") or 3)),
        )
        if probe.get("httpGet"):
            return cls("http", path=str(probe["httpGet"].get("path") or "/"), **common)
        cmd = " ".join(str(w) for w in ((probe.get("exec") or {}).get("command") or []))
        m = _EXEC_URL.search(cmd)
        if m:
            return cls("http", path=m.group(1) or "/", **common)
        return cls("tcp", **common)

    def check(self, port: int) -> bool:
        if self.kind == "http":
            try:
                with _PROBE_OPENER.open(f"http://127.0.0.1:{port}{self.path}", timeout=self.timeout) as resp:
                    return 200 <= resp.status < 400
            except urllib.error.HTTPError as e:
                return 200 <= e.code < 400
            except (OSError, ValueError):
                return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=self.timeout):
                return True
        except OSError:
            return False


# -------------------------------------------------------------------------------------------- replicas


@dataclass
class Replica:
    index: int
    revision: str
    build: Callable[[int], tuple[list[str], dict[str, str]]]  # port -> (argv, env)
    log_path: Path
    pod_name: str
    readiness: ProbeSpec
    liveness: ProbeSpec | None
    port: int = 0
    proc: subprocess.Popen | None = None
    pid: int | None = None
    ticks: int | None = None
    started: float = 0.0  # monotonic
    start_time: float = 0.0  # epoch
    state: str = "starting"
    ready: bool = False
    ever_ready: bool = False
    ready_since: float | None = None  # monotonic
    restarts: int = 0
    streak: int = 0  # consecutive crashes (drives the backoff)
    restart_at: float | None = None
    terminate_at: float | None = None
    kill_at: float | None = None
    ready_fails: int = 0
    live_fails: int = 0
    next_ready_probe: float = 0.0
    next_live_probe: float = 0.0
    ready_future: Future | None = None
    live_future: Future | None = None
    message: str = ""
    adopted: bool = False  # left running by a previous agent: not our child (no Popen)

    @property
    def alive(self) -> bool:
        if self.adopted and self.proc is None:
            return process_alive(self.pid, self.ticks, reap=False)
        return self.proc is not None and self.proc.poll() is None

    @property
    def terminating(self) -> bool:
        return self.terminate_at is not None or self.kill_at is not None

    def spawn(self) -> None:
        self.port = free_port()
        argv, env = self.build(self.port)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            out.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting {self.pod_name}: {' '.join(argv)}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        self.pid = self.proc.pid
        self.ticks = start_ticks(self.pid)
        self.started = time.monotonic()
        self.start_time = time.time()
        self.state, self.ready, self.ready_since = "starting", False, None
        self.ready_fails = self.live_fails = 0
        self.next_ready_probe = self.started + self.readiness.initial_delay
        self.next_live_probe = self.started + (self.liveness.initial_delay if self.liveness else 0)
        self.restart_at = None

    def signal_group(self, sig: int) -> None:
        if self.pid is None:
            return
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def info(self) -> ReplicaInfo:
        return ReplicaInfo(
            index=self.index,
            revision=self.revision,
            pid=self.pid if self.alive else None,
            port=self.port,
            state=self.state,
            ready=self.ready,
            restarts=self.restarts,
            start_time=self.start_time,
            proc_start_ticks=self.ticks,
            log=str(self.log_path),
            message=self.message,
        )


@dataclass
class Workload:
    namespace: str
    name: str
    replicas: list[Replica] = field(default_factory=list)
    revision: str = ""
    revision_since: float = 0.0
    desired: int = -1
    generation: int = 0
    image: str = ""
    error: str = ""  # why new replicas cannot start (unknown image, missing config)
    last_progress: float = 0.0
    unavailable_since: float | None = None
    last_ready_new: int = 0
    last_row: WorkloadRow | None = None  # as last written (compared field by field: no JSON per poll)
    deleted: bool = False


# ----------------------------------------------------------------------------------------------- agent


class Agent:
    def __init__(self, home: Home, interval: float = POLL_INTERVAL):
        self.home = home
        self.store = Store(home.db)
        self.interval = interval
        self.workloads: dict[tuple[str, str], Workload] = {}
        self.pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="probe")
        self.stopping = False
        self.last_counter = -1
        self.last_sync = 0.0
        self.deployments: dict[tuple[str, str], dict[str, Any]] = {}
        self.configs: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.catalog: Catalog | None = None
        self.catalog_error = ""
        self.last_endpoints: Any = None
        self.last_targets: list[dict[str, Any]] | None = None
        self.render_broken = False
        self.last_beat = 0.0

    # -- main loop ----------------------------------------------------------------------------------------
    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        self.adopt()
        log.info("node agent running (home %s, pid %d)", self.home.root, os.getpid())
        try:
            while not self.stopping:
                started = time.monotonic()
                self.step()
                time.sleep(max(0.0, self.interval - (time.monotonic() - started)))
        finally:
            self.shutdown()

    def _on_signal(self, signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping all replicas", signum)
        self.stopping = True

    def step(self) -> None:
        counter = self.store.change_counter()
        now = time.monotonic()
        if now - self.last_beat >= HEARTBEAT_PERIOD:
            self.store.set_meta(HEARTBEAT_KEY, int(time.time() * 1000))
            self.last_beat = now
        store_changed = counter != self.last_counter
        if store_changed or now - self.last_sync >= FULL_RESYNC:
            self.sync(counter)
        for key, wl in list(self.workloads.items()):
            dep = self.deployments.get(key)
            try:
                self.reconcile(wl, dep)
            except Exception as exc:  # one broken workload must not stop the others
                log.exception("reconciling %s/%s failed", *key)
                wl.error = f"node agent error: {exc}"
            self.write_row(wl, dep)
            if wl.deleted and not wl.replicas:
                self.store.delete_workload_status(*key)
                del self.workloads[key]
        self.publish(store_changed)

    def sync(self, counter: int) -> None:
        from playground.local.catalog import Catalog, CatalogError

        self.last_counter = counter
        self.last_sync = time.monotonic()
        self.apply_hpas()
        deployments = {}
        for dep in self.store.list("apps/v1", "Deployment"):
            meta = dep["metadata"]
            deployments[(meta.get("namespace") or "default", meta["name"])] = dep
        self.deployments = deployments
        self.configs = configs_index(self.store)
        try:
            self.catalog = Catalog.load(self.home.root)
            self.catalog_error = ""
        except CatalogError as exc:
            self.catalog, self.catalog_error = None, str(exc)
        for key in deployments:
            if key not in self.workloads:
                self.workloads[key] = Workload(*key)
        for key, wl in self.workloads.items():
            wl.deleted = key not in deployments

    def apply_hpas(self) -> None:
        """The HPA's floor and ceiling (no metrics): keep a non-zero replica count within min..max."""
        for hpa in self.store.list_kinds(("HorizontalPodAutoscaler",)):
            spec = hpa.get("spec") or {}
            ref = spec.get("scaleTargetRef") or {}
            if ref.get("kind") != "Deployment":
                continue
            ns = hpa["metadata"].get("namespace") or "default"
            dep = self.store.get("apps/v1", "Deployment", ns, ref.get("name", ""))
            if dep is None:
                continue
            current = desired_replicas(dep)
            lo, hi = int(spec.get("minReplicas") or 1), int(spec.get("maxReplicas") or 1)
            target = min(max(current, lo), hi)
            if current == 0 or target == current:
                continue

            def set_replicas(obj: dict[str, Any], n: int = target) -> None:
                obj.setdefault("spec", {})["replicas"] = n

            try:
                self.store.update("apps/v1", "Deployment", ns, ref["name"], set_replicas)
                log.info(
                    "HPA %s/%s: scaled %s from %d to %d", ns, hpa["metadata"]["name"], ref["name"], current, target
                )
            except Exception as exc:  # a concurrent delete or conflict: retried on the next sync
                log.warning("HPA %s/%s: %s", ns, hpa["metadata"]["name"], exc)

    # -- reconciling one Deployment -----------------------------------------------------------------------
    def reconcile(self, wl: Workload, dep: dict[str, Any] | None) -> None:
        now = time.monotonic()
        wall = time.time()
        self.reap(wl)
        if dep is None:
            for r in wl.replicas:
                self.stop_replica(r, now)
            return
        desired = desired_replicas(dep)
        revision = pod_revision(dep, self.configs)
        containers = (((dep.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
        wl.image = containers[0].get("image", "") if containers else ""
        wl.generation = int(dep["metadata"].get("generation") or 0)
        if revision != wl.revision:
            wl.revision, wl.revision_since, wl.last_progress = revision, wall, wall
            wl.error, wl.last_ready_new = "", 0
            wl.unavailable_since = wall if desired > 0 else None
        if desired != wl.desired:
            if wl.desired != -1:
                wl.last_progress = wall
            wl.desired = desired

        new = [r for r in wl.replicas if r.revision == revision and not r.terminating]
        old = [r for r in wl.replicas if r.revision != revision and not r.terminating]
        # scale the current revision to the desired count
        while len(new) < desired:
            made = self.make_replica(wl, dep, revision)
            if made is None:
                break
            wl.error = ""
            wl.replicas.append(made)
            new.append(made)
            self.launch(made)
        if len(new) > desired:
            for r in sorted(new, key=lambda r: (r.ready, -r.index))[: len(new) - desired]:
                self.stop_replica(r, now)
                new.remove(r)
        # old revisions: keep as many as needed to make up for new replicas that are not ready yet
        ready_new = sum(1 for r in new if r.ready)
        keep = max(0, desired - ready_new)
        if len(old) > keep:
            for r in sorted(old, key=lambda r: (r.ready, -r.index))[: len(old) - keep]:
                self.stop_replica(r, now)
        if ready_new > wl.last_ready_new:
            wl.last_progress = wall
        wl.last_ready_new = ready_new
        # crashed replicas: restart (with backoff), terminating ones: signal
        for r in list(wl.replicas):
            self.tend(wl, r, now)
        self.probe(wl, now)

    def make_replica(self, wl: Workload, dep: dict[str, Any], revision: str) -> Replica | None:
        """A new (not started) replica of the current template, or None with ``wl.error`` set."""
        from playground.local.catalog import UnknownImage

        template = (dep.get("spec") or {}).get("template") or {}
        pod_spec = template.get("spec") or {}
        containers = pod_spec.get("containers") or []
        if not containers:
            wl.error = f"Deployment {wl.namespace}/{wl.name} has no containers"
            return None
        container = containers[0]
        image = str(container.get("image") or "")
        if self.catalog is None:
            wl.error = self.catalog_error
            return None
        try:
            program = self.catalog.lookup(image)
        except UnknownImage as exc:
            wl.error = f"cannot run image {image!r}: {exc}"
            return None
        used = {r.index for r in wl.replicas}
        index = next(i for i in range(len(used) + 1) if i not in used)
        pod_name = f"{wl.name}-{revision[:8]}-{index}"
        try:
            env = resolve_env(container, wl.namespace, pod_name, self.configs)
        except ContainerEnvError as exc:
            wl.error = f"cannot start {pod_name}: {exc}"
            return None
        tag = image_tag(image)
        spec_for_catalog = {**container, "env": [{"name": k, "value": v} for k, v in env.items()]}
        base_env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "no_proxy")}
        base_env["HOSTNAME"] = env.get("HOSTNAME", pod_name)
        if tag and "PODINFO_VERSION" not in env:
            base_env["PODINFO_VERSION"] = tag
        base_env["PLAYGROUND_HOME"] = str(self.home.root)
        ports = self.home.ports() or {}
        if ports.get("mesh"):
            proxy = f"http://127.0.0.1:{ports['mesh']}"
            base_env.update(HTTP_PROXY=proxy, http_proxy=proxy)
        base_env.update(NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")

        def build(port: int) -> tuple[list[str], dict[str, str]]:
            launch = program.launch(
                spec_for_catalog, port=port, tag=tag, allowlist=self.home.allowlist, image=image, home=self.home.root
            )
            return list(launch.argv), {**base_env, **launch.env}

        try:
            build(1)  # report a program that cannot be launched now, not at every restart
        except Exception as exc:
            wl.error = f"cannot start {pod_name} ({image}): {exc}"
            return None
        return Replica(
            index=index,
            revision=revision,
            build=build,
            log_path=self.home.replica_log(wl.namespace, wl.name, index),
            pod_name=pod_name,
            readiness=ProbeSpec.of(container.get("readinessProbe")),
            liveness=ProbeSpec.of(container["livenessProbe"]) if container.get("livenessProbe") else None,
        )

    def launch(self, r: Replica) -> None:
        try:
            r.spawn()
            r.message = ""
            log.info("started %s (pid %d, port %d)", r.pod_name, r.pid, r.port)
        except OSError as exc:
            r.state, r.message = "backoff", f"cannot start {r.pod_name}: {exc}"
            r.streak += 1
            r.restart_at = time.monotonic() + self._backoff(r)

    @staticmethod
    def _backoff(r: Replica) -> float:
        return min(BACKOFF_MAX, BACKOFF_START * 2 ** max(0, r.streak - 1))

    def tend(self, wl: Workload, r: Replica, now: float) -> None:
        """Restart a crashed replica after its backoff; deliver the signals of a terminating one."""
        if r.terminating:
            if r.terminate_at is not None and now >= r.terminate_at:
                r.terminate_at, r.kill_at = None, now + KILL_AFTER
                r.signal_group(signal.SIGTERM)
            if r.kill_at is not None and (not r.alive or now >= r.kill_at):
                r.signal_group(signal.SIGKILL)
                if r.proc is not None:
                    try:
                        r.proc.wait(timeout=1)
                    except subprocess.TimeoutExpired:
                        return
                wl.replicas.remove(r)
            return
        if r.adopted and r.proc is None and not r.alive:
            log.warning("%s (pid %s, adopted from a previous agent) exited: replacing it", r.pod_name, r.pid)
            wl.replicas.remove(r)
            return
        if r.proc is None or r.alive:
            if r.ready and r.ready_since is not None and now - r.ready_since > 10:
                r.streak = 0
            return
        if r.restart_at is None:  # just exited
            code = r.proc.returncode
            r.restarts += 1
            r.streak += 1
            delay = self._backoff(r)
            r.restart_at = now + delay
            r.state, r.ready, r.ready_since = "backoff", False, None
            tail = _last_line(r.log_path)
            r.message = (
                f"{r.pod_name} exited with code {code}; restarting in {delay:.1f}s (restart {r.restarts}); "
                f"log {r.log_path}" + (f": {tail}" if tail else "")
            )
            log.warning(r.message)
            r.signal_group(signal.SIGKILL)  # children it left behind
        elif now >= r.restart_at:
            self.launch(r)

    def stop_replica(self, r: Replica, now: float) -> None:
        if r.terminating:
            return
        was_ready = r.ready
        r.ready, r.state = False, "stopping"
        r.terminate_at = now + (TERMINATION_DELAY if was_ready else 0.0)
        if not r.alive:
            r.terminate_at, r.kill_at = None, now

    def reap(self, wl: Workload) -> None:
        for r in wl.replicas:
            if r.proc is not None:
                r.proc.poll()

    def probe(self, wl: Workload, now: float) -> None:
        for r in wl.replicas:
            if r.terminating or not r.alive:
                continue
            if r.ready_future is not None and r.ready_future.done():
                ok = bool(r.ready_future.result())
                r.ready_future = None
                if ok:
                    r.ready_fails = 0
                    if not r.ready:
                        r.ready, r.ever_ready, r.ready_since, r.state = True, True, now, "ready"
                        log.info("%s ready on port %d", r.pod_name, r.port)
                else:
                    r.ready_fails += 1
                    if r.ready and r.ready_fails >= r.readiness.failure_threshold:
                        r.ready, r.ready_since, r.state = False, None, "running"
                        log.warning("%s not ready (readiness probe failed %d times)", r.pod_name, r.ready_fails)
                    elif not r.ready:
                        r.state = "running"
                period = r.readiness.period if r.ready else min(r.readiness.period, STARTUP_PROBE_PERIOD)
                r.next_ready_probe = now + period
            if r.ready_future is None and now >= r.next_ready_probe:
                r.ready_future = self.pool.submit(r.readiness.check, r.port)
            if r.liveness is None:
                continue
            if r.live_future is not None and r.live_future.done():
                ok = bool(r.live_future.result())
                r.live_future = None
                r.next_live_probe = now + r.liveness.period
                r.live_fails = 0 if ok else r.live_fails + 1
                if r.live_fails >= r.liveness.failure_threshold:
                    log.warning("%s: liveness probe failed %d times, restarting", r.pod_name, r.live_fails)
                    r.signal_group(signal.SIGKILL)
                    r.live_fails = 0
            # liveness starts once the replica was ready once, or after a generous start-up allowance
            if r.live_future is None and now >= r.next_live_probe and (r.ever_ready or now - r.started > 10):
                r.live_future = self.pool.submit(r.liveness.check, r.port)

    # -- status -------------------------------------------------------------------------------------------
    def write_row(self, wl: Workload, dep: dict[str, Any] | None) -> None:
        now, wall = time.monotonic(), time.time()
        desired = max(0, wl.desired) if dep is not None else 0
        new = [r for r in wl.replicas if r.revision == wl.revision and not r.terminating]
        updated = sum(1 for r in new if r.alive or r.state == "backoff")
        ready = sum(1 for r in new if r.ready)
        min_ready = 0.0
        if dep is not None:
            min_ready = min(float((dep.get("spec") or {}).get("minReadySeconds") or 0), MIN_READY_CAP)
        available = sum(1 for r in new if r.ready and r.ready_since is not None and now - r.ready_since >= min_ready)
        if desired > 0 and available < desired:
            if wl.unavailable_since is None:
                wl.unavailable_since = wall
        else:
            wl.unavailable_since = None
        crash = next((r.message for r in wl.replicas if r.state == "backoff" and r.message), "")
        message = wl.error or crash
        row = WorkloadRow(
            namespace=wl.namespace,
            name=wl.name,
            revision=wl.revision,
            revision_since=wl.revision_since,
            generation=wl.generation,
            desired=desired,
            updated=updated,
            ready=ready,
            available=available,
            total=sum(1 for r in wl.replicas if r.alive),
            replicas=[r.info() for r in wl.replicas],
            image=wl.image,
            message=message,
            error=bool(message),
            last_progress=wl.last_progress,
            unavailable_since=wl.unavailable_since,
        )
        if row != wl.last_row:
            wl.last_row = row
            self.store.put_workload_status(row)

    def publish(self, store_changed: bool) -> None:
        """Re-render Envoy when the ready endpoints (or the store) changed; rewrite the Prometheus targets."""
        endpoints = sorted(
            (wl.namespace, wl.name, r.port)
            for wl in self.workloads.values()
            for r in wl.replicas
            if r.ready and not r.terminating
        )
        # a change of routing objects was rendered by whoever stored them (under the routing lock): render when
        # the store holds objects the configuration on disk was not rendered from (Deployments: which replicas
        # a Service selects), or when the ready endpoints changed
        stale = store_changed and rendered_counter(self.home) != self.last_counter
        if (stale or endpoints != self.last_endpoints) and not self.render_broken:
            try:
                render_envoy(self.home, self.store)
                self.last_endpoints = endpoints
            except ImportError as exc:
                log.error("cannot render the Envoy configuration: %s", exc)
                self.render_broken = True
            except Exception:
                log.exception("rendering the Envoy configuration failed (will retry)")
        self.write_targets()

    def write_targets(self) -> None:
        """The Prometheus file_sd targets: every running replica whose pod template does not opt out with
        ``prometheus.io/scrape: "false"``."""
        from playground.local import prometheus

        targets = []
        for (ns, name), wl in sorted(self.workloads.items()):
            dep = self.deployments.get((ns, name)) or {}
            ann = (((dep.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("annotations") or {}
            if str(ann.get("prometheus.io/scrape", "true")).lower() == "false":
                continue
            for r in sorted(wl.replicas, key=lambda r: r.index):
                if r.alive and not r.terminating:
                    targets.append(
                        prometheus.workload_target(f"127.0.0.1:{r.port}", namespace=ns, workload=name, pod=r.pod_name)
                    )
        if targets != self.last_targets:  # compared as data: no JSON on every poll
            prometheus.write_targets(self.home.file_sd, targets)
            self.last_targets = targets

    # -- start-up and shutdown ----------------------------------------------------------------------------
    def adopt(self) -> None:
        """Take over the replicas a previous agent left running (same pid and start time): the agent was killed
        and restarted, its replicas kept serving. Their workload's progress bookkeeping carries over too."""
        now, wall = time.monotonic(), time.time()
        n = 0
        for row in self.store.list_workload_status():
            alive = [
                i
                for i in row.replicas
                if i.pid and i.proc_start_ticks and process_alive(i.pid, i.proc_start_ticks, reap=False)
            ]
            if not alive:
                continue
            dep = self.store.get("apps/v1", "Deployment", row.namespace, row.name) or {}
            containers = (((dep.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or [{}]
            container = containers[0]
            wl = self.workloads.setdefault((row.namespace, row.name), Workload(row.namespace, row.name))
            wl.revision, wl.revision_since, wl.generation = row.revision, row.revision_since, row.generation
            wl.desired, wl.image, wl.last_progress = row.desired, row.image, row.last_progress
            wl.unavailable_since = row.unavailable_since
            wl.last_ready_new = sum(1 for i in alive if i.revision == row.revision and i.ready)
            for info in alive:
                r = Replica(
                    index=info.index,
                    revision=info.revision,
                    build=_not_buildable,
                    log_path=Path(info.log) if info.log else self.home.replica_log(row.namespace, row.name, info.index),
                    pod_name=f"{row.name}-{info.revision[:8]}-{info.index}",
                    readiness=ProbeSpec.of(container.get("readinessProbe")),
                    liveness=ProbeSpec.of(container["livenessProbe"]) if container.get("livenessProbe") else None,
                    port=info.port,
                    pid=info.pid,
                    ticks=info.proc_start_ticks,
                    started=now - max(0.0, wall - info.start_time),
                    start_time=info.start_time,
                    state=info.state,
                    ready=info.ready,
                    ever_ready=info.ready,
                    ready_since=(now - MIN_READY_CAP) if info.ready else None,
                    restarts=info.restarts,
                    adopted=True,
                )
                if info.state == "stopping":
                    r.ready, r.terminate_at = False, now
                wl.replicas.append(r)
                n += 1
                log.info("adopted %s (pid %d, port %d, %s)", r.pod_name, r.pid, r.port, r.state)
        if n:
            log.info("adopted %d replica(s) left running by a previous agent", n)

    def shutdown(self) -> None:
        replicas = [r for wl in self.workloads.values() for r in wl.replicas]
        for r in replicas:
            if r.alive:
                r.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + KILL_AFTER
        for r in replicas:
            if r.proc is None:
                while r.adopted and r.alive and time.monotonic() < deadline:
                    time.sleep(0.05)
                r.signal_group(signal.SIGKILL)
                continue
            try:
                r.proc.wait(timeout=max(0.01, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            r.signal_group(signal.SIGKILL)
            try:
                r.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                log.error("replica %s (pid %s) did not exit", r.pod_name, r.pid)
        for wl in self.workloads.values():
            for r in wl.replicas:
                r.ready, r.state = False, "stopped"
            wl.error = "the node agent is stopped"
            try:
                self.write_row(wl, self.deployments.get((wl.namespace, wl.name)))
            except Exception:  # the database may be gone (down --purge)
                pass
        try:
            self.store.set_meta(HEARTBEAT_KEY, 0)
        except Exception:
            pass
        self.pool.shutdown(wait=False, cancel_futures=True)
        log.info("node agent stopped")


def _last_line(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 2000))
            lines = [ln for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
        return lines[-1][:300] if lines else ""
    except OSError:
        return ""


def _not_buildable(_port: int) -> tuple[list[str], dict[str, str]]:
    raise RuntimeError("an adopted replica is replaced, never restarted")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m playground.local.agent", description=__doc__.split("\n")[0])
    p.add_argument("--home", default=None, help="PLAYGROUND_HOME (default: $PLAYGROUND_HOME or ./.playground)")
    p.add_argument("--interval", type=float, default=POLL_INTERVAL, help="poll interval in seconds")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stdout)
    Agent(Home.of(args.home), interval=args.interval).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
