"""What the read-only dashboard role can and cannot do (issue 13, item 4), as a real login user that is a
member of profile_audit_reader (as Grafana connects), on a real PostgreSQL."""

from __future__ import annotations

import shutil
import uuid

import psycopg2
import psycopg2.errors
import pytest
import sqlalchemy as sa
from conftest import refused

from pipeline.config import load_settings
from pipeline.core.db import MIGRATION_LOCK_KEY, discover_repeatables, dispose_engines, ensure_schema, sql_dir, upgrade
from pipeline.errors import UserError

VIEWS = ("dashboard_account_risk", "dashboard_cluster_summary", "dashboard_daily_audit", "dashboard_flag_queue",
         "dashboard_ingest_ledger")


# Database-level grants (TEMP, CONNECT) live in pg_database and are not copied from the test template,
# so these tests migrate their own database from scratch, as a deployment does.
pytestmark = pytest.mark.empty_database


@pytest.fixture
def reader_login(database_url, tmp_path):
    """(settings with a 1 s lock timeout, a function that opens a connection as a reader login user)."""
    settings = load_settings(env={}, shipped_detector=False, home=tmp_path / "home", database_url=database_url, lock_timeout=1)
    ensure_schema(settings)
    login = "pa_reader_" + uuid.uuid4().hex[:8]
    admin = sa.create_engine(database_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'create role "{login}" login password \'pw\' in role profile_audit_reader'))
    url = sa.engine.make_url(database_url)
    opened = []

    def connect(database: str | None = None):
        conn = psycopg2.connect(host=url.host or url.query.get("host"), port=url.port, user=login, password="pw",
                                dbname=database or url.database, connect_timeout=10)
        conn.autocommit = True
        opened.append(conn)
        return conn

    yield settings, connect
    for conn in opened:
        conn.close()
    dispose_engines()
    with admin.connect() as conn:
        conn.execute(sa.text(f'drop role "{login}"'))
    admin.dispose()


def test_the_reader_can_read_the_views_and_nothing_else(reader_login):
    _, connect = reader_login
    conn = connect()
    can = {view: refused(conn, f"select * from {view} limit 1") for view in VIEWS}
    assert can == {view: None for view in VIEWS}  # it can read every dashboard view
    cannot = {
        "temp table": refused(conn, "create temporary table scratch (x int)"),
        "table in the schema": refused(conn, "create table public.scratch (x int)"),
        "read the migration table": refused(conn, "select * from schema_migrations"),
        "take the migration lock": refused(conn, "begin; lock table schema_migrations in share row exclusive mode"),
        "rewrite its grants": refused(conn, "rollback; select grant_dashboard_reader()"),
    }
    assert cannot == {
        "temp table": "InsufficientPrivilege",
        "table in the schema": "InsufficientPrivilege",
        "read the migration table": "InsufficientPrivilege",
        "take the migration lock": "InsufficientPrivilege",
        "rewrite its grants": "InsufficientPrivilege",
    }
    for other in ("postgres", "template1"):
        with pytest.raises(psycopg2.OperationalError, match=f'permission denied for database "{other}"'):
            connect(other)


def test_the_reader_cannot_freeze_the_pipeline(reader_login, tmp_path):
    """Holding the old migration advisory lock no longer blocks a command; holding a view in an open
    transaction makes a schema change give up after lock_timeout with one line instead of hanging."""
    settings, connect = reader_login
    conn = connect()
    with conn.cursor() as cur:
        cur.execute("select pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
    upgrade(settings)  # lock_timeout is 1 s: it raised if it waited for the reader
    ensure_schema(settings)

    with conn.cursor() as cur:  # an open transaction that has read a view holds it (ACCESS SHARE)
        cur.execute("begin; select count(*) from dashboard_flag_queue")
    changed = tmp_path / "sql"
    shutil.copytree(sql_dir(), changed)
    view_file = changed / "views" / "dashboards.sql"
    view_file.write_text(view_file.read_text() + "\n-- changed\n")  # the views must be recreated
    with pytest.raises(UserError, match="^schema upgrade gave up after waiting 1 s for a database lock"):
        upgrade(settings, repeatables=discover_repeatables(changed))
    with conn.cursor() as cur:
        cur.execute("rollback")
    assert upgrade(settings, repeatables=discover_repeatables(changed)) == [r.name for r in discover_repeatables(changed)]
