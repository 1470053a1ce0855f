"""A real Debian ``docker-registry`` for a test, on a free 127.0.0.1 port in its own directory.

Usage (a module-scoped fixture in the test module)::

    @pytest.fixture(scope="module")
    def registry(tmp_path_factory):
        with docker_registry(tmp_path_factory.mktemp("registry")) as url:   # http://127.0.0.1:PORT
            yield url

The registry is configured and started the way ``playground up`` does it (``playground.local.registry``), and
stopped on exit. A test that needs it fails with a clear message when the binary is missing (never skips).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from playground.local.registry import registry_args, write_config
from tests.support.procs import free_port, start_process, stop_process, wait_for_http

__all__ = ["docker_registry"]


@contextmanager
def docker_registry(workdir: Path) -> Iterator[str]:
    """Start docker-registry in ``workdir``; yields its base URL, ``http://127.0.0.1:PORT``."""
    if shutil.which("docker-registry") is None:
        pytest.fail("docker-registry is not installed: run scripts/setup.sh (apt-get install docker-registry)")
    port = free_port()
    proc = start_process(registry_args(write_config(workdir, port)), log_path=workdir / "registry.log")
    try:
        wait_for_http(f"http://127.0.0.1:{port}/v2/", proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)
