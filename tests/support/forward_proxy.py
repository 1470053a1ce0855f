"""A tiny HTTP forward proxy for tests: proves that a program honours http_proxy (as every local process must,
to reach Services through the mesh), by mapping ``name:port`` targets to local ports and recording them."""

from __future__ import annotations

import threading
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler

from tests.support.http_server import QuietHTTPServer


class ForwardProxy:
    """A tiny HTTP forward proxy: maps ``hosts`` (name:port -> 127.0.0.1:port) and records target URLs."""

    def __init__(self, hosts: dict[str, int]) -> None:
        self.seen: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _forward(self):
                owner.seen.append(self.path)
                target = urllib.parse.urlsplit(self.path)
                port = hosts.get(target.netloc)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if port is None:
                    self.send_response(502)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                req = urllib.request.Request(f"http://127.0.0.1:{port}{target.path}", data=body, method=self.command)
                opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
                try:
                    with opener.open(req, timeout=10) as resp:
                        status, payload = resp.status, resp.read()
                except urllib.error.HTTPError as e:
                    status, payload = e.code, e.read()
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _forward

        self.server = QuietHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
