"""Near-duplicate perceptual hashes at scale: the multi-index hashing of pipeline/signals/neardup.py against a
brute-force scan, measured in the same run.

N random 64-bit hashes plus planted near-duplicates (copies with 0..R bits flipped). The index finds
every pair within R bits. The brute-force scan (each hash XOR all N, popcount) is timed on a sample
of rows and extrapolated to all N rows; its pairs on the sample are compared with the index's.

    .venv/bin/python bench/near_duplicates.py --hashes 1000000 --radius 6 --sample 2000

With ``--photos DIR`` (e.g. ../shared/data/faces/real) it measures the image-ring pair test instead, on
real photos: every pair of distinct photos is checked (pHash within ``near_dup_max_distance``, dHash
within ``near_dup_confirm_dhash``, both above ``min_image_detail``), and so is each photo against a crop,
resize and re-encode of itself. The photo sets hold some copies of one photo (the same web picture
twice); a pair whose 64 x 64 grey thumbnails correlate at 0.9 or more is counted as such a copy, not
as a false match, and listed.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.signals.neardup import brute_force_pairs, choose_chunks, near_duplicate_pairs


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


def photo_pairs(folder: Path, seed: int) -> None:
    from PIL import Image

    from pipeline.config import ImageParams
    from pipeline.images.measures import measure_image
    from pipeline.testing.photos import near_duplicate

    params = ImageParams()
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    rgbs = [Image.open(f).convert("RGB") for f in files]
    measures = [measure_image(im) for im in rgbs]
    ph = np.array([int(m.phash, 16) for m in measures], dtype=np.uint64)
    dh = np.array([int(m.dhash, 16) for m in measures], dtype=np.uint64)
    detail = np.array([m.detail for m in measures])
    thumbs = np.stack([np.asarray(im.convert("L").resize((64, 64)), dtype=np.float64).ravel() for im in rgbs])
    thumbs = (thumbs - thumbs.mean(1, keepdims=True)) / np.maximum(thumbs.std(1, keepdims=True), 1e-9)
    i, j, pd = near_duplicate_pairs(ph, params.near_dup_max_distance)
    dd = np.bitwise_count(dh[i] ^ dh[j])
    corr = (thumbs[i] * thumbs[j]).mean(1)
    copy = corr >= 0.9
    confirmed = (dd <= params.near_dup_confirm_dhash) & (np.minimum(detail[i], detail[j]) >= params.min_image_detail)
    n, pairs = len(files), len(files) * (len(files) - 1) // 2
    distinct = pairs - int(copy.sum())
    print(f"photos {n:,} ({folder}), pairs {pairs:,}; copies of one photo in the set (thumbnail correlation >= 0.9):"
          f" {int(copy.sum())} pairs")
    print(f"distinct pairs with pHash <= {params.near_dup_max_distance}: {int((~copy).sum())}"
          f" (rate {(~copy).sum() / distinct:.2e})")
    print(f"distinct pairs also with dHash <= {params.near_dup_confirm_dhash} and detail >= {params.min_image_detail}"
          f" (false matches of the ring test): {int((~copy & confirmed).sum())} (rate {(~copy & confirmed).sum() / distinct:.2e})")
    print(f"copies the ring test confirms: {int((copy & confirmed).sum())} of {int(copy.sum())}")
    for a, b, x, y, c in zip(i[~copy & confirmed], j[~copy & confirmed], pd[~copy & confirmed], dd[~copy & confirmed],
                             corr[~copy & confirmed]):
        print(f"  false match: {files[a].name} {files[b].name} pHash {x} dHash {y} thumbnail correlation {c:.2f}")
    rng = np.random.default_rng(seed)
    hits = 0
    for f, m in zip(files, measures):
        v = near_duplicate(f.read_bytes(), rng)
        hits += ((v.phash ^ int(m.phash, 16)).bit_count() <= params.near_dup_max_distance
                 and (v.dhash ^ int(m.dhash, 16)).bit_count() <= params.near_dup_confirm_dhash
                 and min(v.detail, m.detail) >= params.min_image_detail)
    print(f"crop + resize + re-encode of each photo, confirmed against its original: {hits}/{n} ({hits / n:.3f})")
    print(f"photos below min_image_detail {params.min_image_detail}: {int((detail < params.min_image_detail).sum())}"
          f" (detail percentiles 1/50/99: {np.percentile(detail, [1, 50, 99]).round(3).tolist()})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hashes", type=int, default=1_000_000)
    ap.add_argument("--radius", type=int, default=6, help="Hamming distance threshold (default 6, as near_dup_max_distance)")
    ap.add_argument("--planted", type=int, default=10_000, help="near-duplicate copies among the hashes")
    ap.add_argument("--sample", type=int, default=2000, help="rows scanned by brute force, then extrapolated")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--photos", help="measure the image-ring pair test on the real photos in this folder instead")
    args = ap.parse_args()
    if args.photos:
        return photo_pairs(Path(args.photos), args.seed)

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

    print(f"hashes {n:,}, radius {args.radius}, chunks {choose_chunks(n, args.radius)}")
    print(f"multi-index: {index_s:.1f} s, {len(i):,} pairs ({n / index_s:,.0f} hashes/s)")
    print(f"brute force: {sample_s:.2f} s for {len(rows):,} rows -> {brute_s:,.0f} s extrapolated to {n:,} rows")
    print(f"pairs on the sampled rows: index {int(in_sample.sum()):,}, brute force {len(bi):,}, identical: {agree}")
    print(f"speed-up vs brute force: {brute_s / index_s:,.0f}x")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB")


if __name__ == "__main__":
    main()
