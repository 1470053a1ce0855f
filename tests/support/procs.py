"""Generic process helpers for tests and benchmarks.

    port = free_port()
    proc = start_process([binary, "--flag"], log_path=tmp_path / "x.log")
    try:
        wait_for_http(f"http://127.0.0.1:{port}/ready", proc=proc)
        ...
    finally:
        stop_process(proc)

``start_process`` runs the command in its own session (process group) with stdout and stderr going to a log
file, so ``stop_process`` can end the whole group (SIGTERM, then SIGKILL after a grace period) without
touching anything else. ``run_hey`` runs the ``hey`` load generator and parses its summary into a
``HeyResult`` (status code counts, error counts, latency percentiles).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "HeyResult",
    "free_port",
    "free_ports",
    "log_tail",
    "parse_hey_summary",
    "run_hey",
    "start_hey",
    "start_process",
    "stop_process",
    "wait_for_http",
]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """``n`` TCP ports on 127.0.0.1 free a moment ago, all different (held open together while they are picked:
    the ports of one playground, or of playgrounds started at the same time, never collide)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_process(
    args: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``args`` in a new session with stdout+stderr appended to ``log_path``.

    ``env`` entries are added to (not substituted for) the current environment. The log path is kept on the
    returned object as ``proc.log_path`` for ``log_tail``. The process starts with SIGINT at its default, as a
    command typed in a terminal does, even when the test run itself was started with SIGINT ignored (a
    background job of a script, ``cmd &``, inherits SIG_IGN, and Python then never raises KeyboardInterrupt).
    """
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            list(args),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=full_env,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_default_sigint,
        )
    proc.log_path = log_path  # type: ignore[attr-defined]
    return proc


def log_tail(proc_or_path: subprocess.Popen | Path | str, lines: int = 40) -> str:
    """The last ``lines`` lines of a process log (a path, or a process started by ``start_process``)."""
    path = getattr(proc_or_path, "log_path", proc_or_path)
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except (OSError, TypeError):
        return "(no log)"


def wait_for_http(
    url: str,
    *,
    timeout: float = 20.0,
    proc: subprocess.Popen | None = None,
    ok: Callable[[int, bytes], bool] | None = None,
    interval: float = 0.05,
) -> bytes:
    """Poll ``url`` until it answers (any status < 500 by default, or ``ok(status, body)``); return the body.

    If ``proc`` exits meanwhile, raise at once with its log tail; on timeout raise ``TimeoutError`` with the
    last error seen. Proxies from the environment are ignored: the URL is contacted directly.
    """
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    accept = ok or (lambda status, _body: status < 500)
    deadline = time.monotonic() + timeout
    last = "no attempt"
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(
                f"process {proc.args!r} exited with {proc.returncode} while waiting for {url}:\n{log_tail(proc)}"
            )
        try:
            with opener.open(url, timeout=2) as resp:
                body = resp.read()
                status = resp.status
        except urllib.error.HTTPError as e:
            status, body = e.code, e.read()
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as e:
            status, body, last = None, b"", repr(e)
        if status is not None:
            if accept(status, body):
                return body
            last = f"HTTP {status}: {body[:200]!r}"
        if time.monotonic() >= deadline:
            tail = f"\n{log_tail(proc)}" if proc is not None else ""
            raise TimeoutError(f"{url} did not answer as expected within {timeout}s (last: {last}){tail}")
        time.sleep(interval)


def stop_process(proc: subprocess.Popen | None, timeout: float = 5.0) -> None:
    """End ``proc``'s process group (SIGTERM, then SIGKILL after ``timeout``) and reap it. Idempotent."""
    if proc is None:
        return
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=5)
    else:
        # The leader is gone; make sure nothing it started in its group lingers.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


# ------------------------------------------------------------------------------------------------ hey


@dataclass
class HeyResult:
    """What ``hey``'s summary reports."""

    status_counts: dict[int, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    latency_percentiles: dict[int, float] = field(default_factory=dict)  # percentile -> seconds
    requests_per_second: float | None = None
    raw: str = ""

    @property
    def responses(self) -> int:
        return sum(self.status_counts.values())

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def non_2xx(self) -> int:
        return sum(n for code, n in self.status_counts.items() if not 200 <= code < 300)

    @property
    def lost(self) -> int:
        """Requests that did not get a 2xx answer (non-2xx responses plus transport errors)."""
        return self.non_2xx + self.error_count


_STATUS_RE = re.compile(r"^\s*\[(\d{3})\]\s+(\d+)\s+responses?\s*$")
_ERROR_RE = re.compile(r"^\s*\[(\d+)\]\s+(.*\S)\s*$")
_PCT_RE = re.compile(r"^\s*(\d+)%+ in ([0-9.]+) secs")
_RPS_RE = re.compile(r"^\s*Requests/sec:\s+([0-9.]+)")


def parse_hey_summary(text: str) -> HeyResult:
    """Parse hey's default (summary) output: status code and error distributions, latency percentiles."""
    result = HeyResult(raw=text)
    section = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("Status code distribution"):
            section = "status"
            continue
        if stripped.startswith("Error distribution"):
            section = "errors"
            continue
        if stripped.startswith("Latency distribution"):
            section = "latency"
            continue
        if stripped.endswith(":") and not stripped.startswith("["):
            section = None
            continue
        if m := _RPS_RE.match(line):
            result.requests_per_second = float(m.group(1))
        if section == "status" and (m := _STATUS_RE.match(line)):
            result.status_counts[int(m.group(1))] = result.status_counts.get(int(m.group(1)), 0) + int(m.group(2))
        elif section == "errors" and (m := _ERROR_RE.match(line)):
            result.errors[m.group(2)] = result.errors.get(m.group(2), 0) + int(m.group(1))
        elif section == "latency" and (m := _PCT_RE.match(line)):
            result.latency_percentiles[int(m.group(1))] = float(m.group(2))
    return result


def hey_binary() -> str:
    binary = os.environ.get("HEY_BIN") or shutil.which("hey")
    if not binary:
        raise RuntimeError("hey not found: install the Debian package `hey` (apt-get install hey) or set HEY_BIN")
    return binary


def _hey_args(
    url: str,
    *,
    duration: float | None,
    requests: int | None,
    concurrency: int,
    rate_per_worker: float | None,
    headers: Mapping[str, str] | None,
    timeout: float,
    proxy: str | None,
    extra: Sequence[str],
) -> list[str]:
    args = [hey_binary(), "-c", str(concurrency), "-t", str(timeout)]
    if duration is not None:
        args += ["-z", f"{duration}s"]
    elif requests is not None:
        args += ["-n", str(requests)]
    if rate_per_worker:
        args += ["-q", str(rate_per_worker)]
    for k, v in (headers or {}).items():
        args += ["-H", f"{k}: {v}"]
    if proxy:
        args += ["-x", proxy]
    return [*args, *extra, url]


def start_hey(
    url: str,
    *,
    duration: float | None = None,
    requests: int | None = None,
    concurrency: int = 10,
    rate_per_worker: float | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10,
    proxy: str | None = None,
    extra: Sequence[str] = (),
) -> subprocess.Popen[str]:
    """Start hey in the background (stdout captured); finish with ``finish_hey(proc)``.

    Total rate = ``concurrency * rate_per_worker`` requests per second. Keep-alive is on (hey's default).
    """
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "no_proxy")}
    return subprocess.Popen(
        _hey_args(
            url,
            duration=duration,
            requests=requests,
            concurrency=concurrency,
            rate_per_worker=rate_per_worker,
            headers=headers,
            timeout=timeout,
            proxy=proxy,
            extra=extra,
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )


def finish_hey(proc: subprocess.Popen[str], timeout: float = 120) -> HeyResult:
    """Wait for a hey started by ``start_hey`` and parse its summary; raise if it failed."""
    out, _ = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"hey exited with {proc.returncode}:\n{out}")
    return parse_hey_summary(out)


def run_hey(url: str, **kwargs) -> HeyResult:
    """Run hey in the foreground (same arguments as ``start_hey``) and return its parsed summary."""
    return finish_hey(start_hey(url, **kwargs))


__all__ += ["finish_hey", "hey_binary"]
