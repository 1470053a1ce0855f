"""Instance storages of the local playground: Dagster's own SQLite and PostgreSQL storages (same tables, same
files), minus the cost of opening a database for every statement.

Dagster's storages open a new database connection for every read and write (``NullPool``); its SQLite storages
also create a new SQLAlchemy engine each time, so every statement is compiled again (an engine owns the
compiled-statement cache), and closing the last connection of a WAL database checkpoints it. Every event a run
records goes through that: a release tick (one log message, the step's materializations and asset checks) is
about a dozen connections. Measured on a job that records a tick's five events 40 times (SQLite, this
machine): 40-55 ms of CPU per tick with Dagster's storage, 11-12 ms with :class:`SqliteStorage`. On
PostgreSQL each statement was a new server connection (a backend process forked by the server), for the
daemon's sensors and run queue too.

- :class:`SqliteStorage`: ``DagsterSqliteStorage`` whose run, event log and schedule storages keep one engine
  per database file, each holding one connection open between uses (threads that need more at once get
  connections closed after use), and set ``PRAGMA synchronous=NORMAL`` (WAL mode: a commit does not wait for
  a disk flush; the database stays consistent, a machine crash may lose the last commits, as with the
  PostgreSQL server's ``synchronous_commit=off``). An event log storage keeps at most ``MAX_SHARD_ENGINES``
  run databases open (least recently used closed first).
- :class:`PostgresStorage`: ``DagsterPostgresStorage`` whose three storages share one engine with a small pool
  (one idle connection kept per process, checked with a ping before use; more at once when threads need them).

Configured by ``playground up`` in ``dagster.yaml`` as ``storage: custom: {module: launcher.storage, ...}``.
Dagster API: the storage classes are Dagster's documented storages, subclassed; ``connect`` / ``_connect`` are
the methods every one of their queries goes through, and ``_engine`` the engine the PostgreSQL ones connect
with (internal names: unavoidable, pinned with the Dagster release).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as db
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SQLITE_BUSY_TIMEOUT_SECONDS, SqliteEventLogStorage
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
from dagster._core.storage.schedules.sqlite.sqlite_schedule_storage import SqliteScheduleStorage
from dagster._core.storage.sqlite import create_db_conn_string
from dagster._core.storage.sqlite_storage import (
    DagsterSqliteStorage,
    _event_logs_directory,
    _runs_directory,
    _schedule_directory,
)
from dagster._utils import mkdir_p
from dagster_postgres import DagsterPostgresStorage
from dagster_postgres.utils import create_pg_engine, get_token_provider_from_config, pg_url_from_config
from sqlalchemy.pool import QueuePool

__all__ = ["PostgresStorage", "SqliteStorage"]

#: Engines an event log storage keeps (one per run database it touched, each with one open connection: three
#: file descriptors); the least recently used is closed beyond that.
MAX_SHARD_ENGINES = 64


def _sqlite_engine(conn_string: str, **connect_args: Any) -> db.engine.Engine:
    """An engine that keeps one connection open between uses (more at once when threads ask for them; those
    are closed after use). Closing the last connection of a WAL database checkpoints it: with a connection per
    statement, every event paid an open, a checkpoint and a close."""
    engine = db.create_engine(
        conn_string,
        poolclass=QueuePool,
        pool_size=1,
        max_overflow=-1,
        connect_args={**connect_args, "check_same_thread": False},  # a pooled connection serves any thread
    )

    @db.event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn, _record):  # WAL mode is set when the database is created
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    return engine


def _stamped(path: str, tables: tuple[str, ...]) -> bool:
    """Whether the SQLite database at ``path`` exists with ``tables`` and an Alembic revision stamped: Dagster
    then only reads the revision (loading its ~60 migration scripts, about 0.1 CPU-second per instance opened by
    a run worker) and does nothing else with it, so the check is skipped."""
    if not os.path.isfile(path):
        return False
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=SQLITE_BUSY_TIMEOUT_SECONDS)
    except sqlite3.Error:
        return False
    try:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"alembic_version", *tables} <= names:
            return False
        return conn.execute("SELECT version_num FROM alembic_version").fetchone() is not None
    except sqlite3.Error:
        return False
    finally:
        conn.close()


class _KeptOpen:
    """A run or schedule storage over one database file (``DATABASE``, holding ``TABLES`` once created) whose
    statements go through one kept-open engine, mixed in before Dagster's SQLite storage class."""

    DATABASE: str
    TABLES: tuple[str, ...]

    def __init__(self, conn_string: str, inst_data=None):
        super().__init__(conn_string, inst_data)  # type: ignore[call-arg]
        self._engine = _sqlite_engine(conn_string)

    @classmethod
    def from_local(cls, base_dir: str, inst_data=None):
        mkdir_p(base_dir)
        if _stamped(os.path.join(base_dir, f"{cls.DATABASE}.db"), cls.TABLES):
            return cls(create_db_conn_string(base_dir, cls.DATABASE), inst_data)
        return super().from_local(base_dir, inst_data)  # type: ignore[misc]

    @contextmanager
    def connect(self) -> Iterator[db.engine.Connection]:
        with self._engine.connect() as conn:
            with conn.begin():
                yield conn

    def dispose(self) -> None:
        super().dispose()  # type: ignore[misc]
        self._engine.dispose()


class _SqliteRunStorage(_KeptOpen, SqliteRunStorage):
    DATABASE, TABLES = "runs", ("runs", "instance_info")


class _SqliteScheduleStorage(_KeptOpen, SqliteScheduleStorage):
    DATABASE, TABLES = "schedules", ("job_ticks",)


class _SqliteEventLogStorage(SqliteEventLogStorage):
    def __init__(self, base_dir: str, inst_data=None):
        self._engines: OrderedDict[str, db.engine.Engine] = OrderedDict()
        super().__init__(base_dir, inst_data)

    @contextmanager
    def _connect(self, shard: str) -> Iterator[db.engine.Connection]:
        with self._db_lock:
            engine = self._engines.get(shard)
            if engine is None:
                engine = _sqlite_engine(self.conn_string_for_shard(shard), timeout=SQLITE_BUSY_TIMEOUT_SECONDS)
                if shard not in self._initialized_dbs:
                    self._initdb(engine)
                    self._initialized_dbs.add(shard)
                self._engines[shard] = engine
                while len(self._engines) > MAX_SHARD_ENGINES:
                    self._engines.popitem(last=False)[1].dispose()
            else:
                self._engines.move_to_end(shard)
            with engine.connect() as conn:
                with conn.begin():
                    yield conn

    def _initdb(self, engine: db.engine.Engine, for_index_shard: bool = False) -> None:
        if not _stamped(str(engine.url.database), ("event_logs",)):
            super()._initdb(engine, for_index_shard=for_index_shard)

    def upgrade(self) -> None:
        super().upgrade()
        self._drop_engines()

    def wipe(self) -> None:
        self._drop_engines()  # closes the run databases' connections before their files go
        super().wipe()
        self._drop_engines()

    def _drop_engines(self) -> None:
        with self._db_lock:
            for engine in self._engines.values():
                engine.dispose()
            self._engines.clear()

    def dispose(self) -> None:
        super().dispose()
        self._drop_engines()


class SqliteStorage(DagsterSqliteStorage):
    """``DagsterSqliteStorage`` with one engine per database file (see the module docstring)."""

    def __init__(self, base_dir: str, inst_data=None):
        self.base_dir = base_dir
        self._run_storage = _SqliteRunStorage.from_local(_runs_directory(base_dir))
        self._event_log_storage = _SqliteEventLogStorage(_event_logs_directory(base_dir))
        self._schedule_storage = _SqliteScheduleStorage.from_local(_schedule_directory(base_dir))
        self._inst_data = inst_data
        super(DagsterSqliteStorage, self).__init__()

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls.from_local(inst_data=inst_data, **config_value)  # Dagster's names DagsterSqliteStorage itself


# ------------------------------------------------------------------------------------------- PostgreSQL

_PG_ENGINES: dict[tuple[str, int], db.engine.Engine] = {}
_PG_LOCK = threading.Lock()


def _pg_engine(url: str) -> db.engine.Engine:
    """One pooled engine per URL and process (a forked process gets its own: connections are not shared across
    processes)."""
    key = (url, os.getpid())
    with _PG_LOCK:
        engine = _PG_ENGINES.get(key)
        if engine is None:
            engine = create_pg_engine(
                url,
                None,
                isolation_level="AUTOCOMMIT",
                pool_size=1,
                max_overflow=-1,  # as many at once as threads ask for; one stays open between uses
                pool_pre_ping=True,  # a connection the server dropped (restart) is replaced, not used
                pool_recycle=3600,
            )
            _PG_ENGINES[key] = engine
        return engine


class PostgresStorage(DagsterPostgresStorage):
    """``DagsterPostgresStorage`` whose run, event log and schedule storages share one pooled engine."""

    def __init__(self, postgres_url: str, should_autocreate_tables: bool = True, inst_data=None, token_provider=None):
        super().__init__(postgres_url, should_autocreate_tables, inst_data=inst_data, token_provider=token_provider)
        if token_provider is None:  # a token provider hooks each new connection of Dagster's own engines: kept
            engine = _pg_engine(postgres_url)
            for storage in (self._run_storage, self._event_log_storage, self._schedule_storage):
                storage._engine = engine

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls(
            inst_data=inst_data,
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
        )
