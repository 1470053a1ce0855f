"""The Dagster instance `playground up` writes: Dagster itself loads it (SQLite and PostgreSQL variants), the run
queue starts runs from a thread pool, and bad --storage values give a one-line error naming the fix."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
from dagster._core.instance.config import dagster_instance_config
from dagster._core.storage.event_log import SqliteEventLogStorage
from dagster._core.storage.runs import SqliteRunStorage

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
    (tmp_path / "dagster.yaml").write_text(dagster_yaml(base_dir=str(tmp_path)))
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        rc = instance.run_coordinator
        assert type(rc).__name__ == "QueuedRunCoordinator"
        assert rc.dequeue_use_threads and rc.dequeue_num_workers == DEQUEUE_WORKERS
        queue = instance.get_concurrency_config().run_queue_config
        assert queue.max_concurrent_runs == MAX_CONCURRENT_RUNS
        limits = {(t["key"], str(t.get("value"))): t["limit"] for t in queue.tag_concurrency_limits}
        assert limits[("gitops-playground/target", "{'applyLimitPerUniqueValue': True}")] == 1
        assert limits[("dagster/job_name", "gitops_sync")] == 1
        # Dagster's SQLite storages in the instance's directory, one engine per database file (launcher.storage)
        assert isinstance(instance.run_storage, SqliteRunStorage)
        assert isinstance(instance.event_log_storage, SqliteEventLogStorage)
        assert (tmp_path / "history" / "runs.db").is_file() and (tmp_path / "schedules" / "schedules.db").is_file()
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
    storage = config["storage"]["custom"]
    assert (storage["module"], storage["class"]) == ("launcher.storage", "PostgresStorage")
    assert storage["config"]["postgres_url"] == "postgresql+psycopg2://dagster@127.0.0.1:5999/dagster"
    assert config["run_coordinator"]["config"]["dequeue_use_threads"] is True


@pytest.mark.integration  # Dagster's compute log capture starts `tail` processes
def test_sqlite_storage_records_events_with_one_engine_per_database(tmp_path: Path) -> None:
    """The instance's SQLite event log keeps one engine per run database across events (Dagster's creates one per
    statement, so every statement is compiled again), and a second process's instance reads what it wrote."""
    (tmp_path / "dagster.yaml").write_text(dagster_yaml(base_dir=str(tmp_path)))

    @dg.op
    def tick(context):
        for i in range(3):
            context.log_event(dg.AssetMaterialization(["releases", "ns", "app"], metadata={"tick": i}))
            context.log_event(
                dg.AssetCheckEvaluation(  # type: ignore[arg-type]
                    asset_key=dg.AssetKey(["release_metrics", "ns", "app"]), check_name="latency", passed=i != 1
                )
            )
            context.log.info(f"tick {i}")

    @dg.job
    def release() -> None:
        tick()

    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        result = release.execute_in_process(instance=instance)
        assert result.success
        storage = instance.event_log_storage
        engines = dict(storage._engines)  # type: ignore[attr-defined]
        assert result.run_id in engines  # the run's own database, created on its first event
        instance.all_logs(result.run_id)
        assert storage._engines[result.run_id] is engines[result.run_id]  # type: ignore[attr-defined]
    with dg.DagsterInstance.from_config(str(tmp_path)) as reader:
        mats = reader.fetch_materializations(dg.AssetKey(["releases", "ns", "app"]), limit=10).records
        assert sorted(r.asset_materialization.metadata["tick"].value for r in mats) == [0, 1, 2]  # type: ignore[union-attr]
        logs = [e.user_message for e in reader.all_logs(result.run_id) if e.dagster_event is None]
        assert [m for m in logs if m.startswith("tick ")] == ["tick 0", "tick 1", "tick 2"]
        check = reader.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(dg.AssetKey(["release_metrics", "ns", "app"]), "latency")]
        )
        assert check[dg.AssetCheckKey(dg.AssetKey(["release_metrics", "ns", "app"]), "latency")].run_id == result.run_id
