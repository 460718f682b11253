"""Run bookkeeping: every stage works under a run key, and a rerun of a key replaces its rows.

Run keys: ``nightly:YYYY-MM-DD`` (Airflow data interval), ``investigation:<id>`` (ad-hoc DAG
runs), or ``export:<hash>`` (CLI audits without ``--run-key``: the same export gives the same key).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from pipeline.config import Settings, complete_run_params
from pipeline.core.db import transaction
from pipeline.errors import UserError

KINDS = ("nightly", "investigation", "adhoc")


def default_run_key(export_path: Path) -> str:
    """Hash of the export's file names, sizes and contents' hashes: same export, same key."""
    digest = hashlib.sha256()
    files = [export_path] if export_path.is_file() else sorted(p for p in export_path.rglob("*") if p.is_file())
    for path in files:
        digest.update(str(path.relative_to(export_path.parent if export_path.is_file() else export_path)).encode())
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return f"export:{digest.hexdigest()[:16]}"


def kind_of(run_key: str) -> str:
    prefix = run_key.split(":", 1)[0]
    return prefix if prefix in KINDS else "adhoc"


def start_run(
    settings: Settings,
    run_key: str,
    export_path: str | None = None,
    export_format: str | None = None,
    params: dict[str, Any] | None = None,
) -> None:
    """Create or reopen the run row; params are the run's provenance and are replaced on rerun. Every
    policy part a caller leaves out is recorded with its default (``config.complete_run_params``), so the
    SQL signals and the flag stage always find the policy on the run."""
    params = complete_run_params(params)
    if not run_key or len(run_key) > 200:
        raise UserError("a run key must be 1 to 200 characters")
    with transaction(settings) as conn:
        conn.execute(
            sa.text(
                """
                insert into runs (run_key, kind, export_path, export_format, params, status, started_at)
                values (:k, :kind, :p, :f, cast(:params as jsonb), 'running', now())
                on conflict (run_key) do update set
                    export_path = excluded.export_path, export_format = excluded.export_format,
                    params = excluded.params, status = 'running', started_at = now(), finished_at = null
                """
            ),
            {
                "k": run_key,
                "kind": kind_of(run_key),
                "p": export_path,
                "f": export_format,
                "params": json.dumps(params, sort_keys=True),
            },
        )


def set_detector(settings: Settings, run_key: str, detector_id: str) -> None:
    with transaction(settings) as conn:
        conn.execute(sa.text("update runs set detector_id = :d where run_key = :k"), {"d": detector_id, "k": run_key})


def finish_run(settings: Settings, run_key: str, summary: dict[str, Any], status: str = "succeeded") -> None:
    with transaction(settings) as conn:
        conn.execute(
            sa.text(
                "update runs set status = :s, summary = cast(:summary as jsonb), finished_at = now() where run_key = :k"
            ),
            {"s": status, "summary": json.dumps(summary, sort_keys=True, default=str), "k": run_key},
        )
