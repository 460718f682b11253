"""The audit DAGs' Params, grouped in titled sections for the trigger form, and the checks Airflow does not
make: unknown conf keys and a score queue other than the deployment's. Light: no Airflow import at
module level (the spec functions import `Param` when a DAG file calls them)."""

from __future__ import annotations

import os
from typing import Any

from pipeline.config import THRESHOLD_PARTS, Policy, Settings
from pipeline.errors import UserError

SCORE_QUEUE_ENV = "PROFILE_AUDIT_SCORE_QUEUE"  # the Celery queue of the score task, read when DAGs are parsed
NETWORK_PARAM_NAMES = tuple(THRESHOLD_PARTS)  # every threshold (network, image, flag parts), by flat name


def network_param_specs() -> dict[str, Any]:
    """Airflow Params for every network, image and flag threshold, derived from the policy's defaults."""
    from airflow.sdk import Param

    # default None: the value from PROFILE_AUDIT's TOML [network] table (else the built-in default) applies
    return {
        name: Param(None, type=["null", "integer" if isinstance(default, int) else "number"], minimum=0,
                    title=name.replace("_", " "), section="Network and flag thresholds",
                    description=f"empty = configured value (built-in default {default})")
        for name, default in Policy().thresholds().items()
    }


def score_param_specs() -> dict[str, Any]:
    """Airflow Params of the score stage: shards and the queue of the mapped score tasks."""
    from airflow.sdk import Param

    return {
        "score_shards": Param(1, type="integer", minimum=1, maximum=1024, title="Score shards", section="Scoring",
                              description="score tasks mapped over the images (split by image hash); 1 = one task"),
        "score_queue": Param(score_queue(), type="string", title="Score queue", section="Scoring",
                             description=f"Celery queue of the score tasks (GPU workers); fixed per deployment by "
                                         f"{SCORE_QUEUE_ENV} on the dag-processor: a run asking for another fails at begin"),
    }


def detector_param_specs() -> dict[str, Any]:
    from airflow.sdk import Param

    return {"format": Param("auto", type="string", title="Export format", section="Export",
                            description="auto, or a reader name (see docs/formats.md)"),
            # nullable: the trigger form sends an emptied field as missing, and marks a non-null type required
            "detector": Param(None, type=["null", "string"], title="Detector", section="Scoring",
                              description="detector id or .json; empty = promoted default"),
            "baseline_run": Param(None, type=["null", "string"], title="Baseline run", section="Export",
                                  description="run key of an earlier run (e.g. last night's) whose accounts the"
                                              " creation bursts are measured against too; empty = this run's own."
                                              " An IO release audited alone has no organic population")}


def train_probe_param_specs() -> dict[str, Any]:
    """Airflow Params of the train-probe DAG: the training options, generated from the same `TrainOptions`
    as `profile-audit train-probe`'s arguments, then the optional evaluation folders."""
    from airflow.sdk import Param

    from pipeline.scoring.train_options import param_schemas

    params = {name: Param(schema.pop("default"), section="Training", **schema)
              for name, schema in param_schemas().items()}
    for name, what in (("eval_real_dir", "real"), ("eval_fake_dir", "generated")):
        params[name] = Param(None, type=["null", "string"], title=name.replace("_", " "), section="Evaluation",
                             description=f"held-out {what} images to evaluate the new detector on "
                                         "(both folders given = an evaluation task runs)")
    return params


def score_queue() -> str:
    return os.environ.get(SCORE_QUEUE_ENV, "default")


def check_conf(conf: dict[str, Any] | None, params: dict[str, Any]) -> None:
    """Unknown conf keys fail the run at its first task, before anything is written (Airflow itself
    accepts any key), so a misspelt threshold never runs with the default."""
    unknown = sorted(set(conf or {}) - set(params))
    if unknown:
        raise UserError(f"unknown conf key(s) {', '.join(unknown)}; known: {', '.join(sorted(params))}")
    if params.get("score_queue", score_queue()) != score_queue():
        raise UserError(f"score_queue {params['score_queue']!r}: this deployment's score tasks run on "
                        f"{score_queue()!r} ({SCORE_QUEUE_ENV} where the DAGs are parsed)")


def policy_from_params(params: dict[str, Any], settings: Settings) -> Policy:
    """The settings' policy with the thresholds given as DAG Params (an empty Param: the configured value)."""
    return settings.policy().with_thresholds({k: params[k] for k in NETWORK_PARAM_NAMES if params.get(k) is not None})
