"""Nightly audit: each run audits one UTC day, the folder <landing_dir>/<YYYY-MM-DD>/, and runs every stage.

The timetable is an explicit data interval: the run at 00:00 on D+1 audits day D (interval D 00:00 to
D+1 00:00; as_of = the interval end; run key ``nightly:D``). A backfill's run for D and a manual
trigger with logical date D audit D too; a trigger without a logical date audits the last complete
day. A day with no folder is skipped (and recorded as a `skipped` run, which the lineage walks over).
A day whose export gives no account fails its ingest task (one line; an ad hoc audit only warns).
The networks and flag stages wait for the previous day's run, so cluster ids and investigator
statuses are the same whatever order a backfill runs its days in. See docs/airflow.md.
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import CronDataIntervalTimetable, Param, dag, get_current_context, task

from pipeline.airflow.params import detector_param_specs, network_param_specs, score_param_specs
from pipeline.airflow.tasks import default_args, plan_score_shards_task, record_failure, stage_task


@dag(
    dag_id="profile_audit_nightly",
    schedule=CronDataIntervalTimetable(os.environ.get("PROFILE_AUDIT_NIGHTLY_SCHEDULE", "0 0 * * *"), timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    on_failure_callback=record_failure,
    tags=["profile-audit"],
    params={
        "landing_dir": Param(None, type=["null", "string"], title="Landing folder", section="Export",
                             description="folder of YYYY-MM-DD/ exports; empty = PROFILE_AUDIT_LANDING_DIR or config"),
        **detector_param_specs(),
        **score_param_specs(),
        **network_param_specs(),
    },
    doc_md=__doc__,
)
def profile_audit_nightly():
    @task
    def begin() -> dict:
        from pipeline.airflow.tasks import (
            audit_day,
            begin_run,
            interval_end,
            landing_folder,
            nightly_predecessor,
            nightly_run_key,
            skip_run,
        )

        ctx = get_current_context()
        day = audit_day(ctx.get("logical_date"), ctx["dag_run"].run_after)
        params = dict(ctx["params"])
        folder = landing_folder(params, day)
        predecessor = nightly_predecessor(ctx, day)
        if not folder.exists():
            skip_run(ctx, nightly_run_key(day), params, f"no export landed for {day}: {folder} does not exist",
                     predecessor)
        # a landed day that gives no account is a broken delivery, not a quiet night: ingest fails
        return begin_run(ctx, nightly_run_key(day), str(folder), params, as_of=interval_end(day),
                         predecessor=predecessor, require_accounts=True)

    run = begin()
    ingest = stage_task("ingest")(run)
    acquire_images = stage_task("acquire_images")(run)
    shards = plan_score_shards_task()(run)
    score = stage_task("score").partial(run=run).expand(shard_index=shards)
    aggregate = stage_task("aggregate")(run)
    networks = stage_task("networks")(run)
    flag = stage_task("flag")(run)
    report = stage_task("report")(run)
    summarize = stage_task("summarize")(run)
    run >> ingest >> acquire_images >> shards >> score >> aggregate >> networks >> flag >> report >> summarize


profile_audit_nightly()
