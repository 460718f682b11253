"""Run bookkeeping under concurrency and failure (issue 12): the per-key lease, the stale-run rule, the
pinned run row, image claims, and lineage that does not depend on the order runs ran in.
Real PostgreSQL, real processes (kill -9), real threads."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import REPO, fresh_settings, table_contents

from pipeline.core import runs
from pipeline.core.db import ensure_schema, transaction
from pipeline.errors import UserError


def test_a_second_process_on_the_same_key_fails_at_once_with_one_line(settings):
    ensure_schema(settings)
    first = runs.RunLease(settings, "investigation:op-x", "cli:a").acquire()
    runs.start_run(settings, "investigation:op-x", "/data/a", "generic", owner="cli:a")
    with pytest.raises(UserError) as err:
        runs.RunLease(settings, "investigation:op-x", "cli:b").acquire()
    assert "in progress in another process (cli:a)" in str(err.value) and "\n" not in str(err.value)
    first.release()
    with runs.RunLease(settings, "investigation:op-x", "cli:b"):  # free again once the first let go
        runs.start_run(settings, "investigation:op-x", "/data/b", "generic", owner="cli:b")  # cli:a is gone: stale


def test_tasks_of_one_airflow_run_share_the_lease_and_keep_a_second_begin_out(settings):
    """Mapped score shards of one run hold the lease together; another run's begin fails while they work."""
    ensure_schema(settings)
    key, owner = "investigation:op-s", "airflow:profile_audit_investigate/r1"
    with runs.RunLease(settings, key, owner, shared=True), runs.RunLease(settings, key, owner, shared=True):
        with pytest.raises(UserError, match="in progress in another process"):
            runs.RunLease(settings, key, "airflow:profile_audit_investigate/r2").acquire()
        with transaction(settings) as conn:
            assert not runs.lock_is_free(conn, key)
    with transaction(settings) as conn:
        assert runs.lock_is_free(conn, key)


def test_an_airflow_run_between_tasks_keeps_its_key_and_a_takeover_stops_it(settings):
    """Defect 4: a second trigger of one investigation id must not overwrite the first run's export."""
    ensure_schema(settings)
    key, first, second = "investigation:op-w", "airflow:profile_audit_investigate/r1", "airflow:profile_audit_investigate/r2"
    with runs.RunLease(settings, key, first):
        runs.start_run(settings, key, "/data/first", "generic", owner=first)
    with runs.RunLease(settings, key, second), pytest.raises(UserError, match="already running"):
        runs.start_run(settings, key, "/data/second", "generic", owner=second, alive=lambda owner: True)
    with transaction(settings) as conn:
        assert conn.execute(sa.text("select export_path from runs")).scalar() == "/data/first"
    with runs.RunLease(settings, key, second):  # the first DAG run is over (failed, deleted): take over
        runs.start_run(settings, key, "/data/second", "generic", owner=second, alive=lambda owner: False)
    with pytest.raises(UserError, match="now belongs to"):
        runs.check_owner(settings, key, first)  # the first run's next task stops before touching data


_HOLDER = """
import sys, time
from pipeline.config import load_settings
from pipeline.core import runs
settings = load_settings(env={{}}, home={home!r}, database_url={url!r})
lease = runs.RunLease(settings, "nightly:2026-03-04", runs.cli_owner()).acquire()
runs.start_run(settings, "nightly:2026-03-04", "/x", "generic", owner=lease.owner)
print("ready", flush=True)
time.sleep(120)
"""


def test_a_killed_run_is_stale_once_its_lock_is_free(settings, tmp_path):
    """Defect 6: kill -9 leaves no `except` to run; the stale-run rule marks the run failed."""
    ensure_schema(settings)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER.format(home=str(tmp_path / "h"), url=settings.database_url)],
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "ready"
        assert runs.reap_stale_runs(settings) == []  # alive: it holds the lock
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    with transaction(settings) as conn:  # the server notices the dead backend's connection
        conn.execute(sa.text("select pg_sleep(0.2)"))
    assert runs.reap_stale_runs(settings) == ["nightly:2026-03-04"]
    with transaction(settings) as conn:
        row = conn.execute(sa.text("select status, summary from runs")).one()
    assert row.status == "failed" and "stale" in row.summary["failed"]


def test_failure_is_recorded_only_on_the_run_its_owner_holds(settings):
    ensure_schema(settings)
    runs.start_run(settings, "investigation:a", owner="airflow:d/r1")
    assert runs.fail_owned(settings, "airflow:d/other", {"failed_stage": "score"}) == []
    assert runs.fail_owned(settings, "airflow:d/r1", {"failed_stage": "score"}) == ["investigation:a"]
    assert not runs.finish_run(settings, "investigation:a", {}, owner="airflow:d/r1")  # no longer running


def _seed_images(settings, n: int) -> list[str]:
    shas = [f"{i:064x}" for i in range(n)]
    with transaction(settings) as conn:
        conn.execute(sa.text("insert into images (sha256, byte_size, width, height, format, phash, storage_path)"
                             " values (:s, 1, 1, 1, 'PNG', '0', :s)"), [{"s": s} for s in shas])
        conn.execute(sa.text("insert into detectors (detector_id, kind, version, spec) values ('d:1', 'd', '1', '{}')"))
    return shas


def test_claims_give_each_image_to_one_run_and_stale_claims_are_taken_over(settings):
    from pipeline.scoring.claims import claim, release

    ensure_schema(settings)
    shas = _seed_images(settings, 10)
    a = claim(settings, "d:1", "run:a", shas[:6])
    b = claim(settings, "d:1", "run:b", shas)
    assert a == shas[:6] and b == shas[6:]
    assert claim(settings, "d:1", "run:c", shas, stale_after_s=3600) == []
    release(settings, "d:1", "run:a", a)
    assert claim(settings, "d:1", "run:c", shas, stale_after_s=3600) == shas[:6]
    assert claim(settings, "d:1", "run:d", shas[6:], stale_after_s=0) == shas[6:]  # run:b's claims went stale
    # a killed try of run:d left its claims: run:d's retry takes them at once, another run still may not
    assert claim(settings, "d:1", "run:e", shas[6:], stale_after_s=3600) == []
    assert claim(settings, "d:1", "run:d", shas[6:], stale_after_s=3600) == shas[6:]


def test_predecessor_wait_walks_over_skipped_days_and_stops_on_a_failed_one(settings):
    ensure_schema(settings)
    runs.start_run(settings, "nightly:2026-03-01", owner="o1")
    runs.stage_done(settings, "nightly:2026-03-01", "networks")
    runs.start_run(settings, "nightly:2026-03-02", owner="o2", predecessor="nightly:2026-03-01", status="skipped")
    runs.start_run(settings, "nightly:2026-03-03", owner="o3", predecessor="nightly:2026-03-02")
    assert runs.wait_for_predecessor(settings, "nightly:2026-03-03", "networks") == "nightly:2026-03-01"
    with transaction(settings) as conn:
        assert runs.lineage_predecessor(conn, "nightly:2026-03-03") == "nightly:2026-03-01"
    with pytest.raises(UserError, match="waited for nightly:2026-03-01 to finish its flag stage"):
        runs.wait_for_predecessor(settings, "nightly:2026-03-03", "flag", timeout_s=0)
    with pytest.raises(UserError, match="to finish its aggregate stage"):  # the avatar history is the lineage's
        runs.wait_for_predecessor(settings, "nightly:2026-03-03", "aggregate", timeout_s=0)
    runs.finish_run(settings, "nightly:2026-03-01", {}, status="failed")
    with pytest.raises(UserError, match="which failed; rerun nightly:2026-03-01 first"):
        runs.wait_for_predecessor(settings, "nightly:2026-03-03", "flag")
    with pytest.raises(UserError, match="which failed"):  # its DAG run is over: no retry will come
        runs.wait_for_predecessor(settings, "nightly:2026-03-03", "flag", alive=lambda owner: False)
    # failed once, but its DAG run goes on (Airflow retries the stage): wait for the retry, do not give up
    asked: list[str] = []
    with pytest.raises(UserError, match=r"waited for nightly:2026-03-01 to finish its flag stage \(failed, its DAG run"):
        runs.wait_for_predecessor(settings, "nightly:2026-03-03", "flag", timeout_s=0,
                                  alive=lambda owner: asked.append(owner) or True)
    assert asked == ["o1"]
    runs.check_owner(settings, "nightly:2026-03-01", "o1")  # the retry reopens the run ...
    runs.stage_done(settings, "nightly:2026-03-01", "flag")  # ... and finishes the stage
    assert runs.wait_for_predecessor(settings, "nightly:2026-03-03", "flag", timeout_s=0,
                                     alive=lambda owner: True) == "nightly:2026-03-01"
    assert runs.wait_for_predecessor(settings, "nightly:2026-03-03", "ingest") is None  # other stages never wait


def _day_export(src: Path, dest: Path, drop: set[str]) -> Path:
    """A copy of the demo export without some accounts: the next day's network has changed a little."""
    import shutil

    shutil.copytree(src, dest)
    with (src / "manifest.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    with (dest / "manifest.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(r for r in rows if r["account_id"] not in drop)
    return dest


@pytest.mark.slow
def test_a_backfill_in_two_orders_gives_the_same_tables_ids_and_statuses(server_url, demo_data, tmp_path):
    """Defects 2 and 9: days 2 and 3 run at once, day 3 started first, versus one after the other. Each
    day waits for the previous one, so every table (cluster and flag ids, inherited statuses) is the
    same, and the concurrent days' score stages never embed one image twice (claims)."""
    from pipeline.audit import audit_export
    from pipeline.flags.rules import list_flags, set_flag_status

    later_organic = {f"u{i:05d}" for i in range(150, 300)}  # accounts (and avatars) new on days 2 and 3
    days = {"nightly:2026-03-01": _day_export(demo_data["export"], tmp_path / "d1", later_organic),
            "nightly:2026-03-02": _day_export(demo_data["export"], tmp_path / "d2", {"b014", "b015"}),
            "nightly:2026-03-03": _day_export(demo_data["export"], tmp_path / "d3", {"b013", "b014", "b015"})}
    detector = str(demo_data["detector"])

    def scenario(settings, concurrent: bool) -> tuple[dict, int]:
        embedded: list[int] = []

        def audit(key: str, predecessor: str | None) -> None:
            audit_export(settings, days[key], run_key=key, detector=detector, predecessor=predecessor,
                         as_of=f"{key[8:]}T23:59:59+00:00",
                         on_stage=lambda s, r, _: embedded.append(r["embedded"]) if s == "score" else None)

        audit("nightly:2026-03-01", None)
        for flag in list_flags(settings, run_key="nightly:2026-03-01"):
            set_flag_status(settings, flag["flag_id"], "confirmed", "checked by hand")
        later = [("nightly:2026-03-03", "nightly:2026-03-02"), ("nightly:2026-03-02", "nightly:2026-03-01")]
        if concurrent:  # day 3 first: its networks stage must wait for day 2
            errors: list[BaseException] = []

            def guarded(key: str, pred: str) -> None:
                try:
                    audit(key, pred)
                except BaseException as exc:  # noqa: BLE001 - surfaced below
                    errors.append(exc)
            threads = [threading.Thread(target=guarded, args=pair) for pair in later]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=900)
            assert not errors, errors
        else:
            for key, pred in reversed(later):
                audit(key, pred)
        return table_contents(settings), sum(embedded)

    sequential, seq_embedded = scenario(fresh_settings(server_url, tmp_path / "a"), concurrent=False)
    settings_b = fresh_settings(server_url, tmp_path / "b")
    parallel, par_embedded = scenario(settings_b, concurrent=True)
    assert parallel == sequential
    with transaction(settings_b) as conn:
        distinct = conn.execute(sa.text("select count(*) from embeddings")).scalar_one()
        assert conn.execute(sa.text("select count(*) from image_claims")).scalar_one() == 0
    assert par_embedded == seq_embedded == distinct  # each image embedded once, in both orders
    day3 = list_flags(settings_b, run_key="nightly:2026-03-03")
    assert day3 and {f["status"] for f in day3} == {"confirmed"}  # carried from day 1 through day 2


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    full_env.pop("PROFILE_AUDIT_DATABASE_URL", None)
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True,
                          env=full_env, timeout=300, check=False)


def test_the_same_key_twice_from_the_cli_is_one_line_not_a_traceback(settings, demo_data, tmp_path):
    """Defect 4 from the CLI: a second audit of a key in progress fails at once, exit 2, one line."""
    ensure_schema(settings)
    with runs.RunLease(settings, "op-x", "cli:other"):
        out = _cli("--home", str(tmp_path), "--database-url", settings.database_url, "audit",
                   str(demo_data["export"]), "--run-key", "op-x", "--detector", str(demo_data["detector"]))
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert lines[0] == ("profile-audit: error: run op-x is in progress in another process (starting); "
                        "wait for it to finish, or use another run key")


def test_cli_reaches_the_dags_database_through_the_airflow_connection(airflow_db, settings, tmp_path):
    """Defect 8: `--airflow-conn` (or PROFILE_AUDIT_AIRFLOW_CONN) makes the CLI read what the DAGs wrote."""
    import json

    url = sa.engine.make_url(settings.database_url)
    conn = json.dumps({"conn_type": "postgres", "host": url.query["host"], "login": url.username,
                       "schema": url.database})
    out = _cli("--home", str(tmp_path), "--airflow-conn", "profile_audit_db", "db", "upgrade",
               env={"AIRFLOW_CONN_PROFILE_AUDIT_DB": conn})
    assert out.returncode == 0, out.stderr
    with transaction(settings) as c:
        assert c.execute(sa.text("select count(*) from schema_migrations")).scalar_one() > 0
    out = _cli("--home", str(tmp_path), "flags", env={"PROFILE_AUDIT_AIRFLOW_CONN": "profile_audit_db",
                                                      "AIRFLOW_CONN_PROFILE_AUDIT_DB": conn})
    assert out.returncode == 0, out.stderr
    missing = _cli("--home", str(tmp_path), "--airflow-conn", "nope", "flags")
    assert missing.returncode == 2 and "Airflow connection 'nope' not found" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_begin_sweeps_temp_files_a_killed_write_left(settings, demo_data):
    """Atomic writes leave at most a .tmp-* file when killed; the next run's begin removes old ones."""
    from pipeline.audit import begin
    from pipeline.core.storage import TEMP_PREFIX

    old = settings.detector_dir / f"{TEMP_PREFIX}half.json"
    fresh = settings.image_dir / "ab" / f"{TEMP_PREFIX}writing.png"
    for path in (old, fresh):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half")
    os.utime(old, (1_000_000_000, 1_000_000_000))
    with runs.RunLease(settings, "sweep", "cli:t"):
        begin(settings, "sweep", demo_data["export"], "auto", settings.policy(), str(demo_data["detector"]), owner="cli:t")
    assert not old.exists() and fresh.exists()  # a write in progress elsewhere is left alone
    saved = list(settings.detector_dir.glob("*.json"))
    assert len(saved) == 1 and json.loads(saved[0].read_text())  # the detector file is whole


def _image_row(sha: str) -> dict:
    return {"sha256": sha, "byte_size": 1, "width": 1, "height": 1, "format": "png", "phash": "0" * 16,
            "dhash": None, "detail": None, "storage_path": f"{sha}.png"}


def _takes_keys_in_order(settings, hold_first, hold_second, write) -> None:
    """Another run holds the first key in an open transaction; ``write`` (given the keys second-first) starts
    in a thread and must wait for that key before it takes any other. Once it waits, the other run takes
    the second key with a short lock_timeout: had ``write`` taken it out of order, this would be the
    deadlock two concurrent backfill days ran into."""
    from pipeline.core.db import get_engine

    engine = get_engine(settings)
    errors: list[BaseException] = []

    def run_write() -> None:
        try:
            write()
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    with engine.connect() as other:
        tx = other.begin()
        hold_first(other)
        me = other.execute(sa.text("select pg_backend_pid()")).scalar_one()
        thread = threading.Thread(target=run_write)
        thread.start()
        deadline = time.monotonic() + 30
        with engine.connect() as watch:
            while True:
                waiting = watch.execute(sa.text("select count(*) from pg_stat_activity where wait_event_type = 'Lock'"
                                                " and pid <> :me"), {"me": me}).scalar_one()
                watch.rollback()  # pg_stat_activity is a snapshot taken once per transaction
                if waiting:
                    break
                assert time.monotonic() < deadline and thread.is_alive(), f"the write never waited: {errors}"
                time.sleep(0.05)
        other.execute(sa.text("set local lock_timeout = '300ms'"))  # under deadlock_timeout (1 s)
        hold_second(other)
        tx.commit()
    thread.join(30)
    assert not thread.is_alive() and not errors, errors


def test_concurrent_runs_take_shared_image_rows_in_one_order(settings):
    """Two backfill days acquiring (and claiming) overlapping avatars at once wait for each other instead of
    deadlocking: the shared rows are taken in sha256 order whatever order each export lists them in."""
    from pipeline.images.acquire import store_images
    from pipeline.scoring.claims import claim

    ensure_schema(settings)
    lo, hi = "a" * 64, "f" * 64
    with transaction(settings) as conn:
        store_images(conn, [_image_row(hi), _image_row(lo)])
        conn.execute(sa.text("insert into detectors (detector_id, kind, version, spec) values ('d:1', 'd', '1', '{}')"))

    def lock(sha):
        return lambda conn: conn.execute(sa.text("select 1 from images where sha256 = :s for update"), {"s": sha})

    def write_images() -> None:
        with transaction(settings) as conn:
            store_images(conn, [_image_row(hi), _image_row(lo)])

    _takes_keys_in_order(settings, lock(lo), lock(hi), write_images)

    def claim_as(run_key, sha):
        return lambda conn: conn.execute(sa.text("insert into image_claims (sha256, detector_id, run_key)"
                                                 " values (:s, 'd:1', :k) on conflict do nothing"),
                                         {"s": sha, "k": run_key})

    _takes_keys_in_order(settings, claim_as("run:other", lo), claim_as("run:other", hi),
                         lambda: claim(settings, "d:1", "run:me", [hi, lo]))
    assert claim(settings, "d:1", "run:me", [hi, lo]) == []  # the other run committed both claims first
