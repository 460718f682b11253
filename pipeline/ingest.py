"""Stage 1, ingest: an export becomes accounts, per-run snapshots and quarantine rows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import sqlalchemy as sa

from pipeline.config import Settings
from pipeline.db import transaction
from pipeline.errors import UserError
from pipeline.progress import progress
from pipeline.quarantine import replace_stage_rows
from pipeline.readers import AccountRecord, ExportReader, Rejection, resolve_reader
from pipeline.readers.base import FieldError

SNAPSHOT_COLUMNS = (
    "handle", "display_name", "bio", "url", "location", "created_at", "followers", "following", "posts",
    "language", "avatar_ref", "source_file", "source_locator",
)


@dataclass(frozen=True)
class IngestResult:
    export_format: str
    accounts: int
    rejected: int


def ingest_export(settings: Settings, run_key: str, export_path: Path, fmt: str = "auto",
                  batch_size: int = 1000) -> IngestResult:
    """Stream the export into this run's snapshots (replacing them); accounts are created on first sight.

    One transaction: a reader that fails outright leaves the previous snapshots of the run intact.
    """
    reader = resolve_reader(export_path, fmt)
    accounts = 0
    rejections: list[Rejection] = []
    batch: list[AccountRecord] = []
    with transaction(settings) as conn:
        conn.execute(sa.text("delete from account_snapshots where run_key = :k"), {"k": run_key})
        for item in progress(_read_or_explain(reader, export_path), desc="ingest", unit="rec"):
            if isinstance(item, Rejection):
                rejections.append(item)
                continue
            batch.append(item)
            if len(batch) >= batch_size:
                _insert_accounts(conn, run_key, batch)
                accounts, batch = accounts + len(batch), []
        _insert_accounts(conn, run_key, batch)
        accounts += len(batch)
        replace_stage_rows(conn, run_key, "ingest", rejections)
    return IngestResult(reader.name, accounts, len(rejections))


def _read_or_explain(reader: ExportReader, export_path: Path) -> Iterator[AccountRecord | Rejection]:
    """A file the reader cannot read at all (no header, unreadable) is the user's to fix: say so."""
    try:
        yield from reader.read(export_path)
    except (FieldError, OSError, UnicodeError) as exc:
        raise UserError(f"cannot read {export_path} as {reader.name}: {exc}") from None


def _insert_accounts(conn: sa.Connection, run_key: str, records: list[AccountRecord]) -> None:
    """Two executemany calls per batch: new accounts, then the snapshots."""
    if not records:
        return
    columns = ", ".join(SNAPSHOT_COLUMNS)
    values = ", ".join(f":{c}" for c in SNAPSHOT_COLUMNS)
    rows = [
        {"run_key": run_key, "account_key": r.account_key, "platform": r.platform, "account_id": r.account_id,
         **{c: getattr(r, c) for c in SNAPSHOT_COLUMNS}}
        for r in records
    ]
    conn.execute(
        sa.text("insert into accounts (account_key, platform, account_id, first_seen_run)"
                " values (:account_key, :platform, :account_id, :run_key) on conflict (account_key) do nothing"),
        rows,
    )
    conn.execute(
        sa.text(f"insert into account_snapshots (run_key, account_key, {columns})"
                f" values (:run_key, :account_key, {values})"),
        rows,
    )
