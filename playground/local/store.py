"""The local playground's object store: SQLite at ``$PLAYGROUND_HOME/state.db``.

Several processes share it at the same time (the CLI, Dagster run processes, the node agent), so the database
runs in WAL mode with a busy timeout, and every write is one ``BEGIN IMMEDIATE`` transaction.

Tables:

``objects``
    Kubernetes-style objects keyed by (API group, kind, namespace, name) with their JSON body, a
    ``resourceVersion`` taken from one global, monotonic counter (also the store's *change counter*: any
    create, replace or delete increments it, so a poller only compares one integer) and a ``generation`` that
    increments when anything but ``metadata``/``status`` changes. Writes are optimistic: a caller that passes
    the ``resourceVersion`` it read gets :class:`~playground.cluster.base.Conflict` when the object changed.
``workload_status``
    One row per Deployment written by the node agent (desired/updated/ready/available counts of the current
    pod revision, the replicas with their pids and ports, an error message, progress times).
``canary_status``
    The persisted status of each Canary (JSON), versioned for compare-and-set.

This module also knows the layout of ``$PLAYGROUND_HOME`` (:class:`Home`) and reads/writes ``env.json``, the
record of the running environment's processes and ports, which every local component consults.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from playground.cluster.base import ClusterError, Conflict, NotFound
from playground.fsutil import atomic_write

__all__ = [
    "Home",
    "Store",
    "WorkloadRow",
    "ReplicaInfo",
    "default_home",
    "object_key",
    "group_of",
    "CLUSTER_SCOPED",
]

try:  # the manifest loader's list of cluster-scoped kinds, so both agree on which objects have no namespace
    from playground.manifests import CLUSTER_SCOPED
except ImportError:  # pragma: no cover - the loader is part of the same distribution
    CLUSTER_SCOPED = frozenset({"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"})

BUSY_TIMEOUT_MS = 30_000


# ------------------------------------------------------------------------------------------------ home


def default_home() -> Path:
    """``$PLAYGROUND_HOME``, or ``./.playground`` (absolute)."""
    return Path(os.environ.get("PLAYGROUND_HOME") or ".playground").absolute()


@dataclass(frozen=True)
class Home:
    """Paths inside ``$PLAYGROUND_HOME``."""

    root: Path

    @classmethod
    def of(cls, home: str | os.PathLike[str] | None = None) -> Home:
        return cls(Path(home).absolute() if home is not None else default_home())

    @property
    def db(self) -> Path:
        return self.root / "state.db"

    @property
    def env_file(self) -> Path:
        return self.root / "env.json"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def envoy_dir(self) -> Path:
        return self.root / "envoy"

    @property
    def envoy_lock(self) -> Path:
        return self.root / "envoy.lock"

    @property
    def envoy_rendered(self) -> Path:
        """The store's change counter whose objects the Envoy configuration on disk was rendered from."""
        return self.root / "envoy.rendered"

    @property
    def prometheus_dir(self) -> Path:
        return self.root / "prometheus"

    @property
    def file_sd(self) -> Path:
        """Prometheus file_sd targets of the workloads' /metrics, written by the node agent."""
        return self.prometheus_dir / "targets.json"

    @property
    def registry_dir(self) -> Path:
        return self.root / "registry"

    @property
    def git_origin(self) -> Path:
        return self.root / "git" / "gitops.git"

    @property
    def allowlist(self) -> Path:
        """Commands the loadtester may run: every webhook ``metadata.cmd`` of every Canary."""
        return self.root / "loadtester-allowlist.json"

    def replica_log(self, namespace: str, deployment: str, index: int) -> Path:
        return self.logs / f"{namespace}_{deployment}-{index}.log"

    # -- env.json -------------------------------------------------------------------------------------------
    def read_env(self) -> dict[str, Any] | None:
        """The running environment's record (``{"ports": {...}, "components": {...}}``), or None."""
        try:
            return json.loads(self.env_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def write_env(self, env: dict[str, Any]) -> None:
        atomic_write(self.env_file, json.dumps(env, indent=2, sort_keys=True) + "\n")

    def ports(self) -> dict[str, int] | None:
        env = self.read_env()
        return dict(env.get("ports") or {}) if env else None


# --------------------------------------------------------------------------------------------- objects


def group_of(api_version: str) -> str:
    """API group of an apiVersion (``""`` for the core group): ``apps/v1`` -> ``apps``, ``v1`` -> ``""``."""
    return (api_version or "").rpartition("/")[0]


def object_key(api_version: str, kind: str, namespace: str | None, name: str) -> tuple[str, str, str, str]:
    """Store key: (group, kind, namespace, name); the namespace is ``""`` for cluster-scoped kinds and
    ``default`` when a namespaced object has none."""
    if kind in CLUSTER_SCOPED:
        ns = ""
    else:
        ns = namespace or "default"
    return group_of(api_version), kind, ns, name


def _spec_digest(obj: dict[str, Any]) -> str:
    """Digest of everything that is not metadata or status (what bumps ``metadata.generation``)."""
    rest = {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}
    return hashlib.sha256(json.dumps(rest, sort_keys=True, default=str).encode()).hexdigest()


def _now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ------------------------------------------------------------------------------------- workload status


@dataclass
class ReplicaInfo:
    """One replica process of a Deployment, as the node agent last saw it."""

    index: int
    revision: str
    pid: int | None
    port: int
    state: str  # starting | running | ready | crashed | backoff | stopping
    ready: bool = False
    restarts: int = 0
    start_time: float = 0.0  # epoch seconds when the process was started
    proc_start_ticks: int | None = None  # /proc/<pid>/stat starttime, to recognise the process after a restart
    log: str = ""
    message: str = ""


@dataclass
class WorkloadRow:
    """Status of one Deployment written by the node agent.

    Counts refer to the pod *revision* the agent is working toward (``revision``: hash of the pod template and
    of the data of the ConfigMaps/Secrets it references). ``last_progress`` is when the revision changed or
    when the last replica of it became ready (the Deployment's progress deadline counts from there);
    ``unavailable_since`` is since when fewer than ``desired`` replicas of the revision are ready.
    """

    namespace: str
    name: str
    revision: str = ""
    revision_since: float = 0.0
    generation: int = 0  # metadata.generation of the Deployment the agent acted on
    desired: int = 0
    updated: int = 0
    ready: int = 0
    available: int = 0
    total: int = 0  # replica processes of every revision (old ones linger during a rolling replacement)
    replicas: list[ReplicaInfo] = field(default_factory=list)
    image: str = ""
    message: str = ""
    error: bool = False  # the message is an error (unknown image, crash loop) rather than progress information
    last_progress: float = 0.0
    unavailable_since: float | None = None
    updated_at: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> WorkloadRow:
        d = json.loads(text)
        d["replicas"] = [ReplicaInfo(**r) for r in d.get("replicas") or []]
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


# ------------------------------------------------------------------------------------------------ store


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS objects (
    grp              TEXT NOT NULL,
    kind             TEXT NOT NULL,
    namespace        TEXT NOT NULL,
    name             TEXT NOT NULL,
    body             TEXT NOT NULL,
    spec_digest      TEXT NOT NULL,
    resource_version INTEGER NOT NULL,
    generation       INTEGER NOT NULL,
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL,
    PRIMARY KEY (grp, kind, namespace, name)
);
CREATE INDEX IF NOT EXISTS objects_kind ON objects (kind, namespace);
CREATE TABLE IF NOT EXISTS workload_status (
    namespace  TEXT NOT NULL,
    name       TEXT NOT NULL,
    body       TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (namespace, name)
);
CREATE TABLE IF NOT EXISTS canary_status (
    namespace  TEXT NOT NULL,
    name       TEXT NOT NULL,
    body       TEXT NOT NULL,
    version    INTEGER NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (namespace, name)
);
INSERT OR IGNORE INTO meta (key, value) VALUES ('objects', 0), ('status', 0);
"""


class Store:
    """Access to ``state.db``. One instance per process (thread-safe); cheap to create.

    ``change_counter()`` is the highest resourceVersion handed out (objects); ``status_counter()`` increments on
    every workload-status or canary-status write.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(
            str(self.path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
        )
        self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":  # pragma: no cover - e.g. a file system without shared memory
            raise ClusterError(f"{self.path}: SQLite could not switch to WAL mode (got {mode})")
        self._conn.execute("PRAGMA synchronous = NORMAL")
        with self._lock:
            self._conn.executescript("BEGIN IMMEDIATE;" + _SCHEMA + "COMMIT;")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- transactions -------------------------------------------------------------------------------------
    @contextmanager
    def _write(self) -> Iterator[sqlite3.Cursor]:
        """One write transaction, taken with BEGIN IMMEDIATE (the write lock up front: no upgrade deadlocks)."""
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            else:
                cur.execute("COMMIT")

    def _read(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    @staticmethod
    def _bump(cur: sqlite3.Cursor, counter: str) -> int:
        cur.execute("UPDATE meta SET value = value + 1 WHERE key = ?", (counter,))
        return int(cur.execute("SELECT value FROM meta WHERE key = ?", (counter,)).fetchone()[0])

    # -- counters -----------------------------------------------------------------------------------------
    def change_counter(self) -> int:
        """Increments on every object create/replace/delete (equal to the newest resourceVersion)."""
        return int(self._read("SELECT value FROM meta WHERE key = 'objects'")[0][0])

    def status_counter(self) -> int:
        """Increments on every workload or canary status write."""
        return int(self._read("SELECT value FROM meta WHERE key = 'status'")[0][0])

    def set_meta(self, key: str, value: int) -> None:
        """Set an integer in the meta table (e.g. the node agent's heartbeat); no counter moves."""
        if key in ("objects", "status"):
            raise ValueError(f"{key} is a counter of the store")
        with self._write() as cur:
            cur.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, int(value)),
            )

    def get_meta(self, key: str) -> int | None:
        rows = self._read("SELECT value FROM meta WHERE key = ?", (key,))
        return int(rows[0][0]) if rows else None

    # -- objects ------------------------------------------------------------------------------------------
    def put(self, obj: dict[str, Any], expected_version: int | str | None = None) -> dict[str, Any]:
        """Create or replace ``obj``; return it as stored (with resourceVersion, generation, uid, timestamps).

        ``expected_version``: the resourceVersion the caller read (``0`` = must not exist yet). A mismatch raises
        :class:`Conflict`; ``None`` writes unconditionally.
        """
        api_version, kind = obj.get("apiVersion"), obj.get("kind")
        meta = obj.get("metadata") or {}
        name = meta.get("name")
        if not api_version or not kind or not name:
            raise ClusterError(f"cannot store an object without apiVersion, kind and metadata.name: {obj!r:.200}")
        key = object_key(api_version, kind, meta.get("namespace"), name)
        body = json.loads(json.dumps(obj))  # a private deep copy, and proof that it is JSON
        digest = _spec_digest(body)
        now = time.time()
        with self._write() as cur:
            row = cur.execute(
                "SELECT resource_version, generation, spec_digest, body FROM objects "
                "WHERE grp = ? AND kind = ? AND namespace = ? AND name = ?",
                key,
            ).fetchone()
            current = int(row[0]) if row else 0
            if expected_version is not None and int(expected_version) != current:
                what = f"{kind} {_display(key)}"
                if current == 0:
                    raise Conflict(f"{what} does not exist any more (expected resourceVersion {expected_version})")
                raise Conflict(
                    f"{what} was changed by someone else (resourceVersion {current}, expected {expected_version}): "
                    "read it again and retry"
                )
            rv = self._bump(cur, "objects")
            if row:
                old_meta = json.loads(row[3]).get("metadata") or {}
                generation = int(row[1]) + (1 if row[2] != digest else 0)
                uid = old_meta.get("uid") or str(uuid.uuid4())
                created = old_meta.get("creationTimestamp") or _now_rfc3339()
            else:
                generation, uid, created = 1, str(uuid.uuid4()), _now_rfc3339()
            m = body.setdefault("metadata", {})
            if key[2]:
                m["namespace"] = key[2]
            else:
                m.pop("namespace", None)
            m["resourceVersion"] = str(rv)
            m["generation"] = generation
            m["uid"] = uid
            m["creationTimestamp"] = created
            cur.execute(
                "INSERT INTO objects (grp, kind, namespace, name, body, spec_digest, resource_version, generation, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (grp, kind, namespace, name) DO UPDATE SET body = excluded.body, "
                "spec_digest = excluded.spec_digest, resource_version = excluded.resource_version, "
                "generation = excluded.generation, updated_at = excluded.updated_at",
                (*key, json.dumps(body, sort_keys=True), digest, rv, generation, now, now),
            )
        return body

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        rows = self._read(
            "SELECT body FROM objects WHERE grp = ? AND kind = ? AND namespace = ? AND name = ?",
            object_key(api_version, kind, namespace, name),
        )
        return json.loads(rows[0][0]) if rows else None

    def list(self, api_version: str | None, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """Objects of a kind (``api_version`` None: of any group), optionally in one namespace, by name."""
        sql, args = "SELECT body FROM objects WHERE kind = ?", [kind]
        if api_version is not None:
            sql += " AND grp = ?"
            args.append(group_of(api_version))
        if namespace is not None:
            sql += " AND namespace = ?"
            args.append(namespace)
        sql += " ORDER BY namespace, name, grp"
        return [json.loads(r[0]) for r in self._read(sql, tuple(args))]

    def list_kinds(self, kinds: tuple[str, ...] | builtins.list[str]) -> builtins.list[dict[str, Any]]:
        """Every object of the given kinds (any group, any namespace), in one consistent read."""
        if not kinds:
            return []
        marks = ",".join("?" * len(kinds))
        rows = self._read(
            f"SELECT body FROM objects WHERE kind IN ({marks}) ORDER BY kind, namespace, name", tuple(kinds)
        )
        return [json.loads(r[0]) for r in rows]

    def updated_at(self, api_version: str, kind: str, namespace: str | None, name: str) -> float | None:
        """Epoch seconds of the object's last write."""
        rows = self._read(
            "SELECT updated_at FROM objects WHERE grp = ? AND kind = ? AND namespace = ? AND name = ?",
            object_key(api_version, kind, namespace, name),
        )
        return float(rows[0][0]) if rows else None

    def delete(
        self, api_version: str, kind: str, namespace: str | None, name: str, expected_version: int | str | None = None
    ) -> bool:
        key = object_key(api_version, kind, namespace, name)
        with self._write() as cur:
            row = cur.execute(
                "SELECT resource_version FROM objects WHERE grp = ? AND kind = ? AND namespace = ? AND name = ?", key
            ).fetchone()
            if row is None:
                return False
            if expected_version is not None and int(expected_version) != int(row[0]):
                raise Conflict(
                    f"{kind} {_display(key)} was changed by someone else (resourceVersion {row[0]}, "
                    f"expected {expected_version}): read it again and retry"
                )
            cur.execute("DELETE FROM objects WHERE grp = ? AND kind = ? AND namespace = ? AND name = ?", key)
            self._bump(cur, "objects")
        return True

    def update(self, api_version: str, kind: str, namespace: str | None, name: str, mutate, retries: int = 20):
        """Read-modify-write with optimistic concurrency: ``mutate(obj)`` changes a copy in place (or returns a
        new dict); retried on :class:`Conflict`. Raises :class:`NotFound` when the object does not exist."""
        for _ in range(retries):
            obj = self.get(api_version, kind, namespace, name)
            if obj is None:
                raise NotFound(f"{kind} {_display(object_key(api_version, kind, namespace, name))} not found")
            rv = obj["metadata"]["resourceVersion"]
            new = mutate(obj)
            obj = new if new is not None else obj
            try:
                return self.put(obj, expected_version=rv)
            except Conflict:
                time.sleep(0.005)
        raise Conflict(f"{kind} {namespace}/{name}: too many concurrent changes, gave up after {retries} attempts")

    # -- workload status ------------------------------------------------------------------------------------
    def put_workload_status(self, row: WorkloadRow) -> None:
        """Store ``row`` stamped with the time of writing (the caller's row is left as it is)."""
        row = replace(row, updated_at=time.time())
        with self._write() as cur:
            cur.execute(
                "INSERT INTO workload_status (namespace, name, body, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (namespace, name) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at",
                (row.namespace, row.name, row.to_json(), row.updated_at),
            )
            self._bump(cur, "status")

    def get_workload_status(self, namespace: str, name: str) -> WorkloadRow | None:
        rows = self._read("SELECT body FROM workload_status WHERE namespace = ? AND name = ?", (namespace, name))
        return WorkloadRow.from_json(rows[0][0]) if rows else None

    def list_workload_status(self) -> builtins.list[WorkloadRow]:
        return [
            WorkloadRow.from_json(r[0]) for r in self._read("SELECT body FROM workload_status ORDER BY namespace, name")
        ]

    def delete_workload_status(self, namespace: str, name: str) -> None:
        with self._write() as cur:
            cur.execute("DELETE FROM workload_status WHERE namespace = ? AND name = ?", (namespace, name))
            self._bump(cur, "status")

    # -- canary status ------------------------------------------------------------------------------------
    def get_canary_status(self, namespace: str, name: str) -> tuple[dict[str, Any], int] | None:
        """(status body, version) or None."""
        rows = self._read("SELECT body, version FROM canary_status WHERE namespace = ? AND name = ?", (namespace, name))
        return (json.loads(rows[0][0]), int(rows[0][1])) if rows else None

    def list_canary_status(self) -> dict[tuple[str, str], dict[str, Any]]:
        rows = self._read("SELECT namespace, name, body FROM canary_status")
        return {(r[0], r[1]): json.loads(r[2]) for r in rows}

    def put_canary_status(
        self, namespace: str, name: str, body: dict[str, Any], expected_version: int | None = None
    ) -> int:
        """Write a Canary's status; with ``expected_version`` (0 = none yet) a compare-and-set. Returns the new
        version."""
        text = json.dumps(body, sort_keys=True, default=str)
        with self._write() as cur:
            row = cur.execute(
                "SELECT version FROM canary_status WHERE namespace = ? AND name = ?", (namespace, name)
            ).fetchone()
            current = int(row[0]) if row else 0
            if expected_version is not None and int(expected_version) != current:
                raise Conflict(
                    f"status of Canary {namespace}/{name} was changed by someone else (version {current}, expected "
                    f"{expected_version}): read it again and retry"
                )
            version = current + 1
            cur.execute(
                "INSERT INTO canary_status (namespace, name, body, version, updated_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (namespace, name) DO UPDATE SET body = excluded.body, version = excluded.version, "
                "updated_at = excluded.updated_at",
                (namespace, name, text, version, time.time()),
            )
            self._bump(cur, "status")
        return version

    def delete_canary_status(self, namespace: str, name: str) -> None:
        with self._write() as cur:
            cur.execute("DELETE FROM canary_status WHERE namespace = ? AND name = ?", (namespace, name))
            self._bump(cur, "status")


def _display(key: tuple[str, str, str, str]) -> str:
    return f"{key[2]}/{key[3]}" if key[2] else key[3]
