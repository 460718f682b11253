"""Train a CLIP linear-probe detector from labelled folders (same code as `profile-audit train-probe`)."""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, get_current_context, task


@dag(
    dag_id="profile_audit_train_probe",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["profile-audit"],
    params={
        "real_dir": Param("", type="string", minLength=1, description="folder of real images"),
        "fake_dir": Param("", type="string", minLength=1, description="folder of generated images"),
        "model": Param("ViT-L-14", type="string", description="open_clip model name"),
        "weights": Param("openai", type="string", description="pretrained tag, checkpoint file, or random:SEED"),
        "target_fpr": Param(0.01, type="number", exclusiveMinimum=0, maximum=0.5),
        "promote": Param(False, type="boolean", description="make it the default detector"),
    },
    doc_md=__doc__,
)
def profile_audit_train_probe():
    @task
    def train() -> dict:
        from pathlib import Path

        from pipeline.airflow_support import airflow_settings
        from pipeline.train import train_probe

        p = get_current_context()["params"]
        result = train_probe(airflow_settings(), Path(p["real_dir"]), Path(p["fake_dir"]), model=p["model"],
                             weights=p["weights"], target_fpr=p["target_fpr"], promote=p["promote"])
        return {"detector_id": result.detector_id, "path": str(result.path), "metrics": result.metrics}

    train()


profile_audit_train_probe()
