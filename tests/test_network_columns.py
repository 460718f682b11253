"""The networks stage at millions of accounts holds traits as columns and builds one trait kind at a time
(pipeline/networks/traits.py), groups avatars in the database, and streams handles: its edges must be
the very ones the in-memory builders gave. The reference builders below are the dataclass code the
columns replaced (one ``by_trait`` dict over every kind); each new path is compared with them on planted
populations in PostgreSQL, on both sides of the streaming chunk size."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from pipeline.config import EdgeWeights, ImageParams, NetworkParams
from pipeline.core.db import transaction
from pipeline.networks import build as B
from pipeline.networks import crossplatform as X
from pipeline.networks import edges as E
from pipeline.networks.bursts import Population, burst_test, date_windows
from pipeline.networks.traits import TraitColumns, kind_rows, load_columns
from pipeline.testing import planted

CHUNKS = (7, 20_000)  # a chunk far below the run's size (many fetches), and one above it (one fetch)


def _reference_window(accounts: Iterable[E.AccountTraits], params: NetworkParams, weights: EdgeWeights | None = None,
                      baseline: np.ndarray | None = None) -> list[E.Edge]:
    """``creation_window_edges`` before the columns: every trait value of every kind in one dict."""
    window = params.creation_window_hours * 3600
    used = {"creation_window_hours": params.creation_window_hours, "min_template_digits": params.min_template_digits,
            "burst_factor": params.burst_factor, "burst_p_value": params.burst_p_value,
            "burst_smoothing_days": params.burst_smoothing_days, "count_profile_bin": params.count_profile_bin,
            "count_profile_min_count": params.count_profile_min_count,
            "burst_max_chance_share": params.burst_max_chance_share, "burst_refine_bin": params.burst_refine_bin,
            "min_cluster_size": params.min_cluster_size}
    dated = [a for a in accounts if a.created_at is not None]
    own = np.array([a.created_at.timestamp() for a in dated], dtype=np.float64)
    population = Population.of(own if baseline is None else np.concatenate([own, np.asarray(baseline, np.float64)]))
    by_trait: dict[tuple[str, str], list[tuple[E.AccountTraits, dict[str, Any]]]] = defaultdict(list)
    for acc in dated:
        for trait, value, extra in E.account_trait_values(acc, params):
            by_trait[(trait, value)].append((acc, extra))
    tested: dict[str, int] = defaultdict(int)
    for (trait, _), members in by_trait.items():
        tested[trait] += E.distinct_windows([m[0].created_at.timestamp() for m in members])
    edges: dict[tuple[str, str], E.Edge] = {}
    for (trait, value), members in sorted(by_trait.items()):
        if len(members) < params.min_cluster_size:
            continue
        members.sort(key=lambda m: (m[0].created_at, m[0].account_key))
        times = np.array([m[0].created_at.timestamp() for m in members])
        min_count = max(params.min_cluster_size, params.count_profile_min_count if trait in E.PROFILE_TRAITS else 0)
        windows = date_windows(times, window)
        test = burst_test(times, population, windows, params.burst_smoothing_days * 86400, min_count,
                          params.burst_factor, params.burst_p_value, tested[trait])
        chance = test.chance_share
        clean = test.bursting & (chance <= params.burst_max_chance_share)
        for k in np.flatnonzero(clean[:-1] & clean[1:]):
            (prev, extra), (cur, _) = members[k], members[k + 1]
            delta = (cur.created_at - prev.created_at).total_seconds()
            if delta > min(windows[k], windows[k + 1]):
                continue
            key = tuple(sorted((prev.account_key, cur.account_key)))
            weaker = k if test.p_value[k] >= test.p_value[k + 1] else k + 1
            burst = {"value": value if trait != "synthetic_avatar" else None, **extra,
                     "observed": int(test.observed[weaker]), "expected": round(float(test.expected[weaker]), 4),
                     "chance_share": round(float(chance[weaker]), 4), "p_value": float(f"{test.p_value[weaker]:.3g}")}
            old = edges.get(key)
            bursts = dict(old.evidence["bursts"]) if old else {}
            if trait in bursts and bursts[trait]["p_value"] <= burst["p_value"]:
                continue
            bursts[trait] = burst
            evidence = {"traits": sorted(bursts), "bursts": dict(sorted(bursts.items())),
                        "created_at": [prev.created_at.isoformat(), cur.created_at.isoformat()],
                        "delta_hours": round(delta / 3600, 3)}
            edges[key] = E.Edge.between(E.CREATION_WINDOW, *key, E.creation_weight(bursts, weights), used, evidence)
    return list(edges.values())


def _reference_batch(accounts: Iterable[E.AccountTraits], params: NetworkParams) -> list[E.Edge]:
    """``creation_batch_edges`` before the columns."""
    window = params.creation_window_hours * 3600
    used = {"creation_window_hours": params.creation_window_hours, "count_profile_min_count": params.count_profile_min_count,
            "burst_refine_bin": params.burst_refine_bin, "count_profile_bin": params.count_profile_bin,
            "min_template_digits": params.min_template_digits, "baseline": "none"}
    by_trait: dict[tuple[str, str], list[tuple[E.AccountTraits, dict[str, Any]]]] = defaultdict(list)
    for acc in accounts:
        if acc.created_at is not None:
            for trait, value, extra in E.account_trait_values(acc, params):
                if trait in E.BATCH_TRAITS:
                    by_trait[(trait, value)].append((acc, extra))
    min_count = max(params.min_cluster_size, params.count_profile_min_count)
    edges: dict[tuple[str, str], E.Edge] = {}
    for (trait, value), members in sorted(by_trait.items()):
        if len(members) < min_count:
            continue
        members.sort(key=lambda m: (m[0].created_at, m[0].account_key))
        times = np.array([m[0].created_at.timestamp() for m in members])
        windows = date_windows(times, window)
        observed = np.searchsorted(times, times + windows / 2, side="right") - np.searchsorted(times, times - windows / 2)
        batch = observed >= min_count
        for k in np.flatnonzero(batch[:-1] & batch[1:]):
            (prev, extra), (cur, _) = members[k], members[k + 1]
            delta = (cur.created_at - prev.created_at).total_seconds()
            if delta > min(windows[k], windows[k + 1]):
                continue
            key = tuple(sorted((prev.account_key, cur.account_key)))
            old = edges.get(key)
            bursts = dict(old.evidence["bursts"]) if old else {}
            bursts[trait] = {"value": value, **extra, "observed": int(min(observed[k], observed[k + 1])), "tested": False}
            evidence = {"traits": sorted(bursts), "bursts": dict(sorted(bursts.items())), "baseline": "none",
                        "created_at": [prev.created_at.isoformat(), cur.created_at.isoformat()],
                        "delta_hours": round(delta / 3600, 3)}
            edges[key] = E.Edge.between(E.CREATION_WINDOW, *key, E.creation_weight(bursts), used, evidence)
    return list(edges.values())


def _reference_text(accounts: Iterable[E.AccountTraits], params: NetworkParams) -> list[E.Edge]:
    """``identical_text_edges`` before the columns."""
    used = {"identical_text_max_group": params.identical_text_max_group, "min_bio_chars": E.MIN_BIO_CHARS}
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for acc in accounts:
        if (bio := E.normalised_bio(acc.bio)) is not None:
            groups[(E.IDENTICAL_BIO, bio)].append(acc.account_key)
        if (link := E.normalised_link(acc.url)) is not None:
            groups[(E.IDENTICAL_LINK, link)].append(acc.account_key)
    edges = []
    for (edge_type, value), members in sorted(groups.items()):
        if not 2 <= len(members) <= params.identical_text_max_group:
            continue
        members.sort()
        evidence = {"value": value, "group_size": len(members)}
        edges += [E.Edge(edge_type, a, b, EdgeWeights().identical_text, used, evidence)
                  for i, a in enumerate(members) for b in members[i + 1:]]
    return edges


@pytest.fixture
def hard_run(settings):
    """Issue 10's population without the kinds that need real photos: busy days, a common template,
    every other kind, and personas on three platforms."""
    ops = {"batch": 1, "avatar_ring": 1, "corepost_ring": 1, "rare_batch": 1, "profile_batch": 1,
           "cohashtag_ring": 1, "corepost_pair": 2, "xp_persona": 1}
    planted.generate(settings, "hard", organic=900, seed=21, operations=ops, posts_per_account=1.0,
                     mix=planted.OrganicMix(busy_days=3, busy_share=0.04, common_template_share=0.1))
    planted.run_network_stages(settings, "hard")
    return "hard"


@pytest.fixture
def io_run(settings):
    """An IO-like users file: date-only creation times, no templates or avatars, sign-up profiles."""
    planted.generate(settings, "io", organic=700, seed=22, operations=planted.IO_OPERATIONS, posts_per_account=0.0,
                     mix=planted.OrganicMix.io())
    planted.run_network_stages(settings, "io")
    return "io"


def _rows(edges: list[E.Edge]) -> list[tuple]:
    return [(e.edge_type, e.a_key, e.b_key, e.weight, json.dumps(e.params, sort_keys=True),
             json.dumps(e.evidence, sort_keys=True)) for e in edges]


@pytest.mark.parametrize("chunk", CHUNKS)
def test_columns_give_the_in_memory_edges_on_a_hard_population(settings, hard_run, chunk):
    params = settings.network
    with transaction(settings) as conn:
        traits = B.load_traits(conn, hard_run)
        cols = load_columns(conn, hard_run, chunk=chunk)
    expected = _reference_window(traits, params)
    kinds = {t for e in expected for t in e.evidence["traits"]}
    assert len(expected) > 100 and {"handle_template", "count_profile"} <= kinds and any("+" in t for t in kinds)
    got = E.creation_window_edges(cols, params)
    assert _rows(got) == _rows(expected)  # every column, in the same order
    assert _rows(E.identical_text_edges(cols, params)) == _rows(_reference_text(traits, params))
    assert _rows(E.creation_window_edges(traits, params)) == _rows(expected)  # the dataclass entry point too


@pytest.mark.parametrize("chunk", CHUNKS)
def test_columns_give_the_in_memory_edges_on_dates_only(settings, io_run, chunk):
    params = settings.network
    with transaction(settings) as conn:
        traits = B.load_traits(conn, io_run)
        cols = load_columns(conn, io_run, chunk=chunk)
    window = _reference_window(traits, params)
    batches = _reference_batch(traits, params)
    assert window and batches and {t for e in window for t in e.evidence["traits"]} >= {"signup_profile"}
    assert _rows(E.creation_window_edges(cols, params)) == _rows(window)
    assert _rows(E.creation_batch_edges(cols, params)) == _rows(batches)
    baseline = np.array([a.created_at.timestamp() for a in traits[::3]])  # a pinned run's times join the population
    assert _rows(E.creation_window_edges(cols, params, baseline=baseline)) == _rows(
        _reference_window(traits, params, baseline=baseline))


def test_kind_rows_are_account_trait_values(settings, hard_run):
    """Every (account, trait, value, extra) the per-kind columns give is one ``account_trait_values`` gives."""
    params = settings.network
    with transaction(settings) as conn:
        traits = B.load_traits(conn, hard_run)
        cols = load_columns(conn, hard_run)
    expected = sorted((a.account_key, t, v, json.dumps(x, sort_keys=True))
                      for a in traits if a.created_at is not None for t, v, x in E.account_trait_values(a, params))
    got = sorted((cols.key(int(i)), rows.kind, rows.values[c], json.dumps(rows.extras[c], sort_keys=True))
                 for rows in kind_rows(cols, params) for c, i in zip(rows.code.tolist(), rows.account.tolist()))
    assert len(expected) > 3 * len(traits) and got == expected
    assert [cols.created(i) for i in range(len(cols))] == [a.created_at for a in traits]
    assert [cols.created(i).isoformat() for i in range(len(cols))] == [a.created_at.isoformat() for a in traits]


def test_avatar_groups_from_the_database_are_the_in_memory_groups(settings, hard_run):
    image = ImageParams(identical_avatar_max_group=3)  # both sides of the default-avatar cap
    with transaction(settings) as conn:
        traits = B.load_traits(conn, hard_run)
        shared = B.shared_avatar_groups(conn, hard_run, image)
        every = E.image_groups(traits, image)
        some = sorted(every)[::7]
        assert B.avatar_groups_of(conn, hard_run, some, image) == {s: every[s] for s in some}
    assert shared == {s: g for s, g in every.items() if len(g) >= 2} and shared
    assert E.identical_avatar_edges_of(shared, image) == E.identical_avatar_edges(traits, image)


@pytest.mark.parametrize("chunk", CHUNKS)
def test_streamed_handles_give_every_same_stem_edge(settings, hard_run, chunk):
    params = settings.network
    with transaction(settings) as conn:
        every = [X.Handle(r.account_key, r.platform, r.handle) for r in conn.execute(sa.text(
            "select s.account_key, a.platform, s.handle from account_snapshots s join accounts a using (account_key)"
            " where s.run_key = :k and s.handle is not null"), {"k": hard_run})]
        kept = X.shared_stem_handles(conn, hard_run, params, chunk=chunk)
    expected = X.same_handle_stem_edges(every, params)
    assert expected and len(kept) < len(every) / 4
    assert X.same_handle_stem_edges(kept, params) == expected


def test_columns_of_hand_made_accounts_keep_naive_times_and_missing_values():
    from datetime import datetime

    accounts = [E.AccountTraits("p:b", datetime(2024, 3, 1, 12), None, None, None, 0, "  "),
                E.AccountTraits("p:a", None, "x", True, "a+8digits", 8, None, "https://x.org/", 5, None, 2, "EN", "Paris")]
    cols = TraitColumns.of(accounts)
    assert [cols.key(0), cols.key(1)] == ["p:a", "p:b"]
    assert not cols.dated[0] and cols.created(1) == datetime(2024, 3, 1, 12)
    assert cols.counts["following"].tolist() == [-1, -1] and cols.no_bio.tolist() == [True, True]
    assert cols.links == ["x.org"] and cols.languages == ["en"] and cols.has_avatar.tolist() == [True, False]
