"""The local playground's supervisor: keeps every component ``playground up`` started alive.

Run: ``python -m playground.local.supervisor --home $PLAYGROUND_HOME`` (``playground up`` starts it detached and
records it in ``env.json`` like the other components; ``playground down`` stops it first, so that it restarts
nothing that ``down`` stops).

Every ``--interval`` (50 ms) it checks the pid and process start time of each component recorded in
``$HOME/env.json`` (both Envoys, Prometheus, the registry, the node agent, dagster-daemon, dagster-webserver).
A component whose process is gone (killed, crashed) is started again at once from its record (same command
line, log file, working directory and environment) and its new pid is recorded; this happens under the
``env.json`` lock, so it never races ``playground up``. A component that dies again within
``STABLE_AFTER`` seconds of being restarted is restarted after a backoff (0.25 s doubling to 10 s), so a
component that cannot start (its port taken by another program) does not spin. What the restarted
components do on start keeps the playground serving:

- the two Envoys share the gateway and mesh listeners (SO_REUSEPORT): while one is restarted the other
  accepts every new connection, so killing one costs only the requests it had in flight;
- Prometheus replays its write-ahead log; the node agent adopts the replicas the killed agent left running
  (no replica restarts, no endpoint gap in Envoy); dagster-daemon resumes its sensors from their cursors.

The node agent is a Python program whose imports take one to two seconds on a busy machine, so the supervisor
imports it once at start-up and restarts it by forking itself (a zygote, as Android and preforking servers do):
the child starts a new session, sends its output to the agent's log and runs the agent's ``main`` at once.
Its record keeps the agent's command line (``"forked": true`` says how it was started).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from playground.local.env import ALL_COMPONENTS, env_lock, record_components, start_component
from playground.local.procinfo import process_alive, start_ticks
from playground.local.store import Home

log = logging.getLogger("playground.supervisor")

INTERVAL = 0.05
BACKOFF_START, BACKOFF_MAX = 0.25, 10.0
STABLE_AFTER = 30.0  # a restarted component that lives this long resets its backoff

SUPERVISED = tuple(n for n in ALL_COMPONENTS if n != "supervisor")
#: Components whose orphaned children must outlive them: the code server's run workers (releases in flight).
KEEP_CHILDREN = ("dagster-code-server",)


class Supervisor:
    def __init__(self, home: Home, interval: float = INTERVAL, zygote: bool = True):
        self.home = home
        self.agent_main: Any = None
        if zygote:  # pay the agent's imports once, here, not at every restart
            from playground.local import agent

            self.agent_main = agent.main
        self.interval = interval
        self.stopping = False
        self.streak: dict[str, int] = {}
        self.restarted_at: dict[str, float] = {}
        self.not_before: dict[str, float] = {}
        self.restarts = 0

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        log.info("supervisor running (home %s, pid %d)", self.home.root, os.getpid())
        while not self.stopping:
            started = time.monotonic()
            if not self.home.env_file.exists():
                log.info("%s is gone: stopping", self.home.env_file)
                break
            self.step()
            time.sleep(max(0.0, self.interval - (time.monotonic() - started)))
        log.info("supervisor stopped (%d restarts)", self.restarts)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.stopping = True

    def dead(self, env: dict[str, Any]) -> list[str]:
        comps = env.get("components") or {}
        return [n for n in SUPERVISED if comps.get(n) and not process_alive(comps[n].get("pid"), comps[n].get("ticks"))]

    def step(self) -> None:
        env = self.home.read_env() or {}
        now = time.monotonic()
        dead = [n for n in self.dead(env) if self.not_before.get(n, 0.0) <= now]
        if not dead or self.stopping:
            return
        with env_lock(self.home, blocking=False) as locked:
            if not locked:  # `playground up` or `down` is at work: look again on the next step
                return
            env = self.home.read_env() or {}  # what is recorded now, under the lock
            comps = dict(env.get("components") or {})
            for name in dead:
                if name not in self.dead(env) or self.stopping:
                    continue
                self.restart(name, comps)

    def restart(self, name: str, comps: dict[str, Any]) -> None:
        old = comps[name]
        now = time.monotonic()
        if now - self.restarted_at.get(name, -STABLE_AFTER) < STABLE_AFTER:
            self.streak[name] = self.streak.get(name, 0) + 1
        else:
            self.streak[name] = 0
        if name not in KEEP_CHILDREN:
            # children the dead process left in its process group (Postgres backends holding its shared memory)
            try:
                os.killpg(int(old["pid"]), signal.SIGKILL)
            except (ProcessLookupError, PermissionError, KeyError, TypeError, ValueError):
                pass
        try:
            new = self.fork_agent(old) if name == "agent" and self.agent_main is not None else start_component(old)
        except (OSError, KeyError, TypeError) as exc:
            log.error("cannot restart %s from its record (%s): %s", name, self.home.env_file, exc)
            self.not_before[name] = now + BACKOFF_MAX
            return
        comps[name] = new
        record_components(self.home, comps, [name])
        self.restarts += 1
        self.restarted_at[name] = now
        delay = min(BACKOFF_MAX, BACKOFF_START * 2 ** (self.streak[name] - 1)) if self.streak[name] else 0.0
        self.not_before[name] = now + delay
        log.warning(
            "%s (pid %s) was gone: restarted as pid %d%s",
            name,
            old.get("pid"),
            new["pid"],
            f" (died {self.streak[name]} times in a row; next restart not before {delay:.2f}s)" if delay else "",
        )

    def fork_agent(self, comp: dict[str, Any]) -> dict[str, Any]:
        """Start the node agent as a fork of this (pre-imported) process; return its record."""
        log_path = Path(comp["log"])
        argv = list(comp["argv"])
        home_arg = argv[argv.index("--home") + 1] if "--home" in argv else str(self.home.root)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: becomes the agent, never returns
            code = 1
            try:
                os.setsid()
                for fd in [int(f) for f in os.listdir("/proc/self/fd") if int(f) > 2]:
                    try:
                        os.close(fd)  # the env.json lock and the parent's files are not the agent's
                    except OSError:
                        pass
                out = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                null = os.open(os.devnull, os.O_RDONLY)
                os.dup2(null, 0)
                os.dup2(out, 1)
                os.dup2(out, 2)
                os.write(
                    1,
                    f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(argv)} (forked by the supervisor)\n".encode(),
                )
                if comp.get("cwd"):
                    os.chdir(comp["cwd"])
                os.environ.update(comp.get("env") or {})
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                code = self.agent_main(["--home", home_arg])
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code or 0)
        new = {k: v for k, v in comp.items() if not k.startswith("_")}
        new.update(pid=pid, ticks=start_ticks(pid), forked=True)
        return new


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m playground.local.supervisor", description=__doc__.split("\n")[0])
    p.add_argument("--home", default=None, help="PLAYGROUND_HOME (default: $PLAYGROUND_HOME or ./.playground)")
    p.add_argument("--interval", type=float, default=INTERVAL, help="seconds between checks (default 0.05)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stdout)
    Supervisor(Home.of(Path(args.home) if args.home else None), interval=args.interval).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
