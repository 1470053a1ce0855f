"""A run launcher that forks run workers from a pre-imported zygote (``launcher.zygote``).

Dagster's ``DefaultRunLauncher`` asks the code server to start each run: the server spawns a fresh Python
process and answers the launch only once that process has imported Dagster and the code location (1.5 CPU-seconds
on an idle core, several on a busy one). N releases of one commit cost N such imports before their first ticks
and hold the run queue's threads meanwhile. ``ZygoteRunLauncher`` starts, once per code location, a
single-threaded zygote process that did those imports, and launches a run by asking it to fork: the child
executes the run exactly as ``dagster api execute_run`` does (the command every other launcher runs, e.g. the
Kubernetes one in its pods). A launch returns within milliseconds.

- Health: the worker's pid and start time are tagged on the run (``gitops-playground/run-worker``); run
  monitoring (``check_run_worker_health``) reports a run whose worker is gone as failed, and run retries
  relaunch it (it resumes from the canary status persisted after every tick).
- Termination: SIGINT to the worker, which Dagster turns into an interruption of the op (the release routes all
  traffic to the primary), as the code server does for its own workers.
- A run without a Python origin, or a zygote that cannot start, falls back to ``DefaultRunLauncher``.

Public Dagster API: the class subclasses ``dagster.DefaultRunLauncher`` (exported) and overrides the hooks of its
base ``RunLauncher``: ``launch_run``, ``terminate``, ``supports_check_run_worker_health`` and
``check_run_worker_health``. Unavoidable internal names, all of them types of those hooks' signatures or the
argument format of ``dagster api execute_run``: ``dagster._core.launcher.CheckRunHealthResult`` and
``WorkerStatus`` (what the health hook returns), ``dagster._grpc.types.ExecuteRunArgs`` and
``dagster._serdes.serialize_value`` (the argument of ``dagster api execute_run``, built as the Kubernetes run
launcher builds it), and in the zygote ``dagster._core.execution.api`` (imported ahead, never called).
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
from typing import Any

import dagster as dg

from playground.local.procinfo import process_alive

__all__ = ["WORKER_TAG", "ZygoteRunLauncher"]

#: Run tag: the run worker the zygote forked, ``{"pid": .., "start": .., "host": ..}``.
WORKER_TAG = "gitops-playground/run-worker"
READY_TIMEOUT = 180.0  # the zygote's imports, on a saturated machine
REPLY_TIMEOUT = 30.0


class ZygoteError(RuntimeError):
    pass


class _Zygote:
    """One zygote process and the pipes to it (requests are serialised: a fork takes milliseconds)."""

    def __init__(self, python: str, working_directory: str | None, python_file: str | None, preload: list[str]):
        argv = [python, "-m", "launcher.zygote"]
        for m in preload:
            argv += ["--preload", m]
        if python_file:
            argv += ["--python-file", python_file]
        if working_directory:
            argv += ["--working-directory", working_directory]
        self.lock = threading.Lock()
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=working_directory or None, close_fds=True
        )
        ready = self._read(READY_TIMEOUT, "to import Dagster and the code location")
        if not ready.get("ready"):
            raise ZygoteError(f"unexpected first line from the zygote: {ready}")
        self.threads = int(ready.get("threads") or 0)

    def _read(self, timeout: float, what: str) -> dict[str, Any]:
        assert self.proc.stdout is not None
        readable, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if readable else b""
        if not line:
            self.close()
            raise ZygoteError(
                f"the run worker zygote (pid {self.proc.pid}) did not answer {what} within {timeout:.0f}s"
            )
        return json.loads(line)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def fork(self, args: str) -> tuple[int, int | None]:
        with self.lock:
            if not self.alive():
                raise ZygoteError(f"the run worker zygote (pid {self.proc.pid}) exited ({self.proc.returncode})")
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write(json.dumps({"args": args}).encode() + b"\n")
                self.proc.stdin.flush()
            except OSError as e:
                self.close()
                raise ZygoteError(f"the run worker zygote (pid {self.proc.pid}) is gone: {e}")
            reply = self._read(REPLY_TIMEOUT, "a fork request")
        if "pid" not in reply:
            raise ZygoteError(f"the run worker zygote could not start the run: {reply.get('error')}")
        return int(reply["pid"]), reply.get("start")

    def close(self) -> None:
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()  # the zygote exits; its running children go on
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class ZygoteRunLauncher(dg.DefaultRunLauncher):
    """Launches each run as a child forked from a pre-imported zygote (see the module docstring)."""

    def __init__(self, inst_data=None, preload_modules: list[str] | None = None):
        super().__init__(inst_data=inst_data)
        self.preload_modules = list(preload_modules or [])
        self._zygotes: dict[tuple[str, str | None, str | None], _Zygote] = {}
        self._zygotes_lock = threading.Lock()

    @classmethod
    def config_type(cls):
        return {"preload_modules": dg.Field([str], is_required=False, default_value=[])}

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls(inst_data=inst_data, preload_modules=config_value.get("preload_modules"))

    # ------------------------------------------------------------------------------------------ launch

    def _zygote(self, origin) -> _Zygote:
        repo = origin.repository_origin
        pointer = repo.code_pointer
        key = (
            repo.executable_path or sys.executable,
            getattr(pointer, "python_file", None),
            getattr(pointer, "working_directory", None),
        )
        with self._zygotes_lock:
            z = self._zygotes.get(key)
            if z is None or not z.alive():
                z = _Zygote(key[0], key[2], key[1], self.preload_modules)
                self._zygotes[key] = z
            return z

    def launch_run(self, context) -> None:
        from dagster._grpc.types import ExecuteRunArgs
        from dagster._serdes import serialize_value

        run = context.dagster_run
        origin = run.job_code_origin
        if origin is None:
            return super().launch_run(context)
        try:
            zygote = self._zygote(origin)
            args = ExecuteRunArgs(job_origin=origin, run_id=run.run_id, instance_ref=self._instance.get_ref())
            pid, start = zygote.fork(serialize_value(args))
        except ZygoteError as e:
            self._instance.report_engine_event(
                f"run worker zygote unavailable ({e}): launching through the code server", run, cls=self.__class__
            )
            return super().launch_run(context)
        self._instance.add_run_tags(
            run.run_id, {WORKER_TAG: json.dumps({"pid": pid, "start": start, "host": socket.gethostname()})}
        )

    def dispose(self) -> None:
        with self._zygotes_lock:
            for z in self._zygotes.values():
                z.close()
            self._zygotes.clear()
        super().dispose()

    # ------------------------------------------------------------------------------------------ workers

    @staticmethod
    def _worker(run) -> dict[str, Any] | None:
        raw = (run.tags or {}).get(WORKER_TAG)
        if not raw:
            return None
        try:
            w = json.loads(raw)
        except ValueError:
            return None
        return w if isinstance(w, dict) and isinstance(w.get("pid"), int) else None

    @staticmethod
    def _alive(w: dict[str, Any]) -> bool | None:
        """Whether the worker process runs; None when it runs on another host (cannot tell from here)."""
        if w.get("host") != socket.gethostname():
            return None
        return process_alive(w["pid"], w.get("start"), reap=False)  # an exited worker not reaped yet is not alive

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id)
        w = self._worker(run) if run else None
        if run is None or w is None:
            return super().terminate(run_id)
        if run.is_finished:
            return False
        self._instance.report_run_canceling(run)
        if not self._alive(w):
            self._instance.report_engine_event(
                f"run worker (pid {w['pid']}) is not running here: cannot send it the termination", run
            )
            return False
        os.kill(w["pid"], signal.SIGINT)  # Dagster's interruption of a run worker (as the code server sends it)
        return True

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run):
        from dagster._core.launcher import CheckRunHealthResult, WorkerStatus

        w = self._worker(run)
        if w is None:  # launched through the code server: its own monitoring applies
            return CheckRunHealthResult(WorkerStatus.RUNNING, "not forked by the zygote")
        alive = self._alive(w)
        if alive is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"worker on host {w.get('host')}")
        if alive:
            return CheckRunHealthResult(WorkerStatus.RUNNING, run_worker_id=str(w["pid"]))
        # a worker that just finished wrote its run's end before exiting: Dagster re-reads the run status first
        return CheckRunHealthResult(
            WorkerStatus.FAILED, f"run worker process {w['pid']} is gone", run_worker_id=str(w["pid"])
        )
