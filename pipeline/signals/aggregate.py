"""Stage `aggregate`: near-duplicate avatar pairs (numpy), then per-account signals and risk in SQL.

The near-duplicate pairs are computed here, not in the network stage, because an account's risk
counts its near-duplicate avatars (``sql/006_network_signals.sql``); the network stage reads the same
pairs for its ``near_duplicate_avatar`` edges.
"""

from __future__ import annotations

import io
import json
import logging
import time

import numpy as np
import sqlalchemy as sa

from pipeline.config import NetworkParams, Policy, Settings
from pipeline.core.bulk import copy_rows
from pipeline.core.db import transaction
from pipeline.signals.neardup import near_duplicate_pairs

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
    """Replace the run's avatar_near_duplicates: distinct images within ``max_distance`` pHash bits.

    The run's distinct images are numbered in a temporary table (in sha256 order); only their hashes come
    to Python, as one int64 array (8 bytes an image: 10M images once cost about 3 GB as Python rows of
    sha256 and hex). The pairs go back by number through COPY and are joined to their sha256 in SQL."""
    conn.execute(sa.text("delete from avatar_near_duplicates where run_key = :k"), {"k": run_key})
    conn.execute(sa.text("drop table if exists pg_temp.nd_images"))
    conn.execute(sa.text(
        "create temp table nd_images on commit drop as"
        " select (row_number() over (order by sha256) - 1)::bigint as idx, sha256, phash"
        " from (select distinct i.sha256, i.phash from account_avatars a join images i using (sha256)"
        "       where a.run_key = :k and a.status = 'stored') d"), {"k": run_key})
    hashes = fetch_hashes(conn, "select ('x' || lpad(phash, 16, '0'))::bit(64)::bigint from nd_images order by idx")
    if len(hashes) < 2:
        return 0
    i, j, dist = near_duplicate_pairs(hashes, max_distance)
    conn.execute(sa.text("drop table if exists pg_temp.nd_pairs"))
    conn.execute(sa.text("create temp table nd_pairs (i bigint, j bigint, distance integer) on commit drop"))
    copy_rows(conn, "nd_pairs", ("i", "j", "distance"), zip(i.tolist(), j.tolist(), dist.tolist()))
    # numbers follow sha256 order and i < j, so sha_a < sha_b holds as the table requires
    count = conn.execute(sa.text(
        "insert into avatar_near_duplicates (run_key, sha_a, sha_b, distance)"
        " select :k, a.sha256, b.sha256, p.distance from nd_pairs p"
        " join nd_images a on a.idx = p.i join nd_images b on b.idx = p.j"), {"k": run_key}).rowcount
    log.info("near-duplicate avatars: %d pairs among %d images (<= %d bits)", count, len(hashes), max_distance)
    return count


def fetch_hashes(conn: sa.Connection, query: str) -> np.ndarray:
    """One bigint column of ``query`` as uint64, through binary COPY (14 bytes a row on the wire, no Python
    object per row)."""
    buf = io.BytesIO()
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        cursor.copy_expert(f"copy ({query}) to stdout with (format binary)", buf)
    finally:
        cursor.close()
    data = buf.getbuffer()
    header = 19  # signature (11 bytes), flags (4), header extension length (4, zero)
    rows = np.frombuffer(data[header:len(data) - 2], dtype=np.dtype([("fields", ">i2"), ("size", ">i4"),
                                                                       ("value", ">i8")]))
    if len(rows) and ((rows["fields"] != 1).any() or (rows["size"] != 8).any()):
        raise ValueError("fetch_hashes: the query must return one non-null bigint column")
    return rows["value"].astype(np.int64).view(np.uint64)


def aggregate_run(settings: Settings, run_key: str, *, policy: Policy | None = None) -> dict[str, int]:
    """Replace the run's near-duplicate pairs and account_signals; returns counts. ``policy``: the run's
    (``RunContext.policy``: its image part and risk weights); without it, the policy recorded on the run row."""
    with transaction(settings) as conn:
        policy = policy if policy is not None else run_policy(conn, run_key)
        started = time.perf_counter()
        pairs = store_near_duplicates(conn, run_key, policy.image.near_dup_max_distance)
        near_s = time.perf_counter() - started
        # bulk-loaded tables may not be analysed yet; without statistics the planner picks nested loops
        # (measured: 464 s instead of 11 s for 50k accounts)
        for table in ("account_snapshots", "account_avatars", "image_scores", "avatar_near_duplicates"):
            conn.execute(sa.text(f"analyze {table}"))
        analyze_s = time.perf_counter() - started - near_s
        accounts = compute_account_signals(conn, run_key, policy)
        log.info("aggregate: near-duplicates %.1f s, analyze %.1f s, account signals %.1f s", near_s, analyze_s,
                 time.perf_counter() - started - near_s - analyze_s)
    return {"accounts": accounts, "near_duplicate_pairs": pairs}
