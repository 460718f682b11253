"""Matched images side by side (pipeline/reporting/pairs.py) and the shared_avatar rule's count, on a real
audit of the demo export (its cartoon faces make pHash-only near-duplicate pairs between different faces).

Expectations are computed from the run's tables (cluster_members, account_signals, edges,
avatar_near_duplicates), never hard-coded."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import replace

import pytest
import sqlalchemy as sa
from conftest import fresh_settings

from pipeline.core.db import transaction
from pipeline.reporting.pairs import MAX_PAIRS_SHOWN, ImagePair, PairMember, cluster_image_pairs, pairs_section_html

RUN_KEY = "pairs"


@pytest.fixture(scope="module")
def audited(server_url, demo_data, tmp_path_factory):
    from pipeline.audit import audit_export
    from pipeline.core.db import dispose_engines

    settings = fresh_settings(server_url, tmp_path_factory.mktemp("pairs") / "home")
    audit_export(settings, demo_data["export"], run_key=RUN_KEY, detector=str(demo_data["detector"]))
    yield settings
    dispose_engines()


def _tables(conn, cluster_id):
    """The cluster's members' images, its in-cluster image edges, and the run's pHash pairs."""
    shown = dict(conn.execute(sa.text(
        "select m.account_key, g.avatar_sha256 from cluster_members m join account_signals g"
        " on g.run_key = m.run_key and g.account_key = m.account_key"
        " where m.run_key = :k and m.cluster_id = :c and g.avatar_sha256 is not null"),
        {"k": RUN_KEY, "c": cluster_id}).all())
    edges = conn.execute(sa.text(
        "select e.edge_type, e.evidence from edges e"
        " join cluster_members a on a.run_key = e.run_key and a.account_key = e.a_key and a.cluster_id = :c"
        " join cluster_members b on b.run_key = e.run_key and b.account_key = e.b_key and b.cluster_id = :c"
        " where e.run_key = :k"), {"k": RUN_KEY, "c": cluster_id}).all()
    near = {(a, b): d for a, b, d in conn.execute(sa.text(
        "select sha_a, sha_b, distance from avatar_near_duplicates where run_key = :k"), {"k": RUN_KEY}).all()}
    return shown, edges, near


def _clusters(conn):
    return conn.execute(sa.text("select cluster_id from clusters where run_key = :k order by cluster_id"),
                        {"k": RUN_KEY}).scalars().all()


def _expected_same_image_members(shown, edges):
    """Members whose image another member shows too (an identical_avatar edge holds that image), or whose
    image a confirmed_near_duplicate edge pairs with another member's image."""
    by_sha = Counter(shown.values())
    identical = {e.evidence["sha256"] for e in edges if e.edge_type == "identical_avatar"}
    confirmed = [tuple(e.evidence["sha256"]) for e in edges if e.edge_type == "confirmed_near_duplicate"]
    images = set(shown.values())
    same = {k for k, sha in shown.items() if by_sha[sha] > 1 and sha in identical}
    for a, b in confirmed:
        if a in images and b in images:
            same |= {k for k, sha in shown.items() if sha in (a, b)}
    return same


def test_pairs_carry_the_tables_kinds_and_distances(audited):
    seen_kinds: Counter = Counter()
    with transaction(audited) as conn:
        for cid in _clusters(conn):
            shown, edges, near = _tables(conn, cid)
            pairs = cluster_image_pairs(conn, RUN_KEY, cid)
            confirmed = {tuple(sorted(e.evidence["sha256"])) for e in edges if e.edge_type == "confirmed_near_duplicate"}
            images = set(shown.values())
            members_of = defaultdict(set)
            for k, sha in shown.items():
                members_of[sha].add(k)
            # every pHash pair between two of the cluster's images is listed, with the table's distance
            expected_near = {(a, b): d for (a, b), d in near.items() if a in images and b in images}
            listed_near = {(p.sha_a, p.sha_b): p for p in pairs if p.kind != "identical"}
            assert set(listed_near) == set(expected_near), cid
            for key, p in listed_near.items():
                assert p.distance == expected_near[key]
                assert p.kind == ("confirmed" if key in confirmed else "unconfirmed"), key
            for p in pairs:
                seen_kinds[p.kind] += 1
                assert {m.account_key for m in p.members_a} == members_of[p.sha_a]
                assert {m.account_key for m in p.members_b} == members_of[p.sha_b]
                if p.kind == "identical":
                    assert p.sha_a == p.sha_b and p.distance == 0 and len(p.members_a) > 1
            identical = {sha for e in edges if e.edge_type == "identical_avatar" for sha in [e.evidence["sha256"]]}
            assert {p.sha_a for p in pairs if p.kind == "identical"} == {
                sha for sha, ks in members_of.items() if len(ks) > 1 and sha in identical}
            kinds = [p.kind for p in pairs]
            assert kinds == sorted(kinds, key=("identical", "confirmed", "unconfirmed").index)
    # the demo has both: the ring's reused faces, and pHash-only matches between different cartoon faces
    assert seen_kinds["identical"] and seen_kinds["unconfirmed"], seen_kinds


def test_shared_avatar_counts_only_identical_and_confirmed(audited):
    from pipeline.flags.rules import list_flags

    flags = {f["cluster_id"]: f for f in list_flags(audited, run_key=RUN_KEY)}
    assert flags
    checked = Counter()
    with transaction(audited) as conn:
        for cid, flag in flags.items():
            shown, edges, _ = _tables(conn, cid)
            expected = _expected_same_image_members(shown, edges)
            why = flag["evidence"]["rules"].get("shared_avatar")
            if why is None:
                checked["silent"] += 1
                assert len(expected) < 3, (cid, expected)  # min_cluster_size
                continue
            checked["fired"] += 1
            assert int(why.split()[0]) == len(expected), why
            assert "not counted" in why
            pairs = cluster_image_pairs(conn, RUN_KEY, cid)
            from_pairs = {m.account_key for p in pairs if p.kind != "unconfirmed" for m in (*p.members_a, *p.members_b)}
            assert from_pairs == expected
    # the reused-face ring fires it; the batch of distinct faces (pHash-only matches) does not
    assert checked["fired"] and checked["silent"], checked


def _parse_pairs(html_text):
    items = re.findall(r'<li class="pair pair-(\w+)">(.*?)</li>', html_text, re.S)
    return [(kind, body.count("<img "), re.search(r"pHash distance (\d+)", body).group(1), body) for kind, body in items]


def test_section_shows_two_thumbnails_per_pair_and_marks_unconfirmed(audited):
    with transaction(audited) as conn:
        per_cluster = {cid: cluster_image_pairs(conn, RUN_KEY, cid) for cid in _clusters(conn)}
    pairs = max(per_cluster.values(), key=lambda ps: len({p.kind for p in ps}))
    assert {"unconfirmed"} < {p.kind for p in pairs}  # a cluster holding unconfirmed and other pairs
    shown = pairs[:MAX_PAIRS_SHOWN]
    html_text = pairs_section_html(audited, shown)
    assert "<h2>Matched images</h2>" in html_text
    parsed = _parse_pairs(html_text)
    assert [k for k, *_ in parsed] == sorted((p.kind for p in shown), key=("identical", "confirmed", "unconfirmed").index)
    expected = sorted(shown, key=lambda p: ("identical", "confirmed", "unconfirmed").index(p.kind))
    for (kind, images, distance, body), p in zip(parsed, expected):
        assert images == 2 and int(distance) == p.distance and kind == p.kind
        assert ("not confirmed (pHash only)" in body) == (kind == "unconfirmed")
    # unconfirmed pairs after all others
    kinds = [k for k, *_ in parsed]
    assert "unconfirmed" not in kinds[:kinds.index("unconfirmed")] and set(kinds[kinds.index("unconfirmed"):]) == {"unconfirmed"}


def test_section_caps_big_clusters_and_escapes_text(audited):
    with transaction(audited) as conn:
        sha, path = conn.execute(sa.text("select sha256, storage_path from images limit 1")).one()
    hostile = PairMember("demo:x", '<script>alert("h")</script>')
    base = ImagePair(sha, sha, 3, "unconfirmed", (hostile,), (hostile,), path, path)
    many = [replace(base, distance=i % 7) for i in range(MAX_PAIRS_SHOWN + 5)] + [replace(base, kind="confirmed", distance=1)]
    html_text = pairs_section_html(audited, many)
    assert "<script>" not in html_text and "&lt;script&gt;" in html_text
    parsed = _parse_pairs(html_text)
    assert len(parsed) == MAX_PAIRS_SHOWN and parsed[0][0] == "confirmed"  # confirmed first, even when listed last
    assert "6 more pairs" in html_text  # 30 pairs, 24 shown
    assert all(images == 2 for _, images, *_ in parsed)
    missing = pairs_section_html(audited, [replace(base, path_a=None, path_b="no/such/file.jpg")])
    assert missing.count("unavailable") == 2 and "<img " not in missing
    assert "No identical or near-duplicate images" in pairs_section_html(audited, [])


def test_pHash_only_links_do_not_fire_shared_avatar():
    """Four distinct images on pHash-only links: not the same image; the same links confirmed: it fires."""
    from datetime import UTC, datetime, timedelta

    from pipeline.config import Policy
    from pipeline.flags.rules import FLAG_RULES, cluster_facts

    members = [{"account_key": f"p:{i}", "created_at": datetime(2020, 1, 1, tzinfo=UTC) + timedelta(days=400 * i),
                "avatar_label": None, "avatar_sha256": f"s{i}", "avatar_probability": None, "risk": 0.1,
                "handle_template": None, "handle_digits": 0} for i in range(4)]

    def chain(edge_type):
        return [{"edge_type": edge_type, "a_key": f"p:{i}", "b_key": f"p:{i + 1}", "weight": 0.3, "params": {},
                 "evidence": {}} for i in range(3)]

    rule, policy = FLAG_RULES.get("shared_avatar"), Policy()
    assert rule.check(cluster_facts(members, chain("near_duplicate_avatar"), policy), policy) is None
    why = rule.check(cluster_facts(members, chain("confirmed_near_duplicate") + chain("near_duplicate_avatar"), policy),
                     policy)
    assert why.startswith("4 accounts") and "3 pHash-only near-duplicate links not counted" in why
