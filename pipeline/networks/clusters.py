"""Clusters: connected components over strong pairs, Leiden inside large components, and identity
across runs by member overlap.

- A pair of accounts is *strong* when its edge weights sum to at least ``strong_edge_min_weight``.
  The three image types (identical, near-duplicate, similar embedding) measure one trace, the
  picture, so only the largest of them counts; every other type adds. One identical avatar is
  enough; one identical bio is not; a near-duplicate avatar needs another trace such as a shared
  link, bio, creation window or co-activity.
- A component of two accounts is kept, below ``min_cluster_size``, when their co-activity edge is one that
  chance does not explain (``pair_candidates``, ``pair_chance_shares``; docs/networks.md, "Coordinated pairs").
- Components of at least ``leiden_min_size`` members are split with Leiden (RBConfiguration,
  ``leiden_resolution``, fixed seed), so one giant component does not hide several operations.
- A cluster keeps the id of the previous run's cluster it overlaps most (Jaccard >=
  ``cluster_match_jaccard``, one-to-one, greedy by overlap). Otherwise its id is a hash of its members.
"""

from __future__ import annotations

import bisect
import hashlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.config import NetworkParams
from pipeline.networks.edge_types import is_image


def cluster_id_of(members: Iterable[str]) -> str:
    """Derived from the member set: the same members give the same id on every rerun."""
    return "c" + hashlib.sha256("\n".join(sorted(members)).encode()).hexdigest()[:12]


def strong_pairs(edges: Iterable[tuple[str, str, str, float]], min_weight: float) -> dict[tuple[str, str], float]:
    """(a, b) -> pair weight (image types: their max; other types: summed), for pairs reaching ``min_weight``."""
    image: dict[tuple[str, str], float] = defaultdict(float)
    other: dict[tuple[str, str], float] = defaultdict(float)
    for edge_type, a, b, w in edges:
        if is_image(edge_type):
            image[(a, b)] = max(image[(a, b)], w)
        else:
            other[(a, b)] += w
    total = {pair: image.get(pair, 0.0) + other.get(pair, 0.0) for pair in image.keys() | other.keys()}
    return {pair: round(w, 6) for pair, w in total.items() if w >= min_weight}


def connected_components(pairs: dict[tuple[str, str], float]) -> list[list[str]]:
    """Components (sorted members, largest first) of the graph whose edges are ``pairs``."""
    if not pairs:
        return []
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components as cc

    nodes = sorted({k for pair in pairs for k in pair})
    index = {k: i for i, k in enumerate(nodes)}
    a = np.fromiter((index[p[0]] for p in pairs), dtype=np.int64, count=len(pairs))
    b = np.fromiter((index[p[1]] for p in pairs), dtype=np.int64, count=len(pairs))
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(len(nodes), len(nodes)))
    _, labels = cc(graph, directed=False)
    groups: dict[int, list[str]] = defaultdict(list)
    for node, label in zip(nodes, labels.tolist()):
        groups[label].append(node)
    return sorted((sorted(g) for g in groups.values()), key=lambda g: (-len(g), g[0]))


def leiden_split(members: list[str], pairs: dict[tuple[str, str], float], resolution: float) -> list[list[str]]:
    """Communities of one component, by Leiden on the summed pair weights (deterministic seed)."""
    import igraph as ig
    import leidenalg

    index = {k: i for i, k in enumerate(members)}
    inside = [(index[a], index[b], w) for (a, b), w in pairs.items() if a in index and b in index]
    graph = ig.Graph(n=len(members), edges=[(a, b) for a, b, _ in inside])
    partition = leidenalg.find_partition(graph, leidenalg.RBConfigurationVertexPartition,
                                         weights=[w for _, _, w in inside], resolution_parameter=resolution, seed=42)
    groups = [sorted(members[v] for v in community) for community in partition]
    return sorted(groups, key=lambda g: (-len(g), g[0]))


@dataclass
class Cluster:
    members: list[str]
    cluster_id: str = ""
    lineage: dict[str, Any] = field(default_factory=dict)  # the previous run's matched cluster, if any
    component_size: int = 0  # > len(members) when Leiden split the component
    kind: str = "cluster"  # "pair": two accounts kept below min_cluster_size (find_clusters' pair_candidates)
    chance: dict[str, Any] = field(default_factory=dict)  # a pair's chance estimate among the candidate pairs


def pair_chance_shares(expected: dict[tuple[str, str], float]) -> dict[tuple[str, str], tuple[int, float]]:
    """Benjamini-Hochberg over candidate pairs. ``expected``: per pair, the pairs of the run expected by chance
    at least as unlikely (evidence ``chance.expected_chance_pairs``). Returns per pair the candidates at least as
    unlikely (its rank, ties together) and the chance share: expected / rank, made monotone, at most 1."""
    order = sorted(expected.items(), key=lambda kv: (kv[1], kv[0]))
    values = [e for _, e in order]
    ranks = [bisect.bisect_right(values, e) for e in values]
    shares = [min(1.0, e / r) for e, r in zip(values, ranks)]
    for i in range(len(shares) - 2, -1, -1):
        shares[i] = min(shares[i], shares[i + 1])
    return {pair: (rank, round(share, 4)) for (pair, _), rank, share in zip(order, ranks, shares)}


def find_clusters(pairs: dict[tuple[str, str], float], params: NetworkParams,
                  pair_candidates: dict[tuple[str, str], float] | None = None,
                  max_chance_share: float = 0.0) -> list[Cluster]:
    """Components, split by Leiden when large; clusters below ``min_cluster_size`` are dropped, except a
    component of two accounts joined by a candidate pair (``pair_candidates``: sorted (a, b) with a
    qualifying co-activity edge -> the chance pairs expected at least as unlikely) whose chance share among
    the candidate components (``pair_chance_shares``) is at most ``max_chance_share``: a cluster of kind ``pair``."""
    candidates = pair_candidates or {}
    clusters, standalone = [], {}
    for component in connected_components(pairs):
        if len(component) == 2 and tuple(component) in candidates and len(component) < params.min_cluster_size:
            standalone[tuple(component)] = candidates[tuple(component)]
            continue
        parts = [component]
        if len(component) >= params.leiden_min_size:
            parts = leiden_split(component, pairs, params.leiden_resolution)
        clusters += [Cluster(sorted(p), component_size=len(component)) for p in parts if len(p) >= params.min_cluster_size]
    for pair, (rank, share) in pair_chance_shares(standalone).items():
        if max_chance_share > 0 and share <= max_chance_share:
            clusters.append(Cluster(list(pair), component_size=2, kind="pair", chance={
                "expected_chance_pairs": round(standalone[pair], 4), "pairs_as_unlikely": rank, "chance_share": share}))
    return clusters


def assign_ids(clusters: list[Cluster], previous: dict[str, list[str]], previous_run: str | None,
               params: NetworkParams) -> list[Cluster]:
    """Give each cluster the id of its best-overlapping previous cluster, else a hash of its members."""
    owner = {m: cid for cid, ms in previous.items() for m in ms}
    candidates = []
    for n, cluster in enumerate(clusters):
        overlap: dict[str, int] = defaultdict(int)
        for m in cluster.members:
            if m in owner:
                overlap[owner[m]] += 1
        for cid, inter in overlap.items():
            jaccard = inter / (len(cluster.members) + len(previous[cid]) - inter)
            if jaccard >= params.cluster_match_jaccard:
                candidates.append((-jaccard, cid, n))
    taken_prev, matched = set(), {}
    for neg_j, cid, n in sorted(candidates):
        if cid in taken_prev or n in matched:
            continue
        taken_prev.add(cid)
        matched[n] = (cid, -neg_j)
    used: set[str] = {cid for cid, _ in matched.values()}
    for n, cluster in enumerate(clusters):
        if n in matched:
            cid, jaccard = matched[n]
            before, now = set(previous[cid]), set(cluster.members)
            cluster.cluster_id = cid
            cluster.lineage = {"previous_run": previous_run, "previous_cluster": cid, "jaccard": round(jaccard, 4),
                               "added": len(now - before), "removed": len(before - now)}
        else:
            cid = cluster_id_of(cluster.members)
            while cid in used:  # a hash equal to an inherited id: vanishingly rare, still kept unique
                cid = cluster_id_of([cid, *cluster.members])
            cluster.cluster_id = cid
            cluster.lineage = {"previous_run": previous_run, "previous_cluster": None}
        used.add(cluster.cluster_id)
    return clusters
