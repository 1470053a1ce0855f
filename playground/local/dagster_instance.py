"""The Dagster instance of the local playground: ``$PLAYGROUND_HOME/dagster/dagster.yaml``, written by ``up``.

Storage (``playground up --storage``):

==========================  ============================================================================
``sqlite`` (default)        Dagster's embedded SQLite storage in ``$PLAYGROUND_HOME/dagster`` (nothing to run)
``postgres``                a PostgreSQL server started by ``up`` for this home (``playground.local.postgres``)
``postgresql://...``        an existing PostgreSQL server (a DSN; the database must exist)
==========================  ============================================================================

Run launcher: ``launcher.ZygoteRunLauncher`` forks each run worker from a pre-imported zygote process (a launch
returns in milliseconds and costs no import), with Dagster's default launcher (through the code server) as its
fallback.

Run queue: the daemon's QueuedRunCoordinator starts queued runs from a pool of threads (``dequeue_use_threads``),
so that N releases requested by one sync start together instead of one launch after another; one
``canary_release`` per target at a time and one ``gitops_sync`` at a time (tag concurrency limits).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from playground.errors import PlaygroundError

__all__ = [
    "DEQUEUE_WORKERS",
    "MAX_CONCURRENT_RUNS",
    "PRELOAD_MODULES",
    "Storage",
    "StorageError",
    "dagster_yaml",
    "parse_storage",
    "process_env",
]

#: Runs in progress at once (each release is one run worker process of ~100 MB).
MAX_CONCURRENT_RUNS = 64
#: Threads of the run queue that start runs concurrently (each launch waits for its worker process to load).
DEQUEUE_WORKERS = 16


#: Modules the run worker zygote imports before forking (besides Dagster and the code location).
PRELOAD_MODULES = (
    "playground.local.cluster",
    "playground.local.envoy",
    "playground.metrics",
    "prometheus_api_client",
    "requests",
    "upath",
)


class StorageError(PlaygroundError, ValueError):
    """An unusable ``--storage`` value; the message says what to pass."""


@dataclass(frozen=True)
class Storage:
    kind: str  # "sqlite" or "postgres"
    dsn: str | None = None  # an external server's DSN; None with kind "postgres" = the playground's own server

    @property
    def managed_postgres(self) -> bool:
        return self.kind == "postgres" and self.dsn is None

    def describe(self) -> str:
        if self.kind == "sqlite":
            return "sqlite"
        return "postgres" if self.dsn is None else _redact(self.dsn)


def _redact(dsn: str) -> str:
    """The DSN without its password (for messages and env.json)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def parse_storage(value: str | None) -> Storage:
    """``sqlite``, ``postgres`` or a ``postgresql://user[:password]@host[:port]/database`` DSN."""
    v = (value or "sqlite").strip()
    if v == "sqlite":
        return Storage("sqlite")
    if v in ("postgres", "postgresql"):
        return Storage("postgres")
    if v.startswith(("postgresql://", "postgres://")):
        from urllib.parse import urlsplit

        parts = urlsplit(v)
        if not parts.hostname or not parts.path.strip("/"):
            raise StorageError(
                f"--storage {_redact(v)}: a PostgreSQL DSN needs a host and a database, "
                "e.g. postgresql://dagster:secret@127.0.0.1:5432/dagster"
            )
        return Storage("postgres", v)
    raise StorageError(
        f"--storage {v!r}: use sqlite (default), postgres (a server started for this playground) "
        "or a DSN postgresql://user:password@host:port/database"
    )


_QUEUE = f"""\
# every run worker is forked from a process that imported Dagster and the code location once (launcher.zygote):
# a launch costs a fork, not a fresh interpreter's imports; launcher.ZygoteRunLauncher falls back to Dagster's
# default launcher (through the code server) when the zygote cannot start
run_launcher:
  module: launcher
  class: ZygoteRunLauncher
  config:
    # imported by the zygote too: what a release run imports on its first tick (the local backend, its Envoy
    # renderer, the Prometheus client), so that no worker pays for it
    preload_modules: {json.dumps(list(PRELOAD_MODULES))}
run_coordinator:
  module: dagster._core.run_coordinator
  class: QueuedRunCoordinator
  config:
    # start queued runs from a thread pool: the releases of one sync start together
    dequeue_use_threads: true
    dequeue_num_workers: {DEQUEUE_WORKERS}
    dequeue_interval_seconds: 1
concurrency:
  runs:
    max_concurrent_runs: {MAX_CONCURRENT_RUNS}
    tag_concurrency_limits:
      # one canary_release run per target at a time
      - key: "gitops-playground/target"
        value:
          applyLimitPerUniqueValue: true
        limit: 1
      # one gitops_sync at a time
      - key: "dagster/job_name"
        value: "gitops_sync"
        limit: 1
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  poll_interval_seconds: 5
# A run whose worker died (killed, out of memory) is launched again by the daemon with the same config and tags
# (so behind the same concurrency limits); canary_release resumes from the canary status persisted after every
# tick. A run that failed in its op (a refused or invalid release) is not retried.
run_retries:
  enabled: true
  max_retries: 3
  retry_on_asset_or_op_failure: false
sensors:
  use_threads: true
  num_workers: 4
  # the N run requests of one sync are submitted to the queue concurrently
  num_submit_workers: 8
"""


def process_env() -> dict[str, str]:
    """Environment of the Dagster processes (inherited by the code server's gRPC server): a code server answers a
    run launch only once the run's worker process has loaded the code location, so its gRPC thread pool (by
    default CPUs + 4) would cap the launches in flight below the run queue's threads."""
    workers = str(DEQUEUE_WORKERS + 8)
    # the shared code server (``dagster code-server start``) forwards launches from its own thread pool to the
    # gRPC server it runs: both pools are sized
    return {"DAGSTER_GRPC_MAX_WORKERS": workers, "DAGSTER_CODE_SERVER_MAX_WORKERS": workers}


def dagster_yaml(postgres_url: str | None = None, base_dir: str | None = None) -> str:
    """The instance configuration: SQLite storage in ``base_dir`` (the instance's directory; default
    ``$DAGSTER_HOME`` as each process sees it), or PostgreSQL at ``postgres_url``."""
    text = "# Written by `playground up`.\ntelemetry:\n  enabled: false\nnux:\n  enabled: false\n" + _QUEUE
    # Dagster's storages (same tables and files), minus a new engine / server connection per statement:
    # launcher.storage
    if postgres_url:
        # the driver dagster-postgres installs (SQLAlchemy's plain postgresql:// would ask for psycopg 3)
        for scheme in ("postgresql://", "postgres://"):
            if postgres_url.startswith(scheme):
                postgres_url = "postgresql+psycopg2://" + postgres_url[len(scheme) :]
        config = f"      postgres_url: {json.dumps(postgres_url)}\n"
        cls = "PostgresStorage"
    else:
        config = (
            f"      base_dir: {json.dumps(base_dir)}\n" if base_dir else "      base_dir:\n        env: DAGSTER_HOME\n"
        )
        cls = "SqliteStorage"
    text += f"storage:\n  custom:\n    module: launcher.storage\n    class: {cls}\n    config:\n{config}"
    return text
