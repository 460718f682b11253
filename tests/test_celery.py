"""The DAGs under Airflow's CeleryExecutor, deployed the way docs/airflow.md's "Deploying" section says, step by
step and in its order (issue 26): a PostgreSQL 15 cluster holding Airflow's metadata and the project's store
(initialised as docker/compose.yaml's postgres service initialises it: its postgres-init scripts, the read-only
dashboard role included), Redis as the broker, the api-server, scheduler and dag-processor, and two Celery
workers: one on the default queue and one, with fewer slots, on the score queue.

It backfills three days (one missing) and triggers an investigation with ``score_shards=3``, killing the score
worker (kill -9 of its process group) while a score shard runs and starting a new one. It checks that the score
tasks ran on the score worker and everything else on the default worker (Airflow's task instances joined with
Celery's result records), that the killed shard was retried, that every project table equals that of the same
runs under dag.test() on a second database, that the dashboard role reads a view and cannot write, and that a
run during which Redis is stopped for 20 s ends (success, or failed with a reason) rather than running forever.
Run by ``.ci/run`` as its own step ("celery"); the test tiers leave it out.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pendulum
import psycopg2
import pytest
import sqlalchemy as sa
from airflow_cluster import (
    AIRFLOW,
    DAYS,
    DEADLINE_S,
    Cluster,
    airflow_env,
    all_finished,
    by_logical_date,
    free_port,
    land_exports,
)
from conftest import REPO, contents_difference, refused, table_contents

from pipeline.config import load_settings
from pipeline.core.db import transaction

pytestmark = pytest.mark.slow
PG_BIN = Path("/usr/lib/postgresql/15/bin")
SUPERUSER = PASSWORD = "airflow"  # as compose's postgres service: POSTGRES_USER / POSTGRES_PASSWORD
READER = "grafana_reader"  # the login user docker/postgres-init/02-dashboard-reader.sh creates
SCORE_QUEUE = "score"
INVESTIGATION = "op-celery"


def _apt_install(package: str, binary: str) -> str | None:
    """The binary, installed with apt-get where it is missing and apt-get can (as root, or with sudo)."""
    if shutil.which(binary) is None and shutil.which("apt-get"):
        sudo = [] if os.getuid() == 0 else ["sudo", "-n"]
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "install", "-y", "-qq", package], ["apt-get", "update", "-qq"],
                    ["apt-get", "install", "-y", "-qq", package]):
            subprocess.run([*sudo, *cmd], env=env, capture_output=True, check=False, timeout=600)
            if shutil.which(binary):
                break
    return shutil.which(binary)


def _as_postgres_user() -> list[str]:
    """initdb refuses root: as root, run the cluster as `nobody`."""
    return ["runuser", "-u", "nobody", "--"] if os.getuid() == 0 else []


class Postgres15:
    """A PostgreSQL 15 cluster from Debian's binaries in a temp folder: TCP on a free loopback port
    (password login, as a deployment), its unix socket in the same folder (trust, for pg_ctl)."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="pa-pg15-"))
        self.root.chmod(0o755)
        self.data, self.port = self.root / "data", free_port()
        (self.root / "pw").write_text(PASSWORD + "\n")
        if os.getuid() == 0:
            shutil.chown(self.root, "nobody")
            shutil.chown(self.root / "pw", "nobody")
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", SUPERUSER, "--pwfile", str(self.root / "pw"),
                  "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync")
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300")
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "server.log"), "-o", options,
                  "-w", "start")

    def _run(self, *cmd: str) -> None:
        out = subprocess.run([*_as_postgres_user(), *cmd], cwd=self.root, capture_output=True, text=True,
                             timeout=120, check=False)
        assert out.returncode == 0, f"{' '.join(cmd)}: {out.stdout[-2000:]}{out.stderr[-2000:]}"

    def url(self, database: str, user: str = SUPERUSER, password: str = PASSWORD, driver: str = "postgresql") -> str:
        return f"{driver}://{user}:{password}@127.0.0.1:{self.port}/{database}"

    def init_as_compose_does(self) -> None:
        """What the postgres image does on a new volume: POSTGRES_DB, then docker/postgres-init/* in order."""
        self._run(str(PG_BIN / "createdb"), "-h", str(self.root), "-p", str(self.port), "-U", SUPERUSER, "airflow")
        env = {**os.environ, "PATH": f"{PG_BIN}:{os.environ['PATH']}", "PGHOST": "127.0.0.1",
               "PGPORT": str(self.port), "PGPASSWORD": PASSWORD, "POSTGRES_USER": SUPERUSER, "POSTGRES_DB": "airflow"}
        for script in sorted((REPO / "docker" / "postgres-init").iterdir()):
            cmd = (["bash", str(script)] if script.suffix == ".sh" else
                   ["psql", "-v", "ON_ERROR_STOP=1", "-U", SUPERUSER, "-d", "airflow", "-f", str(script)])
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
            assert out.returncode == 0, f"{script.name}: {out.stderr[-2000:]}"

    def stop(self) -> None:
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


class Redis:
    """redis-server on a free loopback port, in its own process group, no persistence (a restart loses the
    queue, as a container restart without a volume does)."""

    def __init__(self, log: Path) -> None:
        self.port, self.log, self.proc = free_port(), log, None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
                                      "--appendonly", "no"], stdout=self.log.open("a"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            assert time.monotonic() < deadline, self.log.read_text()[-2000:]
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)


@pytest.fixture
def celery_stack(tmp_path) -> Iterator[dict]:
    """PostgreSQL 15 and Redis, installed where missing and possible; skips with the reason otherwise."""
    pytest.importorskip("airflow.providers.celery", reason="apache-airflow-providers-celery is in the [test] extra: "
                        "pip install -e '.[test]'")
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"no PostgreSQL 15 binaries in {PG_BIN} (apt-get install postgresql-15)")
    if _apt_install("redis-server", "redis-server") is None:
        pytest.skip("redis-server is missing and could not be installed (apt-get install redis-server)")
    pg = Postgres15()
    redis = None
    try:
        redis = Redis(tmp_path / "redis.log")
        yield {"pg": pg, "redis": redis}
    finally:
        if redis is not None:
            redis.stop()
        pg.stop()


def _worker(cluster: Cluster, name: str, queue: str, slots: int) -> subprocess.Popen:
    """docs/airflow.md, Deploying step 5: a Celery worker on one queue (named, so its tasks can be told apart;
    no log server: two workers share this host)."""
    return cluster.start("celery", "worker", "--queues", queue, "--concurrency", str(slots),
                         "--celery-hostname", f"{name}@%h", "--skip-serve-logs", name=name)


@pytest.fixture
def deployment(celery_stack, tmp_path) -> Iterator[dict]:
    """docs/airflow.md's "Deploying" steps, in its order."""
    pg, redis = celery_stack["pg"], celery_stack["redis"]
    home, profile_home = tmp_path / "airflow", tmp_path / "profile-audit"
    home.mkdir()
    port = free_port()
    env = airflow_env(home, pg.url("airflow", driver="postgresql+psycopg2"), port, profile_home, "CeleryExecutor")
    env.update({
        "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{redis.port}/0",
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + pg.url("airflow", driver="postgresql+psycopg2"),
        # Celery's result records name the worker that ran each task (celery_taskmeta.worker)
        "AIRFLOW__CELERY__EXTRA_CELERY_CONFIG": json.dumps({"result_extended": True}),
        "PROFILE_AUDIT_SCORE_QUEUE": SCORE_QUEUE,
        # a killed worker's task is noticed within seconds, not the default 5 minutes; a task lost from the
        # broker (Redis restarted) is requeued after 60 s, not 10 minutes
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
        "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "60",
    })
    cluster = Cluster(home, env)
    # 1. the databases: compose's postgres-init (the project's database, the dashboard role and its login user)
    pg.init_as_compose_does()
    # 2. Airflow's metadata database
    cluster.cli("db", "migrate", timeout=600)
    # 3. the project's database through the Airflow connection (the migration grants the dashboard role its views)
    cluster.cli("connections", "add", "profile_audit_db", "--conn-uri", pg.url("profile_audit"))
    out = subprocess.run([str(Path(AIRFLOW).parent / "profile-audit"), "--airflow-conn", "profile_audit_db", "db",
                          "upgrade"], env=env, capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    # 4. pools and queues (the queue: PROFILE_AUDIT_SCORE_QUEUE above, where the DAGs are parsed)
    cluster.cli("pools", "set", "profile_audit_score", "2", "torch-heavy score tasks")
    # 5. the components and the workers: the default queue, and the score queue with fewer slots
    cluster.start("api-server", "--host", "127.0.0.1", "--port", str(port))
    cluster.start("scheduler", "--skip-serve-logs")
    cluster.start("dag-processor")
    workers = {"default": _worker(cluster, "default", "default", 3),
               "score": _worker(cluster, "score", SCORE_QUEUE, 1)}
    try:
        cluster.wait_dags_parsed()
        yield {"cluster": cluster, "pg": pg, "redis": redis, "workers": workers, "profile_home": profile_home}
    finally:
        cluster.stop()


def _metadata(pg: Postgres15, sql: str, **params) -> list[dict]:
    engine = sa.create_engine(pg.url("airflow", driver="postgresql+psycopg2"))
    try:
        with engine.connect() as conn:
            return [dict(r) for r in conn.execute(sa.text(sql), params).mappings()]
    finally:
        engine.dispose()


def _task_instances(pg: Postgres15) -> list[dict]:
    """Every try of every task that ran, with the queue Airflow sent it to and the Celery worker that ran it."""
    return _metadata(pg, """
        select ti.dag_id, ti.run_id, ti.task_id, ti.map_index, ti.try_number, ti.state, ti.queue, m.worker
        from (select dag_id, run_id, task_id, map_index, try_number, state, queue, external_executor_id
              from task_instance
              union all
              select dag_id, run_id, task_id, map_index, try_number, state, queue, external_executor_id
              from task_instance_history) ti
        left join celery_taskmeta m on m.task_id = ti.external_executor_id
        where ti.state is not null and ti.state not in ('skipped', 'upstream_failed', 'removed')""")


def _wait_for_score_mid_shard(pg: Postgres15, dag_id: str) -> dict:
    """A score task instance that is running and inside its stage: it holds the run's lease (an advisory
    lock in the project's database, taken for the stage's whole body, torch and the model included)."""
    engine = sa.create_engine(pg.url("airflow", driver="postgresql+psycopg2"))
    deadline = time.monotonic() + DEADLINE_S
    try:
        with engine.connect() as conn:
            while time.monotonic() < deadline:
                rows = conn.execute(sa.text(
                    "select task_id, map_index, try_number from task_instance where dag_id = :d and"
                    " task_id = 'score' and state = 'running' and exists (select 1 from pg_locks l join"
                    " pg_database d on d.oid = l.database where d.datname = 'profile_audit' and"
                    " l.locktype = 'advisory' and l.granted)"), {"d": dag_id}).mappings().all()
                conn.commit()
                if rows:
                    return dict(rows[0])
                time.sleep(0.1)
    finally:
        engine.dispose()
    raise AssertionError("no score task ever ran")


def _kill_9_with_descendants(proc: subprocess.Popen) -> None:
    """kill -9 a worker as a lost machine loses it: its process group and every process below it (a task
    process may have a session of its own)."""
    ps = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True, check=True).stdout
    children: dict[int, list[int]] = {}
    for line in ps.splitlines():
        pid, ppid = map(int, line.split())
        children.setdefault(ppid, []).append(pid)
    doomed, todo = [], [proc.pid]
    while todo:
        pid = todo.pop()
        doomed.append(pid)
        todo += children.get(pid, [])
    os.killpg(proc.pid, signal.SIGKILL)
    for pid in doomed:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)


def _reference_rows(deployment, monkeypatch, detector: Path, landing: Path, scheduled: list[str]) -> dict:
    """The same runs under dag.test(), one after another in this process, on a second database of the same
    cluster and the same project home: what the Celery runs must equal."""
    from airflow.dag_processing.dagbag import DagBag

    pg = deployment["pg"]
    admin = sa.create_engine(pg.url("postgres", driver="postgresql+psycopg2"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text("create database reference"))
    admin.dispose()
    url = pg.url("reference", driver="postgresql+psycopg2")
    monkeypatch.setenv("PROFILE_AUDIT_DATABASE_URL", url)
    monkeypatch.setenv("PROFILE_AUDIT_HOME", str(deployment["profile_home"]))
    monkeypatch.setenv("PROFILE_AUDIT_SCORE_QUEUE", SCORE_QUEUE)
    bag = DagBag(str(REPO / "dags"))
    nightly, investigate = bag.get_dag("profile_audit_nightly"), bag.get_dag("profile_audit_investigate")
    conf = {"landing_dir": str(landing), "detector": str(detector)}
    for day in scheduled:  # the run unpausing started (no conf), then the backfill's days in order
        assert nightly.test(logical_date=pendulum.parse(day), run_conf={}).state in ("success", "skipped")
    for day in DAYS:
        assert nightly.test(logical_date=pendulum.parse(day), run_conf=conf).state == "success"
    run = investigate.test(run_conf=_investigation_conf(landing, detector))
    assert run.state == "success"
    return table_contents(load_settings(env={}, shipped_detector=False, home=deployment["profile_home"],
                                        database_url=url))


def _investigation_conf(landing: Path, detector: Path, investigation: str = INVESTIGATION) -> dict:
    return {"export_path": str(landing / DAYS[2]), "investigation_id": investigation, "score_shards": 3,
            "detector": str(detector), "min_cluster_size": 4}


def _redis_outage(deployment, landing: Path, detector: Path) -> None:
    """Redis stopped for 20 s while an investigation runs: the run ends, succeeded or failed with a reason."""
    cluster, pg, redis = deployment["cluster"], deployment["pg"], deployment["redis"]
    conf = {**_investigation_conf(landing, detector, "op-redis"), "score_shards": 1}
    cluster.cli("dags", "trigger", "profile_audit_investigate", "--conf", json.dumps(conf))
    run_id = _metadata(pg, "select run_id from dag_run where conf::text like '%op-redis%'")[0]["run_id"]
    deadline = time.monotonic() + DEADLINE_S
    while not _metadata(pg, "select 1 from task_instance where run_id = :r and task_id = 'ingest'"
                            " and state in ('queued', 'running')", r=run_id):
        assert time.monotonic() < deadline, cluster.logs()
        time.sleep(0.5)
    redis.stop()
    time.sleep(20)
    redis.start()
    runs = cluster.wait_runs("profile_audit_investigate", all_finished, "the run Redis stopped under")
    outcome = next(r for r in runs if r["run_id"] == run_id)
    assert outcome["state"] in ("success", "failed"), outcome
    if outcome["state"] == "failed":
        settings = load_settings(env={}, shipped_detector=False, home=deployment["profile_home"],
                                 database_url=pg.url("profile_audit", driver="postgresql+psycopg2"))
        with transaction(settings) as conn:
            row = conn.execute(sa.text("select status, summary from runs where run_key = 'investigation:op-redis'"))
            row = row.one_or_none()
        reason = (row.summary or {}).get("error") if row else None
        assert row is not None and row.status == "failed" and reason and "\n" not in reason.strip(), row
    retried = [t for t in _task_instances(pg) if t["run_id"] == run_id and t["try_number"] > 1]
    print(f"run under a 20 s Redis outage: {outcome['state']}; tasks tried again: "
          f"{sorted((t['task_id'], t['try_number'], t['state']) for t in retried)}")


def test_celery_deployment_runs_the_dags_on_their_queues_and_survives_a_killed_worker(
        deployment, demo_data, airflow_db, tmp_path, monkeypatch):
    cluster, pg, workers = deployment["cluster"], deployment["pg"], deployment["workers"]
    landing = tmp_path / "landing"
    land_exports(landing)
    detector = demo_data["detector"]

    # 6. backfill (unpausing also starts the latest scheduled run), then an investigation with three shards
    cluster.cli("dags", "unpause", "profile_audit_nightly")
    runs = cluster.backfill(json.dumps({"landing_dir": str(landing), "detector": str(detector)}))
    states = {d: by_logical_date(runs)[d]["state"] for d in DAYS}
    assert states == dict.fromkeys(DAYS, "success"), f"{states}\n{cluster.logs()}"
    scheduled = [r["logical_date"] for r in runs if r["run_id"].startswith("scheduled__")]

    cluster.cli("dags", "unpause", "profile_audit_investigate")
    cluster.cli("dags", "trigger", "profile_audit_investigate", "--conf",
                json.dumps(_investigation_conf(landing, detector)))
    # kill -9 the score worker (its whole process group: the task's process too) while a shard runs
    killed = _wait_for_score_mid_shard(pg, "profile_audit_investigate")
    _kill_9_with_descendants(workers["score"])
    settings = load_settings(env={}, shipped_detector=False, home=deployment["profile_home"],
                             database_url=pg.url("profile_audit", driver="postgresql+psycopg2"))
    with transaction(settings) as conn:  # the killed try's claims, if it died while embedding (its retry takes them)
        left = conn.execute(sa.text("select count(*) from image_claims where run_key = :k"),
                            {"k": f"investigation:{INVESTIGATION}"}).scalar_one()
    print(f"score shard {killed['map_index']} killed mid-shard, leaving {left} image claims")
    workers["score"] = _worker(cluster, "score-restarted", SCORE_QUEUE, 1)
    runs = cluster.wait_runs("profile_audit_investigate", all_finished, "the investigation")
    assert [r["state"] for r in runs] == ["success"], f"{[r['state'] for r in runs]}\n{cluster.logs()}"

    tries = _task_instances(pg)
    placed = {(t["task_id"], t["queue"], (t["worker"] or "?").split("@")[0]) for t in tries
              if t["state"] == "success"}
    assert placed and all(t[2] != "?" for t in placed), tries
    assert {p for p in placed if p[0] == "score"} <= {("score", SCORE_QUEUE, "score"),
                                                      ("score", SCORE_QUEUE, "score-restarted")}, placed
    assert {(q, w) for task, q, w in placed if task != "score"} == {("default", "default")}, placed
    retried = [t for t in tries if t["task_id"] == "score" and t["map_index"] == killed["map_index"]
               and t["run_id"].startswith("manual")]
    assert max(t["try_number"] for t in retried) > killed["try_number"], retried
    assert [t["worker"].split("@")[0] for t in retried if t["state"] == "success"] == ["score-restarted"], retried
    print(f"(task, queue, worker) of the successful tries: {sorted(placed)}; killed shard's tries: "
          f"{sorted((t['try_number'], t['state'], t['worker']) for t in retried)}")

    celery_rows = table_contents(settings)
    reference = _reference_rows(deployment, monkeypatch, detector, landing, scheduled)
    assert contents_difference(celery_rows, reference) == {}

    # the dashboard role (compose's postgres-init, granted by `db upgrade`) reads a view and writes nothing
    reader = psycopg2.connect(host="127.0.0.1", port=pg.port, user=READER, password="grafana_reader",
                              dbname="profile_audit", connect_timeout=10)
    reader.autocommit = True
    try:
        assert refused(reader, "select * from dashboard_daily_audit") is None
        with reader.cursor() as cur:
            cur.execute("select count(*) from dashboard_daily_audit")
            assert cur.fetchone()[0] > 0
        assert refused(reader, "delete from runs") == "InsufficientPrivilege"
        assert refused(reader, "create table public.scratch (x int)") == "InsufficientPrivilege"
    finally:
        reader.close()

    _redis_outage(deployment, landing, detector)
