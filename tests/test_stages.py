"""The stage table (issue 22): one module per stage, its behaviour as fields, one runner, and a run that
scores only with the detector `begin` pinned on it. Real PostgreSQL; the detector is a tiny random probe."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import sqlalchemy as sa
from conftest import REPO

from detectors import save_detector
from detectors.backbone import BackboneSpec
from detectors.clip_probe import ClipProbe
from pipeline import audit
from pipeline.core.db import transaction
from pipeline.stages import STAGE_NAMES, STAGES, RunContext, run_all, run_one


@pytest.fixture(scope="module")
def small_export(tmp_path_factory):
    """The demo generator with a few organic accounts: avatars to score, planted networks to flag."""
    from pipeline.testing.demo import make_demo_export

    return make_demo_export(tmp_path_factory.mktemp("stages") / "export", organic=10)[0]


def _probe_file(tmp_path):
    probe = ClipProbe(backbone=BackboneSpec.parse("pa-tiny-vit", "random:0"),
                      weight=list(np.random.default_rng(1).normal(size=64) / 8), bias=0.0)
    return save_detector(probe, tmp_path / "probe.json"), probe.id


def _run_row(settings, run_key):
    with transaction(settings) as conn:
        return conn.execute(sa.text("select detector_id, status, stages_done, summary from runs where run_key = :k"),
                            {"k": run_key}).one()


def _scores(settings):
    with transaction(settings) as conn:
        return conn.execute(sa.text("select count(*) from image_scores")).scalar_one()


def test_each_stage_is_a_module_named_after_it_and_the_table_imports_none():
    """A newcomer finds a stage's code from its name; DAG parsing (which imports the table) stays light."""
    for stage in STAGES:
        assert stage.module == f"pipeline.stages.{stage.name}"
        assert (REPO / "pipeline" / "stages" / f"{stage.name}.py").is_file(), stage.name
    code = ("import sys, pipeline.stages, pipeline.airflow.tasks\n"
            "loaded = [m for m in sys.modules if m.startswith('pipeline.stages.') or m.split('.')[0] in "
            "('torch', 'open_clip', 'numpy', 'PIL', 'sqlalchemy')]\n"
            "print('LOADED=' + ','.join(sorted(loaded)))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         env=os.environ.copy(), check=True)
    assert out.stdout.strip().splitlines()[-1] == "LOADED=", out.stdout


def test_a_run_begun_without_a_detector_never_scores_with_one_promoted_or_configured_later(settings, small_export,
                                                                                         tmp_path):
    """The run is pinned at begin: with no detector then, the score stage scores nothing, even though a detector
    is promoted (or configured) before it runs."""
    from pipeline.scoring.detector_store import promote_detector

    key = audit.begin(settings, "nodet", small_export, "auto", settings.policy(), None)
    assert _run_row(settings, key).detector_id is None
    run_one(key, "ingest", settings=settings)
    run_one(key, "acquire_images", settings=settings)
    path, probe_id = _probe_file(tmp_path)
    assert promote_detector(settings, str(path)) == probe_id  # now the default a fresh resolution would find

    for later in (settings, replace(settings, detector=str(path))):  # promoted; then also configured
        out = run_one(key, "score", settings=later)
        assert out["images_in_run"] > 0 and out["newly_scored"] == 0 and out["detector_id"] == ""
        assert "pinned" in out["skipped"]
        assert _run_row(settings, key).detector_id is None
        assert _scores(settings) == 0

    # a run begun now pins the promoted detector and scores with it
    pinned = audit.begin(settings, "withdet", small_export, "auto", settings.policy(), None)
    assert _run_row(settings, pinned).detector_id == probe_id
    run_one(pinned, "ingest", settings=settings)
    run_one(pinned, "acquire_images", settings=settings)
    scored = run_one(pinned, "score", settings=settings)
    assert scored["detector_id"] == probe_id and scored["newly_scored"] == scored["images_in_run"] > 0


def test_the_runner_keeps_the_books_only_when_asked(settings, small_export, tmp_path):
    """record=True: stages done, the finishing stage closes the run with its result, a failure names its
    stage on the run; record=False (planted populations, benches): the run row is left as it was."""
    from pipeline.core import runs

    key = audit.begin(settings, "books", small_export, "auto", settings.policy(), None)
    ctx = runs.load_context(settings, key)
    assert isinstance(ctx, RunContext) and ctx.detector is None
    before = _run_row(settings, key)
    quiet = run_all(ctx, ("ingest", "acquire_images"), record=False)
    assert list(quiet) == ["ingest", "acquire_images"] and quiet["ingest"]["accounts"] > 0
    assert _run_row(settings, key) == before

    seen: list[str] = []
    results = run_all(key, settings=settings, on_stage=lambda name, result, seconds: seen.append(name))
    assert seen == list(STAGE_NAMES) == list(results)
    row = _run_row(settings, key)
    finishing = [s.name for s in STAGES if s.finishes_run]
    assert row.status == "succeeded" and list(row.stages_done) == list(STAGE_NAMES)
    assert row.summary == results[finishing[-1]]

    failing = audit.begin(settings, "fails", small_export, "auto", settings.policy(), None)
    with transaction(settings) as conn:
        conn.execute(sa.text("update runs set export_path = :p where run_key = :k"),
                     {"p": str(tmp_path / "gone"), "k": failing})
    with pytest.raises(Exception) as err:
        run_all(failing, settings=settings)
    assert err.value.failed_stage == STAGE_NAMES[0]
    row = _run_row(settings, failing)
    assert row.status == "failed" and row.summary["failed_stage"] == STAGE_NAMES[0] and not row.stages_done


def test_the_stages_use_the_policy_pinned_on_the_run(settings):
    """Issue 22: the policy is loaded once from the run row into the context, and the stages score with it:
    a run that recorded another edge weight gets edges weighed by it, not by the default."""
    from pipeline.core.db import transaction
    from pipeline.core.runs import load_context
    from pipeline.stages import run_all
    from pipeline.testing import planted

    planted.generate(settings, "pinned", organic=300, seed=5)
    with transaction(settings) as conn:
        conn.execute(sa.text(
            "update runs set params = jsonb_set(params, '{edge_weights}', coalesce(params -> 'edge_weights',"
            " '{}'::jsonb) || '{\"identical_avatar\": 0.55}') where run_key = 'pinned'"))
    ctx = load_context(settings, "pinned")
    assert ctx.policy.edge.identical_avatar == 0.55 and ctx.policy.network == ctx.network
    run_all(ctx, ("aggregate", "networks"), record=False)
    with transaction(settings) as conn:
        weights = set(conn.execute(sa.text(
            "select distinct weight from edges where run_key = 'pinned' and edge_type = 'identical_avatar'")).scalars())
    assert weights == {0.55}
