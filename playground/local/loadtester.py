"""Flagger's load tester (``ghcr.io/fluxcd/flagger-loadtester``) for the local playground.

It implements the HTTP API of Flagger's ``cmd/loadtester`` + ``pkg/loadtester``:

``POST /``
    A Flagger webhook payload ``{"name", "namespace", "phase", "checksum", "metadata": {...}}``.

    * ``metadata.type`` ``cmd`` (the default): the command runs in the background and the answer is
      ``202 Accepted`` at once. Tasks are keyed by canary (``name.namespace``) + command, as Flagger's
      ``CmdTask.Hash``: while a task with the same key is still running, the same command is not started
      again (logged as "command skipped ... is already running"), and the answer is still 202.
      ``metadata.logCmdOutput: "true"`` logs the command's output.
    * ``metadata.type`` ``bash``: the command runs through ``bash -c`` and the request blocks until it
      ends (or ``--timeout`` kills it): ``200`` with the output, or ``500`` with
      ``" <exit status> <output>"`` as Flagger's ``BashTask`` does.
    * Other Flagger task types (helm, helmv3, concord, ngrinder, ...) answer 400: not available here.
    * Missing or empty ``metadata`` -> 400 "metadata not found in payload"; no ``cmd`` -> 400
      "cmd not found in metadata"; a body that is not JSON -> 400.

    ``cmd`` commands without shell syntax (no pipes, ``&&``, ``;``, ``$``, redirections, globs, backslashes,
    ``VAR=value`` prefixes, ...) run as argument vectors (``shlex.split``, no shell); the others run
    through ``bash -c`` (Flagger uses ``sh -c`` for every ``cmd`` task).

``/gate/approve`` (always 200), ``/gate/halt`` (always 403), ``/gate/check`` (200 when the canary's gate is
open, else 403; gates start closed), ``/gate/open`` and ``/gate/close`` (202), ``/rollback/check`` (200 when
the canary's rollback flag is open, else 403), ``/rollback/open`` and ``/rollback/close`` (202): all keyed by
the ``name``/``namespace`` of the JSON payload, as in Flagger. ``GET /healthz`` answers 200 ``OK`` and
``GET /metrics`` a few counters.

Security (this playground's addition): only commands listed in the allowlist file run. The file is JSON,
``{"commands": ["<cmd>", ...]}``; the local cluster rewrites it whenever Canaries are applied, with the
``metadata.cmd`` of every webhook whose URL points at the load tester. It is re-read whenever its mtime
(or size/inode) changes; a file that cannot be parsed keeps the previous list. Any other command answers
403 with a message naming it (cut after 200 characters, in the answer and in the log). Without
``--allowlist`` nothing runs.

Malformed requests answer 400 with a one-line reason and close the connection, never a traceback: a
Content-Length that is not a number, conflicting or larger than 1 MiB, a body shorter than announced, a bad
chunked encoding or another Transfer-Encoding, a body that is not JSON, not UTF-8 or nested deeper than 32
levels (checked before parsing: a 100k-deep body never reaches the recursive decoder).

Children inherit this process's environment (so ``curl`` reaches ``*.prod`` services through the mesh
proxy named by ``http_proxy``/``HTTP_PROXY``) and run in their own process group; a timeout kills the
whole group. ``hey`` ignores the proxy environment (it only proxies with ``-x``), so when a proxy is set
the children's ``PATH`` starts with a shim ``hey`` that adds ``-x <proxy>`` unless the command gives
``-x`` or its URL's host is in ``NO_PROXY``. Every command start and exit status is logged to stdout. SIGTERM/SIGINT kill running
children and exit 0.

Run: ``python -m playground.local.loadtester --port=8080 --allowlist=PATH [--timeout=1h]``. Flagger's
Go-style single-dash flags (``-port=8080 -log-level=info -timeout=1h``) are accepted as well; the default
port (9090) and exec timeout (1h) are Flagger's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from playground.durations import parse_duration
from playground.errors import PlaygroundError
from playground.textsafe import one_line

MAX_BODY = 1024 * 1024
DEFAULT_TIMEOUT = 3600.0  # Flagger: flag.DurationVar(&timeout, "timeout", time.Hour, "Load test exec timeout.")

_log_lock = threading.Lock()


def log(level: str, msg: str, **fields: Any) -> None:
    """One line per event on stdout: ``<UTC time> <LEVEL> <message> key=value ...``."""
    extra = " ".join(f"{k}={v}" for k, v in fields.items())
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with _log_lock:
        try:
            sys.stdout.write(f"{stamp} {level.upper():5} {msg}{' ' + extra if extra else ''}\n")
            sys.stdout.flush()
        except (OSError, ValueError):
            pass


def format_duration(seconds: float) -> str:
    """Go's time.Duration.String() for whole seconds (1h0m0s, 1m30s, 45s)."""
    total = int(seconds)
    if total != seconds or total < 60:
        return f"{seconds:g}s"
    h, rem = divmod(total, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m}m{s}s" if h else f"{m}m{s}s"


# ------------------------------------------------------------------------------------------- allowlist


class Allowlist:
    """The commands this load tester may run, re-read from its JSON file whenever the file changes."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._signature: tuple[int, int, int] | None = None
        self._commands: frozenset[str] = frozenset()

    def commands(self) -> frozenset[str]:
        if not self.path:
            return frozenset()
        try:
            st = os.stat(self.path)
        except OSError:
            with self._lock:
                if self._signature is not None:
                    log("warn", "allowlist file is gone: no command may run", path=self.path)
                self._signature, self._commands = None, frozenset()
            return self._commands
        signature = (st.st_mtime_ns, st.st_size, st.st_ino)
        with self._lock:
            if signature != self._signature:
                try:
                    with open(self.path, encoding="utf-8") as fh:
                        data = json.load(fh)
                    commands = data.get("commands") if isinstance(data, dict) else None
                    if not isinstance(commands, list) or not all(isinstance(c, str) for c in commands):
                        raise ValueError('expected {"commands": ["...", ...]}')
                    self._commands = frozenset(c.strip() for c in commands)
                    log("info", "allowlist loaded", path=self.path, commands=len(self._commands))
                except (OSError, ValueError) as exc:
                    log("error", "allowlist file is invalid, keeping the previous list", path=self.path, error=exc)
                self._signature = signature
            return self._commands

    def allows(self, command: str) -> bool:
        return command.strip() in self.commands()

    def denial(self, command: str) -> str:
        where = f"the allowlist {self.path}" if self.path else "an allowlist (none was given with --allowlist)"
        return (
            f"command {shown(command)} is not allowed: the load tester runs only commands that appear as "
            f"metadata.cmd in a webhook of a synced Canary (listed in {where}); add it to a Canary's "
            f"webhooks in the GitOps repository and sync"
        )


#: Longest part of a refused command echoed back or logged.
SHOWN_CHARS = 200


def shown(command: str) -> str:
    """``repr(command)`` for an answer or a log line: escaped on one line, and cut after :data:`SHOWN_CHARS`
    characters (a refused 900 KB command is not echoed back in full)."""
    if len(command) <= SHOWN_CHARS:
        return one_line(repr(command), 4 * SHOWN_CHARS + 10)
    return one_line(repr(command[:SHOWN_CHARS]), 4 * SHOWN_CHARS + 10) + f"... ({len(command):,} characters)"


# ----------------------------------------------------------------------------------------------- tasks

# Characters or constructs whose meaning needs a shell. Quotes alone do not: shlex splits them as sh would.
_SHELL_SYNTAX = re.compile(r"[|&;<>()$`\\*?\[\]{}~#!\n]")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def needs_shell(command: str) -> bool:
    """True when ``command`` uses shell syntax and must run through bash."""
    if _SHELL_SYNTAX.search(command):
        return True
    try:
        words = shlex.split(command)
    except ValueError:
        return True
    return not words or bool(_ASSIGNMENT.match(words[0]))


def command_argv(command: str, *, shell: bool | None = None) -> list[str]:
    """The argument vector that runs ``command``: ``bash -c`` only when shell syntax needs it."""
    if shell or (shell is None and needs_shell(command)):
        return ["bash", "-c", command]
    return shlex.split(command)


_HEY_SHIM = """#!{python} -IS
# hey ignores http_proxy/HTTP_PROXY (it proxies only with -x): add -x unless the target bypasses the proxy.
import os, sys, urllib.parse, urllib.request
REAL = {real!r}
args = sys.argv[1:]
proxy = os.environ.get("http_proxy") or os.environ.get("HTTP_PROXY")
if proxy and args and "-x" not in args:
    host = urllib.parse.urlsplit(args[-1]).hostname or ""
    if not urllib.request.proxy_bypass_environment(host):
        args = ["-x", proxy if "://" in proxy else "http://" + proxy] + args
os.execv(REAL, [REAL] + args)
"""


def child_environment(base: dict[str, str] | None = None) -> tuple[dict[str, str], str | None]:
    """The environment of commands, and a shim directory to delete at exit (or None).

    With a proxy in the environment and ``hey`` on PATH, a directory holding the ``hey`` shim is put first
    on PATH (see the module docstring).
    """
    env = dict(os.environ if base is None else base)
    proxy = env.get("http_proxy") or env.get("HTTP_PROXY")
    real = shutil.which("hey", path=env.get("PATH"))
    if not proxy or not real:
        return env, None
    shim_dir = tempfile.mkdtemp(prefix="loadtester-shims-")
    shim = os.path.join(shim_dir, "hey")
    with open(shim, "w", encoding="utf-8") as fh:
        fh.write(_HEY_SHIM.format(python=sys.executable, real=os.path.realpath(real)))
    os.chmod(shim, 0o755)
    env["PATH"] = shim_dir + os.pathsep + env.get("PATH", "")
    return env, shim_dir


@dataclass
class Result:
    ok: bool
    output: str
    status: str  # "exit status 0", "exit status 1", "signal: killed (timeout 1h0m0s)", ...


class TaskRunner:
    """Runs commands as child processes: blocking, or in the background de-duplicated by key."""

    def __init__(self, timeout: float, env: dict[str, str] | None = None) -> None:
        self.timeout = timeout
        self.env = env  # environment of the commands (None: this process's)
        self._lock = threading.Lock()
        self._running: dict[str, str] = {}  # background task key -> command
        self._children: set[subprocess.Popen[bytes]] = set()
        self.stopping = False
        self.executions = 0
        self.failures = 0

    def run(self, canary: str, command: str, argv: list[str]) -> Result:
        """Run to completion (or timeout); the output is stdout and stderr combined."""
        log(
            "info",
            "command starting",
            canary=canary,
            cmd=json.dumps(command),
            mode="bash" if argv[:2] == ["bash", "-c"] else "argv",
        )
        with self._lock:
            if self.stopping:
                return Result(False, "", "load tester is shutting down")
            self.executions += 1
        try:
            if self.env is not None and "/" not in argv[0]:  # resolve with the children's PATH (shims)
                argv = [shutil.which(argv[0], path=self.env.get("PATH")) or argv[0], *argv[1:]]
            proc = subprocess.Popen(
                argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,
            )
        except OSError as exc:
            with self._lock:
                self.failures += 1
            log("error", "command failed", canary=canary, cmd=json.dumps(command), error=exc)
            return Result(False, str(exc), "exit status 127")
        with self._lock:
            self._children.add(proc)
        try:
            out, _ = proc.communicate(timeout=self.timeout)
            status = (
                f"exit status {proc.returncode}"
                if proc.returncode >= 0
                else f"signal: {(signal.strsignal(-proc.returncode) or str(-proc.returncode)).lower()}"
            )
            timed_out = False
        except subprocess.TimeoutExpired:
            _kill_group(proc, signal.SIGKILL)
            out, _ = proc.communicate()
            status = f"signal: killed (timeout {format_duration(self.timeout)})"
            timed_out = True
        finally:
            with self._lock:
                self._children.discard(proc)
        text = out.decode("utf-8", "replace")
        ok = proc.returncode == 0 and not timed_out
        with self._lock:
            if not ok:
                self.failures += 1
        if ok:
            log("info", "command finished", canary=canary, cmd=json.dumps(command), status=json.dumps(status))
        else:  # as Flagger, a failure logs the output too
            log(
                "error",
                "command failed",
                canary=canary,
                cmd=json.dumps(command),
                status=json.dumps(status),
                output=json.dumps(text[-2000:]),
            )
        return Result(ok, text, status)

    def start(self, canary: str, command: str, argv: list[str], log_output: bool) -> bool:
        """Start a background task unless the same canary+command is still running; True if started."""
        key = f"{canary}\x00{command}"
        with self._lock:
            if key in self._running:
                log("info", "command skipped, is already running", canary=canary, cmd=json.dumps(command))
                return False
            self._running[key] = command

        def work() -> None:
            try:
                result = self.run(canary, command, argv)
                if log_output and result.output:
                    log("info", "command output", canary=canary, output=json.dumps(result.output))
            finally:
                with self._lock:
                    self._running.pop(key, None)

        threading.Thread(target=work, daemon=True, name=f"task {command[:40]}").start()
        return True

    def running(self) -> list[str]:
        with self._lock:
            return list(self._running.values())

    def kill_all(self) -> None:
        """Terminate every running child (its whole process group), then kill what is left."""
        with self._lock:
            self.stopping = True
            children = list(self._children)
        for proc in children:
            _kill_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + 2.0
        for proc in children:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _kill_group(proc, signal.SIGKILL)


def _kill_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            proc.send_signal(sig)
        except (ProcessLookupError, OSError):
            pass


class GateStorage:
    """Flagger's in-memory gate storage: every key starts closed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[str, bool] = {}

    def open(self, key: str) -> None:
        with self._lock:
            self._open[key] = True

    def close(self, key: str) -> None:
        with self._lock:
            self._open[key] = False

    def is_open(self, key: str) -> bool:
        with self._lock:
            return self._open.get(key, False)


# ---------------------------------------------------------------------------------------------- server


class Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], allowlist: Allowlist, runner: TaskRunner) -> None:
        self.allowlist = allowlist
        self.runner = runner
        self.gates = GateStorage()
        super().__init__(address, Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One log line instead of socketserver's traceback on stderr (a client that went away, a bug)."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return
        log("error", "request failed", client=f"{client_address[0]}:{client_address[1]}", error=one_line(repr(exc)))


class BadRequest(PlaygroundError):
    """A malformed request: answered 400 with this message, then the connection is closed."""


#: Deepest JSON nesting accepted in a payload (Flagger's payloads have 3 levels).
MAX_JSON_DEPTH = 32


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "flagger-loadtester"
    sys_version = ""
    server: Server
    timeout = 120  # idle keep-alive connections

    def log_message(self, format: str, *args: Any) -> None:
        pass  # commands are logged by the task runner; requests are not

    # ---------------------------------------------------------------------------------------- helpers

    def _send(self, status: int, text: str = "", content_type: str = "text/plain; charset=utf-8") -> None:
        body = text.encode("utf-8", "replace")
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except (ConnectionError, TimeoutError):
            self.close_connection = True  # the client went away: nobody to answer

    def _body(self) -> bytes:
        """The request body (Content-Length or chunked, at most MAX_BODY bytes). Raises BadRequest."""
        te = self.headers.get_all("Transfer-Encoding") or []
        lengths = self.headers.get_all("Content-Length") or []
        if te:
            if lengths:
                raise BadRequest("both Transfer-Encoding and Content-Length: send one of them")
            if [t.strip().lower() for t in ",".join(te).split(",")] != ["chunked"]:
                raise BadRequest(f"unsupported Transfer-Encoding {shown(', '.join(te))}: send Content-Length")
            return self._chunked()
        if not lengths:
            return b""
        if len({v.strip() for v in lengths}) != 1:
            raise BadRequest(f"conflicting Content-Length headers {shown(', '.join(lengths))}")
        text = lengths[0].strip()
        if not text.isdigit() or not text.isascii():
            raise BadRequest(f"invalid Content-Length {shown(text)}: expected a number of bytes")
        length = int(text) if len(text) <= 12 else MAX_BODY + 1
        if length > MAX_BODY:
            raise BadRequest(f"request body of {length:,} bytes is too large (at most {MAX_BODY:,})")
        body = self.rfile.read(length) if length else b""
        if len(body) != length:
            raise BadRequest(f"request body ended after {len(body):,} of the {length:,} bytes announced")
        return body

    def _chunked(self) -> bytes:
        parts: list[bytes] = []
        size = 0
        while True:
            line = self.rfile.readline(1026)
            if not line.endswith(b"\n"):
                raise BadRequest("malformed chunked body: chunk size line missing or too long")
            text = line.split(b";", 1)[0].strip()
            try:
                n = int(text, 16) if text and len(text) <= 8 else -1
            except ValueError:
                n = -1
            if n < 0:
                raise BadRequest(f"malformed chunked body: invalid chunk size {shown(text.decode('latin-1'))}")
            if n == 0:
                while self.rfile.readline(1026) not in (b"\r\n", b"\n", b""):  # trailers
                    pass
                return b"".join(parts)
            size += n
            if size > MAX_BODY:
                raise BadRequest(f"request body is too large (at most {MAX_BODY:,} bytes)")
            chunk = self.rfile.read(n)
            if len(chunk) != n or self.rfile.readline(3) not in (b"\r\n", b"\n"):
                raise BadRequest("malformed chunked body: a chunk is shorter than its size")
            parts.append(chunk)

    def _payload(self) -> dict[str, Any]:
        """The webhook payload. Raises BadRequest."""
        body = self._body()
        if _json_depth(body) > MAX_JSON_DEPTH:
            raise BadRequest(f"decoding the request body failed: JSON nested deeper than {MAX_JSON_DEPTH} levels")
        try:
            payload = json.loads(body or b"null")
        except (ValueError, RecursionError) as exc:
            raise BadRequest(f"decoding the request body failed: {one_line(str(exc), 300)}") from None
        if not isinstance(payload, dict):
            raise BadRequest("decoding the request body failed: expected a JSON object")
        return payload

    @staticmethod
    def _canary(payload: dict[str, Any]) -> str:
        return f"{payload.get('name', '')}.{payload.get('namespace', '')}"

    # --------------------------------------------------------------------------------------- dispatch

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    do_PUT = do_HEAD = do_POST

    def _dispatch(self) -> None:
        try:
            self._route()
        except BadRequest as exc:
            self.close_connection = True  # what follows the bad request on this connection cannot be trusted
            self._send(400, f"{exc}\n")

    def _route(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            self._body()
            return self._send(200, "OK")
        if path == "/metrics":
            self._body()
            return self._send(200, self._metrics(), "text/plain; version=0.0.4; charset=utf-8")
        if path == "/gate/approve":
            self._body()
            return self._send(200, "OK")
        if path == "/gate/halt":
            self._body()
            return self._send(403, "Forbidden")
        gates = {
            "/gate/check": ("check", ""),
            "/gate/open": ("open", ""),
            "/gate/close": ("close", ""),
            "/rollback/check": ("check", "rollback."),
            "/rollback/open": ("open", "rollback."),
            "/rollback/close": ("close", "rollback."),
        }
        if path in gates:
            return self._gate(path, *gates[path])
        if path == "/":
            return self._task()
        self._body()
        self._send(404, "404 page not found\n")

    def _gate(self, path: str, action: str, prefix: str) -> None:
        payload = self._payload()
        key = prefix + self._canary(payload)
        gates = self.server.gates
        if action == "check":
            approved = gates.is_open(key)
            log("info", f"{key} {'rollback' if prefix else 'gate'} check: approved {str(approved).lower()}")
            return self._send(200, "Approved") if approved else self._send(403, "Forbidden")
        getattr(gates, action)(key)
        log("info", f"{key} {'rollback' if prefix else 'gate'} {'opened' if action == 'open' else 'closed'}")
        self._send(202, "")

    def _task(self) -> None:
        payload = self._payload()
        metadata = payload.get("metadata")
        if not isinstance(metadata, dict) or not metadata:
            return self._send(400, "metadata not found in payload")
        task_type = str(metadata.get("type") or "cmd")
        if task_type not in ("cmd", "bash"):
            return self._send(
                400, f"unknown task type {one_line(task_type, 100)}: the local load tester runs cmd and bash tasks"
            )
        command = metadata.get("cmd")
        if not isinstance(command, str) or not command.strip():
            return self._send(400, "cmd not found in metadata")
        canary = self._canary(payload)
        allowlist, runner = self.server.allowlist, self.server.runner
        if not allowlist.allows(command):
            log("warn", "command refused: not in the allowlist", canary=shown(canary), cmd=shown(command))
            return self._send(403, allowlist.denial(command))
        if task_type == "bash":
            result = runner.run(canary, command, command_argv(command, shell=True))
            if not result.ok:
                return self._send(500, f" {result.status} {result.output}")
            return self._send(200, result.output)
        log_output = str(metadata.get("logCmdOutput", "")).strip().lower() in ("1", "t", "true")
        runner.start(canary, command, command_argv(command), log_output)
        self._send(202, "")

    def _metrics(self) -> str:
        runner = self.server.runner
        return (
            "# HELP loadtester_executions_total Commands started.\n"
            "# TYPE loadtester_executions_total counter\n"
            f"loadtester_executions_total {runner.executions}\n"
            "# HELP loadtester_failures_total Commands that failed or timed out.\n"
            "# TYPE loadtester_failures_total counter\n"
            f"loadtester_failures_total {runner.failures}\n"
            "# HELP loadtester_running_tasks Background tasks running now.\n"
            "# TYPE loadtester_running_tasks gauge\n"
            f"loadtester_running_tasks {len(runner.running())}\n"
        )


def _json_depth(body: bytes) -> int:
    """An upper bound of the nesting depth of the JSON ``body`` (brackets inside strings count too unless the
    body is scanned), computed without recursion: json.loads on a 100k-deep body raises RecursionError."""
    if body.count(b"[") + body.count(b"{") <= MAX_JSON_DEPTH:
        return 0
    depth = deepest = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte == 0x5B or byte == 0x7B:  # [ {
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_JSON_DEPTH:
                    return deepest
        elif byte == 0x5D or byte == 0x7D:  # ] }
            depth -= 1
    return deepest


# ------------------------------------------------------------------------------------------------ main


def _go_flags(argv: list[str]) -> list[str]:
    """Accept Go's single-dash long flags (``-port=8080``) by rewriting them as ``--port=8080``."""
    return ["-" + a if re.match(r"^-[A-Za-z][A-Za-z0-9-]+", a) else a for a in argv]


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="python -m playground.local.loadtester",
        description="Flagger-compatible load tester for the local playground.",
    )
    parser.add_argument("--port", type=int, default=9090, help="port to listen on (Flagger's default 9090)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument(
        "--allowlist",
        default=os.environ.get("LOADTESTER_ALLOWLIST"),
        help='JSON file {"commands": [...]} of the commands that may run',
    )
    parser.add_argument(
        "--timeout",
        type=lambda v: parse_duration(v, allow_plain=True),
        default=DEFAULT_TIMEOUT,
        help="exec timeout of a command, Go duration (default 1h, as Flagger)",
    )
    parser.add_argument("--log-level", default="info", help="accepted for compatibility")
    return parser.parse_known_args(_go_flags(argv))


def main(argv: list[str] | None = None) -> int:
    args, unknown = parse_args(sys.argv[1:] if argv is None else argv)
    allowlist = Allowlist(args.allowlist)
    child_env, shim_dir = child_environment()
    runner = TaskRunner(args.timeout, child_env)
    try:
        server = Server((args.host, args.port), allowlist, runner)
    except OSError as exc:
        log("fatal", "HTTP server failed to listen", addr=f"{args.host}:{args.port}", error=exc)
        if shim_dir:
            shutil.rmtree(shim_dir, ignore_errors=True)
        return 1
    stopping = threading.Event()

    def stop(signum: int, _frame: Any) -> None:
        if stopping.is_set():
            return
        stopping.set()
        log("info", "shutting down", signal=signal.Signals(signum).name)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    ignored = [a for a in unknown if a.startswith("-")]
    if ignored:
        log("info", "ignoring flags", flags=" ".join(ignored))
    if not args.allowlist:
        log("warn", "no --allowlist given: every command will be refused")
    else:
        allowlist.commands()
    log("info", f"Starting load tester API on port {server.server_address[1]}", timeout=format_duration(args.timeout))
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.socket.close()
        runner.kill_all()
        if shim_dir:
            shutil.rmtree(shim_dir, ignore_errors=True)
    log("info", "HTTP server stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
