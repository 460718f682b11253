"""Nightly audit: reads <landing_dir>/<YYYY-MM-DD>/ for the data interval and runs every stage.

Keyed by the data interval (run key ``nightly:YYYY-MM-DD``), so reruns and
``airflow backfill create --dag-id profile_audit_nightly ...`` replace a day's rows, never add to them.
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import Param, dag, get_current_context, task

from pipeline.airflow.tasks import audit_task_chain, network_param_specs, score_param_specs


@dag(
    dag_id="profile_audit_nightly",
    schedule=os.environ.get("PROFILE_AUDIT_NIGHTLY_SCHEDULE", "@daily"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["profile-audit"],
    params={
        "landing_dir": Param("", type="string",
                             description="folder of YYYY-MM-DD/ exports; empty = PROFILE_AUDIT_LANDING_DIR or config"),
        "format": Param("auto", type="string"),
        "detector": Param("", type="string", description="detector id or .json; empty = promoted default"),
        **score_param_specs(),
        **network_param_specs(),
    },
    doc_md=__doc__,
)
def profile_audit_nightly():
    @task
    def begin() -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from pipeline.airflow.tasks import begin_run, landing_folder, nightly_run_key

        ctx = get_current_context()
        day = ctx["data_interval_start"]
        folder = landing_folder(dict(ctx["params"]), day)
        if not folder.exists():
            raise AirflowSkipException(f"no export landed for {day:%Y-%m-%d}: {folder} does not exist")
        return begin_run(nightly_run_key(day), str(folder), ctx["params"]["format"], dict(ctx["params"]),
                         as_of=ctx["data_interval_end"].isoformat())

    audit_task_chain(begin())


profile_audit_nightly()
