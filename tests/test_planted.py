"""Planted-network tests: a generated population with known operations goes through the real signal,
edge, cluster and flag stages on PostgreSQL; flags are scored against the ground truth per kind.

Run with ``-s`` to see the precision and recall table.
"""

from __future__ import annotations

import pytest
from conftest import table_contents

from pipeline.testing import planted

PRECISION_FLOOR = 0.9
RECALL_FLOOR = 0.85


@pytest.fixture
def population(settings):
    pop = planted.generate(settings, "planted", organic=3000, seed=11)
    planted.run_network_stages(settings, "planted")
    return pop


def _print_table(metrics):
    print("\nkind            planted  flagged  precision  recall")
    for kind, m in metrics.items():
        print(f"{kind:<15} {m['planted']:>7}  {m['flagged']:>7}  {m['precision']!s:>9}  {m['recall']:>6}")


def test_planted_operations_are_flagged_and_the_lookalike_is_not(settings, population):
    metrics = planted.evaluate(settings, population)
    _print_table(metrics)
    for kind in ("batch", "avatar_ring", "corepost_ring"):
        assert metrics[kind]["recall"] >= RECALL_FLOOR, (kind, metrics[kind])
        assert metrics[kind]["precision"] is not None and metrics[kind]["precision"] >= PRECISION_FLOOR, (kind, metrics[kind])
    assert metrics["lookalike"]["flagged"] == 0, metrics["lookalike"]
    assert metrics["organic"]["flagged"] <= 0.002 * metrics["organic"]["planted"], metrics["organic"]


def test_each_kind_fires_its_own_rule(settings, population):
    """The flags say why: the co-repost ring by co-activity, the batch by creation and handles, the ring by images."""
    from pipeline.flags.rules import list_flags

    expected = {"batch": {"batch_created", "templated_handles"}, "avatar_ring": {"shared_avatar", "synthetic_faces"},
                "corepost_ring": {"coordinated_activity"}}
    seen = {kind: set() for kind in expected}
    for flag in list_flags(settings, run_key="planted"):
        kinds = {population.truth[f"{m['platform']}:{m['account_id']}"] for m in flag["members"]}
        assert len(kinds) == 1, kinds
        seen[kinds.pop()] |= set(flag["rules"])
    for kind, rules in expected.items():
        assert rules <= seen[kind], (kind, seen[kind])
    assert "synthetic_faces" not in seen["corepost_ring"] and "shared_avatar" not in seen["corepost_ring"]


def test_lookalike_forms_a_cluster_but_scores_low(settings, population):
    """The brand's shared logo does link its accounts; the score keeps them below the flag threshold."""
    import sqlalchemy as sa

    from pipeline.core.db import transaction

    brand = set(population.operations["lookalike"][0])
    with transaction(settings) as conn:
        rows = conn.execute(sa.text(
            "select c.cluster_id, c.score, array_agg(m.account_key) as members from clusters c"
            " join cluster_members m using (run_key, cluster_id) where c.run_key = 'planted' group by 1, 2")).all()
    cluster = next(r for r in rows if set(r.members) == brand)
    assert cluster.score < settings.network.flag_score_threshold


@pytest.mark.slow
def test_planted_rerun_is_identical(settings, population):
    first = table_contents(settings)
    again = planted.generate(settings, "planted", organic=3000, seed=11)
    planted.run_network_stages(settings, "planted")
    assert again.truth == population.truth
    assert table_contents(settings) == first
