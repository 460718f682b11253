"""Image rings of distinct people: false joins per face source, and photo-ring recall, by the image-ring test
the network stage runs (pipeline/networks/edges.py ``confirmed_near_duplicate_edges``).

Each image of each source stands for one account, as in an audit of avatars that share nothing. Every
pair within ``near_dup_max_distance`` pHash bits, both detailed, is a candidate; the old rule (policy
version 6: dHash within 10 bits confirms) and the current one (a local-feature match of the pixels,
pipeline/images/matching.py) are applied to the same candidates. Confirmed edges then form clusters as
the network stage forms them (``find_clusters``; ``min_cluster_size``): a cluster of confirmed edges is
what the ``image_ring`` rule flags. Printed per source: images, candidate pairs, pairs and accounts
each rule confirms, image-ring clusters each rule makes, and the closest call: the highest margin
(``picture_margin``: each measure over its threshold, the smallest; 1 confirms) among the unconfirmed pairs
within ``--margin-bits`` pHash bits (a wider net than the stage casts, with the pairs it confirms listed
by name: copies of one photo that the sets themselves hold) and among 200 random pairs.

Photo rings: ``--ring-photos`` photos of each source, each shown by ``--per-photo`` accounts (the
original and crops, resizes and re-encodes of it: half at 96-200 px, as pipeline/testing/planted.py
makes them, half at 260-520 px, both sides of the matcher's 256 px scale switch), are added to the
pooled population of all sources. Recall: the ring accounts in an image-ring cluster of their own photo;
with each source's ring pairs within pHash reach, confirmed, and the lowest margin among those matched.

    .venv/bin/python bench/image_rings.py                      # ../shared/data/faces, every source
    .venv/bin/python bench/image_rings.py --sources real/london_neutral_1350 fake/sd21_sdfd
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.config import ImageParams, NetworkParams
from pipeline.images.matching import Keypoints, PictureMatch, compare_pictures, keypoints
from pipeline.images.measures import measure_image
from pipeline.networks import edges as E
from pipeline.networks.clusters import find_clusters, strong_pairs
from pipeline.signals.neardup import near_duplicate_pairs
from pipeline.testing.photos import default_faces_dir, near_duplicate

OLD_DHASH = 10  # policy version 6's near_dup_confirm_dhash


class Images:
    """Decoded images with their measures and (lazily) their keypoints, keyed by a name."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.source: list[str] = []
        self.rgb: list[Image.Image] = []
        self.phash: list[int] = []
        self.info: list[E.ImageInfo] = []
        self._points: dict[int, Keypoints] = {}

    def add(self, name: str, source: str, data: bytes) -> int:
        rgb = Image.open(io.BytesIO(data)).convert("RGB")
        m = measure_image(rgb)
        self.names.append(name)
        self.source.append(source)
        self.rgb.append(rgb)
        self.phash.append(int(m.phash, 16))
        self.info.append(E.ImageInfo(int(m.dhash, 16), m.detail))
        return len(self.names) - 1

    def points(self, i: int) -> Keypoints:
        if i not in self._points:
            self._points[i] = keypoints(self.rgb[i])
        return self._points[i]

    def compare(self, i: int, j: int) -> PictureMatch:
        return compare_pictures(self.rgb[i], self.rgb[j], self.points(i), self.points(j))


def ring_test(imgs: Images, members: list[int], params: ImageParams, radius: int | None = None
              ) -> tuple[list[tuple[str, str, int]], dict[str, E.ImageInfo], dict[str, list[str]],
                         dict[tuple[str, str], PictureMatch]]:
    """Candidate pairs among ``members`` (pHash within ``radius``), and the local match of each one that may confirm."""
    keys = [str(m) for m in members]
    hashes = np.array([imgs.phash[m] for m in members], dtype=np.uint64)
    i, j, d = near_duplicate_pairs(hashes, params.near_dup_max_distance if radius is None else radius)
    pairs = [(min(keys[a], keys[b]), max(keys[a], keys[b]), int(x)) for a, b, x in zip(i, j, d)]
    groups = {k: [f"acct:{k}"] for k in keys}
    info = {str(m): imgs.info[m] for m in members}
    matches = {(a, b): imgs.compare(int(a), int(b)) for a, b, _ in E.ring_candidates(groups, pairs, info, params)}
    return pairs, info, groups, matches


def old_rule(pairs, info, groups, params: ImageParams) -> list[tuple[str, str]]:
    """Policy version 6: a detailed pHash pair whose dHash is within 10 bits."""
    return [(a, b) for a, b, _ in E.ring_candidates(groups, pairs, info, params)
            if (info[a].dhash ^ info[b].dhash).bit_count() <= OLD_DHASH]


def ring_clusters(confirmed: list[tuple[str, str]], network: NetworkParams) -> list[list[str]]:
    """Clusters the confirmed edges alone make, as the network stage forms them."""
    pairs = strong_pairs(((E.CONFIRMED_NEAR_DUPLICATE, f"acct:{a}", f"acct:{b}", 0.8) for a, b in confirmed),
                         network.strong_edge_min_weight)
    return [c.members for c in find_clusters(pairs, network)]


def per_source(imgs: Images, sources: list[str], params: ImageParams, network: NetworkParams, margin_bits: int,
               rng: np.random.Generator) -> None:
    print(f"{'source':34} {'images':>6} {'pairs':>6} {'old: pairs/accts/rings':>23} {'new: pairs/accts/rings':>23}"
          f"  closest unconfirmed: margin (<= {margin_bits} bits, n pairs, confirmed) / random")
    for source in sources:
        members = [k for k, s in enumerate(imgs.source) if s == source]
        pairs, info, groups, matches = ring_test(imgs, members, params)
        old = old_rule(pairs, info, groups, params)
        new = [(a, b) for (a, b), m in matches.items() if E.same_picture(m, params)]
        wide_pairs, _, _, wide = ring_test(imgs, members, params, margin_bits)
        randoms = [tuple(p) for p in rng.choice(members, size=(200, 2)) if p[0] != p[1]]
        random_margin = [E.picture_margin(imgs.compare(int(a), int(b)), params) for a, b in randoms]
        wide_margin = [E.picture_margin(m, params) for m in wide.values()]
        wide_new = [(a, b) for (a, b), m in wide.items() if E.same_picture(m, params) and (a, b) not in matches]

        def row(confirmed):
            accts = len({k for p in confirmed for k in p})
            return f"{len(confirmed)}/{accts}/{len(ring_clusters(confirmed, network))}"

        print(f"{source:34} {len(members):6d} {len(pairs):6d} {row(old):>23} {row(new):>23}"
              f"  {max((x for x in wide_margin if x < 1), default=0):.3f} ({len(wide_pairs)}, {len(wide_new) + len(new)})"
              f" / {max(random_margin, default=0):.3f}")
        for a, b in new + wide_new:
            m = matches.get((a, b)) or wide[(a, b)]
            print(f"    confirmed: {imgs.names[int(a)]} {imgs.names[int(b)]} inliers {m.inliers}"
                  f" ({m.inlier_share:.2f}) detail correlation {m.detail_correlation:.3f}")


def photo_rings(imgs: Images, files: dict[str, list[Path]], params: ImageParams, network: NetworkParams,
                ring_photos: int, per_photo: int, rng: np.random.Generator) -> None:
    population = list(range(len(imgs.names)))
    truth: dict[str, int] = {}  # ring account image index -> its photo
    ring_sources: dict[int, str] = {}
    for source, paths in files.items():
        for p in rng.choice(len(paths), size=min(ring_photos, len(paths)), replace=False):
            data = paths[int(p)].read_bytes()
            photo = len(ring_sources)
            ring_sources[photo] = source
            for k in range(per_photo - 1):  # the original is already in the population as one account
                sides = (96, 201) if k % 2 == 0 else (260, 521)
                variant = near_duplicate(data, rng, sides)
                idx = imgs.add(f"{paths[int(p)].name}~v{k}", f"ring:{source}", variant.data)
                truth[str(idx)] = photo
                population.append(idx)
            original = next(i for i, n in enumerate(imgs.names) if n == paths[int(p)].name and imgs.source[i] == source)
            truth[str(original)] = photo
    pairs, info, groups, matches = ring_test(imgs, population, params)
    confirmed = [(a, b) for (a, b), m in matches.items() if E.same_picture(m, params)]
    own = {}  # per ring photo: (pairs of its accounts, candidates, confirmed, lowest margin)
    for photo in ring_sources:
        keys = sorted(k for k, p in truth.items() if p == photo)
        near = {(a, b) for a, b, _ in pairs if a in keys and b in keys}
        matched = [matches[p] for p in near if p in matches]
        own[photo] = (len(keys) * (len(keys) - 1) // 2, len(near), sum(E.same_picture(m, params) for m in matched),
                      min((E.picture_margin(m, params) for m in matched), default=0.0))
    clusters = ring_clusters(confirmed, network)
    found: dict[int, int] = defaultdict(int)
    distinct_joined = 0
    for members in clusters:
        keys = [m.split(":", 1)[1] for m in members]
        photos = {truth.get(k) for k in keys}
        if len(photos) == 1 and None not in photos:
            found[photos.pop()] += len(keys)
        distinct_joined += sum(k not in truth for k in keys)
    print(f"\nphoto rings: {len(ring_sources)} photos x {per_photo} accounts among {len(population):,} images"
          f" (all sources pooled); candidate pairs {len(pairs):,}, confirmed {len(confirmed):,}")
    by_source: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for photo, source in ring_sources.items():
        by_source[source][0] += found.get(photo, 0)
        by_source[source][1] += per_photo
    for source, (hit, total) in sorted(by_source.items()):
        mine = [own[p] for p, s in ring_sources.items() if s == source]
        print(f"  recall {source:32} {hit:4d}/{total:4d} = {hit / total:.3f}; its pairs {sum(m[0] for m in mine)},"
              f" within pHash {sum(m[1] for m in mine)}, confirmed {sum(m[2] for m in mine)},"
              f" lowest margin {min(m[3] for m in mine):.3f}")
    hit, total = sum(v[0] for v in by_source.values()), sum(v[1] for v in by_source.values())
    print(f"  recall, all rings: {hit}/{total} = {hit / total:.3f}; distinct-face accounts in image-ring clusters:"
          f" {distinct_joined}; clusters mixing photos: {sum(1 for c in clusters if len({truth.get(m.split(':', 1)[1]) for m in c}) > 1)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faces", type=Path, default=default_faces_dir())
    ap.add_argument("--sources", nargs="*", help="folders under --faces (default: every real/* and fake/*)")
    ap.add_argument("--margin-bits", type=int, default=12, help="pHash radius of the margin check (default 12)")
    ap.add_argument("--ring-photos", type=int, default=4, help="photo-ring originals per source (default 4)")
    ap.add_argument("--per-photo", type=int, default=8, help="accounts per ring photo, the original included")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not args.faces.is_dir():
        sys.exit(f"no face sets at {args.faces}")
    sources = args.sources or sorted(f"{p.parent.name}/{p.name}" for p in args.faces.glob("*/*") if p.is_dir())
    params, network = ImageParams(), NetworkParams()
    print(f"image-ring test: pHash <= {params.near_dup_max_distance}, detail >= {params.min_image_detail}; new: inliers >="
          f" {params.near_dup_confirm_min_inliers}, inlier share >= {params.near_dup_confirm_inlier_share} and detail"
          f" correlation >= {params.near_dup_confirm_detail_corr} (margin: the smallest measure / its threshold);"
          f" old: dHash <= {OLD_DHASH}; rings: clusters of >= {network.min_cluster_size} accounts")
    started = time.perf_counter()
    imgs = Images()
    files: dict[str, list[Path]] = {}
    for source in sources:
        files[source] = sorted(p for p in (args.faces / source).glob("*") if p.is_file())
        for path in files[source]:
            imgs.add(path.name, source, path.read_bytes())
    rng = np.random.default_rng(args.seed)
    per_source(imgs, sources, params, network, args.margin_bits, rng)
    pooled = list(range(len(imgs.names)))
    imgs._points.clear()  # timed as the network stage pays it: keypoints of each candidate image, then each match
    cpu = time.process_time()
    pairs, info, groups, matches = ring_test(imgs, pooled, params)
    cpu = time.process_time() - cpu
    new = [(a, b) for (a, b), m in matches.items() if E.same_picture(m, params)]
    old = old_rule(pairs, info, groups, params)
    print(f"{'all sources pooled':34} {len(pooled):6d} {len(pairs):6d} {len(old):>10}/{len({k for p in old for k in p})}"
          f"/{len(ring_clusters(old, network))} {len(new):>12}/{len({k for p in new for k in p})}/{len(ring_clusters(new, network))}")
    print(f"local-feature match of the pooled run: {len(matches)} candidate pairs, {len(imgs._points)} images,"
          f" {cpu:.2f} s CPU (pHash pairs, keypoints and matches; decoding not included)")
    photo_rings(imgs, files, params, network, args.ring_photos, args.per_photo, rng)
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
