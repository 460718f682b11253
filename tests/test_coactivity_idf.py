"""IDF-weighted co-activity (issue 10, chance co-activity at scale): the edges stay QUT's, their evidence
adds each direction's weight with every co-occurring post counted by how rare its shared object is, and
the flag stage counts an edge for the co-activity share only when that weight reaches
``coactivity_min_idf_weight``. A viral post's chance co-reposts do not count; a ring's rare posts do."""

from __future__ import annotations

import math

import pytest
from test_coordination import edges, load_posts, post, run_edges

from pipeline.config import FlagParams, Policy
from pipeline.flags.rules import assess_cluster, idf_weight, qualifies_as_coactivity


@pytest.fixture
def viral_and_ring(settings):
    """80 accounts repost the viral post V, 1000 s apart; a and b among them repost it twice each within
    a minute of each other (QUT weight 2 by chance). c, d and e repost R1 and R2, which nobody else does."""
    posts = [post(f"v{i:02d}", f"v{i}", 1000 * i, "V") for i in range(2, 80)]
    posts += [post("a", "a1", 100_000, "V"), post("a", "a2", 100_030, "V"),
              post("b", "b1", 100_010, "V"), post("b", "b2", 100_040, "V")]
    for k, who in enumerate("cde"):
        posts += [post(who, f"{who}1", 200_000 + k, "R1"), post(who, f"{who}2", 300_000 + k, "R2")]
    load_posts(settings, posts)
    run_edges(settings)
    return edges(settings, "co_repost")


def _idf(n_object: int, n_accounts: int) -> float:
    return math.log(n_accounts / n_object) / math.log(n_accounts)


def test_edges_stay_quts_and_the_evidence_weighs_rarity(viral_and_ring):
    got = viral_and_ring
    assert set(got) == {("a", "b"), ("c", "d"), ("c", "e"), ("d", "e")}
    assert all(e["weight"] == 2.0 for e in got.values())  # QUT's directed weight, unchanged
    n = 83  # accounts with a repost: 80 of V (a and b included) and c, d, e
    viral, ring = got[("a", "b")]["evidence"], got[("c", "d")]["evidence"]
    assert viral["idf_weight_a_to_b"] == pytest.approx(2 * _idf(80, n), abs=1e-4)
    assert ring["idf_weight_a_to_b"] == ring["idf_weight_b_to_a"] == pytest.approx(2 * _idf(3, n), abs=1e-4)


def test_chance_co_reposts_of_a_viral_post_do_not_count_a_rare_ring_does(viral_and_ring):
    policy = Policy()
    params = policy.flag
    chance = {"edge_type": "co_repost", "a_key": "x:a", "b_key": "x:b", **viral_and_ring[("a", "b")]}
    ring = [{"edge_type": "co_repost", "a_key": f"x:{a}", "b_key": f"x:{b}", **viral_and_ring[(a, b)]}
            for a, b in (("c", "d"), ("c", "e"), ("d", "e"))]
    assert idf_weight(chance) < params.coactivity_min_idf_weight <= min(idf_weight(e) for e in ring)
    assert not qualifies_as_coactivity(chance, params)
    assert all(qualifies_as_coactivity(e, params) for e in ring)
    assert qualifies_as_coactivity(chance, FlagParams(coactivity_min_idf_weight=0))  # the gate is the parameter

    def member(k):
        return {"account_key": f"x:{k}", "created_at": None, "avatar_label": None, "avatar_sha256": None,
                "avatar_probability": None, "risk": 0.0, "handle_template": None, "handle_digits": 0}

    ring_cluster = assess_cluster("r", [member(k) for k in "cde"], ring, policy)
    assert "coordinated_activity" in ring_cluster.rules and ring_cluster.score >= params.flag_score_threshold
    chain = [chance, {**chance, "a_key": "x:b", "b_key": "x:v02"}]
    chance_cluster = assess_cluster("v", [member(k) for k in ("a", "b", "v02")], chain, policy)
    assert chance_cluster.features["coactivity_share"] == 0.0 and "coordinated_activity" not in chance_cluster.rules
