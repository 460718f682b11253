"""The whole pipeline for one export: the CLI's `audit` and the demo call this; the DAGs call the
same stage functions one task each."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pipeline import aggregate, flags, images, ingest, networks, report, runs, score
from pipeline.config import NetworkParams, Settings
from pipeline.db import ensure_schema

log = logging.getLogger(__name__)


def run_params(settings: Settings, params: NetworkParams, detector: str | None,
               as_of: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"network": params.as_dict(), "detector": detector or settings.detector or "default"}
    if as_of:
        out["as_of"] = as_of
    return out


def audit_export(
    settings: Settings,
    export_path: Path,
    fmt: str = "auto",
    run_key: str | None = None,
    detector: str | None = None,
    params: NetworkParams | None = None,
    as_of: str | None = None,
) -> dict[str, Any]:
    """Ingest, acquire, score, aggregate, network, flag, summarise. Idempotent per run key."""
    params = params or settings.network
    export_path = export_path.resolve()
    ensure_schema(settings)
    from pipeline.readers import resolve_reader

    reader = resolve_reader(export_path, fmt)  # fail early on a bad path or format, before a run row exists
    run_key = run_key or runs.default_run_key(export_path)
    runs.start_run(settings, run_key, str(export_path), reader.name, run_params(settings, params, detector, as_of))
    try:
        ingested = ingest.ingest_export(settings, run_key, export_path, reader.name)
        log.info("ingested %d accounts, %d quarantined", ingested.accounts, ingested.rejected)
        images.acquire_avatars(settings, run_key)
        score.score_run(settings, run_key, detector)
        aggregate.aggregate_run(settings, run_key)
        networks.build_networks(settings, run_key, params)
        flags.flag_run(settings, run_key, params)
        summary = report.summarize_run(settings, run_key)
    except BaseException:
        runs.finish_run(settings, run_key, {}, status="failed")
        raise
    runs.finish_run(settings, run_key, summary)
    return summary
