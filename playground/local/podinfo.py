"""A podinfo-compatible demo app for the local playground.

The local backend runs each replica of a Deployment whose image is ``stefanprodan/podinfo`` (or
``ghcr.io/stefanprodan/podinfo``) as this program. It speaks the HTTP API of stefanprodan/podinfo closely
enough for Flagger-style conformance tests, load tests and the demo frontend/backend pair:

==============================  ===========================================================================
``GET /``                       runtime info JSON; an HTML page when the User-Agent starts with ``Mozilla``
``GET /api/info``               runtime info JSON (hostname, version, revision, color, logo, message, ...)
``GET /version``                ``{"commit": ..., "version": ...}``
``GET /healthz`` ``/readyz``    probes (503 when unhealthy / not ready)
``POST /readyz/enable|disable`` toggle readiness (202); GET is accepted too
``/status/{code}``              answers with that status code
``GET /delay/{seconds}``        waits, then ``{"delay": seconds}``
``POST /token``                 ``{"token": <HS256 JWT>, "expires_at": ...}``, valid for one minute
``GET /token/validate``         validates ``Authorization: Bearer <token>``
``/echo`` ``/api/echo``         echoes the body (202); with backend URLs, POSTs the body to every backend
                                and answers a JSON list of their responses, as podinfo does
``/headers`` ``/env``           request headers (JSON object of lists) / environment (JSON list)
``GET /metrics``                Prometheus text: ``http_request_duration_seconds`` histogram and
                                ``http_requests_total`` counter
==============================  ===========================================================================

Flags follow podinfo's (pflag syntax: ``--name=value``, ``--name value``, ``--flag`` / ``--flag=false`` for
booleans). Every flag can also be set with an environment variable ``PODINFO_<FLAG>`` (upper case, dashes
as underscores) as podinfo's viper binding does, e.g. ``PODINFO_UI_COLOR``, ``PODINFO_UI_MESSAGE``,
``PODINFO_BACKEND_URL`` (whitespace/comma separated list); a flag on the command line wins over the
environment. Flags that mean nothing here (``--level`` aside: it sets the log level) are accepted and
ignored: ``--port-metrics``, ``--grpc-port``, ``--h2c``, ``--stress-cpu``, ... Unknown flags are reported
on stderr and ignored rather than fatal, so a Deployment's podinfo command line always starts.

``--version X`` (or ``PODINFO_VERSION``) sets the version reported by the API; the node agent passes the
image tag. Plain ``--version`` / ``-v`` prints the version and exits, as podinfo does.

Fault injection
---------------
* ``--random-error``: as podinfo, one request in three (at random) answers 500, 400 or 409.
* ``--random-delay``: as podinfo, each request first sleeps a random whole number of units in
  ``[--random-delay-min, --random-delay-max)`` (defaults 0 and 5), unit ``--random-delay-unit`` (``s`` or
  ``ms``, default ``s``).
* ``PODINFO_ERROR_RATE`` (``--error-rate``, a fraction 0..1): deterministic errors. The i-th eligible
  request (i = 1, 2, ...) answers 500 iff ``floor(i*rate) > floor((i-1)*rate)``, so exactly ``rate`` of
  every ``1/rate`` requests fail (0.05 over 200 requests: exactly 10 failures). Computed with exact
  fractions.
* ``PODINFO_EXTRA_LATENCY_MS`` (``--extra-latency-ms``): added to every eligible request.

Probes (``/healthz``, ``/readyz``, ``/readyz/*``) and ``/metrics`` are never delayed nor failed by any of
these (unlike podinfo's ``--random-error``/``--random-delay``, which also hit probes: here a replica must
stay ready and scrapeable while it is "sick", which is what the demos need), and they do not consume the
deterministic error counter.

Serving: a threaded stdlib HTTP/1.1 server with keep-alive and exact Content-Length, listening on
``--host`` (default 127.0.0.1: the playground is local). SIGTERM/SIGINT stop accepting connections, let
in-flight requests finish (up to ``--http-server-shutdown-timeout``, default 5s) and exit 0.

Run: ``python -m playground.local.podinfo --port=9898 [--level=info] [--random-error] [--version 6.7.0]``
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import platform
import random
import re
import signal
import socket
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from playground.durations import parse_duration

DEFAULT_VERSION = "6.7.0"
MAX_BODY = 4 * 1024 * 1024
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)  # Prometheus DefBuckets

# ------------------------------------------------------------------------------------------------ flags

_BOOL, _STR, _INT, _LIST, _DUR, _FRAC, _FLOAT = "bool", "str", "int", "list", "duration", "fraction", "float"

#: podinfo's flags (name -> (kind, default)); the last two are this playground's deterministic knobs.
FLAGS: dict[str, tuple[str, Any]] = {
    "host": (_STR, "127.0.0.1"),
    "port": (_INT, 9898),
    "secure-port": (_STR, "0"),
    "port-metrics": (_INT, 0),
    "grpc-port": (_INT, 0),
    "grpc-service-name": (_STR, "podinfo"),
    "level": (_STR, "info"),
    "backend-url": (_LIST, []),
    "http-client-timeout": (_DUR, "2m"),
    "http-server-timeout": (_DUR, "30s"),
    "http-server-shutdown-timeout": (_DUR, "5s"),
    "server-shutdown-timeout": (_DUR, "5s"),
    "data-path": (_STR, "/data"),
    "config-path": (_STR, ""),
    "cert-path": (_STR, "/data/cert"),
    "config": (_STR, "config.yaml"),
    "ui-path": (_STR, "./ui"),
    "ui-logo": (_STR, ""),
    "ui-color": (_STR, "#34577c"),
    "ui-message": (_STR, ""),  # default: "greetings from podinfo v<version>"
    "h2c": (_BOOL, False),
    "random-delay": (_BOOL, False),
    "random-delay-unit": (_STR, "s"),
    "random-delay-min": (_INT, 0),
    "random-delay-max": (_INT, 5),
    "random-error": (_BOOL, False),
    "unhealthy": (_BOOL, False),
    "unready": (_BOOL, False),
    "stress-cpu": (_INT, 0),
    "stress-memory": (_INT, 0),
    "cache-server": (_STR, ""),
    "jwt-secret": (_STR, "podinfo"),
    "otel-service-name": (_STR, ""),
    "revision": (_STR, "local"),
    "version": (_STR, DEFAULT_VERSION),
    "error-rate": (_FRAC, "0"),
    "extra-latency-ms": (_FLOAT, 0.0),
}
_SHORT = {"v": "version"}


def _parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "t", "true", "yes", "y", "on"):
        return True
    if value in ("0", "f", "false", "no", "n", "off", ""):
        return False
    raise ValueError(f"invalid boolean {text!r}: use true or false")


def _convert(name: str, kind: str, raw: Any) -> Any:
    try:
        if kind == _BOOL:
            return raw if isinstance(raw, bool) else _parse_bool(str(raw))
        if kind == _INT:
            return int(str(raw).strip())
        if kind == _FLOAT:
            return float(str(raw).strip() or 0)
        if kind == _LIST:
            if isinstance(raw, list):
                return raw
            return [p for p in re.split(r"[\s,]+", str(raw)) if p]
        if kind == _DUR:
            return parse_duration(raw, allow_plain=True)
        if kind == _FRAC:
            rate = Fraction(str(raw).strip() or "0")
            if not 0 <= rate <= 1:
                raise ValueError("must be a fraction between 0 and 1")
            return rate
        return str(raw)
    except (ValueError, ZeroDivisionError) as exc:
        raise ValueError(f"invalid value {raw!r} for --{name}: {exc}") from None


@dataclass
class Settings:
    """Resolved configuration (flag > ``PODINFO_*`` environment > default)."""

    values: dict[str, Any]
    unknown: list[str] = field(default_factory=list)
    print_version: bool = False

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name.replace("_", "-")]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def message(self) -> str:
        return self.values["ui-message"] or f"greetings from podinfo v{self.values['version']}"


def parse_args(argv: list[str], environ: dict[str, str] | None = None) -> Settings:
    """Parse podinfo's command line the way pflag does, then fill the rest from ``PODINFO_*`` variables.

    Tokens that are not flags (such as the program path ``./podinfo`` a Deployment's command starts with)
    are ignored; unknown flags are collected in ``Settings.unknown`` rather than rejected.
    """
    env = os.environ if environ is None else environ
    given: dict[str, Any] = {}
    unknown: list[str] = []
    print_version = False
    i = 0
    while i < len(argv):
        token = argv[i]
        i += 1
        if token == "--":
            break
        if not token.startswith("-") or token == "-":
            continue
        name, eq, value = token.lstrip("-").partition("=")
        name = _SHORT.get(name, name) if not token.startswith("--") else name
        if name == "version" and not eq:
            # podinfo's --version/-v prints the version; ours also takes a value: "--version 6.7.0"
            if i < len(argv) and not argv[i].startswith("-"):
                given["version"] = argv[i]
                i += 1
            else:
                print_version = True
            continue
        spec = FLAGS.get(name)
        if spec is None:
            unknown.append(token)
            if not eq and i < len(argv) and not argv[i].startswith("-"):
                unknown.append(argv[i])
                i += 1
            continue
        kind = spec[0]
        if not eq:
            if kind == _BOOL:
                value = "true"
            elif i < len(argv):
                value = argv[i]
                i += 1
            else:
                raise ValueError(f"flag needs an argument: --{name}")
        if kind == _LIST and name in given:
            given[name] = given[name] + _convert(name, kind, value)
        else:
            given[name] = _convert(name, kind, value)
    values: dict[str, Any] = {}
    for name, (kind, default) in FLAGS.items():
        if name in given:
            values[name] = given[name]
            continue
        env_value = env.get("PODINFO_" + name.upper().replace("-", "_"))
        values[name] = _convert(name, kind, env_value if env_value not in (None, "") else default)
    return Settings(values, unknown, print_version)


# ---------------------------------------------------------------------------------------------- metrics


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Metrics:
    """The RED metrics podinfo exports, in Prometheus text exposition format 0.0.4."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hist: dict[tuple[str, str, str], list[float]] = {}  # buckets..., sum, count
        self._count: dict[tuple[str, str, str], int] = {}

    def observe(self, method: str, path: str, status: int, seconds: float) -> None:
        key = (method, path, str(status))
        with self._lock:
            h = self._hist.get(key)
            if h is None:
                h = self._hist[key] = [0.0] * (len(DURATION_BUCKETS) + 2)
            for idx, bound in enumerate(DURATION_BUCKETS):
                if seconds <= bound:
                    h[idx] += 1
            h[-2] += seconds
            h[-1] += 1
            self._count[key] = self._count.get(key, 0) + 1

    def render(self) -> str:
        out = [
            "# HELP http_request_duration_seconds Seconds spent serving HTTP requests.",
            "# TYPE http_request_duration_seconds histogram",
        ]
        with self._lock:
            hist = {k: list(v) for k, v in self._hist.items()}
            counts = dict(self._count)
        for (method, path, status), h in sorted(hist.items()):
            labels = f'method="{_label_value(method)}",path="{_label_value(path)}",status="{status}"'
            for idx, bound in enumerate(DURATION_BUCKETS):
                out.append(f'http_request_duration_seconds_bucket{{{labels},le="{bound:g}"}} {int(h[idx])}')
            out.append(f'http_request_duration_seconds_bucket{{{labels},le="+Inf"}} {int(h[-1])}')
            out.append(f"http_request_duration_seconds_sum{{{labels}}} {h[-2]!r}")
            out.append(f"http_request_duration_seconds_count{{{labels}}} {int(h[-1])}")
        out += ["# HELP http_requests_total The total number of HTTP requests.", "# TYPE http_requests_total counter"]
        for (method, path, status), n in sorted(counts.items()):
            out.append(
                f'http_requests_total{{method="{_label_value(method)}",path="{_label_value(path)}",'
                f'status="{status}"}} {n}'
            )
        return "\n".join(out) + "\n"


# -------------------------------------------------------------------------------------------------- JWT


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def jwt_encode(claims: dict[str, Any], secret: str) -> str:
    """An HS256 JSON Web Token, as podinfo's ``/token`` issues."""
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode("ascii")
    signature = hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64url(signature)}"


def jwt_decode(token: str, secret: str, *, now: float | None = None) -> dict[str, Any]:
    """Verify an HS256 token's signature and expiry; returns its claims or raises ValueError."""
    try:
        header_b64, payload_b64, sig_b64 = token.split(".")
        header = json.loads(_b64url_decode(header_b64))
        claims = json.loads(_b64url_decode(payload_b64))
        signature = _b64url_decode(sig_b64)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"token is malformed: {exc}") from None
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        raise ValueError("invalid signing method")
    expected = hmac.new(secret.encode(), f"{header_b64}.{payload_b64}".encode("ascii"), hashlib.sha256).digest()
    if not hmac.compare_digest(signature, expected):
        raise ValueError("signature is invalid")
    if not isinstance(claims, dict):
        raise ValueError("token is malformed: claims are not an object")
    exp = claims.get("exp")
    if isinstance(exp, (int, float)) and (time.time() if now is None else now) > exp:
        raise ValueError("token is expired")
    return claims


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat().replace("+00:00", "Z")


# ----------------------------------------------------------------------------------------------- server

Response = tuple[int, dict[str, str], bytes]

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>podinfo v{version}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body {{ margin:0; height:100vh; display:flex; align-items:center; justify-content:center;
        background:{color}; color:#fff; font-family:system-ui,-apple-system,sans-serif; transition:background .5s }}
 main {{ text-align:center }} h1 {{ font-size:2.4em; margin:.2em }} p {{ opacity:.85; margin:.3em }}
</style></head>
<body><main>
 <h1 id="message">{message}</h1>
 <p>version <b id="version">{version}</b> &middot; revision <span id="revision">{revision}</span></p>
 <p>served by <span id="hostname">{hostname}</span></p>
</main>
<script>
 // poll the API so a canary release is visible live: the page changes colour/version as traffic shifts
 setInterval(function () {{
   fetch("api/info", {{cache: "no-store"}}).then(function (r) {{ return r.ok ? r.json() : null; }})
   .then(function (i) {{ if (!i) return;
     document.body.style.background = i.color;
     ["message", "version", "revision", "hostname"].forEach(function (k) {{
       document.getElementById(k).textContent = i[k]; }});
     document.title = "podinfo v" + i.version; }}).catch(function () {{}});
 }}, 2000);
</script></body></html>
"""


def _html_escape(text: str) -> str:
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


class Podinfo:
    """State and request handlers of one podinfo replica (independent of the HTTP plumbing)."""

    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.healthy = not settings.unhealthy
        self.ready = not settings.unready
        self.hostname = os.environ.get("HOSTNAME") or socket.gethostname()
        self.metrics = Metrics()
        self._fault_lock = threading.Lock()
        self._eligible = 0  # requests that passed through fault injection so far
        self._rng = random.Random()
        self._opener: urllib.request.OpenerDirector | None = (
            None  # urllib opener for /echo backends, built on first use (honours *_proxy env)
        )
        # routes: exact path -> (methods, label, handler, exempt-from-faults)
        self.routes: dict[str, tuple[frozenset[str], str, Callable[..., Response], bool]] = {}
        get, post = frozenset({"GET"}), frozenset({"POST"})
        anything = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
        self._add("/", get, "root", self.h_index)
        self._add("/api/info", get, "api_info", self.h_info)
        self._add("/version", get, "version", self.h_version)
        self._add("/healthz", get, "healthz", self.h_healthz, exempt=True)
        self._add("/readyz", get, "readyz", self.h_readyz, exempt=True)
        self._add("/readyz/enable", get | post, "readyz_enable", self.h_ready_enable, exempt=True)
        self._add("/readyz/disable", get | post, "readyz_disable", self.h_ready_disable, exempt=True)
        self._add("/metrics", get, "metrics", self.h_metrics, exempt=True)
        self._add("/token", post, "token", self.h_token)
        self._add("/token/validate", get | post, "token_validate", self.h_token_validate)
        self._add("/env", get | post, "env", self.h_env)
        self._add("/headers", get | post, "headers", self.h_headers)
        self._add("/echo", anything, "echo", self.h_echo)
        self._add("/api/echo", anything, "api_echo", self.h_echo)
        # parameterised routes: (regex, methods, label, handler)
        self.patterns: list[tuple[re.Pattern[str], frozenset[str], str, Callable[..., Response]]] = [
            (re.compile(r"^/status/(\d+)$"), frozenset({"GET", "POST", "PUT"}), "status", self.h_status),
            (re.compile(r"^/delay/(\d+)$"), get, "delay", self.h_delay),
            (re.compile(r"^/echo/.*$"), anything, "echo", self.h_echo),
            (re.compile(r"^/api/echo/.*$"), anything, "api_echo", self.h_echo),
        ]

    def _add(
        self, path: str, methods: frozenset[str], label: str, fn: Callable[..., Response], exempt: bool = False
    ) -> None:
        self.routes[path] = (methods, label, fn, exempt)

    # -------------------------------------------------------------------------------- request pipeline

    def route(self, method: str, path: str) -> tuple[str, Callable[..., Response] | None, bool, tuple]:
        """(metrics label, handler or None, fault-exempt, captured args) for a request."""
        hit = self.routes.get(path)
        if hit is not None:
            methods, label, fn, exempt = hit
            if method in methods or (method == "HEAD" and "GET" in methods):
                return label, fn, exempt, ()
            return label, self._method_not_allowed, exempt, ()
        for regex, methods, label, fn in self.patterns:
            m = regex.match(path)
            if m:
                if method in methods or (method == "HEAD" and "GET" in methods):
                    return label, fn, False, m.groups()
                return label, self._method_not_allowed, False, ()
        return "not_found", None, False, ()

    def next_is_error(self) -> bool:
        """Deterministic error schedule of ``PODINFO_ERROR_RATE`` (see the module docstring)."""
        rate: Fraction = self.s.error_rate
        if rate <= 0:
            return False
        with self._fault_lock:
            self._eligible += 1
            i = self._eligible
        return (i * rate).__floor__() > ((i - 1) * rate).__floor__()

    def inject_faults(self) -> Response | None:
        """Latency first, then errors: what an eligible request suffers before its handler runs."""
        extra = self.s.extra_latency_ms
        if extra > 0:
            time.sleep(extra / 1000.0)
        if self.s.random_delay:
            lo, hi = self.s.random_delay_min, self.s.random_delay_max
            amount = self._rng.randrange(lo, hi) if hi > lo else lo
            time.sleep(amount * (0.001 if self.s.random_delay_unit == "ms" else 1.0))
        if self.next_is_error():
            return self.json(500, {"code": 500, "message": "error injected by PODINFO_ERROR_RATE"})
        if self.s.random_error and self._rng.randrange(3) == 0:
            code = self._rng.choice((500, 400, 409))
            return code, {}, b""
        return None

    # -------------------------------------------------------------------------------------- responses

    @staticmethod
    def json(status: int, data: Any, headers: dict[str, str] | None = None) -> Response:
        body = (json.dumps(data, indent=2) + "\n").encode()
        hdrs = {"Content-Type": "application/json; charset=utf-8", "X-Content-Type-Options": "nosniff"}
        hdrs.update(headers or {})
        return status, hdrs, body

    def error(self, status: int, message: str) -> Response:
        return self.json(status, {"code": status, "message": message})

    def _method_not_allowed(self, req: RequestHandler, *_: Any) -> Response:
        return 405, {"Content-Type": "text/plain; charset=utf-8"}, b"405 method not allowed\n"

    # --------------------------------------------------------------------------------------- handlers

    def info(self) -> dict[str, str]:
        return {
            "hostname": self.hostname,
            "version": self.s.version,
            "revision": self.s.revision,
            "color": self.s.ui_color,
            "logo": self.s.ui_logo,
            "message": self.s.message,
            "goos": sys.platform,
            "goarch": platform.machine(),
            "runtime": f"python{platform.python_version()}",
            "num_goroutine": str(threading.active_count()),
            "num_cpu": str(os.cpu_count() or 1),
        }

    def h_index(self, req: RequestHandler) -> Response:
        if req.method == "GET" and req.headers.get("User-Agent", "").startswith("Mozilla"):
            info = {k: _html_escape(v) for k, v in self.info().items()}
            page = _PAGE.format(**info)
            return 200, {"Content-Type": "text/html; charset=utf-8"}, page.encode()
        return self.json(200, self.info())

    def h_info(self, req: RequestHandler) -> Response:
        return self.json(200, self.info())

    def h_version(self, req: RequestHandler) -> Response:
        return self.json(200, {"commit": self.s.revision, "version": self.s.version})

    def h_healthz(self, req: RequestHandler) -> Response:
        return self.json(200, {"status": "OK"}) if self.healthy else (503, {}, b"")

    def h_readyz(self, req: RequestHandler) -> Response:
        return self.json(200, {"status": "OK"}) if self.ready and not req.server.draining else (503, {}, b"")

    def h_ready_enable(self, req: RequestHandler) -> Response:
        self.ready = True
        return 202, {}, b""

    def h_ready_disable(self, req: RequestHandler) -> Response:
        self.ready = False
        return 202, {}, b""

    def h_metrics(self, req: RequestHandler) -> Response:
        return 200, {"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}, self.metrics.render().encode()

    def h_status(self, req: RequestHandler, code: str) -> Response:
        status = int(code)
        if not 200 <= status <= 599:
            return self.error(400, f"status code {status} is not between 200 and 599")
        return self.json(status, {"status": status})

    def h_delay(self, req: RequestHandler, seconds: str) -> Response:
        wait = int(seconds)
        time.sleep(wait)
        return self.json(200, {"delay": wait})

    def h_token(self, req: RequestHandler) -> Response:
        user = req.body.decode("utf-8", "replace") if req.body else "anonymous"
        expires = int(time.time()) + 60
        token = jwt_encode({"name": user, "exp": expires, "iss": "podinfo"}, self.s.jwt_secret)
        return self.json(200, {"token": token, "expires_at": _rfc3339(expires)})

    def h_token_validate(self, req: RequestHandler) -> Response:
        auth = req.headers.get("Authorization", "")
        parts = auth.split(" ")
        if len(parts) != 2 or parts[0].lower() != "bearer":
            return self.error(401, "authorization bearer header required")
        try:
            claims = jwt_decode(parts[1], self.s.jwt_secret)
        except ValueError as exc:
            return self.error(401, str(exc))
        if claims.get("iss") != "podinfo":
            return self.error(401, "invalid issuer")
        exp = claims.get("exp", 0)
        return self.json(200, {"token_name": claims.get("name", ""), "expires_at": _rfc3339(float(exp))})

    def h_env(self, req: RequestHandler) -> Response:
        return self.json(200, [f"{k}={v}" for k, v in os.environ.items()])

    def h_headers(self, req: RequestHandler) -> Response:
        headers: dict[str, list[str]] = {}
        for name, value in req.headers.items():
            canonical = "-".join(p.capitalize() for p in name.split("-"))
            headers.setdefault(canonical, []).append(value)
        headers["X-Api-Version"] = [self.s.version]  # podinfo's versionMiddleware adds these
        headers["X-Api-Revision"] = [self.s.revision]
        return self.json(200, headers)

    def h_echo(self, req: RequestHandler) -> Response:
        backends: list[str] = self.s.backend_url
        if not backends:
            return 202, {"X-Color": self.s.ui_color, "Content-Type": "text/plain; charset=utf-8"}, req.body
        results: list[str] = [""] * len(backends)
        threads = [
            threading.Thread(target=self._call_backend, args=(req, url, results, i), daemon=True)
            for i, url in enumerate(backends)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return self.json(200, results, {"X-Color": self.s.ui_color})

    def _call_backend(self, req: RequestHandler, url: str, results: list[str], index: int) -> None:
        """POST the request body to one backend, as podinfo's echo handler does (honours *_proxy env)."""
        import urllib.error
        import urllib.request

        if self._opener is None:
            self._opener = urllib.request.build_opener()  # ProxyHandler reads HTTP_PROXY / NO_PROXY
        headers = {
            "X-API-Version": self.s.version,
            "X-API-Revision": self.s.revision,
            "Content-Type": req.headers.get("Content-Type", "application/octet-stream"),
        }
        for name in (
            "x-request-id",
            "x-b3-traceid",
            "x-b3-spanid",
            "x-b3-parentspanid",
            "x-b3-sampled",
            "x-b3-flags",
            "x-ot-span-context",
        ):
            if req.headers.get(name):
                headers[name] = req.headers[name]
        request = urllib.request.Request(url, data=req.body, headers=headers, method="POST")
        try:
            with self._opener.open(request, timeout=self.s.http_client_timeout) as resp:
                results[index] = resp.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            exc.close()
            log(self.s, "error", "backend call failed", url=url, status=exc.code)
            results[index] = f"backend {url} response status code {exc.code}"
        except Exception as exc:
            log(self.s, "error", "backend call failed", url=url, error=str(exc))
            results[index] = f"backend {url} call failed {exc}"


# ---------------------------------------------------------------------------------------- HTTP plumbing


_LEVELS = {"debug": 10, "info": 20, "warn": 30, "warning": 30, "error": 40, "fatal": 50, "panic": 50}


def log(settings: Settings, level: str, msg: str, **fields: Any) -> None:
    """One JSON log line on stderr (podinfo logs JSON with zap) when ``level`` passes ``--level``."""
    if _LEVELS.get(level, 20) < _LEVELS.get(settings.level, 20):
        return
    record = {"level": level, "ts": round(time.time(), 3), "caller": "podinfo", "msg": msg, **fields}
    try:
        sys.stderr.write(json.dumps(record, default=str) + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


class Server(ThreadingHTTPServer):
    """Threaded HTTP/1.1 server that tracks in-flight requests for a graceful shutdown."""

    daemon_threads = True
    block_on_close = False  # idle keep-alive connections must not block the exit
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], app: Podinfo) -> None:
        self.app = app
        self.draining = False
        self._inflight = 0
        self._cond = threading.Condition()
        super().__init__(address, RequestHandler)

    def begin(self) -> None:
        with self._cond:
            self._inflight += 1

    def end(self) -> None:
        with self._cond:
            self._inflight -= 1
            self._cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._inflight > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True


class RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "podinfo"
    sys_version = ""
    server: Server
    body: bytes = b""
    method: str = "GET"

    def setup(self) -> None:
        super().setup()
        self.timeout = 2 * self.server.app.s.http_server_timeout  # type: ignore[misc]  # idle keep-alive timeout, as podinfo
        self.connection.settimeout(self.timeout)
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        log(self.server.app.s, "debug", format % args, remote=self.client_address[0])

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            total = 0
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                total += size
                if total > MAX_BODY:
                    return None
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            return None
        return self.rfile.read(length) if length > 0 else b""

    def _handle(self) -> None:
        server, app = self.server, self.server.app
        server.begin()
        started = time.perf_counter()
        try:
            self.method = self.command
            path = self.path.split("?", 1)[0]
            if path.startswith(("http://", "https://")):  # absolute-form request target
                path = "/" + path.split("/", 3)[3] if path.count("/") >= 3 else "/"
            try:
                body = self._read_body()
            except (ValueError, OSError):
                body = None
                self.close_connection = True
            label, handler, exempt, args = app.route(self.method, path)
            response: tuple[int, dict[str, str], bytes] | None
            if body is None:
                self.close_connection = True
                response = app.error(413, f"request body larger than {MAX_BODY} bytes or malformed")
            else:
                self.body = body
                response = None if exempt else app.inject_faults()
                if response is None:
                    if handler is None:
                        response = 404, {"Content-Type": "text/plain; charset=utf-8"}, b"404 page not found\n"
                    else:
                        try:
                            response = handler(self, *args)
                        except Exception as exc:
                            log(app.s, "error", "handler failed", path=path, error=repr(exc))
                            response = app.error(500, f"internal error: {exc}")
            assert response is not None
            status, headers, payload = response
            if server.draining:
                self.close_connection = True
            self._send(status, headers, payload)
            app.metrics.observe(self.method, label, status, time.perf_counter() - started)
        finally:
            server.end()

    def _send(self, status: int, headers: dict[str, str], payload: bytes) -> None:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = ""
        lines = [f"HTTP/1.1 {status} {reason}", f"Date: {self.date_time_string()}", f"Content-Length: {len(payload)}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
        self.wfile.write(head if self.method == "HEAD" else head + payload)
        self.wfile.flush()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle


def serve(settings: Settings) -> int:
    """Run one replica until SIGTERM/SIGINT; returns the exit status."""
    app = Podinfo(settings)
    try:
        server = Server((settings.host, settings.port), app)
    except OSError as exc:
        log(settings, "fatal", "HTTP server failed to listen", addr=f"{settings.host}:{settings.port}", error=str(exc))
        return 1

    def stop(signum: int, _frame: Any) -> None:
        if server.draining:
            return
        server.draining = True
        log(settings, "info", "Shutting down HTTP server", signal=signal.Signals(signum).name)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for flag in settings.unknown:
        log(settings, "warn", "ignoring unknown flag", flag=flag)
    log(
        settings,
        "info",
        "Starting podinfo",
        version=settings.version,
        revision=settings.revision,
        port=str(server.server_address[1]),
    )
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.socket.close()  # stop accepting; in-flight requests finish below
    timeout = settings.http_server_shutdown_timeout
    if not server.wait_idle(timeout):
        log(settings, "warn", "in-flight requests did not finish before the shutdown timeout", timeout=timeout)
    log(settings, "info", "HTTP server stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        settings = parse_args(sys.argv[1:] if argv is None else argv)
    except ValueError as exc:
        print(f"podinfo: {exc}", file=sys.stderr)
        return 2
    if settings.print_version:
        print(settings.version)
        return 0
    if any(flag in ("-h", "--help") for flag in settings.unknown):
        print(__doc__)
        print("Flags (all also settable as PODINFO_<FLAG>):")
        for name, (kind, default) in FLAGS.items():
            print(f"  --{name} ({kind}, default {default!r})")
        return 0
    return serve(settings)


if __name__ == "__main__":
    sys.exit(main())
