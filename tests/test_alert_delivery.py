"""Alerts of a real release on the session playground reach their endpoint directly, not through the mesh proxy
(which only knows the cluster's Services: an outside webhook answered 404 there), and the webhook URL, whose
path is the secret, is written to no log: not the Envoy access log, not any component's or replica's log, not
the release's output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.http_server import RecordingServer
from tests.support.playground_env import new_podinfo_image, status

pytestmark = pytest.mark.integration

SECRET = "T0KEN-b6c1e0f4d2a94e7f"


def test_release_alerts_go_directly_to_the_webhook_and_its_url_is_in_no_log(playground, tmp_path: Path) -> None:
    env = playground
    out = tmp_path / "release.log"
    with RecordingServer() as server:
        url = f"{server.url}/hooks/{SECRET}"
        with open(out, "wb") as f:
            code = subprocess.run(
                [str(Path(sys.executable).parent / "playground"), "release", "prod/backend"]
                + ["--image", new_podinfo_image()],
                cwd=tmp_path,
                env=env.subprocess_env() | {"PLAYGROUND_ALERT_WEBHOOK_URL": url},
                stdout=f,
                stderr=subprocess.STDOUT,
                timeout=300,
            ).returncode
        assert code == 0, out.read_text()[-4000:]
        received = server.requests_to(f"/hooks/{SECRET}")
    assert status(env).phase.value == "Succeeded"
    # the info alerts of the release-events provider (generic webhook): new revision, then promotion
    messages = [r.json()["message"] for r in received]
    assert any("New revision detected" in m for m in messages), messages
    assert any("Canary analysis completed successfully" in m for m in messages), messages
    # posted directly: Envoy adds its own headers to what it forwards
    for r in received:
        assert not any(h.lower().startswith("x-envoy") for h in r.headers), r.headers
    # the secret is nowhere: Envoy's access log and every other log of the playground, and the release's output
    logs = [p for p in (env.home / "logs").rglob("*") if p.is_file()] + [out]
    assert any(p.name == "envoy-access.log" for p in logs)
    leaked = [str(p) for p in logs if SECRET.encode() in p.read_bytes()]
    assert leaked == []
