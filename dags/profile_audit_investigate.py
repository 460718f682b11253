"""Ad-hoc investigation: audit one export with the investigator's thresholds and detector.

Trigger with a config, e.g. ``{"export_path": "/data/op-x", "investigation_id": "op-x"}``. The run
key is ``investigation:<id>``, so triggering the same id again replaces that investigation's rows
and keeps the statuses investigators set on its flags.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, get_current_context, task

from pipeline.airflow.tasks import audit_task_chain, network_param_specs, score_param_specs


@dag(
    dag_id="profile_audit_investigate",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["profile-audit"],
    params={
        "export_path": Param("", type="string", minLength=1, description="export folder or manifest file"),
        "investigation_id": Param("", type="string", description="names the run; empty = the DAG run id"),
        "format": Param("auto", type="string"),
        "detector": Param("", type="string", description="detector id or .json; empty = promoted default"),
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
        return begin_run(f"investigation:{investigation}", params["export_path"], params["format"], params,
                         as_of=None)

    audit_task_chain(begin())


profile_audit_investigate()
