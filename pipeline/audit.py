"""The audit as a sequence of stages. The CLI runs them all in one process (`audit_export`); the
DAGs run one stage per task (`run_stage`). Both go through the same table, so they cannot drift."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any, Callable

import sqlalchemy as sa

from pipeline.config import NetworkParams, Settings
from pipeline.core import runs
from pipeline.core.db import ensure_schema, transaction
from pipeline.flags import rules as flags
from pipeline.images import acquire as images
from pipeline.ingest import load as ingest
from pipeline.ingest.readers import resolve_reader
from pipeline.networks import build as networks
from pipeline.reporting import html as html_report
from pipeline.reporting import summary as report
from pipeline.scoring import score
from pipeline.scoring.detector_store import resolve_detector
from pipeline.signals import aggregate
from pipeline.stages import STAGE_NAMES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunContext:
    settings: Settings
    run_key: str
    network: NetworkParams
    detector: str | None = None  # id or .json path; None = the promoted default
    shard_index: int = 0  # the score stage handles the images whose hash falls in this shard
    shard_count: int = 1


def _ingest(ctx: RunContext) -> Any:
    with transaction(ctx.settings) as conn:
        row = conn.execute(sa.text("select export_path, export_format from runs where run_key = :k"),
                           {"k": ctx.run_key}).one()
    return ingest.ingest_export(ctx.settings, ctx.run_key, Path(row.export_path), row.export_format)


STAGES: dict[str, Callable[[RunContext], Any]] = {
    "ingest": _ingest,
    "acquire_images": lambda c: images.acquire_avatars(c.settings, c.run_key),
    "score": lambda c: score.score_run(c.settings, c.run_key, c.detector, c.shard_index, c.shard_count),
    "aggregate": lambda c: aggregate.aggregate_run(c.settings, c.run_key, c.network),
    "networks": lambda c: networks.build_networks(c.settings, c.run_key, c.network),
    "flag": lambda c: {"flags": flags.flag_run(c.settings, c.run_key, c.network)},
    "report": lambda c: html_report.report_run(c.settings, c.run_key),
    "summarize": lambda c: report.summarize_run(c.settings, c.run_key),
}
assert tuple(STAGES) == STAGE_NAMES, "pipeline.stages.STAGE_NAMES must list the stages of STAGES in order"


def begin(settings: Settings, run_key: str | None, export_path: Path, fmt: str, network: NetworkParams,
          detector: str | None, as_of: str | None = None) -> str:
    """Check the export and the detector before a run row exists, then open (or reopen) the run."""
    ensure_schema(settings)
    export_path = export_path.resolve()
    reader = resolve_reader(export_path, fmt or "auto")
    resolve_detector(settings, detector)  # a missing detector fails now, not after ingest
    run_key = run_key or runs.default_run_key(export_path)
    params: dict[str, Any] = {"network": network.as_dict(), "detector": detector or settings.detector or "default"}
    if as_of:
        params["as_of"] = as_of
    runs.start_run(settings, run_key, str(export_path), reader.name, params)
    log.info("run %s: %s export at %s", run_key, reader.name, export_path)
    return run_key


def run_stage(ctx: RunContext, stage: str) -> dict[str, Any]:
    """One stage; a failure marks the run failed, `summarize` marks it succeeded with the summary."""
    try:
        result = STAGES[stage](ctx)
    except BaseException:
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
) -> dict[str, Any]:
    """Every stage for one export, in order. Idempotent per run key. Returns the run summary.

    ``on_stage(name, result, seconds)`` is called after each stage (the CLI prints progress with it).
    """
    network = params or settings.network
    run_key = begin(settings, run_key, export_path, fmt, network, detector, as_of)
    ctx = RunContext(settings, run_key, network, detector)
    summary: dict[str, Any] = {}
    for stage in STAGES:
        started = time.perf_counter()
        summary = run_stage(ctx, stage)
        if on_stage is not None:
            on_stage(stage, summary, time.perf_counter() - started)
    return summary
