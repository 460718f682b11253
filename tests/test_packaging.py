"""Packaging: the wheel carries the SQL and the model configs, and an installed wheel migrates a real database.

The install is non-editable and offline: the wheel goes into a fresh venv with ``--no-deps``, then the
dependencies come from the running interpreter's site-packages through a ``.pth`` line (a plain path,
so the editable install that venv may hold is not imported). The CLI runs from a folder outside the
clone, so the only ``pipeline`` it can import is the installed one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest
import sqlalchemy as sa

from pipeline.core.db import discover_migrations, discover_repeatables, sql_dir
from pipeline.errors import UserError

REPO = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "pipeline", "detectors", "sql")


def _declared_packages() -> set[str]:
    return set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])


def test_every_package_folder_is_declared():
    """pyproject lists packages by hand (sql/ is mapped in as pipeline._sql): a new subpackage must be added."""
    found = {p.parent.relative_to(REPO).as_posix().replace("/", ".")
             for top in ("pipeline", "detectors") for p in (REPO / top).rglob("__init__.py")}
    missing = found - _declared_packages()
    assert not missing, f"add {sorted(missing)} to [tool.setuptools] packages in pyproject.toml"
    assert "pipeline._sql" in _declared_packages()


def test_missing_sql_folder_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PROFILE_AUDIT_SQL_DIR", str(tmp_path / "nope"))
    with pytest.raises(UserError, match="SQL migrations folder not found") as caught:
        sql_dir()
    assert str(tmp_path / "nope") in str(caught.value) and "\n" not in str(caught.value)


def _build_wheel(tmp_path: Path) -> Path:
    """Build from a copy of the sources, so the build leaves nothing in the clone."""
    src = tmp_path / "src"
    for name in SOURCES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy2(source, src / name)
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "--no-index", "-w", str(dist), str(src)], check=True, capture_output=True, text=True, timeout=300)
    (wheel,) = dist.glob("profile_audit-*.whl")
    return wheel


@pytest.mark.slow
@pytest.mark.empty_database
def test_wheel_install_migrates_a_database(tmp_path, database_url):
    wheel = _build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped_sql = {n for n in names if n.startswith("pipeline/_sql/")}
    expected_sql = {f"pipeline/_sql/{m.path.name}" for m in discover_migrations()}
    expected_sql |= {f"pipeline/_sql/{r.name}" for r in discover_repeatables()}
    assert shipped_sql == expected_sql
    configs = {f"detectors/model_configs/{p.name}" for p in (REPO / "detectors" / "model_configs").glob("*.json")}
    assert configs and configs <= names

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               check=True, capture_output=True, text=True).stdout.strip())
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index",
                    str(wheel)], check=True, capture_output=True, text=True, timeout=300)
    # after the install, so pip never sees (let alone touches) the packages of the running venv
    (site / "shared-deps.pth").write_text(sysconfig.get_path("purelib") + "\n")

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PROFILE_AUDIT_SQL_DIR")}
    env.update(PROFILE_AUDIT_HOME=str(tmp_path / "home"), PROFILE_AUDIT_DATABASE_URL=database_url)
    where = subprocess.run([str(python), "-c", "import pipeline.core.db as d; print(d.__file__); print(d.sql_dir())"],
                           cwd=outside, env=env, check=True, capture_output=True, text=True).stdout.split()
    assert [Path(p).is_relative_to(site) for p in where] == [True, True], where

    out = subprocess.run([str(python), "-m", "pipeline.cli", "db", "upgrade"], cwd=outside, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("applied: 001_core_schema.sql"), out.stdout
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            versions = conn.execute(sa.text("select version from schema_migrations order by 1")).scalars().all()
            repeatables = conn.execute(sa.text("select name from schema_repeatables order by 1")).scalars().all()
            views = set(conn.execute(sa.text("select viewname from pg_views where schemaname = 'public'")).scalars())
    finally:
        engine.dispose()
    assert versions == [m.version for m in discover_migrations()]
    assert repeatables == sorted(r.name for r in discover_repeatables())
    assert {"dashboard_account_risk", "dashboard_flag_queue"} <= views
    again = subprocess.run([str(python), "-m", "pipeline.cli", "db", "upgrade"], cwd=outside, env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and again.stdout.strip() == "database schema is up to date", again
