"""Real Airflow components on loopback, shared by the real-executor tests (tests/test_scheduler.py with the
LocalExecutor, tests/test_celery.py with the CeleryExecutor): the environment they share, a cluster of
processes each in its own process group, and waiting for DAG runs by what the CLI reports."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa
from conftest import REPO

AIRFLOW = str(Path(sys.executable).parent / "airflow")
DEADLINE_S = 900  # for each wait; the whole test takes a few minutes
DAYS = ["2026-03-01", "2026-03-02", "2026-03-03"]  # the backfill; 2026-03-02 never lands


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def create_database(server_url: str, prefix: str) -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'create database "{name}"'))
    admin.dispose()
    return sa.engine.make_url(server_url).set(database=name).render_as_string(hide_password=False)


def airflow_env(home: Path, metadata_url: str, api_port: int, profile_home: Path, executor: str) -> dict[str, str]:
    """The environment every component gets: Airflow's home and metadata database (psycopg2 and asyncpg),
    the api-server on ``api_port`` (the execution API the tasks report to), fast scheduler and parser
    loops, and the project's home; no inherited AIRFLOW_* or project database settings."""
    meta = sa.engine.make_url(metadata_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PROFILE_AUDIT_DATABASE"))}
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": executor,
        "AIRFLOW__CORE__PARALLELISM": "6",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": meta.render_as_string(hide_password=False),
        # asyncpg takes a socket folder as host= too
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC":
            meta.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API_AUTH__JWT_SECRET": uuid.uuid4().hex,
        "AIRFLOW__API__SECRET_KEY": uuid.uuid4().hex,
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "PROFILE_AUDIT_HOME": str(profile_home),
        "PYTHONPATH": str(REPO),
        "HF_HUB_OFFLINE": "1",
        "PROFILE_AUDIT_NO_PROGRESS": "1",
        "PROFILE_AUDIT_PREDECESSOR_WAIT_S": "900",
    })
    return env


class Cluster:
    """Airflow components in their own Airflow home, each in its own process group; stopped with SIGTERM
    (then SIGKILL) at the end."""

    def __init__(self, home: Path, env: dict[str, str]):
        self.home, self.env, self.procs = home, env, []

    def cli(self, *args: str, timeout: float = 300) -> str:
        out = subprocess.run([AIRFLOW, *args], env=self.env, capture_output=True, text=True, timeout=timeout,
                             check=False)
        assert out.returncode == 0, f"airflow {' '.join(args)}: {out.stderr[-3000:]}"
        return out.stdout

    def start(self, *args: str, name: str | None = None, command: list[str] | None = None) -> subprocess.Popen:
        """Start ``airflow ARGS`` (or ``command``), its output in ``<name>.log`` in the Airflow home."""
        log = (self.home / f"{name or args[0]}.log").open("a")
        proc = subprocess.Popen(command or [AIRFLOW, *args], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)

    def logs(self) -> str:
        """What a failure message shows: first the errors the tasks logged (so a cut-off message still
        names the task and its reason), then the tail of each component's log."""
        return "\n".join([self.task_errors(), *(f"--- {p.name}\n{p.read_text()[-4000:]}"
                                                 for p in sorted(self.home.glob("*.log")))])

    def task_errors(self, limit: int = 6000) -> str:
        """The error lines of every task log (Airflow writes one JSON object a line), newest attempt last."""
        found = []
        for path in sorted((self.home / "logs").glob("dag_id=*/**/*.log")):
            lines = []
            for line in path.read_text(errors="replace").splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    record = {"event": line}
                if not isinstance(record, dict):
                    continue
                if str(record.get("level", "")).lower() in ("error", "critical") or "Traceback" in line:
                    lines.append(f"  {record.get('event', '')} {record.get('error_detail', '')}"[:800])
            if lines:
                found.append(f"{path.relative_to(self.home)}\n" + "\n".join(lines[-8:]))
        text = "\n".join(found) or "(no task logged an error)"
        return "--- task errors\n" + text[-limit:]

    def wait_dags_parsed(self) -> None:
        deadline = time.monotonic() + 300
        while "profile_audit_nightly" not in subprocess.run(
                [AIRFLOW, "dags", "list", "-o", "plain"], env=self.env, capture_output=True, text=True,
                check=False).stdout:
            assert time.monotonic() < deadline, f"DAGs never parsed\n{self.logs()}"
            time.sleep(3)

    def runs(self, dag_id: str) -> list[dict]:
        out = self.cli("dags", "list-runs", dag_id, "-o", "json")  # log lines may precede the JSON
        return next((json.loads(line) for line in reversed(out.splitlines()) if line.startswith("[")), [])

    def wait_runs(self, dag_id: str, done: Callable[[list[dict]], bool], what: str) -> list[dict]:
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            runs = self.runs(dag_id)
            if done(runs):
                return runs
            time.sleep(5)
        raise AssertionError(f"timed out waiting for {what}: {self.runs(dag_id)}\n{self.logs()}")

    def backfill(self, conf: str, *extra: str) -> list[dict]:
        """Backfill DAYS of the nightly DAG (three at a time) and wait until every run finished."""
        self.cli("backfill", "create", "--dag-id", "profile_audit_nightly", "--from-date", DAYS[0],
                 "--to-date", DAYS[-1], "--dag-run-conf", conf, "--max-active-runs", "3", *extra)
        return self.wait_runs("profile_audit_nightly", backfill_done(DAYS), "the backfill")

    def investigate(self, conf: dict) -> list[dict]:
        """Trigger an investigation and wait until every investigation run finished."""
        self.cli("dags", "unpause", "profile_audit_investigate")
        self.cli("dags", "trigger", "profile_audit_investigate", "--conf", json.dumps(conf))
        return self.wait_runs("profile_audit_investigate", all_finished, "the investigation")


def land_exports(landing: Path) -> None:
    """The backfill's landing folder: 2026-03-01 and 2026-03-03 landed, 2026-03-02 never did."""
    from pipeline.testing.demo import make_demo_export

    make_demo_export(landing / DAYS[0], organic=40, seed=11)
    make_demo_export(landing / DAYS[2], organic=60, seed=12)


def all_finished(runs: list[dict]) -> bool:
    return bool(runs) and all(r["state"] in ("success", "failed") for r in runs)


def by_logical_date(runs: list[dict]) -> dict[str, dict]:
    return {r["logical_date"][:10]: r for r in runs if r.get("logical_date")}


def backfill_done(days: list[str], after: float = 0.0) -> Callable[[list[dict]], bool]:
    """Every day's run finished (after ``after``, for a rerun), and no other run still going."""
    def done(runs: list[dict]) -> bool:
        mine = by_logical_date(runs)
        return (all(d in mine and mine[d]["state"] in ("success", "failed")
                    and (not after or ts(mine[d].get("end_date")) > after) for d in days)
                and all(r["state"] in ("success", "failed") for r in runs))
    return done


def ts(value: str | None) -> float:
    return datetime.fromisoformat(value).timestamp() if value else 0.0
