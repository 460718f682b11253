"""Flags: the cluster score and its explanation, the rules, and investigator statuses that carry to the
next run unless the cluster's membership changed materially."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
import sqlalchemy as sa

from pipeline.config import ClusterWeights, NetworkParams, Policy
from pipeline.core.db import transaction
from pipeline.flags.rules import assess_cluster, list_flags, set_flag_status
from pipeline.testing import planted

T0 = datetime(2025, 5, 1, tzinfo=UTC)


def _member(i, label=False, sha=None, template=None, digits=0, risk=0.1, day=0):
    return {"account_key": f"p:{i:03d}", "created_at": T0 + timedelta(days=day), "avatar_label": label,
            "avatar_sha256": sha, "avatar_probability": 0.9 if label else 0.05, "risk": risk,
            "handle_template": template, "handle_digits": digits}


def test_score_is_the_documented_weighted_sum():
    policy = Policy()
    members = [_member(i, label=i < 3, sha="s1" if i < 2 else None, template="a_a+8digits", digits=8, day=i % 2)
               for i in range(4)]
    edges = [{"edge_type": "identical_avatar", "a_key": "p:000", "b_key": "p:001", "weight": 1.0, "evidence": {}},
             {"edge_type": "co_repost", "a_key": "p:002", "b_key": "p:003", "weight": 3, "evidence": {}},
             {"edge_type": "creation_window", "a_key": "p:000", "b_key": "p:002", "weight": 0.5, "evidence": {}}]
    a = assess_cluster("c1", members, edges, policy)
    shares = {"synthetic_share": 0.75, "burst_share": 0.5, "template_share": 1.0, "coactivity_share": 0.5,
              "shared_image_share": 0.5, "mean_risk": 0.1, "batch_share": 0.5}
    assert {k: a.features[k] for k in shares} == shares and a.features["image_ring_share"] == 0.0
    weights = ClusterWeights().as_dict()
    assert a.features["score_contributions"] == {k: round(weights[k] * v, 4) for k, v in shares.items()}
    assert a.score == min(1.0, round(sum(a.features["score_contributions"].values()), 4))
    assert set(a.rules) == {"synthetic_faces", "batch_created", "templated_handles", "coordinated_activity"}
    assert a.features["density"] == 0.5 and a.features["edge_types"] == {"co_repost": 1, "creation_window": 1,
                                                                          "identical_avatar": 1}


def test_shared_logo_alone_stays_below_the_threshold():
    policy = Policy()
    params = policy.flag
    members = [_member(i, sha="logo", risk=0.2, day=400 * i) for i in range(10)]
    edges = [{"edge_type": "identical_avatar", "a_key": "p:000", "b_key": f"p:{i:03d}", "weight": 1.0, "evidence": {}}
             for i in range(1, 10)]
    a = assess_cluster("c2", members, edges, policy)
    assert "shared_avatar" in a.rules and a.score < params.flag_score_threshold


def _flag_of(settings, run_key, members):
    """The flag whose cluster holds all of ``members`` (the two planted rings may share a cluster)."""
    for f in list_flags(settings, run_key=run_key):
        if set(members) <= {f"{m['platform']}:{m['account_id']}" for m in f["members"]}:
            return f
    raise AssertionError(f"no flag holds {members}")


@pytest.fixture
def two_days(settings):
    """Day 1 audited and reviewed; day 2 the same population, except that one batch grew by 16 accounts."""
    pop = planted.generate(settings, "day1", organic=300, seed=4)
    planted.run_network_stages(settings, "day1")
    ring, batch, corepost = pop.operations["avatar_ring"][0], pop.operations["batch"][0], pop.operations["corepost_ring"][0]
    reviewed = {"ring": _flag_of(settings, "day1", ring), "batch": _flag_of(settings, "day1", batch),
                "corepost": _flag_of(settings, "day1", corepost)}
    set_flag_status(settings, reviewed["ring"]["flag_id"], "confirmed", note="same four faces, takedown filed")
    set_flag_status(settings, reviewed["batch"]["flag_id"], "dismissed", note="a school's class accounts")
    set_flag_status(settings, reviewed["corepost"]["flag_id"], "escalated", note="to the elections desk")
    planted.generate(settings, "day2", organic=300, seed=4)
    with transaction(settings) as conn:  # day 2: the batch grows by 16 accounts created the same day
        conn.execute(sa.text(
            "update account_snapshots s set created_at = b.created_at + interval '1 hour', handle = b.handle || 'x'"
            " from account_snapshots b where s.run_key = 'day2' and b.run_key = 'day2'"
            " and b.account_key = :first and s.account_key = any(:extra)"),
            {"first": batch[0], "extra": [f"planted:o{i:07d}" for i in range(16)]})
        conn.execute(sa.text("update account_snapshots set handle = 'kofi_ali' || (12345670 + row_number)::text"
                             " from (select account_key k, row_number() over (order by account_key) from"
                             " account_snapshots where run_key = 'day2' and account_key = any(:extra)) n"
                             " where run_key = 'day2' and account_key = n.k"),
                     {"extra": [f"planted:o{i:07d}" for i in range(16)]})
    planted.run_network_stages(settings, "day2")
    return pop, reviewed


def test_statuses_carry_over_unless_membership_changed(settings, two_days):
    pop, reviewed = two_days
    ring = _flag_of(settings, "day2", pop.operations["avatar_ring"][0])
    assert ring["flag_id"] != reviewed["ring"]["flag_id"] and ring["cluster_id"] == reviewed["ring"]["cluster_id"]
    assert (ring["status"], ring["status_note"]) == ("confirmed", "same four faces, takedown filed")
    corepost = _flag_of(settings, "day2", pop.operations["corepost_ring"][0])
    assert corepost["status"] == "escalated"
    grown = [f for f in list_flags(settings, run_key="day2") if f["cluster_id"] == reviewed["batch"]["cluster_id"]]
    assert len(grown) == 1, "the grown batch keeps its cluster id (Jaccard about 30/46 >= 0.5)"
    batch = grown[0]
    members = {f"{m['platform']}:{m['account_id']}" for m in batch["members"]}
    grew_by = len(members) - len(pop.operations["batch"][0])
    assert set(pop.operations["batch"][0]) | {f"planted:o{i:07d}" for i in range(16)} <= members
    assert batch["status"] == "new" and batch["status_note"].startswith("re-opened: was dismissed")
    assert f"+{grew_by} -0 members" in batch["status_note"] and "a school's class accounts" in batch["status_note"]


def test_rerun_of_a_day_keeps_its_statuses(settings, two_days):
    pop, _ = two_days
    ring = _flag_of(settings, "day2", pop.operations["avatar_ring"][0])
    set_flag_status(settings, ring["flag_id"], "dismissed", note="changed my mind")
    planted.generate(settings, "day2", organic=300, seed=4)
    planted.run_network_stages(settings, "day2")
    again = _flag_of(settings, "day2", pop.operations["avatar_ring"][0])
    assert (again["status"], again["status_note"]) == ("dismissed", "changed my mind")


@pytest.mark.slow
def test_investigate_dag_params_cover_every_network_parameter(airflow_db, settings):
    """Every threshold of the network and flag stages is a Param of the investigate DAG, and a value
    given there is the one the stages use (and record on the run)."""
    from airflow.dag_processing.dagbag import DagBag
    from conftest import REPO

    from pipeline.airflow.tasks import policy_from_params

    dag = DagBag(str(REPO / "dags")).get_dag("profile_audit_investigate")
    names = set(Policy().thresholds())  # the network, image and flag parts' thresholds, by flat name
    assert names <= set(dag.params)
    chosen = {"near_dup_max_distance": 4, "clip_min_cosine": 0.9, "leiden_min_size": 50, "status_keep_jaccard": 0.7,
              "burst_p_value": 0.001}
    policy = policy_from_params({**{n: None for n in names}, **chosen}, settings)
    params = SimpleNamespace(**policy.thresholds())
    assert {k: getattr(params, k) for k in chosen} == chosen
    assert params.min_cluster_size == NetworkParams().min_cluster_size  # empty Param: the configured value
