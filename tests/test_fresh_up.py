"""``playground up`` on a fresh home, as users run it (the installed console script, from a directory outside the
repository, on free ports), with dagster-daemon and dagster-webserver:

- ten times on a new home (three homes at a time) it starts cleanly: the Dagster instance is created once before the daemon and
  the webserver start (no ``alembic_version already exists`` in their logs, the webserver answers), every
  component is recorded and running, one daemon per home; a second ``up`` starts nothing new; a killed daemon is
  restarted by the supervisor, once; ``down`` leaves no process behind;
- ``up`` killed right after it started the daemon leaves nothing ``down`` cannot stop: each pid is recorded as soon
  as its process exists;
- with a port taken, ``up`` starts nothing and names the port and the flag that changes it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from playground.local.env import COMPONENTS, process_alive
from playground.local.store import Home
from tests.support.dagster_playground import PLAYGROUND, clean_env, run_cli, wait_for
from tests.support.playground_env import stop_environment
from tests.support.procs import free_ports

pytestmark = pytest.mark.integration

RUNS = 10
#: fresh homes started at the same time (each run's checks are those of a run alone)
LANES = 3
RACE = ("alembic_version already exists", "more than one head", "UNIQUE constraint failed: alembic_version")


def processes_of(home: Path) -> list[int]:
    """Every process whose command line or environment names ``home``."""
    needle = str(home).encode()
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "cmdline").read_bytes() or needle in (entry / "environ").read_bytes():
                out.append(int(entry.name))
        except OSError:
            continue
    return [p for p in out if process_alive(p)]


def dagster_daemons(home: Path) -> list[int]:
    pids = []
    for pid in processes_of(home):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(part.endswith(b"dagster-daemon") for part in cmd[:2]) and b"run" in cmd:
            pids.append(pid)
    return pids


PORT_FLAGS = ("gateway", "mesh", "envoy-admin", "prometheus", "registry", "dagster")


def up_args(home: Path, ports: list[int] | None = None) -> list[str]:
    ports = ports or free_ports(len(PORT_FLAGS))
    args = ["up", "--home", str(home), "--no-sync", "--timeout", "120"]
    for flag, port in zip(PORT_FLAGS, ports, strict=True):
        args += [f"--{flag}-port", str(port)]
    return args


def wait_gone(pids: list[int], timeout: float = 60) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(process_alive(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if process_alive(p)]


def fresh_up_and_down(tmp_path: Path, i: int, ports: list[int]) -> None:
    """One fresh home: ``up`` starts cleanly (every component recorded and running, the instance initialised once,
    one daemon), ``down`` leaves no process behind. Run 0 also checks that a second ``up`` starts nothing and that
    the supervisor restarts a killed daemon, once."""
    home = tmp_path / f"fresh-{i:02d}"  # same length for every run: no home's path is a prefix of another's
    try:
        done = run_cli(*up_args(home, ports), cwd=tmp_path, timeout=400)
        assert done.returncode == 0, f"run {i}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        env = Home(home).read_env() or {}
        comps = env["components"]
        assert set(comps) == set(COMPONENTS), f"run {i}: recorded {sorted(comps)}"
        assert all(process_alive(c["pid"], c.get("ticks")) for c in comps.values()), f"run {i}"
        logs = "".join(
            (home / "logs" / f"{n}.log").read_text(errors="replace") for n in ("dagster-daemon", "dagster-webserver")
        )
        assert not [r for r in RACE if r in logs], f"run {i}: the instance was initialised twice"
        assert dagster_daemons(home) == [comps["dagster-daemon"]["pid"]]
        if i == 0:  # a second `up` on the running home starts nothing
            again = run_cli("up", "--home", str(home), "--no-sync", cwd=tmp_path, timeout=300)
            assert again.returncode == 0, again.stdout + again.stderr
            assert again.stdout.count("already running") == len(COMPONENTS)
            assert dagster_daemons(home) == [comps["dagster-daemon"]["pid"]]
            # the supervisor restarts a killed daemon, once, and records it
            os.kill(comps["dagster-daemon"]["pid"], signal.SIGKILL)

            def restarted() -> dict | None:
                new = ((Home(home).read_env() or {}).get("components") or {}).get("dagster-daemon") or {}
                alive = new.get("pid") not in (None, comps["dagster-daemon"]["pid"]) and process_alive(new["pid"])
                return new if alive else None

            new = wait_for(restarted, 60, "the supervisor to restart dagster-daemon", poll=0.05)
            time.sleep(1.0)  # a second restart (the bug this guards against) would show within a second
            assert dagster_daemons(home) == [new["pid"]]
        pids = processes_of(home)
        down = run_cli("down", "--home", str(home), cwd=tmp_path, timeout=120)
        assert down.returncode == 0, down.stderr
        assert wait_gone(pids) == [], f"run {i}: left running after down"
    finally:
        stop_environment(home)


def test_up_on_a_fresh_home_starts_cleanly_ten_times(tmp_path: Path) -> None:
    """Ten fresh homes, ``LANES`` at a time (each on its own home and ports): the same checks as ten in a row, with
    the machine busier while each instance is created (so a start-up race has more chances to show), in about a
    third of the time."""
    ports = free_ports(RUNS * len(PORT_FLAGS))
    with ThreadPoolExecutor(max_workers=LANES) as pool:
        runs = [
            pool.submit(fresh_up_and_down, tmp_path, i, ports[i * len(PORT_FLAGS) : (i + 1) * len(PORT_FLAGS)])
            for i in range(RUNS)
        ]
    failures = [f"run {i}: {type(e).__name__}: {e}" for i, r in enumerate(runs) if (e := r.exception()) is not None]
    print(f"\nfresh `playground up` with Dagster: {RUNS - len(failures)}/{RUNS} clean starts ({LANES} at a time)")
    assert not failures, "\n\n".join(failures)


def test_up_killed_after_starting_the_daemon_leaves_nothing_down_cannot_stop(tmp_path: Path) -> None:
    home = tmp_path / "home"
    proc = subprocess.Popen(
        [str(PLAYGROUND), *up_args(home)],
        cwd=tmp_path,
        env=clean_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:

        def daemon_started() -> str | None:
            if "dagster-daemon" in ((Home(home).read_env() or {}).get("components") or {}):
                return "started"
            return "up ended" if proc.poll() is not None else None

        started = wait_for(daemon_started, 300, "up to start the daemon", poll=0.05)
        assert started == "started", "up ended before starting the daemon"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        pids = processes_of(home)
        assert pids, "up started nothing?"
        down = run_cli("down", "--home", str(home), cwd=tmp_path, timeout=120)
        assert down.returncode == 0, down.stderr
        assert wait_gone(pids) == [], "a process `up` started was not recorded, so `down` could not stop it"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        stop_environment(home)


@pytest.mark.parametrize("taken", ["gateway", "prometheus", "dagster"])
def test_up_with_a_port_taken_starts_nothing_and_names_the_port(tmp_path: Path, taken: str) -> None:
    home = tmp_path / "home"
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        args = up_args(home)
        flag = f"--{taken}-port"
        args[args.index(flag) + 1] = str(port)
        try:
            done = run_cli(*args, cwd=tmp_path, timeout=120)
            assert done.returncode == 1, done.stdout + done.stderr
            assert f"port {port} ({taken}) is already in use" in done.stderr and flag in done.stderr
            assert processes_of(home) == []
            assert not ((Home(home).read_env() or {}).get("components") or {})
        finally:
            stop_environment(home)


def _ignored_signals(pid: int) -> set[int]:
    mask = int(Path(f"/proc/{pid}/status").read_text().split("SigIgn:")[1].split()[0], 16)
    return {n for n in range(1, 65) if mask >> (n - 1) & 1}


def test_down_stops_the_dagster_processes_with_sigterm_even_when_up_ran_with_sigint_ignored(tmp_path: Path) -> None:
    """``playground up &`` from a script (or a CI runner) starts with SIGINT ignored, and Dagster's CLIs map SIGTERM
    to SIGINT's handler: the code server, daemon and webserver would then ignore SIGTERM and ``down`` could only
    SIGKILL them. The components start with both signals at their default, so each stops on SIGTERM, cleanly."""
    home = tmp_path / "home"

    try:
        done = subprocess.run(  # as `playground up &` in a script: SIGINT ignored, inherited through exec
            ["bash", "-c", 'trap "" INT; exec "$0" "$@"', str(PLAYGROUND), *up_args(home)],
            cwd=tmp_path,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=400,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        comps = (Home(home).read_env() or {})["components"]
        dagster = {n: comps[n]["pid"] for n in ("dagster-code-server", "dagster-daemon", "dagster-webserver")}
        for name, pid in dagster.items():
            assert not {signal.SIGINT, signal.SIGTERM} & _ignored_signals(pid), f"{name} ignores SIGINT/SIGTERM"
        pids = processes_of(home)
        down = run_cli("down", "--home", str(home), cwd=tmp_path, timeout=200)
        assert down.returncode == 0, down.stderr
        for name, pid in dagster.items():
            assert f"{name} stopped (pid {pid})" in down.stdout, down.stdout
        assert "SIGKILL" not in down.stdout, down.stdout
        assert wait_gone(pids) == [], "left running after down"
        # the code server went through its own shutdown (a SIGKILLed one logs nothing more)
        log = (home / "logs" / "dagster-code-server.log").read_text(errors="replace")
        assert "Shutting down Dagster code proxy server" in log, log[-2000:]
    finally:
        stop_environment(home)
