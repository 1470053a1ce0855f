"""Alerts on failed runs: ``failed_run_alerts`` (a Dagster run-failure sensor) posts through the engine's
notifiers to the canary's alert providers: the Slack one (address from a Secret in the cluster) and the
generic JSON one (address from an environment variable), both real HTTP endpoints on 127.0.0.1."""

from __future__ import annotations

import base64
from pathlib import Path

import dagster as dg
import yaml

from jobs import canary_release
from jobs.resources import PlaygroundResource
from playground.local.cluster import LocalCluster
from sensors import failed_run_alerts
from tests.support.http_server import RecordingServer

MANIFESTS = Path(__file__).resolve().parents[1] / "manifests"


def _docs(rel: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((MANIFESTS / rel).read_text()) if d]


def test_a_failed_release_run_alerts_the_canary_providers(tmp_path, monkeypatch):
    home = tmp_path / "home"
    with RecordingServer() as server:
        monkeypatch.setenv("PLAYGROUND_ALERT_WEBHOOK_URL", server.url + "/events")
        cluster = LocalCluster(home)
        try:
            # The canary and its providers, but no running playground: the release run fails, clearly.
            for rel in ("prod/alerts.yaml", "prod/backend/canary.yaml"):
                for obj in _docs(rel):
                    cluster.apply(obj)
            cluster.apply(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": "on-call-slack", "namespace": "prod"},
                    "data": {"address": base64.b64encode(f"{server.url}/slack".encode()).decode()},
                }
            )
        finally:
            cluster.close()

        resource = PlaygroundResource(home=str(home), backend="local")
        instance = dg.DagsterInstance.ephemeral()
        result = canary_release.execute_in_process(
            run_config={"ops": {"release": {"config": {"target": "prod/backend"}}}},
            resources={"playground": resource},
            instance=instance,
            raise_on_error=False,
        )
        assert not result.success
        failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE)

        with dg.build_run_status_sensor_context(
            sensor_name="failed_run_alerts",
            dagster_instance=instance,
            dagster_run=result.dagster_run,
            dagster_event=failure,
            resources={"playground": resource},
        ).for_run_failure() as context:
            failed_run_alerts(context)

        events = server.requests_to("/events")
        slack = server.requests_to("/slack")
        assert len(events) == 1 and len(slack) == 1
        body = events[0].json()
        assert body["name"] == "backend" and body["namespace"] == "prod" and body["severity"] == "error"
        assert result.run_id[:8] in body["message"] and "canary_release" in body["message"]
        attachment = slack[0].json()["attachments"][0]
        assert attachment["color"] == "danger" and "failed" in attachment["text"]
