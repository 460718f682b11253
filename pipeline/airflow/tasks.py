"""What the DAG files share: settings from Airflow, run keys and intervals, Params, and one task factory
per stage of `pipeline.stages.STAGES` (the DAG files write the chain out with ``>>``). A stage's task
takes its pool, queue, timeout, outlets and shard mapping from its row of the table.

Importing this module does not import torch or open_clip; the task bodies import what they need when
they run, so DAG parsing stays fast.

Every audit task works on the run row `begin` pinned (`pipeline.core.runs`): it takes the run's
lease for its duration, checks that its DAG run still owns the key, and builds its RunContext from
the row, never from the current Params or configuration.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from pipeline.airflow.params import NETWORK_PARAM_NAMES, check_conf, policy_from_params
from pipeline.config import Settings, load_settings
from pipeline.errors import UserError
from pipeline.stages import SCORE_POOL as SCORE_POOL  # the pool the deployment creates (docker/airflow-init)
from pipeline.stages import Outlet, Stage

log = logging.getLogger(__name__)
CONNECTION_ID = "profile_audit_db"
ALLOW_EMBEDDED_ENV = "PROFILE_AUDIT_ALLOW_EMBEDDED"  # "1": tasks may start the per-machine embedded server
RETRIES = 2  # every stage replaces its own rows for the run key, so a retry is safe
EXECUTION_TIMEOUT = timedelta(hours=2)  # a stage's `TaskOptions.timeout` overrides it


def database_url_from_connection(conn_id: str = CONNECTION_ID) -> str | None:
    """The Airflow connection's URL as postgresql+psycopg2, or None when no such connection exists."""
    from airflow.sdk import Connection

    try:
        conn = Connection.get(conn_id)
    except Exception:  # noqa: BLE001 - AirflowNotFoundException and friends: no connection configured
        return None
    return connection_to_url(conn)


def url_of_airflow_connection(conn_id: str) -> str:
    """For the CLI (`--airflow-conn`): the URL of an Airflow connection, from AIRFLOW_CONN_<ID>, a secrets
    backend or Airflow's metadata database, so investigators' commands reach the DAGs' database."""
    try:
        from airflow.models.connection import Connection
    except ImportError:
        raise UserError("--airflow-conn needs Airflow installed; pass --database-url instead") from None
    try:
        conn = Connection.get_connection_from_secrets(conn_id)
    except Exception as exc:  # noqa: BLE001 - AirflowNotFoundException, an unreachable metadata database
        raise UserError(f"Airflow connection {conn_id!r} not found ({type(exc).__name__}); "
                        f"check `airflow connections get {conn_id}`") from None
    return connection_to_url(conn)


def connection_to_url(conn: Any) -> str:
    from sqlalchemy.engine import URL

    host = conn.host or None
    query = {}
    if host and host.startswith("/"):  # unix socket folder
        query, host = {"host": host}, None
    return URL.create("postgresql+psycopg2", username=conn.login or None, password=conn.password or None,
                      host=host, port=conn.port or None, database=conn.schema or "postgres",
                      query=query).render_as_string(hide_password=False)


def airflow_settings(params: dict[str, Any] | None = None) -> Settings:
    """Connection `profile_audit_db` first, then PROFILE_AUDIT_DATABASE_URL. No embedded fallback unless
    PROFILE_AUDIT_ALLOW_EMBEDDED=1: each worker would start its own server (or fight over one)."""
    params = params or {}
    settings = load_settings(
        database_url=database_url_from_connection(),
        detector=params.get("detector") or None,
        landing_dir=params.get("landing_dir") or None,
    )
    if settings.database_url is None and os.environ.get(ALLOW_EMBEDDED_ENV) != "1":
        raise UserError(f"no database for Airflow tasks: create the Airflow connection {CONNECTION_ID} (or set "
                        f"PROFILE_AUDIT_DATABASE_URL); {ALLOW_EMBEDDED_ENV}=1 allows the embedded server on a "
                        "single machine")
    return settings


# ---- dates and keys -------------------------------------------------------------------------------

def nightly_run_key(day: date | datetime) -> str:
    return f"nightly:{day:%Y-%m-%d}"


def audit_day(logical_date: datetime | None, run_after: datetime) -> date:
    """The day a nightly run audits. The timetable's interval is one UTC day starting at the logical date,
    so a scheduled run at 00:00 on D+1 audits D, a backfill's run for D audits D, and a manual trigger
    with a logical date audits that date's day. Without a logical date (Airflow 3 allows it), the last
    complete day before the trigger, i.e. what the scheduled run at that moment audits."""
    if logical_date is not None:
        return logical_date.astimezone(UTC).date()
    return run_after.astimezone(UTC).date() - timedelta(days=1)


def interval_end(day: date) -> str:
    """as_of of a nightly run: the end of its interval (midnight UTC after the day)."""
    return (datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)).isoformat()


def landing_folder(params: dict[str, Any], day: date | datetime) -> Path:
    """<landing_dir>/<YYYY-MM-DD>/; the Param wins, else PROFILE_AUDIT_LANDING_DIR or the TOML file."""
    return load_settings(landing_dir=params.get("landing_dir") or None).landing_dir / f"{day:%Y-%m-%d}"


def airflow_owner(ctx: Any) -> str:
    return f"airflow:{ctx['dag'].dag_id}/{ctx['run_id']}"


def airflow_identity(ctx: Any) -> dict[str, Any]:
    ti = ctx["ti"]
    return {"dag_id": ctx["dag"].dag_id, "run_id": ctx["run_id"], "try_number": getattr(ti, "try_number", None)}


def dagrun_alive(ctx: Any):
    """The stale-run rule's liveness test for Airflow owners: is that DAG run still queued or running?"""
    def alive(owner: str) -> bool | None:
        dag_id, _, run_id = owner.removeprefix("airflow:").partition("/")
        try:
            state = ctx["ti"].get_dagrun_state(dag_id=dag_id, run_id=run_id)
        except Exception:  # noqa: BLE001 - dag.test() has no API server to ask; or the run was deleted
            return None
        return str(state).lower().split(".")[-1] in ("queued", "running")
    return alive


def nightly_predecessor(ctx: Any, day: date) -> str | None:
    """nightly:<day-1> when the DAG has a run for that logical date (scheduled, backfilled or pending), so
    the successor waits for it even when it has not started yet; else the run row, if any, decides."""
    previous = day - timedelta(days=1)
    try:
        count = ctx["ti"].get_dr_count(dag_id=ctx["dag"].dag_id, logical_dates=[
            datetime(previous.year, previous.month, previous.day, tzinfo=UTC)])
    except Exception:  # noqa: BLE001 - dag.test(): no API server; fall back to the runs table
        count = None
    if count:
        return nightly_run_key(previous)
    from pipeline.audit import AUTO

    return AUTO


# ---- tasks ----------------------------------------------------------------------------------------

def no_retry_on_user_error(fn):
    """A UserError (bad conf, missing export, key already running) fails the task without retries:
    retrying cannot fix it. Everything else is retried (the stages are idempotent)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(str(exc)) from None
    return wrapper


def declared_params(ctx: Any, params: dict[str, Any]) -> dict[str, Any]:
    """The DAG's declared Params (the run's params also hold every conf key, known or not)."""
    dag = ctx.get("dag") if hasattr(ctx, "get") else None
    declared = getattr(dag, "params", None)
    if declared is None:
        return params
    return {k: params.get(k) for k in declared.keys()}


@no_retry_on_user_error
def begin_run(ctx: Any, run_key: str, export_path: str | list[str], params: dict[str, Any], as_of: str | None,
              predecessor: str | None = None, require_accounts: bool = False) -> dict[str, Any]:
    """First task of an audit DAG: validate conf and export, take the key, pin the run row.
    ``require_accounts``: an export that gives no account fails the ingest task (the nightly rule).
    ``export_path``: one path, or several (the investigate DAG's ``export_path`` and ``exports``) for one run."""
    from pipeline import audit
    from pipeline.core import runs

    check_conf(ctx["dag_run"].conf, declared_params(ctx, params))
    settings = airflow_settings(params)
    owner = airflow_owner(ctx)
    from pipeline.core.db import ensure_schema

    ensure_schema(settings)
    with runs.RunLease(settings, run_key, owner):
        paths = [Path(export_path)] if isinstance(export_path, str) else [Path(p) for p in export_path]
        audit.begin(settings, run_key, paths, params.get("format") or "auto",
                    policy_from_params(params, settings), params.get("detector") or None, as_of, owner=owner,
                    predecessor=predecessor, shard_count=int(params.get("score_shards") or 1),
                    airflow=airflow_identity(ctx), alive=dagrun_alive(ctx),
                    extra_params={k: v for k, v in params.items() if k not in NETWORK_PARAM_NAMES},
                    require_accounts=require_accounts)
    return {"run_key": run_key, "owner": owner}


@no_retry_on_user_error
def skip_run(ctx: Any, run_key: str, params: dict[str, Any], reason: str, predecessor: str | None) -> None:
    """A nightly day with no export: a `skipped` run row (the lineage walks over it), then skip the tasks."""
    from airflow.sdk.exceptions import AirflowSkipException

    from pipeline.core import runs
    from pipeline.core.db import ensure_schema

    check_conf(ctx["dag_run"].conf, declared_params(ctx, params))
    settings = airflow_settings(params)
    ensure_schema(settings)
    owner = airflow_owner(ctx)
    from pipeline.audit import AUTO, _default_predecessor

    if predecessor == AUTO:
        predecessor = _default_predecessor(settings, run_key)
    with runs.RunLease(settings, run_key, owner):
        runs.start_run(settings, run_key, None, None, {"skipped": reason}, owner=owner, predecessor=predecessor,
                       airflow=airflow_identity(ctx), alive=dagrun_alive(ctx), status="skipped")
    raise AirflowSkipException(reason)


@no_retry_on_user_error
def run_task(stage: Stage, run: dict[str, Any], shard_index: int = 0) -> dict[str, Any]:
    """The body of a stage's task (a sharded stage: one shard of it): the run's shared lease, a check that
    this DAG run still owns the key, then the stage table's runner on the pinned run. Returns the stage's
    counts for XCom."""
    from pipeline.core import runs
    from pipeline.stages import run_one

    from airflow.sdk import get_current_context

    settings = airflow_settings()
    alive = dagrun_alive(get_current_context())  # a failed predecessor whose DAG run goes on is waited for
    with runs.RunLease(settings, run["run_key"], run["owner"], shared=True):
        runs.check_owner(settings, run["run_key"], run["owner"])
        out = run_one(run["run_key"], stage, settings=settings, shard_index=shard_index, owner=run["owner"],
                      alive=alive)
    return {k: v for k, v in out.items() if isinstance(v, (int, float, str, dict))}


def score_shard_plan(run: dict[str, Any]) -> list[int]:
    """The shard indexes that dynamic task mapping expands the score task over (count pinned on the run)."""
    from pipeline.core import runs

    return list(range(runs.load_context(airflow_settings(), run["run_key"]).shard_count))


def asset(outlet: Outlet):
    from airflow.sdk import Asset

    return Asset(name=outlet.name, uri=outlet.uri)


def record_failure(context: Any) -> None:
    """on_failure_callback (tasks and DAGs): mark the run failed when a task is killed, times out or is
    marked failed, where no Python `except` ran. Only a run this DAG run still owns is touched."""
    from pipeline.core import runs

    try:
        dag_run = context["dag_run"]
        ti = context.get("ti") or context.get("task_instance")
        owner = f"airflow:{dag_run.dag_id}/{dag_run.run_id}"
        reason = {"failed_stage": getattr(ti, "task_id", None) or "dag run",
                  "error": str(context.get("exception") or context.get("reason") or "failed")[:500]}
        runs.fail_owned(airflow_settings(), owner, reason)
    except Exception as exc:  # noqa: BLE001 - a callback must never raise; the stale-run rule still catches the run
        log.warning("could not record the failure on the run row: %s", exc)


def default_args() -> dict[str, Any]:
    return {"retries": RETRIES, "retry_delay": timedelta(minutes=1), "execution_timeout": EXECUTION_TIMEOUT,
            "on_failure_callback": record_failure}


def stage_task(name: str):
    """The TaskFlow task of one stage of the table (`pipeline.stages.STAGES`), named after it, scheduled as its
    `TaskOptions` say. A sharded stage's task is mapped over ``shard_index`` (``.partial(run=run).expand(
    shard_index=...)``); a stage with outlets announces the run on them (run key, kind, flags)."""
    from airflow.sdk import task

    from pipeline.stages import stage

    entry = stage(name)  # an unknown name fails at parse time
    options = entry.task_options
    kwargs: dict[str, Any] = {"task_id": entry.name}
    if options.pool is not None:
        kwargs["pool"] = options.pool
    if options.queue is not None:
        kwargs["queue"] = options.queue()
    if options.timeout is not None:
        kwargs["execution_timeout"] = options.timeout
    if options.outlets:
        kwargs["outlets"] = [asset(o) for o in options.outlets]
    if entry.sharded:
        kwargs["map_index_template"] = "{{ task.op_kwargs['shard_index'] }}"

        @task(**kwargs)
        def shard_fn(run: dict[str, Any], shard_index: int) -> dict[str, Any]:
            return run_task(entry, run, shard_index)
        return shard_fn

    @task(**kwargs)
    def stage_fn(run: dict[str, Any]) -> dict[str, Any]:
        out = run_task(entry, run)
        if options.outlets:
            from airflow.sdk import get_current_context

            from pipeline.core.runs import kind_of

            events = get_current_context()["outlet_events"]
            for outlet in options.outlets:
                events[asset(outlet)].extra = {"run_key": run["run_key"], "flags": out.get("flags", 0),
                                               "run_kind": kind_of(run["run_key"])}
        return out
    return stage_fn


def plan_score_shards_task():
    from airflow.sdk import task

    @task(task_id="plan_score_shards")
    def plan_score_shards(run: dict[str, Any]) -> list[int]:
        return score_shard_plan(run)
    return plan_score_shards
