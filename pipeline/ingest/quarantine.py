"""Quarantine: rejected records and images, each naming the source, the place and the reason.

This module owns the one ``insert into quarantine``: stages hand it `Rejection` objects (from Python)
or a query that selects the rejected rows (from SQL), and a stage's rows are cleared before a rerun
writes them again, so a rerun leaves the same set. `Rejection.of` bounds a Python excerpt; a query's
excerpts are cut to the same ``EXCERPT_CHARS`` here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pipeline.config import Settings
from pipeline.core.db import insert_rows, transaction
from pipeline.ingest.readers.base import EXCERPT_CHARS, Rejection

_INSERT = "insert into quarantine (run_key, stage, source_file, locator, reason, excerpt)"
_CONFLICT = " on conflict do nothing"  # the same record, place and reason is one row


def clear_stage(conn: Connection, run_key: str, stage: str) -> None:
    """Remove a stage's rows for a run, before the stage writes them again."""
    conn.execute(sa.text("delete from quarantine where run_key = :k and stage = :s"), {"k": run_key, "s": stage})


def add_rejections(conn: Connection, run_key: str, stage: str, rejections: Iterable[Rejection]) -> int:
    """Insert rejections found in Python (a reader's bad records). Returns how many were sent."""
    return insert_rows(
        conn,
        _INSERT + " values (:run_key, :stage, :source_file, :locator, :reason, :excerpt)" + _CONFLICT,
        ({"run_key": run_key, "stage": stage, "source_file": r.source_file, "locator": r.locator,
          "reason": r.reason, "excerpt": r.excerpt} for r in rejections),
    )


def add_from_query(conn: Connection, run_key: str, stage: str, select: str,
                   params: Mapping[str, Any] | None = None) -> None:
    """Insert rejections found in SQL: ``select`` returns (source_file, locator, reason, excerpt) per
    rejected row, with its own bound ``params``."""
    conn.execute(
        sa.text(_INSERT + " select :quarantine_run_key, :quarantine_stage, q.source_file, q.locator, q.reason,"
                f" left(q.excerpt, {EXCERPT_CHARS}) from ({select}) as q (source_file, locator, reason, excerpt)"
                + _CONFLICT),
        {**(params or {}), "quarantine_run_key": run_key, "quarantine_stage": stage},
    )


def count_stage(conn: Connection, run_key: str, stage: str) -> int:
    return conn.execute(sa.text("select count(*) from quarantine where run_key = :k and stage = :s"),
                        {"k": run_key, "s": stage}).scalar_one()


def replace_stage_rows(conn: Connection, run_key: str, stage: str, rejections: Iterable[Rejection]) -> int:
    """Replace a stage's quarantine rows for a run, so a rerun leaves the same set."""
    clear_stage(conn, run_key, stage)
    return add_rejections(conn, run_key, stage, rejections)


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


_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"|\([^()]*\)")
_VALUE = re.compile(r"\b[\w.-]+:[^\s,;]+|\b\d[\w.:+-]*")  # account keys, ids, numbers, dates


def reason_kind(reason: str) -> str:
    """A quarantine reason without the values in it ('duplicate account twitter:12 (first at ...)' ->
    'duplicate account …'), so reasons can be counted by kind."""
    text = _VALUE.sub("…", _QUOTED.sub("…", reason))
    text = re.sub(r"…(\s*…)+", "…", re.sub(r"\s+", " ", text)).strip()
    return text[:100]


def reasons_by_kind(conn: Connection, run_key: str) -> dict[str, int]:
    """The run's quarantine rows counted by stage and reason kind, most first."""
    counts: dict[str, int] = {}
    for stage, reason in conn.execute(sa.text("select stage, reason from quarantine where run_key = :k"),
                                      {"k": run_key}):
        key = f"{stage}: {reason_kind(reason)}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
