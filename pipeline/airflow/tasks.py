"""What the DAG files share: settings from Airflow, run keys, and the audit stages as tasks.

Importing this module does not import Airflow, torch or open_clip; the task bodies import what
they need when they run, so DAG parsing stays fast.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any

from pipeline.config import NetworkParams, Settings, load_settings

log = logging.getLogger(__name__)
CONNECTION_ID = "profile_audit_db"
NETWORK_PARAM_NAMES = tuple(NetworkParams().as_dict())


def database_url_from_connection(conn_id: str = CONNECTION_ID) -> str | None:
    """The Airflow connection's URL as postgresql+psycopg2, or None when no such connection exists."""
    from airflow.sdk import Connection

    try:
        conn = Connection.get(conn_id)
    except Exception:  # AirflowNotFoundException and friends: no connection configured
        return None
    from sqlalchemy.engine import URL

    host = conn.host or None
    query = {}
    if host and host.startswith("/"):  # unix socket folder
        query, host = {"host": host}, None
    return URL.create("postgresql+psycopg2", username=conn.login or None, password=conn.password or None,
                      host=host, port=conn.port or None, database=conn.schema or "postgres",
                      query=query).render_as_string(hide_password=False)


def airflow_settings(params: dict[str, Any] | None = None) -> Settings:
    """Connection `profile_audit_db` first, then PROFILE_AUDIT_DATABASE_URL, then the embedded server."""
    params = params or {}
    return load_settings(
        database_url=database_url_from_connection(),
        detector=params.get("detector") or None,
        landing_dir=params.get("landing_dir") or None,
    )


def network_params_from(params: dict[str, Any], settings: Settings) -> NetworkParams:
    base = settings.network.as_dict()
    base.update({k: params[k] for k in NETWORK_PARAM_NAMES if params.get(k) is not None})
    return NetworkParams.from_mapping(base)


def network_param_specs() -> dict[str, Any]:
    """Airflow Params for every network and flag threshold, derived from NetworkParams' defaults."""
    from airflow.sdk import Param

    # default None: the value from PROFILE_AUDIT's TOML [network] table (else the built-in default) applies
    return {
        name: Param(None, type=["null", "integer" if isinstance(default, int) else "number"], minimum=0,
                    description=f"threshold {name}; empty = configured value (built-in default {default})")
        for name, default in NetworkParams().as_dict().items()
    }


def nightly_run_key(day: datetime) -> str:
    return f"nightly:{day:%Y-%m-%d}"


def landing_folder(params: dict[str, Any], day: datetime) -> Path:
    """<landing_dir>/<YYYY-MM-DD>/; the Param wins, else PROFILE_AUDIT_LANDING_DIR or the TOML file."""
    return airflow_settings(params).landing_dir / f"{day:%Y-%m-%d}"


def begin_run(run_key: str, export_path: str, fmt: str, params: dict[str, Any], as_of: str | None) -> dict[str, Any]:
    """First task of an audit DAG: validate the export, open the run row, return what later tasks need."""
    from pipeline.audit import begin

    settings = airflow_settings(params)
    begin(settings, run_key, Path(export_path), fmt, network_params_from(params, settings),
          params.get("detector") or None, as_of)
    return {"run_key": run_key, "params": {k: v for k, v in params.items() if v is not None}}


def run_stage(stage: str, run: dict[str, Any], shard_index: int = 0, shard_count: int = 1) -> dict[str, Any]:
    """One pipeline stage as a task (the score stage: one shard of it); returns the stage's counts for XCom."""
    from pipeline import audit

    settings = airflow_settings(run["params"])
    ctx = audit.RunContext(settings, run["run_key"], network_params_from(run["params"], settings),
                           run["params"].get("detector") or None, shard_index, shard_count)
    out = audit.run_stage(ctx, stage)
    return {k: v for k, v in out.items() if isinstance(v, (int, float, str, dict))}


def score_param_specs() -> dict[str, Any]:
    """Airflow Params of the score stage: how many mapped score tasks share the run's images."""
    from airflow.sdk import Param

    return {"score_shards": Param(1, type="integer", minimum=1, maximum=1024,
                                  description="score tasks mapped over the images (split by image hash); "
                                              "1 = one task. Put several on GPU workers for large runs")}


def score_shard_plan(run: dict[str, Any]) -> list[dict[str, int]]:
    """The shards that dynamic task mapping expands the score task over."""
    count = int(run["params"].get("score_shards") or 1)
    if count < 1:
        raise ValueError(f"score_shards must be at least 1, got {count}")
    return [{"shard_index": i, "shard_count": count} for i in range(count)]


def flags_asset():
    from airflow.sdk import Asset

    return Asset(name="profile_audit_flags", uri="profile-audit://flags")




def audit_task_chain(run: Any) -> Any:
    """Wire the stages as a linear chain of TaskFlow tasks after `run` (the begin task's output)."""
    from airflow.sdk import task

    from pipeline.stages import STAGE_NAMES

    previous = None
    for stage in STAGE_NAMES:
        # the flag task updates the flags Asset, so dashboards or exports can be scheduled on it
        outlets = [flags_asset()] if stage == "flag" else []

        if stage == "score":  # mapped over hash shards: one task instance per shard
            @task(task_id="plan_score_shards")
            def plan_score_shards(run_info: dict[str, Any]) -> list[dict[str, int]]:
                return score_shard_plan(run_info)

            @task(task_id="score", map_index_template="{{ task.op_kwargs['shard']['shard_index'] }}")
            def score_shard(run_info: dict[str, Any], shard: dict[str, int]) -> dict[str, Any]:
                return run_stage("score", run_info, shard["shard_index"], shard["shard_count"])

            planned = plan_score_shards(run)
            if previous is not None:
                previous >> planned
            current = score_shard.partial(run_info=run).expand(shard=planned)
            previous = current
            continue

        @task(task_id=stage, outlets=outlets)
        def stage_task(run_info: dict[str, Any], stage_name: str = stage) -> dict[str, Any]:
            return run_stage(stage_name, run_info)

        current = stage_task(run)
        if previous is not None:
            previous >> current
        previous = current
    return previous
