"""Sensors: Flux's git sync and image automation, Flagger's trigger, and alerts on failed runs.

- ``git_commit_sensor``: a new commit on the GitOps origin (cursor = last synced sha) -> ``gitops_sync``.
- ``release_on_sync``: a successful sync that changed a canary target's revision -> ``canary_release``
  (run key = target@revision, so each revision is released once).
- ``image_tag_sensor``: a newer image tag matching a workload's ImagePolicy -> a commit to the GitOps repo
  (the git sensor takes it from there).
- ``failed_run_alerts``: a failed run -> the canaries' alert providers, through the engine's notifiers.
"""

from typing import Any

import dagster as dg

from assets import GITOPS_COMMIT
from jobs import _target_of, canary_release, gitops_sync, release_run_tags, run_driver
from jobs.resources import PlaygroundResource

SENSOR_INTERVAL = 5
#: release_on_sync reads only the new run-status events since its cursor: cheap enough to look every 2 s, and
#: each second here is a second every release of a sync waits before it is even queued.
RELEASE_SENSOR_INTERVAL = 2


@dg.sensor(
    job=gitops_sync,
    minimum_interval_seconds=SENSOR_INTERVAL,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Launch gitops_sync for each new commit on the GitOps origin.",
)
def git_commit_sensor(context: dg.SensorEvaluationContext, playground: PlaygroundResource):
    from playground.gitops import GitError

    rt = playground.runtime()
    try:
        sha = rt.git("sensor").fetch()
    except (GitError, ValueError) as e:
        return dg.SkipReason(f"cannot read the GitOps origin: {e}")
    if sha == context.cursor:
        return dg.SkipReason(f"no new commit (HEAD {sha[:12]} already synced)")
    context.update_cursor(sha)
    # The GitOps revision is observed here, as it appears on the origin; gitops_sync materializes it once applied.
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=sha,
                run_config={"ops": {"sync_manifests": {"config": {"sha": sha}}}},
                tags={"gitops-playground/sha": sha},
            )
        ],
        asset_events=[dg.AssetObservation(GITOPS_COMMIT, metadata={"sha": sha}, tags={"dagster/data_version": sha})],
    )


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[gitops_sync],
    request_job=canary_release,
    minimum_interval_seconds=RELEASE_SENSOR_INTERVAL,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Request a canary_release run for every target whose revision a sync changed.",
)
def release_on_sync(context: dg.RunStatusSensorContext):
    requests = []
    records = context.instance.get_records_for_run(
        context.dagster_run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
    ).records
    for r in records:
        mat = r.event_log_entry.asset_materialization
        if mat is None or mat.asset_key.path[0] != "workloads":
            continue
        meta = {k: v.value for k, v in mat.metadata.items()}
        if not meta.get("release_due"):
            continue
        target = "/".join(mat.asset_key.path[1:])
        revision = meta["revision"]
        requests.append(
            dg.RunRequest(
                run_key=f"{target}@{revision}",
                run_config={"ops": {"release": {"config": {"target": target}}}},
                tags={**release_run_tags(target), "gitops-playground/revision": revision},
            )
        )
    return requests or dg.SkipReason("the sync changed no canary target")


@dg.sensor(
    minimum_interval_seconds=10,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Commit newer image tags that match a workload's ImagePolicy to the GitOps repository.",
)
def image_tag_sensor(context: dg.SensorEvaluationContext, playground: PlaygroundResource):
    from playground.gitops import GitError
    from playground.images import RegistryClient, RegistryError, scan_and_update

    rt = playground.runtime()
    registry_url = rt.registry_url()
    errors: list[str] = []
    try:
        updates = scan_and_update(
            rt.git("image-sensor"),
            RegistryClient(registry_url),  # the local playground's registry, or each image's own when None
            on_error=lambda key, e: errors.append(f"{key}: {e}"),
        )
    except (GitError, RegistryError, ValueError) as e:
        return dg.SkipReason(f"image scan failed: {e}")
    if updates:
        lines = [u.line() for u in updates]
        context.log.info("committed: " + "; ".join(lines))
        return dg.SkipReason("committed to the GitOps repo: " + "; ".join(lines))
    return dg.SkipReason("no newer image tag" + (f" ({'; '.join(errors)})" if errors else ""))


@dg.run_failure_sensor(
    monitored_jobs=[canary_release, gitops_sync],
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Alert the canaries' providers when a sync or release run fails.",
)
def failed_run_alerts(context: dg.RunFailureSensorContext, playground: PlaygroundResource):
    from playground.pipeline import alert_failed_run

    run = context.dagster_run
    message = context.failure_event.message or "run failed"
    run_config: dict[str, Any] = dict(run.run_config)
    target = (run_config.get("ops", {}).get("release", {}).get("config", {}) or {}).get("target")
    # run retries (the local dagster.yaml) relaunch a run whose worker died; the tag is set with the failure
    fresh = context.instance.get_run_by_id(run.run_id) or run
    will_retry = fresh.tags.get("dagster/will_retry") == "true"
    if will_retry:
        message += " (Dagster relaunches it; the release resumes from its persisted status)"
    # the resource closes its runtime after the evaluation
    for line in alert_failed_run(
        playground.runtime(), job=run.job_name, run_id=run.run_id, target=target, message=message
    ):
        context.log.info(line)
    if run.job_name == canary_release.name and target and not will_retry:
        # Nobody will drive this release any more: never leave the canary at a mid weight. Unless another run
        # holds the target (this run may have failed because of it), route all its traffic to the primary; a
        # later run resumes from the persisted status (weight 0).
        others = context.instance.get_runs(
            filters=dg.RunsFilter(
                job_name=canary_release.name,
                statuses=[
                    dg.DagsterRunStatus.QUEUED,
                    dg.DagsterRunStatus.NOT_STARTED,
                    dg.DagsterRunStatus.STARTING,
                    dg.DagsterRunStatus.STARTED,
                ],
            )
        )
        holders = [r.run_id for r in others if r.run_id != run.run_id and _target_of(r) == target]
        if holders:
            context.log.info(f"{target}: left to run {holders[0]}, which holds it")
        else:
            from playground.pipeline import route_to_primary

            route_to_primary(playground.runtime(), target, failed_driver=run_driver(run.run_id), log=context.log.info)


SENSORS = [git_commit_sensor, release_on_sync, image_tag_sensor, failed_run_alerts]
