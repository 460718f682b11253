"""Stage `aggregate`: near-duplicate avatar pairs (numpy), then per-account signals and risk in SQL.

The near-duplicate pairs are computed here, not in the network stage, because an account's risk
counts its near-duplicate avatars (``sql/006_network_signals.sql``); the network stage reads the same
pairs for its ``near_duplicate_avatar`` edges.
"""

from __future__ import annotations

import json
import logging

import sqlalchemy as sa

from pipeline.config import NetworkParams, Policy, Settings
from pipeline.core.db import insert_rows, transaction
from pipeline.signals.neardup import near_duplicate_pairs, parse_phash

log = logging.getLogger(__name__)


def run_policy(conn: sa.Connection, run_key: str) -> Policy:
    """The policy recorded on the run at begin (``Policy.from_run_params`` of ``runs.params``)."""
    params = conn.execute(sa.text("select params from runs where run_key = :k"), {"k": run_key}).scalar()
    return Policy.from_run_params(params)


def run_params(conn: sa.Connection, run_key: str) -> NetworkParams:
    """The network parameters recorded on the run (runs.params.network), so every stage uses the same."""
    return run_policy(conn, run_key).network


def compute_account_signals(conn: sa.Connection, run_key: str, policy: Policy) -> int:
    """Replace the run's account_signals (sql/functions/20_account_signals.sql) with ``policy``'s weights;
    returns the number of accounts. What the SQL needs of the run row is read here and passed as arguments
    (the SQL reads nothing from ``runs``): the pinned detector, the as-of time (the run's ``as_of``, else
    the export's own date, ``export_as_of``; the SQL falls back to the newest account creation) and the
    run's lineage (the run, its predecessor, that one's, ...: an account's avatar history comes from these
    runs only, so a run's signals do not depend on which other runs are in the database)."""
    row = conn.execute(sa.text("select detector_id, coalesce((params ->> 'as_of')::timestamptz, export_as_of) as as_of"
                               " from runs where run_key = :k"), {"k": run_key}).first()
    detector, as_of = (row.detector_id, row.as_of) if row is not None else (None, None)
    return int(conn.execute(
        sa.text("select compute_account_signals(:k, cast(:policy as jsonb), :detector, :as_of, :lineage)"),
        {"k": run_key, "policy": json.dumps(policy.signal_arguments(), sort_keys=True), "detector": detector,
         "as_of": as_of, "lineage": run_lineage(conn, run_key)},
    ).scalar_one())


def run_lineage(conn: sa.Connection, run_key: str) -> list[str]:
    """The run and the runs it builds on: its predecessor, that one's, and so on (skipped days included; they
    have no rows). UNION drops rows already found, so a cycle of predecessors ends."""
    return list(conn.execute(sa.text(
        "with recursive lineage(run_key) as (select cast(:k as text) union"
        " select r.predecessor from runs r join lineage l on r.run_key = l.run_key where r.predecessor is not null)"
        " select run_key from lineage order by run_key"), {"k": run_key}).scalars())


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


def aggregate_run(settings: Settings, run_key: str, *, policy: Policy | None = None) -> dict[str, int]:
    """Replace the run's near-duplicate pairs and account_signals; returns counts. ``policy``: the run's
    (``RunContext.policy``: its image part and risk weights); without it, the policy recorded on the run row."""
    with transaction(settings) as conn:
        policy = policy if policy is not None else run_policy(conn, run_key)
        pairs = store_near_duplicates(conn, run_key, policy.image.near_dup_max_distance)
        # bulk-loaded tables may not be analysed yet; without statistics the planner picks nested loops
        # (measured: 464 s instead of 11 s for 50k accounts)
        for table in ("account_snapshots", "account_avatars", "image_scores", "avatar_near_duplicates"):
            conn.execute(sa.text(f"analyze {table}"))
        accounts = compute_account_signals(conn, run_key, policy)
    return {"accounts": accounts, "near_duplicate_pairs": pairs}
