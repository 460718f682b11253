"""The detector DAG paths: the audit's score stage mapped over hash shards with Airflow dynamic task
mapping, and the train-probe DAG with its evaluation step. Real Airflow dag.test(), real Postgres."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from conftest import REPO, table_contents

from pipeline.core.db import transaction

pytestmark = pytest.mark.slow


def _dag(dag_id):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(str(REPO / "dags")).get_dag(dag_id)


def test_investigate_dag_maps_scoring_over_shards_like_one_task(airflow_db, settings, demo_data, monkeypatch):
    monkeypatch.setenv("PROFILE_AUDIT_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("PROFILE_AUDIT_HOME", str(settings.home))
    dag = _dag("profile_audit_investigate")
    base = {"export_path": str(demo_data["export"]), "detector": str(demo_data["detector"])}
    run = dag.test(run_conf={**base, "investigation_id": "sharded", "score_shards": 3})
    assert run.state == "success"
    mapped = sorted((ti.map_index, ti.state) for ti in run.get_task_instances() if ti.task_id == "score")
    assert mapped == [(0, "success"), (1, "success"), (2, "success")]
    with transaction(settings) as conn:
        scores = conn.execute(sa.text("select sha256, probability, label from image_scores order by 1")).all()
        faces = conn.execute(sa.text("select count(*) from face_signals")).scalar_one()
    assert scores and faces == len(scores)

    # the run row records how it was sharded (params.score_shards, shard_count); every other row is the same
    volatile = {"runs": {"started_at", "finished_at", "heartbeat_at", "owner", "airflow", "params", "shard_count"},
                "schema_migrations": {"applied_at"}, "schema_repeatables": {"applied_at"},
                "detectors": {"created_at"}, "flags": {"status_changed_at"}}
    first = table_contents(settings, volatile)
    again = dag.test(run_conf={**base, "investigation_id": "sharded", "score_shards": 2})  # other sharding, same key
    assert again.state == "success"
    assert table_contents(settings, volatile) == first
    with transaction(settings) as conn:
        row = conn.execute(sa.text("select params, shard_count from runs")).one()
    assert row.shard_count == 2 and row.params["score_shards"] == 2


def test_train_dag_trains_then_evaluates(airflow_db, settings, demo_data, monkeypatch):
    monkeypatch.setenv("PROFILE_AUDIT_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("PROFILE_AUDIT_HOME", str(settings.home))
    dag = _dag("profile_audit_train_probe")
    run = dag.test(run_conf={"real_dir": str(demo_data["real"]), "fake_dir": str(demo_data["fake"]),
                             "model": "pa-tiny-vit", "weights": "random:0", "calibration": "isotonic",
                             "eval_real_dir": str(demo_data["real"]), "eval_fake_dir": str(demo_data["fake"])})
    assert run.state == "success"
    assert {ti.task_id: ti.state for ti in run.get_task_instances()} == {"train": "success", "evaluate": "success"}
    reports = list((settings.home / "reports").glob("evaluation-*.html"))
    assert len(reports) == 1 and "<svg" in reports[0].read_text()
    with transaction(settings) as conn:
        stored = conn.execute(sa.text("select spec from detectors")).scalar_one()
        training = conn.execute(sa.text("select count(*) from detector_training_images")).scalar_one()
    assert stored["spec"]["training"]["calibration"] == "isotonic" and training == 600
