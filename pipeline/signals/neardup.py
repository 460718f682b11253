"""Near-duplicate 64-bit perceptual hashes without a pairwise scan: multi-index hashing, in numpy.

Pigeonhole: split the 64 bits into m chunks; two hashes within Hamming distance r differ in at most
floor(r/m) bits in at least one chunk. For every chunk we bucket the hashes by the chunk's value
(a direct-address table), then look up each hash's chunk value XOR every mask of at most floor(r/m)
bits. Each candidate pair is verified on the full 64 bits. m is chosen to minimise the expected
number of lookups and candidates for the number of hashes, so the work grows about linearly with
n instead of with n^2 (bench/near_duplicates.py measures it against a brute-force scan).
"""

from __future__ import annotations

from itertools import combinations
from math import comb

import numpy as np


def parse_phash(hex_values: list[str]) -> np.ndarray:
    """Hex pHash strings (as stored in images.phash) to uint64."""
    return np.array([int(h, 16) for h in hex_values], dtype=np.uint64)


def _chunk_bounds(m: int) -> list[tuple[int, int]]:
    sizes = [64 // m + (1 if i < 64 % m else 0) for i in range(m)]
    bounds, start = [], 0
    for size in sizes:
        bounds.append((start, size))
        start += size
    return bounds


def _masks(bits: int, radius: int) -> np.ndarray:
    masks = [0]
    for k in range(1, radius + 1):
        masks += [sum(1 << b for b in c) for c in combinations(range(bits), k)]
    return np.array(masks, dtype=np.int64)


def choose_chunks(n: int, radius: int) -> int:
    """The chunk count with the lowest expected cost: masks x (1 + expected bucket size) per hash."""
    best_m, best_cost = max(radius + 1, 3), float("inf")
    for m in range(1, max(radius + 2, 4)):
        bits = 64 // m
        if bits > 26:  # direct-address tables above 2^26 entries cost more memory than they save
            continue
        q = radius // m
        masks = sum(comb(bits, k) for k in range(q + 1))
        cost = m * masks * (1 + n / 2 ** bits)
        if cost < best_cost:
            best_m, best_cost = m, cost
    return best_m


def near_duplicate_pairs(hashes: np.ndarray, max_distance: int, chunks: int | None = None,
                         block: int = 2_000_000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs i < j with popcount(h[i] ^ h[j]) <= max_distance, identical hashes included.

    Returns (i, j, distance) arrays sorted by (i, j). ``block`` bounds the candidate pairs held at once.
    """
    hashes = np.ascontiguousarray(hashes, dtype=np.uint64)
    n = len(hashes)
    empty = (np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64))
    if n < 2 or max_distance < 0:
        return empty
    m = chunks or choose_chunks(n, max_distance)
    q = max_distance // m
    found: list[np.ndarray] = []
    for start, bits in _chunk_bounds(m):
        keys = ((hashes >> np.uint64(start)) & np.uint64((1 << bits) - 1)).astype(np.int64)
        order = np.argsort(keys, kind="stable")
        counts = np.bincount(keys, minlength=1 << bits)
        offsets = np.concatenate(([0], np.cumsum(counts)))
        for mask in _masks(bits, q):
            probe = keys ^ mask
            hits = counts[probe]
            if mask == 0:
                hits = hits - 1  # every hash finds itself; the loop below skips j <= i anyway
            queries = np.flatnonzero(hits > 0)
            if len(queries) == 0:
                continue
            # expand the (query, bucket) ranges into candidate pairs, a block of queries at a time
            qcounts = counts[probe[queries]]
            cum = np.cumsum(qcounts)
            lo = 0
            while lo < len(queries):
                hi = int(np.searchsorted(cum, (cum[lo - 1] if lo else 0) + block, side="right"))
                hi = max(hi, lo + 1)
                qs, cs = queries[lo:hi], qcounts[lo:hi]
                total = int(cs.sum())
                firsts = offsets[probe[qs]]
                rep_q = np.repeat(qs, cs)
                within = np.arange(total) - np.repeat(np.cumsum(cs) - cs, cs)
                cand = order[np.repeat(firsts, cs) + within]
                keep = cand > rep_q
                a, b = rep_q[keep], cand[keep]
                dist = np.bitwise_count(hashes[a] ^ hashes[b]).astype(np.int64)
                close = dist <= max_distance
                found.append(a[close] * n + b[close])
                lo = hi
    if not found:
        return empty
    pairs = np.unique(np.concatenate(found))
    i, j = pairs // n, pairs % n
    return i, j, np.bitwise_count(hashes[i] ^ hashes[j]).astype(np.int64)


def brute_force_pairs(hashes: np.ndarray, max_distance: int, rows: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The quadratic reference: each row in ``rows`` (default all) against every hash. For tests and bench."""
    hashes = np.ascontiguousarray(hashes, dtype=np.uint64)
    rows = np.arange(len(hashes)) if rows is None else rows
    out_i, out_j = [], []
    for r in rows:
        d = np.bitwise_count(hashes ^ hashes[r])
        js = np.flatnonzero(d <= max_distance)
        js = js[js > r]
        out_i.append(np.full(len(js), r, dtype=np.int64))
        out_j.append(js.astype(np.int64))
    i = np.concatenate(out_i) if out_i else np.empty(0, np.int64)
    j = np.concatenate(out_j) if out_j else np.empty(0, np.int64)
    return i, j, np.bitwise_count(hashes[i] ^ hashes[j]).astype(np.int64)
