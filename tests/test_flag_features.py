"""The cluster features for population-tested creation bursts (batch_share) and confirmed image rings
(image_ring_share): each with a case that must flag and one that must not (issue 10)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pipeline.config import ClusterWeights, Policy
from pipeline.flags.rules import assess_cluster

T0 = datetime(2025, 5, 1, tzinfo=UTC)


def _member(i, day, sha=None, risk=0.05):
    return {"account_key": f"p:{i:03d}", "created_at": T0 + timedelta(days=day), "avatar_label": None,
            "avatar_sha256": sha, "avatar_probability": None, "risk": risk, "handle_template": None,
            "handle_digits": 0}


def _chain(edge_type, n, weight, evidence=None):
    return [{"edge_type": edge_type, "a_key": f"p:{i:03d}", "b_key": f"p:{i + 1:03d}", "weight": weight,
             "params": {}, "evidence": evidence or {}} for i in range(n - 1)]


BURST = {"traits": ["count_profile"], "bursts": {"count_profile": {
    "value": "2.3/2.4/1.1", "bins": [23, 24, 11], "observed": 12, "expected": 0.4, "p_value": 1e-9}}}


def test_a_count_profile_batch_over_three_days_is_flagged_and_named():
    """Hashed handles, no template, no shared image, created over three days (largest one-day share
    below burst_share_rule): the members on population-tested creation_window edges flag it."""
    policy = Policy()
    params = policy.flag
    members = [_member(i, day=i % 3) for i in range(12)]
    a = assess_cluster("c", members, _chain("creation_window", 12, 0.5, BURST), policy)
    assert a.features["burst_share"] < params.burst_share_rule and a.features["batch_share"] == 1.0
    assert "batch_created" in a.rules and "count_profile 11" in a.rules["batch_created"]
    assert a.features["score_contributions"]["batch_share"] == ClusterWeights().batch_share
    assert a.features["burst_traits"] == {"count_profile": 11}
    assert a.score >= params.flag_score_threshold


def test_an_organic_busy_day_without_burst_edges_is_not_a_batch():
    """All created on one platform-wide busy day, but the population test found no burst, so there is no
    creation_window edge: only weak text edges hold the cluster."""
    policy = Policy()
    params = policy.flag
    members = [_member(i, day=0, risk=0.15) for i in range(12)]
    a = assess_cluster("c", members, _chain("identical_bio", 12, 0.3), policy)
    assert a.features["burst_share"] == 1.0 and a.features["batch_share"] == 0.0
    assert "batch_created" not in a.rules and a.score < params.flag_score_threshold


def test_a_photo_ring_is_flagged_and_named():
    """Eight accounts showing crops and re-encodes of one photo, nothing else in common."""
    policy = Policy()
    params = policy.flag
    members = [_member(i, day=300 * i, sha=f"s{i}") for i in range(8)]
    edges = _chain("near_duplicate_avatar", 8, 0.3) + _chain("confirmed_near_duplicate", 8, 0.8,
                                                               {"confirmed_by": ["local_features"]})
    a = assess_cluster("c", members, edges, policy)
    assert a.features["image_ring_share"] == 1.0
    assert "image_ring" in a.rules and "7 confirmed pairs" in a.rules["image_ring"]
    assert a.score >= params.flag_score_threshold


def test_a_brand_logo_shared_openly_is_not_a_ring():
    """Regional brand accounts: the same logo and unconfirmed near-duplicates of it (flat images never
    get a confirmed edge), old accounts: a shared avatar, but no ring and no flag."""
    policy = Policy()
    params = policy.flag
    members = [_member(i, day=400 * i, sha="logo" if i % 2 else f"jpeg{i}", risk=0.2) for i in range(6)]
    edges = _chain("near_duplicate_avatar", 6, 0.3) + [
        {"edge_type": "identical_avatar", "a_key": "p:001", "b_key": f"p:{i:03d}", "weight": 1.0, "params": {},
         "evidence": {}} for i in (3, 5)]
    a = assess_cluster("c", members, edges, policy)
    assert a.features["image_ring_share"] == 0.0 and "image_ring" not in a.rules
    assert "shared_avatar" in a.rules and a.score < params.flag_score_threshold


def test_half_a_cluster_on_one_new_feature_is_not_enough():
    """A share below the rule's threshold fires neither rule, and alone stays under the flag threshold."""
    policy = Policy()
    members = [_member(i, day=400 * i) for i in range(8)]
    edges = _chain("creation_window", 3, 0.5, BURST) + [
        {**e, "a_key": f"p:{int(e['a_key'][2:]) + 4:03d}", "b_key": f"p:{int(e['b_key'][2:]) + 4:03d}"}
        for e in _chain("confirmed_near_duplicate", 3, 0.8)]
    a = assess_cluster("c", members, edges, policy)
    assert a.features["batch_share"] == 0.375 and a.features["image_ring_share"] == 0.375
    assert not {"batch_created", "image_ring"} & set(a.rules)
