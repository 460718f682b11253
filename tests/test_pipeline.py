"""End-to-end audits of the demo export against a real PostgreSQL and the tiny open_clip backbone.

The demo's generated faces carry a synthetic trace (pipeline.testing.demo.add_generator_trace); these tests
validate the pipeline machinery, not detection of real generators.
"""

from __future__ import annotations

import shutil

import pytest
import sqlalchemy as sa
from conftest import table_contents

from pipeline.audit import audit_export
from pipeline.core.db import transaction
from pipeline.errors import UserError
from pipeline.flags.rules import list_flags, set_flag_status

pytestmark = pytest.mark.slow  # full audits of the demo export


def _flagged_sets(settings, run_key):
    return [{m["account_id"] for m in f["members"]} for f in list_flags(settings, run_key=run_key)]


def test_audit_flags_each_planted_network_and_nothing_else(settings, demo_data):
    summary = audit_export(settings, demo_data["export"], run_key="t1", detector=str(demo_data["detector"]))
    # 300 organic + 24 + 16 planted + the row whose avatar path is refused; the bad-count row is quarantined
    assert summary["accounts"] == 341
    assert summary["quarantined"] == 2
    flagged = _flagged_sets(settings, "t1")
    assert len(flagged) == len(demo_data["planted"])
    for network in demo_data["planted"]:
        planted = set(network.account_ids)
        best = max(flagged, key=lambda members: len(members & planted))
        assert best == planted, f"{network.name}: flagged {sorted(best)} vs planted {sorted(planted)}"


def test_flag_evidence_names_rules_edges_and_images(settings, demo_data):
    audit_export(settings, demo_data["export"], run_key="t2", detector=str(demo_data["detector"]))
    ring = set(demo_data["planted"][0].account_ids)
    flag = next(f for f in list_flags(settings, run_key="t2") if {m["account_id"] for m in f["members"]} == ring)
    assert {"shared_avatar", "templated_handles"} <= set(flag["rules"])
    # the demo probe's backbone has random weights: every flag says its avatar labels are not a real detector's
    assert flag["detector"]["id"] == demo_data["probe"].id and flag["detector"]["real_detector"] is False
    evidence = flag["evidence"]
    assert len(evidence["images"]) == 4 and all(len(i["accounts"]) == 6 for i in evidence["images"])
    assert evidence["edges"] and all(e["a_key"] < e["b_key"] for e in evidence["edges"])
    assert evidence["params"]["min_cluster_size"] == 3
    # the ring's own traces; the image-similarity types may add corroborating edges on top
    assert {"identical_avatar", "creation_window"} <= {e["edge_type"] for e in evidence["edges"]}


def test_rerun_same_key_leaves_identical_tables(settings, demo_data):
    audit_export(settings, demo_data["export"], run_key="same", detector=str(demo_data["detector"]))
    first = table_contents(settings)
    audit_export(settings, demo_data["export"], run_key="same", detector=str(demo_data["detector"]))
    assert table_contents(settings) == first
    assert len(first["account_snapshots"]) == 341


def test_investigator_status_survives_rerun(settings, demo_data):
    audit_export(settings, demo_data["export"], run_key="inv", detector=str(demo_data["detector"]))
    flag = list_flags(settings, run_key="inv")[0]
    set_flag_status(settings, flag["flag_id"], "confirmed", note="checked by hand")
    audit_export(settings, demo_data["export"], run_key="inv", detector=str(demo_data["detector"]))
    again = {f["flag_id"]: f for f in list_flags(settings, run_key="inv")}
    assert again[flag["flag_id"]]["status"] == "confirmed"
    assert again[flag["flag_id"]]["status_note"] == "checked by hand"
    with pytest.raises(UserError, match="status must be one of"):
        set_flag_status(settings, flag["flag_id"], "maybe")
    with pytest.raises(UserError, match="no flag"):
        set_flag_status(settings, "f-nope", "dismissed")


def test_second_run_reuses_scores_and_embeddings(settings, demo_data):
    from pipeline.scoring.score import score_run

    audit_export(settings, demo_data["export"], run_key="a", detector=str(demo_data["detector"]))
    with transaction(settings) as conn:
        embedded = conn.execute(sa.text("select count(*) from embeddings")).scalar_one()
    audit_export(settings, demo_data["export"], run_key="b", detector=str(demo_data["detector"]))
    with transaction(settings) as conn:
        assert conn.execute(sa.text("select count(*) from embeddings")).scalar_one() == embedded
    again = score_run(settings, "b", str(demo_data["detector"]))
    assert again.newly_scored == 0 and again.embedded == 0 and again.images_in_run == embedded


def test_quarantine_names_record_and_reason_and_keeps_valid_rows(settings, demo_data):
    from pipeline.ingest.quarantine import list_quarantine

    audit_export(settings, demo_data["export"], run_key="q", detector=str(demo_data["detector"]))
    rows = list_quarantine(settings, "q")
    reasons = {(r["stage"], r["reason"]) for r in rows}
    assert ("ingest", "followers 'lots' is not a whole number") in reasons
    assert any(stage == "images" and "outside the export folder" in reason for stage, reason in reasons)
    assert all(r["locator"].startswith("line ") for r in rows)
    with transaction(settings) as conn:
        kept = conn.execute(sa.text(
            "select count(*) from account_snapshots where run_key = 'q' and account_key = 'demo:bad-path'")).scalar_one()
    assert kept == 1  # the account with the refused avatar is still ingested


def test_account_signals_explain_the_risk(settings, demo_data):
    audit_export(settings, demo_data["export"], run_key="s", detector=str(demo_data["detector"]))
    with transaction(settings) as conn:
        rows = conn.execute(sa.text(
            "select account_key, risk, contributions, handle_template, avatar_reuse_count from account_signals"
            " where run_key = 's'")).mappings().all()
    for row in rows:
        assert row["risk"] == pytest.approx(min(1.0, sum(float(v) for v in row["contributions"].values())), abs=1e-6)
    ring = next(r for r in rows if r["account_key"] == "demo:r000")
    assert ring["handle_template"] == "a_a+8digits" and ring["avatar_reuse_count"] == 5
    assert {"avatar_reuse", "template_handle"} <= set(ring["contributions"])


def test_missing_detector_is_a_clear_error_when_required(settings, demo_data):
    # without --require-detector the audit runs unscored (tests/test_readers_ingest.py)
    with pytest.raises(UserError, match="no default detector"):
        audit_export(settings, demo_data["export"], run_key="nodet", require_detector=True)


def test_unknown_format_and_missing_path(settings, tmp_path, demo_data):
    with pytest.raises(UserError, match="does not exist"):
        audit_export(settings, tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="could not detect the format"):
        audit_export(settings, tmp_path / "empty")
    with pytest.raises(UserError, match="unknown export format"):
        audit_export(settings, demo_data["export"], fmt="myspace")


def test_default_run_key_is_content_derived(tmp_path, demo_data):
    from pipeline.core.runs import default_run_key

    copy = tmp_path / "copy"
    shutil.copytree(demo_data["export"], copy)
    assert default_run_key(copy) == default_run_key(demo_data["export"])
    (copy / "manifest.csv").write_text((copy / "manifest.csv").read_text() + "demo,extra,,,,,,,,,,\n")
    assert default_run_key(copy) != default_run_key(demo_data["export"])
