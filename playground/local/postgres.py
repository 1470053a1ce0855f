"""PostgreSQL for the Dagster instance of the local playground (``playground up --storage postgres``).

``playground up --storage postgres`` runs Debian's PostgreSQL server (apt package ``postgresql``; binaries in
``/usr/lib/postgresql/<version>/bin``, or ``$PG_BIN``) as one more component of the environment: its cluster
lives in ``$PLAYGROUND_HOME/postgres/data``, it listens on 127.0.0.1 only (no Unix socket), on a free port
recorded in ``env.json``, with ``trust`` authentication for the ``dagster`` role (a local, loopback-only
playground; use ``--storage postgresql://...`` to point Dagster at a server of your own instead).

PostgreSQL refuses to run as root. When ``up`` runs as root (CI containers), the server runs as the ``postgres``
system user that the Debian package creates; its data directory is then ``$PLAYGROUND_HOME/postgres/data`` when
that user can reach it, else a private directory under ``/var/tmp/playground-postgres/`` that
``$PLAYGROUND_HOME/postgres/data`` links to (``down --purge`` removes both).
"""

from __future__ import annotations

import glob
import hashlib
import os
import pwd
import shutil
import stat
import subprocess
from pathlib import Path

from playground.errors import PlaygroundError

__all__ = [
    "DATABASE",
    "PostgresError",
    "ROLE",
    "binaries",
    "data_dir",
    "dsn",
    "initdb",
    "purge",
    "ready",
    "server_argv",
]

ROLE = "dagster"
DATABASE = "dagster"
RUN_AS = "postgres"  # the system user of Debian's package, used when we are root
FALLBACK_ROOT = Path("/var/tmp/playground-postgres")


class PostgresError(PlaygroundError, RuntimeError):
    """PostgreSQL cannot be set up; the message says what to do."""


def binaries() -> Path:
    """The directory of ``initdb``/``postgres``/``pg_isready``: ``$PG_BIN`` or the newest Debian install."""
    given = os.environ.get("PG_BIN")
    candidates = (
        [Path(given)]
        if given
        else sorted((Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin")), key=lambda p: _version(p.parent.name))
    )
    for d in reversed(candidates):
        if (d / "initdb").is_file() and (d / "postgres").is_file():
            return d
    raise PostgresError(
        "PostgreSQL server not found (no initdb in /usr/lib/postgresql/*/bin or $PG_BIN): "
        "apt-get install postgresql (scripts/setup.sh installs it), or pass a DSN: --storage postgresql://..."
    )


def _version(name: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in name.split("."))
    except ValueError:
        return (0,)


def _as_root() -> bool:
    return os.geteuid() == 0


def _run_as() -> list[str]:
    """Command prefix that drops root to the postgres system user (nothing when not root)."""
    if not _as_root():
        return []
    try:
        pwd.getpwnam(RUN_AS)
    except KeyError:
        raise PostgresError(
            f"PostgreSQL does not run as root and there is no {RUN_AS!r} user to run it as: "
            "apt-get install postgresql creates it (or run `playground up` as a non-root user)"
        )
    return ["setpriv", f"--reuid={RUN_AS}", f"--regid={RUN_AS}", "--init-groups", "--"]


def _reachable_by_others(path: Path) -> bool:
    """Whether every directory above ``path`` lets other users through (o+x)."""
    for parent in path.absolute().parents:
        try:
            if not parent.stat().st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
    return True


def data_dir(root: Path) -> Path:
    """``$PLAYGROUND_HOME/postgres/data`` (a link to a private directory when root runs a hidden home)."""
    return Path(root) / "postgres" / "data"


def _prepare_data_dir(root: Path) -> Path:
    link = data_dir(root)
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        return link
    if _as_root() and not _reachable_by_others(link.parent):
        digest = hashlib.sha256(str(Path(root).absolute()).encode()).hexdigest()[:16]
        FALLBACK_ROOT.mkdir(mode=0o711, parents=True, exist_ok=True)
        FALLBACK_ROOT.chmod(0o711)
        target = FALLBACK_ROOT / digest
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(mode=0o700)
        link.symlink_to(target)
    else:
        link.mkdir(mode=0o700)
    if _as_root():
        pw = pwd.getpwnam(RUN_AS)
        os.chown(link.resolve(), pw.pw_uid, pw.pw_gid)
    return link


def initdb(root: Path, log: Path) -> Path:
    """Create the cluster (role ``dagster``, trust auth on loopback) unless it exists; return its data dir."""
    bindir = binaries()
    data = _prepare_data_dir(root)
    if (data / "PG_VERSION").exists():
        return data
    argv = [
        *_run_as(),
        str(bindir / "initdb"),
        "-D",
        str(data.resolve()),
        "-U",
        ROLE,
        "--auth=trust",
        "-E",
        "UTF8",
        "--locale=C",
        "--no-instructions",
    ]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd="/")
    if proc.returncode != 0:
        raise PostgresError(f"initdb failed (exit {proc.returncode}); see {log}")
    return data


def server_argv(root: Path, port: int) -> list[str]:
    """The server's command line: loopback only, no Unix socket, tuned for a small machine's many short writes."""
    data = data_dir(root).resolve()
    return [
        *_run_as(),
        str(binaries() / "postgres"),
        "-D",
        str(data),
        "-p",
        str(port),
        "-c",
        "listen_addresses=127.0.0.1",
        "-c",
        "unix_socket_directories=",
        "-c",
        "max_connections=300",  # daemon, webserver, code servers and one pool per run worker
        "-c",
        "shared_buffers=64MB",
        # A local playground's instance: losing the last few commits on a machine crash is acceptable (the
        # database stays consistent), waiting for a disk flush on every event-log write is not.
        "-c",
        "synchronous_commit=off",
    ]


def dsn(port: int) -> str:
    return f"postgresql://{ROLE}@127.0.0.1:{port}/{DATABASE}"


def ready(port: int) -> bool:
    """The server accepts connections and the ``dagster`` database exists (created here when missing)."""
    import psycopg2  # type: ignore[import-untyped]

    try:
        conn = psycopg2.connect(host="127.0.0.1", port=port, user=ROLE, dbname="postgres", connect_timeout=2)
    except psycopg2.OperationalError:
        return False
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        conn.close()
    return True


def purge(root: Path) -> None:
    """Remove the private data directory a root-run server used (the link inside the home goes with it)."""
    link = data_dir(root)
    if link.is_symlink():
        target = link.resolve()
        if FALLBACK_ROOT in target.parents:
            shutil.rmtree(target, ignore_errors=True)
