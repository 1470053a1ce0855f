"""The pre-imported history recorder: one long-lived process per playground home that imports numpy, pandas,
pyarrow, matplotlib and prometheus-api-client once and forks a child per recording, so that the end of a release
costs the recording's own work (Prometheus range queries, a Parquet file, a PNG chart: about 0.3-0.5 CPU-seconds),
not the 1.4-1.9 CPU-seconds of a fresh interpreter importing that stack.

``playground.history.record_release_isolated`` calls :func:`request`:

- it connects to the recorder of the home, a Unix socket in Linux's abstract namespace named from a hash of the
  resolved home path (no file, no 108-byte ``sun_path`` limit);
- when none answers, it starts one under an ``flock`` on ``<home>/history/recorder.lock`` (concurrent release
  workers start exactly one): ``python -m playground.history_recorder HOME`` with the caller's interpreter, which
  forks once at once (the caller reaps that parent: no zombie stays behind) and, after its imports, binds the
  socket and prints one JSON line ``{"ready": true, "pid": PID, "threads": N}`` on the pipe it was given;
- the request is the JSON of the fresh child (``python -m playground.history``) as one line; the answer is one
  JSON line: ``{"parquet", "chart", "rows", "cpu_s", "recorder"}`` or ``{"error": "<the HistoryError>"}``.
  The connection closed without an answer (the recorder exited idle at that moment, a child was killed) is
  retried once with a new connection.

The recorder runs at nice 10 and its children with it (the recording must not delay the ticks of the releases
still running), with ``OPENBLAS_NUM_THREADS=1``, ``JE_ARROW_MALLOC_CONF=background_thread:false`` and the like so that it has a single thread when it forks (the
ready line reports the count). A child closes the listening socket, records, answers, and exits (``SIGALRM``
stops it past the caller's timeout); the recorder reaps its children. It accepts connections of its own user only
(``SO_PEERCRED``).

It exits by itself after ``PLAYGROUND_HISTORY_RECORDER_IDLE`` seconds (default 180) without a request and
without a child running; at once when its home is gone, or when the home's local environment (``env.json``) was
stopped by ``playground down`` (no component left); on ``SIGTERM``. It stays in the process group of the
process that started it: a recorder started by a release worker is in the Dagster daemon's group, which
``playground down`` stops. :func:`stop` stops a home's recorder (for tests and tools).

When the recorder cannot be started at all (no socket, the interpreter or its imports fail), the caller falls
back to the fresh child (``RecorderUnavailable``).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from playground.errors import PlaygroundError
from playground.local.procinfo import exit_forked_child, nice_at_least, process_alive, reap_children

IDLE_ENV = "PLAYGROUND_HISTORY_RECORDER_IDLE"
DEFAULT_IDLE = 180.0
NICE = 10
#: Thread pools of the numeric libraries, at one thread: a process that forks must not have other threads.
SINGLE_THREAD_ENV = {
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
    "VECLIB_MAXIMUM_THREADS": "1",
    "JE_ARROW_MALLOC_CONF": "background_thread:false",  # pyarrow's jemalloc starts a thread otherwise
}
_REQUEST_READ_TIMEOUT = 10.0


class RecorderUnavailable(PlaygroundError):
    """The recorder could not be started: the caller records in a fresh child instead."""


def address(home: str | os.PathLike[str]) -> bytes:
    """The abstract socket name of the recorder of ``home``."""
    digest = hashlib.sha256(str(Path(home).resolve()).encode()).hexdigest()[:32]
    return b"\0gitops-playground-history-" + digest.encode()


def _dir(home: str | os.PathLike[str]) -> Path:
    return Path(home) / "history"


def log_path(home: str | os.PathLike[str]) -> Path:
    return _dir(home) / "recorder.log"


# -------------------------------------------------------------------------------------------------- client


def _connect(home: str | os.PathLike[str]) -> socket.socket | None:
    """A connection to the recorder of ``home``, None when none listens."""
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    except OSError as e:
        raise RecorderUnavailable(f"no Unix socket: {e}") from None
    try:
        s.connect(address(home))
    except (ConnectionRefusedError, FileNotFoundError):
        s.close()
        return None
    except OSError as e:  # not allowed here (a sandbox): record without a recorder
        s.close()
        raise RecorderUnavailable(f"cannot connect to the history recorder: {e}") from None
    return s


def _exchange(sock: socket.socket, message: dict[str, Any], timeout: float) -> dict[str, Any] | None:
    """Send one JSON line, read one JSON line; None when the connection closed without an answer. Raises
    ``TimeoutError`` past ``timeout``."""
    sock.settimeout(max(timeout, 0.001))
    try:
        sock.sendall(json.dumps(message).encode() + b"\n")
    except (BrokenPipeError, ConnectionResetError):
        return None
    try:
        buf = _recv_line(sock)
    except ConnectionResetError:
        return None
    return json.loads(buf) if buf.strip() else None


def _recv_line(sock: socket.socket) -> bytes:
    """The bytes up to and including the first newline, or what came before the peer closed."""
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
    return buf


def _start(home: str | os.PathLike[str], deadline: float) -> socket.socket:
    """Start the recorder of ``home`` unless another caller did; a connection to it."""
    d = _dir(home)
    try:
        d.mkdir(parents=True, exist_ok=True)
        lock = open(d / "recorder.lock", "a+")
    except OSError as e:
        raise RecorderUnavailable(f"cannot create {d}: {e}") from None
    with lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # the holder waits at most until its deadline
        sock = _connect(home)
        if sock is not None:
            return sock  # another caller started it while this one waited for the lock
        env = {**os.environ, **SINGLE_THREAD_ENV}
        try:
            with open(log_path(home), "ab") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "playground.history_recorder", str(Path(home).resolve())],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    env=env,
                    close_fds=True,
                )
        except OSError as e:
            raise RecorderUnavailable(f"cannot start the history recorder: {e}") from None
        assert proc.stdout is not None
        try:
            # the first process forks and exits at once (the recorder is its child): reap it
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            line = proc.stdout.readline() if ready else b""
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            line = b""
        finally:
            proc.stdout.close()
        if not line:
            if time.monotonic() >= deadline:
                raise TimeoutError
            raise RecorderUnavailable(f"the history recorder did not start; see {log_path(home)}")
        sock = _connect(home)
        if sock is None:
            raise RecorderUnavailable(f"the history recorder started ({line.decode().strip()}) but does not answer")
        return sock


def request(home: str | os.PathLike[str], message: dict[str, Any], *, timeout: float) -> dict[str, Any]:
    """The answer of the recorder of ``home`` (started if none runs) to ``message``. Raises ``TimeoutError``
    past ``timeout`` seconds, ``RecorderUnavailable`` when no recorder can be started."""
    deadline = time.monotonic() + timeout
    for _attempt in range(2):
        sock = _connect(home) or _start(home, deadline)
        with sock:
            answer = _exchange(sock, message, deadline - time.monotonic())
        if answer is not None:
            return answer
    raise ConnectionError(f"the history recorder closed the connection without an answer; see {log_path(home)}")


def ping(home: str | os.PathLike[str]) -> dict[str, Any] | None:
    """``{"pid", "children", "threads", "cpu_s"}`` of the running recorder of ``home`` (``cpu_s``: its own
    CPU-seconds and those of the recordings it reaped), or None (none is started)."""
    sock = _connect(home)
    if sock is None:
        return None
    with sock:
        return _exchange(sock, {"op": "ping"}, 10.0)


def stop(home: str | os.PathLike[str], timeout: float = 10.0) -> int | None:
    """Stop the recorder of ``home`` (its running children finish their recording): its pid, None if none ran."""
    sock = _connect(home)
    if sock is None:
        return None
    with sock:
        answer = _exchange(sock, {"op": "stop"}, timeout) or {}
    pid = answer.get("pid")
    deadline = time.monotonic() + timeout
    while pid and process_alive(int(pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return int(pid) if pid else None


# -------------------------------------------------------------------------------------------------- server


def _preload() -> None:
    """The stack a recording uses, imported (and its lazy parts exercised once) before the first fork."""
    import io

    import matplotlib

    matplotlib.use("Agg", force=True)
    import numpy  # noqa: F401
    import pandas as pd
    import prometheus_api_client  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    import requests  # noqa: F401
    from matplotlib.figure import Figure

    frame = pd.DataFrame({"time": pd.to_datetime([0, 1], unit="s", utc=True), "value": [1.0, 2.0]})
    frame.to_parquet(io.BytesIO(), index=False)
    fig = Figure(figsize=(2, 2), dpi=50)
    ax = fig.subplots(1, 1)
    ax.plot(frame["time"].dt.tz_convert(None), frame["value"], marker=".")
    ax.legend(["x"])
    fig.autofmt_xdate()
    fig.savefig(io.BytesIO(), format="png")


def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 0


def _peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


def _read_line(conn: socket.socket) -> dict[str, Any]:
    conn.settimeout(_REQUEST_READ_TIMEOUT)
    return json.loads(_recv_line(conn))


def _answer(conn: socket.socket, answer: dict[str, Any]) -> None:
    try:
        conn.settimeout(_REQUEST_READ_TIMEOUT)
        conn.sendall(json.dumps(answer).encode() + b"\n")
    except OSError:
        pass  # the caller is gone (timed out): nothing to answer to


def _child(conn: socket.socket, listener: socket.socket, req: dict[str, Any], recorder: int) -> None:
    """In the forked child: record, answer, exit; never returns."""
    code = 1
    try:
        listener.close()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.alarm(int(float(req["timeout"])) + 10)  # the caller gave up: SIGALRM ends the child
        from playground.history import HistoryError, record_request

        try:
            answer = record_request(req)
        except HistoryError as e:
            answer = {"error": str(e)}
        except Exception as e:  # a bug, not the environment: the caller gets it as a HistoryError
            import traceback

            traceback.print_exc()
            answer = {"error": f"history recorder: {type(e).__name__}: {e}"}
        answer["recorder"] = recorder
        _answer(conn, answer)
        code = 0
    finally:
        exit_forked_child(code)


def _environment_stopped(home: Path, had_env: bool) -> bool:
    """The home is gone, or its local environment was stopped (`playground down` removed every component)."""
    if not home.is_dir():
        return True
    if not had_env:
        return False
    from playground.local.store import Home

    env = Home(home).read_env()
    return env is None or not env.get("components")


def serve(home: Path, idle: float, ready_fd: int) -> int:
    """The recorder's loop (see the module docstring); ``ready_fd`` gets the ready line and is closed."""
    nice_at_least(NICE)
    os.environ.update(SINGLE_THREAD_ENV)
    _preload()
    import gc

    gc.collect()
    gc.freeze()  # the children do not copy the preloaded objects' pages by collecting them
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(address(home))
    except OSError as e:  # another recorder of this home runs (started without the lock): leave it the work
        os.write(ready_fd, json.dumps({"ready": False, "reason": str(e)}).encode() + b"\n")
        os.close(ready_fd)
        return 0
    listener.listen(128)
    threads = _threads()
    ready = {"ready": True, "pid": os.getpid(), "threads": threads}
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} history recorder ready: {json.dumps(ready)}", file=sys.stderr)
    os.write(ready_fd, json.dumps(ready).encode() + b"\n")
    os.close(ready_fd)
    had_env = (home / "env.json").exists()
    children: set[int] = set()
    last = time.monotonic()
    checked = 0.0
    stopping = False
    while not stopping:
        readable, _, _ = select.select([listener], [], [], 1.0)
        for pid in reap_children():  # the recordings that ended
            children.discard(pid)
            last = time.monotonic()
        if not readable:
            now = time.monotonic()
            if not children and now - last > idle:
                break
            if now - checked > 2.0:
                checked = now
                if _environment_stopped(home, had_env):
                    break
            continue
        conn, _ = listener.accept()
        last = time.monotonic()
        with conn:
            try:
                if _peer_uid(conn) != os.getuid():
                    continue
                req = _read_line(conn)
            except (OSError, ValueError) as e:
                _answer(conn, {"error": f"history recorder: bad request: {e}"})
                continue
            op = req.get("op") if isinstance(req, dict) else None
            if op in ("ping", "stop"):
                t = os.times()  # its own CPU and that of the children it reaped: what recording cost so far
                cpu = round(t.user + t.system + t.children_user + t.children_system, 3)
                _answer(conn, {"pid": os.getpid(), "children": len(children), "threads": _threads(), "cpu_s": cpu})
                stopping = op == "stop"
                continue
            try:
                pid = os.fork()
            except OSError as e:
                _answer(conn, {"error": f"history recorder: fork failed: {e}"})
                continue
            if pid == 0:
                _child(conn, listener, req, os.getppid())
            children.add(pid)
    listener.close()
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} history recorder {os.getpid()} exits", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m playground.history_recorder HOME", file=sys.stderr)
        return 2
    home = Path(args[0])
    idle = float(os.environ.get(IDLE_ENV) or DEFAULT_IDLE)
    ready_fd = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # anything printed goes nowhere; the ready line goes to the caller's pipe
    os.close(devnull)
    if os.fork() != 0:
        os._exit(0)  # the caller reaps this parent; the recorder is reparented and never becomes its zombie
    return serve(home, idle, ready_fd)


if __name__ == "__main__":
    sys.exit(main())
