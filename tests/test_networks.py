"""Edges: the sub-quadratic near-duplicate index against a brute-force scan, each edge builder's rules,
and the network stage's rows on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
import sqlalchemy as sa

from pipeline.config import EdgeWeights, ImageParams, NetworkParams, Policy
from pipeline.core.db import transaction
from pipeline.images.matching import PictureMatch
from pipeline.networks import edges as E
from pipeline.signals.neardup import brute_force_pairs, choose_blocks, near_duplicate_pairs, parse_phash
from pipeline.testing import planted

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def _hashes_with_planted_neighbours(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h = rng.integers(0, 2 ** 63, size=n, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, n).astype(np.uint64)
    near = []
    for k in range(11):  # copies of the first hashes, k bits flipped
        for base in h[:40]:
            flips = rng.choice(64, size=k, replace=False)
            near.append(int(base) ^ sum(1 << int(b) for b in flips))
    return np.concatenate([h, np.array(near, dtype=np.uint64), h[:5]])  # and exact duplicates


@pytest.mark.parametrize("radius", [0, 2, 6, 8, 10])
def test_near_duplicates_match_brute_force(radius):
    hashes = _hashes_with_planted_neighbours(20_000, seed=radius)
    fast = near_duplicate_pairs(hashes, radius)
    slow = brute_force_pairs(hashes, radius)
    assert len(fast[0]) > 0
    for a, b in zip(fast, slow):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("blocks", [7, 8, 9, 12])
def test_near_duplicates_any_blocks_and_small_batches(blocks):
    hashes = _hashes_with_planted_neighbours(3000, seed=1)
    expected = brute_force_pairs(hashes, 6)
    got = near_duplicate_pairs(hashes, 6, blocks=blocks, block=64)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)


def test_block_choice_leaves_an_equal_block():
    assert choose_blocks(1_000_000, 6) > 6 and choose_blocks(10, 0) > 0
    assert parse_phash(["ffffffffffffffff", "0000000000000001"]).tolist() == [2 ** 64 - 1, 1]


def _acc(key, created=None, sha=None, label=None, template=None, digits=0, bio=None, url=None, **counts):
    return E.AccountTraits(key, created, sha, label, template, digits, bio, url, **counts)


def test_identical_avatar_star_and_default_avatar_cap():
    params = ImageParams(identical_avatar_max_group=3)
    accounts = [_acc(f"p:{i}", sha="x") for i in range(3)] + [_acc(f"p:d{i}", sha="default") for i in range(4)]
    edges = E.identical_avatar_edges(accounts, params)
    assert {(e.a_key, e.b_key) for e in edges} == {("p:0", "p:1"), ("p:0", "p:2")}
    assert all(e.evidence == {"sha256": "x", "group_size": 3} and e.weight == 1.0 for e in edges)


def test_near_duplicate_edges_join_hubs_and_are_corroborating():
    policy = Policy(image=ImageParams(near_dup_max_distance=6))
    groups = {"a": ["p:1", "p:2"], "b": ["p:3"]}
    [edge] = E.near_duplicate_edges(groups, [("a", "b", 2), ("a", "zz", 1)], policy.image)
    assert (edge.a_key, edge.b_key) == ("p:1", "p:3")
    assert edge.evidence == {"sha256": ["a", "b"], "hamming": 2}
    assert 0.25 <= edge.weight < policy.network.strong_edge_min_weight


def test_similar_embedding_exact_blocked_neighbours():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(50, 16))
    vectors = np.concatenate([base, base[:10] + rng.normal(scale=0.01, size=(10, 16))])
    pairs = E.similar_embedding_pairs(vectors, 0.99, 5, block=7)
    assert {(i, j) for i, j, _ in pairs} == {(i, 50 + i) for i in range(10)}
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    assert all(abs(s - float(unit[i] @ unit[j])) < 1e-5 for i, j, s in pairs)


def test_identical_text_edges_are_cliques_with_a_cap():
    params = NetworkParams(identical_text_max_group=3)
    accounts = [_acc(f"p:{i}", bio="Crypto signals daily, join now", url="https://WWW.x.io/Join/") for i in range(3)]
    accounts += [_acc(f"p:z{i}", url="http://x.io/join#top") for i in range(1)]  # 4 with that link: over the cap
    accounts += [_acc("p:short", bio="hi"), _acc("p:short2", bio="hi")]
    edges = E.identical_text_edges(accounts, params)
    assert {e.edge_type for e in edges} == {"identical_bio"}
    assert len(edges) == 3 and all(e.weight == EdgeWeights().identical_text for e in edges)
    assert E.normalised_link("HTTPS://www.Example.com/Shop/#x") == "example.com/shop"


def test_edge_builders_weigh_by_the_policy_they_are_given():
    """Each builder takes the run's EdgeWeights; the defaults are the policy's own (one definition)."""
    params, image = NetworkParams(), ImageParams()
    custom = EdgeWeights(identical_avatar=0.9, confirmed_near_duplicate=0.7, creation_trait=0.6, narrowed_trait=0.2,
                         identical_text=0.4, corroborating_base=0.2, corroborating_span=0.2)
    same_image = [_acc(f"p:{i}", sha="x") for i in range(2)]
    assert [e.weight for e in E.identical_avatar_edges(same_image, image, custom)] == [0.9]
    same_bio = [_acc(f"p:{i}", bio="Crypto signals daily, join now") for i in range(2)]
    assert [e.weight for e in E.identical_text_edges(same_bio, params, custom)] == [0.4]
    assert [e.weight for e in E.identical_text_edges(same_bio, params)] == [EdgeWeights().identical_text]
    groups = {"a": ["p:1"], "b": ["p:2"]}
    [near] = E.near_duplicate_edges(groups, [("a", "b", 0)], image, custom)
    assert near.weight == round(0.2 + 0.2 * (1 - 0 / 7), 4)
    [near] = E.near_duplicate_edges(groups, [("a", "b", 0)], image)
    assert near.weight == round(EdgeWeights().corroborating_base + EdgeWeights().corroborating_span, 4)
    images = {"a": E.ImageInfo(0, 0.5), "b": E.ImageInfo(1, 0.5)}
    same = {("a", "b"): PictureMatch(300, 350, (900, 900), 0.95)}
    [ring] = E.confirmed_near_duplicate_edges(groups, [("a", "b", 1)], images, same, image, custom)
    assert ring.weight == 0.7
    bursts = {"handle_template": {}, "handle_template+no_bio": {}}
    assert E.creation_weight(bursts, custom) == 0.8
    assert E.creation_weight(bursts) == EdgeWeights().creation_trait + EdgeWeights().narrowed_trait


def test_network_stage_writes_typed_edges_with_params_and_evidence(settings):
    pop = planted.generate(settings, "net", organic=300, seed=5)
    planted.run_network_stages(settings, "net")
    with transaction(settings) as conn:
        rows = conn.execute(sa.text("select edge_type, a_key, b_key, weight, params, evidence from edges"
                                    " where run_key = 'net'")).mappings().all()
    types = {r["edge_type"] for r in rows}
    assert {"identical_avatar", "near_duplicate_avatar", "similar_embedding", "creation_window", "identical_link",
            "co_repost"} <= types
    for r in rows:
        assert r["a_key"] < r["b_key"] and r["params"] and r["evidence"] and r["weight"] > 0
    near = [r for r in rows if r["edge_type"] == "near_duplicate_avatar"]
    ring = {k for ms in pop.operations["avatar_ring"] for k in ms}
    assert all(r["a_key"] in ring and r["b_key"] in ring for r in near)
    assert all(r["params"]["near_dup_max_distance"] == 6 and r["evidence"]["hamming"] <= 6 for r in near)
    sim = [r for r in rows if r["edge_type"] == "similar_embedding"]
    assert sim and all(r["evidence"]["cosine"] >= 0.95 and r["params"]["backbone_id"] == planted.BACKBONE_ID
                       for r in sim)


def test_no_similar_embedding_edges_from_a_random_backbone(settings):
    """Embeddings of a random-initialised backbone say nothing about a picture: the same vectors that make
    similar_embedding edges under a real backbone make none when the run's detector names random weights."""
    from detectors.backbone import BackboneSpec, is_random_backbone_id

    random_id = BackboneSpec.parse("pa-tiny-vit", "random:0").id
    assert is_random_backbone_id(random_id) and not is_random_backbone_id(planted.BACKBONE_ID)
    planted.generate(settings, "net-random", organic=300, seed=5)
    with transaction(settings) as conn:
        conn.execute(sa.text("update embeddings set backbone_id = :r where backbone_id = :b"),
                     {"r": random_id, "b": planted.BACKBONE_ID})
        conn.execute(sa.text("update detectors set backbone_id = :r where detector_id = :d"),
                     {"r": random_id, "d": planted.DETECTOR_ID})
    planted.run_network_stages(settings, "net-random")
    with transaction(settings) as conn:
        types = {r.edge_type for r in conn.execute(sa.text("select distinct edge_type from edges"
                                                           " where run_key = 'net-random'"))}
    assert "similar_embedding" not in types and "identical_avatar" in types
