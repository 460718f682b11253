"""Train a CLIP linear-probe detector from labelled folders (same code as `profile-audit train-probe`),
then, when evaluation folders are given, evaluate it (same code as `profile-audit evaluate`).

The fake folder may hold one sub-folder per generator. Training re-encodes real and fake images
alike (UnivFD blur/JPEG augmentation, then the re-encode rule), splits by image hash, calibrates on
validation images and sets the threshold for ``target_fpr`` on real validation images.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, get_current_context, task

from pipeline.airflow.tasks import default_args


@dag(
    dag_id="profile_audit_train_probe",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    default_args=default_args(),
    tags=["profile-audit"],
    params={
        "real_dir": Param("", type="string", minLength=1, description="folder of real images"),
        "fake_dir": Param("", type="string", minLength=1, description="folder of generated images"),
        "model": Param("ViT-L-14", type="string",
                       description="open_clip model name, clip-vit-b16 (the offline CLIP ONNX), dlib-face, or "
                                   "avatar-stack (the fused detector, as the shipped one)"),
        "feature": Param(None, type=["null", "string"], enum=[None, "cls", "embeds", "patch_mean"],
                         description="clip-vit-b16 and avatar-stack: which CLIP feature the probe reads"),
        "eye_exempt": Param([], type="array", items={"type": "string"},
                            description="avatar-stack: real sources aligned like StyleGAN (FFHQ), left out of the "
                                        "stack's fit and threshold"),
        "weights": Param("openai", type=["null", "string"],
                         description="pretrained tag, checkpoint file, local-dir:FOLDER, or random:SEED; "
                                     "ignored for dlib-face, which has no weights to choose"),
        "normalize": Param(True, type="boolean", description="L2-normalise encode_image features"),
        "preprocess": Param("resize_center_crop", enum=["resize_center_crop", "center_crop"]),
        "target_fpr": Param(0.01, type="number", exclusiveMinimum=0, maximum=0.5),
        "calibration": Param("platt", enum=["platt", "isotonic"]),
        "blur_prob": Param(0.5, type="number", minimum=0, maximum=1),
        "jpeg_prob": Param(0.5, type="number", minimum=0, maximum=1),
        "jpeg_quality": Param("30-100", type="string", description="UnivFD JPEG augmentation quality range"),
        "reencode_quality": Param("50-80", type="string", description="the re-encode rule's quality range"),
        "promote": Param(False, type="boolean", description="make it the default detector"),
        "eval_real_dir": Param("", type="string", description="held-out real images to evaluate on (optional)"),
        "eval_fake_dir": Param("", type="string", description="held-out generated images to evaluate on (optional)"),
    },
    doc_md=__doc__,
)
def profile_audit_train_probe():
    @task
    def train() -> dict:
        from pathlib import Path

        from detectors.clip_probe import Augmentation
        from pipeline.airflow.tasks import airflow_settings
        from pipeline.scoring.train import parse_range, train_probe

        p = get_current_context()["params"]
        augmentation = Augmentation(blur_p=p["blur_prob"], jpeg_p=p["jpeg_prob"],
                                    jpeg_quality=parse_range(p["jpeg_quality"], "jpeg_quality"),
                                    reencode_quality=parse_range(p["reencode_quality"], "reencode_quality"))
        result = train_probe(airflow_settings(), Path(p["real_dir"]), Path(p["fake_dir"]), model=p["model"],
                             weights=None if p["model"] in ("dlib-face", "clip-vit-b16", "avatar-stack") else p["weights"],
                             target_fpr=p["target_fpr"], promote=p["promote"], feature=p.get("feature"),
                             eye_exempt=tuple(p.get("eye_exempt") or ()),
                             calibration=p["calibration"], augmentation=augmentation, normalize=p["normalize"],
                             preprocess=p["preprocess"])
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
