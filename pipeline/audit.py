"""Running the audit: `begin` opens a run, `run_stage` runs one stage of `pipeline.stages.STAGES` with
the run's bookkeeping, `audit_export` runs them all in one process (the CLI). The DAGs call `run_stage`
once per task, so the CLI and Airflow run the same table."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Callable

from pipeline.config import NetworkParams, Settings
from pipeline.core import runs
from pipeline.core.db import ensure_schema
from pipeline.errors import UserError
from pipeline.ingest.readers import resolve_reader
from pipeline.scoring.detector_store import resolve_detector
from pipeline.stages import STAGE_NAMES, RunContext
from pipeline.stages import stage as stage_entry

log = logging.getLogger(__name__)


NO_DETECTOR_WARNING = ("no detector: images were not scored (train one with `profile-audit train-probe --promote`, "
                       "run `profile-audit demo`, or pass --detector); signals that need no detector were computed")


def begin(settings: Settings, run_key: str | None, export_path: Path, fmt: str, network: NetworkParams,
          detector: str | None, as_of: str | None = None, require_detector: bool = False) -> str:
    """Check the export and the detector before a run row exists, then open (or reopen) the run.

    A named detector that cannot be found is an error now, not after ingest. With none named and none
    promoted, the run goes on without scoring (a warning recorded on the run) unless ``require_detector``.
    """
    ensure_schema(settings)
    export_path = export_path.resolve()
    reader = resolve_reader(export_path, fmt or "auto")
    warnings: list[str] = []
    try:
        resolve_detector(settings, detector)
    except UserError:
        if detector or settings.detector or require_detector:
            raise
        warnings.append(NO_DETECTOR_WARNING)
        log.warning("run without a detector: %s", NO_DETECTOR_WARNING)
    run_key = run_key or runs.default_run_key(export_path)
    params: dict[str, Any] = {**settings.policy(network).run_params(),
                              "detector": detector or settings.detector or "default"}
    if warnings:
        params["detector"] = None
        params["warnings"] = warnings
    if as_of:
        params["as_of"] = as_of
    runs.start_run(settings, run_key, str(export_path), reader.name, params)
    log.info("run %s: %s export at %s", run_key, reader.name, export_path)
    return run_key


def run_stage(ctx: RunContext, stage: str) -> dict[str, Any]:
    """One stage; a failure marks the run failed, `summarize` marks it succeeded with the summary."""
    try:
        result = stage_entry(stage).load()(ctx)
    except BaseException as exc:
        exc.failed_stage = stage  # type: ignore[attr-defined]  # the CLI names it (SIGTERM, Ctrl-C)
        runs.finish_run(ctx.settings, ctx.run_key, {"failed_stage": stage}, status="failed")
        raise
    if stage == "summarize":
        runs.finish_run(ctx.settings, ctx.run_key, result)
    out = asdict(result) if is_dataclass(result) else dict(result)
    log.info("%s: %s", stage, out)
    return out


def audit_export(
    settings: Settings,
    export_path: Path,
    fmt: str = "auto",
    run_key: str | None = None,
    detector: str | None = None,
    params: NetworkParams | None = None,
    as_of: str | None = None,
    on_stage: Callable[[str, dict[str, Any], float], None] | None = None,
    require_detector: bool = False,
) -> dict[str, Any]:
    """Every stage for one export, in order. Idempotent per run key. Returns the run summary.

    ``on_stage(name, result, seconds)`` is called after each stage (the CLI prints progress with it).
    """
    network = params or settings.network
    run_key = begin(settings, run_key, export_path, fmt, network, detector, as_of, require_detector)
    ctx = RunContext(settings, run_key, network, detector)
    summary: dict[str, Any] = {}
    stage = STAGE_NAMES[0]
    try:
        for stage in STAGE_NAMES:
            started = time.perf_counter()
            summary = run_stage(ctx, stage)
            if on_stage is not None:
                on_stage(stage, summary, time.perf_counter() - started)
    except BaseException as exc:
        if not hasattr(exc, "failed_stage"):  # between stages (a signal while progress is printed): not left running
            exc.failed_stage = stage  # type: ignore[attr-defined]
            runs.finish_run(settings, run_key, {"failed_stage": stage}, status="failed")
        raise
    return summary
