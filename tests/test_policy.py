"""The scoring policy as data: typed tables validated at construction with one-line errors, recorded on
the run, read back by the SQL signals and the flag stage; the docs' weight tables pinned by literal numbers."""

from __future__ import annotations

import json
import re
from dataclasses import fields
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from conftest import REPO

from pipeline.config import (
    POLICY_VERSION,
    ClusterWeights,
    THRESHOLD_PARTS,
    EdgeWeights,
    FlagParams,
    ImageParams,
    NetworkParams,
    Policy,
    RiskWeights,
    complete_run_params,
    load_settings,
)
from pipeline.core.db import ensure_schema, transaction
from pipeline.core.runs import start_run
from pipeline.errors import UserError
from pipeline.signals.aggregate import compute_account_signals

# The numbers docs/networks.md shows; a change of policy changes this test, the docs and POLICY_VERSION together.
RISK_WEIGHTS = {"synthetic_avatar": 0.45, "past_synthetic_avatar": 0.10, "gan_eye_alignment": 0.15,
                "avatar_reuse": 0.20, "near_duplicate_avatar": 0.15, "template_handle": 0.15, "new_account": 0.10,
                "empty_bio": 0.05, "default_bio": 0.05, "few_followers": 0.05, "new_account_days": 90,
                "few_followers_below": 10}
CLUSTER_WEIGHTS = {"synthetic_share": 0.35, "burst_share": 0.25, "template_share": 0.25, "coactivity_share": 0.6,
                   "shared_image_share": 0.1, "mean_risk": 0.2, "batch_share": 0.45, "image_ring_share": 0.45}
EDGE_WEIGHTS = {"identical_avatar": 1.0, "confirmed_near_duplicate": 0.8, "creation_trait": 0.5,
                "narrowed_trait": 0.25, "identical_text": 0.3, "corroborating_base": 0.25, "corroborating_span": 0.1,
                "handle_stem": 0.5}
RULE_THRESHOLDS = {"flag_score_threshold": 0.5, "min_cluster_size": 3, "synthetic_share_rule": 0.5,
                   "burst_share_rule": 0.5, "template_share_rule": 0.5, "coactivity_share_rule": 0.5,
                   "coactivity_min_weight": 2, "coactivity_min_idf_weight": 0.4, "batch_share_rule": 0.5, "image_ring_share_rule": 0.5,
                   "pair_max_chance_share": 0.3, "coactivity_max_chance_share": 0.5}


def test_defaults_are_the_documented_numbers():
    assert RiskWeights().as_dict() == RISK_WEIGHTS
    assert ClusterWeights().as_dict() == CLUSTER_WEIGHTS
    assert {k: v for k, v in Policy().thresholds().items() if k in RULE_THRESHOLDS} == RULE_THRESHOLDS
    assert EdgeWeights().as_dict() == EDGE_WEIGHTS
    assert POLICY_VERSION == 8


def _doc_table(heading: str) -> dict[str, float]:
    """`| name | weight | ... |` rows of the first table after the heading in docs/networks.md."""
    text = (REPO / "docs" / "networks.md").read_text(encoding="utf-8")
    section = text[text.index(heading):]
    table = re.search(r"((?:^\|.*\|\n)+)", section, re.MULTILINE).group(1)
    rows = {}
    for line in table.splitlines()[2:]:
        cells = [c.strip().strip("`") for c in line.strip("|").split("|")]
        rows[cells[0]] = float(cells[1])
    return rows


def test_docs_weight_tables_show_the_policy():
    assert _doc_table("Risk weights (`[risk_weights]`") == {k: float(v) for k, v in RISK_WEIGHTS.items()}
    assert _doc_table("Cluster weights (`[cluster_weights]`") == CLUSTER_WEIGHTS
    assert _doc_table("Edge weights (`EdgeWeights`") == EDGE_WEIGHTS


@pytest.mark.parametrize("table,values,message", [
    (NetworkParams, {"min_cluster_size": "many"}, "network parameter min_cluster_size must be an integer, got 'many'"),
    (NetworkParams, {"min_cluster_size": 2.9}, "network parameter min_cluster_size must be an integer, got 2.9"),
    (NetworkParams, {"co_min_weight": "2"}, "network parameter co_min_weight must be an integer, got '2'"),
    (FlagParams, {"flag_score_threshold": True}, "must be a number, got True"),
    (NetworkParams, {"co_window_seconds": -1}, "network parameter co_window_seconds must be at least 0, got -1"),
    (FlagParams, {"flag_score_threshold": 1.5}, "flag_score_threshold must be at most 1, got 1.5"),
    (NetworkParams, {"co_min_weight": 0}, "co_min_weight must be at least 1, got 0"),
    (NetworkParams, {"burst_factor": float("nan")}, "burst_factor must be a finite number"),
    (NetworkParams, {"min_cluster_sise": 5}, "unknown network parameter(s) ['min_cluster_sise']"),
    (RiskWeights, {"empty_bio": -0.05}, "risk_weights parameter empty_bio must be at least 0, got -0.05"),
    (RiskWeights, {"synthetic_avatar": 2}, "synthetic_avatar must be at most 1, got 2"),
    (RiskWeights, {"new_account_days": 90.5}, "new_account_days must be an integer, got 90.5"),
    (ClusterWeights, {"coactivity_share": "high"}, "cluster_weights parameter coactivity_share must be a number"),
    (ClusterWeights, {"bursts": 0.2}, "unknown cluster_weights parameter(s) ['bursts']"),
    (EdgeWeights, {"identical_text": -0.3}, "edge_weights parameter identical_text must be at least 0, got -0.3"),
    (EdgeWeights, {"text": 0.3}, "unknown edge_weights parameter(s) ['text']"),
])
def test_bad_values_are_one_line_errors(table, values, message):
    with pytest.raises(UserError) as err:
        table.from_mapping(values)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_construction_validates_too_and_ints_widen_to_floats():
    with pytest.raises(UserError, match="co_min_weight must be at least 1"):
        NetworkParams(co_min_weight=0)
    p = SimpleNamespace(**Policy().with_thresholds({"burst_factor": 5, "flag_score_threshold": 1}).thresholds())
    assert isinstance(p.burst_factor, float) and p.burst_factor == 5.0 and p.flag_score_threshold == 1.0


def test_toml_tables_fill_the_policy(tmp_path):
    (tmp_path / "config.toml").write_text("[network]\nflag_score_threshold = 0.6\n[risk_weights]\nempty_bio = 0.0\n"
                                          "[cluster_weights]\ncoactivity_share = 0.7\n")
    policy = load_settings(env={"PROFILE_AUDIT_HOME": str(tmp_path)}).policy()
    assert (policy.flag.flag_score_threshold, policy.risk.empty_bio, policy.cluster.coactivity_share) == (0.6, 0.0, 0.7)
    (tmp_path / "config.toml").write_text('[risk_weights]\nempty_bio = "some"\n')
    with pytest.raises(UserError, match="risk_weights parameter empty_bio must be a number, got 'some'"):
        load_settings(env={"PROFILE_AUDIT_HOME": str(tmp_path)})


def test_edge_weights_are_recorded_and_read_back():
    """A run records the edge weights with the rest of its policy; a run recorded before they were part of
    it (policy version 4) reads the defaults, which are the numbers version 4 had as constants."""
    policy = Policy(edge=EdgeWeights(identical_text=0.35, creation_trait=0.6))
    assert Policy.from_run_params(policy.run_params()) == policy
    assert policy.run_params()["edge_weights"]["identical_text"] == 0.35
    v4 = {k: v for k, v in Policy().run_params().items() if k != "edge_weights"} | {"policy_version": 4}
    assert Policy.from_run_params(v4).edge == EdgeWeights() and Policy.from_run_params(v4).version == 4
    assert complete_run_params({})["edge_weights"] == EDGE_WEIGHTS


def test_start_run_records_the_edge_weights(settings):
    ensure_schema(settings)
    start_run(settings, "run:edges", params=Policy(edge=EdgeWeights(identical_avatar=0.9)).run_params())
    with transaction(settings) as conn:
        recorded = conn.execute(sa.text("select params from runs where run_key = 'run:edges'")).scalar()
    assert recorded["edge_weights"] == {**EDGE_WEIGHTS, "identical_avatar": 0.9}
    assert Policy.from_run_params(recorded).edge.identical_avatar == 0.9


class _Rollback(Exception):
    pass


def test_sql_signals_read_nothing_from_runs(settings):
    """The SQL function gets the policy, detector, as-of time and lineage as arguments: with the runs table
    out of reach it computes the same, and the weights are the ones passed, not the ones recorded."""
    ensure_schema(settings)
    start_run(settings, "run:args", params={"as_of": "2026-01-01T00:00:00Z"})
    passed = Policy(risk=RiskWeights(empty_bio=0.25, few_followers=0.04, few_followers_below=50))
    with pytest.raises(_Rollback), transaction(settings) as conn:
        _account(conn, "run:args", "x:a", "", 20)
        conn.execute(sa.text("alter table runs rename to runs_out_of_reach"))
        count = conn.execute(
            sa.text("select compute_account_signals('run:args', cast(:p as jsonb), null,"
                    " '2026-01-01T00:00:00Z', array['run:args'])"),
            {"p": json.dumps(passed.signal_arguments())}).scalar_one()
        got = conn.execute(sa.text("select contributions, account_age_days from account_signals"
                                   " where run_key = 'run:args'")).one()
        raise _Rollback
    assert count == 1
    assert got.contributions == {"empty_bio": 0.25, "few_followers": 0.04}  # recorded: 0.05, and 20 >= 10
    assert float(got.account_age_days) == 2192.0  # 2020-01-01 to the as-of time passed


def test_run_params_round_trip_and_completion():
    policy = Policy(NetworkParams(min_cluster_size=4), RiskWeights(empty_bio=0.0), ClusterWeights(mean_risk=0.1))
    assert Policy.from_run_params(policy.run_params()) == policy
    completed = complete_run_params({"network": {"min_cluster_size": 4, "retired_parameter": 1}, "detector": "d"})
    assert completed["detector"] == "d" and completed["policy_version"] == POLICY_VERSION
    assert completed["network"]["min_cluster_size"] == 4 and "retired_parameter" not in completed["network"]
    assert completed["risk_weights"] == RISK_WEIGHTS and completed["cluster_weights"] == CLUSTER_WEIGHTS
    assert set(completed["network"]) == {f.name for f in fields(NetworkParams)}


def _account(conn, run_key: str, key: str, bio: str, followers: int) -> None:
    conn.execute(sa.text("insert into accounts (account_key, platform, account_id, first_seen_run)"
                         " values (:k, 'x', :k, :r) on conflict do nothing"), {"k": key, "r": run_key})
    conn.execute(sa.text("insert into account_snapshots (run_key, account_key, handle, bio, followers, following,"
                         " created_at, source_file, source_locator) values (:r, :k, :k, :b, :f, 5,"
                         " '2020-01-01T00:00:00Z', 't', :k)"), {"r": run_key, "k": key, "b": bio, "f": followers})


def test_sql_signals_use_the_recorded_risk_weights(settings):
    """The same account under two runs with different recorded weights gets the weights of its run."""
    ensure_schema(settings)
    start_run(settings, "run:default", params={"as_of": "2026-01-01T00:00:00Z"})
    custom = Policy(risk=RiskWeights(empty_bio=0.3, few_followers=0.02, few_followers_below=50))
    start_run(settings, "run:custom", params={**custom.run_params(), "as_of": "2026-01-01T00:00:00Z"})
    with transaction(settings) as conn:
        for run in ("run:default", "run:custom"):
            _account(conn, run, "x:a", "", 20)
            params = conn.execute(sa.text("select params from runs where run_key = :k"), {"k": run}).scalar()
            compute_account_signals(conn, run, Policy.from_run_params(params))
        got = dict(conn.execute(sa.text("select run_key, contributions from account_signals"
                                        " where account_key = 'x:a'")).all())
        recorded = conn.execute(sa.text("select params from runs where run_key = 'run:custom'")).scalar()
    assert got["run:default"] == {"empty_bio": 0.05}  # 20 followers: not below 10
    assert got["run:custom"] == {"empty_bio": 0.3, "few_followers": 0.02}  # 20 is below 50
    assert recorded["risk_weights"]["empty_bio"] == 0.3 and recorded["policy_version"] == POLICY_VERSION


def test_sql_refuses_a_run_without_its_policy(settings):
    ensure_schema(settings)
    start_run(settings, "run:bare")
    with transaction(settings) as conn:
        conn.execute(sa.text("update runs set params = params #- '{risk_weights,empty_bio}' where run_key = 'run:bare'"))
    with pytest.raises(sa.exc.DBAPIError, match=r"run policy has no value at \{risk_weights,empty_bio\}"), \
            transaction(settings) as conn:
        # the values as recorded, passed as the SQL's argument: the SQL has no default to fall back on
        conn.execute(sa.text("select compute_account_signals(run_key, params, detector_id, null, array[run_key])"
                             " from runs where run_key = 'run:bare'"))


def test_each_threshold_belongs_to_one_part():
    """The [network] table, the DAG Params and old run rows name the thresholds flat; THRESHOLD_PARTS sends
    each to the one part that defines it."""
    parts = {"network": NetworkParams, "image": ImageParams, "flag": FlagParams}
    names = [f.name for kind in parts.values() for f in fields(kind)]
    assert len(names) == len(set(names)) == len(THRESHOLD_PARTS)
    assert all(THRESHOLD_PARTS[f.name] == part for part, kind in parts.items() for f in fields(kind))
    assert THRESHOLD_PARTS["near_dup_max_distance"] == "image" and THRESHOLD_PARTS["status_keep_jaccard"] == "flag"
    with pytest.raises(UserError, match=r"unknown network parameter\(s\) \['near_dup_max_distanse'\]"):
        Policy().with_thresholds({"near_dup_max_distanse": 4})


def test_a_run_recorded_before_a_threshold_existed_is_scored_as_its_version_did():
    """coactivity_max_chance_share came with version 8: a version-7 run row without it keeps version 7's rule
    (every gated co-activity edge counts: 1.0), a version-8 row without it gets the default, and a recorded value
    wins either way."""
    flag = {k: v for k, v in Policy().run_params()["flag"].items() if k != "coactivity_max_chance_share"}
    assert Policy.from_run_params({"flag": flag, "policy_version": 7}).flag.coactivity_max_chance_share == 1.0
    assert Policy.from_run_params({"flag": flag, "policy_version": 8}).flag.coactivity_max_chance_share == 0.5
    recorded = {"flag": {**flag, "coactivity_max_chance_share": 0.2}, "policy_version": 7}
    assert Policy.from_run_params(recorded).flag.coactivity_max_chance_share == 0.2


def test_a_run_recorded_before_the_split_loads_into_the_parts():
    """A version-5 run row holds every threshold in ``network``: each comes back in its part."""
    flat = {**Policy().thresholds(), "near_dup_max_distance": 4, "flag_score_threshold": 0.6,
            "leiden_min_size": 50, "retired_parameter": 1}
    old = Policy.from_run_params({"network": flat, "policy_version": 5})
    assert (old.image.near_dup_max_distance, old.flag.flag_score_threshold, old.network.leiden_min_size) == (4, 0.6, 50)
    assert old.version == 5 and old.thresholds() == {k: v for k, v in flat.items() if k != "retired_parameter"}
    completed = complete_run_params({"network": flat})
    assert completed["image"]["near_dup_max_distance"] == 4 and completed["flag"]["flag_score_threshold"] == 0.6
    assert set(completed["network"]) == {f.name for f in fields(NetworkParams)}


def test_the_network_table_fills_the_three_parts(tmp_path):
    (tmp_path / "config.toml").write_text("[network]\nmin_cluster_size = 4\nclip_min_cosine = 0.9\n"
                                          "status_keep_jaccard = 0.7\n")
    policy = load_settings(env={"PROFILE_AUDIT_HOME": str(tmp_path)}).policy()
    assert (policy.network.min_cluster_size, policy.image.clip_min_cosine, policy.flag.status_keep_jaccard) == (4, 0.9, 0.7)
    assert Policy.from_run_params(policy.run_params()) == policy
