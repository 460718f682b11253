"""Typed, weighted account-to-account edges with the parameters that made them and their evidence.

Every builder is a pure function of the run's account traits (and images/embeddings), so it can be
tested without a database. Weights are on one scale: a pair whose summed weights reach
``strong_edge_min_weight`` (0.5) joins a component (pipeline/networks/clusters.py). Each weight is a
field of the run's policy, ``config.EdgeWeights`` (the numbers below are its defaults); every builder takes
it as ``weights`` (None: the defaults).

Strong alone:
- ``identical_avatar`` (1.0): the same image sha256; a star around the group's smallest account key.
- ``confirmed_near_duplicate`` (0.8): distinct images within ``near_dup_max_distance`` pHash bits, both
  detailed enough (``min_image_detail``) for hashes to mean something, that a local-feature match of
  their pixels shows to be the same picture (pipeline/images/matching.py: at least
  ``near_dup_confirm_min_inliers`` ORB keypoints, and ``near_dup_confirm_inlier_share`` of them, under one
  similarity transform, and aligned fine detail correlating at ``near_dup_confirm_detail_corr``). This is an image ring: crops, resizes and re-encodes
  of a few photos. Not dHash, not an embedding: on aligned portraits those agree for different people.
- ``creation_window`` (0.5 per shared trait): created within the window AND sharing a trait, in a
  burst of that trait against the whole population (pipeline/networks/bursts.py).
Corroborating (0.25-0.35; two of them on one pair, or one with a strong edge, make it strong):
- ``near_duplicate_avatar``: distinct images within ``near_dup_max_distance`` pHash bits. pHash alone
  collides on low-detail pictures (cartoons, silhouettes, logos on flat colour), so it must agree
  with a second trace.
- ``similar_embedding``: two likely-synthetic avatars whose CLIP embeddings are close. Faces from
  one generator are alike, so this alone would join unrelated operations.
- ``identical_bio`` / ``identical_link`` (0.3 each).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.config import EdgeWeights, ImageParams, NetworkParams
from pipeline.images.matching import PictureMatch
from pipeline.networks.bursts import Population, burst_test, date_windows, is_date_only
from pipeline.networks.edge_types import (CONFIRMED_NEAR_DUPLICATE, CREATION_WINDOW, IDENTICAL_AVATAR, IDENTICAL_BIO,
                                         IDENTICAL_LINK, NEAR_DUPLICATE_AVATAR, SIMILAR_EMBEDDING)

if TYPE_CHECKING:
    from pipeline.networks.traits import TraitColumns

MIN_BIO_CHARS = 8


def _weights(weights: EdgeWeights | None) -> EdgeWeights:
    return EdgeWeights() if weights is None else weights


def corroborating_weight(closeness: float, weights: EdgeWeights | None = None) -> float:
    """A corroborating edge's weight: base + span x closeness (clipped to [0, 1])."""
    w = _weights(weights)
    return round(w.corroborating_base + w.corroborating_span * min(1.0, max(0.0, closeness)), 4)


@dataclass(frozen=True)
class Edge:
    edge_type: str
    a_key: str
    b_key: str
    weight: float
    params: dict[str, Any]
    evidence: dict[str, Any]

    @classmethod
    def between(cls, edge_type: str, x: str, y: str, weight: float, params: dict, evidence: dict) -> Edge:
        a, b = sorted((x, y))
        return cls(edge_type, a, b, weight, params, evidence)


@dataclass(frozen=True)
class AccountTraits:
    account_key: str
    created_at: datetime | None
    avatar_sha256: str | None
    avatar_label: bool | None
    handle_template: str | None
    handle_digits: int
    bio: str | None
    url: str | None = None
    followers: int | None = None
    following: int | None = None
    posts: int | None = None
    language: str | None = None
    location: str | None = None


@dataclass(frozen=True)
class ImageInfo:
    """What the image-ring test needs of one stored image (null for images stored before migration 010)."""

    dhash: int | None
    detail: float | None


def image_groups(accounts: Iterable[AccountTraits], params: ImageParams) -> dict[str, list[str]]:
    """sha256 -> sorted account keys; groups above ``identical_avatar_max_group`` are platform defaults."""
    return avatar_groups(((a.avatar_sha256, a.account_key) for a in accounts if a.avatar_sha256), params)


def avatar_groups(rows: Iterable[tuple[str, str]], params: ImageParams) -> dict[str, list[str]]:
    """``image_groups`` of (sha256, account key) rows (the network stage reads them from the database)."""
    groups: dict[str, list[str]] = defaultdict(list)
    for sha, key in rows:
        groups[sha].append(key)
    return {sha: sorted(keys) for sha, keys in groups.items() if len(keys) <= params.identical_avatar_max_group}


def identical_avatar_edges(accounts: Iterable[AccountTraits], params: ImageParams,
                           weights: EdgeWeights | None = None) -> list[Edge]:
    return identical_avatar_edges_of(image_groups(accounts, params), params, weights)


def identical_avatar_edges_of(groups: dict[str, list[str]], params: ImageParams,
                              weights: EdgeWeights | None = None) -> list[Edge]:
    """A star around each group's smallest key, from ``image_groups`` (or just its groups of two or more)."""
    weight = _weights(weights).identical_avatar
    edges = []
    used = {"identical_avatar_max_group": params.identical_avatar_max_group}
    for sha, members in sorted(groups.items()):
        if len(members) < 2:
            continue
        hub, *rest = members
        edges += [Edge.between(IDENTICAL_AVATAR, hub, m, weight, used, {"sha256": sha, "group_size": len(members)})
                  for m in rest]
    return edges


def near_duplicate_edges(groups: dict[str, list[str]], pairs: Iterable[tuple[str, str, int]],
                         params: ImageParams, weights: EdgeWeights | None = None) -> list[Edge]:
    """One edge per near-duplicate image pair, between the two images' hub accounts (identical-avatar
    edges already join each image's other accounts to its hub)."""
    used = {"near_dup_max_distance": params.near_dup_max_distance}
    edges: dict[tuple[str, str], Edge] = {}
    for sha_a, sha_b, distance in pairs:
        if sha_a not in groups or sha_b not in groups:
            continue
        a, b = groups[sha_a][0], groups[sha_b][0]
        weight = corroborating_weight(1 - distance / (params.near_dup_max_distance + 1), weights)
        edge = Edge.between(NEAR_DUPLICATE_AVATAR, a, b, weight, used,
                            {"sha256": sorted([sha_a, sha_b]), "hamming": distance})
        key = (edge.a_key, edge.b_key)
        if key not in edges or edges[key].weight < weight:
            edges[key] = edge
    return list(edges.values())


def confirmed_near_duplicate_edges(groups: dict[str, list[str]], pairs: Iterable[tuple[str, str, int]],
                                   images: dict[str, ImageInfo], matches: dict[tuple[str, str], PictureMatch],
                                   params: ImageParams, weights: EdgeWeights | None = None) -> list[Edge]:
    """One strong edge per near-duplicate pair whose pixels match as one picture, between the images' hub
    accounts. ``matches`` maps sorted sha pairs to their local-feature match (``ring_candidates`` names the
    pairs worth matching; a pair without one, e.g. its files are gone, is not confirmed). Images below
    ``min_image_detail`` (or of unknown detail) never confirm: on flat pictures every measure collides."""
    used = {"near_dup_max_distance": params.near_dup_max_distance, "min_image_detail": params.min_image_detail,
            "near_dup_confirm_min_inliers": params.near_dup_confirm_min_inliers,
            "near_dup_confirm_inlier_share": params.near_dup_confirm_inlier_share,
            "near_dup_confirm_detail_corr": params.near_dup_confirm_detail_corr}
    weight = _weights(weights).confirmed_near_duplicate
    edges: dict[tuple[str, str], Edge] = {}
    for sha_a, sha_b, distance in ring_candidates(groups, pairs, images, params):
        match = matches.get((min(sha_a, sha_b), max(sha_a, sha_b)))
        if match is None or not same_picture(match, params):
            continue
        a_info, b_info = images[sha_a], images[sha_b]
        evidence: dict[str, Any] = {"sha256": sorted([sha_a, sha_b]), "hamming": distance,
                                    "detail": [a_info.detail, b_info.detail], "confirmed_by": ["local_features"],
                                    **match.to_evidence()}
        if a_info.dhash is not None and b_info.dhash is not None:  # shown, no longer a confirmation
            evidence["dhash_hamming"] = (a_info.dhash ^ b_info.dhash).bit_count()
        a, b = groups[sha_a][0], groups[sha_b][0]
        if a == b:
            continue
        edge = Edge.between(CONFIRMED_NEAR_DUPLICATE, a, b, weight, used, evidence)
        edges.setdefault((edge.a_key, edge.b_key), edge)
    return list(edges.values())


def ring_candidates(groups: dict[str, list[str]], pairs: Iterable[tuple[str, str, int]], images: dict[str, ImageInfo],
                    params: ImageParams) -> list[tuple[str, str, int]]:
    """The near-duplicate pairs a local-feature match may confirm: both images in the run's groups, of known
    detail above ``min_image_detail``. Only these are decoded and matched (pipeline/networks/build.py)."""
    out = []
    for sha_a, sha_b, distance in pairs:
        if sha_a not in groups or sha_b not in groups or groups[sha_a][0] == groups[sha_b][0]:
            continue
        a_info, b_info = images.get(sha_a), images.get(sha_b)
        if a_info is None or b_info is None or a_info.detail is None or b_info.detail is None:
            continue
        if min(a_info.detail, b_info.detail) >= params.min_image_detail:
            out.append((sha_a, sha_b, distance))
    return out


def picture_margin(match: PictureMatch, params: ImageParams) -> float:
    """How far a pair is from being one picture, each measure as a share of its threshold: the smallest of
    them. At least 1: confirmed (every measure passes); a distinct pair's value says how close it came."""
    return min(match.inliers / params.near_dup_confirm_min_inliers,
               match.inlier_share / params.near_dup_confirm_inlier_share,
               match.detail_correlation / params.near_dup_confirm_detail_corr)


def same_picture(match: PictureMatch, params: ImageParams) -> bool:
    """One picture, not one framing: a share of the keypoints under one transform AND their fine detail agrees."""
    return (match.inliers >= params.near_dup_confirm_min_inliers
            and match.inlier_share >= params.near_dup_confirm_inlier_share
            and match.detail_correlation >= params.near_dup_confirm_detail_corr)


def similar_embedding_pairs(vectors: np.ndarray, min_cosine: float, max_neighbours: int,
                            block: int = 1024) -> list[tuple[int, int, float]]:
    """Pairs (i < j) among the rows of ``vectors`` with cosine >= min_cosine, each row keeping its
    ``max_neighbours`` nearest; exact, computed block by block so memory stays at block x n."""
    n = len(vectors)
    if n < 2:
        return []
    unit = vectors.astype(np.float32)
    unit /= np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)
    found: dict[tuple[int, int], float] = {}
    k = min(max_neighbours, n - 1)
    for lo in range(0, n, block):
        sims = unit[lo:lo + block] @ unit.T
        rows = np.arange(lo, min(lo + block, n))
        sims[rows - lo, rows] = -np.inf  # never a neighbour of itself
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < n - 1 else np.argsort(-sims, axis=1)[:, :k]
        for r, cols in zip(rows, top):
            for c in cols:
                s = float(sims[r - lo, c])
                if s >= min_cosine:
                    found[(min(r, int(c)), max(r, int(c)))] = s
    return [(i, j, s) for (i, j), s in sorted(found.items())]


def similar_embedding_edges(groups: dict[str, list[str]], shas: list[str], vectors: np.ndarray,
                            params: ImageParams, backbone_id: str,
                            weights: EdgeWeights | None = None) -> list[Edge]:
    used = {"clip_min_cosine": params.clip_min_cosine, "clip_max_neighbours": params.clip_max_neighbours,
            "backbone_id": backbone_id}
    edges = []
    for i, j, cosine in similar_embedding_pairs(vectors, params.clip_min_cosine, params.clip_max_neighbours):
        if shas[i] not in groups or shas[j] not in groups:
            continue
        a, b = groups[shas[i]][0], groups[shas[j]][0]
        if a != b:
            closeness = (cosine - params.clip_min_cosine) / max(1e-9, 1 - params.clip_min_cosine)
            weight = corroborating_weight(closeness, weights)
            edges.append(Edge.between(SIMILAR_EMBEDDING, a, b, weight, used,
                                      {"sha256": sorted([shas[i], shas[j]]), "cosine": round(cosine, 4)}))
    return edges


def normalised_bio(bio: str | None) -> str | None:
    text = " ".join((bio or "").lower().split())
    return text if len(text) >= MIN_BIO_CHARS else None  # very short bios ('hi') are not a shared trait


def normalised_link(url: str | None) -> str | None:
    """'HTTPS://www.Example.com/Shop/#x' -> 'example.com/shop'."""
    text = (url or "").strip().lower()
    text = re.sub(r"^[a-z][a-z0-9+.-]*://", "", text)
    text = re.sub(r"^www\.", "", text).split("#", 1)[0].rstrip("/")
    return text or None


def count_bin(n: int, bin_width: float, offset: float) -> tuple[int, list[int]]:
    """The log10(1 + n) bin of a count, on a grid shifted by ``offset`` bins, with its [low, high] counts."""
    k = math.floor(math.log10(1 + n) / bin_width + offset)
    lo = math.ceil(10 ** ((k - offset) * bin_width) - 1 - 1e-9)
    hi = math.ceil(10 ** ((k + 1 - offset) * bin_width) - 1 - 1e-9) - 1
    return k, [max(lo, 0), max(hi, lo)]


COUNTS = ("followers", "following", "posts")


def count_profile(acc: AccountTraits, bin_width: float, offset: float) -> tuple[str, dict[str, list[int]]] | None:
    """The account's followers, following and posts as log10(1 + n) bins of ``bin_width``, on a grid
    shifted by ``offset`` bins (two grids, so a batch straddling one grid's edge shares the other's
    bins); the value names the grid, the bins are [low, high] counts for the evidence."""
    counts = (acc.followers, acc.following, acc.posts)
    if any(c is None or c < 0 for c in counts):
        return None
    cells, bins = [], {}
    for name, n in zip(COUNTS, counts):
        k, bins[name] = count_bin(n, bin_width, offset)
        cells.append(f"{name}{k}")
    return f"grid{offset:g}:" + "|".join(cells), bins


def refinements(acc: AccountTraits, params: NetworkParams) -> list[tuple[str, str, dict[str, Any]]]:
    """Second attributes that narrow a common trait: each count in a coarse log bin
    (``burst_refine_bin`` decades, two grids) and an empty bio. A batch made by one operator shares
    them; organic accounts that happen to carry a popular template inside the batch's window mostly do
    not, so the narrowed trait can be a clean burst where the trait alone is not."""
    out: list[tuple[str, str, dict[str, Any]]] = []
    for name in COUNTS:
        n = getattr(acc, name)
        if n is None or n < 0:
            continue
        for offset in (0.0, 0.5):
            k, bounds = count_bin(n, params.burst_refine_bin, offset)
            out.append((name, f"grid{offset:g}:{k}", {"bins": {name: bounds}}))
    if not (acc.bio or "").strip():
        out.append(("no_bio", "", {}))
    return out


def signup_profile(acc: AccountTraits, bin_width: float, offset: float) -> tuple[str, dict[str, Any]] | None:
    """What a sign-up batch's accounts share when nothing is written on them: followers, following and
    posts in coarse log bins (``burst_refine_bin`` decades, grid shifted by
    ``offset``; posts '-' where the source gives none, as X/Twitter IO users files), an avatar and a link
    or not, and the language. A takedown's accounts made in a day are mostly zero-follower, bio-less
    accounts in one language; no text trait or narrow count profile holds them. Needs both follower
    and following counts, and stands in for ``count_profile`` only where that cannot be built (a count
    missing): with all three counts the narrow cells hold fewer of the platform's blank accounts (at 1M
    accounts, a sign-up profile on every account chained 2 to 4 organic accounts into each planted batch)."""
    if any(c is None or c < 0 for c in (acc.followers, acc.following)):
        return None
    bins: dict[str, list[int]] = {}
    cells = []
    for name in COUNTS:
        n = getattr(acc, name)
        if n is None or n < 0:
            cells.append(f"{name}-")
            continue
        k, bins[name] = count_bin(n, bin_width, offset)
        cells.append(f"{name}{k}")
    cells += [f"avatar{int(acc.avatar_sha256 is not None)}", f"link{int(normalised_link(acc.url) is not None)}",
              f"lang:{normalised_attribute(acc.language) or '-'}"]
    return f"grid{offset:g}:" + "|".join(cells), {"bins": bins}


def normalised_attribute(value: str | None) -> str | None:
    text = " ".join((value or "").lower().split())
    return text if len(text) >= 2 else None


def account_trait_values(acc: AccountTraits, params: NetworkParams) -> list[tuple[str, str, dict[str, Any]]]:
    """(trait, value, extra evidence) of every trait a creation burst can share."""
    out: list[tuple[str, str, dict[str, Any]]] = []
    if acc.handle_digits >= params.min_template_digits and acc.handle_template:
        out.append(("handle_template", acc.handle_template, {}))
    if (bio := normalised_bio(acc.bio)) is not None:
        out.append(("identical_bio", bio, {}))
    if acc.avatar_label:
        out.append(("synthetic_avatar", "label", {}))
    for offset in (0.0, 0.5):  # the coarse sign-up profile stands in where a count is missing (IO users files)
        if (fine := count_profile(acc, params.count_profile_bin, offset)) is not None:
            out.append(("count_profile", fine[0], {"bins": fine[1]}))
        elif (coarse := signup_profile(acc, params.burst_refine_bin, offset)) is not None:
            out.append(("signup_profile", *coarse))
    for attr in ("language", "location"):
        if (value := normalised_attribute(getattr(acc, attr))) is not None:
            out.append((attr, value, {}))
    # a handle template or a synthetic label narrowed by a second attribute (``refinements``)
    narrowed = [(t, v) for t, v, _ in out if t in REFINED_TRAITS]
    if narrowed:
        for trait, value in narrowed:
            for r_trait, r_value, r_extra in refinements(acc, params):
                out.append((f"{trait}+{r_trait}", f"{value}|{r_value}", r_extra))
    return out


REFINED_TRAITS = ("handle_template", "synthetic_avatar")  # minority traits, so the refined values stay few
PROFILE_TRAITS = ("count_profile", "signup_profile")  # need count_profile_min_count accounts in the window


def creation_weight(bursts: dict[str, Any], weights: EdgeWeights | None = None) -> float:
    """0.5 per shared trait, 0.25 per narrowed one (``template+followers``): a narrowed trait admits
    up to ``burst_max_chance_share`` of chance members, so one alone only corroborates, and a batch
    pair that shares two (a follower bin and an empty bio) is strong."""
    w = _weights(weights)
    return round(sum(w.narrowed_trait if "+" in t else w.creation_trait for t in bursts), 4)


def distinct_windows(seconds: list[float]) -> int:
    """The tests a trait value's accounts make: one per timed account (each window is centred on it), one
    per date for date-only accounts (a date's accounts share one window, the same test)."""
    times = np.asarray(seconds, dtype=np.float64)
    dated = is_date_only(times)
    return int((~dated).sum()) + len(np.unique(times[dated]))


def creation_window_edges(accounts: Iterable[AccountTraits] | TraitColumns, params: NetworkParams,
                          weights: EdgeWeights | None = None, baseline: np.ndarray | None = None) -> list[Edge]:
    """Chain accounts sharing a trait whose creation times lie within the window of each other, inside
    a burst of that trait measured against the whole population (pipeline/networks/bursts.py). The
    traits: a handle template, a bio, a synthetic avatar, a count profile (followers, following and
    posts in narrow log bins: batch-made accounts without any shared text), a language or location,
    and a template or synthetic label narrowed by a coarse count bin or an empty bio, and a sign-up
    profile (``signup_profile``: coarse counts, avatar, link, language). A date-only creation
    time (midnight UTC) is tested in its date, not in a window over three dates. ``baseline``: creation
    times (epoch seconds) of another run's accounts, added to the population the bursts are measured
    against (``--baseline-run``: a takedown file audited alone has no organic population). A burst makes
    edges only where the population explains at most ``burst_max_chance_share`` of the window's
    accounts (expected / observed): a common template inside a batch's window also holds organic
    accounts, indistinguishable by the template, and only the narrowed trait separates the batch.
    Each edge names its traits with the observed and expected counts, the chance share and the p-value.

    The accounts are columns (pipeline/networks/traits.py) and each kind of trait is one pass (its
    windows are one Bonferroni family, so a pass per kind tests exactly what one pass over all did)."""
    from pipeline.networks.traits import TraitColumns, kind_rows, value_groups

    cols = accounts if isinstance(accounts, TraitColumns) else TraitColumns.of(accounts)
    window = params.creation_window_hours * 3600
    used = {"creation_window_hours": params.creation_window_hours, "min_template_digits": params.min_template_digits,
            "burst_factor": params.burst_factor, "burst_p_value": params.burst_p_value,
            "burst_smoothing_days": params.burst_smoothing_days, "count_profile_bin": params.count_profile_bin,
            "count_profile_min_count": params.count_profile_min_count,
            "burst_max_chance_share": params.burst_max_chance_share, "burst_refine_bin": params.burst_refine_bin,
            "min_cluster_size": params.min_cluster_size}
    own = cols.seconds[cols.dated]
    population = Population.of(own if baseline is None else np.concatenate([own, np.asarray(baseline, np.float64)]))
    del own
    edges: dict[tuple[str, str], Edge] = {}
    for rows in kind_rows(cols, params):  # sorted by kind, values sorted within it: the order of old
        trait = rows.kind
        min_count = max(params.min_cluster_size, params.count_profile_min_count if trait in PROFILE_TRAITS else 0)
        tested, groups = value_groups(cols, rows, params.min_cluster_size)
        for group in groups:
            members = group.accounts
            times = cols.seconds[members]
            windows = date_windows(times, window)
            test = burst_test(times, population, windows, params.burst_smoothing_days * 86400, min_count,
                              params.burst_factor, params.burst_p_value, tested)
            chance = test.chance_share
            clean = test.bursting & (chance <= params.burst_max_chance_share)
            for k in np.flatnonzero(clean[:-1] & clean[1:]):
                prev, cur = int(members[k]), int(members[k + 1])
                delta = int(cols.us[cur] - cols.us[prev]) / 10**6
                if delta > min(windows[k], windows[k + 1]):  # two dates apart, for date-only accounts
                    continue
                key = tuple(sorted((cols.key(prev), cols.key(cur))))
                weaker = k if test.p_value[k] >= test.p_value[k + 1] else k + 1  # the edge holds at both ends
                burst = {"value": group.value if trait != "synthetic_avatar" else None, **group.extra,
                         "observed": int(test.observed[weaker]), "expected": round(float(test.expected[weaker]), 4),
                         "chance_share": round(float(chance[weaker]), 4),
                         "p_value": float(f"{test.p_value[weaker]:.3g}")}
                old = edges.get(key)
                bursts = dict(old.evidence["bursts"]) if old else {}
                if trait in bursts and bursts[trait]["p_value"] <= burst["p_value"]:
                    continue  # the other count-profile grid already gave this pair a sharper burst
                bursts[trait] = burst
                evidence = {"traits": sorted(bursts), "bursts": dict(sorted(bursts.items())),
                            "created_at": [cols.created(prev).isoformat(), cols.created(cur).isoformat()],
                            "delta_hours": round(delta / 3600, 3)}
                edges[key] = Edge.between(CREATION_WINDOW, *key, creation_weight(bursts, weights), used, evidence)
    return list(edges.values())


BATCH_TRAITS = ("signup_profile", "count_profile", "handle_template", "identical_bio")  # what groups a batch alone


def creation_batch_edges(accounts: Iterable[AccountTraits] | TraitColumns, params: NetworkParams,
                         weights: EdgeWeights | None = None) -> list[Edge]:
    """For a run with no organic baseline (pipeline/networks/baseline.py: an IO release audited alone):
    chain accounts sharing a sign-up profile, count profile, handle template or bio that were created
    within the window of each other (a date-only account: on its date), where the window holds at least
    ``count_profile_min_count`` of them. Nothing is tested against a population (there is none): the
    edges say so (``baseline: none``), and they group the release into its creation batches. One pass
    per kind of trait over the columns (pipeline/networks/traits.py)."""
    from pipeline.networks.traits import TraitColumns, kind_rows, value_groups

    cols = accounts if isinstance(accounts, TraitColumns) else TraitColumns.of(accounts)
    window = params.creation_window_hours * 3600
    used = {"creation_window_hours": params.creation_window_hours, "count_profile_min_count": params.count_profile_min_count,
            "burst_refine_bin": params.burst_refine_bin, "count_profile_bin": params.count_profile_bin,
            "min_template_digits": params.min_template_digits, "baseline": "none"}
    min_count = max(params.min_cluster_size, params.count_profile_min_count)
    edges: dict[tuple[str, str], Edge] = {}
    for rows in kind_rows(cols, params, BATCH_TRAITS):
        trait = rows.kind
        for group in value_groups(cols, rows, min_count)[1]:
            members = group.accounts
            times = cols.seconds[members]
            windows = date_windows(times, window)
            observed = (np.searchsorted(times, times + windows / 2, side="right")
                        - np.searchsorted(times, times - windows / 2))
            batch = observed >= min_count
            for k in np.flatnonzero(batch[:-1] & batch[1:]):
                prev, cur = int(members[k]), int(members[k + 1])
                delta = int(cols.us[cur] - cols.us[prev]) / 10**6
                if delta > min(windows[k], windows[k + 1]):
                    continue
                key = tuple(sorted((cols.key(prev), cols.key(cur))))
                old = edges.get(key)
                bursts = dict(old.evidence["bursts"]) if old else {}
                bursts[trait] = {"value": group.value, **group.extra, "observed": int(min(observed[k], observed[k + 1])),
                                 "tested": False}
                evidence = {"traits": sorted(bursts), "bursts": dict(sorted(bursts.items())), "baseline": "none",
                            "created_at": [cols.created(prev).isoformat(), cols.created(cur).isoformat()],
                            "delta_hours": round(delta / 3600, 3)}
                edges[key] = Edge.between(CREATION_WINDOW, *key, creation_weight(bursts, weights), used, evidence)
    return list(edges.values())


def identical_text_edges(accounts: Iterable[AccountTraits] | TraitColumns, params: NetworkParams,
                         weights: EdgeWeights | None = None) -> list[Edge]:
    """identical_bio and identical_link: every pair of a group of 2..identical_text_max_group accounts
    (a clique, not a star, so that a weak text edge can corroborate another edge on the same pair).
    Groups are counted on the columns' codes (pipeline/networks/traits.py); only those of 2 and more
    are looked at."""
    from pipeline.networks.traits import TraitColumns

    cols = accounts if isinstance(accounts, TraitColumns) else TraitColumns.of(accounts)
    used = {"identical_text_max_group": params.identical_text_max_group, "min_bio_chars": MIN_BIO_CHARS}
    weight = _weights(weights).identical_text
    edges = []
    for edge_type, codes, values in ((IDENTICAL_BIO, cols.bio, cols.bios), (IDENTICAL_LINK, cols.link, cols.links)):
        sizes = np.bincount(codes[codes >= 0], minlength=len(values))
        kept = np.flatnonzero((sizes >= 2) & (sizes <= params.identical_text_max_group))
        if not len(kept):
            continue
        held = np.flatnonzero(np.isin(codes, kept))  # row order is key order
        members: dict[int, list[int]] = defaultdict(list)
        for i, c in zip(held.tolist(), codes[held].tolist()):
            members[c].append(i)
        for code in sorted(members, key=values.__getitem__):
            keys = [cols.key(i) for i in members[code]]
            evidence = {"value": values[code], "group_size": len(keys)}
            edges += [Edge(edge_type, a, b, weight, used, evidence) for i, a in enumerate(keys) for b in keys[i + 1:]]
    return edges
