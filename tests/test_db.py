"""Migrations against a real PostgreSQL, and the embedded server's lifecycle across processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa

from pipeline.core.db import Migration, Repeatable, discover_migrations, discover_repeatables, get_engine, sql_dir, upgrade
from pipeline.errors import UserError

EXPECTED_TABLES = {
    "runs", "accounts", "account_snapshots", "images", "account_avatars", "detectors", "embeddings",
    "image_scores", "account_signals", "edges", "clusters", "cluster_members", "flags", "quarantine",
    "schema_migrations", "schema_repeatables",
    "face_signals", "detector_training_images",  # 005: face detector rows, training manifests
    "posts",  # 003; partitioned by run in 016
    "posts_default",  # 016: posts written directly for a run without its own partition
    "avatar_near_duplicates",  # 006: near-duplicate avatar pairs per run
    "image_claims",  # 013: images a score shard is embedding now
    "ingest_ledger",  # 018: per run and export file, the units seen and what became of them
}


def _tables(settings) -> set[str]:
    with get_engine(settings).connect() as conn:
        return set(conn.execute(sa.text("select tablename from pg_tables where schemaname = 'public'")).scalars())


@pytest.mark.empty_database
def test_migrations_from_empty_then_noop(settings):
    assert _tables(settings) == set()
    applied = upgrade(settings)
    assert applied == [m.path.name for m in discover_migrations()] + [r.name for r in discover_repeatables()]
    assert _tables(settings) == EXPECTED_TABLES
    assert upgrade(settings) == []
    with get_engine(settings).connect() as conn:
        versions = conn.execute(sa.text("select version from schema_migrations order by 1")).scalars().all()
    assert versions == [m.version for m in discover_migrations()]


@pytest.mark.empty_database
def test_posts_partition_migration_keeps_existing_posts(settings):
    """016 moves each run's posts of an existing database into a partition of its own."""
    migrations = discover_migrations()
    upgrade(settings, [m for m in migrations if m.version < 16], [])
    with get_engine(settings).begin() as conn:
        for run in ("r1", "r2"):
            conn.execute(sa.text("insert into runs (run_key, kind) values (:r, 'adhoc')"), {"r": run})
        conn.execute(sa.text("insert into accounts (account_key, platform, account_id, first_seen_run)"
                             " values ('x:a', 'x', 'a', 'r1')"))
        conn.execute(sa.text("insert into posts (run_key, account_key, post_id, source_file, source_locator)"
                             " select r, 'x:a', 'p' || n, 'f', n::text from unnest(array['r1', 'r2']) r,"
                             " generate_series(1, 3) n"))
    upgrade(settings)
    with get_engine(settings).connect() as conn:
        assert conn.execute(sa.text("select run_key, count(*) from posts group by 1 order by 1")).all() \
            == [("r1", 3), ("r2", 3)]
        assert conn.execute(sa.text("select count(*) from posts_default")).scalar_one() == 0
        assert conn.execute(sa.text("select count(*) from pg_inherits where inhparent = 'posts'::regclass")
                            ).scalar_one() == 3


def test_edited_migration_is_refused(settings, tmp_path):
    upgrade(settings)
    first = discover_migrations()[0]
    edited = tmp_path / first.path.name
    edited.write_text(first.sql + "\n-- edited\n")
    with pytest.raises(UserError, match="changed after it was applied"):
        upgrade(settings, [Migration(first.version, first.name, edited)])


def test_repeatable_sql_is_reapplied_only_when_a_file_changes(settings, tmp_path):
    """Functions and views live in sql/functions and sql/views: an edit re-applies them all, in order."""
    upgrade(settings)
    repeatables = discover_repeatables()
    assert upgrade(settings, repeatables=repeatables) == []
    assert [r.name.split("/")[0] for r in repeatables] == sorted(r.name.split("/")[0] for r in repeatables)
    edited = tmp_path / "20_account_signals.sql"
    source = next(r for r in repeatables if r.name == "functions/20_account_signals.sql")
    edited.write_text(source.path.read_text() + "\ncreate or replace function pa_probe() returns int language sql as $$ select 7 $$;\n")
    changed = [Repeatable(r.name, edited) if r is source else r for r in repeatables]
    assert upgrade(settings, repeatables=changed) == [r.name for r in changed]
    with get_engine(settings).connect() as conn:
        assert conn.execute(sa.text("select pa_probe()")).scalar() == 7
        views = set(conn.execute(sa.text("select viewname from pg_views where schemaname = 'public'")).scalars())
    assert {"dashboard_account_risk", "dashboard_flag_queue"} <= views  # dropped and recreated with the rest
    assert upgrade(settings, repeatables=changed) == []


def test_a_database_migrated_by_0_1_upgrades(settings):
    """0.1 recorded other checksums for 001, 003 and 006 (they then also held functions and views, and
    002, 007-009 existed). Those checksums are accepted; any other edit still is not."""
    from pipeline.core.db import SUPERSEDED_CHECKSUMS

    upgrade(settings)
    with get_engine(settings).begin() as conn:
        for version, old in SUPERSEDED_CHECKSUMS.items():
            conn.execute(sa.text("update schema_migrations set checksum = :c where version = :v"),
                         {"c": next(iter(old)), "v": version})
        conn.execute(sa.text("insert into schema_migrations (version, name, checksum) values (2, 'account_signals', 'x')"))
        conn.execute(sa.text("update schema_repeatables set checksum = 'from 0.1'"))
    assert upgrade(settings) == [r.name for r in discover_repeatables()]  # functions and views recreated
    with get_engine(settings).begin() as conn:
        conn.execute(sa.text("update schema_migrations set checksum = 'edited' where version = 3"))
    with pytest.raises(UserError, match="changed after it was applied"):
        upgrade(settings)


def test_badly_named_migration_is_refused(tmp_path):
    (tmp_path / "1-init.sql").write_text("select 1;")
    with pytest.raises(UserError, match="NNN_name.sql"):
        discover_migrations(tmp_path)


@pytest.mark.empty_database
def test_failed_migration_rolls_back(settings, tmp_path):
    bad = tmp_path / "900_bad.sql"
    bad.write_text("create table half_done (id int); select no_such_function();")
    with pytest.raises(sa.exc.ProgrammingError):
        upgrade(settings, [*discover_migrations(), Migration(900, "bad", bad)])
    assert "half_done" not in _tables(settings) and "runs" not in _tables(settings)


def test_sql_dir_is_the_repository_folder():
    assert (sql_dir() / "001_core_schema.sql").is_file()


def _cli(home, *args):
    env = {k: v for k, v in os.environ.items() if k != "PROFILE_AUDIT_DATABASE_URL"}
    env["PROFILE_AUDIT_HOME"] = str(home)
    return subprocess.Popen([sys.executable, "-m", "pipeline.cli", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_embedded_server_two_processes_at_once_then_stops(tmp_path):
    """No URL: both processes start (or join) the server in HOME/pg; the last one out stops it."""
    home = tmp_path / "h"
    procs = [_cli(home, "db", "upgrade") for _ in range(2)]
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    messages = sorted(out[0].strip().split(":")[0] for out in outs)
    assert messages == ["applied", "database schema is up to date"], messages  # applied exactly once
    deadline = time.time() + 20
    while (home / "pg" / "postmaster.pid").exists() and time.time() < deadline:
        time.sleep(0.2)
    assert not (home / "pg" / "postmaster.pid").exists(), "server still running after the last process exited"
    again = _cli(home, "db", "upgrade")
    out, err = again.communicate(timeout=180)
    assert again.returncode == 0 and out.strip() == "database schema is up to date", err
