"""Near-duplicate perceptual hashes at scale: the block permutations of pipeline/signals/neardup.py against a
brute-force scan, measured in the same run.

N random 64-bit hashes plus planted near-duplicates (copies with 0..R bits flipped). The index finds
every pair within R bits. The brute-force scan (each hash XOR all N, popcount) is timed on a sample
of rows and extrapolated to all N rows; its pairs on the sample are compared with the index's.

    .venv/bin/python bench/near_duplicates.py --hashes 1000000 --radius 6 --sample 2000

The image-ring pair test on real photos (false joins of distinct faces, photo-ring recall) is
bench/image_rings.py.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.signals.neardup import brute_force_pairs, choose_blocks, near_duplicate_pairs


def make_hashes(n: int, radius: int, planted: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2 ** 63, size=n - planted, dtype=np.uint64) * np.uint64(2) \
        + rng.integers(0, 2, n - planted).astype(np.uint64)
    bases = hashes[rng.integers(0, len(hashes), size=planted)]
    flips = np.zeros(planted, dtype=np.uint64)
    for i, k in enumerate(rng.integers(0, radius + 1, size=planted)):
        for b in rng.choice(64, size=k, replace=False):
            flips[i] |= np.uint64(1) << np.uint64(b)
    return rng.permutation(np.concatenate([hashes, bases ^ flips]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hashes", type=int, default=1_000_000)
    ap.add_argument("--radius", type=int, default=6, help="Hamming distance threshold (default 6, as near_dup_max_distance)")
    ap.add_argument("--planted", type=int, default=10_000, help="near-duplicate copies among the hashes")
    ap.add_argument("--sample", type=int, default=2000, help="rows scanned by brute force, then extrapolated")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    hashes = make_hashes(args.hashes, args.radius, args.planted, args.seed)
    n = len(hashes)
    started = time.perf_counter()
    i, j, _ = near_duplicate_pairs(hashes, args.radius)
    index_s = time.perf_counter() - started

    rows = np.sort(np.random.default_rng(args.seed + 1).choice(n, size=min(args.sample, n), replace=False))
    started = time.perf_counter()
    bi, bj, _ = brute_force_pairs(hashes, args.radius, rows)
    sample_s = time.perf_counter() - started
    brute_s = sample_s * n / len(rows)  # every row scans all n: the full scan is n/sample times the sample
    # the brute-force scan lists (r, j > r) for sampled rows r; the index must list exactly those too
    in_sample = np.isin(i, rows)
    agree = set(zip(i[in_sample].tolist(), j[in_sample].tolist())) == set(zip(bi.tolist(), bj.tolist()))

    print(f"hashes {n:,}, radius {args.radius}, blocks {choose_blocks(n, args.radius)}")
    print(f"block permutations: {index_s:.1f} s, {len(i):,} pairs ({n / index_s:,.0f} hashes/s)")
    print(f"brute force: {sample_s:.2f} s for {len(rows):,} rows -> {brute_s:,.0f} s extrapolated to {n:,} rows")
    print(f"pairs on the sampled rows: index {int(in_sample.sum()):,}, brute force {len(bi):,}, identical: {agree}")
    print(f"speed-up vs brute force: {brute_s / index_s:,.0f}x")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB")


if __name__ == "__main__":
    main()
