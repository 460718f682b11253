"""Typed, weighted account-to-account edges with the parameters that made them and their evidence.

Every builder is a pure function of the run's account traits (and images/embeddings), so it can be
tested without a database. Weights are on one scale: a pair whose summed weights reach
``strong_edge_min_weight`` (0.5) joins a component (pipeline/networks/clusters.py).

Strong alone:
- ``identical_avatar`` (1.0): the same image sha256; a star around the group's smallest account key.
- ``creation_window`` (0.5 per shared trait): created within the window AND sharing a trait, in a
  burst of that trait (at least ``burst_factor`` times its usual rate, and improbable at that rate:
  Poisson tail below ``burst_p_value`` / group size).
Corroborating (0.25-0.35; two of them on one pair, or one with a strong edge, make it strong):
- ``near_duplicate_avatar``: distinct images within ``near_dup_max_distance`` pHash bits. pHash alone
  collides on low-detail pictures (cartoons, silhouettes, logos on flat colour), so it must agree
  with a second trace, typically a close CLIP embedding of the same face.
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
from typing import Any

import numpy as np

from pipeline.config import NetworkParams

TEXT_EDGE_WEIGHT = 0.3
WEAK_BASE, WEAK_SPAN = 0.25, 0.1  # corroborating edges weigh 0.25 + 0.1 x closeness in [0, 1]
MIN_BIO_CHARS = 8


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


def image_groups(accounts: Iterable[AccountTraits], params: NetworkParams) -> dict[str, list[str]]:
    """sha256 -> sorted account keys; groups above ``identical_avatar_max_group`` are platform defaults."""
    groups: dict[str, list[str]] = defaultdict(list)
    for acc in accounts:
        if acc.avatar_sha256:
            groups[acc.avatar_sha256].append(acc.account_key)
    return {sha: sorted(keys) for sha, keys in groups.items() if len(keys) <= params.identical_avatar_max_group}


def identical_avatar_edges(accounts: Iterable[AccountTraits], params: NetworkParams) -> list[Edge]:
    edges = []
    used = {"identical_avatar_max_group": params.identical_avatar_max_group}
    for sha, members in sorted(image_groups(accounts, params).items()):
        if len(members) < 2:
            continue
        hub, *rest = members
        edges += [Edge.between("identical_avatar", hub, m, 1.0, used, {"sha256": sha, "group_size": len(members)})
                  for m in rest]
    return edges


def near_duplicate_edges(groups: dict[str, list[str]], pairs: Iterable[tuple[str, str, int]],
                         params: NetworkParams) -> list[Edge]:
    """One edge per near-duplicate image pair, between the two images' hub accounts (identical-avatar
    edges already join each image's other accounts to its hub)."""
    used = {"near_dup_max_distance": params.near_dup_max_distance}
    edges: dict[tuple[str, str], Edge] = {}
    for sha_a, sha_b, distance in pairs:
        if sha_a not in groups or sha_b not in groups:
            continue
        a, b = groups[sha_a][0], groups[sha_b][0]
        weight = round(WEAK_BASE + WEAK_SPAN * (1 - distance / (params.near_dup_max_distance + 1)), 4)
        edge = Edge.between("near_duplicate_avatar", a, b, weight, used,
                            {"sha256": sorted([sha_a, sha_b]), "hamming": distance})
        key = (edge.a_key, edge.b_key)
        if key not in edges or edges[key].weight < weight:
            edges[key] = edge
    return list(edges.values())


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
                            params: NetworkParams, backbone_id: str) -> list[Edge]:
    used = {"clip_min_cosine": params.clip_min_cosine, "clip_max_neighbours": params.clip_max_neighbours,
            "backbone_id": backbone_id}
    edges = []
    for i, j, cosine in similar_embedding_pairs(vectors, params.clip_min_cosine, params.clip_max_neighbours):
        if shas[i] not in groups or shas[j] not in groups:
            continue
        a, b = groups[shas[i]][0], groups[shas[j]][0]
        if a != b:
            closeness = (cosine - params.clip_min_cosine) / max(1e-9, 1 - params.clip_min_cosine)
            weight = round(WEAK_BASE + WEAK_SPAN * min(1.0, max(0.0, closeness)), 4)
            edges.append(Edge.between("similar_embedding", a, b, weight, used,
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


def poisson_count_above(rate: float, alpha: float) -> int:
    """The smallest k with P(X >= k) <= alpha for X ~ Poisson(rate) (pure Python: scipy.stats takes 5 s to import)."""
    cdf, k, limit = 0.0, 0, int(rate + 50 * math.sqrt(rate) + 100)
    while 1.0 - cdf > alpha and k < limit:
        cdf += math.exp(-rate + k * math.log(rate) - math.lgamma(k + 1)) if rate > 0 else float(k == 0)
        k += 1
    return k


def burst_members(times: np.ndarray, window: float, min_count: int, factor: float, p_value: float = 1.0) -> np.ndarray:
    """Mask of sorted ``times`` (seconds) lying in a burst: the window centred on each holds at least ``min_count``,
    at least ``factor`` times the group's average count per window, and a count that a Poisson process at
    that average rate reaches with probability below ``p_value`` / n (Bonferroni over the n windows)."""
    n = len(times)
    span = max(float(times[-1] - times[0]), window) if n else window
    rate = n * window / span
    need = max(min_count, int(np.ceil(factor * rate)))
    if p_value < 1.0 and n:
        need = max(need, poisson_count_above(rate, p_value / n))
    # the window is centred on each account, so accounts at the edge of a burst are not swept in
    count = np.searchsorted(times, times + window / 2, side="right") - np.searchsorted(times, times - window / 2)
    return count >= need


def creation_window_edges(accounts: Iterable[AccountTraits], params: NetworkParams) -> list[Edge]:
    """Chain accounts sharing a trait whose creation times lie within the window of each other, inside
    a burst of that trait (``burst_members``): a template or a synthetic face is common on a large
    platform, many of them in one window is not."""
    window = params.creation_window_hours * 3600
    used = {"creation_window_hours": params.creation_window_hours, "min_template_digits": params.min_template_digits,
            "burst_factor": params.burst_factor, "burst_p_value": params.burst_p_value,
            "min_cluster_size": params.min_cluster_size}
    by_trait: dict[tuple[str, str], list[AccountTraits]] = defaultdict(list)
    for acc in accounts:
        if acc.created_at is None:
            continue
        if acc.handle_digits >= params.min_template_digits and acc.handle_template:
            by_trait[("handle_template", acc.handle_template)].append(acc)
        if (bio := normalised_bio(acc.bio)) is not None:
            by_trait[("identical_bio", bio)].append(acc)
        if acc.avatar_label:
            by_trait[("synthetic_avatar", "label")].append(acc)
    edges: dict[tuple[str, str], Edge] = {}
    for (trait, value), members in sorted(by_trait.items()):
        if len(members) < params.min_cluster_size:
            continue
        members.sort(key=lambda a: (a.created_at, a.account_key))
        times = np.array([a.created_at.timestamp() for a in members])
        bursting = burst_members(times, window, params.min_cluster_size, params.burst_factor, params.burst_p_value)
        for k in np.flatnonzero(bursting[:-1] & bursting[1:]):
            prev, cur = members[k], members[k + 1]
            delta = (cur.created_at - prev.created_at).total_seconds()
            if delta > window:
                continue
            key = tuple(sorted((prev.account_key, cur.account_key)))
            evidence = {
                "traits": [trait],
                "value": value if trait != "synthetic_avatar" else None,
                "created_at": [prev.created_at.isoformat(), cur.created_at.isoformat()],
                "delta_hours": round(delta / 3600, 3),
            }
            if key in edges:  # several shared traits: one edge, stronger, naming all of them
                old = edges[key]
                evidence = {**old.evidence, "traits": sorted(set(old.evidence["traits"]) | {trait})}
            edges[key] = Edge.between("creation_window", *key, 0.5 * len(evidence["traits"]), used, evidence)
    return list(edges.values())


def identical_text_edges(accounts: Iterable[AccountTraits], params: NetworkParams) -> list[Edge]:
    """identical_bio and identical_link: every pair of a group of 2..identical_text_max_group accounts
    (a clique, not a star, so that a weak text edge can corroborate another edge on the same pair)."""
    used = {"identical_text_max_group": params.identical_text_max_group, "min_bio_chars": MIN_BIO_CHARS}
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for acc in accounts:
        if (bio := normalised_bio(acc.bio)) is not None:
            groups[("identical_bio", bio)].append(acc.account_key)
        if (link := normalised_link(acc.url)) is not None:
            groups[("identical_link", link)].append(acc.account_key)
    edges = []
    for (edge_type, value), members in sorted(groups.items()):
        if not 2 <= len(members) <= params.identical_text_max_group:
            continue
        members.sort()
        evidence = {"value": value, "group_size": len(members)}
        edges += [Edge(edge_type, a, b, TEXT_EDGE_WEIGHT, used, evidence)
                  for i, a in enumerate(members) for b in members[i + 1:]]
    return edges
