"""Image claims: concurrent runs (and shards) never embed or score the same image twice.

Before scoring a chunk of images a score task claims them for the detector with
``insert ... on conflict do nothing``: the rows it got back are its work, the rest belong to a
task already scoring them. It scores its own, then drops its claims in the transaction after the
scores are committed, so the table only holds work in progress. At the end it waits for the images
others claimed: they are either scored by then, or their claim vanished (the other task failed)
or went stale (it was killed), and it claims and scores them itself. A claim of its own run key is
its own at once: the shards of a run split its images by hash, so such a claim was left by an earlier
try of this task, killed mid-shard (kill -9, a lost worker), and its retry need not wait for it to go stale.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import sqlalchemy as sa

from detectors.batching import batched
from pipeline.config import Settings
from pipeline.core.db import transaction

CLAIM_CHUNK = 256  # images claimed at once: small enough that a claim is released soon after it is taken
CLAIM_STALE_S = 900.0  # a claim older than this belongs to a task that died; it may be taken over
POLL_S = 0.5

Stats = TypeVar("Stats")


def claim(settings: Settings, detector_id: str, run_key: str, shas: list[str],
          stale_after_s: float = CLAIM_STALE_S) -> list[str]:
    """Claim ``shas`` for this run; returns those it got (free ones, this run's own, and stale claims taken
    over)."""
    if not shas:
        return []
    with transaction(settings) as conn:
        got = set(conn.execute(
            # in sha256 order, as every run claims: two runs claiming overlapping images wait, never deadlock
            sa.text("insert into image_claims (sha256, detector_id, run_key)"
                    " select s, :d, :k from unnest(cast(:s as text[])) as s order by s"
                    " on conflict do nothing returning sha256"),
            {"d": detector_id, "k": run_key, "s": shas}).scalars())
        got.update(conn.execute(
            sa.text("update image_claims set run_key = :k, claimed_at = now() where detector_id = :d"
                    " and sha256 = any(:s)"
                    " and (run_key = :k or claimed_at < now() - make_interval(secs => :stale))"
                    " returning sha256"),
            {"d": detector_id, "k": run_key, "s": shas, "stale": stale_after_s}).scalars())
    return [sha for sha in shas if sha in got]


def release(settings: Settings, detector_id: str, run_key: str, shas: list[str]) -> None:
    if shas:
        with transaction(settings) as conn:
            conn.execute(sa.text("delete from image_claims where detector_id = :d and run_key = :k"
                                 " and sha256 = any(:s)"), {"d": detector_id, "k": run_key, "s": shas})


def _scored(settings: Settings, detector_id: str, shas: list[str]) -> set[str]:
    with transaction(settings) as conn:
        return set(conn.execute(sa.text("select sha256 from image_scores where detector_id = :d and sha256 = any(:s)"),
                                {"d": detector_id, "s": shas}).scalars())


def score_claimed(settings: Settings, detector_id: str, run_key: str, todo: list[tuple[str, str]],
                  score: Callable[[list[tuple[str, str]]], Stats], combine: Callable[[Stats, Stats], Stats],
                  empty: Stats, stale_after_s: float = CLAIM_STALE_S) -> tuple[Stats, int]:
    """Score (sha256, storage_path) pairs, each by exactly one task. Returns the combined stats and how many
    images this task scored itself (the rest were scored by concurrent tasks)."""
    paths = dict(todo)
    stats, mine_total = empty, 0
    pending = [sha for sha, _ in todo]
    while pending:
        deferred: list[str] = []
        for chunk in batched(pending, CLAIM_CHUNK):
            chunk = list(chunk)
            done = _scored(settings, detector_id, chunk)
            chunk = [sha for sha in chunk if sha not in done]
            mine = claim(settings, detector_id, run_key, chunk, stale_after_s)
            deferred += [sha for sha in chunk if sha not in set(mine)]
            if not mine:
                continue
            try:
                stats = combine(stats, score([(sha, paths[sha]) for sha in mine]))
                mine_total += len(mine)
            finally:
                release(settings, detector_id, run_key, mine)
        if not deferred:
            break
        time.sleep(POLL_S)  # images another task is scoring: check again, take over what it dropped
        pending = [sha for sha in deferred if sha not in _scored(settings, detector_id, deferred)]
    return stats, mine_total
