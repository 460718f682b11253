"""Checks of the ingest ledger (issue 24) that every reader's tests share.

`read_counted` runs a reader under a fresh ledger, as ingest does, and returns what it yielded with the
ledger; `assert_reader_balances` checks the reader's own outcomes (before the database's duplicate
checks); `assert_ingest_balances` ingests for real and checks the stored ledger, file by file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa

from pipeline.core.db import transaction
from pipeline.ingest.ledger import IngestLedger, counting
from pipeline.ingest.load import ingest_export, load_ledger


def read_counted(reader: Any, path: Path) -> tuple[list[Any], IngestLedger]:
    with counting() as ledger:
        items = []
        for item in reader.read(path):
            ledger.take(item)
            items.append(item)
    return items, ledger


def assert_reader_balances(ledger: IngestLedger) -> None:
    """Every unit the plumbing saw became a record, a rejection or an ignored unit (none twice)."""
    gaps = {name: (entry.gap(), entry.as_dict()) for name, entry in ledger.files.items() if entry.gap()}
    assert not gaps, f"units lost or counted twice, per file: {gaps}"


def assert_ingest_balances(settings: Any, run_key: str, path: Path, fmt: str = "auto") -> dict[str, dict]:
    """Ingest for real, and check the stored ledger: every file balances, and the totals agree with the
    tables (stored rows are the run's snapshots and posts; quarantined rows the run's ingest quarantine)."""
    result = ingest_export(settings, run_key, path, fmt)
    with transaction(settings) as conn:
        ledger = load_ledger(conn, run_key)
        k = {"k": run_key}
        snapshots = conn.execute(sa.text("select count(*) from account_snapshots where run_key = :k"), k).scalar_one()
        posts = conn.execute(sa.text("select count(*) from posts where run_key = :k"), k).scalar_one()
        quarantined = conn.execute(sa.text(
            "select count(*) from quarantine where run_key = :k and stage = 'ingest'"), k).scalar_one()
    unbalanced = {name: row for name, row in ledger.items() if not row["balanced"]}
    assert not unbalanced, f"ledger does not balance: {unbalanced}; warnings: {result.warnings}"
    assert sum(r["stored"] for r in ledger.values()) == snapshots + posts
    assert sum(r["quarantined"] for r in ledger.values()) == quarantined
    empty = [name for name, row in ledger.items() if row["seen"] + row["inferred"] == 0]
    assert all(any(name in line for line in result.warnings) for name in empty), \
        f"files read with no unit and no warning: {empty}; warnings: {result.warnings}"
    return ledger
