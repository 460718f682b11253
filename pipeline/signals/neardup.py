"""Near-duplicate 64-bit perceptual hashes without a pairwise scan: block permutations, in numpy.

Pigeonhole (Manku, Jain and Das Sarma, WWW 2007): split the 64 bits into b blocks; two hashes within
Hamming distance r differ in at most r blocks, so at least b - r blocks are identical. For every choice of
b - r blocks we sort the hashes by those blocks' bits; pairs equal on them are adjacent in the order and are
verified on the full 64 bits. A pair is kept only for the first choice (in combination order) that its equal
blocks allow, so no pair is listed twice. b is chosen to minimise the expected cost for the number of
hashes: C(b, b - r) sorts plus the chance pairs that share b - r blocks, so the work grows about as
n log n instead of n^2 (bench/near_duplicates.py measures it against a brute-force scan).

An earlier multi-index version looked up every hash's chunk XOR every mask of up to r/m bits: at 1M
hashes and r = 6 that was 696 passes over all hashes and 300M chance candidates (70 s), and the chance
candidates grow with n^2.
"""

from __future__ import annotations

from itertools import combinations
from math import comb, log2

import numpy as np


def parse_phash(hex_values: list[str]) -> np.ndarray:
    """Hex pHash strings (as stored in images.phash) to uint64."""
    return np.array([int(h, 16) for h in hex_values], dtype=np.uint64)


def _block_bounds(b: int) -> list[tuple[int, int]]:
    """(first bit, bit count) of each of b blocks; the larger blocks first."""
    sizes = [64 // b + (1 if i < 64 % b else 0) for i in range(b)]
    bounds, start = [], 0
    for size in sizes:
        bounds.append((start, size))
        start += size
    return bounds


def choose_blocks(n: int, radius: int) -> int:
    """The block count with the lowest expected cost: per choice of kept blocks, a sort of the n hashes
    (n log2 n) and the chance pairs equal on the kept bits (n^2 / 2^(kept bits + 1))."""
    best_b, best_cost = radius + 1, float("inf")
    for b in range(radius + 1, 65):
        keep = b - radius
        kept_bits = sum(sorted(size for _, size in _block_bounds(b))[:keep])
        cost = comb(b, keep) * (n * max(1.0, log2(max(n, 2))) + n * n / 2 ** (kept_bits + 1))
        if cost < best_cost:
            best_b, best_cost = b, cost
    return best_b


def _argsort_key(key: np.ndarray, bits: int) -> np.ndarray:
    """argsort of keys of ``bits`` bits: up to 32 bits, a two-pass radix sort on 16-bit halves (numpy's stable
    sort of uint16 is a radix sort: half the time of a quicksort of 10M uint32 keys)."""
    if bits > 32:
        return np.argsort(key)
    low = (key & np.uint64(0xFFFF)).astype(np.uint16)
    if bits <= 16:
        return np.argsort(low, kind="stable")
    order = np.argsort(low, kind="stable")
    del low
    high = (key >> np.uint64(16)).astype(np.uint16)[order]
    return order[np.argsort(high, kind="stable")]


def near_duplicate_pairs(hashes: np.ndarray, max_distance: int, blocks: int | None = None,
                         block: int = 2_000_000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs i < j with popcount(h[i] ^ h[j]) <= max_distance, identical hashes included.

    Returns (i, j, distance) arrays sorted by (i, j). ``blocks``: the block count (more than
    ``max_distance``; default ``choose_blocks``); ``block`` bounds the candidate pairs held at once.
    """
    hashes = np.ascontiguousarray(hashes, dtype=np.uint64)
    n = len(hashes)
    empty = (np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64))
    if n < 2 or max_distance < 0:
        return empty
    r = min(max_distance, 64)
    b = blocks or choose_blocks(n, r)
    if b <= r:
        raise ValueError(f"blocks ({b}) must exceed the distance ({r}): otherwise no block need be equal")
    bounds = _block_bounds(b)
    block_values = [((hashes >> np.uint64(start)) & np.uint64((1 << size) - 1)).astype(np.uint32 if size <= 32 else np.uint64)
                    for start, size in bounds]
    found: list[np.ndarray] = []
    for kept in combinations(range(b), b - r):
        key = np.zeros(n, dtype=np.uint64)
        shift = 0
        for k in kept:
            key |= block_values[k].astype(np.uint64) << np.uint64(shift)
            shift += bounds[k][1]
        order = _argsort_key(key, shift)
        sorted_key = key[order]
        del key
        # a position has partners (the rest of its run of equal keys) when the next key is equal
        positions = np.flatnonzero(sorted_key[1:] == sorted_key[:-1])
        if len(positions) == 0:
            continue
        starts = np.flatnonzero(np.concatenate(([True], sorted_key[1:] != sorted_key[:-1])))
        del sorted_key
        run_end = np.append(starts[1:], n)[np.searchsorted(starts, positions, side="right") - 1]
        counts = run_end - positions - 1
        # the hashes in this order: a candidate and its partners are near each other in memory
        ordered = hashes[order]
        cum = np.cumsum(counts)
        # a pair is kept for this choice only when no block left out below its last kept block is equal
        lower = sum(1 << k for k in range(max(kept)) if k not in kept)
        lo = 0
        while lo < len(positions):
            hi = int(np.searchsorted(cum, (cum[lo - 1] if lo else 0) + block, side="right"))
            hi = max(hi, lo + 1)
            ps, cs = positions[lo:hi], counts[lo:hi]
            total = int(cs.sum())
            rep = np.repeat(ps, cs)
            other = rep + 1 + np.arange(total) - np.repeat(np.cumsum(cs) - cs, cs)
            close = np.bitwise_count(ordered[rep] ^ ordered[other]) <= r
            x, y = order[rep[close]], order[other[close]]
            a, c = np.minimum(x, y), np.maximum(x, y)
            if len(a) and lower:
                equal = np.zeros(len(a), dtype=np.int64)
                for k in range(max(kept)):
                    if k not in kept:
                        equal |= (block_values[k][a] == block_values[k][c]).astype(np.int64) << k
                first = (equal & lower) == 0
                a, c = a[first], c[first]
            found.append(a.astype(np.int64) * n + c)
            lo = hi
    if not found:
        return empty
    pairs = np.sort(np.concatenate(found))
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
