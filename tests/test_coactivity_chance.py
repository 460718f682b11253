"""The chance estimate on co-activity edges (issue 23, item 3, "Coordinated pairs"): the null keeps each
account's activity and each post's crowding and shuffles who posted what. Checked against the same
quantities computed here by brute force over every pair of accounts, on hand-made posts."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from scipy.stats import poisson
from test_coordination import edges, load_posts, post, run_edges


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
        unlikely = sum(1 for e in got.values() if e["evidence"]["chance"]["p_value"] <= chance["p_value"])
        assert chance["pairs_as_unlikely"] == unlikely
        assert chance["chance_share"] <= min(1.0, chance["expected_chance_pairs"] / unlikely) + 1e-4
    # Benjamini-Hochberg's q-value is monotone in the tail
    ordered = sorted(got.values(), key=lambda e: e["evidence"]["chance"]["p_value"])
    shares = [e["evidence"]["chance"]["chance_share"] for e in ordered]
    assert shares == sorted(shares)
    assert not math.isnan(sum(shares))
