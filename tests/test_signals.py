"""Per-account signals and the explainable risk score, computed in PostgreSQL (sql/006_network_signals.sql)."""

from __future__ import annotations

import math

import pytest
import sqlalchemy as sa

from pipeline.config import Policy, RiskWeights
from pipeline.core.db import ensure_schema, transaction
from pipeline.signals.aggregate import aggregate_run
from pipeline.testing import planted


def _one(settings, sql, **params):
    with transaction(settings) as conn:
        return conn.execute(sa.text(sql), params).scalar_one()


@pytest.mark.parametrize("handle, entropy", [("aaaa", 0.0), ("ab", 1.0), ("abcd", 2.0), ("", None), (None, None)])
def test_handle_entropy(settings, handle, entropy):
    ensure_schema(settings)
    value = _one(settings, "select handle_entropy(:h)", h=handle)
    assert value == entropy if entropy is None else math.isclose(value, entropy, abs_tol=1e-4)


@pytest.mark.parametrize("bio, expected", [("", True), ("  ", True), ("Hello!", True), ("...", True),
                                           ("emma_smith", True), ("coffee, code and cats", False)])
def test_default_bio(settings, bio, expected):
    ensure_schema(settings)
    assert _one(settings, "select is_default_bio(:b, 'emma_smith', 'Emma Smith')", b=bio) is expected


@pytest.mark.parametrize("url, domain", [("https://www.Example.com/a?b=1", "example.com"), ("example.org", "example.org"),
                                         ("http://user@host.net:8080/x", "host.net"), ("", None), (None, None)])
def test_link_domain(settings, url, domain):
    ensure_schema(settings)
    assert _one(settings, "select link_domain(:u)", u=url) == domain


@pytest.fixture
def small_run(settings):
    pop = planted.generate(settings, "sig", organic=200, seed=3, operations={"corepost_ring": 0, "batch": 1,
                                                                         "avatar_ring": 1, "lookalike": 0})
    aggregate_run(settings, "sig")
    return pop


def _signals(settings, run_key):
    with transaction(settings) as conn:
        return {r["account_key"]: dict(r) for r in conn.execute(
            sa.text("select * from account_signals where run_key = :k"), {"k": run_key}).mappings()}


def test_signals_cover_every_account_and_risk_is_the_sum_of_its_contributions(settings, small_run):
    signals = _signals(settings, "sig")
    assert set(signals) == set(small_run.truth)
    for s in signals.values():
        assert math.isclose(s["risk"], min(1.0, sum(float(v) for v in s["contributions"].values())), abs_tol=1e-9)
        assert 0 <= s["risk"] <= 1


def test_signals_entropy_is_handle_entropy(settings, small_run):
    """compute_account_signals inlines handle_entropy's body (a call per account cost twice as much): the
    two must agree on every account, exactly."""
    with transaction(settings) as conn:
        rows = conn.execute(sa.text(
            "select s.handle_entropy, handle_entropy(a.handle) as expected, a.handle from account_signals s"
            " join account_snapshots a using (run_key, account_key) where s.run_key = 'sig'")).all()
    assert len(rows) == len(small_run.truth) and any(r.expected for r in rows)
    assert [(r.handle, r.handle_entropy) for r in rows] == [(r.handle, r.expected) for r in rows]


def test_near_duplicate_pairs_name_the_images_in_order(settings, small_run):
    """store_near_duplicates numbers the images in SQL and joins the pairs back: every pair is two distinct
    images of the run, sha_a < sha_b, at the pHash distance of the two images."""
    with transaction(settings) as conn:
        rows = conn.execute(sa.text(
            "select n.sha_a, n.sha_b, n.distance, a.phash as pa, b.phash as pb from avatar_near_duplicates n"
            " join images a on a.sha256 = n.sha_a join images b on b.sha256 = n.sha_b"
            " where n.run_key = 'sig'")).all()
    assert rows
    for r in rows:
        assert r.sha_a < r.sha_b and r.distance == bin(int(r.pa, 16) ^ int(r.pb, 16)).count("1") <= 6


def test_aggregate_scores_with_the_policy_it_is_given(settings, small_run):
    """``aggregate_run(policy=...)`` (the stage passes ``RunContext.policy``) weighs by that policy; without
    one, by the policy pinned on the run row."""
    by_row = _signals(settings, "sig")
    aggregate_run(settings, "sig", policy=Policy(risk=RiskWeights(empty_bio=0.5, template_handle=0.0)))
    given = _signals(settings, "sig")
    empty = [k for k, s in by_row.items() if "empty_bio" in s["contributions"]]
    templated = [k for k, s in by_row.items() if "template_handle" in s["contributions"]]
    assert empty and templated
    assert all(given[k]["contributions"]["empty_bio"] == 0.5 and by_row[k]["contributions"]["empty_bio"] == 0.05
               for k in empty)
    assert all(given[k]["contributions"]["template_handle"] == 0 for k in templated)
    aggregate_run(settings, "sig")
    assert _signals(settings, "sig") == by_row


def test_batch_account_shape(settings, small_run):
    key = small_run.operations["batch"][0][0]
    s = _signals(settings, "sig")[key]
    assert s["handle_digits"] == 8 and s["handle_template"] == "a_a+8digits"
    assert s["bio_empty"] and s["bio_default"]
    assert s["followers"] < 10 and s["account_age_days"] < 400
    assert {"template_handle", "empty_bio", "few_followers"} <= set(s["contributions"])
    assert s["handle_entropy"] > 2


def test_ring_reuse_and_near_duplicate_counts(settings, small_run):
    ring = small_run.operations["avatar_ring"][0]  # 4 faces x (6 sharing + 2 near-duplicate copies)
    signals = _signals(settings, "sig")
    sharer, copy = signals[ring[0]], signals[ring[6]]
    assert sharer["avatar_reuse_count"] == 5
    assert sharer["near_duplicate_count"] == 2  # the two copies of its face
    assert copy["avatar_reuse_count"] == 0 and copy["near_duplicate_count"] == 7  # 6 sharers + the other copy
    assert "near_duplicate_avatar" in copy["contributions"] and "avatar_reuse" in sharer["contributions"]
    assert sharer["avatar_label"] and sharer["contributions"]["synthetic_avatar"] > 0.3
    assert sharer["link_domain"].startswith("ring0-deals")


def test_history_face_signal_and_rerun(settings, small_run):
    """A second run where one account swapped its generated face for a real one: the change is counted and
    the history maximum remembered. A face-signal row adds its contribution. Reruns are identical."""
    ring_key = small_run.operations["avatar_ring"][0][0]
    planted.generate(settings, "sig2", organic=200, seed=3, operations={"corepost_ring": 0, "batch": 1,
                                                                    "avatar_ring": 1, "lookalike": 0},
                     predecessor="sig")  # the history is the lineage's: sig2 builds on sig
    organic_sha = _one(settings, "select sha256 from account_avatars where run_key = 'sig2' and account_key ="
                                 " 'planted:o0000000'")
    with transaction(settings) as conn:
        conn.execute(sa.text("update account_avatars set sha256 = :s where run_key = 'sig2' and account_key = :k"),
                     {"s": organic_sha, "k": ring_key})
        conn.execute(sa.text("insert into face_signals (sha256, detector_id, face_count, eye_alignment_distance,"
                             " gan_eye_aligned, usable_face) values (:s, :d, 1, 0.8, true, true)"),
                     {"s": organic_sha, "d": planted.DETECTOR_ID})
    aggregate_run(settings, "sig2")
    before = _signals(settings, "sig")[ring_key]
    after = _signals(settings, "sig2")[ring_key]
    assert after["avatar_changes"] == 1
    assert after["avatar_probability_max"] == before["avatar_probability"] > after["avatar_probability"]
    assert after["contributions"]["past_synthetic_avatar"] > 0
    assert after["face_gan_eye_aligned"] is True and after["face_count"] == 1
    assert after["contributions"]["gan_eye_alignment"] == 0.15
    first = _signals(settings, "sig2")
    aggregate_run(settings, "sig2")
    assert _signals(settings, "sig2") == first


def test_avatar_history_is_the_lineage_so_later_and_unrelated_runs_never_change_a_day(settings):
    """An account's avatar history is its run and that run's predecessors. A later day's avatar, or an
    unrelated investigation's, never counts in an earlier day: aggregating in any order, with any other
    runs in the database, gives the same rows (a concurrent backfill's days once differed by which of
    them had fetched its avatars first)."""
    ops = {"corepost_ring": 0, "batch": 1, "avatar_ring": 1, "lookalike": 0}
    pop = planted.generate(settings, "nightly:2026-03-01", organic=200, seed=3, operations=ops, predecessor=None)
    aggregate_run(settings, "nightly:2026-03-01")
    day1 = _signals(settings, "nightly:2026-03-01")
    ring_key = pop.operations["avatar_ring"][0][0]
    organic_sha = _one(settings, "select sha256 from account_avatars where run_key = 'nightly:2026-03-01'"
                                 " and account_key = 'planted:o0000000'")
    later = {"nightly:2026-03-02": "nightly:2026-03-01", "investigation:other": None}
    for run_key, predecessor in later.items():  # the same accounts; the ring account shows another picture
        planted.generate(settings, run_key, organic=200, seed=3, operations=ops, predecessor=predecessor)
        with transaction(settings) as conn:
            conn.execute(sa.text("update account_avatars set sha256 = :s where run_key = :r and account_key = :k"),
                         {"s": organic_sha, "r": run_key, "k": ring_key})
        aggregate_run(settings, run_key)
    aggregate_run(settings, "nightly:2026-03-01")  # a rerun of day 1 with both later runs in the database
    assert _signals(settings, "nightly:2026-03-01") == day1
    assert day1[ring_key]["avatar_changes"] == 0
    assert _signals(settings, "nightly:2026-03-02")[ring_key]["avatar_changes"] == 1  # day 1's picture, then this
    assert _signals(settings, "investigation:other")[ring_key]["avatar_changes"] == 0  # not in its lineage


def test_eye_test_counts_only_on_a_usable_face_and_the_prefilter_is_named(settings, small_run):
    """Fusion of the avatar evidence: the probe's probability always, the eye test only on a usable face
    (eyes >= 0.1 of the width apart); an avatar whose face is not usable is named, at no weight."""
    with transaction(settings) as conn:
        rows = conn.execute(sa.text("select min(account_key), avatar_sha256 from account_signals where run_key = 'sig'"
                                    " and avatar_sha256 is not null group by avatar_sha256 having count(*) = 1"
                                    " order by 1 limit 3")).all()
        for (_, sha), usable, count in zip(rows, (True, False, None), (1, 1, 0)):
            conn.execute(sa.text("insert into face_signals (sha256, detector_id, face_count, eye_alignment_distance,"
                                 " gan_eye_aligned, usable_face) values (:s, :d, :n, :dist, :al, :u)"),
                         {"s": sha, "d": planted.DETECTOR_ID, "n": count, "dist": 0.01 if count else None,
                          "al": True if count else None, "u": usable})
    aggregate_run(settings, "sig")
    signals = _signals(settings, "sig")
    usable, small, none = (signals[key] for key, _ in rows)
    assert usable["contributions"]["gan_eye_alignment"] == 0.15 and usable["face_usable"] is True
    assert "gan_eye_alignment" not in small["contributions"] and small["contributions"]["no_usable_face"] == 0
    assert small["face_usable"] is False and small["face_gan_eye_aligned"] is True
    assert "gan_eye_alignment" not in none["contributions"] and none["contributions"]["no_usable_face"] == 0
    for row in (usable, small, none):
        assert math.isclose(row["risk"], min(1.0, sum(float(v) for v in row["contributions"].values())), abs_tol=1e-9)
