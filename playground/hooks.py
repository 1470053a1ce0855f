"""Flagger-compatible webhooks: the live answer to ``Probe.webhook(hook, phase)``.

A webhook is an HTTP ``POST`` of the JSON payload Flagger sends (``CanaryWebhookPayload``)::

    {"name": "<canary>", "namespace": "<ns>", "phase": "<phase>", "checksum": "<revision>", "metadata": {...}}

It succeeds iff an HTTP status was received and it is <= 202 (Flagger: ``if r.StatusCode > 202`` is an error,
the body being the error text). Each attempt has the hook's ``timeout`` (default 10s, parsed with
``durations.parse_duration``). ``retries`` is the number of *extra* attempts, as in Flagger (which uses
go-retryablehttp with ``RetryMax = retries``): they are made only for transient failures -- connection errors,
timeouts, HTTP 429 and 5xx other than 501 -- with a short exponential backoff. A 4xx (for instance the
loadtester's 403 "gate closed") is an answer, not a transient failure, and is not retried.

Event hooks (``type: event``) receive the same payload with ``metadata`` = ``eventMessage``, ``eventType`` and
``timestamp`` (milliseconds), as Flagger's ``CallEventWebhook``.

Nothing here raises: every problem comes back in ``WebhookAnswer.error``. URLs go through a resolver so that
in-cluster names (``http://flagger-loadtester.prod/``) reach local endpoints.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from playground.durations import parse_duration
from playground.models import Canary, CanaryWebhook, HookType, Phase
from playground.observe import WebhookAnswer

if TYPE_CHECKING:  # imported by _post: validation uses hook_timeout without the HTTP client
    import httpx

__all__ = [
    "DEFAULT_TIMEOUT",
    "all_ok",
    "call_event_webhook",
    "call_hooks",
    "call_webhook",
    "hook_timeout",
    "hooks_of_type",
    "identity",
    "payload",
]

DEFAULT_TIMEOUT = 10.0  # seconds, Flagger's default webhook timeout
BACKOFF_BASE = 0.1  # seconds before the first retry; doubles each time
BACKOFF_MAX = 1.0
MAX_BODY = 4096  # characters of the response body kept in the answer

Resolver = Callable[[str], str]


def identity(url: str) -> str:
    """Default URL resolver: use the URL as written."""
    return url


def hook_timeout(hook: CanaryWebhook) -> float:
    """The per-attempt timeout of a hook in seconds (default 10s). Raises ValueError for an invalid value."""
    if not hook.timeout:
        return DEFAULT_TIMEOUT
    seconds = parse_duration(hook.timeout)
    if seconds <= 0:
        raise ValueError(f"invalid timeout {hook.timeout!r}: it must be greater than zero")
    return seconds


def payload(canary: Canary, phase: Phase | str, checksum: str, metadata: Mapping[str, str] | None = None) -> dict:
    """The JSON body Flagger posts to a webhook."""
    return {
        "name": canary.name,
        "namespace": canary.namespace,
        "phase": phase.value if isinstance(phase, Phase) else str(phase),
        "checksum": checksum,
        "metadata": dict(metadata or {}),
    }


@functools.cache
def verified_tls():
    """The certificate-verifying TLS context of every webhook and alert client, built once per process: httpx
    loads the CA bundle (tens of milliseconds of CPU) for each new client otherwise, i.e. on every tick."""
    import httpx

    return httpx.create_ssl_context()


def _transient_status(status: int) -> bool:
    return status == 429 or (status >= 500 and status != 501)


def _post(
    name: str,
    url: str,
    body: dict,
    *,
    timeout: float,
    retries: int,
    resolve: Resolver,
    client: httpx.Client | None,
    proxy: str | None = None,
    insecure: bool = False,
) -> WebhookAnswer:
    try:
        target = resolve(url)
    except Exception as e:  # the resolver is the caller's code
        return WebhookAnswer(name=name, status=None, error=f"webhook {name}: cannot resolve URL {url}: {e}", attempts=0)
    import httpx

    try:
        parsed = httpx.URL(target)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError("not an http(s) URL")
    except Exception as e:
        return WebhookAnswer(
            name=name,
            status=None,
            attempts=0,
            error=f"webhook {name}: invalid URL {target!r} ({e}); use http://host[:port]/path",
        )
    shown = url if target == url else f"{url} (reached as {target})"
    data = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    own = client is None
    # disableTLS (Flagger's webhook field): do not verify the server's certificate, as Flagger's
    # InsecureSkipVerify transport; a shared client is replaced by an own one for such a hook.
    if insecure and client is not None:
        client, own = None, True
    http = client or httpx.Client(proxy=proxy or None, verify=False if insecure else verified_tls())
    attempts = 0
    status: int | None = None
    text = ""
    error: str | None = None
    try:
        for attempt in range(max(0, retries) + 1):
            if attempt:
                time.sleep(min(BACKOFF_MAX, BACKOFF_BASE * 2 ** (attempt - 1)))
            attempts += 1
            try:
                r = http.post(target, content=data, headers=headers, timeout=timeout)
            except httpx.TimeoutException:
                status, text = None, ""
                error = f"webhook {name} at {shown} did not answer within {timeout:g}s"
                continue
            except httpx.HTTPError as e:
                status, text = None, ""
                error = f"webhook {name} at {shown} cannot be reached: {e or type(e).__name__}"
                continue
            status, text = r.status_code, r.text[:MAX_BODY]
            if status <= 202:
                error = None
                break
            detail = text.strip() or r.reason_phrase
            error = f"webhook {name} at {shown} answered HTTP {status}: {detail[:500]}"
            if not _transient_status(status):
                break
    finally:
        if own:
            http.close()
    if error and attempts > 1:
        error += f" (after {attempts} attempts)"
    return WebhookAnswer(name=name, status=status, error=error, body=text, attempts=attempts)


def call_webhook(
    canary: Canary,
    hook: CanaryWebhook,
    phase: Phase | str,
    checksum: str,
    *,
    resolve: Resolver = identity,
    client: httpx.Client | None = None,
    proxy: str | None = None,
) -> WebhookAnswer:
    """Call one webhook (any type) and return its answer. Never raises.

    ``resolve`` rewrites the URL before the call; ``proxy`` sends the request through an HTTP proxy (for
    instance the local playground's service proxy); ``client`` reuses an ``httpx.Client`` (then ``proxy`` is
    the client's business).
    """
    return _call(hook, payload(canary, phase, checksum, hook.metadata), resolve=resolve, client=client, proxy=proxy)


def call_event_webhook(
    canary: Canary,
    hook: CanaryWebhook,
    phase: Phase | str,
    message: str,
    *,
    event_type: str = "Normal",
    checksum: str = "",
    resolve: Resolver = identity,
    client: httpx.Client | None = None,
    proxy: str | None = None,
    now_ms: int | None = None,
) -> WebhookAnswer:
    """Send one event to an ``event`` hook: metadata = eventMessage, eventType (Normal/Warning), timestamp."""
    metadata = {
        "eventMessage": message,
        "eventType": event_type,
        "timestamp": str(now_ms if now_ms is not None else int(time.time() * 1000)),
    }
    return _call(hook, payload(canary, phase, checksum, metadata), resolve=resolve, client=client, proxy=proxy)


def _call(
    hook: CanaryWebhook,
    body: dict,
    *,
    resolve: Resolver,
    client: httpx.Client | None,
    proxy: str | None,
) -> WebhookAnswer:
    """POST ``body`` to one hook with its timeout, retries and TLS setting; a bad timeout is the hook's answer."""
    try:
        timeout = hook_timeout(hook)
    except ValueError as e:
        return WebhookAnswer(name=hook.name, status=None, attempts=0, error=f"webhook {hook.name}: {e}")
    return _post(
        hook.name,
        hook.url,
        body,
        timeout=timeout,
        retries=hook.retries,
        resolve=resolve,
        client=client,
        proxy=proxy,
        insecure=hook.disableTLS,
    )


def hooks_of_type(canary: Canary, hook_type: HookType | str) -> list[CanaryWebhook]:
    """The canary's webhooks of one type, in manifest order (a missing ``type`` is ``rollout``)."""
    wanted = HookType(hook_type)
    return [h for h in canary.spec.analysis.webhooks if h.type == wanted]


def call_hooks(
    canary: Canary,
    hook_type: HookType | str,
    phase: Phase | str,
    checksum: str,
    *,
    resolve: Resolver = identity,
    stop_on_failure: bool = True,
    stop_on_success: bool = False,
    client: httpx.Client | None = None,
    proxy: str | None = None,
) -> list[WebhookAnswer]:
    """Call all hooks of one type in order and return their answers.

    Flagger's gates stop at the first failing hook (``stop_on_failure``, the default: confirm-*, pre-rollout,
    rollout, post-rollout); rollback hooks stop at the first *successful* one (pass ``stop_on_failure=False,
    stop_on_success=True``). With no hooks of that type the list is empty (an open gate).
    """
    answers: list[WebhookAnswer] = []
    for hook in hooks_of_type(canary, hook_type):
        answer = call_webhook(canary, hook, phase, checksum, resolve=resolve, client=client, proxy=proxy)
        answers.append(answer)
        if (stop_on_failure and not answer.ok) or (stop_on_success and answer.ok):
            break
    return answers


def all_ok(answers: Iterable[WebhookAnswer]) -> bool:
    """True when every answer succeeded (and trivially for no hooks)."""
    return all(a.ok for a in answers)
