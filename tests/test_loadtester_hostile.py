"""Malformed requests to the load tester (issue 14, item 7), over raw sockets to the real server process: each
answers 400 with a one-line reason and the connection closed, nothing is logged as a traceback, and a refused
command is echoed back (and logged) cut to a few hundred characters."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.procs import free_port, start_process, stop_process, wait_for_http

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def loadtester(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("loadtester-hostile")
    allowlist = tmp / "allowlist.json"
    allowlist.write_text(json.dumps({"commands": ["echo allowed"]}))
    port = free_port()
    proc = start_process(
        [sys.executable, "-m", "playground.local.loadtester", f"--port={port}", f"--allowlist={allowlist}"],
        log_path=tmp / "loadtester.log",
        cwd=REPO,
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", proc=proc, timeout=10)
        yield {"port": port, "log": tmp / "loadtester.log", "proc": proc}
    finally:
        stop_process(proc)


def raw(port: int, request: bytes, *, half_close: bool = False) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` as is; (status, headers, body) of the answer. ``half_close`` ends the sending side
    after the request (a client that sent less than it announced)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(request)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                headers = dict(
                    (k.strip().lower(), v.strip())
                    for k, _, v in (h.decode("latin-1").partition(":") for h in head.split(b"\r\n")[1:])
                )
                if len(body) >= int(headers.get("content-length", "-1")) >= 0:
                    break
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def post(body: bytes, *headers: str, path: str = "/") -> bytes:
    """A POST with ``headers`` as given, or with the body's Content-Length when they set no framing."""
    if not any(h.lower().startswith(("content-length:", "transfer-encoding:")) for h in headers):
        headers = (*headers, f"Content-Length: {len(body)}")
    head = [f"POST {path} HTTP/1.1", "Host: loadtester", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


DEEP = b"[" * 100_000 + b"]" * 100_000
DEEP_OBJECT = b'{"a":' * 100_000 + b"1" + b"}" * 100_000

MALFORMED = {
    "content-length-abc": post(b"{}", "Content-Length: abc"),
    "content-length-negative": post(b"{}", "Content-Length: -2"),
    "content-length-float": post(b"{}", "Content-Length: 2.0"),
    "content-length-unicode-digits": post(b"{}", "Content-Length: \u0662".encode().decode("latin-1")),
    "content-length-conflicting": post(b"{}", "Content-Length: 2", "Content-Length: 3"),
    "content-length-huge": post(b"{}", "Content-Length: 99999999999999999999999"),
    "content-length-and-chunked": post(b"2\r\n{}\r\n0\r\n\r\n", "Content-Length: 12", "Transfer-Encoding: chunked"),
    "transfer-encoding-gzip": post(b"{}", "Transfer-Encoding: gzip"),
    "chunk-size-not-hex": post(b"zz\r\n{}\r\n0\r\n\r\n", "Transfer-Encoding: chunked"),
    "chunk-shorter-than-size": post(b"5\r\n{}\r\n0\r\n\r\n", "Transfer-Encoding: chunked"),
    "json-100k-deep-list": post(DEEP),
    "json-100k-deep-object": post(DEEP_OBJECT),
    "json-not-utf8": post(b'{"name": "\xff"}'),
    "json-5000-digit-number": post(b'{"n": ' + b"9" * 5000 + b"}"),
    "json-not-an-object": post(b"[1, 2]"),
    "json-nan": post(b"NaN"),
    "json-truncated": post(b'{"name": "x", "meta'),
    "metadata-not-an-object": post(b'{"name": "x", "metadata": "cmd"}'),
    "gate-check-deep-json": post(DEEP, path="/gate/check"),
    "healthz-content-length-abc": post(b"", "Content-Length: abc", path="/healthz"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_request_is_answered_400_on_one_line(loadtester, case):
    status, headers, body = raw(loadtester["port"], MALFORMED[case])
    assert status == 400, body[:300]
    text = body.decode()
    assert text.count("\n") <= 1 and len(text) < 1000 and text.strip()
    if not case.startswith(("json-not-an", "json-nan", "metadata-")):
        assert headers.get("connection") == "close"


def test_body_shorter_than_its_content_length_is_400_when_the_client_stops_sending(loadtester):
    status, _, body = raw(loadtester["port"], post(b'{"a": 1}', "Content-Length: 100"), half_close=True)
    assert status == 400 and b"ended after 8 of the 100 bytes" in body


def test_valid_chunked_request_is_served(loadtester):
    payload = json.dumps({"name": "podinfo", "namespace": "test", "metadata": {"cmd": "echo nope"}}).encode()
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(payload), payload)
    status, _, body = raw(loadtester["port"], post(chunked, "Transfer-Encoding: chunked"))
    assert status == 403 and b"'echo nope' is not allowed" in body


def test_a_refused_900kb_command_is_echoed_and_logged_cut(loadtester):
    command = "echo " + "x" * 900_000
    with httpx.Client(trust_env=False, timeout=30) as client:
        r = client.post(
            f"http://127.0.0.1:{loadtester['port']}/",
            json={"name": "podinfo", "namespace": "test", "metadata": {"cmd": command, "type": "bash"}},
        )
    assert r.status_code == 403
    assert len(r.text) < 1000 and "... (900,005 characters)" in r.text and "is not allowed" in r.text
    log = loadtester["log"].read_text()
    refused = [line for line in log.splitlines() if "command refused" in line]
    assert refused and all(len(line) < 1000 for line in refused)


def test_no_traceback_and_still_serving_after_every_malformed_request(loadtester):
    for request in MALFORMED.values():  # once more, whatever order the tests ran in
        raw(loadtester["port"], request)
    with httpx.Client(trust_env=False, timeout=30) as client:
        assert client.get(f"http://127.0.0.1:{loadtester['port']}/healthz").text == "OK"
    log = loadtester["log"].read_text()
    assert "Traceback" not in log and "Exception" not in log and "request failed" not in log
    assert loadtester["proc"].poll() is None
