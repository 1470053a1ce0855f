"""Asset graph of the GitOps repository and its releases (thin: specs only, recorded by jobs).

Lineage as the UI shows it::

    gitops/commit -> cluster/{mesh,gateway,prometheus,metric_templates,namespaces,loadtester}
                  -> workloads/<ns>/<name> -> releases/<ns>/<name> -> release_metrics/<ns>/<name> (+ checks)
                                                                   -> promotions/<ns>/<name>
                                                                   -> rollbacks/<ns>/<name>

Releases, their metrics, promotions and rollbacks are partitioned by revision (a dynamic partition per new
revision of a target). The assets are recorded by the ``gitops_sync`` and ``canary_release`` jobs as each
step happens (a release is materialized once per traffic step), so they are declared here as specs, not as
functions to run: one way of doing each thing, in the engine.

The targets come from the GitOps revision the last sync applied (``assets.graph``, ``definitions.py``), so the
graph follows the GitOps repository. The metric checks are also executable on their own (UI "Execute", or
``dagster asset check``): they evaluate the metric now against Prometheus (``playground.pipeline.check_metrics_now``).
"""

from __future__ import annotations

import dagster as dg

from playground.pipeline import COMPONENTS, Target, check_name

GITOPS_COMMIT = dg.AssetKey(["gitops", "commit"])


def component_key(name: str) -> dg.AssetKey:
    return dg.AssetKey(["cluster", name])


def revisions(target: Target) -> dg.DynamicPartitionsDefinition:
    return dg.DynamicPartitionsDefinition(name=target.partitions_name)


def target_assets(target: Target) -> tuple[list[dg.AssetSpec], dg.AssetChecksDefinition | None]:
    parts = revisions(target)
    ns, name = target.namespace, target.name
    workload = dg.AssetSpec(
        ["workloads", ns, name],
        deps=[GITOPS_COMMIT, component_key("mesh"), component_key("metric_templates"), component_key("namespaces")],
        description=f"Deployment {ns}/{name} as applied from git (its revision = pod template + configs).",
        group_name="workloads",
        kinds={"kubernetes"},
    )
    release = dg.AssetSpec(
        ["releases", ns, name],
        deps=[workload.key],
        partitions_def=parts,
        description=f"Canary analysis of {ns}/{name} ({target.strategy}): one materialization per traffic step.",
        group_name="releases",
        kinds={"istio"},
    )
    metrics = dg.AssetSpec(
        ["release_metrics", ns, name],
        deps=[release.key],
        partitions_def=parts,
        description=f"Metric values measured at each analysis tick of {ns}/{name}; checks per metric.",
        group_name="releases",
        kinds={"prometheus"},
    )
    promotion = dg.AssetSpec(
        ["promotions", ns, name],
        deps=[release.key],
        partitions_def=parts,
        group_name="releases",
        description=f"Promotion of a revision of {ns}/{name} to the primary.",
    )
    rollback = dg.AssetSpec(
        ["rollbacks", ns, name],
        deps=[release.key],
        partitions_def=parts,
        group_name="releases",
        description=f"Rollback of a revision of {ns}/{name}: all traffic back on the primary.",
    )
    checks = None
    if target.metrics:
        specs = [
            dg.AssetCheckSpec(
                check_name(m),
                asset=metrics.key,
                description=f"metric {m} of {target.key}: judged at every analysis tick of a release; executed "
                "on its own, evaluated now against Prometheus (the canary while a release runs, else the primary)",
            )
            for m in target.metrics
        ]
        checks = metric_checks(target, metrics.key, specs)
    return [workload, release, metrics, promotion, rollback], checks


def metric_checks(target: Target, key: dg.AssetKey, specs: list[dg.AssetCheckSpec]) -> dg.AssetChecksDefinition:
    """The target's metric checks, executable: each evaluates its metric now and passes or fails by its
    thresholds, with the value, the query and the workload measured as metadata."""

    @dg.multi_asset_check(
        specs=specs,
        name=f"metric_checks_{target.ident}",
        can_subset=True,
        required_resource_keys={"playground"},
    )
    def _checks(context):
        from playground.pipeline import check_metrics_now

        selected = {k.name for k in context.selected_asset_check_keys}
        now = check_metrics_now(context.resources.playground.runtime(), target.key, names=selected)
        for c in now.checks:
            context.log.info(f"{target.key}: {c.message} (measured on {now.workload})")
            yield dg.AssetCheckResult(
                asset_key=key,
                check_name=check_name(c.name),
                passed=c.passed,
                severity=dg.AssetCheckSeverity.ERROR,
                metadata={
                    "value": c.value if c.value is not None else "no values",
                    "message": c.message,
                    "query": dg.MetadataValue.text(c.query or ""),
                    "workload": now.workload,
                    "phase": now.phase or "-",
                },
            )

    return _checks


def build_assets(targets: list[Target]) -> tuple[list[dg.AssetSpec], list[dg.AssetChecksDefinition]]:
    specs = [
        dg.AssetSpec(
            GITOPS_COMMIT,
            description="HEAD of the GitOps repository: observed by git_commit_sensor when a "
            "commit appears on the origin (data version = sha), materialized by gitops_sync once applied.",
            group_name="gitops",
            kinds={"git"},
        ),
    ]
    for name, description in COMPONENTS.items():
        specs.append(
            dg.AssetSpec(component_key(name), deps=[GITOPS_COMMIT], description=description, group_name="cluster")
        )
    checks = []
    for t in targets:
        s, c = target_assets(t)
        specs.extend(s)
        if c is not None:
            checks.append(c)
    return specs, checks
