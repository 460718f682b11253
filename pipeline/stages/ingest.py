"""Stage `ingest`: the export pinned on the run at `begin` becomes accounts, snapshots, posts and
quarantine rows (`pipeline.ingest.load`); an export that gave no account is a warning on the run, or
an error when the run requires accounts."""

from __future__ import annotations

import json
import logging
import shlex
from pathlib import Path

import sqlalchemy as sa

from pipeline.config import Settings
from pipeline.core.db import transaction
from pipeline.errors import UserError
from pipeline.ingest.load import IngestResult, ingest_export
from pipeline.stages import RunContext

log = logging.getLogger(__name__)
ZERO_ACCOUNTS = "the export gave 0 accounts"


def run(ctx: RunContext) -> IngestResult:
    """The export path and format pinned on the run row at `begin`."""
    with transaction(ctx.settings) as conn:
        row = conn.execute(sa.text("select export_path, export_format from runs where run_key = :k"),
                           {"k": ctx.run_key}).one()
    result = ingest_export(ctx.settings, ctx.run_key, Path(row.export_path), row.export_format)
    check_accounts(ctx.settings, ctx.run_key, result.accounts)
    return result


def check_accounts(settings: Settings, run_key: str, accounts: int | None) -> None:
    """An export that gave no account audited nothing: most likely the wrong folder, or a file the reader
    misread. A warning on the run (the summary, the CLI and the report show it), or, when the run was begun
    with ``require_accounts``, an error that fails the run in one line."""
    if accounts is None or accounts > 0:
        return
    with transaction(settings) as conn:
        row = conn.execute(sa.text("select params, export_path from runs where run_key = :k for update"),
                           {"k": run_key}).one()
        params = dict(row.params or {})
        quarantined = conn.execute(sa.text("select count(*) from quarantine where run_key = :k and stage = 'ingest'"),
                                   {"k": run_key}).scalar_one()
        what = (f"{ZERO_ACCOUNTS} ({quarantined} record{'s' if quarantined != 1 else ''} quarantined); "
                f"is {row.export_path} the export you meant? `profile-audit quarantine --run-key {shlex.quote(run_key)}` lists "
                "what was rejected")
        if params.get("require_accounts"):
            raise UserError(f"{what}. The run is marked failed (accounts are required)")
        warning = f"{what}; nothing was audited (--require-accounts makes this an error)"
        if warning not in params.get("warnings", []):  # a retried ingest task: once
            params["warnings"] = [*params.get("warnings", []), warning]
            conn.execute(sa.text("update runs set params = cast(:p as jsonb) where run_key = :k"),
                         {"p": json.dumps(params, sort_keys=True, default=str), "k": run_key})
    log.warning("run %s: %s", run_key, warning)
