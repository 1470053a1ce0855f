"""The podinfo-compatible demo app: real processes on free ports, real HTTP."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from playground.local.podinfo import jwt_decode, jwt_encode, parse_args
from tests.support.forward_proxy import ForwardProxy
from tests.support.procs import free_port, start_process, stop_process, wait_for_http

# every test here starts a process (Envoy, git, the workload programs, lint-imports...)
pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
NO_PROXY_ENV = {k: "" for k in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")}
PODINFO_ENV_KEYS = (
    "PODINFO_ERROR_RATE",
    "PODINFO_EXTRA_LATENCY_MS",
    "PODINFO_BACKEND_URL",
    "PODINFO_UI_COLOR",
    "PODINFO_UI_MESSAGE",
    "PODINFO_VERSION",
    "PODINFO_RANDOM_ERROR",
)


def start_podinfo(tmp_path: Path, *flags: str, env: dict[str, str] | None = None, name: str = "podinfo"):
    """Start a replica; returns (process, base URL)."""
    port = free_port()
    full_env = {**NO_PROXY_ENV, **{k: "" for k in PODINFO_ENV_KEYS}, **(env or {})}
    proc = start_process(
        [sys.executable, "-m", "playground.local.podinfo", f"--port={port}", *flags],
        log_path=tmp_path / f"{name}-{port}.log",
        env=full_env,
        cwd=REPO,
    )
    url = f"http://127.0.0.1:{port}"
    wait_for_http(url + "/healthz", proc=proc, timeout=10)
    return proc, url


@pytest.fixture
def client():
    with httpx.Client(trust_env=False, timeout=10) as c:
        yield c


@pytest.fixture(scope="module")
def podinfo(tmp_path_factory):
    """One plain replica shared by the read-only tests."""
    tmp = tmp_path_factory.mktemp("podinfo")
    proc, url = start_podinfo(
        tmp,
        "./podinfo",
        "--level=info",
        "--random-delay=false",
        "--random-error=false",
        "--port-metrics=9797",
        "--grpc-port=9999",
        "--version",
        "6.7.1",
        env={"PODINFO_UI_COLOR": "#b5006b", "PODINFO_UI_MESSAGE": "hello from test"},
    )
    yield url
    stop_process(proc)


# ---------------------------------------------------------------------------------------------- flags


def test_flags_follow_pflag_and_env_precedence():
    s = parse_args(
        [
            "./podinfo",
            "--port=9898",
            "--level=debug",
            "--random-delay=false",
            "--random-error",
            "--backend-url",
            "http://a/echo",
            "--backend-url=http://b/echo",
            "--grpc-port=9999",
            "--no-such-flag=1",
            "--ui-color",
            "#fff",
        ],
        environ={
            "PODINFO_UI_COLOR": "#000",
            "PODINFO_UI_MESSAGE": "hi",
            "PODINFO_VERSION": "1.0.0",
            "PODINFO_ERROR_RATE": "0.25",
            "PODINFO_EXTRA_LATENCY_MS": "20",
        },
    )
    assert s.port == 9898 and s.level == "debug"
    assert s.random_delay is False and s.random_error is True
    assert s.backend_url == ["http://a/echo", "http://b/echo"]
    assert s.ui_color == "#fff"  # the flag wins over PODINFO_UI_COLOR
    assert s.message == "hi" and s.version == "1.0.0"
    assert s.error_rate == 0.25 and s.extra_latency_ms == 20
    assert s.unknown == ["--no-such-flag=1"]
    assert parse_args([], environ={"PODINFO_BACKEND_URL": "http://x/echo http://y/echo"}).backend_url == [
        "http://x/echo",
        "http://y/echo",
    ]
    assert parse_args(["-v"], environ={}).print_version
    assert parse_args([], environ={}).message == "greetings from podinfo v6.7.0"
    with pytest.raises(ValueError, match="error-rate"):
        parse_args(["--error-rate=2"], environ={})


def test_jwt_roundtrip_and_tamper_detection():
    token = jwt_encode({"name": "x", "iss": "podinfo", "exp": int(time.time()) + 60}, "s3cret")
    assert jwt_decode(token, "s3cret")["name"] == "x"
    with pytest.raises(ValueError, match="signature"):
        jwt_decode(token, "other")
    with pytest.raises(ValueError, match="expired"):
        jwt_decode(jwt_encode({"exp": 1}, "k"), "k")


# ------------------------------------------------------------------------------------------ endpoints


def test_info_version_and_probes(podinfo, client):
    r = client.get(podinfo + "/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    info = r.json()
    assert set(info) >= {
        "hostname",
        "version",
        "revision",
        "color",
        "logo",
        "message",
        "goos",
        "goarch",
        "runtime",
        "num_goroutine",
        "num_cpu",
    }
    assert info["version"] == "6.7.1" and info["color"] == "#b5006b" and info["message"] == "hello from test"
    assert client.get(podinfo + "/api/info").json()["version"] == "6.7.1"
    assert client.get(podinfo + "/version").json() == {"commit": "local", "version": "6.7.1"}
    assert client.get(podinfo + "/healthz").json() == {"status": "OK"}
    assert client.get(podinfo + "/readyz").json() == {"status": "OK"}
    assert client.get(podinfo + "/nope").status_code == 404
    assert client.delete(podinfo + "/version").status_code == 405


def test_browser_gets_an_html_page(podinfo, client):
    r = client.get(podinfo + "/", headers={"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "hello from test" in r.text and "6.7.1" in r.text and "#b5006b" in r.text


def test_status_delay_headers_env(podinfo, client):
    r = client.get(podinfo + "/status/418")
    assert r.status_code == 418 and r.json() == {"status": 418}
    assert client.post(podinfo + "/status/503").status_code == 503
    started = time.monotonic()
    r = client.get(podinfo + "/delay/1")
    assert r.json() == {"delay": 1} and time.monotonic() - started >= 1.0
    headers = client.get(podinfo + "/headers", headers={"X-Test": "yes"}).json()
    assert headers["X-Test"] == ["yes"] and headers["X-Api-Version"] == ["6.7.1"]
    env = client.get(podinfo + "/env").json()
    assert isinstance(env, list) and "PODINFO_UI_COLOR=#b5006b" in env


def test_token_issue_and_validate(podinfo, client):
    r = client.post(podinfo + "/token", content=b"test")
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"token", "expires_at"} and body["expires_at"].endswith("Z")
    header_b64, claims_b64, sig = body["token"].split(".")
    pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
    assert json.loads(base64.urlsafe_b64decode(pad(header_b64))) == {"alg": "HS256", "typ": "JWT"}
    claims = json.loads(base64.urlsafe_b64decode(pad(claims_b64)))
    assert claims["name"] == "test" and claims["iss"] == "podinfo" and claims["exp"] > time.time()
    ok = client.get(podinfo + "/token/validate", headers={"Authorization": f"Bearer {body['token']}"})
    assert ok.status_code == 200 and ok.json()["token_name"] == "test"
    assert client.get(podinfo + "/token/validate").status_code == 401
    bad = client.get(podinfo + "/token/validate", headers={"Authorization": f"Bearer {body['token']}x"})
    assert bad.status_code == 401
    assert client.post(podinfo + "/token").json()["token"].count(".") == 2  # anonymous


def test_echo_without_backend_echoes_the_body(podinfo, client):
    r = client.post(podinfo + "/echo", content=b"ping")
    assert r.status_code == 202 and r.content == b"ping" and r.headers["x-color"] == "#b5006b"
    assert client.put(podinfo + "/api/echo/sub/path", content=b"pong").content == b"pong"


def test_http11_keepalive_and_http10(podinfo):
    import http.client

    host, port = podinfo.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    for path in ("/version", "/healthz", "/status/500", "/api/info"):
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        assert len(body) == int(resp.headers["Content-Length"])
    conn.request("POST", "/echo", body=b"x" * 5000)
    assert conn.getresponse().read() == b"x" * 5000
    conn.close()
    # chunked request body (what a proxy may send)
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    conn.request("POST", "/echo", body=iter([b"ab", b"cd"]), encode_chunked=True)
    assert conn.getresponse().read() == b"abcd"
    conn.close()


def test_metrics_exposition(tmp_path, client):
    proc, url = start_podinfo(tmp_path)
    try:
        for _ in range(3):
            client.get(url + "/")
        client.get(url + "/status/503")
        text = client.get(url + "/metrics").text
    finally:
        stop_process(proc)
    assert "# TYPE http_request_duration_seconds histogram" in text
    assert "# TYPE http_requests_total counter" in text
    assert 'http_requests_total{method="GET",path="root",status="200"} 3' in text
    assert 'http_requests_total{method="GET",path="status",status="503"} 1' in text
    assert 'http_request_duration_seconds_bucket{method="GET",path="root",status="200",le="+Inf"} 3' in text
    assert 'http_request_duration_seconds_count{method="GET",path="status",status="503"} 1' in text


# ------------------------------------------------------------------------------------- readiness


def test_readyz_enable_disable(tmp_path, client):
    proc, url = start_podinfo(tmp_path)
    try:
        assert client.post(url + "/readyz/disable").status_code == 202
        assert client.get(url + "/readyz").status_code == 503
        assert client.get(url + "/healthz").status_code == 200
        assert client.get(url + "/readyz/enable").status_code == 202  # GET accepted too
        assert client.get(url + "/readyz").status_code == 200
    finally:
        stop_process(proc)
    proc, url = start_podinfo(tmp_path, "--unready")
    try:
        assert client.get(url + "/readyz").status_code == 503
    finally:
        stop_process(proc)


# ------------------------------------------------------------------------------------ fault injection


def test_error_rate_is_exact_and_spares_probes(tmp_path, client):
    proc, url = start_podinfo(tmp_path, env={"PODINFO_ERROR_RATE": "0.05"})
    try:
        codes = Counter()
        for i in range(200):
            codes[client.get(url + "/").status_code] += 1
            if i % 10 == 0:  # probes and scrapes neither fail nor consume the schedule
                assert client.get(url + "/healthz").status_code == 200
                assert client.get(url + "/readyz").status_code == 200
                assert client.get(url + "/metrics").status_code == 200
        assert codes == {200: 190, 500: 10}
        text = client.get(url + "/metrics").text
        assert 'http_requests_total{method="GET",path="root",status="500"} 10' in text
    finally:
        stop_process(proc)


def test_error_rate_exact_under_concurrency(tmp_path):
    proc, url = start_podinfo(tmp_path, env={"PODINFO_ERROR_RATE": "0.3"})
    results: list[int] = []
    lock = threading.Lock()

    def worker():
        with httpx.Client(trust_env=False, timeout=10) as c:
            for _ in range(25):
                code = c.get(url + "/api/info").status_code
                with lock:
                    results.append(code)

    try:
        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        stop_process(proc)
    assert Counter(results) == {200: 70, 500: 30}


def test_extra_latency_spares_probes(tmp_path, client):
    proc, url = start_podinfo(tmp_path, env={"PODINFO_EXTRA_LATENCY_MS": "3000"})
    try:
        # a 3 s delay on requests, none on probes: a 1 s client timeout tells them apart
        with pytest.raises(httpx.TimeoutException):
            client.get(url + "/", timeout=1.0)
        assert client.get(url + "/healthz", timeout=1.0).status_code == 200
    finally:
        stop_process(proc)


def test_random_error_is_about_one_in_three(tmp_path, client):
    proc, url = start_podinfo(tmp_path, "--random-error")
    try:
        codes = Counter(client.get(url + "/").status_code for _ in range(300))
        assert all(client.get(url + "/readyz").status_code == 200 for _ in range(20))
    finally:
        stop_process(proc)
    failures = sum(n for code, n in codes.items() if code != 200)
    assert set(codes) <= {200, 400, 409, 500}
    assert 55 <= failures <= 145, codes


def test_random_delay_ms(tmp_path, client):
    proc, url = start_podinfo(
        tmp_path, "--random-delay", "--random-delay-unit=ms", "--random-delay-min=50", "--random-delay-max=60"
    )
    try:
        t0 = time.monotonic()
        client.get(url + "/")
        assert time.monotonic() - t0 >= 0.05  # delayed by at least the minimum
    finally:
        stop_process(proc)


# ------------------------------------------------------------------------------- echo via the proxy


def test_echo_forwards_to_backend_through_proxy_env(tmp_path, client):
    backend, backend_url = start_podinfo(tmp_path, "--version=2.0.0", name="backend")
    proxy = ForwardProxy({"backend.prod:9898": int(backend_url.rsplit(":", 1)[1])})
    frontend = None
    try:
        frontend, frontend_url = start_podinfo(
            tmp_path,
            "--version=1.0.0",
            name="frontend",
            env={
                "PODINFO_BACKEND_URL": "http://backend.prod:9898/echo",
                "HTTP_PROXY": proxy.url,
                "http_proxy": proxy.url,
                "NO_PROXY": "127.0.0.1,localhost",
                "no_proxy": "127.0.0.1,localhost",
            },
        )
        r = client.post(frontend_url + "/echo", content=b"hello backend")
        assert r.status_code == 200 and r.json() == ["hello backend"]
        assert proxy.seen == ["http://backend.prod:9898/echo"]
        # a backend error is reported in the payload, as podinfo does
        proxy_only = start_podinfo(
            tmp_path,
            name="frontend2",
            env={
                "PODINFO_BACKEND_URL": "http://missing.prod:9898/echo",
                "HTTP_PROXY": proxy.url,
                "http_proxy": proxy.url,
            },
        )
        try:
            out = client.post(proxy_only[1] + "/api/echo", content=b"x").json()
            assert out == ["backend http://missing.prod:9898/echo response status code 502"]
        finally:
            stop_process(proxy_only[0])
    finally:
        stop_process(frontend)
        stop_process(backend)
        proxy.close()


# ------------------------------------------------------------------------------------------ lifecycle


def test_sigterm_finishes_inflight_requests_and_exits_zero(tmp_path):
    proc, url = start_podinfo(tmp_path)
    result: dict[str, object] = {}

    def slow():
        with httpx.Client(trust_env=False, timeout=10) as c:
            result["r"] = c.get(url + "/delay/1")

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGTERM)
    t.join(5)
    assert proc.wait(5) == 0
    assert result["r"].status_code == 200 and result["r"].json() == {"delay": 1}
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/healthz", trust_env=False, timeout=2)


def test_starts_light(tmp_path):
    """A replica starts from the standard library and the playground's own small modules only (what keeps a
    rollout's replica start cheap): no third-party package is imported, and it answers /readyz."""
    probe = subprocess.run(
        [sys.executable, "-c", "import sys, playground.local.podinfo; print('\\n'.join(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        env=NO_PROXY_ENV,
        cwd=REPO,
        check=True,
    )
    top = {name.split(".")[0] for name in probe.stdout.split()}
    # beside the standard library: the playground itself and what site.py loads for every interpreter (the
    # editable install's path finder, setuptools' distutils shim: private names) and sitecustomize
    site = {n for n in top if n.startswith("_")} | {"playground", "sitecustomize"}
    third_party = sorted(top - set(sys.stdlib_module_names) - site)
    assert third_party == [], third_party
    port = free_port()
    proc = start_process(
        [sys.executable, "-m", "playground.local.podinfo", f"--port={port}"],
        log_path=tmp_path / "fast.log",
        env=NO_PROXY_ENV,
        cwd=REPO,
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/readyz", proc=proc, interval=0.01)
    finally:
        stop_process(proc)
