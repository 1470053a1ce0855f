"""A real local HTTP server for tests: records every request and answers with scripted responses.

    with RecordingServer() as srv:
        srv.script("/hook", [Reply(500), Reply(500), Reply(200, "ok")])   # one reply per call, last repeats
        httpx.post(srv.url + "/hook", json={...})
        srv.requests[0].json()

A ``Reply`` can delay its answer (``delay=`` seconds) to exercise client timeouts. Unscripted paths answer 200.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["QuietHTTPServer", "RecordedRequest", "RecordingServer", "Reply"]


class QuietHTTPServer(ThreadingHTTPServer):
    """The test suite's HTTP servers: a client that drops its connection (a timeout test, a closed pool) is not
    an error to print. The stdlib prints its traceback to stderr from the server's thread, and when that happens
    after the test that caused it ended it lands in the log outside any test; other errors are still printed."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):  # reset, broken pipe, aborted
            return
        super().handle_error(request, client_address)


@dataclass
class Reply:
    status: int = 200
    body: str | bytes = ""
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class RecordingServer:
    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self._scripts: dict[str, list[Reply]] = {}
        self._handlers: dict[str, Callable[[RecordedRequest], Reply]] = {}
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path
                rec = RecordedRequest(self.command, path, {k.lower(): v for k, v in self.headers.items()}, body)
                reply = owner._reply_for(rec)
                if reply.delay:
                    time.sleep(reply.delay)
                data = reply.body.encode() if isinstance(reply.body, str) else reply.body
                try:
                    self.send_response(reply.status)
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout tests)

            do_GET = do_POST = do_PUT = _handle

        self._server = QuietHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def _reply_for(self, rec: RecordedRequest) -> Reply:
        route = rec.path.split("?", 1)[0]
        with self._lock:
            self.requests.append(rec)
            handler = self._handlers.get(route)
            if handler is None:
                script = self._scripts.get(route)
                if script:
                    return script.pop(0) if len(script) > 1 else script[0]
                return Reply(200)
        return handler(rec)

    def script(self, path: str, replies: list[Reply]) -> None:
        """Answer the next calls to ``path`` with ``replies`` in order; the last one repeats."""
        with self._lock:
            self._scripts[path] = list(replies)

    def handle(self, path: str, handler: Callable[[RecordedRequest], Reply]) -> None:
        """Compute the reply for ``path`` with ``handler(request)``."""
        with self._lock:
            self._handlers[path] = handler

    def requests_to(self, path: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path.split("?", 1)[0] == path]

    def start(self) -> RecordingServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> RecordingServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
