"""Airflow 3 DAGs: parse cleanly without torch, and run for real with dag.test() against Postgres."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pendulum
import pytest
import sqlalchemy as sa
from conftest import REPO, table_contents

from pipeline.core.db import transaction

pytestmark = pytest.mark.slow
DAG_IDS = {"profile_audit_nightly", "profile_audit_investigate", "profile_audit_train_probe"}


def _dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(str(REPO / "dags"))


def test_dagbag_loads_without_errors(airflow_db):
    bag = _dagbag()
    assert bag.import_errors == {}
    assert DAG_IDS <= set(bag.dag_ids)
    nightly = bag.get_dag("profile_audit_nightly")
    assert [t.task_id for t in nightly.topological_sort()] == [
        "begin", "ingest", "acquire_images", "plan_score_shards", "score", "aggregate", "networks", "flag", "report", "summarize"]
    assert [a.name for a in nightly.get_task("summarize").outlets] == ["profile_audit_flags"]  # after summarize
    investigate = bag.get_dag("profile_audit_investigate")
    assert investigate.get_task("summarize").outlets == nightly.get_task("summarize").outlets
    assert investigate.max_active_runs and nightly.max_active_runs == 1
    for dag in (nightly, investigate):
        score, ingest = dag.get_task("score"), dag.get_task("ingest")
        assert score.pool == "profile_audit_score" and ingest.retries >= 1 and ingest.execution_timeout
        assert ingest.on_failure_callback and dag.on_failure_callback
        sections = {p.schema.get("section") for p in dag.params.values()}
        assert {"Export", "Scoring", "Network and flag thresholds"} <= sections
        assert all(p.schema.get("title") for p in dag.params.values())
    assert type(nightly.timetable).__name__ == "CronDataIntervalTimetable"


def test_dag_files_write_the_stage_chain_out():
    """Issue 9: the flow is visible in the DAG file, in the order of the stage table (issue 22: the chain is
    compared with the table, each stage's task named after it, a sharded stage mapped over the shard plan)."""
    import re

    from pipeline.stages import STAGES

    expected = " >> ".join(["run", *(f"shards >> {s.name}" if s.sharded else s.name for s in STAGES)])
    assert any(s.sharded for s in STAGES)
    for name in ("profile_audit_nightly.py", "profile_audit_investigate.py"):
        text = (REPO / "dags" / name).read_text()
        assert expected in re.sub(r"\s+", " ", text), name
        for s in STAGES:
            task = (f"{s.name} = stage_task(\"{s.name}\").partial(run=run).expand(shard_index=shards)" if s.sharded
                    else f"{s.name} = stage_task(\"{s.name}\")(run)")
            assert task in text, (name, task)


def test_audit_day_is_the_interval_the_run_names():
    """Defect 1: the scheduled run at 00:00 on D+1, a backfill run for D and a trigger with logical date D
    all audit D with as_of D+1 00:00; a trigger without a logical date audits the last complete day."""
    from pipeline.airflow.tasks import audit_day, interval_end

    d = pendulum.datetime(2026, 12, 1, tz="UTC")
    assert str(audit_day(d, d.add(days=1))) == "2026-12-01"  # scheduled: logical date = interval start
    assert str(audit_day(d, d.add(hours=15))) == "2026-12-01"  # manual trigger naming 2026-12-01
    assert str(audit_day(pendulum.datetime(2026, 12, 1, 23, tz="America/New_York"), d)) == "2026-12-02"  # UTC day
    assert str(audit_day(None, pendulum.datetime(2026, 12, 2, 5, tz="UTC"))) == "2026-12-01"
    assert interval_end(audit_day(d, d)) == "2026-12-02T00:00:00+00:00"


def test_dag_files_do_not_import_torch_at_parse_time(airflow_db):
    code = (
        "import sys, runpy, glob\n"
        f"for f in sorted(glob.glob({str(REPO / 'dags')!r} + '/*.py')): runpy.run_path(f)\n"
        "heavy = [m for m in ('torch', 'open_clip', 'sklearn', 'PIL') if m in sys.modules]\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy(), check=True)
    heavy = [line for line in out.stdout.splitlines() if line.startswith("HEAVY=")]
    assert heavy == ["HEAVY="], out.stdout


def _use_database(monkeypatch, settings):
    monkeypatch.setenv("PROFILE_AUDIT_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("PROFILE_AUDIT_HOME", str(settings.home))


def test_nightly_dag_flags_planted_networks_and_reruns_identically(airflow_db, settings, demo_data, tmp_path,
                                                                    monkeypatch):
    from pipeline.flags.rules import list_flags

    _use_database(monkeypatch, settings)
    landing = tmp_path / "landing"
    shutil.copytree(demo_data["export"], landing / "2026-03-04")
    dag = _dagbag().get_dag("profile_audit_nightly")
    conf = {"landing_dir": str(landing), "detector": str(demo_data["detector"])}
    run = dag.test(logical_date=pendulum.datetime(2026, 3, 4, tz="UTC"), run_conf=conf)
    assert run.state == "success"
    flagged = [{m["account_id"] for m in f["members"]} for f in list_flags(settings, run_key="nightly:2026-03-04")]
    assert sorted(map(sorted, flagged)) == sorted(sorted(n.account_ids) for n in demo_data["planted"])
    first = table_contents(settings)
    assert first["runs"] and "succeeded" in repr(first["runs"])
    with transaction(settings) as conn:  # the run row pins what the run is
        row = conn.execute(sa.text("select * from runs")).mappings().one()
    assert row["params"]["as_of"] == "2026-03-05T00:00:00+00:00"
    assert row["detector_id"].startswith("clip_probe") and row["params"]["detector"].endswith(".json")
    assert row["airflow"]["dag_id"] == "profile_audit_nightly" and row["owner"].startswith("airflow:")
    assert row["params"]["landing_dir"] == str(landing) and row["shard_count"] == 1
    assert row["stages_done"] == ["ingest", "acquire_images", "score", "aggregate", "networks", "flag", "report",
                                  "summarize"]
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    with create_session() as session:
        events = [e.extra for e in session.query(AssetEvent).all() if e.extra.get("run_key") == "nightly:2026-03-04"]
    assert events and events[-1] == {"run_key": "nightly:2026-03-04", "flags": len(flagged), "run_kind": "nightly"}

    again = dag.test(logical_date=pendulum.datetime(2026, 3, 4, tz="UTC"), run_conf=conf)
    assert again.state == "success"
    assert table_contents(settings) == first


def test_nightly_dag_skips_a_day_with_no_export(airflow_db, settings, tmp_path, monkeypatch):
    _use_database(monkeypatch, settings)
    dag = _dagbag().get_dag("profile_audit_nightly")
    run = dag.test(logical_date=pendulum.datetime(2026, 3, 5, tz="UTC"), run_conf={"landing_dir": str(tmp_path)})
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["begin"] == "skipped"
    assert states["summarize"] == "skipped"
    with transaction(settings) as conn:  # a link the next day's lineage walks over
        assert conn.execute(sa.text("select run_key, status from runs")).all() == [("nightly:2026-03-05", "skipped")]


def test_unknown_conf_keys_fail_the_run_before_anything_is_written(airflow_db, settings, demo_data, monkeypatch):
    """Defect 7: `min_cluster_sise` must not run with the default."""
    _use_database(monkeypatch, settings)
    dag = _dagbag().get_dag("profile_audit_investigate")
    run = dag.test(run_conf={"export_path": str(demo_data["export"]), "min_cluster_sise": 99})
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "failed" and states["begin"] == "failed"
    from pipeline.core.db import ensure_schema

    ensure_schema(settings)
    with transaction(settings) as conn:
        assert conn.execute(sa.text("select count(*) from runs")).scalar_one() == 0


def test_tasks_refuse_the_embedded_database_unless_allowed(airflow_db, monkeypatch, tmp_path):
    """Defect 8: a per-worker embedded server under Airflow is refused with one line."""
    from pipeline.airflow.tasks import airflow_settings
    from pipeline.errors import UserError

    monkeypatch.delenv("PROFILE_AUDIT_DATABASE_URL", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_PROFILE_AUDIT_DB", raising=False)
    monkeypatch.setenv("PROFILE_AUDIT_HOME", str(tmp_path))
    with pytest.raises(UserError, match="create the Airflow connection profile_audit_db"):
        airflow_settings()
    monkeypatch.setenv("PROFILE_AUDIT_ALLOW_EMBEDDED", "1")
    assert airflow_settings().database_url is None  # allowed: the embedded server starts on first use


def test_investigate_dag_uses_params_and_airflow_connection(airflow_db, settings, demo_data, monkeypatch):
    """The database comes from the Airflow connection profile_audit_db; thresholds from Params."""
    from sqlalchemy.engine import make_url

    from pipeline.flags.rules import list_flags

    url = make_url(settings.database_url)
    monkeypatch.delenv("PROFILE_AUDIT_DATABASE_URL", raising=False)
    monkeypatch.setenv("PROFILE_AUDIT_HOME", str(settings.home))
    monkeypatch.setenv("AIRFLOW_CONN_PROFILE_AUDIT_DB", json.dumps({
        "conn_type": "postgres", "host": url.query["host"], "login": url.username, "schema": url.database}))
    dag = _dagbag().get_dag("profile_audit_investigate")
    conf = {"export_path": str(demo_data["export"]), "investigation_id": "op-demo",
            "detector": str(demo_data["detector"]), "min_cluster_size": 20}
    run = dag.test(run_conf=conf)
    assert run.state == "success"
    flags = list_flags(settings, run_key="investigation:op-demo")
    assert [len(f["members"]) for f in flags] == [24]  # the 16-account network is under the raised minimum
    assert flags[0]["evidence"]["params"]["min_cluster_size"] == 20


def test_train_probe_dag_saves_and_promotes(airflow_db, settings, demo_data, monkeypatch):
    from pipeline.scoring.detector_store import list_detectors

    _use_database(monkeypatch, settings)
    dag = _dagbag().get_dag("profile_audit_train_probe")
    run = dag.test(run_conf={"real_dir": str(demo_data["real"]), "fake_dir": str(demo_data["fake"]),
                             "model": "pa-tiny-vit", "weights": "random:0", "promote": True})
    assert run.state == "success"
    stored = list_detectors(settings)
    assert len(stored) == 1 and stored[0]["is_default"]
    assert stored[0]["metrics"]["test_roc_auc"] > 0.9


def test_connection_uri_becomes_a_psycopg2_url(airflow_db, monkeypatch):
    """The compose file's form of the connection (a URI in AIRFLOW_CONN_PROFILE_AUDIT_DB)."""
    from pipeline.airflow.tasks import airflow_settings, database_url_from_connection

    monkeypatch.setenv("AIRFLOW_CONN_PROFILE_AUDIT_DB", "postgresql://audit:p%40ss@db.example:5433/profile_audit")
    monkeypatch.setenv("PROFILE_AUDIT_DATABASE_URL", "postgresql+psycopg2://env@elsewhere/other")
    expected = "postgresql+psycopg2://audit:p%40ss@db.example:5433/profile_audit"
    assert database_url_from_connection() == expected
    assert airflow_settings().database_url == expected  # the connection wins over the environment
    monkeypatch.delenv("AIRFLOW_CONN_PROFILE_AUDIT_DB")
    assert database_url_from_connection() is None
    assert airflow_settings().database_url == "postgresql+psycopg2://env@elsewhere/other"


def test_landing_folder_param_then_environment(airflow_db, monkeypatch, tmp_path):
    from pipeline.airflow.tasks import landing_folder

    day = pendulum.datetime(2026, 3, 4, tz="UTC")
    monkeypatch.setenv("PROFILE_AUDIT_HOME", str(tmp_path))
    monkeypatch.setenv("PROFILE_AUDIT_LANDING_DIR", "/srv/exports")
    assert landing_folder({"landing_dir": ""}, day) == Path("/srv/exports/2026-03-04")
    assert landing_folder({"landing_dir": "/data/in"}, day) == Path("/data/in/2026-03-04")
