"""The Dagster jobs against the real local playground (shared session environment, 1 s analysis interval):

- an invalid manifest commit makes ``gitops_sync`` fail with the validation report in its failure metadata, and
  nothing is applied (every stored object, canary status and the store's change counter are unchanged);
- ``canary_release`` (``execute_in_process``) promoting a new podinfo image: one release materialization per
  tick in order, weights stepping 5..50, metric checks recorded as asset check evaluations, the promotion
  materialized, and the primary now runs the new image;
- ``canary_release`` of a faulty revision (``PODINFO_ERROR_RATE: "0.5"`` committed): rolled back after the
  failed-checks threshold, the rollback materialized, all traffic on the primary, canary scaled to zero, primary
  still on the old image.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from jobs import canary_release, gitops_sync
from tests.support.playground_env import (
    BACKEND_DEPLOYMENT,
    container,
    deployment,
    new_podinfo_image,
    routes,
    status,
    store_snapshot,
    with_env_var,
    without_env_var,
)

pytestmark = pytest.mark.integration


def materializations(result: dg.ExecuteInProcessResult, kind: str, target: str = "prod/backend") -> list[Any]:
    key = dg.AssetKey([kind, *target.split("/")])
    return [
        e.event_specific_data.materialization
        for e in result.get_asset_materialization_events()
        if e.event_specific_data.materialization.asset_key == key
    ]


def meta(mat) -> dict[str, Any]:
    return {k: v.value for k, v in mat.metadata.items()}


def check_evaluations(result: dg.ExecuteInProcessResult) -> list[Any]:
    return [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]


def release(env, instance, **config) -> dg.ExecuteInProcessResult:
    return canary_release.execute_in_process(
        run_config={"ops": {"release": {"config": {"target": "prod/backend", "interval": "1s", **config}}}},
        resources={"playground": env.resource()},
        instance=instance,
        raise_on_error=False,
    )


def sync(env, instance) -> dg.ExecuteInProcessResult:
    return gitops_sync.execute_in_process(
        resources={"playground": env.resource()}, instance=instance, raise_on_error=False
    )


# --------------------------------------------------------------------------------------------------- sync


def test_invalid_manifest_commit_fails_the_sync_and_applies_nothing(playground) -> None:
    env = playground
    good = env.head()
    before = store_snapshot(env.home)
    env.commit(
        {
            # a valid change that must NOT be applied either ...
            BACKEND_DEPLOYMENT: with_env_var("GREETING", "never applied"),
            # ... because another manifest of the same commit is invalid
            "prod/frontend/canary.yaml": lambda t: t.replace("threshold: 10", "threshold: ten", 1),
        },
        "frontend: break the canary",
    )
    try:
        with dg.DagsterInstance.ephemeral() as instance:
            result = sync(env, instance)
        assert not result.success
        failure = result.get_step_failure_events()[0].event_specific_data.user_failure_data
        assert "invalid manifests, nothing applied" in failure.description
        report = failure.metadata["validation report"].value
        assert "prod/frontend/canary.yaml" in report and "threshold" in report
        assert "nothing was applied" in report
        assert store_snapshot(env.home) == before
        assert "GREETING" not in str(container(deployment(env, "backend")).get("env"))
    finally:
        env.reset_origin(good)
    with dg.DagsterInstance.ephemeral() as instance:
        assert sync(env, instance).success  # the origin is good again


# ------------------------------------------------------------------------------------------------ release


def test_canary_release_promotes_a_new_image(playground, tmp_path) -> None:
    env = playground
    old_image = container(deployment(env, "backend-primary"))["image"]
    image = new_podinfo_image()
    dagster_home = tmp_path / "dagster"  # a real instance on disk: `playground history` reads it afterwards
    dagster_home.mkdir()
    with dg.DagsterInstance.local_temp(str(dagster_home)) as instance:
        result = release(env, instance, image=image)
        assert result.success, result.get_step_failure_events()
        outcome = result.output_for_node("release")
        assert outcome["phase"] == "Succeeded", outcome
        revision = outcome["revision"]
        assert instance.has_dynamic_partition("revisions_prod_backend", revision)

    # the image was committed to git first (fluxctl release --update-image)
    assert f"image: {image} " in env.read(BACKEND_DEPLOYMENT)

    # one release materialization per tick, in order, all on the revision's partition
    ticks = [meta(m) for m in materializations(result, "releases")]
    assert [t["tick"] for t in ticks] == list(range(len(ticks))) and len(ticks) == outcome["ticks"]
    assert {m.partition for m in materializations(result, "releases")} == {revision}
    phases = [t["phase"] for t in ticks]
    assert phases[0] == "Progressing" and phases[-1] == "Succeeded"
    assert "Promoting" in phases and phases.index("Promoting") > phases.index("Progressing")
    # weights step 5..50 while progressing, never backwards, and routes follow them
    progressing = [t["canary_weight"] for t in ticks if t["phase"] == "Progressing"]
    assert progressing == sorted(progressing)
    steps = sorted(set(progressing) - {0})
    assert steps == list(range(5, 55, 5))
    for t in ticks:
        if t["phase"] == "Progressing":
            assert t["routes"] == f"{100 - t['canary_weight']}/{t['canary_weight']}"
    assert ticks[-1]["routes"] == "100/0"

    # every analysed tick recorded both metric checks; the promotion came after passing ones
    evals = check_evaluations(result)
    names = {e.check_name for e in evals}
    assert names == {"error_rate", "latency"}
    assert all(e.asset_key == dg.AssetKey(["release_metrics", "prod", "backend"]) for e in evals)
    assert all(e.partition == revision for e in evals)
    assert sum(e.passed for e in evals if e.check_name == "error_rate") >= len(steps)
    # one release_metrics materialization per analysed tick; a tick stops at its first failing metric
    assert len(materializations(result, "release_metrics")) == sum(e.check_name == "error_rate" for e in evals)
    assert sum(e.passed for e in evals if e.check_name == "latency") >= len(steps)
    metric_ticks = [t for t in ticks if "metric/error-rate" in t]
    assert len(metric_ticks) == len(materializations(result, "release_metrics"))
    assert sum(isinstance(t.get("metric/latency"), float) for t in metric_ticks) >= len(steps)

    promotions = materializations(result, "promotions")
    assert len(promotions) == 1 and promotions[0].partition == revision
    assert meta(promotions[0])["phase"] == "Succeeded" and meta(promotions[0])["revision"] == revision
    # the release window's metric history (Parquet) and chart (PNG) are attached to the promotion
    final = promotions[0].metadata
    assert final["history_rows"].value > 0, meta(promotions[0]).get("history")
    assert Path(final["history"].value).stat().st_size > 0
    chart = Path(final["chart"].value)
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and chart.stat().st_size > 10_000
    assert materializations(result, "rollbacks") == []

    # `playground history` (the installed console script, from outside the repository) lists the release
    shown = subprocess.run(
        [
            str(Path(sys.executable).parent / "playground"),
            "history",
            "--dagster-home",
            str(dagster_home),
            "--format",
            "json",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert shown.returncode == 0, shown.stderr
    (row,) = json.loads(shown.stdout)
    assert (row["target"], row["revision"], row["result"]) == ("prod/backend", revision, "Succeeded"), row
    assert row["worst_metric"] and float(row["duration_s"]) > 0

    # the primary now runs the new image, all traffic is on it, the canary is scaled to zero
    assert container(deployment(env, "backend-primary"))["image"] == image != old_image
    assert routes(env) == (100, 0)
    assert deployment(env, "backend")["spec"]["replicas"] == 0
    st = status(env)
    assert st.phase.value == "Succeeded" and st.lastPromotedSpec == revision == st.lastAppliedSpec

    # a second run for the same revision (e.g. queued behind this one) has nothing to do and records no
    # second promotion
    with dg.DagsterInstance.ephemeral() as instance:
        again = release(env, instance)
    assert again.success
    assert again.output_for_node("release")["phase"] == "Succeeded"
    assert again.output_for_node("release")["reason"].startswith("nothing to do")
    assert materializations(again, "promotions") == [] and materializations(again, "rollbacks") == []


def test_canary_release_rolls_back_a_faulty_release(playground) -> None:
    env = playground
    primary_before = container(deployment(env, "backend-primary"))
    env.commit({BACKEND_DEPLOYMENT: with_env_var("PODINFO_ERROR_RATE", "0.5")}, "backend: inject errors")
    try:
        with dg.DagsterInstance.ephemeral() as instance:
            synced = sync(env, instance)
            assert synced.success
            due = [meta(m) for m in materializations(synced, "workloads") if meta(m)["release_due"]]
            assert len(due) == 1
            result = release(env, instance)
            assert result.success, result.get_step_failure_events()
        outcome = result.output_for_node("release")
        assert outcome["phase"] == "Failed", outcome
        assert outcome["revision"] == due[0]["revision"]

        threshold = 10  # manifests/prod/backend/canary.yaml
        ticks = [meta(m) for m in materializations(result, "releases")]
        assert ticks[-1]["phase"] == "Failed" and ticks[-1]["routes"] == "100/0"
        assert max(t["failed_checks"] for t in ticks) >= threshold
        # every failed check is on record: a failing metric check evaluation (the injected 5xx, or no values yet
        # on the first analysis ticks) or, when the pre-rollout conformance test hit an injected error, that hook
        failed_ticks = [t for prev, t in zip(ticks, ticks[1:]) if t["failed_checks"] > prev["failed_checks"]]
        assert len(failed_ticks) >= threshold
        failed_evals = {e.check_name for e in check_evaluations(result) if not e.passed}
        assert "error_rate" in failed_evals

        def failing(value, limit) -> bool:  # "no values" fails too (before traffic reaches the canary)
            return value == "no values" or (isinstance(value, float) and value > limit)

        for t in failed_ticks:
            assert (
                failing(t.get("metric/error-rate"), 1)
                or failing(t.get("metric/latency"), 500)
                or "denied" in t["events"]
                or "failed" in t["events"]
            ), t
        rollbacks = materializations(result, "rollbacks")
        assert len(rollbacks) == 1 and rollbacks[0].partition == outcome["revision"]
        assert meta(rollbacks[0])["phase"] == "Failed" and meta(rollbacks[0])["failed_checks"] >= threshold
        assert materializations(result, "promotions") == []

        # all traffic on the primary, canary scaled to zero, the primary untouched
        assert routes(env) == (100, 0)
        assert deployment(env, "backend")["spec"]["replicas"] == 0
        primary = container(deployment(env, "backend-primary"))
        assert primary["image"] == primary_before["image"]
        assert "PODINFO_ERROR_RATE" not in str(primary.get("env"))
        assert status(env).phase.value == "Failed"
        r = env.get_via_mesh("http://backend.prod:9898/")
        assert r.status_code == 200
    finally:
        # put the origin back (the faulty line removed) and sync, so later tests start from a good backend
        env.commit({BACKEND_DEPLOYMENT: without_env_var("PODINFO_ERROR_RATE")}, "backend: revert error injection")
        with dg.DagsterInstance.ephemeral() as instance:
            assert sync(env, instance).success
