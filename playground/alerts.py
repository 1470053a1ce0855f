"""Alert notifiers (slack, msteams, discord, rocket, gchat and a generic JSON webhook) and the alert messages.

The state machine decides *what* to say (``playground.analysis.AlertMessages``, Flagger's wording, with a
severity); the controller calls ``notify`` to post it to every
alert entry of the canary (``analysis.alerts``) whose severity filter accepts it. ``notify`` never raises:
each attempt comes back as a ``Delivery`` (``ok``, HTTP status, error text).

Severity filter per alert entry (Flagger's ``alert()`` in pkg/controller/events.go): an entry with severity
``info`` gets everything, ``warn`` gets warn and error, ``error`` gets error only. A canary without
``analysis.alerts`` sends nothing (there is no global notifier in the playground).

Addresses come from secrets or the environment, never from git: the AlertProvider's ``spec.secretRef`` names
a secret (in the provider's namespace) whose ``address`` key is the webhook URL, or ``spec.addressFromEnv``
names an environment variable. A provider with an inline ``spec.address`` is refused: a webhook URL is a
credential and must not be committed. Provider ``username`` defaults to ``flagger`` and ``channel`` to
``general``, as in Flagger. URLs never appear in messages beyond their scheme and host.

Payloads follow Flagger's pkg/notifier:

* slack: ``{"channel","username","icon_url","icon_emoji":":rocket:","attachments":[{"color","author_name":
  "<name>.<namespace>","text","mrkdwn_in":["text"],"fields":[{"title","value","short":false}]}]}`` with color
  ``danger`` for error and ``good`` otherwise.
* discord: the Slack payload, posted to the webhook URL with ``/slack`` appended (Discord's Slack-compatible
  endpoint) unless it already ends with it.
* rocket: the Slack payload with colors ``#FF0000`` (error) / ``#0076D7``.
* msteams: an Office 365 connector ``MessageCard`` (``@type``, ``@context``, ``themeColor`` ``FF0000`` /
  ``0076D7``, ``summary``, ``sections[{activityTitle, activitySubtitle, facts[{name, value}]}]``).
* gchat: ``{"cards":[{"header":{"title":"Flagger","subtitle","imageUrl"},"sections":[{"widgets":[{
  "textParagraph":{"text"}}]}...]}]}`` -- one section for the message, one per field.
* webhook (generic JSON, a playground extension): ``{"name","namespace","phase","severity","message",
  "fields":[{"name","value"}],"metadata":{"eventMessage","eventType","timestamp"}}`` -- Flagger's event
  webhook payload plus severity, message and fields at the top level.

Flagger treats any status other than 200 as a failure; we accept any 2xx (the generic webhook may answer 202
or 204). Each post has a 5 second timeout (Flagger's) and is not retried: alerts are best effort.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from playground.errors import PlaygroundError
from playground.hooks import verified_tls
from playground.models import AlertProvider, AlertProviderType, AlertSeverity, Canary, CanaryAlert, Phase
from playground.secrets import lookup_secret

__all__ = [
    "Delivery",
    "POST_TIMEOUT",
    "accepts",
    "alert_fields",
    "build_payload",
    "notify",
    "provider_address",
]

POST_TIMEOUT = 5.0  # seconds, as Flagger's notifier client
DEFAULT_USERNAME = "flagger"
DEFAULT_CHANNEL = "general"

_RANK = {AlertSeverity.info: 0, AlertSeverity.warn: 1, AlertSeverity.error: 2}


def alert_fields(canary: Canary) -> list[tuple[str, str]]:
    """Flagger's metadata fields (``alertMetadata``): target, threshold, deadline, traffic routing."""
    a = canary.spec.analysis
    kind = canary.spec.targetRef.kind or "Deployment"
    fields = [
        ("Target", f"{kind}/{canary.spec.targetRef.name}.{canary.namespace}"),
        ("Failed checks threshold", str(a.threshold if a.threshold > 0 else 1)),
        ("Progress deadline", f"{canary.spec.progressDeadlineSeconds}s"),
    ]
    if a.stepWeight > 0:
        fields.append(("Traffic routing", f"Weight step: {a.stepWeight} max: {a.maxWeight}"))
    elif a.match:
        fields.append(("Traffic routing", "A/B Testing"))
    elif a.iterations > 0:
        fields.append(("Traffic routing", "Blue/Green"))
    return fields


# -------------------------------------------------------------------------------------------- payloads


def _slack(canary: Canary, message: str, fields, severity: AlertSeverity, spec, colors=("good", "danger")) -> dict:
    return {
        "channel": spec.channel or DEFAULT_CHANNEL,
        "username": spec.username or DEFAULT_USERNAME,
        "icon_url": "",
        "icon_emoji": ":rocket:",
        "attachments": [
            {
                "color": colors[1] if severity == AlertSeverity.error else colors[0],
                "author_name": f"{canary.name}.{canary.namespace}",
                "text": message,
                "mrkdwn_in": ["text"],
                "fields": [{"title": k, "value": v, "short": False} for k, v in fields],
            }
        ],
    }


def _msteams(canary: Canary, message: str, fields, severity: AlertSeverity) -> dict:
    subject = f"{canary.name}.{canary.namespace}"
    return {
        "@type": "MessageCard",
        "@context": "http://schema.org/extensions",
        "themeColor": "FF0000" if severity == AlertSeverity.error else "0076D7",
        "summary": subject,
        "sections": [
            {
                "activityTitle": message,
                "activitySubtitle": subject,
                "facts": [{"name": k, "value": v} for k, v in fields],
            }
        ],
    }


def _gchat(canary: Canary, message: str, fields) -> dict:
    sections = [{"widgets": [{"textParagraph": {"text": f"<font color=#848484><strong>{message}</strong></font>"}}]}]
    for k, v in fields:
        sections.append(
            {"widgets": [{"textParagraph": {"text": f"{k}<br><font color=#848484><strong>{v}</strong></font>"}}]}
        )
    return {
        "cards": [
            {
                "header": {
                    "title": "Flagger",
                    "subtitle": f"{canary.name}.{canary.namespace}",
                    "imageUrl": "https://flagger.app/favicon.png",
                },
                "sections": sections,
            }
        ]
    }


def _generic(canary: Canary, message: str, fields, severity: AlertSeverity, now_ms: int) -> dict:
    phase = canary.status.phase if canary.status else Phase.Initializing
    return {
        "name": canary.name,
        "namespace": canary.namespace,
        "phase": phase.value if isinstance(phase, Phase) else str(phase),
        "severity": severity.value,
        "message": message,
        "fields": [{"name": k, "value": v} for k, v in fields],
        "metadata": {
            "eventMessage": message,
            "eventType": "Warning" if severity != AlertSeverity.info else "Normal",
            "timestamp": str(now_ms),
        },
    }


def build_payload(
    provider: AlertProvider,
    canary: Canary,
    severity: AlertSeverity | str,
    message: str,
    fields: list[tuple[str, str]] | None = None,
    *,
    now_ms: int | None = None,
) -> dict:
    """The JSON body one provider type receives."""
    severity = AlertSeverity(severity)
    fields = list(fields or [])
    t = provider.spec.type
    if t in (AlertProviderType.slack, AlertProviderType.discord):
        return _slack(canary, message, fields, severity, provider.spec)
    if t == AlertProviderType.rocket:
        return _slack(canary, message, fields, severity, provider.spec, colors=("#0076D7", "#FF0000"))
    if t == AlertProviderType.msteams:
        return _msteams(canary, message, fields, severity)
    if t == AlertProviderType.gchat:
        return _gchat(canary, message, fields)
    if t == AlertProviderType.webhook:
        return _generic(canary, message, fields, severity, now_ms if now_ms is not None else int(time.time() * 1000))
    raise ValueError(f"unsupported alert provider type {t!r}")


# ------------------------------------------------------------------------------------------ addressing


class AddressError(PlaygroundError):
    """The provider's address cannot be found (or is refused); the message says what to do."""


def provider_address(
    provider: AlertProvider,
    *,
    secrets: Mapping[Any, Mapping[str, Any]] | None,
    env: Mapping[str, str],
) -> str:
    """The webhook URL of a provider, from its secret or environment variable. Raises ``AddressError``."""
    ns = provider.metadata.namespace or "default"
    ref = f"AlertProvider {ns}/{provider.metadata.name}"
    spec = provider.spec
    if spec.address:
        raise AddressError(
            f"{ref} has an inline spec.address: refused, webhook URLs are credentials and must not be kept in "
            f"git. Put the URL in a secret (key 'address') referenced by spec.secretRef, or in an environment "
            f"variable named by spec.addressFromEnv"
        )
    if spec.secretRef is not None:
        data = lookup_secret(secrets, ns, spec.secretRef.name)
        if data is None:
            raise AddressError(f"{ref}: secret {ns}/{spec.secretRef.name} (spec.secretRef) not found")
        address = data.get("address", "").strip()
        if not address:
            raise AddressError(f"{ref}: secret {ns}/{spec.secretRef.name} has no 'address' key")
    elif spec.addressFromEnv:
        address = (env.get(spec.addressFromEnv) or "").strip()
        if not address:
            raise AddressError(f"{ref}: environment variable {spec.addressFromEnv} (spec.addressFromEnv) is not set")
    else:
        raise AddressError(
            f"{ref} has no address source: set spec.secretRef (secret key 'address') or spec.addressFromEnv"
        )
    parts = urlsplit(address)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise AddressError(f"{ref}: the address from its secret/environment is not an http(s) URL")
    if spec.type == AlertProviderType.discord and not parts.path.rstrip("/").endswith("/slack"):
        address = parts._replace(path=parts.path.rstrip("/") + "/slack").geturl()
    return address


def _shown(url: str) -> str:
    """Scheme and host only: webhook URLs carry their token in the path."""
    p = urlsplit(url)
    return f"{p.scheme}://{p.hostname or ''}{':' + str(p.port) if p.port else ''}/..."


# ------------------------------------------------------------------------------------------- delivery


@dataclass(frozen=True)
class Delivery:
    """One attempt to post an alert to one alert entry's provider."""

    alert: str  # the canary's alert entry name
    provider: str  # "namespace/name" of the AlertProvider
    provider_type: str | None
    ok: bool
    status: int | None = None
    error: str | None = None
    destination: str = ""  # scheme://host/... (never the full URL)


def accepts(entry_severity: AlertSeverity | str, severity: AlertSeverity | str) -> bool:
    """Does an alert entry of ``entry_severity`` receive a message of ``severity``?"""
    return _RANK[AlertSeverity(severity)] >= _RANK[AlertSeverity(entry_severity)]


def notify(
    canary: Canary,
    severity: AlertSeverity | str,
    message: str,
    providers: Mapping[tuple[str, str], AlertProvider] | None,
    *,
    secrets: Mapping[Any, Mapping[str, Any]] | None = None,
    env: Mapping[str, str] | None = None,
    fields: list[tuple[str, str]] | None = None,
    resolve: Callable[[str], str] | None = None,
    client: httpx.Client | None = None,
    timeout: float = POST_TIMEOUT,
    proxy: str | None = None,
) -> list[Delivery]:
    """Post ``message`` to every alert entry of the canary whose severity filter accepts ``severity``.

    ``providers`` maps ``(namespace, name)`` to AlertProviders (a providerRef without namespace means the
    canary's); ``secrets`` maps ``(namespace, name)`` (or ``"namespace/name"``) to secret data; ``env``
    defaults to ``os.environ``. ``resolve`` optionally rewrites URLs (local playground); ``proxy`` is an HTTP
    proxy for all posts (a provider's own ``spec.proxy`` wins). Never raises.
    """
    env = os.environ if env is None else env
    out: list[Delivery] = []
    entries: list[CanaryAlert] = list(canary.spec.analysis.alerts)
    if not entries:
        return out
    try:
        severity = AlertSeverity(severity)
    except ValueError:
        return [
            Delivery(
                alert=e.name,
                provider="",
                provider_type=None,
                ok=False,
                error=f"unknown severity {severity!r}: use info, warn or error",
            )
            for e in entries
        ]
    own = client is None
    http = client or httpx.Client(proxy=proxy or None, verify=verified_tls())
    try:
        for entry in entries:
            if not accepts(entry.severity, severity):
                continue
            out.append(
                _deliver(canary, entry, severity, message, fields, providers, secrets, env, resolve, http, timeout)
            )
    finally:
        if own:
            http.close()
    return out


def _deliver(canary, entry, severity, message, fields, providers, secrets, env, resolve, http, timeout) -> Delivery:
    ns = entry.providerRef.namespace or canary.namespace
    key = f"{ns}/{entry.providerRef.name}"
    provider = (providers or {}).get((ns, entry.providerRef.name))
    if provider is None:
        return Delivery(
            entry.name,
            key,
            None,
            False,
            error=f"alert {entry.name}: AlertProvider {key} not found; apply it or fix providerRef",
        )
    ptype = provider.spec.type.value
    try:
        url = provider_address(provider, secrets=secrets, env=env)
        if resolve is not None:
            url = resolve(url)
        body = build_payload(provider, canary, severity, message, fields)
    except AddressError as e:
        return Delivery(entry.name, key, ptype, False, error=f"alert {entry.name}: {e}")
    except Exception as e:
        return Delivery(entry.name, key, ptype, False, error=f"alert {entry.name}: {type(e).__name__}: {e}")
    shown = _shown(url)
    try:
        kwargs: dict[str, Any] = {"json": body, "timeout": timeout}
        if provider.spec.proxy:
            with httpx.Client(proxy=provider.spec.proxy, verify=verified_tls()) as proxied:
                r = proxied.post(url, **kwargs)
        else:
            r = http.post(url, **kwargs)
    except httpx.TimeoutException:
        return Delivery(
            entry.name,
            key,
            ptype,
            False,
            destination=shown,
            error=f"alert {entry.name}: {ptype} at {shown} did not answer within {timeout:g}s",
        )
    except httpx.HTTPError as e:
        return Delivery(
            entry.name,
            key,
            ptype,
            False,
            destination=shown,
            error=f"alert {entry.name}: cannot post to {ptype} at {shown}: {type(e).__name__}: {e}",
        )
    if 200 <= r.status_code < 300:
        return Delivery(entry.name, key, ptype, True, status=r.status_code, destination=shown)
    return Delivery(
        entry.name,
        key,
        ptype,
        False,
        status=r.status_code,
        destination=shown,
        error=f"alert {entry.name}: {ptype} at {shown} answered HTTP {r.status_code}: {r.text.strip()[:300]}",
    )
