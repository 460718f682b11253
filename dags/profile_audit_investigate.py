"""Ad-hoc investigation: audit one export with the investigator's thresholds and detector.

Trigger with a config, e.g. ``{"export_path": "/data/op-x", "investigation_id": "op-x"}``; ``exports`` (a list)
adds further exports, of any formats, to the same run (``{"export_path": "/data/x-io", "exports":
["/data/mastodon", "/data/bluesky"]}``). The run
key is ``investigation:<id>``, so triggering the same id again replaces that investigation's rows
and keeps the statuses investigators set on its flags (flag ids are the run key and cluster id).
An investigation inherits nothing from other investigations. A second trigger of an id that is
still running fails at its begin task; unknown conf keys fail there too. See docs/airflow.md.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, get_current_context, task

from pipeline.airflow.params import detector_param_specs, network_param_specs, score_param_specs
from pipeline.airflow.tasks import default_args, plan_score_shards_task, record_failure, stage_task


@dag(
    dag_id="profile_audit_investigate",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=4,
    default_args=default_args(),
    on_failure_callback=record_failure,
    tags=["profile-audit"],
    params={
        "export_path": Param("", type="string", minLength=1, title="Export", section="Export",
                             description="export folder or manifest file"),
        "exports": Param(None, type=["null", "array"], items={"type": "string", "minLength": 1}, title="More exports",
                         section="Export",
                         description="further export paths (one per platform, any formats) audited into the same run"
                                     " as Export: cross-platform edges join accounts across them; the order does not"
                                     " matter"),
        "investigation_id": Param(None, type=["null", "string"], title="Investigation id", section="Export",
                                  description="names the run (investigation:<id>); empty = the DAG run id"),
        **detector_param_specs(),
        **score_param_specs(),
        **network_param_specs(),
    },
    doc_md=__doc__,
)
def profile_audit_investigate():
    @task
    def begin() -> dict:
        from pipeline.airflow.tasks import begin_run

        ctx = get_current_context()
        params = dict(ctx["params"])
        investigation = params.get("investigation_id") or ctx["run_id"]
        paths = [params["export_path"], *(params.get("exports") or [])]
        return begin_run(ctx, f"investigation:{investigation}", paths, params, as_of=None)

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


profile_audit_investigate()
