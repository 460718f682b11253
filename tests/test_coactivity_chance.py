"""The chance estimate on co-activity edges (issue 23, item 3, "Coordinated pairs"): the null keeps each
account's activity and each post's crowding and shuffles who posted what. Checked against the same
quantities computed here by brute force over every pair of accounts, on hand-made posts."""

from __future__ import annotations

from collections import Counter

import pytest
from scipy.stats import poisson
from test_coordination import RUN, edges, load_posts, post, run_edges

from pipeline.config import NetworkParams
from pipeline.networks.clusters import find_clusters, pair_chance_shares


def _posts():
    """a and b repost X and Y 10 s apart (weight 2, alone). c and d repost V and W 10 s apart too, but
    inside a crowd: 6 other accounts repost V and W in the same minute. e..h post things nobody shares."""
    posts = [post("a", "a1", 0, "X"), post("b", "b1", 10, "X"), post("a", "a2", 5_000, "Y"), post("b", "b2", 5_010, "Y")]
    posts += [post("c", "c1", 20_000, "V"), post("d", "d1", 20_010, "V"),
              post("c", "c2", 30_000, "W"), post("d", "d2", 30_010, "W")]
    for i in range(6):
        posts += [post(f"crowd{i}", f"v{i}", 20_020 + i, "V"), post(f"crowd{i}", f"w{i}", 30_100 + 1_000 * i, "W")]
    posts += [post(who, f"{who}{n}", 50_000 + 1_000 * n + ord(who), f"solo-{who}{n}") for who in "efgh" for n in range(3)]
    return posts


def _brute_force(posts, window=60, min_weight=2):
    """k and M per account, and per pair λ; the run-wide expected chance pairs at a given tail, exactly."""
    k = Counter(p["account"] for p in posts)
    mates = Counter()
    for p in posts:
        mates[p["account"]] += sum(1 for q in posts if q["reposted"] == p["reposted"] and q["account"] != p["account"]
                                   and abs(q["seconds"] - p["seconds"]) <= window)
    total = len(posts)

    def lam(x, y):
        return max(mates[x] * k[y], mates[y] * k[x]) / total

    def expected_pairs(tail):
        out = 0.0  # ordered pairs (x, y), each at M_x k_y / P, halved: the implementation's sum without bins
        for x in k:
            for y in k:
                rate = mates[x] * k[y] / total
                if rate:
                    w = min_weight
                    while poisson.sf(w - 1, rate) > tail:
                        w += 1
                    out += poisson.sf(w - 1, rate) / 2
        return out

    return lam, expected_pairs


def test_chance_estimate_matches_the_null_computed_by_hand(settings):
    posts = _posts()
    load_posts(settings, posts)
    run_edges(settings)
    got = edges(settings, "co_repost")
    assert {("a", "b"), ("c", "d")} <= set(got)
    lam, expected_pairs = _brute_force(posts)
    alone, crowded = got[("a", "b")]["evidence"]["chance"], got[("c", "d")]["evidence"]["chance"]
    assert alone["expected_co_occurrences"] == pytest.approx(lam("a", "b"), rel=1e-6)
    assert crowded["expected_co_occurrences"] == pytest.approx(lam("c", "d"), rel=1e-6)
    assert alone["p_value"] == pytest.approx(poisson.sf(1, lam("a", "b")), rel=1e-9)
    # the crowd makes the same two co-reposts likelier by chance
    assert crowded["expected_co_occurrences"] > alone["expected_co_occurrences"]
    assert crowded["p_value"] > alone["p_value"]
    for chance in (alone, crowded):
        exact = expected_pairs(chance["p_value"])
        # M and k are binned (0.05 decade each, at the upper edge), so λ is off by at most 10^0.1 and a
        # tail at weight w by at most its w-th power (w = 2 here)
        assert exact / 10 ** 0.2 - 1e-4 <= chance["expected_chance_pairs"] <= exact * 10 ** 0.2 + 1e-4
    assert "chance_share" not in alone  # the cluster stage adds it, to the pairs it keeps


def test_pair_chance_shares_are_benjamini_hochberg_over_the_candidates():
    shares = pair_chance_shares({("a", "b"): 0.01, ("c", "d"): 0.5, ("e", "f"): 0.5, ("g", "h"): 3.0})
    assert shares[("a", "b")] == (1, 0.01)
    assert shares[("c", "d")] == shares[("e", "f")] == (3, round(0.5 / 3, 4))  # ties share their rank
    assert shares[("g", "h")] == (4, 0.75)
    assert pair_chance_shares({("a", "b"): 0.01, ("c", "d"): 0.02})[("a", "b")] == (1, 0.01)
    assert pair_chance_shares({("a", "b"): 5.0})[("a", "b")] == (1, 1.0)  # at most 1


def test_find_clusters_keeps_a_two_account_component_only_as_an_unexplained_pair():
    """A pair stands only as a whole component of two accounts, with a candidate edge whose chance share is at
    most the cap; a pair inside a larger component, or one that chance explains, stays out."""
    strong = {("a", "b"): 2.0, ("c", "d"): 2.0, ("e", "f"): 2.0, ("e", "g"): 2.0, ("x", "y"): 1.0}
    candidates = {("a", "b"): 0.001, ("c", "d"): 0.9, ("e", "f"): 0.001}
    found = {tuple(c.members): c for c in find_clusters(strong, NetworkParams(), candidates, 0.1)}
    assert set(found) == {("a", "b"), ("e", "f", "g")}
    assert found[("a", "b")].kind == "pair" and found[("e", "f", "g")].kind == "cluster"
    assert found[("a", "b")].chance == {"expected_chance_pairs": 0.001, "pairs_as_unlikely": 1, "chance_share": 0.001}
    assert {tuple(c.members) for c in find_clusters(strong, NetworkParams(), candidates, 0.0)} == {("e", "f", "g")}
    assert {tuple(c.members) for c in find_clusters(strong, NetworkParams(), None, 0.1)} == {("e", "f", "g")}


def test_chance_estimate_is_the_same_when_pairs_are_reduced_in_partitions(settings):
    """Over PAIR_BUDGET the window pairs go through partition files; the window-mate counts come from the
    first sweep, which sees every pair either way."""
    import sqlalchemy as sa

    from pipeline.core.db import transaction
    from pipeline.networks.coactivity import build_post_edges

    load_posts(settings, _posts())
    run_edges(settings)
    whole = {k: v["evidence"]["chance"] for k, v in edges(settings, "co_repost").items()}
    with transaction(settings) as conn:
        build_post_edges(conn, RUN, NetworkParams(), pair_budget=2)
        assert conn.execute(sa.text("select count(*) from edges where run_key = :k"), {"k": RUN}).scalar() > 0
    parts = {k: v["evidence"]["chance"] for k, v in edges(settings, "co_repost").items()}
    assert parts == whole
