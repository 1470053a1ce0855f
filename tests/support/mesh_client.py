"""A client that keeps requesting a URL through the local mesh proxy in a thread, counting answers: the load of the
live tests that assert no request failed during a release, a rollback or a revert."""

from __future__ import annotations

import threading
import time

import httpx


class MeshClient:
    """``with MeshClient(mesh_proxy, url) as c: ...`` then ``c.ok`` (200 answers) and ``c.failures`` (anything
    else, each with its time of day)."""

    def __init__(self, proxy: str, url: str, pause: float = 0.05):
        self.proxy, self.url, self.pause = proxy, url, pause
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(proxy=self.proxy, trust_env=False, timeout=10) as c:
            while not self._stop.is_set():
                try:
                    r = c.get(self.url)
                    if r.status_code == 200:
                        self.ok += 1
                    else:
                        self.failures.append(f"{time.strftime('%X')} HTTP {r.status_code}: {r.text[:100]}")
                except httpx.HTTPError as e:
                    self.failures.append(f"{time.strftime('%X')} {type(e).__name__}: {e}")
                self._stop.wait(self.pause)

    def __enter__(self) -> MeshClient:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=15)
