"""Quarantine: rejected records and images, each naming the source, the place and the reason."""

from __future__ import annotations

from typing import Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pipeline.config import Settings
from pipeline.core.db import insert_rows, transaction
from pipeline.ingest.readers.base import Rejection


def replace_stage_rows(conn: Connection, run_key: str, stage: str, rejections: Iterable[Rejection]) -> int:
    """Replace a stage's quarantine rows for a run, so a rerun leaves the same set."""
    conn.execute(sa.text("delete from quarantine where run_key = :k and stage = :s"), {"k": run_key, "s": stage})
    return insert_rows(
        conn,
        "insert into quarantine (run_key, stage, source_file, locator, reason, excerpt)"
        " values (:run_key, :stage, :source_file, :locator, :reason, :excerpt) on conflict do nothing",
        (
            {"run_key": run_key, "stage": stage, "source_file": r.source_file, "locator": r.locator,
             "reason": r.reason, "excerpt": r.excerpt}
            for r in rejections
        ),
    )


def list_quarantine(settings: Settings, run_key: str) -> list[dict[str, str]]:
    with transaction(settings) as conn:
        rows = conn.execute(
            sa.text(
                "select stage, source_file, locator, reason, excerpt from quarantine where run_key = :k"
                " order by stage, source_file, locator"
            ),
            {"k": run_key},
        )
        return [dict(row._mapping) for row in rows]
