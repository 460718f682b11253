"""Issue 23, item 2: a takedown file audited alone. An IO release holds only the operation, so the run
has no organic baseline (pipeline/networks/baseline.py): the summary and the report say so, the accounts
are grouped into their creation batches with their dates and traits, and ``--baseline-run KEY``
measures the bursts against an earlier run's accounts too. A key that names no run is one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from test_cli import _one_line_error, run_cli

from pipeline.core.db import transaction
from pipeline.flags.rules import list_flags
from pipeline.reporting.summary import format_summary
from pipeline.testing import planted

CUBA = Path(__file__).resolve().parents[2] / "shared" / "data" / "twitter_io" / "cuba_092020_users_csv_hashed.csv"
needs_cuba = pytest.mark.skipif(not CUBA.exists(), reason=f"the real IO release {CUBA} is not here")


def _audit(settings, run_key: str, baseline_run: str | None = None) -> dict:
    from pipeline.audit import audit_export

    return audit_export(settings, CUBA, run_key=run_key, baseline_run=baseline_run)


def _creation_edges(settings, run_key: str) -> list[dict]:
    with transaction(settings) as conn:
        return [r.evidence for r in conn.execute(sa.text(
            "select evidence from edges where run_key = :k and edge_type = 'creation_window'"), {"k": run_key})]


@pytest.mark.slow
@needs_cuba
def test_a_real_io_release_audited_alone_has_no_organic_baseline_and_is_grouped_into_its_batches(settings):
    summary = _audit(settings, "cuba-alone")
    assert summary["accounts"] == 526
    assert summary["baseline"]["organic"] is False and summary["baseline"]["baseline_run"] is None
    printed = format_summary(summary, list_flags(settings, run_key="cuba-alone"))
    assert "WARNING baseline: no organic baseline: the run is one IO release" in printed
    report = (settings.home / "reports" / "cuba-alone" / "index.html").read_text()
    assert "No organic baseline." in report and "--baseline-run KEY" in report
    edges = _creation_edges(settings, "cuba-alone")
    assert edges and all(e["baseline"] == "none" for e in edges)
    assert all(e["delta_hours"] == 0 for e in edges)  # date-only: a batch is one date
    flags = list_flags(settings, run_key="cuba-alone")
    assert flags
    for flag in flags:
        why = flag["evidence"]["rules"]["batch_created"]
        assert "created on 20" in why and "the run has no organic baseline" in why, why
        assert flag["evidence"]["creation_days"] and flag["evidence"]["features"]["burst_traits"]


@pytest.mark.slow
@needs_cuba
def test_baseline_run_measures_the_release_against_an_earlier_organic_run(settings):
    ops = {k: 0 for k in planted.DEFAULT_OPERATIONS}
    planted.generate(settings, "organic-night", organic=3000, seed=9, operations=ops, posts_per_account=0.0,
                     mix=planted.OrganicMix.io())
    summary = _audit(settings, "cuba-vs-night", baseline_run="organic-night")
    assert summary["baseline"] == {"organic": True, "baseline_run": "organic-night", "baseline_accounts": 3000,
                                   "why": "bursts measured against the 3000 accounts of run organic-night"
                                          " (--baseline-run) and this run's own"}
    with transaction(settings) as conn:
        pinned = conn.execute(sa.text("select params->>'baseline_run' from runs where run_key = 'cuba-vs-night'")).scalar()
    assert pinned == "organic-night"
    assert all("baseline" not in e for e in _creation_edges(settings, "cuba-vs-night"))  # tested bursts
    printed = format_summary(summary, list_flags(settings, run_key="cuba-vs-night"))
    assert "  baseline: bursts measured against the 3000 accounts of run organic-night" in printed
    assert "WARNING baseline" not in printed
    rerun = _audit(settings, "cuba-vs-night", baseline_run="organic-night")
    assert rerun["edges"] == summary["edges"] and rerun["flags"] == summary["flags"]


def test_a_baseline_run_that_does_not_exist_is_one_line(tmp_path, database_url):
    export = tmp_path / "users.csv"
    export.write_text('"userid","user_display_name","user_screen_name","user_reported_location",'
                      '"user_profile_description","user_profile_url","follower_count","following_count",'
                      '"account_creation_date","account_language"\n"u1","a","a","","","","0","3","2020-01-01","es"\n')
    out = run_cli("--database-url", database_url, "audit", str(export), "--baseline-run", "no-such-run", home=tmp_path)
    assert out.returncode == 2
    _one_line_error(out, "--baseline-run 'no-such-run': no such run in this database")


def test_the_dag_param_is_pinned_at_begin_and_checked(settings, tmp_path):
    """The DAGs pass every Param to ``begin`` as ``extra_params``: ``baseline_run`` is checked and pinned on
    the run row like the CLI's ``--baseline-run``; an empty Param pins nothing."""
    from pipeline.audit import begin
    from pipeline.errors import UserError

    export = tmp_path / "users.csv"
    export.write_text('"userid","user_display_name","user_screen_name","user_reported_location",'
                      '"user_profile_description","user_profile_url","follower_count","following_count",'
                      '"account_creation_date","account_language"\n"u1","a","a","","","","0","3","2020-01-01","es"\n')
    begin(settings, "night-1", export, "auto", None, None, extra_params={"baseline_run": None})
    begin(settings, "night-2", export, "auto", None, None, extra_params={"baseline_run": "night-1"})
    with pytest.raises(UserError, match="no such run"):
        begin(settings, "night-3", export, "auto", None, None, extra_params={"baseline_run": "night-0"})
    with pytest.raises(UserError, match="is the run itself"):
        begin(settings, "night-2", export, "auto", None, None, baseline_run="night-2")
    with transaction(settings) as conn:
        pinned = dict(conn.execute(sa.text("select run_key, params->'baseline_run' from runs")).all())
    assert pinned == {"night-1": None, "night-2": "night-1"}
