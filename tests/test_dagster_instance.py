"""The Dagster instance `playground up` writes: Dagster itself loads it (SQLite and PostgreSQL variants), the run
queue starts runs from a thread pool, and bad --storage values give a one-line error naming the fix."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
from dagster._core.instance.config import dagster_instance_config

from playground.local.dagster_instance import (
    DEQUEUE_WORKERS,
    MAX_CONCURRENT_RUNS,
    StorageError,
    dagster_yaml,
    parse_storage,
    process_env,
)


def test_storage_values() -> None:
    assert parse_storage(None).kind == "sqlite" and parse_storage("sqlite").dsn is None
    pg = parse_storage("postgres")
    assert pg.kind == "postgres" and pg.managed_postgres
    ext = parse_storage("postgresql://dagster:secret@db.example:5432/dagster")
    assert ext.kind == "postgres" and not ext.managed_postgres
    assert "secret" not in ext.describe() and "db.example:5432" in ext.describe()


@pytest.mark.parametrize(
    "value, fix",
    [("mysql", "use sqlite (default), postgres"), ("postgresql://host-only", "needs a host and a database")],
)
def test_bad_storage_is_one_clear_line(value: str, fix: str) -> None:
    with pytest.raises(StorageError) as e:
        parse_storage(value)
    assert fix in str(e.value) and "--storage" in str(e.value) and "\n" not in str(e.value)


def test_sqlite_instance_starts_queued_runs_from_a_thread_pool(tmp_path: Path) -> None:
    (tmp_path / "dagster.yaml").write_text(dagster_yaml())
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        rc = instance.run_coordinator
        assert type(rc).__name__ == "QueuedRunCoordinator"
        assert rc.dequeue_use_threads and rc.dequeue_num_workers == DEQUEUE_WORKERS
        queue = instance.get_concurrency_config().run_queue_config
        assert queue.max_concurrent_runs == MAX_CONCURRENT_RUNS
        limits = {(t["key"], str(t.get("value"))): t["limit"] for t in queue.tag_concurrency_limits}
        assert limits[("gitops-playground/target", "{'applyLimitPerUniqueValue': True}")] == 1
        assert limits[("dagster/job_name", "gitops_sync")] == 1
        assert type(instance.run_storage).__name__ == "SqliteRunStorage"
        assert instance.get_sensor_settings()["num_submit_workers"] == 8  # one sync's N requests submitted together
        # a run whose worker died is launched again (resuming from the persisted canary status), not an op failure
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 3
        assert not instance.run_retries_retry_on_asset_or_op_failure
    # the code servers accept as many concurrent run launches as the queue has threads
    env = process_env()
    assert int(env["DAGSTER_GRPC_MAX_WORKERS"]) > DEQUEUE_WORKERS
    assert int(env["DAGSTER_CODE_SERVER_MAX_WORKERS"]) > DEQUEUE_WORKERS


def test_postgres_instance_config_is_valid_and_uses_psycopg2(tmp_path: Path) -> None:
    (tmp_path / "dagster.yaml").write_text(dagster_yaml("postgresql://dagster@127.0.0.1:5999/dagster"))
    config, _ = dagster_instance_config(str(tmp_path))  # Dagster's own schema validation
    assert config["storage"]["postgres"]["postgres_url"] == "postgresql+psycopg2://dagster@127.0.0.1:5999/dagster"
    assert config["run_coordinator"]["config"]["dequeue_use_threads"] is True
