"""Stage `summarize`: the run summary (stored on the run row, printed by the CLI, logged by Airflow)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from pipeline.config import Settings
from pipeline.core.db import transaction

if TYPE_CHECKING:
    from pipeline.stages import RunContext

def summarize_run(settings: Settings, run_key: str) -> dict[str, Any]:
    """Counts straight from the tables, so the summary is the same on every rerun of the key."""
    with transaction(settings) as conn:
        one = lambda sql: conn.execute(sa.text(sql), {"k": run_key}).scalar_one()  # noqa: E731
        run = conn.execute(sa.text("select export_format, detector_id, params from runs where run_key = :k"),
                           {"k": run_key}).one()
        summary = {
            "run_key": run_key,
            "export_format": run.export_format,
            "detector_id": run.detector_id,
            "accounts": one("select count(*) from account_snapshots where run_key = :k"),
            "quarantined": one("select count(*) from quarantine where run_key = :k"),
            "avatars_stored": one("select count(*) from account_avatars where run_key = :k and status = 'stored'"),
            "avatars_failed": one("select count(*) from account_avatars where run_key = :k and status = 'failed'"),
            "distinct_images": one("select count(distinct sha256) from account_avatars where run_key = :k"),
            "synthetic_avatars": one("select count(*) from account_signals where run_key = :k and avatar_label"),
            "edges": dict(conn.execute(sa.text(
                "select edge_type, count(*) from edges where run_key = :k group by 1 order by 1"), {"k": run_key}).all()),
            "clusters": one("select count(*) from clusters where run_key = :k"),
            "flags": one("select count(*) from flags where run_key = :k"),
            "warnings": list((run.params or {}).get("warnings", [])),  # e.g. images not scored: no detector
        }
    return summary


def format_summary(summary: dict[str, Any], flags: list[dict[str, Any]]) -> str:
    lines = [
        f"run {summary['run_key']} ({summary['export_format']}, detector {summary['detector_id']})",
        f"  accounts {summary['accounts']}, quarantined records {summary['quarantined']}",
        f"  avatars stored {summary['avatars_stored']}, failed {summary['avatars_failed']},"
        f" distinct images {summary['distinct_images']}, scored synthetic {summary['synthetic_avatars']}",
        f"  edges {summary['edges'] or 0}, clusters {summary['clusters']}, flags {summary['flags']}",
        *(f"  WARNING {w}" for w in summary.get("warnings", [])),
    ]
    for f in flags:
        lines.append(f"  FLAG {f['flag_id']} cluster {f['cluster_id']} score {f['score']:.2f}"
                     f" members {len(f['members'])} rules {', '.join(f['rules'])}")
        for rule, why in f["evidence"]["rules"].items():
            lines.append(f"      {rule}: {why}")
    return "\n".join(lines)


def run_stage(ctx: RunContext) -> Any:
    """Stage `summarize`."""
    return summarize_run(ctx.settings, ctx.run_key)
