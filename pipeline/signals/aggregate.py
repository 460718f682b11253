"""Stage `aggregate`: near-duplicate avatar pairs (numpy), then per-account signals and risk in SQL.

The near-duplicate pairs are computed here, not in the network stage, because an account's risk
counts its near-duplicate avatars (``sql/006_network_signals.sql``); the network stage reads the same
pairs for its ``near_duplicate_avatar`` edges.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa

from pipeline.config import NetworkParams, Settings
from pipeline.core.db import insert_rows, transaction
from pipeline.signals.neardup import near_duplicate_pairs, parse_phash

log = logging.getLogger(__name__)


def run_params(conn: sa.Connection, run_key: str) -> NetworkParams:
    """The network parameters recorded on the run (runs.params.network), so every stage uses the same."""
    params = conn.execute(sa.text("select params -> 'network' from runs where run_key = :k"), {"k": run_key}).scalar()
    known = set(NetworkParams().as_dict())
    return NetworkParams.from_mapping({k: v for k, v in (params or {}).items() if k in known})


def store_near_duplicates(conn: sa.Connection, run_key: str, max_distance: int) -> int:
    """Replace the run's avatar_near_duplicates: distinct images within ``max_distance`` pHash bits."""
    rows = conn.execute(
        sa.text("select distinct i.sha256, i.phash from account_avatars a join images i using (sha256)"
                " where a.run_key = :k and a.status = 'stored' order by i.sha256"),
        {"k": run_key},
    ).all()
    conn.execute(sa.text("delete from avatar_near_duplicates where run_key = :k"), {"k": run_key})
    if len(rows) < 2:
        return 0
    shas = [r.sha256 for r in rows]
    i, j, dist = near_duplicate_pairs(parse_phash([r.phash for r in rows]), max_distance)
    # sha lists are sorted and i < j, so sha_a < sha_b holds as the table requires
    count = insert_rows(
        conn,
        "insert into avatar_near_duplicates (run_key, sha_a, sha_b, distance) values (:k, :a, :b, :d)",
        ({"k": run_key, "a": shas[a], "b": shas[b], "d": int(d)} for a, b, d in zip(i.tolist(), j.tolist(), dist.tolist())),
        batch=5000,
    )
    log.info("near-duplicate avatars: %d pairs among %d images (<= %d bits)", count, len(shas), max_distance)
    return count


def aggregate_run(settings: Settings, run_key: str, params: NetworkParams | None = None) -> dict[str, int]:
    """Replace the run's near-duplicate pairs and account_signals; returns counts."""
    with transaction(settings) as conn:
        params = params or run_params(conn, run_key)
        pairs = store_near_duplicates(conn, run_key, params.near_dup_max_distance)
        # bulk-loaded tables may not be analysed yet; without statistics the planner picks nested loops
        # (measured: 464 s instead of 11 s for 50k accounts)
        for table in ("account_snapshots", "account_avatars", "image_scores", "avatar_near_duplicates"):
            conn.execute(sa.text(f"analyze {table}"))
        accounts = int(conn.execute(sa.text("select compute_account_signals(:k)"), {"k": run_key}).scalar_one())
    return {"accounts": accounts, "near_duplicate_pairs": pairs}
