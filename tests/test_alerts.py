"""Alert notifiers against a real local HTTP server: severity filter, address sources, payload shapes."""

from __future__ import annotations

import pytest

from playground.alerts import (
    accepts,
    alert_fields,
    build_payload,
    notify,
    provider_address,
)
from playground.analysis import AlertMessages
from playground.models import AlertProvider, AlertSeverity, Canary
from tests.support.http_server import RecordingServer, Reply
from tests.support.procs import free_port


def make_canary(alerts: list[dict], **analysis) -> Canary:
    return Canary.model_validate(
        {
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {
                "targetRef": {"kind": "Deployment", "name": "podinfo"},
                "service": {"port": 9898},
                "analysis": {"threshold": 5, "stepWeight": 10, "maxWeight": 50, "alerts": alerts, **analysis},
            },
        }
    )


def make_provider(name: str, ptype: str, *, namespace: str = "test", **spec) -> AlertProvider:
    return AlertProvider.model_validate(
        {"metadata": {"name": name, "namespace": namespace}, "spec": {"type": ptype, **spec}}
    )


def providers_of(*ps: AlertProvider) -> dict:
    return {(p.metadata.namespace, p.metadata.name): p for p in ps}


@pytest.fixture
def server():
    with RecordingServer() as srv:
        yield srv


def test_severity_filter_rules():
    info, warn, error = AlertSeverity.info, AlertSeverity.warn, AlertSeverity.error
    assert all(accepts(info, s) for s in (info, warn, error))
    assert [accepts(warn, s) for s in (info, warn, error)] == [False, True, True]
    assert [accepts(error, s) for s in (info, warn, error)] == [False, False, True]


def test_notify_posts_to_entries_whose_filter_accepts(server):
    canary = make_canary(
        [
            {"name": "all", "severity": "info", "providerRef": {"name": "hook-all"}},
            {"name": "warnings", "severity": "warn", "providerRef": {"name": "hook-warn"}},
            {"name": "errors", "severity": "error", "providerRef": {"name": "hook-err", "namespace": "ops"}},
        ]
    )
    providers = providers_of(
        make_provider("hook-all", "webhook", secretRef={"name": "s-all"}),
        make_provider("hook-warn", "webhook", addressFromEnv="WARN_HOOK"),
        make_provider("hook-err", "webhook", namespace="ops", secretRef={"name": "s-err"}),
    )
    secrets = {
        ("test", "s-all"): {"address": server.url + "/all"},
        "ops/s-err": {"address": (server.url + "/err").encode()},
    }
    env = {"WARN_HOOK": server.url + "/warn"}

    def sent(severity):
        server.requests.clear()
        deliveries = notify(canary, severity, f"{severity} message", providers, secrets=secrets, env=env)
        assert all(d.ok for d in deliveries), deliveries
        return sorted(r.path for r in server.requests)

    assert sent("info") == ["/all"]
    assert sent("warn") == ["/all", "/warn"]
    assert sent(AlertSeverity.error) == ["/all", "/err", "/warn"]


def test_no_alerts_sends_nothing(server):
    canary = make_canary([])
    assert notify(canary, "error", "boom", {}, secrets={}, env={}) == []
    assert server.requests == []


def test_inline_address_is_refused(server):
    canary = make_canary([{"name": "a", "providerRef": {"name": "inline"}}])
    providers = providers_of(make_provider("inline", "slack", address=server.url + "/x"))
    [d] = notify(canary, "info", "hi", providers, secrets={}, env={})
    assert not d.ok and "inline spec.address" in d.error and "secretRef" in d.error
    assert server.requests == []


def test_address_problems_are_reported_not_raised(server):
    canary = make_canary(
        [
            {"name": "nosecret", "providerRef": {"name": "p1"}},
            {"name": "nokey", "providerRef": {"name": "p2"}},
            {"name": "noenv", "providerRef": {"name": "p3"}},
            {"name": "noprovider", "providerRef": {"name": "missing"}},
        ]
    )
    providers = providers_of(
        make_provider("p1", "slack", secretRef={"name": "absent"}),
        make_provider("p2", "slack", secretRef={"name": "wrong"}),
        make_provider("p3", "slack", addressFromEnv="UNSET_VAR"),
    )
    ds = notify(canary, "info", "hi", providers, secrets={("test", "wrong"): {"url": "x"}}, env={})
    assert [d.ok for d in ds] == [False] * 4
    assert "secret test/absent" in ds[0].error and "not found" in ds[0].error
    assert "no 'address' key" in ds[1].error
    assert "UNSET_VAR" in ds[2].error
    assert "AlertProvider test/missing not found" in ds[3].error


def test_failures_are_in_the_result(server):
    canary = make_canary(
        [
            {"name": "broken", "providerRef": {"name": "p1"}},
            {"name": "dead", "providerRef": {"name": "p2"}},
            {"name": "fine", "providerRef": {"name": "p3"}},
        ]
    )
    providers = providers_of(*(make_provider(f"p{i}", "msteams", addressFromEnv=f"URL{i}") for i in (1, 2, 3)))
    env = {
        "URL1": server.url + "/broken/tok-SECRET",
        "URL2": f"http://127.0.0.1:{free_port()}/x",
        "URL3": server.url + "/fine",
    }
    server.script("/broken/tok-SECRET", [Reply(500, "internal")])
    ds = notify(canary, "error", "boom", providers, env=env)
    assert [d.ok for d in ds] == [False, False, True]
    assert ds[0].status == 500 and "HTTP 500" in ds[0].error and "tok-SECRET" not in ds[0].error
    assert ds[1].status is None and "cannot post" in ds[1].error
    assert ds[2].status == 200


def test_slack_payload(server):
    canary = make_canary([{"name": "s", "providerRef": {"name": "slack"}}])
    providers = providers_of(
        make_provider("slack", "slack", channel="deploys", username="bot", secretRef={"name": "slack-url"})
    )
    secrets = {("test", "slack-url"): {"address": server.url + "/services/T0/B0/xyz"}}
    notify(canary, AlertSeverity.error, AlertMessages.threshold_reached(5), providers, secrets=secrets, env={})
    notify(
        canary,
        AlertSeverity.info,
        AlertMessages.NEW_REVISION,
        providers,
        secrets=secrets,
        env={},
        fields=alert_fields(canary),
    )
    err, info = (r.json() for r in server.requests_to("/services/T0/B0/xyz"))
    assert err["channel"] == "deploys" and err["username"] == "bot" and err["icon_emoji"] == ":rocket:"
    [att] = err["attachments"]
    assert att == {
        "color": "danger",
        "author_name": "podinfo.test",
        "text": "Failed checks threshold reached 5",
        "mrkdwn_in": ["text"],
        "fields": [],
    }
    assert info["attachments"][0]["color"] == "good"
    assert {"title": "Target", "value": "Deployment/podinfo.test", "short": False} in info["attachments"][0]["fields"]
    assert {"title": "Traffic routing", "value": "Weight step: 10 max: 50", "short": False} in info["attachments"][0][
        "fields"
    ]


def test_discord_gets_slack_payload_on_slack_suffix(server):
    canary = make_canary([{"name": "d", "providerRef": {"name": "discord"}}])
    providers = providers_of(make_provider("discord", "discord", addressFromEnv="DISCORD"))
    [d] = notify(canary, "info", "hello", providers, env={"DISCORD": server.url + "/api/webhooks/1/abc"})
    assert d.ok
    [req] = server.requests
    assert req.path == "/api/webhooks/1/abc/slack"
    body = req.json()
    assert body["username"] == "flagger" and body["channel"] == "general"
    assert body["attachments"][0]["text"] == "hello"


def test_rocket_colors(server):
    canary = make_canary([{"name": "r", "providerRef": {"name": "rocket"}}])
    providers = providers_of(make_provider("rocket", "rocket", addressFromEnv="ROCKET"))
    env = {"ROCKET": server.url + "/hooks/x"}
    notify(canary, "error", "bad", providers, env=env)
    notify(canary, "warn", "meh", providers, env=env)
    colors = [r.json()["attachments"][0]["color"] for r in server.requests]
    assert colors == ["#FF0000", "#0076D7"]


def test_msteams_message_card(server):
    canary = make_canary([{"name": "t", "providerRef": {"name": "teams"}}])
    providers = providers_of(make_provider("teams", "msteams", addressFromEnv="TEAMS"))
    notify(
        canary,
        AlertSeverity.info,
        AlertMessages.initialized("Deployment"),
        providers,
        env={"TEAMS": server.url + "/teams"},
        fields=alert_fields(canary),
    )
    card = server.requests[0].json()
    assert card["@type"] == "MessageCard" and card["@context"] == "http://schema.org/extensions"
    assert card["themeColor"] == "0076D7" and card["summary"] == "podinfo.test"
    [section] = card["sections"]
    assert section["activityTitle"] == "New Deployment detected, initialization completed."
    assert section["activitySubtitle"] == "podinfo.test"
    assert {"name": "Failed checks threshold", "value": "5"} in section["facts"]


def test_gchat_cards(server):
    canary = make_canary([{"name": "g", "providerRef": {"name": "gchat"}}])
    providers = providers_of(make_provider("gchat", "gchat", addressFromEnv="GCHAT"))
    notify(
        canary,
        "warn",
        "Canary is waiting for approval.",
        providers,
        env={"GCHAT": server.url + "/chat"},
        fields=[("Target", "Deployment/podinfo.test")],
    )
    [card] = server.requests[0].json()["cards"]
    assert card["header"]["title"] == "Flagger" and card["header"]["subtitle"] == "podinfo.test"
    texts = [s["widgets"][0]["textParagraph"]["text"] for s in card["sections"]]
    assert texts == [
        "<font color=#848484><strong>Canary is waiting for approval.</strong></font>",
        "Target<br><font color=#848484><strong>Deployment/podinfo.test</strong></font>",
    ]


def test_generic_webhook_payload():
    canary = make_canary([])
    body = build_payload(
        make_provider("w", "webhook"),
        canary,
        "error",
        "Failed checks threshold reached 3",
        [("Target", "Deployment/podinfo.test")],
        now_ms=42,
    )
    assert body == {
        "name": "podinfo",
        "namespace": "test",
        "phase": "Initializing",
        "severity": "error",
        "message": "Failed checks threshold reached 3",
        "fields": [{"name": "Target", "value": "Deployment/podinfo.test"}],
        "metadata": {"eventMessage": "Failed checks threshold reached 3", "eventType": "Warning", "timestamp": "42"},
    }


def test_alert_texts_are_flaggers():
    """The texts the state machine sends (one set, in playground.analysis) are Flagger's wording."""
    assert AlertMessages.initialized("Deployment") == "New Deployment detected, initialization completed."
    assert AlertMessages.NEW_REVISION == "New revision detected, progressing canary analysis."
    assert AlertMessages.WAITING_APPROVAL == "Canary is waiting for approval."
    assert AlertMessages.TRAFFIC_WAITING_APPROVAL == "Canary traffic increase is waiting for approval."
    assert AlertMessages.PROMOTION_WAITING_APPROVAL == "Canary promotion is waiting for approval."
    assert AlertMessages.ROLLBACK_WEBHOOK == "Rolling back manual webhook invoked"
    assert AlertMessages.threshold_reached(10) == "Failed checks threshold reached 10"
    assert AlertMessages.SUCCEEDED == "Canary analysis completed successfully, promotion finished."
    assert AlertMessages.SKIPPED == "Canary analysis was skipped, promotion finished."


def test_alert_fields_strategies():
    assert ("Traffic routing", "A/B Testing") in alert_fields(
        make_canary([], stepWeight=0, iterations=5, match=[{"headers": {"x-canary": {"exact": "insider"}}}])
    )
    assert ("Traffic routing", "Blue/Green") in alert_fields(make_canary([], stepWeight=0, iterations=5))


def test_provider_address_discord_suffix_kept():
    p = make_provider("d", "discord", addressFromEnv="D")
    assert (
        provider_address(p, secrets={}, env={"D": "https://discord.test/api/webhooks/1/x/slack"})
        == "https://discord.test/api/webhooks/1/x/slack"
    )
