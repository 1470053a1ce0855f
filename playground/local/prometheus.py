"""Prometheus configuration for the local playground: Envoy's upstream stats under Istio's metric names.

The local mesh's Envoy names its clusters after destination workloads (``<namespace>_<workload>``, see
``envoy/``). Envoy's ``/stats/prometheus`` then exposes, per cluster::

    envoy_cluster_upstream_rq{envoy_cluster_name="prod_backend",envoy_response_code="200"}   counter
    envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="prod_backend",le="5"}          histogram (ms)
    envoy_cluster_upstream_rq_time_sum / _count

(``envoy_cluster_upstream_rq_xx{envoy_response_code_class="2"}`` and ``envoy_cluster_upstream_rq_total`` are
the per-class and overall counters.) ``metric_relabel_configs`` rename, at scrape time, the first to
``istio_requests_total{reporter="destination",destination_workload_namespace="prod",
destination_workload="backend",response_code="200"}`` and the histogram to
``istio_request_duration_milliseconds_{bucket,sum,count}`` with the same labels, so the Istio queries of
Flagger's MetricTemplates run unchanged. The series stay counters (only their names and labels change), so
``rate()`` works on them. A cluster name with anything but exactly one ``_`` (``extra__...``,
``noendpoints__...``) is not a workload and keeps its Envoy name. Of Envoy's other series only a short list
useful for debugging is kept (upstream/downstream request counters, connections, membership, server
liveness); the thousands of others are dropped at scrape time.

TCP: the local mesh's tcp_proxy destinations are clusters ``tcp_<namespace>_<workload>``; their connection and
byte counters become Istio's ``istio_tcp_connections_opened_total``, ``istio_tcp_connections_closed_total``,
``istio_tcp_sent_bytes_total`` and ``istio_tcp_received_bytes_total`` (reporter destination, same workload labels),
the metrics a TCP canary's MetricTemplates query on Istio.

Workloads' own ``/metrics`` are scraped through ``file_sd`` (a JSON targets file the node agent rewrites with
``write_targets``), each target labelled ``namespace``, ``workload`` and ``pod``, and ``kubernetes_namespace`` /
``kubernetes_pod_name`` as the ``kubernetes-pods`` job of a cluster's Prometheus labels them (the pod names are
``<deployment>-<revision hash>-<index>``, shaped like Kubernetes' ``<deployment>-<replicaset hash>-<suffix>``).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from playground.fsutil import replace_if_changed

__all__ = [
    "ENVOY_JOB",
    "WORKLOADS_JOB",
    "prometheus_args",
    "prometheus_binary",
    "relabel_envoy_to_istio",
    "render_config",
    "workload_target",
    "write_targets",
]

ENVOY_JOB = "envoy"
WORKLOADS_JOB = "workloads"

# namespace (DNS label) "_" workload (Deployment name): exactly one underscore.
_WORKLOAD_CLUSTER = r"([^_]+)_([^_]+)"
_ISTIO_SOURCES = r"envoy_cluster_upstream_rq(_time_bucket|_time_sum|_time_count)?"

# Envoy series kept besides the ones renamed to Istio names.
_KEPT_ENVOY = (
    "envoy_cluster_upstream_rq(_time_bucket|_time_sum|_time_count)?"
    "|envoy_cluster_upstream_rq_(total|xx|retry|retry_success|timeout|active|pending_active|per_try_timeout)"
    "|envoy_cluster_upstream_cx_(active|total|connect_fail|destroy_remote_with_active_rq|destroy|rx_bytes_total"
    "|tx_bytes_total)"
    "|envoy_cluster_membership_(healthy|total)"
    "|envoy_http_downstream_rq_(total|xx|active)"
    "|envoy_http_downstream_cx_active"
    "|envoy_listener_downstream_cx_active"
    "|envoy_server_(live|uptime|memory_allocated|total_connections)"
)


_TCP_METRICS = {
    "envoy_cluster_upstream_cx_total": "istio_tcp_connections_opened_total",
    "envoy_cluster_upstream_cx_destroy": "istio_tcp_connections_closed_total",
    "envoy_cluster_upstream_cx_rx_bytes_total": "istio_tcp_sent_bytes_total",
    "envoy_cluster_upstream_cx_tx_bytes_total": "istio_tcp_received_bytes_total",
}


def _tcp_relabels() -> list[dict[str, Any]]:
    names = "|".join(_TCP_METRICS)
    tcp_series = {
        "source_labels": ["__name__", "envoy_cluster_name"],
        "separator": ";",
        "regex": f"({names});tcp_{_WORKLOAD_CLUSTER}",
    }
    out: list[dict[str, Any]] = [
        {**tcp_series, "target_label": "destination_workload_namespace", "replacement": "$2"},
        {**tcp_series, "target_label": "destination_workload", "replacement": "$3"},
        {**tcp_series, "target_label": "reporter", "replacement": "destination"},
    ]
    for envoy_name, istio_name in _TCP_METRICS.items():
        out.append(
            {
                "source_labels": ["__name__", "envoy_cluster_name"],
                "separator": ";",
                "regex": f"{envoy_name};tcp_{_WORKLOAD_CLUSTER}",
                "target_label": "__name__",
                "replacement": istio_name,
            }
        )
    return out


def relabel_envoy_to_istio() -> list[dict[str, Any]]:
    """``metric_relabel_configs`` turning Envoy upstream stats of workload clusters into Istio metrics."""
    workload_series = {
        "source_labels": ["__name__", "envoy_cluster_name"],
        "separator": ";",
        "regex": f"{_ISTIO_SOURCES};{_WORKLOAD_CLUSTER}",
    }
    return [
        # 1. Drop the Envoy series nobody reads (thousands per scrape otherwise).
        {"source_labels": ["__name__"], "regex": _KEPT_ENVOY, "action": "keep"},
        # 2. Workload clusters: Istio's destination labels from the cluster name <namespace>_<workload>.
        {**workload_series, "target_label": "destination_workload_namespace", "replacement": "$2"},
        {**workload_series, "target_label": "destination_workload", "replacement": "$3"},
        {**workload_series, "target_label": "reporter", "replacement": "destination"},
        {**workload_series, "target_label": "request_protocol", "replacement": "http"},
        # 3. The response code of the per-code counter.
        {
            "source_labels": ["__name__", "destination_workload", "envoy_response_code"],
            "separator": ";",
            "regex": "envoy_cluster_upstream_rq;.+;(.+)",
            "target_label": "response_code",
            "replacement": "$1",
        },
        # 4. Istio names (still a counter and a histogram: rate() and histogram_quantile() work as on Istio).
        {
            "source_labels": ["__name__", "destination_workload"],
            "separator": ";",
            "regex": "envoy_cluster_upstream_rq;.+",
            "target_label": "__name__",
            "replacement": "istio_requests_total",
        },
        {
            "source_labels": ["__name__", "destination_workload"],
            "separator": ";",
            "regex": "envoy_cluster_upstream_rq_time_(bucket|sum|count);.+",
            "target_label": "__name__",
            "replacement": "istio_request_duration_milliseconds_$1",
        },
        # 5. TCP clusters (tcp_<namespace>_<workload>, the local mesh's tcp_proxy destinations): Istio's TCP
        #    metrics, reporter destination. Sent/received are the destination's view: what the upstream
        #    connection received from it is what it sent.
        *_tcp_relabels(),
        # 6. The Envoy labels are now redundant on Istio series (an empty value removes a label).
        {"source_labels": ["__name__"], "regex": "istio_.+", "target_label": "envoy_cluster_name", "replacement": ""},
        {"source_labels": ["__name__"], "regex": "istio_.+", "target_label": "envoy_response_code", "replacement": ""},
    ]


def render_config(
    *,
    scrape_interval: str = "1s",
    envoy_admin: str | Sequence[str],
    workload_targets: list[dict[str, Any]] | None = None,
    file_sd_path: Path | None = None,
) -> dict[str, Any]:
    """A prometheus.yml (as a dict) scraping Envoy's admin ``envoy_admin`` (``host:port``, or a list of them: one
    per Envoy process) and the workloads.

    ``workload_targets``: static_configs entries (``{"targets": ["127.0.0.1:9898"], "labels": {...}}``) scraped
    at ``/metrics``; ``file_sd_path``: a JSON file of the same entries, re-read when it changes (see
    ``write_targets``). Either, both or neither may be given.
    """
    admins = [envoy_admin] if isinstance(envoy_admin, str) else list(envoy_admin)
    for admin in admins or [""]:
        if not admin or ":" not in admin:
            raise ValueError(f"envoy_admin must be host:port, got {admin!r}")
    jobs: list[dict[str, Any]] = [
        {
            "job_name": ENVOY_JOB,
            "metrics_path": "/stats/prometheus",
            "static_configs": [{"targets": admins, "labels": {"component": "envoy"}}],
            "metric_relabel_configs": relabel_envoy_to_istio(),
        }
    ]
    if workload_targets or file_sd_path is not None:
        job: dict[str, Any] = {"job_name": WORKLOADS_JOB, "metrics_path": "/metrics"}
        if workload_targets:
            job["static_configs"] = [dict(t) for t in workload_targets]
        if file_sd_path is not None:
            job["file_sd_configs"] = [{"files": [str(Path(file_sd_path).resolve())], "refresh_interval": "5s"}]
        jobs.append(job)
    return {
        "global": {
            "scrape_interval": scrape_interval,
            "scrape_timeout": scrape_interval,
            "evaluation_interval": scrape_interval,
        },
        "scrape_configs": jobs,
    }


def workload_target(address: str, *, namespace: str, workload: str, pod: str) -> dict[str, Any]:
    """One file_sd / static_configs entry for a workload replica serving ``/metrics`` at ``address``.

    Besides the playground's own ``namespace``/``workload``/``pod`` labels, each target carries
    ``kubernetes_namespace`` and ``kubernetes_pod_name``, the labels the classic ``kubernetes-pods`` scrape job
    (and Flagger's bundled Prometheus) copies from ``__meta_kubernetes_namespace``/``__meta_kubernetes_pod_name``:
    the built-in metrics of the kubernetes provider (``playground.metrics.HTTP_QUERIES``) select the pods by them.
    """
    return {
        "targets": [address],
        "labels": {
            "namespace": namespace,
            "workload": workload,
            "pod": pod,
            "kubernetes_namespace": namespace,
            "kubernetes_pod_name": pod,
        },
    }


def write_targets(path: Path, targets: Iterable[dict[str, Any]]) -> bool:
    """Atomically (re)write a file_sd JSON targets file; return True if its content changed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return replace_if_changed(path, json.dumps(list(targets), indent=1, sort_keys=True) + "\n")


def prometheus_args(
    config_path: Path, data_dir: Path, port: int, *, retention: str = "2d", log_level: str = "warn"
) -> list[str]:
    """The command line of a local Prometheus: 127.0.0.1 only, its own TSDB directory, short retention,
    reload through ``POST /-/reload`` (``--web.enable-lifecycle``)."""
    return [
        prometheus_binary(),
        f"--config.file={Path(config_path).resolve()}",
        f"--storage.tsdb.path={Path(data_dir).resolve()}",
        f"--storage.tsdb.retention.time={retention}",
        f"--web.listen-address=127.0.0.1:{int(port)}",
        "--web.enable-lifecycle",
        f"--log.level={log_level}",
    ]


def prometheus_binary() -> str:
    """``$PROMETHEUS_BIN``, else ``prometheus`` on PATH; a clear error naming the Debian package otherwise."""
    env = os.environ.get("PROMETHEUS_BIN")
    if env:
        return env
    found = shutil.which("prometheus") or ("/usr/bin/prometheus" if os.access("/usr/bin/prometheus", os.X_OK) else None)
    if found:
        return found
    raise RuntimeError(
        "the prometheus binary was not found; install the Debian package `prometheus` "
        "(apt-get install prometheus) or set PROMETHEUS_BIN"
    )
