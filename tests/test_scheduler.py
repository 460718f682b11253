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
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import REPO, contents_difference, table_contents

from pipeline.core.db import transaction

pytestmark = pytest.mark.slow
AIRFLOW = str(Path(sys.executable).parent / "airflow")
DEADLINE_S = 900  # for each wait; the whole test takes a few minutes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _create_database(server_url: str, prefix: str) -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'create database "{name}"'))
    admin.dispose()
    return sa.engine.make_url(server_url).set(database=name).render_as_string(hide_password=False)


class Cluster:
    """api-server + scheduler + dag-processor in their own Airflow home; stopped with SIGTERM at the end."""

    def __init__(self, home: Path, env: dict[str, str]):
        self.home, self.env, self.procs = home, env, []

    def cli(self, *args: str, timeout: float = 300) -> str:
        out = subprocess.run([AIRFLOW, *args], env=self.env, capture_output=True, text=True, timeout=timeout,
                             check=False)
        assert out.returncode == 0, f"airflow {' '.join(args)}: {out.stderr[-3000:]}"
        return out.stdout

    def start(self, *args: str) -> None:
        log = (self.home / f"{args[0]}.log").open("w")
        self.procs.append(subprocess.Popen([AIRFLOW, *args], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True))

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-4000:]}" for p in sorted(self.home.glob("*.log")))

    def runs(self, dag_id: str) -> list[dict]:
        out = self.cli("dags", "list-runs", dag_id, "-o", "json")  # log lines may precede the JSON
        return next((json.loads(line) for line in reversed(out.splitlines()) if line.startswith("[")), [])

    def wait_runs(self, dag_id: str, done: callable, what: str) -> list[dict]:
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            runs = self.runs(dag_id)
            if done(runs):
                return runs
            time.sleep(5)
        raise AssertionError(f"timed out waiting for {what}: {self.runs(dag_id)}\n{self.logs()}")


@pytest.fixture
def cluster(server_url, settings, tmp_path):
    home = tmp_path / "airflow"
    home.mkdir()
    meta = sa.engine.make_url(_create_database(server_url, "af"))
    socket_dir = meta.query["host"]
    sync_url = meta.render_as_string(hide_password=False)
    # asyncpg takes the socket folder as host= too
    async_url = meta.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    project = sa.engine.make_url(settings.database_url)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PROFILE_AUDIT_DATABASE"))}
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "6",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sync_url,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": async_url,
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API_AUTH__JWT_SECRET": uuid.uuid4().hex,
        "AIRFLOW__API__SECRET_KEY": uuid.uuid4().hex,
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(_free_port()),
        "AIRFLOW_CONN_PROFILE_AUDIT_DB": json.dumps({"conn_type": "postgres", "host": socket_dir,
                                                     "login": project.username, "schema": project.database}),
        "PROFILE_AUDIT_HOME": str(settings.home),
        "PYTHONPATH": str(REPO),
        "HF_HUB_OFFLINE": "1",
        "PROFILE_AUDIT_NO_PROGRESS": "1",
        "PROFILE_AUDIT_PREDECESSOR_WAIT_S": "900",
    })
    c = Cluster(home, env)
    c.cli("db", "migrate", timeout=600)
    c.cli("pools", "set", "profile_audit_score", "2", "torch-heavy score tasks")
    c.start("api-server", "--host", "127.0.0.1", "--port", str(port))
    c.start("scheduler", "--skip-serve-logs")
    c.start("dag-processor")
    try:
        deadline = time.monotonic() + 300
        while "profile_audit_nightly" not in subprocess.run(
                [AIRFLOW, "dags", "list", "-o", "plain"], env=env, capture_output=True, text=True, check=False).stdout:
            assert time.monotonic() < deadline, f"DAGs never parsed\n{c.logs()}"
            time.sleep(3)
        yield c
    finally:
        c.stop()


def _by_logical_date(runs: list[dict]) -> dict[str, dict]:
    return {r["logical_date"][:10]: r for r in runs if r.get("logical_date")}


def _backfill_done(days: list[str], after: float = 0.0):
    """Every day's run finished (after ``after``, for a rerun), and no other run still going."""
    def done(runs: list[dict]) -> bool:
        mine = _by_logical_date(runs)
        return (all(d in mine and mine[d]["state"] in ("success", "failed")
                    and (not after or _ts(mine[d].get("end_date")) > after) for d in days)
                and all(r["state"] in ("success", "failed") for r in runs))
    return done


def _ts(value: str | None) -> float:
    from datetime import datetime

    return datetime.fromisoformat(value).timestamp() if value else 0.0


def test_backfill_rerun_and_sharded_investigation_under_a_real_scheduler(cluster, settings, demo_data, tmp_path):
    from pipeline.testing.demo import make_demo_export

    landing = tmp_path / "landing"
    make_demo_export(landing / "2026-03-01", organic=40, seed=11)
    make_demo_export(landing / "2026-03-03", organic=60, seed=12)  # 2026-03-02 never landed
    conf = json.dumps({"landing_dir": str(landing), "detector": str(demo_data["detector"])})
    days = ["2026-03-01", "2026-03-02", "2026-03-03"]

    cluster.cli("dags", "unpause", "profile_audit_nightly")  # also starts the latest scheduled run (yesterday)
    cluster.cli("backfill", "create", "--dag-id", "profile_audit_nightly", "--from-date", days[0],
                "--to-date", days[-1], "--dag-run-conf", conf, "--max-active-runs", "3")
    runs = cluster.wait_runs("profile_audit_nightly", _backfill_done(days), "the backfill")
    states = {d: _by_logical_date(runs)[d]["state"] for d in days}
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
    runs = cluster.wait_runs("profile_audit_nightly", _backfill_done(days, after=started), "the rerun")
    assert {d: _by_logical_date(runs)[d]["state"] for d in days} == dict.fromkeys(days, "success"), cluster.logs()
    # same rows, same cluster and flag ids, in the other order
    assert contents_difference(table_contents(settings), first) == {}

    cluster.cli("dags", "unpause", "profile_audit_investigate")
    cluster.cli("dags", "trigger", "profile_audit_investigate", "--conf", json.dumps({
        "export_path": str(landing / "2026-03-03"), "investigation_id": "op-sched", "score_shards": 3,
        "detector": str(demo_data["detector"]), "min_cluster_size": 4}))
    runs = cluster.wait_runs("profile_audit_investigate",
                             lambda rs: rs and all(r["state"] in ("success", "failed") for r in rs), "the investigation")
    assert [r["state"] for r in runs] == ["success"], cluster.logs()
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
