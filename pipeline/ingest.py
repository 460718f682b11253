"""Stage 1, ingest: an export becomes accounts, per-run snapshots and quarantine rows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import sqlalchemy as sa

from pipeline.config import Settings
from pipeline.db import transaction
from pipeline.progress import progress
from pipeline.quarantine import replace_stage_rows
from pipeline.readers import AccountRecord, Rejection, resolve_reader

SNAPSHOT_COLUMNS = (
    "handle", "display_name", "bio", "url", "location", "created_at", "followers", "following", "posts",
    "language", "avatar_ref", "source_file", "source_locator",
)


@dataclass(frozen=True)
class IngestResult:
    export_format: str
    accounts: int
    rejected: int


def ingest_export(settings: Settings, run_key: str, export_path: Path, fmt: str = "auto") -> IngestResult:
    """Read the export and replace this run's snapshots; accounts are created on first sight."""
    reader = resolve_reader(export_path, fmt)
    records: list[AccountRecord] = []
    rejections: list[Rejection] = []
    for item in progress(reader.read(export_path), desc="ingest", unit="rec"):
        (records if isinstance(item, AccountRecord) else rejections).append(item)
    with transaction(settings) as conn:
        conn.execute(sa.text("delete from account_snapshots where run_key = :k"), {"k": run_key})
        _insert_accounts(conn, run_key, records)
        replace_stage_rows(conn, run_key, "ingest", rejections)
    return IngestResult(reader.name, len(records), len(rejections))


def _batches(records: list[AccountRecord], size: int = 1000) -> Iterator[list[AccountRecord]]:
    for start in range(0, len(records), size):
        yield records[start : start + size]


def _insert_accounts(conn: sa.Connection, run_key: str, records: list[AccountRecord]) -> None:
    account_sql = sa.text(
        "insert into accounts (account_key, platform, account_id, first_seen_run)"
        " values (:account_key, :platform, :account_id, :run_key) on conflict (account_key) do nothing"
    )
    columns = ", ".join(SNAPSHOT_COLUMNS)
    values = ", ".join(f":{c}" for c in SNAPSHOT_COLUMNS)
    snapshot_sql = sa.text(
        f"insert into account_snapshots (run_key, account_key, {columns}) values (:run_key, :account_key, {values})"
    )
    for batch in _batches(records):
        rows = [
            {
                "run_key": run_key,
                "account_key": r.account_key,
                "platform": r.platform,
                "account_id": r.account_id,
                **{c: getattr(r, c) for c in SNAPSHOT_COLUMNS},
            }
            for r in batch
        ]
        conn.execute(account_sql, rows)
        conn.execute(snapshot_sql, rows)
