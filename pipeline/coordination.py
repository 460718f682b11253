"""Post-based coordination edges: co_repost, co_link and co_post, with QUT's meanings.

The three types follow QUT's coordination-network-toolkit (co_retweet, co_link, co_tweet):
two accounts co-occur when one posts and the other posts the same thing within
``co_window_seconds`` of it (|t1 - t2| <= window, both ends included):
- ``co_repost``: a repost (``posts.reposted_id``) of the same post;
- ``co_link``: a URL that normalises to the same string (``normalise_url`` in sql/008), in a post
  that is not a repost (QUT ignores URLs in reposts);
- ``co_post``: the same normalised text (``normalise_post_text``: lower case, @mentions dropped,
  whitespace collapsed), in a post that is not a repost.

QUT's weight is directed: w(u1 -> u2) is the number of distinct posts of u1 that have a
co-occurring post of u2. QUT keeps a directed edge when w >= min weight and drops self-loops on
output. We store one undirected edge per pair (``a_key < b_key``) when either direction reaches
``co_min_weight``; ``weight`` is the larger direction and the evidence holds both, so QUT's directed
edge list can be recovered exactly. Posts without a timestamp are skipped.

How: PostgreSQL sorts the run's posts by (matched value, time) and streams integer columns out with
binary COPY; numpy sweeps the sorted array for pairs within the window (O(posts + pairs), never a
per-group cross product), counts distinct posts per account pair, and the kept edges go back by
COPY. Pairs are processed in account partitions sized by ``PAIR_BUDGET``, so memory stays bounded
by the posts plus one partition of pairs.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import tempfile
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa

from pipeline.config import NetworkParams

log = logging.getLogger(__name__)

EDGE_TYPES = ("co_repost", "co_link", "co_post")
PAIR_BUDGET = 20_000_000  # window pairs held in memory at once (about 1.5 GB at peak); more -> partitions
EXPORT_WORK_MEM = "256MB"  # PostgreSQL sort memory for the export; larger sorts spill to disk
TEXT_EXCERPT = 280


@dataclass(frozen=True)
class _Source:
    edge_type: str
    value_name: str  # evidence key of the matched value
    rows: str  # select g, account_key, posted_at, ctid, ord from posts of run %(k)s
    value: str  # SQL for the matched value of post p (and url ordinal t.ord), for evidence
    multi_row_posts: bool  # one post can give several rows (several URLs)


_SOURCES = {
    "co_repost": _Source(
        "co_repost", "reposted_id",
        "select p.reposted_id as g, p.account_key, p.posted_at, p.ctid, 1 as ord from posts p"
        " where p.run_key = %(k)s and p.reposted_id is not null and p.posted_at is not null",
        "p.reposted_id", False),
    "co_link": _Source(
        "co_link", "url",
        "select normalise_url(u.url) as g, p.account_key, p.posted_at, p.ctid, u.ord::int4 as ord from posts p"
        " cross join lateral unnest(p.urls) with ordinality as u(url, ord)"
        " where p.run_key = %(k)s and p.reposted_id is null and p.posted_at is not null"
        " and normalise_url(u.url) is not null",
        "normalise_url(p.urls[t.ord])", True),
    "co_post": _Source(
        "co_post", "text",
        "select normalise_post_text(p.text) as g, p.account_key, p.posted_at, p.ctid, 1 as ord from posts p"
        " where p.run_key = %(k)s and p.reposted_id is null and p.posted_at is not null"
        " and normalise_post_text(p.text) is not null",
        f"left(normalise_post_text(p.text), {TEXT_EXCERPT})", False),
}

# Binary COPY row: int16 field count, then (int32 length, value) per field.
_ROW = np.dtype([("nf", ">i2"), ("l0", ">i4"), ("new", "u1"), ("l1", ">i4"), ("aid", ">i4"),
                 ("l2", ">i4"), ("t", ">i8"), ("l3", ">i4"), ("blk", ">u4"), ("off", ">u2"),
                 ("l4", ">i4"), ("ord", ">i4")])
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00"


@dataclass
class _Rows:
    """The sorted rows of one edge type: group, account, time (µs), post index, table address."""

    group: np.ndarray
    aid: np.ndarray
    t: np.ndarray
    post: np.ndarray
    blk: np.ndarray
    off: np.ndarray
    ord: np.ndarray

    def __len__(self) -> int:
        return len(self.aid)


@dataclass
class _Pairs:
    """Kept account pairs (lo < hi by account_key order) and example row pairs for their evidence."""

    lo: np.ndarray
    hi: np.ndarray
    w_lohi: np.ndarray
    w_hilo: np.ndarray
    total: np.ndarray
    ex_pair: np.ndarray  # index into lo/hi
    ex_lo_row: np.ndarray  # row of the lo account's post
    ex_hi_row: np.ndarray


def build_post_edges(conn: sa.Connection, run_key: str, params: NetworkParams) -> dict[str, int]:
    """Replace the run's co_repost, co_link and co_post edges; returns the edge count per type."""
    if params.co_window_seconds < 0 or params.co_min_weight < 1 or params.co_evidence_examples < 0:
        raise ValueError("co_window_seconds must be >= 0, co_min_weight >= 1 and co_evidence_examples >= 0")
    cur = conn.connection.dbapi_connection.cursor()
    try:
        cur.execute("delete from edges where run_key = %s and edge_type = any(%s)", (run_key, list(EDGE_TYPES)))
        cur.execute("select current_setting('work_mem')")
        work_mem = cur.fetchone()[0]
        cur.execute("select set_config('work_mem', %s, true)", (EXPORT_WORK_MEM,))
        cur.execute("drop table if exists pg_temp._co_acct")
        # Account numbers follow account_key order, so lo < hi in numbers means a_key < b_key in the table.
        cur.execute(
            "create temp table _co_acct on commit drop as"
            " select account_key, (row_number() over (order by account_key))::int4 as aid"
            " from (select distinct account_key from posts where run_key = %s) s", (run_key,))
        cur.execute("create unique index on _co_acct (account_key)")
        cur.execute("analyze _co_acct")
        counts = {}
        for edge_type in EDGE_TYPES:
            source = _SOURCES[edge_type]
            rows = _export_rows(cur, source, run_key)
            pairs = co_occurring_pairs(rows, params)
            counts[edge_type] = _insert_edges(cur, run_key, source, params, rows, pairs)
            log.info("%s: %d posts, %d edges", edge_type, len(rows), counts[edge_type])
        cur.execute("drop table if exists pg_temp._co_acct")
        cur.execute("select set_config('work_mem', %s, true)", (work_mem,))
    finally:
        cur.close()
    return counts


def _export_rows(cur: Any, source: _Source, run_key: str) -> _Rows:
    """Sorted by (value, time) in PostgreSQL; only integers cross the wire, through a temporary file."""
    query = cur.mogrify(
        "copy (select (lag(s.g) over w) is distinct from s.g, a.aid, s.posted_at, s.ctid, s.ord::int4"
        f" from ({source.rows}) s join _co_acct a using (account_key)"
        ' window w as (order by s.g collate "C", s.posted_at)'
        ' order by s.g collate "C", s.posted_at) to stdout (format binary)',
        {"k": run_key}).decode()
    with tempfile.TemporaryFile(prefix="co-export-") as fh:
        cur.copy_expert(query, fh, size=1 << 20)
        size = fh.tell()
        fh.seek(0)
        header = fh.read(19)
        if header[:11] != _COPY_HEADER or size < 21:
            raise RuntimeError(f"unexpected binary COPY header from PostgreSQL: {header!r}")
        ext = int.from_bytes(header[15:19], "big")
        start = 19 + ext
        n = (size - start - 2) // _ROW.itemsize
        if start + n * _ROW.itemsize + 2 != size:
            raise RuntimeError("binary COPY stream has an unexpected row layout")
        raw = np.fromfile(fh, dtype=_ROW, count=n, offset=ext) if n else np.zeros(0, _ROW)
    if n and not ((raw["nf"] == 5).all() and (raw["l2"] == 8).all() and (raw["l3"] == 6).all()):
        raise RuntimeError("binary COPY stream has unexpected fields (a null in a non-null column?)")
    group = np.cumsum(raw["new"], dtype=np.int64) - 1
    blk = raw["blk"].astype(np.int64)
    off = raw["off"].astype(np.int64)
    if source.multi_row_posts and n:
        _, post = np.unique(blk * 65536 + off, return_inverse=True)
        post = post.astype(np.int64)
    else:
        post = np.arange(n, dtype=np.int64)
    return _Rows(group, raw["aid"].astype(np.int64), raw["t"].astype(np.int64), post, blk, off,
                 raw["ord"].astype(np.int32))


def _window_sweep(rows: _Rows, window_us: int, collect: int | None = None,
                  partition: tuple[int, int] | None = None) -> tuple[int, list[tuple[np.ndarray, np.ndarray]]]:
    """All row pairs (i, j), i < j, in one group with t[j] - t[i] <= window, by increasing offset j - i.

    Rows are sorted by (group, t), so once row i + k is out of the group or window, so is i + k + 1:
    each offset only revisits the rows that matched at the previous one. Returns the number of
    cross-account pairs and the pairs themselves (only those whose smaller account number falls in
    ``partition`` = (index, count)); with ``collect`` set, no pairs once their number exceeds it."""
    n = len(rows)
    g, t, aid = rows.group, rows.t, rows.aid
    active = np.arange(n - 1, dtype=np.int64)
    k, total, out = 1, 0, []
    while active.size:
        j = active + k
        keep = (g[j] == g[active]) & (t[j] - t[active] <= window_us)
        active = active[keep]
        if not active.size:
            break
        j = active + k
        cross = aid[active] != aid[j]
        i_c, j_c = active[cross], j[cross]
        if partition is not None:
            part = np.minimum(aid[i_c], aid[j_c]) % partition[1] == partition[0]
            i_c, j_c = i_c[part], j_c[part]
        total += i_c.size
        if collect is None or total <= collect:
            out.append((i_c, j_c))
        elif out:
            out = []  # over budget: only count from here on
        k += 1
        active = active[active + k < n]
    return total, out


def co_occurring_pairs(rows: _Rows, params: NetworkParams, pair_budget: int = PAIR_BUDGET) -> _Pairs:
    """Account pairs whose directed weight reaches the minimum in either direction, with examples."""
    window_us = int(round(params.co_window_seconds * 1_000_000))
    if len(rows) < 2:
        return _empty_pairs()
    total, first = _window_sweep(rows, window_us, collect=pair_budget)
    if total <= pair_budget:
        return _pairs_of(rows, first, params)
    parts = math.ceil(total / pair_budget) * 2  # partitions are uneven: leave room
    log.info("%d window pairs: %d partitions", total, parts)
    del first
    results = [_pairs_of(rows, _window_sweep(rows, window_us, partition=(p, parts))[1], params) for p in range(parts)]
    return _concat_pairs(results)


def _pairs_of(rows: _Rows, chunks: list[tuple[np.ndarray, np.ndarray]], params: NetworkParams) -> _Pairs:
    if not chunks:
        return _empty_pairs()
    i = np.concatenate([c[0] for c in chunks])
    j = np.concatenate([c[1] for c in chunks])
    if not i.size:
        return _empty_pairs()
    ai, aj = rows.aid[i], rows.aid[j]
    i_is_lo = ai < aj
    lo_row = np.where(i_is_lo, i, j)
    hi_row = np.where(i_is_lo, j, i)
    lo, hi = rows.aid[lo_row], rows.aid[hi_row]
    n_acc = int(rows.aid.max()) + 1
    keys, pid = np.unique(lo * n_acc + hi, return_inverse=True)
    pid = pid.astype(np.int64)
    n_pairs, n_posts = keys.size, int(rows.post.max()) + 1
    # Directed weight, as QUT: distinct posts of one account that have a co-occurring post of the other.
    w_lohi = np.bincount(np.unique(pid * n_posts + rows.post[lo_row]) // n_posts, minlength=n_pairs)
    w_hilo = np.bincount(np.unique(pid * n_posts + rows.post[hi_row]) // n_posts, minlength=n_pairs)
    total = np.bincount(pid, minlength=n_pairs)
    kept = np.maximum(w_lohi, w_hilo) >= params.co_min_weight
    new_index = np.cumsum(kept) - 1
    sel = kept[pid]
    ex_pid, ex_lo, ex_hi = pid[sel], lo_row[sel], hi_row[sel]
    first_t = np.minimum(rows.t[ex_lo], rows.t[ex_hi])
    order = np.lexsort((ex_hi, ex_lo, first_t, ex_pid))
    ex_pid, ex_lo, ex_hi = ex_pid[order], ex_lo[order], ex_hi[order]
    if ex_pid.size:
        starts = np.r_[0, np.flatnonzero(np.diff(ex_pid)) + 1]
        rank = np.arange(ex_pid.size) - np.repeat(starts, np.diff(np.r_[starts, ex_pid.size]))
        take = rank < params.co_evidence_examples
        ex_pid, ex_lo, ex_hi = ex_pid[take], ex_lo[take], ex_hi[take]
    return _Pairs(keys[kept] // n_acc, keys[kept] % n_acc, w_lohi[kept], w_hilo[kept], total[kept],
                  new_index[ex_pid], ex_lo, ex_hi)


def _empty_pairs() -> _Pairs:
    e = np.zeros(0, dtype=np.int64)
    return _Pairs(e, e, e, e, e, e, e, e)


def _concat_pairs(parts: list[_Pairs]) -> _Pairs:
    offsets = np.cumsum([0] + [p.lo.size for p in parts])
    cat = np.concatenate
    return _Pairs(cat([p.lo for p in parts]), cat([p.hi for p in parts]), cat([p.w_lohi for p in parts]),
                  cat([p.w_hilo for p in parts]), cat([p.total for p in parts]),
                  cat([p.ex_pair + o for p, o in zip(parts, offsets)]),
                  cat([p.ex_lo_row for p in parts]), cat([p.ex_hi_row for p in parts]))


def _example_rows(cur: Any, source: _Source, rows: _Rows, wanted: np.ndarray) -> dict[int, dict[str, Any]]:
    """post id, time and matched value of the given rows, fetched by their table address (ctid)."""
    found: dict[int, dict[str, Any]] = {}
    for start in range(0, wanted.size, 50_000):
        chunk = wanted[start:start + 50_000]
        tids = [f"({b},{o})" for b, o in zip(rows.blk[chunk].tolist(), rows.off[chunk].tolist())]
        cur.execute(
            f"select t.n, p.post_id, p.posted_at, {source.value}"
            " from unnest(%s::tid[], %s::int4[], %s::int8[]) as t(tid, ord, n)"
            " join posts p on p.ctid = t.tid",
            (tids, rows.ord[chunk].tolist(), chunk.tolist()))
        for n, post_id, posted_at, value in cur.fetchall():
            found[n] = {"post": post_id, "at": posted_at.isoformat(), "value": value}
    return found


def _insert_edges(cur: Any, run_key: str, source: _Source, params: NetworkParams, rows: _Rows,
                  pairs: _Pairs) -> int:
    if not pairs.lo.size:
        return 0
    aids = np.unique(np.concatenate([pairs.lo, pairs.hi]))
    cur.execute("select aid, account_key from _co_acct where aid = any(%s)", (aids.tolist(),))
    key_of = dict(cur.fetchall())
    wanted = np.unique(np.concatenate([pairs.ex_lo_row, pairs.ex_hi_row]))
    info = _example_rows(cur, source, rows, wanted)
    examples: list[list[dict[str, Any]]] = [[] for _ in range(pairs.lo.size)]
    for p, lo_row, hi_row in zip(pairs.ex_pair.tolist(), pairs.ex_lo_row.tolist(), pairs.ex_hi_row.tolist()):
        a, b = info.get(lo_row), info.get(hi_row)
        if a is None or b is None:  # the row moved under a concurrent update: keep the edge, skip the example
            continue
        examples[p].append({source.value_name: a["value"], "a_post": a["post"], "a_at": a["at"],
                            "b_post": b["post"], "b_at": b["at"],
                            "delta_seconds": abs(int(rows.t[hi_row]) - int(rows.t[lo_row])) / 1e6})
    used = json.dumps({"co_window_seconds": params.co_window_seconds, "co_min_weight": params.co_min_weight,
                       "co_evidence_examples": params.co_evidence_examples}, sort_keys=True)
    buf = io.StringIO()
    writer = csv.writer(buf)
    for n, (lo, hi, wab, wba, total) in enumerate(zip(pairs.lo.tolist(), pairs.hi.tolist(), pairs.w_lohi.tolist(),
                                                       pairs.w_hilo.tolist(), pairs.total.tolist())):
        evidence = {"weight_a_to_b": wab, "weight_b_to_a": wba, "co_occurrences": total, "examples": examples[n]}
        writer.writerow([run_key, source.edge_type, key_of[lo], key_of[hi], max(wab, wba), used,
                         json.dumps(evidence, sort_keys=True)])
    buf.seek(0)
    cur.copy_expert("copy edges (run_key, edge_type, a_key, b_key, weight, params, evidence) from stdin (format csv)",
                    buf)
    return int(pairs.lo.size)

