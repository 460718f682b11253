"""Post-based coordination edges: co_repost, co_link, co_post, co_reply and co_hashtag, with QUT's meanings.

The types follow QUT's coordination-network-toolkit (co_retweet, co_link, co_tweet, co_reply):
two accounts co-occur when one posts and the other posts the same thing within
``co_window_seconds`` of it (|t1 - t2| <= window, both ends included):
- ``co_repost``: a repost (``posts.reposted_id``) of the same post;
- ``co_link``: a URL that normalises to the same string (``normalise_url`` in
  sql/functions/10_coactivity_text.sql), in a post that is not a repost (QUT ignores URLs in reposts);
- ``co_post``: the same normalised text (``normalise_post_text``: lower case, @mentions dropped,
  whitespace collapsed), in a post that is not a repost;
- ``co_reply``: a reply (``posts.replied_id``) to the same post, in a post that is not a repost (QUT's co_reply);
- ``co_hashtag``: the same set of hashtags (``hashtag_set``: distinct, sorted; at least
  ``co_hashtag_min_tags`` of them), in a post that is not a repost. QUT has no such network (its issue
  #30 asks for it); it is QUT's co_tweet with the hashtag set as the message, and the tests check exactly that.

QUT's weight is directed: w(u1 -> u2) is the number of distinct posts of u1 that have a
co-occurring post of u2. QUT keeps a directed edge when w >= min weight and drops self-loops on
output. We store one undirected edge per pair (``a_key < b_key``) when either direction reaches
``co_min_weight``; ``weight`` is the larger direction and the evidence holds both, so QUT's directed
edge list can be recovered exactly. Posts without a timestamp are skipped.

The evidence also holds each direction's weight with every co-occurring post counted by how rare its
shared object is in the run (``idf_weight_a_to_b`` / ``idf_weight_b_to_a``): an object shared by n of
the N accounts that share anything of this type counts ln(N / n) / ln(N), near 1 for an object a handful
of accounts share and near 0 for a viral one (the IDF of Pacheco et al.'s TF-IDF projection, scaled to
[0, 1]). The edges, their weights and QUT's equality are unchanged; the flag stage reads the IDF weight
(pipeline/flags/rules.py, ``coactivity_min_idf_weight``) so that chance co-reposts of viral posts, which
grow with the square of the population, do not count as co-activity.

Each edge's evidence also holds ``chance``: how well chance explains the pair (docs/networks.md,
"Coordinated pairs"). The null keeps every account's activity and every post's crowding and shuffles who
posted what: account a's posts have M_a window-mates (posts of other accounts of the same object within
the window), so b is expected among them λ = M_a k_b / P times (k_b: b's posts of this type, P: all of
them). ``p_value`` is the Poisson tail of the edge's weight at λ (the larger direction of each);
``expected_chance_pairs`` is the number of account pairs of the whole run expected to reach weight
``co_min_weight`` and a tail at least this small by chance (every pair of accounts, summed over a histogram of
M_x k_y, in O(accounts)). The cluster stage compares that count with the two-account components at least as
unlikely (pipeline/networks/clusters.py, ``pair_chance_shares``) and adds ``pairs_as_unlikely`` and
``chance_share`` to the edges of the pairs it keeps.

How: PostgreSQL sorts the run's posts by (matched value, time) and streams integer columns out with
binary COPY; numpy sweeps the sorted array for pairs within the window (O(posts + pairs), never a
per-group cross product), counts distinct posts per account pair, and the kept edges go back by
COPY. Pairs are processed in account partitions sized by ``PAIR_BUDGET``, so memory stays bounded
by the posts plus one partition of pairs.
"""

from __future__ import annotations

import io
import json
import logging
import math
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
import sqlalchemy as sa

from pipeline.config import NetworkParams
from pipeline.errors import UserError
from pipeline.networks.edge_types import CO_HASHTAG, CO_LINK, CO_POST, CO_REPLY, CO_REPOST, names_in

log = logging.getLogger(__name__)

COACTIVITY_TYPES = names_in("coactivity")  # the registry's co-activity family, in its order
_MATES_BUFFER = 8_000_000  # account numbers held before they are counted into the window-mate totals
_CHANCE_BINS_PER_DECADE = 20  # histogram of M_x and k_y for the run-wide chance count (upper bin edges)
PAIR_BUDGET = 4_000_000  # window pairs held in memory at once (about 0.4 GB at peak); more -> partitions
_READ_ROWS = 1 << 20  # COPY rows decoded at once
EXPORT_WORK_MEM = "256MB"  # PostgreSQL sort memory for the export; larger sorts spill to disk
TEXT_EXCERPT = 280


@dataclass(frozen=True)
class _Source:
    edge_type: str
    value_name: str  # evidence key of the matched value
    rows: str  # select g, account_key, posted_at, ctid, ord from posts of run %(k)s
    value: str  # SQL for the matched value of post {p} (and its URL ordinal {ord}), for evidence
    multi_row_posts: bool  # one post can give several rows (several URLs)


_SOURCES = {
    CO_REPOST: _Source(
        CO_REPOST, "reposted_id",
        "select p.reposted_id as g, p.account_key, p.posted_at, p.ctid, 1 as ord from posts p"
        " where p.run_key = %(k)s and p.reposted_id is not null and p.posted_at is not null",
        "{p}.reposted_id", False),
    CO_LINK: _Source(
        CO_LINK, "url",
        # one row per (post, normalised URL), as QUT's message_url table keyed by (message, url)
        "select g, account_key, posted_at, ctid, min(ord)::int4 as ord from ("
        " select normalise_url(u.url) as g, p.account_key, p.posted_at, p.ctid, u.ord from posts p"
        " cross join lateral unnest(p.urls) with ordinality as u(url, ord)"
        " where p.run_key = %(k)s and p.reposted_id is null and p.posted_at is not null) x"
        " where g is not null group by g, account_key, posted_at, ctid",
        "normalise_url({p}.urls[{ord}])", True),
    CO_POST: _Source(
        CO_POST, "text",
        "select normalise_post_text(p.text) as g, p.account_key, p.posted_at, p.ctid, 1 as ord from posts p"
        " where p.run_key = %(k)s and p.reposted_id is null and p.posted_at is not null"
        " and normalise_post_text(p.text) is not null",
        f"left(normalise_post_text({{p}}.text), {TEXT_EXCERPT})", False),
    CO_REPLY: _Source(
        CO_REPLY, "replied_id",
        "select p.replied_id as g, p.account_key, p.posted_at, p.ctid, 1 as ord from posts p"
        " where p.run_key = %(k)s and p.replied_id is not null and p.reposted_id is null and p.posted_at is not null",
        "{p}.replied_id", False),
    CO_HASHTAG: _Source(
        CO_HASHTAG, "hashtags",
        "select hashtag_set(p.hashtags, %(min_tags)s) as g, p.account_key, p.posted_at, p.ctid, 1 as ord from posts p"
        " where p.run_key = %(k)s and p.reposted_id is null and p.posted_at is not null"
        " and cardinality(p.hashtags) >= %(min_tags)s and hashtag_set(p.hashtags, %(min_tags)s) is not null",
        "hashtag_set({p}.hashtags, 1)", False),
}
if set(_SOURCES) != set(COACTIVITY_TYPES):  # a co-activity type registered without a builder, or the reverse
    raise RuntimeError(f"co-activity builders {sorted(_SOURCES)} differ from the registry's {sorted(COACTIVITY_TYPES)}")

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
    idf_lohi: np.ndarray  # w_lohi with each post weighted by its object's IDF (see the module docstring)
    idf_hilo: np.ndarray


@dataclass
class _Chance:
    """Per kept pair: how well chance explains it (see the module docstring)."""

    expected: np.ndarray  # λ, expected co-occurrences of the pair by chance (larger direction)
    p_value: np.ndarray  # Poisson tail of the pair's weight at λ
    expected_pairs: np.ndarray  # pairs of the run expected by chance with a tail at least this small


def build_post_edges(conn: sa.Connection, run_key: str, params: NetworkParams,
                     edge_types: Sequence[str] = COACTIVITY_TYPES, pair_budget: int | None = None) -> dict[str, int]:
    """Replace the run's co_repost, co_link and co_post edges (or the given subset); returns the edge
    count per type. Runs inside the caller's transaction."""
    if params.co_window_seconds < 0 or params.co_min_weight < 1 or params.co_evidence_examples < 0:
        raise UserError("network settings: co_window_seconds must be >= 0, co_min_weight >= 1 and "
                        "co_evidence_examples >= 0; fix the [network] table or the DAG Params")
    unknown = set(edge_types) - set(COACTIVITY_TYPES)
    if unknown:
        raise ValueError(f"unknown post edge type(s) {sorted(unknown)}; known: {list(COACTIVITY_TYPES)}")
    edge_types = [t for t in COACTIVITY_TYPES if t in edge_types]
    cur = conn.connection.dbapi_connection.cursor()
    try:
        cur.execute("delete from edges where run_key = %s and edge_type = any(%s)", (run_key, edge_types))
        cur.execute("select current_setting('work_mem')")
        work_mem = cur.fetchone()[0]
        cur.execute("select current_setting('TimeZone')")
        time_zone = cur.fetchone()[0]
        cur.execute("select set_config('work_mem', %s, true), set_config('TimeZone', 'UTC', true)", (EXPORT_WORK_MEM,))
        cur.execute("drop table if exists pg_temp._co_acct")
        # Account numbers follow account_key order, so lo < hi in numbers means a_key < b_key in the table.
        cur.execute(
            "create temp table _co_acct on commit drop as"
            " select account_key, (row_number() over (order by account_key))::int4 as aid"
            " from (select distinct account_key from posts where run_key = %s) s", (run_key,))
        cur.execute("create unique index on _co_acct (account_key)")
        cur.execute("analyze _co_acct")
        counts = {}
        for edge_type in edge_types:
            source = _SOURCES[edge_type]
            started = time.perf_counter()
            rows = _export_rows(cur, source, run_key, params.co_hashtag_min_tags)
            exported = time.perf_counter()
            mates = np.zeros(int(rows.aid.max()) + 1 if len(rows) else 0, dtype=np.int64)
            pairs = co_occurring_pairs(rows, params, pair_budget, mates)
            chance = chance_estimates(pairs, np.bincount(rows.aid, minlength=mates.size), mates, params.co_min_weight)
            paired = time.perf_counter()
            counts[edge_type] = _insert_edges(cur, run_key, source, params, rows, pairs, chance)
            log.info("%s: %d rows, %d edges; export %.1f s, pairs %.1f s, evidence and insert %.1f s", edge_type,
                     len(rows), counts[edge_type], exported - started, paired - exported, time.perf_counter() - paired)
        cur.execute("drop table if exists pg_temp._co_acct")
        cur.execute("select set_config('work_mem', %s, true), set_config('TimeZone', %s, true)", (work_mem, time_zone))
    finally:
        cur.close()
    return counts


def _export_rows(cur: Any, source: _Source, run_key: str, min_tags: int = 1) -> _Rows:
    """Sorted by (value, time) in PostgreSQL; only integers cross the wire, through a temporary file."""
    query = cur.mogrify(
        "copy (select (lag(s.g) over w) is distinct from s.g, a.aid, s.posted_at, s.ctid, s.ord::int4"
        f" from ({source.rows}) s join _co_acct a using (account_key)"
        ' window w as (order by s.g collate "C", s.posted_at)'
        ' order by s.g collate "C", s.posted_at) to stdout (format binary)',
        {"k": run_key, "min_tags": min_tags}).decode()
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
        # read in slices into narrow columns: the wide COPY rows never sit in memory all at once
        idx = np.int32 if n < 2**31 else np.int64
        group, aid, t = np.empty(n, np.int32), np.empty(n, np.int64), np.empty(n, np.int64)
        blk, off, ord_ = np.empty(n, np.uint32), np.empty(n, np.uint16), np.empty(n, np.int32)
        last_group, new_rows = -1, 0
        fh.seek(start)
        for lo in range(0, n, _READ_ROWS):
            raw = np.fromfile(fh, dtype=_ROW, count=min(_READ_ROWS, n - lo))
            hi = lo + raw.size
            if not ((raw["nf"] == 5).all() and (raw["l2"] == 8).all() and (raw["l3"] == 6).all()):
                raise RuntimeError("binary COPY stream has unexpected fields (a null in a non-null column?)")
            group[lo:hi] = np.cumsum(raw["new"], dtype=np.int32) + last_group
            last_group = int(group[hi - 1])
            new_rows += int(raw["new"].sum())
            aid[lo:hi], t[lo:hi] = raw["aid"], raw["t"]
            blk[lo:hi], off[lo:hi], ord_[lo:hi] = raw["blk"], raw["off"], raw["ord"]
            del raw
    if source.multi_row_posts and n:
        _, post = np.unique(blk.astype(np.int64) * 65536 + off, return_inverse=True)
        post = post.astype(idx)
    else:
        post = np.arange(n, dtype=idx)
    return _Rows(group, aid, t, post, blk, off, ord_)


def _window_sweep(rows: _Rows, window_us: int, collect: int | None = None,
                  spill: list[tuple[BinaryIO, BinaryIO]] | None = None,
                  mates: np.ndarray | None = None) -> tuple[int, list[tuple[np.ndarray, np.ndarray]]]:
    """All row pairs (i, j), i < j, in one group with t[j] - t[i] <= window, by increasing offset j - i.

    Rows are sorted by (group, t), so once row i + k is out of the group or window, so is i + k + 1:
    each offset only revisits the rows that matched at the previous one. Returns the number of
    cross-account pairs and the pairs themselves; with ``collect`` set, no pairs once their number exceeds it. With
    ``spill`` (one pair of files per partition), every pair is appended to its partition's files instead,
    partition = smaller account number modulo the number of files, and none is returned. With ``mates`` (one
    counter per account number), each account's cross-account window pairs are added to it (M of the chance model)."""
    n = len(rows)
    held: list[np.ndarray] = []
    held_size = 0

    def count_mates(flush: bool) -> None:
        nonlocal held_size
        if mates is not None and held and (flush or held_size > _MATES_BUFFER):
            mates[:] += np.bincount(np.concatenate(held), minlength=mates.size)
            held.clear()
            held_size = 0

    g, t, aid = rows.group, rows.t, rows.aid
    active = np.arange(n - 1, dtype=np.int32 if n < 2**31 else np.int64)
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
        total += i_c.size
        if mates is not None and i_c.size:
            held += [aid[i_c], aid[j_c]]
            held_size += 2 * i_c.size
            count_mates(False)
        if spill is not None:
            part = np.minimum(aid[i_c], aid[j_c]) % len(spill)
            order = np.argsort(part, kind="stable")
            bounds = np.r_[0, np.cumsum(np.bincount(part, minlength=len(spill)))]
            i_c, j_c = i_c[order], j_c[order]
            for p, (fi, fj) in enumerate(spill):
                i_c[bounds[p]:bounds[p + 1]].tofile(fi)
                j_c[bounds[p]:bounds[p + 1]].tofile(fj)
        elif collect is None or total <= collect:
            out.append((i_c, j_c))
        elif out:
            out = []  # over budget: only count from here on
        k += 1
        active = active[active + k < n]
    count_mates(True)
    return total, out


def co_occurring_pairs(rows: _Rows, params: NetworkParams, pair_budget: int | None = None,
                       mates: np.ndarray | None = None) -> _Pairs:
    """Account pairs whose directed weight reaches the minimum in either direction, with examples.
    More window pairs than ``pair_budget`` (default ``PAIR_BUDGET``) are reduced in account partitions.
    ``mates``: per account number, receives its cross-account window pairs (for ``chance_estimates``)."""
    pair_budget = PAIR_BUDGET if pair_budget is None else pair_budget
    window_us = round(params.co_window_seconds * 1_000_000)
    if len(rows) < 2:
        return _empty_pairs()
    total, first = _window_sweep(rows, window_us, collect=pair_budget, mates=mates)
    idf = object_idf(rows)
    if total <= pair_budget:
        return _pairs_of(rows, first, params, idf)
    parts = math.ceil(total / pair_budget) * 2  # partitions are uneven: leave room
    log.info("%d window pairs: %d partitions", total, parts)
    del first
    dtype = np.int32 if len(rows) < 2**31 else np.int64
    results = []
    # One more sweep writes each partition's pairs to its own temporary files; then one partition at a
    # time is read back and reduced, so memory holds the rows plus one partition, never all the pairs.
    with ExitStack() as stack:
        files = [(stack.enter_context(tempfile.TemporaryFile(prefix="co-pairs-")),
                  stack.enter_context(tempfile.TemporaryFile(prefix="co-pairs-"))) for _ in range(parts)]
        _window_sweep(rows, window_us, spill=files)
        for fi, fj in files:
            fi.seek(0)
            fj.seek(0)
            chunk = (np.fromfile(fi, dtype=dtype), np.fromfile(fj, dtype=dtype))
            fi.truncate(0)
            fj.truncate(0)
            results.append(_pairs_of(rows, [chunk], params, idf))
            del chunk
    return _concat_pairs(results)


def object_idf(rows: _Rows) -> np.ndarray:
    """Per group (shared object): ln(N / n) / ln(N), n its distinct accounts, N the rows' distinct accounts."""
    if not len(rows):
        return np.zeros(0)
    n_acc = int(rows.aid.max()) + 1
    pairs = _distinct(rows.group.astype(np.int64) * n_acc + rows.aid)
    per_group = np.bincount(pairs // n_acc, minlength=int(rows.group.max()) + 1)
    accounts = np.unique(rows.aid).size
    if accounts < 2:
        return np.zeros(per_group.size)
    return np.log(accounts / np.maximum(per_group, 1)) / math.log(accounts)


def chance_estimates(pairs: _Pairs, posts: np.ndarray, mates: np.ndarray, min_weight: int) -> _Chance:
    """How well chance explains each kept pair, under the null of the module docstring. ``posts``: rows per
    account number (k); ``mates``: cross-account window pairs per account number (M); ``min_weight``: the
    weight an edge needs (``co_min_weight``), which a chance pair must reach too."""
    from scipy.stats import poisson

    n = pairs.lo.size
    if not n:
        e = np.zeros(0)
        return _Chance(e, e, e)
    total = float(posts.sum())
    lam = np.maximum(mates[pairs.lo] * posts[pairs.hi], mates[pairs.hi] * posts[pairs.lo]) / total
    weight = np.maximum(pairs.w_lohi, pairs.w_hilo)
    p_value = poisson.sf(weight - 1, lam)
    # every ordered pair of accounts (x, y) has λ = M_x k_y / P: the histogram of log λ is the convolution of
    # those of log M and log k, each bin taken at its upper edge (λ at most 10^0.1 too high: an estimate)
    step = 1.0 / _CHANCE_BINS_PER_DECADE
    m_log, k_log = np.log10(mates[mates > 0]), np.log10(posts[posts > 0])
    m_lo, k_lo = np.floor(m_log.min() / step), np.floor(k_log.min() / step)
    m_hist = np.bincount((np.floor(m_log / step) - m_lo).astype(np.int64))
    k_hist = np.bincount((np.floor(k_log / step) - k_lo).astype(np.int64))
    counts = np.convolve(m_hist, k_hist).astype(np.float64)
    lam_bins = 10.0 ** ((m_lo + k_lo + np.arange(counts.size) + 2) * step) / total
    keep = counts > 0
    counts, lam_bins = counts[keep] / 2, lam_bins[keep]  # ordered pairs -> unordered
    # tails[b, i]: P(X >= min_weight + i) at bin b's λ. For a threshold t, a bin adds the first tail <= t
    # (the weight a chance pair of that bin needs to be as unlikely): each (b, i) holds over [tails[b, i],
    # tails[b, i - 1]), added and removed by a difference array over the sorted thresholds.
    weights = np.arange(min_weight, max(int(weight.max()) + 6, min_weight + 6))
    tails = poisson.sf(weights[None, :] - 1, lam_bins[:, None])
    upper = np.concatenate([np.full((tails.shape[0], 1), np.inf), tails[:, :-1]], axis=1)
    thresholds = np.sort(p_value)
    diff = np.zeros(n + 1)
    value = (counts[:, None] * tails).ravel()
    np.add.at(diff, np.searchsorted(thresholds, tails.ravel(), side="left"), value)
    np.add.at(diff, np.searchsorted(thresholds, upper.ravel(), side="left"), -value)
    expected_sorted = np.cumsum(diff)[:n]
    return _Chance(lam, p_value, expected_sorted[np.searchsorted(thresholds, p_value, side="left")])


def _idf_weight(pid: np.ndarray, post_rows: np.ndarray, rows: _Rows, idf: np.ndarray, n_pairs: int) -> np.ndarray:
    """Per pair: the distinct posts of one side that co-occur, each counted by its object's IDF (a post with
    several rows, e.g. several links, counts once, by its rarest object)."""
    n_posts = int(rows.post.max()) + 1
    key = pid * n_posts + rows.post[post_rows]
    value = idf[rows.group[post_rows]]
    order = np.lexsort((value, key))
    key, value = key[order], value[order]
    last = np.r_[key[1:] != key[:-1], True] if key.size else np.zeros(0, dtype=bool)
    return np.bincount(key[last] // n_posts, weights=value[last], minlength=n_pairs)


def _pairs_of(rows: _Rows, chunks: list[tuple[np.ndarray, np.ndarray]], params: NetworkParams,
              idf: np.ndarray) -> _Pairs:
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
    lo_row, hi_row = lo_row.astype(np.int64), hi_row.astype(np.int64)
    n_acc = int(rows.aid.max()) + 1
    keys, pid = np.unique(lo * n_acc + hi, return_inverse=True)
    pid = pid.astype(np.int64)
    n_pairs, n_posts = keys.size, int(rows.post.max()) + 1
    # Directed weight, as QUT: distinct posts of one account that have a co-occurring post of the other.
    w_lohi = np.bincount(_distinct(pid * n_posts + rows.post[lo_row]) // n_posts, minlength=n_pairs)
    w_hilo = np.bincount(_distinct(pid * n_posts + rows.post[hi_row]) // n_posts, minlength=n_pairs)
    total = np.bincount(pid, minlength=n_pairs)
    kept = np.maximum(w_lohi, w_hilo) >= params.co_min_weight
    new_index = np.cumsum(kept) - 1
    idf_lohi = _idf_weight(pid, lo_row, rows, idf, n_pairs)[kept]
    idf_hilo = _idf_weight(pid, hi_row, rows, idf, n_pairs)[kept]
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
                  new_index[ex_pid], ex_lo, ex_hi, idf_lohi, idf_hilo)


def _distinct(x: np.ndarray) -> np.ndarray:
    """Sorted distinct values; a plain sort is several times faster than np.unique's hash path here."""
    x = np.sort(x)
    return x[np.r_[True, x[1:] != x[:-1]]] if x.size else x


def _empty_pairs() -> _Pairs:
    e = np.zeros(0, dtype=np.int64)
    return _Pairs(e, e, e, e, e, e, e, e, np.zeros(0), np.zeros(0))


def _concat_pairs(parts: list[_Pairs]) -> _Pairs:
    offsets = np.cumsum([0] + [p.lo.size for p in parts])
    cat = np.concatenate
    return _Pairs(cat([p.lo for p in parts]), cat([p.hi for p in parts]), cat([p.w_lohi for p in parts]),
                  cat([p.w_hilo for p in parts]), cat([p.total for p in parts]),
                  cat([p.ex_pair + o for p, o in zip(parts, offsets)]),
                  cat([p.ex_lo_row for p in parts]), cat([p.ex_hi_row for p in parts]),
                  cat([p.idf_lohi for p in parts]), cat([p.idf_hilo for p in parts]))


def _copy_in(cur: Any, table: str, columns: list[tuple[str, str, np.ndarray | tuple[np.ndarray, np.ndarray]]]) -> None:
    """Binary COPY of numpy columns (int4, int8, float8, or tid as (block, offset)) into a table."""
    n = len(columns[0][2][0] if columns[0][1] == "tid" else columns[0][2])
    fields = [("nf", ">i2")]
    for name, kind, _ in columns:
        fields.append((f"{name}_len", ">i4"))
        fields += [(f"{name}_blk", ">u4"), (f"{name}_off", ">u2")] if kind == "tid" else [(name, ">" + kind)]
    out = np.zeros(n, dtype=np.dtype(fields))
    out["nf"] = len(columns)
    for name, kind, values in columns:
        if kind == "tid":
            out[f"{name}_len"] = 6
            out[f"{name}_blk"], out[f"{name}_off"] = values
        else:
            out[f"{name}_len"] = int(kind[1])
            out[name] = values
    data = _COPY_HEADER + b"\x00" * 8 + out.tobytes() + b"\xff\xff"
    cur.copy_expert(f"copy {table} ({', '.join(c[0] for c in columns)}) from stdin (format binary)", io.BytesIO(data))


def _insert_edges(cur: Any, run_key: str, source: _Source, params: NetworkParams, rows: _Rows,
                  pairs: _Pairs, chance: _Chance) -> int:
    """Pairs and example row addresses go to temporary tables; PostgreSQL joins the example posts by
    ctid and builds each edge's evidence JSON itself."""
    if not pairs.lo.size:
        return 0
    cur.execute("drop table if exists pg_temp._co_pairs, pg_temp._co_ex")
    cur.execute("create temp table _co_pairs (n int4, lo int4, hi int4, wab int4, wba int4, total int4,"
                " iab float8, iba float8, c_lambda float8, c_p float8, c_expected float8)"
                " on commit drop")
    cur.execute("create temp table _co_ex (n int4, rank int4, lo_tid tid, lo_ord int4, hi_tid tid, hi_ord int4,"
                " delta_us int8) on commit drop")
    _copy_in(cur, "_co_pairs", [("n", "i4", np.arange(pairs.lo.size)), ("lo", "i4", pairs.lo), ("hi", "i4", pairs.hi),
                                ("wab", "i4", pairs.w_lohi), ("wba", "i4", pairs.w_hilo), ("total", "i4", pairs.total),
                                ("iab", "f8", pairs.idf_lohi), ("iba", "f8", pairs.idf_hilo),
                                ("c_lambda", "f8", chance.expected), ("c_p", "f8", chance.p_value),
                                ("c_expected", "f8", chance.expected_pairs)])
    lo, hi = pairs.ex_lo_row, pairs.ex_hi_row
    _copy_in(cur, "_co_ex", [("n", "i4", pairs.ex_pair), ("rank", "i4", np.arange(lo.size)),
                             ("lo_tid", "tid", (rows.blk[lo], rows.off[lo])), ("lo_ord", "i4", rows.ord[lo]),
                             ("hi_tid", "tid", (rows.blk[hi], rows.off[hi])), ("hi_ord", "i4", rows.ord[hi]),
                             ("delta_us", "i8", np.abs(rows.t[hi] - rows.t[lo]))])
    cur.execute("analyze _co_pairs")
    cur.execute("analyze _co_ex")
    used = {"co_window_seconds": params.co_window_seconds, "co_min_weight": params.co_min_weight,
            "co_evidence_examples": params.co_evidence_examples}
    if source.edge_type == CO_HASHTAG:
        used["co_hashtag_min_tags"] = params.co_hashtag_min_tags
    used = json.dumps(used, sort_keys=True)
    value = source.value.format(p="pa", ord="e.lo_ord")
    # A row whose ctid no longer matches (a concurrent update) loses its example, never the edge.
    cur.execute(
        f"""
        insert into edges (run_key, edge_type, a_key, b_key, weight, params, evidence)
        select %(k)s, %(t)s, a.account_key, b.account_key, greatest(p.wab, p.wba), cast(%(params)s as jsonb),
               jsonb_build_object('weight_a_to_b', p.wab, 'weight_b_to_a', p.wba, 'co_occurrences', p.total,
                                  'idf_weight_a_to_b', round(p.iab::numeric, 4), 'idf_weight_b_to_a',
                                  round(p.iba::numeric, 4), 'examples', coalesce(x.examples, '[]'::jsonb),
                                  'chance', jsonb_build_object(
                                      'expected_co_occurrences', to_jsonb(p.c_lambda::real), 'p_value', to_jsonb(p.c_p),
                                      'expected_chance_pairs', round(p.c_expected::numeric, 4)))
        from _co_pairs p
        join _co_acct a on a.aid = p.lo
        join _co_acct b on b.aid = p.hi
        left join (
            select e.n, jsonb_agg(jsonb_build_object(
                       %(value_name)s, {value}, 'a_post', pa.post_id, 'a_at', pa.posted_at,
                       'b_post', pb.post_id, 'b_at', pb.posted_at, 'delta_seconds', (e.delta_us / 1e6)::float8)
                       order by e.rank) as examples
            from _co_ex e  -- lateral + limit: one TID lookup per example, never a scan of posts
            cross join lateral (select * from posts where ctid = e.lo_tid and run_key = %(k)s limit 1) pa
            cross join lateral (select * from posts where ctid = e.hi_tid and run_key = %(k)s limit 1) pb
            group by e.n
        ) x on x.n = p.n
        """,
        {"k": run_key, "t": source.edge_type, "params": used, "value_name": source.value_name})
    cur.execute("drop table if exists pg_temp._co_pairs, pg_temp._co_ex")
    return int(pairs.lo.size)
