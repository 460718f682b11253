"""Stage 4, aggregate: per-account signals, computed in SQL (``sql/002_account_signals.sql``)."""

from __future__ import annotations

import sqlalchemy as sa

from pipeline.config import Settings
from pipeline.db import transaction


def aggregate_run(settings: Settings, run_key: str) -> int:
    """Replace the run's account_signals; returns the number of accounts scored."""
    with transaction(settings) as conn:
        return int(conn.execute(sa.text("select compute_account_signals(:k)"), {"k": run_key}).scalar_one())
