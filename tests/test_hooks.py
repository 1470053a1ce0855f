"""Webhooks against a real local HTTP server: payload, status semantics, timeouts, retries, resolver."""

from __future__ import annotations

import pytest

from playground.hooks import call_event_webhook, call_hooks, call_webhook, hook_timeout, hooks_of_type, payload
from playground.models import Canary, CanaryWebhook, HookType, Phase
from tests.support.http_server import RecordingServer, Reply
from tests.support.procs import free_port


def make_canary(webhooks: list[dict]) -> Canary:
    return Canary.model_validate(
        {
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {
                "targetRef": {"kind": "Deployment", "name": "podinfo"},
                "service": {"port": 9898},
                "analysis": {"webhooks": webhooks},
            },
        }
    )


@pytest.fixture
def server():
    with RecordingServer() as srv:
        yield srv


def hook(url: str, **kw) -> CanaryWebhook:
    return CanaryWebhook.model_validate({"name": kw.pop("name", "h"), "url": url, **kw})


def test_payload_is_flaggers(server):
    canary = make_canary([])
    h = hook(server.url + "/", type="pre-rollout", metadata={"type": "bash", "cmd": "curl -s podinfo/"})
    ans = call_webhook(canary, h, Phase.Progressing, "abc123")
    assert ans.ok and ans.status == 200 and ans.attempts == 1 and ans.error is None
    req = server.requests[0]
    assert req.method == "POST" and req.headers["content-type"] == "application/json"
    assert req.json() == {
        "name": "podinfo",
        "namespace": "test",
        "phase": "Progressing",
        "checksum": "abc123",
        "metadata": {"type": "bash", "cmd": "curl -s podinfo/"},
    }


@pytest.mark.parametrize(
    "status,ok", [(200, True), (201, True), (202, True), (203, False), (204, False), (403, False), (500, False)]
)
def test_success_iff_status_at_most_202(server, status, ok):
    server.script("/gate", [Reply(status, "" if status == 204 else f"answer {status}")])
    ans = call_webhook(make_canary([]), hook(server.url + "/gate"), Phase.Progressing, "x")
    assert ans.status == status and ans.ok is ok
    if not ok:
        assert f"HTTP {status}" in ans.error and server.url + "/gate" in ans.error


def test_failure_body_is_kept_and_4xx_not_retried(server):
    server.script("/gate/check", [Reply(403, "Forbidden: gate closed")])
    ans = call_webhook(make_canary([]), hook(server.url + "/gate/check", retries=3), "Progressing", "x")
    assert not ans.ok and ans.attempts == 1
    assert ans.body == "Forbidden: gate closed" and "gate closed" in ans.error


def test_timeout(server):
    server.script("/slow", [Reply(200, "late", delay=1.5)])
    ans = call_webhook(make_canary([]), hook(server.url + "/slow", timeout="300ms"), Phase.Progressing, "x")
    # the server would answer 200 after 1.5 s: no status means the client gave up at its timeout
    assert not ans.ok and ans.status is None
    assert "did not answer within 0.3s" in ans.error


def test_retries_until_success(server):
    server.script("/flaky", [Reply(500, "boom"), Reply(503, "busy"), Reply(200, "fine")])
    ans = call_webhook(make_canary([]), hook(server.url + "/flaky", retries=2), Phase.Progressing, "x")
    assert ans.ok and ans.attempts == 3 and ans.body == "fine"
    assert len(server.requests_to("/flaky")) == 3


def test_retries_exhausted(server):
    server.script("/down", [Reply(500, "boom")])
    ans = call_webhook(make_canary([]), hook(server.url + "/down", retries=1), Phase.Progressing, "x")
    assert not ans.ok and ans.attempts == 2 and ans.status == 500
    assert "after 2 attempts" in ans.error


def test_unreachable_and_invalid_urls():
    dead = f"http://127.0.0.1:{free_port()}/"
    ans = call_webhook(make_canary([]), hook(dead, retries=1), Phase.Progressing, "x")
    assert not ans.ok and ans.status is None and ans.attempts == 2 and "cannot be reached" in ans.error
    ans = call_webhook(make_canary([]), hook("flagger-loadtester.prod/"), Phase.Progressing, "x")
    assert not ans.ok and ans.attempts == 0 and "invalid URL" in ans.error
    ans = call_webhook(make_canary([]), hook("http://x/", timeout="soon"), Phase.Progressing, "x")
    assert not ans.ok and "invalid duration" in ans.error


def test_resolver_maps_in_cluster_urls(server):
    seen = []

    def resolve(url):
        seen.append(url)
        return url.replace("http://flagger-loadtester.prod", server.url)

    ans = call_webhook(
        make_canary([]), hook("http://flagger-loadtester.prod/gate/approve"), "Progressing", "x", resolve=resolve
    )
    assert ans.ok and seen == ["http://flagger-loadtester.prod/gate/approve"]
    assert server.requests[0].path == "/gate/approve"

    def broken(url):
        raise KeyError("no such service")

    ans = call_webhook(make_canary([]), hook("http://nowhere.prod/"), "Progressing", "x", resolve=broken)
    assert not ans.ok and "cannot resolve URL" in ans.error


def test_call_hooks_by_type_and_stop_rules(server):
    server.script("/a", [Reply(200)])
    server.script("/b", [Reply(500, "nope")])
    server.script("/c", [Reply(200)])
    canary = make_canary(
        [
            {"name": "a", "type": "confirm-promotion", "url": server.url + "/a"},
            {"name": "b", "type": "confirm-promotion", "url": server.url + "/b"},
            {"name": "c", "type": "confirm-promotion", "url": server.url + "/c"},
            {"name": "load", "url": server.url + "/load"},  # default type: rollout
            {"name": "rb1", "type": "rollback", "url": server.url + "/b"},
            {"name": "rb2", "type": "rollback", "url": server.url + "/a"},
            {"name": "rb3", "type": "rollback", "url": server.url + "/c"},
        ]
    )
    assert [h.name for h in hooks_of_type(canary, "rollout")] == ["load"]
    assert [h.name for h in hooks_of_type(canary, HookType.rollback)] == ["rb1", "rb2", "rb3"]
    answers = call_hooks(canary, HookType.confirm_promotion, Phase.Progressing, "x")
    assert [(a.name, a.ok) for a in answers] == [("a", True), ("b", False)]
    answers = call_hooks(canary, "rollback", Phase.Progressing, "x", stop_on_failure=False, stop_on_success=True)
    assert [(a.name, a.ok) for a in answers] == [("rb1", False), ("rb2", True)]
    assert call_hooks(canary, "event", Phase.Progressing, "x") == []


def test_event_webhook_metadata(server):
    canary = make_canary([])
    ans = call_event_webhook(
        canary,
        hook(server.url + "/events", type="event"),
        Phase.Failed,
        "Canary failed! Scaling down podinfo.test",
        event_type="Warning",
        now_ms=1234,
    )
    assert ans.ok
    body = server.requests[0].json()
    assert body["phase"] == "Failed"
    assert body["metadata"] == {
        "eventMessage": "Canary failed! Scaling down podinfo.test",
        "eventType": "Warning",
        "timestamp": "1234",
    }


def test_hook_timeout_default_and_payload_phase_str():
    assert hook_timeout(hook("http://x/")) == 10.0
    assert hook_timeout(hook("http://x/", timeout="1m30s")) == 90.0
    assert payload(make_canary([]), "Waiting", "c")["phase"] == "Waiting"


def test_proxy_receives_in_cluster_url(server):
    ans = call_webhook(
        make_canary([]), hook("http://flagger-loadtester.prod/gate/check"), Phase.Progressing, "x", proxy=server.url
    )
    assert ans.ok
    assert server.requests[0].path == "http://flagger-loadtester.prod/gate/check"


@pytest.mark.integration  # starts openssl
def test_disable_tls_skips_certificate_verification_like_flagger(tmp_path):
    """disableTLS: an https webhook with a self-signed certificate is called (Flagger's InsecureSkipVerify);
    without it the same call fails on the certificate."""
    import http.server
    import ssl
    import subprocess
    import threading

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"https://127.0.0.1:{httpd.server_address[1]}/"
        canary = make_canary([{"name": "tls", "url": url, "disableTLS": True}, {"name": "strict", "url": url}])
        insecure, strict = canary.spec.analysis.webhooks
        ok = call_webhook(canary, insecure, Phase.Progressing, "c")
        assert ok.ok and ok.status == 200
        bad = call_webhook(canary, strict, Phase.Progressing, "c")
        assert not bad.ok and "certificate" in (bad.error or "").lower()
    finally:
        httpd.shutdown()
        httpd.server_close()
