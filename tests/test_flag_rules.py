"""Contract test of the flag-rule registry: every registered rule has a valid name, a summary, a threshold
that is a policy parameter, a positive case here that fires it with a reason, and stays silent on a
bland cluster; the docs list exactly the registered rules."""

from __future__ import annotations

from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from conftest import REPO

from pipeline.config import ClusterWeights, FlagParams, Policy
from pipeline.core.db import transaction
from pipeline.core.registry import NAME_RE
from pipeline.flags.rules import FLAG_RULES, FlagRule, assess_cluster, cluster_facts, flag_rule, flag_run
from pipeline.testing import planted

T0 = datetime(2025, 5, 1, tzinfo=UTC)


def _member(i, label=None, sha=None, template=None, digits=0, day=None):
    return {"account_key": f"p:{i:03d}", "created_at": T0 + timedelta(days=400 * i if day is None else day),
            "avatar_label": label, "avatar_sha256": sha, "avatar_probability": 0.9 if label else 0.05, "risk": 0.1,
            "handle_template": template, "handle_digits": digits}


def _chain(edge_type, n, weight=1.0, params=None):
    return [{"edge_type": edge_type, "a_key": f"p:{i:03d}", "b_key": f"p:{i + 1:03d}", "weight": weight,
             "params": params or {}, "evidence": {}} for i in range(n - 1)]


# One positive case per rule: (members, edges). A rule without a case here fails the contract test.
POSITIVE = {
    "shared_avatar": ([_member(i, sha="s1") for i in range(4)], _chain("identical_avatar", 4)),
    "synthetic_faces": ([_member(i, label=True) for i in range(4)], _chain("similar_embedding", 4, 0.5)),
    "batch_created": ([_member(i, day=3) for i in range(4)], _chain("creation_window", 4, 0.5)),
    "templated_handles": ([_member(i, template="a_a+8digits", digits=8) for i in range(4)], _chain("identical_bio", 4)),
    "coordinated_activity": ([_member(i) for i in range(4)], _chain("co_repost", 4, 2)),
    "image_ring": ([_member(i, sha=f"s{i}") for i in range(4)], _chain("confirmed_near_duplicate", 4, 0.8)),
    "coordinated_pair": ([_member(i) for i in range(2)], [{**_chain("co_repost", 2, 3)[0], "evidence": {
        "idf_weight_a_to_b": 2.5, "idf_weight_b_to_a": 2.4, "examples": [],
        "chance": {"expected_co_occurrences": 0.002, "p_value": 1e-9, "expected_chance_pairs": 0.01,
                   "pairs_as_unlikely": 4, "chance_share": 0.0025}}}]),
}


def _bland():
    return [_member(i) for i in range(4)], _chain("identical_bio", 4, 0.5)


def test_every_rule_keeps_the_contract():
    params = Policy()
    assert set(POSITIVE) == set(FLAG_RULES.names()), "add a positive case for each registered rule"
    threshold_names = {f.name for f in fields(FlagParams)}
    for name, rule in FLAG_RULES.items():
        assert isinstance(rule, FlagRule) and rule.name == name and NAME_RE.match(name)
        assert rule.summary and rule.summary == rule.summary.strip()
        assert rule.threshold is None or rule.threshold in threshold_names, (name, rule.threshold)
        members, edges = POSITIVE[name]
        why = rule.check(cluster_facts(members, edges, params), params)
        assert isinstance(why, str) and why, name
        assert name in assess_cluster("c", members, edges, params).rules
        assert rule.check(cluster_facts(*_bland(), params), params) is None, name


def test_docs_list_the_registered_rules():
    text = (REPO / "docs" / "networks.md").read_text(encoding="utf-8")
    section = text[text.index("**Flag rules**"):text.index("## Investigator workflow")]
    listed = [line.split("`")[1] for line in section.splitlines() if line.startswith("- `")]
    assert listed == list(FLAG_RULES.names())


def test_a_duplicate_rule_name_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        flag_rule("shared_avatar", "again")(lambda facts, params: None)


def test_coactivity_counts_edges_from_the_minimum_weight():
    params = Policy()
    members = [_member(i) for i in range(4)]
    assert cluster_facts(members, _chain("co_repost", 4, 2), params).shares["coactivity_share"] == 1.0
    assert cluster_facts(members, _chain("co_repost", 4, 1), params).shares["coactivity_share"] == 0.0
    stricter = Policy(flag=FlagParams(coactivity_min_weight=3))
    assert cluster_facts(members, _chain("co_reply", 4, 2), stricter).shares["coactivity_share"] == 0.0


def test_flag_run_scores_with_the_cluster_weights_it_is_given(settings):
    """The flag stage takes the policy as an argument (``RunContext.policy``, its cluster weights included);
    only without one does it read it back from the run row."""
    planted.generate(settings, "weights", organic=300, seed=4)
    planted.run_network_stages(settings, "weights")
    with transaction(settings) as conn:
        recorded = Policy.from_run_params(conn.execute(sa.text("select params from runs"
                                                               " where run_key = 'weights'")).scalar())
    by_row = flag_run(settings, "weights")
    assert by_row > 0 and flag_run(settings, "weights", recorded) == by_row
    nothing = ClusterWeights(**{k: 0 for k in ClusterWeights().as_dict()})
    assert flag_run(settings, "weights", replace(recorded, cluster=nothing)) == 0
    with transaction(settings) as conn:
        scores = conn.execute(sa.text("select max(score) from clusters where run_key = 'weights'")).scalar()
    assert scores == 0


def test_a_pair_stands_on_co_activity_that_chance_does_not_explain():
    """Two accounts below min_cluster_size are a flag of kind ``pair`` only on a qualifying co-activity edge
    whose chance share is at most pair_max_chance_share; the evidence names the edge and its chance estimate."""
    policy = Policy()
    members, edges = POSITIVE["coordinated_pair"]
    assessed = assess_cluster("c", members, edges, policy)
    assert assessed.kind == "pair" and assessed.evidence["kind"] == "pair"
    assert assessed.score >= policy.flag.flag_score_threshold
    pair = assessed.evidence["pair"]["edges"][0]
    assert pair["edge_type"] == "co_repost" and pair["chance"]["chance_share"] == 0.0025
    explained = [{**edges[0], "evidence": {**edges[0]["evidence"], "chance": {
        **edges[0]["evidence"]["chance"], "chance_share": 0.6}}}]
    assert assess_cluster("c", members, explained, policy).kind == "cluster"
    assert "coordinated_pair" not in assess_cluster("c", members, explained, policy).rules
    off = Policy(flag=FlagParams(pair_max_chance_share=0))
    assert "coordinated_pair" not in assess_cluster("c", members, edges, off).rules
    viral = [{**edges[0], "evidence": {**edges[0]["evidence"], "idf_weight_a_to_b": 0.1, "idf_weight_b_to_a": 0.2}}]
    assert "coordinated_pair" not in assess_cluster("c", members, viral, policy).rules  # the IDF gate first
    no_estimate = [{**edges[0], "evidence": {"idf_weight_a_to_b": 2.5, "idf_weight_b_to_a": 2.4}}]
    assert "coordinated_pair" not in assess_cluster("c", members, no_estimate, policy).rules  # an edge built before
    three = assess_cluster("c", [_member(i) for i in range(3)], _chain("co_repost", 3, 3), policy)
    assert three.kind == "cluster" and "coordinated_pair" not in three.rules
