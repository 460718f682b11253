"""The DAGs under real Airflow components, the way a deployment runs them (issue 12): an api-server (the
execution API the tasks report to), a scheduler with the LocalExecutor and a dag-processor, all on
loopback, with Airflow's metadata in PostgreSQL (a database on the test server).

It backfills three days, one of them missing, in parallel; reruns them backwards with
``--reprocess-behavior completed``; triggers an investigation with ``score_shards=3``; and checks the
project database: the same rows and ids after the rerun, the missing day skipped, the Params and the
Airflow run pinned on the run rows, each image embedded once. Run by ``.ci/run`` (slow tier).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest
import sqlalchemy as sa
from airflow_cluster import (
    AIRFLOW,
    DAYS,
    Cluster,
    airflow_env,
    backfill_done,
    by_logical_date,
    create_database,
    free_port,
    land_exports,
)
from conftest import contents_difference, table_contents

from pipeline.core.db import transaction

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(server_url, settings, tmp_path):
    home = tmp_path / "airflow"
    home.mkdir()
    metadata_url = create_database(server_url, "af")
    project = sa.engine.make_url(settings.database_url)
    port = free_port()
    env = airflow_env(home, metadata_url, port, settings.home, "LocalExecutor")
    env["AIRFLOW_CONN_PROFILE_AUDIT_DB"] = json.dumps({"conn_type": "postgres", "host": project.query["host"],
                                                       "login": project.username, "schema": project.database})
    c = Cluster(home, env)
    c.cli("db", "migrate", timeout=600)
    c.cli("pools", "set", "profile_audit_score", "2", "torch-heavy score tasks")
    c.start("api-server", "--host", "127.0.0.1", "--port", str(port))
    c.start("scheduler", "--skip-serve-logs")
    c.start("dag-processor")
    try:
        c.wait_dags_parsed()
        yield c
    finally:
        c.stop()


def test_backfill_rerun_and_sharded_investigation_under_a_real_scheduler(cluster, settings, demo_data, tmp_path):
    landing = tmp_path / "landing"
    land_exports(landing)
    conf = json.dumps({"landing_dir": str(landing), "detector": str(demo_data["detector"])})
    days = DAYS

    cluster.cli("dags", "unpause", "profile_audit_nightly")  # also starts the latest scheduled run (yesterday)
    runs = cluster.backfill(conf)
    states = {d: by_logical_date(runs)[d]["state"] for d in days}
    assert states == dict.fromkeys(days, "success"), f"{states}\n{cluster.logs()}"

    with transaction(settings) as conn:
        rows = {r.run_key: r for r in conn.execute(sa.text("select * from runs where kind = 'nightly'"))}
    assert rows["nightly:2026-03-02"].status == "skipped"  # the missing day
    assert rows["nightly:2026-03-01"].status == rows["nightly:2026-03-03"].status == "succeeded"
    assert rows["nightly:2026-03-03"].predecessor == "nightly:2026-03-02"  # fixed by the logical date
    assert rows["nightly:2026-03-02"].predecessor == "nightly:2026-03-01"
    day1 = rows["nightly:2026-03-01"]
    assert day1.params["landing_dir"] == str(landing) and day1.params["as_of"] == "2026-03-02T00:00:00+00:00"
    assert day1.params["score_shards"] == 1 and day1.airflow["dag_id"] == "profile_audit_nightly"
    assert day1.detector_id.startswith("clip_probe") and day1.export_path == str(landing / "2026-03-01")
    first = table_contents(settings)

    started = time.time()
    deadline = time.monotonic() + 180  # the scheduler closes the first backfill a loop after its last run
    while True:
        out = subprocess.run([AIRFLOW, "backfill", "create", "--dag-id", "profile_audit_nightly", "--from-date", days[0],
                              "--to-date", days[-1], "--dag-run-conf", conf, "--reprocess-behavior", "completed",
                              "--run-backwards", "--max-active-runs", "3"],
                             env=cluster.env, capture_output=True, text=True, timeout=300, check=False)
        if out.returncode == 0:
            break
        assert "AlreadyRunningBackfill" in out.stderr and time.monotonic() < deadline, out.stderr[-3000:]
        time.sleep(5)
    runs = cluster.wait_runs("profile_audit_nightly", backfill_done(days, after=started), "the rerun")
    states = {d: by_logical_date(runs)[d]["state"] for d in days}
    assert states == dict.fromkeys(days, "success"), f"{states}\n{cluster.logs()}"
    # same rows, same cluster and flag ids, in the other order
    assert contents_difference(table_contents(settings), first) == {}

    runs = cluster.investigate({"export_path": str(landing / "2026-03-03"), "investigation_id": "op-sched",
                                "score_shards": 3, "detector": str(demo_data["detector"]), "min_cluster_size": 4})
    assert [r["state"] for r in runs] == ["success"], f"{[r['state'] for r in runs]}\n{cluster.logs()}"
    with transaction(settings) as conn:
        inv = conn.execute(sa.text("select * from runs where run_key = 'investigation:op-sched'")).one()
        embedded = conn.execute(sa.text("select count(*) from embeddings")).scalar_one()
        images = conn.execute(sa.text("select count(*) from images")).scalar_one()
        claims = conn.execute(sa.text("select count(*) from image_claims")).scalar_one()
        flags = conn.execute(sa.text("select count(*) from flags where run_key = 'investigation:op-sched'")).scalar_one()
    assert inv.status == "succeeded" and inv.shard_count == 3 and inv.params["score_shards"] == 3
    assert inv.params["network"]["min_cluster_size"] == 4 and inv.params["investigation_id"] == "op-sched"
    assert inv.airflow["dag_id"] == "profile_audit_investigate" and inv.airflow["try_number"] >= 1
    assert embedded == images and claims == 0 and flags > 0
    shutil.rmtree(landing)
