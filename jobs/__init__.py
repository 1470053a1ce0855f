"""Jobs: ``gitops_sync`` (git -> cluster), ``canary_release`` (one target's progressive delivery) and
``canary_control`` (an operator's promote / abort / retry / pause / resume of a release).

Both are thin: the engine does the work (``playground.pipeline.sync``, ``playground.controller.Controller``);
the ops record what happened as asset materializations and asset check evaluations, and log progress.
"""

import time
from typing import Any, Literal

import dagster as dg

from assets import GITOPS_COMMIT, component_key
from jobs.resources import PlaygroundResource
from playground import pipeline
from playground.controller import TickRecord
from playground.models import Phase
from playground.pipeline import TARGET_TAG, Target, check_name

# ------------------------------------------------------------------------------------------------ sync


class SyncConfig(dg.Config):
    sha: str | None = None  # the commit the sensor saw (the sync applies the origin's HEAD, recorded)


@dg.op(
    description="Validate every manifest of the GitOps HEAD, then apply them all in dependency order; the asset "
    "graph follows the applied revision's canary targets.",
    out=dg.Out(dict),
)
def sync_manifests(context: dg.OpExecutionContext, config: SyncConfig, playground: PlaygroundResource):
    from playground.gitops import SyncError

    rt = playground.runtime()
    try:
        outcome = pipeline.sync(rt)
    except SyncError as e:
        raise dg.Failure(
            description=str(e).splitlines()[0],
            metadata={"validation report": dg.MetadataValue.md("```\n" + str(e) + "\n```")},
        ) from e
    result = outcome.result
    targets = outcome.targets()
    context.log.info(f"synced {outcome.sha[:12]}: {outcome.plan.summary()}")
    fin = result.finalizers
    for key in fin.finalized if fin is not None else []:
        context.log.info(f"{key}: deleted with revertOnDeletion: target reverted, primary and routes removed")
    for err in fin.errors if fin is not None else []:
        context.log.warning(err)
    # Recorded first (the event is stored before the op goes on): the code location builds its graph from it.
    yield dg.AssetMaterialization(
        GITOPS_COMMIT,
        metadata={
            "sha": outcome.sha,
            "message": outcome.message,
            "applied": len(result.applied),
            "unchanged": len(result.unchanged),
            "targets": dg.MetadataValue.text(pipeline.targets_to_json(targets)),
        },
    )
    _follow_graph(context, targets)
    for comp, keys in outcome.components().items():
        yield dg.AssetMaterialization(
            component_key(comp), metadata={"sha": outcome.sha, "objects": dg.MetadataValue.json(keys)}
        )
    for t in result.targets:
        ns, name = t.canary.split("/")
        yield dg.AssetMaterialization(
            ["workloads", ns, name],
            metadata={
                "sha": outcome.sha,
                "revision": t.new_revision,
                "previous_revision": t.old_revision or "",
                "release_due": t.changed,
            },
        )
        if t.changed:
            context.log.info(
                f"{t.canary}: new revision {t.new_revision} (was {t.old_revision or 'none'}): "
                "a canary_release run will be requested"
            )
    yield dg.Output(
        {
            "sha": outcome.sha,
            "targets": [t.key for t in targets],
            "releases": [{"target": t.canary, "revision": t.new_revision} for t in result.changed_targets],
        }
    )


def _follow_graph(context: dg.OpExecutionContext, targets: list[Target]) -> None:
    """Make the running Dagster show the applied targets before anything is recorded on their assets: when the
    webserver's graph differs, reload the code location through its GraphQL API and wait for the new graph."""
    import os

    from assets.graph import (
        DAGSTER_URL_ENV,
        TARGET_KINDS,
        GraphReloadError,
        graph_asset_keys,
        reload_graph,
        target_keys,
    )

    url = os.environ.get(DAGSTER_URL_ENV)
    if not url:
        context.log.info(
            f"{DAGSTER_URL_ENV} is not set: the asset graph shows the new targets when the code location reloads"
        )
        return
    try:
        have = {k for k in graph_asset_keys(url) if len(k) == 3 and k[0] in TARGET_KINDS}
        if have == target_keys(targets):
            return
        took = reload_graph(url, targets, log=context.log.info)
        context.log.info(
            f"asset graph reloaded in {took:.1f}s: {len(targets)} canary target(s): "
            + (", ".join(t.key for t in targets) or "none")
        )
    except GraphReloadError as e:
        context.log.warning(f"the asset graph does not follow this sync yet: {e}")


@dg.job(
    description="Sync the cluster to the GitOps repository (validate all, then apply all).",
    executor_def=dg.in_process_executor,
)
def gitops_sync():
    sync_manifests()


# --------------------------------------------------------------------------------------------- release


class ReleaseConfig(dg.Config):
    target: str  # namespace/name of the Canary, e.g. prod/backend
    image: str | None = None  # commit this image to the target's Deployment first (fluxctl release --update-image)
    interval: str | None = None  # analysis interval override, e.g. "2s" (default: the Canary's)
    max_ticks: int | None = None


class ReleaseRecorder:
    """Turns controller ticks into asset events: one release materialization per tick, one check per metric,
    and ONE log message per tick (the controller's own lines of that tick are folded into it: every event-log
    write of a run costs, and many releases share one instance)."""

    def __init__(self, context: dg.OpExecutionContext, target: Target):
        self.context = context
        self.target = target
        self.started = time.monotonic()
        self.ticks = 0
        self.active = False  # whether this run drove the release (not only found it already finished)
        self._partitions: set[str] = set()
        self._pending: list[str] = []  # the controller's log lines since the last tick

    def controller_log(self, line: str) -> None:
        """The controller's ``log``: kept for the next tick's message (see ``flush`` for the lines after)."""
        self._pending.append(line)

    def flush(self) -> None:
        """Log the controller lines no tick message carried (e.g. routing to the primary on termination)."""
        if self._pending:
            self.context.log.info("\n".join(self._pending))
            self._pending.clear()

    def key(self, kind: str) -> dg.AssetKey:
        return dg.AssetKey([kind, self.target.namespace, self.target.name])

    def _partition(self, revision: str) -> str:
        if revision not in self._partitions:
            inst = self.context.instance
            if not inst.has_dynamic_partition(self.target.partitions_name, revision):
                inst.add_dynamic_partitions(self.target.partitions_name, [revision])
            self._partitions.add(revision)
        return revision

    def on_tick(self, rec: TickRecord) -> None:
        self.ticks += 1
        if rec.phase not in (Phase.Initialized, Phase.Succeeded, Phase.Failed) or rec.result.actions:
            self.active = True
        st = rec.state.status
        routes = rec.state.routes
        part = self._partition(rec.revision)
        metric_values = {c.name: c.value for c in rec.result.checks}
        meta: dict[str, Any] = {
            "tick": rec.tick,
            "phase": st.phase.value,
            "routes": f"{routes.primary}/{routes.canary}" + (" +mirror" if routes.mirror else ""),
            "canary_weight": st.canaryWeight,
            "iterations": st.iterations,
            "failed_checks": st.failedChecks,
            "revision": rec.revision,
            "events": dg.MetadataValue.md("\n".join(f"- {e}" for e in rec.result.events) or "-"),
        }
        for name, value in metric_values.items():
            meta[f"metric/{name}"] = value if value is not None else "no values"
        for i in rec.result.interventions:
            meta[f"operator/{i.request.action.value}"] = f"{'applied' if i.applied else 'ignored'}: {i.outcome}"
        self.context.log_event(dg.AssetMaterialization(self.key("releases"), partition=part, metadata=meta))
        for i in rec.result.interventions:  # every manual intervention, on the release's lineage
            record_intervention(
                self.context, self.key("releases"), part, i.request, applied=i.applied, outcome=i.outcome, tick=rec.tick
            )
        if rec.result.checks:
            self.context.log_event(
                dg.AssetMaterialization(
                    self.key("release_metrics"),
                    partition=part,
                    metadata={
                        "tick": rec.tick,
                        **{n: (v if v is not None else "no values") for n, v in metric_values.items()},
                    },
                )
            )
        for c in rec.result.checks:
            # log_event records asset check evaluations too (its type hint lists only the older event kinds)
            self.context.log_event(
                dg.AssetCheckEvaluation(  # type: ignore[arg-type]
                    asset_key=self.key("release_metrics"),
                    check_name=check_name(c.name),
                    passed=c.passed,
                    partition=part,
                    metadata={
                        "value": c.value if c.value is not None else "no values",
                        "message": c.message,
                        "query": dg.MetadataValue.text(c.query or ""),
                        "tick": rec.tick,
                    },
                )
            )
        checks = ", ".join(
            f"{c.name}={'-' if c.value is None else round(c.value, 3)}{'' if c.passed else ' FAIL'}"
            for c in rec.result.checks
        )
        # the controller logged each event as "<target>: <event>": the tick line carries them already
        echoed = {f"{self.target.key}: {e}" for e in rec.result.events}
        extra = [line for line in self._pending if line not in echoed]
        self._pending.clear()
        self.context.log.info(
            f"tick {rec.tick}: {st.phase.value} routes {routes.primary}/{routes.canary}"
            f"{' mirror' if routes.mirror else ''} weight {st.canaryWeight} iterations {st.iterations} "
            f"failedChecks {st.failedChecks}"
            + (f" | {checks}" if checks else "")
            + (f" | {'; '.join(rec.result.events)}" if rec.result.events else "")
            + "".join(f"\n{line}" for line in extra)
        )

    def finish(self, rec: TickRecord, reason: str) -> dict:
        st = rec.state.status
        part = self._partition(rec.revision)
        outcome = {
            "target": self.target.key,
            "revision": rec.revision,
            "phase": st.phase.value,
            "ticks": self.ticks,
            "duration_s": round(time.monotonic() - self.started, 1),
            "failed_checks": st.failedChecks,
            "reason": reason,
        }
        if st.phase in (Phase.Succeeded, Phase.Failed) and not self.active:
            # The run found the revision already promoted or rolled back (e.g. it was queued behind the run that
            # released it): the promotion or rollback is already recorded; do not record it a second time.
            outcome["reason"] = f"nothing to do: revision {rec.revision} is already {st.phase.value}"
        elif st.phase in (Phase.Succeeded, Phase.Failed):
            from assets.history import attach_release_history  # metric history + chart of the release window

            meta = {**outcome, **attach_release_history(self.context, self.target, rec, outcome)}
            kind = "promotions" if st.phase == Phase.Succeeded else "rollbacks"
            self.context.log_event(dg.AssetMaterialization(self.key(kind), partition=part, metadata=meta))
        return outcome


def record_intervention(context, key: dg.AssetKey, partition: str, request, *, applied, outcome: str, **extra) -> None:
    """An operator request as an observation of the release asset: what, when, by whom, applied by which run."""
    context.log_event(
        dg.AssetObservation(
            key,
            partition=partition,
            metadata={
                "operator_action": request.action.value,
                "requested_by": request.by,
                "requested_at": request.at or "",
                "request_id": request.id,
                "applied": "queued" if applied is None else ("applied" if applied else "ignored"),
                "outcome": outcome,
                "recorded_by_run": context.run_id,
                **extra,
            },
        )
    )


def _reason(rec: TickRecord) -> str:
    events = list(rec.result.events)
    return events[-1] if events else rec.state.status.phase.value


def _target_of(run: dg.DagsterRun) -> str | None:
    run_config: dict[str, Any] = dict(run.run_config or {})
    return (run_config.get("ops", {}).get("release", {}).get("config", {}) or {}).get("target")


def _refuse_concurrent_release(context: dg.OpExecutionContext, target: str, interval: float) -> None:
    """One release per target at a time. Runs launched by the sensors carry the target tag, so the run queue
    serialises them; a run launched by hand without the tag must not drive the same canary as another.

    A release run logs at least one event per analysis tick. One that has been silent for three intervals (and
    at least 60 s) lost its worker (killed hard: the local run launcher cannot tell); it is marked failed so that
    this run takes over and resumes from the persisted canary status."""
    active = context.instance.get_runs(
        filters=dg.RunsFilter(
            job_name="canary_release", statuses=[dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]
        )
    )
    stale_after = max(60.0, 3 * interval)
    for run in active:
        if run.run_id == context.run_id or _target_of(run) != target:
            continue
        last = context.instance.get_records_for_run(run.run_id, ascending=False, limit=1).records
        silent = time.time() - last[0].event_log_entry.timestamp if last else float("inf")
        if silent > stale_after:
            context.instance.report_run_failed(
                run, f"taken over by run {context.run_id}: no event for {silent:.0f}s (its worker is gone)"
            )
            context.log.warning(f"{target}: run {run.run_id} was silent for {silent:.0f}s: marked failed, resuming")
            continue
        raise dg.Failure(
            description=f"{target} is already being released by run {run.run_id}: one canary_release per target "
            f'at a time. Launch with --tags \'{{"{TARGET_TAG}": "{target.replace("/", "-")}"}}\' '
            f"to queue behind it instead, or terminate that run first (a run whose worker died is "
            f"taken over after {stale_after:.0f}s without events)."
        )


def run_driver(run_id: str) -> str:
    """How a run names itself as the driver of a release (``CanaryStatus.driver``): the release op, a control run,
    and the failed-run sensor that makes a release safe on behalf of a run all use this name."""
    return f"dagster run {run_id}"


@dg.op(description="Drive the canary analysis of one target tick by tick until it is promoted or rolled back.")
def release(context: dg.OpExecutionContext, config: ReleaseConfig, playground: PlaygroundResource) -> dict:
    from playground.durations import parse_duration

    rt = playground.runtime()
    ns, _, name = config.target.partition("/")
    ctl = rt.controller(log=context.log.info, interval=parse_duration(config.interval) if config.interval else None)
    _refuse_concurrent_release(context, config.target, ctl.interval(ctl.canary(config.target)))
    ctl.driver = run_driver(context.run_id)  # named in the status: operator controls wait for it
    if config.image:
        from playground.images import set_workload_image

        with ctl.claimed(config.target):  # a sensor's run for the commit follows this release, never drives it too
            sha = set_workload_image(rt.git(f"release-{ns}-{name}"), config.target, config.image)
            context.log.info(f"{config.target}: committed image {config.image} ({sha[:12]}); syncing")
            synced = pipeline.sync(rt, purpose=f"release-{ns}-{name}")
            context.log.info(f"synced {synced.sha[:12]}: {synced.plan.summary()}")
    canary = ctl.canary(config.target)
    target = pipeline.target_of(canary)
    recorder = ReleaseRecorder(context, target)
    context.log.info(f"{target.key}: {target.strategy} release, interval {ctl.interval(canary):g}s")
    ctl.log = recorder.controller_log
    try:
        final = ctl.run(config.target, on_tick=recorder.on_tick, max_ticks=config.max_ticks)
    except (dg.DagsterExecutionInterruptedError, KeyboardInterrupt):
        recorder.flush()
        context.log.warning(f"{config.target}: run terminated: routing all traffic to the primary")
        ctl.make_safe(config.target)
        recorder.flush()
        raise
    except Exception:
        recorder.flush()  # what the controller said before it failed
        raise
    recorder.flush()
    outcome = recorder.finish(final, _reason(final))
    context.log.info(
        f"{config.target}: {outcome['phase']} after {outcome['ticks']} ticks "
        f"({outcome['duration_s']}s, {outcome['failed_checks']} failed checks)"
    )
    return outcome


@dg.job(
    description="Progressive delivery of one canary target: every traffic step, metric check, promotion "
    "and rollback is recorded on the target's release assets.",
    executor_def=dg.in_process_executor,
)
def canary_release():
    release()


# --------------------------------------------------------------------------------------------- control


class ControlConfig(dg.Config):
    """An operator control of one release (`playground promote|abort|retry|pause|resume` from the Launchpad)."""

    target: str  # namespace/name of the Canary, e.g. prod/backend
    action: Literal["promote", "abort", "retry", "pause", "resume"]
    full: bool = False  # promote: skip the remaining steps and promote now
    by: str | None = None  # who asks (recorded with the request); default: this run
    interval: str | None = None  # analysis interval override when this run has to drive the release itself
    wait_seconds: float | None = None  # how long to wait for the driving release to apply it


@dg.op(
    description="Queue an operator control for a release; the run driving it applies it at its next tick (this "
    "run drives the release itself when none does). Recorded on the release asset."
)
def control_release(context: dg.OpExecutionContext, config: ControlConfig, playground: PlaygroundResource) -> dict:
    from playground.control import ControlError, control
    from playground.durations import parse_duration
    from playground.models import ControlAction

    action = ControlAction.promote_full if config.action == "promote" and config.full else ControlAction(config.action)
    by = config.by or f"dagster run {context.run_id[:8]}"
    rt = playground.runtime()
    interval = parse_duration(config.interval) if config.interval else None
    recorder: list[ReleaseRecorder] = []

    def on_tick(rec: TickRecord) -> None:
        if not recorder:
            ctl = rt.controller(log=context.log.info, interval=interval)
            recorder.append(ReleaseRecorder(context, pipeline.target_of(ctl.canary(config.target))))
        recorder[0].on_tick(rec)

    try:
        res = control(
            rt,
            config.target,
            action,
            by=by,
            log=context.log.info,
            on_tick=on_tick,
            driver=run_driver(context.run_id),
            wait=config.wait_seconds,
            interval=interval,
        )
    except ControlError as e:
        raise dg.Failure(description=str(e)) from e
    except (dg.DagsterExecutionInterruptedError, KeyboardInterrupt):
        context.log.warning(f"{config.target}: run terminated: routing all traffic to the primary")
        ctl = rt.controller(log=context.log.info)
        ctl.driver = run_driver(context.run_id)  # the driver this run recorded, if it drove the release
        ctl.make_safe(config.target)
        raise
    context.log.info(res.line())
    ns, name = config.target.split("/")
    revision = (res.status.lastAppliedSpec if res.status else None) or "unknown"
    part = ReleaseRecorder(context, Target(ns, name))._partition(revision)
    if not res.records:  # applied by another run (its ticks record it too) or still queued
        record_intervention(
            context,
            dg.AssetKey(["releases", ns, name]),
            part,
            res.request,
            applied=res.applied,
            outcome=res.outcome,
            applied_by=res.applied_by,
        )
    if res.records:
        final = res.records[-1]
        if final.phase in (Phase.Succeeded, Phase.Failed):
            recorder[0].finish(final, _reason(final))
    return {
        "target": config.target,
        "action": action.value,
        "by": by,
        "applied": res.applied,
        "outcome": res.outcome,
        "applied_by": res.applied_by,
        "phase": res.status.phase.value if res.status else None,
    }


@dg.job(
    description="An operator control of one release: promote (or promote --full), abort, retry, pause, resume. "
    "Recorded as an observation of the release asset (what, when, by whom, applied by which run).",
    executor_def=dg.in_process_executor,
)
def canary_control():
    control_release()


def release_run_tags(target: str) -> dict[str, str]:
    """Tags of a canary_release run: the target tag carries the one-run-per-target concurrency limit."""
    return {TARGET_TAG: target.replace("/", "-")}
