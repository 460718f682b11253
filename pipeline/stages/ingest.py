"""Stage `ingest`: the export pinned on the run at `begin` becomes accounts, snapshots, posts and
quarantine rows (`pipeline.ingest.load`); an export that gave no account is a warning on the run, or
an error when the run requires accounts."""

from __future__ import annotations

import json
import logging
import shlex

import sqlalchemy as sa

from pipeline.config import Settings
from pipeline.core.db import transaction
from pipeline.errors import UserError
from pipeline.ingest.exports import pinned_exports
from pipeline.ingest.load import IngestResult, ingest_exports
from pipeline.stages import RunContext

log = logging.getLogger(__name__)
ZERO_ACCOUNTS = "the export gave 0 accounts"


def run(ctx: RunContext) -> IngestResult:
    """The exports (path and format of each) pinned on the run row at `begin`."""
    with transaction(ctx.settings) as conn:
        row = conn.execute(sa.text("select export_path, export_format, params from runs where run_key = :k"),
                           {"k": ctx.run_key}).one()
    exports = pinned_exports(row.export_path, row.export_format, row.params)
    result = ingest_exports(ctx.settings, ctx.run_key, exports)
    check_accounts(ctx.settings, ctx.run_key, result.accounts)
    if len(exports) > 1:
        note_shared_accounts(ctx.settings, ctx.run_key)
    return result


SHARED_NOTE = "in more than one export: each kept once"


def note_shared_accounts(settings: Settings, run_key: str) -> None:
    """An account found in two exports of the run is kept once, from the first export in sorted path order;
    the other copies are quarantined naming the first (`pipeline.ingest.load`). Say so in the run's notes,
    with the count, so the summary and the report show the merge (replacing a rerun's note)."""
    with transaction(settings) as conn:
        n = conn.execute(sa.text(
            "select count(distinct substring(reason from '^duplicate account (.*) \\(first at '))"
            " from quarantine q where run_key = :k and stage = 'ingest' and reason like 'duplicate account %'"
            " and split_part(q.source_file, '/', 1) <>"
            "     split_part(substring(reason from '\\(first at (.*)\\)$'), '/', 1)"), {"k": run_key}).scalar_one()
        params = dict(conn.execute(sa.text("select params from runs where run_key = :k for update"),
                                   {"k": run_key}).scalar_one() or {})
        notes = [n_ for n_ in params.get("notes", []) if SHARED_NOTE not in n_]
        if n:
            notes.append(f"{n} account{'s' if n != 1 else ''} {SHARED_NOTE}, from the first export in sorted path order; the other"
                         f" copies are quarantined as duplicate accounts naming the first (`profile-audit quarantine"
                         f" --run-key {shlex.quote(run_key)}` lists them)")
        if notes != params.get("notes", []):
            params["notes"] = notes
            conn.execute(sa.text("update runs set params = cast(:p as jsonb) where run_key = :k"),
                         {"p": json.dumps(params, sort_keys=True, default=str), "k": run_key})


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
