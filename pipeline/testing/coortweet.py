"""CooRTweet's definition of coordinated accounts, re-implemented from its R source, to compare our flags with.

CooRTweet (Righetti & Balluff; github.com/nicolarighetti/CooRTweet) is the R package behind the
coordinated-sharing papers of Giglietto et al. Its vignette runs ``detect_groups(x, time_window = 60,
min_participation = 2)`` and ``generate_coordinated_network(result, edge_weight = 0.5, subgraph = 1)``;
``coordinated`` follows ``do_detect_groups``, ``calc_group_combinations``, ``do_remove_loops``,
``filter_min_participation`` and ``generate_coordinated_network`` step by step. Used by
``bench/coordination_real.py`` and ``tests/test_coordination_real.py``.
"""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

import numpy as np


def rows_from_io(path: Path) -> list[tuple[str, str, str, int]]:
    """(object_id, account_id, content_id, timestamp_share) from the IO release of CooRTweet's data."""
    rows = []
    with path.open(newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            if r["retweet_tweetid"]:
                at = datetime.strptime(r["tweet_time"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
                rows.append((r["retweet_tweetid"], r["userid"], r["tweetid"], int(at.timestamp())))
    return rows


def coordinated(rows: list[tuple[str, str, str, int]], window: int, min_participation: int,
                edge_weight: float) -> tuple[set[str], dict[tuple[str, str], int], float]:
    """CooRTweet's detect_groups + generate_coordinated_network(subgraph = 1): accounts, kept edges, threshold."""
    shares = Counter(r[1] for r in rows)
    x = [r for r in rows if shares[r[1]] >= min_participation]  # pre-filter on participation
    by_object = defaultdict(list)
    for r in x:
        by_object[r[0]].append(r)
    result = []  # calc_group_combinations: every pair of one object's shares within the window
    for obj, group in by_object.items():
        group.sort(key=lambda r: r[3])
        for i, a in enumerate(group):
            for b in group[i + 1:]:
                if b[3] - a[3] > window:
                    break
                if a[1] != b[1] and a[2] != b[2] and obj not in (a[2], b[2]):  # do_remove_loops
                    result.append((a[1], b[1], a[2], b[2]))
    contents = {c for r in result for c in (r[2], r[3])}  # filter_min_participation
    per_account = Counter(r[1] for r in x if r[2] in contents)
    kept_contents = {r[2] for r in x if r[2] in contents and per_account[r[1]] >= min_participation}
    result = [r for r in result if r[2] in kept_contents or r[3] in kept_contents]
    weights = Counter((min(r[0], r[1]), max(r[0], r[1])) for r in result)
    if not weights:
        return set(), {}, 0.0
    threshold = float(np.quantile(np.array(list(weights.values())), edge_weight))  # numpy linear = R type 7
    kept = {pair: w for pair, w in weights.items() if w > threshold}
    return {a for pair in kept for a in pair}, kept, threshold


def components(edges) -> list[set[str]]:
    parent: dict[str, str] = {}

    def find(a: str) -> str:
        while parent.setdefault(a, a) != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in edges:
        parent[find(a)] = find(b)
    groups = defaultdict(set)
    for a in list(parent):
        groups[find(a)].add(a)
    return list(groups.values())
