"""Run a real Prometheus (Debian ``prometheus`` binary) for a test, on a free 127.0.0.1 port in a tmp dir.

Usage::

    with PrometheusProcess(tmp_path, scrape_configs=[{"job_name": "app", "scrape_interval": "1s",
                                                       "static_configs": [{"targets": ["127.0.0.1:1234"]}]}]) as prom:
        requests.get(prom.url + "/api/v1/query", params={"query": "up"})

or ``start()`` several instances first and ``wait_ready()`` them afterwards, so they boot in parallel.
A ``web_config`` dict is written to ``web.yml`` and passed as ``--web.config.file`` (basic auth, TLS).
``PROMETHEUS_BIN`` overrides the binary. Tests that need it fail with a clear message when ``prometheus_available()`` is false (never skip).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from base64 import b64encode
from pathlib import Path
from typing import Any

import yaml

from tests.support.procs import free_port

__all__ = ["PrometheusProcess", "prometheus_binary", "prometheus_available"]


def prometheus_binary() -> str | None:
    return os.environ.get("PROMETHEUS_BIN") or shutil.which("prometheus")


def prometheus_available() -> bool:
    return prometheus_binary() is not None


class PrometheusProcess:
    """One Prometheus server process. Stop it with ``stop()`` (or use it as a context manager)."""

    def __init__(
        self,
        workdir: Path,
        *,
        scrape_configs: list[dict[str, Any]] | None = None,
        config: dict[str, Any] | None = None,
        web_config: dict[str, Any] | None = None,
        global_config: dict[str, Any] | None = None,
        extra_args: list[str] | None = None,
        basic_auth: tuple[str, str] | None = None,
    ) -> None:
        """``config`` is a whole prometheus.yml; otherwise one is built from ``global_config`` and
        ``scrape_configs``. ``basic_auth`` is the (user, password) the readiness probe should use when
        ``web_config`` protects the server."""
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._config = config or {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", **(global_config or {})},
            "scrape_configs": scrape_configs or [],
        }
        self._web_config = web_config
        self._extra_args = list(extra_args or [])
        self._basic_auth = basic_auth
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / "prometheus.log"

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> PrometheusProcess:
        binary = prometheus_binary()
        if binary is None:
            raise RuntimeError("prometheus binary not found: apt-get install prometheus, or set PROMETHEUS_BIN")
        cfg = self.workdir / "prometheus.yml"
        cfg.write_text(yaml.safe_dump(self._config, sort_keys=False))
        args = [
            binary,
            f"--config.file={cfg}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        if self._web_config is not None:
            web = self.workdir / "web.yml"
            web.write_text(yaml.safe_dump(self._web_config, sort_keys=False))
            args.append(f"--web.config.file={web}")
        args += self._extra_args
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            args, stdout=self._log, stderr=subprocess.STDOUT, cwd=self.workdir, start_new_session=True
        )
        return self

    def wait_ready(self, timeout: float = 20.0) -> PrometheusProcess:
        """Wait until ``/-/ready`` answers 200; raise with the log tail if the process dies or times out."""
        deadline = time.monotonic() + timeout
        req = urllib.request.Request(self.url + "/-/ready")
        if self._basic_auth:
            token = b64encode(f"{self._basic_auth[0]}:{self._basic_auth[1]}".encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited early:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(req, timeout=1) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"prometheus not ready after {timeout}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None
        log = getattr(self, "_log", None)
        if log is not None and not log.closed:
            log.close()

    def __enter__(self) -> PrometheusProcess:
        self.start()
        try:
            return self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- helpers -------------------------------------------------------------------------------------

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def wait_for(self, query: str, predicate=lambda result: bool(result), timeout: float = 20.0) -> list:
        """Poll an instant query until ``predicate(data.result)`` holds; return that result."""
        import json
        from urllib.parse import urlencode

        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            req = urllib.request.Request(f"{self.url}/api/v1/query?{urlencode({'query': query})}")
            if self._basic_auth:
                token = b64encode(f"{self._basic_auth[0]}:{self._basic_auth[1]}".encode()).decode()
                req.add_header("Authorization", f"Basic {token}")
            try:
                with urllib.request.urlopen(req, timeout=2) as r:
                    last = json.load(r)["data"]["result"]
                if predicate(last):
                    return last
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        raise TimeoutError(
            f"query {query!r} did not satisfy the condition in {timeout}s (last result {last!r})\n{self.log_tail()}"
        )
