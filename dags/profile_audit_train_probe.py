"""Train a CLIP linear-probe detector from labelled folders (same code as `profile-audit train-probe`),
then, when evaluation folders are given, evaluate it (same code as `profile-audit evaluate`).

The fake folder may hold one sub-folder per generator. Training re-encodes real and fake images
alike (UnivFD blur/JPEG augmentation, then the re-encode rule), splits by image hash, calibrates on
validation images and sets the threshold for ``target_fpr`` on real validation images.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, get_current_context, task

from pipeline.airflow.params import train_probe_param_specs
from pipeline.airflow.tasks import default_args


@dag(
    dag_id="profile_audit_train_probe",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    default_args=default_args(),
    tags=["profile-audit"],
    params=train_probe_param_specs(),  # the same options as `profile-audit train-probe`
    doc_md=__doc__,
)
def profile_audit_train_probe():
    @task
    def train() -> dict:
        from pipeline.airflow.tasks import airflow_settings
        from pipeline.scoring.train_options import TrainOptions

        result = TrainOptions.from_values(get_current_context()["params"]).train(airflow_settings())
        return {"detector_id": result.detector_id, "path": str(result.path), "metrics": result.metrics}

    @task
    def evaluate(trained: dict) -> dict:
        from pathlib import Path

        from airflow.sdk.exceptions import AirflowSkipException

        from pipeline.airflow.tasks import airflow_settings
        from pipeline.scoring.evaluate import evaluate_folders

        p = get_current_context()["params"]
        if not (p["eval_real_dir"] and p["eval_fake_dir"]):
            raise AirflowSkipException("no eval_real_dir/eval_fake_dir given")
        settings = airflow_settings()
        report = settings.home / "reports" / f"evaluation-{trained['detector_id'].replace(':', '_')}.html"
        result = evaluate_folders(settings, trained["detector_id"], Path(p["eval_real_dir"]), Path(p["eval_fake_dir"]),
                                  report=report)
        return {"report": result["report"], "conditions": result["conditions"]}

    evaluate(train())


profile_audit_train_probe()
