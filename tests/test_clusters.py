"""Clusters: strong pairs, components, Leiden inside large components, identity across runs."""

from __future__ import annotations

import sqlalchemy as sa

from pipeline.config import NetworkParams
from pipeline.core.db import transaction
from pipeline.networks.clusters import Cluster, assign_ids, cluster_id_of, connected_components, find_clusters, strong_pairs
from pipeline.testing import planted


def test_strong_pairs_take_the_max_of_image_types_and_add_the_rest():
    edges = [("near_duplicate_avatar", "a", "b", 0.3), ("similar_embedding", "a", "b", 0.3),  # one trace: 0.3
             ("near_duplicate_avatar", "c", "d", 0.3), ("identical_link", "c", "d", 0.3),  # two traces: 0.6
             ("identical_bio", "e", "f", 0.3),
             ("identical_avatar", "g", "h", 1.0)]
    assert strong_pairs(edges, 0.5) == {("c", "d"): 0.6, ("g", "h"): 1.0}


def test_components_largest_first():
    pairs = {("a", "b"): 1.0, ("b", "c"): 1.0, ("x", "y"): 1.0}
    assert connected_components(pairs) == [["a", "b", "c"], ["x", "y"]]
    assert connected_components({}) == []


def _two_cliques(n: int) -> dict[tuple[str, str], float]:
    pairs = {}
    for side in "lr":
        keys = [f"{side}{i:02d}" for i in range(n)]
        pairs.update({(a, b): 1.0 for i, a in enumerate(keys) for b in keys[i + 1:]})
    pairs[("l00", "r00")] = 0.5  # one bridge
    return pairs


def test_leiden_splits_large_components_only():
    pairs = _two_cliques(12)
    whole = find_clusters(pairs, NetworkParams(leiden_min_size=100))
    assert [len(c.members) for c in whole] == [24]
    split = find_clusters(pairs, NetworkParams(leiden_min_size=20))
    assert sorted(sorted(c.members)[0][0] for c in split) == ["l", "r"]
    assert all(len(c.members) == 12 and c.component_size == 24 for c in split)


def test_identity_matches_previous_clusters_by_overlap():
    params = NetworkParams(cluster_match_jaccard=0.5)
    previous = {"cOLD1": [f"a{i}" for i in range(10)], "cOLD2": ["x", "y", "z"]}
    clusters = [Cluster([f"a{i}" for i in range(3, 13)]),  # 7 shared, 13 in all: Jaccard 0.5385 -> keeps cOLD1
                Cluster(["x", "q", "r", "s"]),  # 1 shared, 6 in all: a new cluster
                Cluster(["a0", "a1", "a2"])]  # the rest of cOLD1: Jaccard 0.3, new
    assign_ids(clusters, previous, "run-1", params)
    assert clusters[0].cluster_id == "cOLD1"
    assert clusters[0].lineage == {"previous_run": "run-1", "previous_cluster": "cOLD1", "jaccard": 0.5385,
                                   "added": 3, "removed": 3}
    assert clusters[1].cluster_id == cluster_id_of(["x", "q", "r", "s"])
    assert clusters[2].cluster_id == cluster_id_of(clusters[2].members) != "cOLD1"
    assert clusters[2].lineage["previous_cluster"] is None
    stricter = [Cluster(list(c.members)) for c in clusters]
    assign_ids(stricter, previous, "run-1", NetworkParams(cluster_match_jaccard=0.6))
    assert stricter[0].cluster_id == cluster_id_of(stricter[0].members)


def _clusters(settings, run_key):
    with transaction(settings) as conn:
        rows = conn.execute(sa.text("select cluster_id, account_key from cluster_members where run_key = :k"),
                            {"k": run_key}).all()
    out: dict[str, set[str]] = {}
    for cid, key in rows:
        out.setdefault(cid, set()).add(key)
    return out


def test_cluster_ids_survive_a_new_run_with_changed_members(settings):
    planted.generate(settings, "day1", organic=300, seed=2)
    planted.run_network_stages(settings, "day1")
    pop = planted.generate(settings, "day2", organic=300, seed=2)
    batch = pop.operations["batch"][0]
    with transaction(settings) as conn:  # on day 2, five of the batch accounts are gone from the export
        for table in ("account_avatars", "posts", "account_snapshots"):
            conn.execute(sa.text(f"delete from {table} where run_key = 'day2' and account_key = any(:k)"),
                         {"k": batch[:5]})
    planted.run_network_stages(settings, "day2")
    day1, day2 = _clusters(settings, "day1"), _clusters(settings, "day2")
    old = next(cid for cid, ms in day1.items() if ms == set(batch))
    assert day2[old] == set(batch[5:])
    with transaction(settings) as conn:
        lineage = conn.execute(sa.text("select features -> 'lineage' from clusters where run_key = 'day2'"
                                       " and cluster_id = :c"), {"c": old}).scalar_one()
    assert lineage == {"previous_run": "day1", "previous_cluster": old, "jaccard": round(25 / 30, 4),
                       "added": 0, "removed": 5}
    unchanged = [cid for cid, ms in day1.items() if cid != old]
    assert all(day2[cid] == day1[cid] for cid in unchanged)
