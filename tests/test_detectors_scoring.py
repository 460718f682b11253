"""The score stage: overlapped batches, the embedding cache, sharding by hash, and face signals.

Runs against a real PostgreSQL with the tiny random-initialised open_clip backbone: these tests
validate the scoring machinery, not detection of real generators.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import sqlalchemy as sa

from detectors import save_detector
from detectors.batching import batched, prefetch
from detectors.clip_probe import ClipProbe
from pipeline import audit
from pipeline.core.db import transaction
from pipeline.errors import UserError
from pipeline.scoring.score import in_shard, score_run
from pipeline.stages import RunContext, run_one


def _acquired(settings, export, detector, run_key="s1"):
    """A run whose export is ingested and whose avatars are stored (the stages before score)."""
    policy = settings.policy()
    audit.begin(settings, run_key, export, "auto", policy, str(detector))
    ctx = RunContext(settings, run_key, policy.network)
    run_one(ctx, "ingest")
    run_one(ctx, "acquire_images")
    return ctx


def _scores(settings, detector_id):
    with transaction(settings) as conn:
        return {r.sha256: (r.probability, r.label) for r in conn.execute(
            sa.text("select sha256, probability, label from image_scores where detector_id = :d"), {"d": detector_id})}


@pytest.fixture(scope="module")
def small_export(tmp_path_factory):
    """The demo generator with 40 organic accounts: about 70 avatars, enough for batches and shards."""
    from pipeline.testing.demo import make_demo_export

    return make_demo_export(tmp_path_factory.mktemp("small") / "export", organic=40)[0]


@pytest.fixture
def scored(settings, demo_data, small_export):
    _acquired(settings, small_export, demo_data["detector"])
    first = score_run(settings, "s1", str(demo_data["detector"]))
    return first


@pytest.mark.slow
def test_first_run_embeds_each_new_image_once_and_a_rerun_embeds_none(settings, scored):
    assert scored.images_in_run > 40 and scored.newly_scored == scored.images_in_run
    assert scored.embedded == scored.images_in_run and scored.from_cache == 0
    again = score_run(settings, "s1", scored.detector_id)
    assert (again.newly_scored, again.embedded) == (0, 0)


@pytest.mark.slow
def test_a_new_head_rescores_from_the_cache_without_opening_images(settings, demo_data, scored, tmp_path):
    """Delete every stored image file: a new head over the same backbone must still score all of them."""
    old = demo_data["probe"]
    before = _scores(settings, old.id)
    removed = [p for p in settings.image_dir.rglob("*") if p.is_file()]
    for path in removed:
        path.unlink()
    assert removed
    new = ClipProbe.from_spec({**old.to_spec(), "bias": old.bias + 3.0, "threshold": 0.9})
    result = score_run(settings, "s1", str(save_detector(new, tmp_path / "new.json")))
    assert result.detector_id != old.id
    assert (result.embedded, result.from_cache, result.newly_scored) == (0, scored.images_in_run, scored.images_in_run)
    after = _scores(settings, new.id)
    assert after.keys() == before.keys()
    # the same embeddings through a shifted head: every probability moves up, none is equal
    assert all(after[sha][0] > before[sha][0] for sha in before if before[sha][0] < 0.999)


@pytest.mark.slow
def test_missing_image_file_is_a_clear_error(settings, demo_data, small_export):
    _acquired(settings, small_export, demo_data["detector"])
    for path in settings.image_dir.rglob("*"):
        if path.is_file():
            path.unlink()
    with pytest.raises(UserError, match="is missing; rerun the acquire_images"):
        score_run(settings, "s1", str(demo_data["detector"]))


@pytest.mark.slow
def test_shards_are_disjoint_cover_the_run_and_score_like_one_pass(settings, demo_data, scored, database_url):
    from pipeline.config import load_settings
    from pipeline.core.db import dispose_engines

    whole = _scores(settings, scored.detector_id)
    with transaction(settings) as conn:
        conn.execute(sa.text("delete from image_scores"))
        conn.execute(sa.text("delete from embeddings"))
    results = [score_run(settings, "s1", str(demo_data["detector"]), index, 3) for index in range(3)]
    assert sum(r.images_in_run for r in results) == scored.images_in_run
    assert all(r.embedded == r.images_in_run > 0 for r in results)
    sharded = _scores(settings, scored.detector_id)
    assert sharded.keys() == whole.keys()
    for sha, (p, label) in whole.items():
        assert sharded[sha][1] == label and sharded[sha][0] == pytest.approx(p, abs=1e-5)
    shas = list(whole)
    assert all(sum(in_shard(s, i, 3) for i in range(3)) == 1 for s in shas)
    with pytest.raises(UserError, match="shard index 3 of 3"):
        score_run(settings, "s1", None, 3, 3)
    dispose_engines()
    assert load_settings(env={}, shipped_detector=False, home=settings.home, database_url=database_url, batch_size=7).batch_size == 7


@pytest.mark.slow
def test_batch_size_and_worker_count_do_not_change_scores(settings, demo_data, scored):
    from dataclasses import replace

    whole = _scores(settings, scored.detector_id)
    with transaction(settings) as conn:
        conn.execute(sa.text("delete from image_scores"))
        conn.execute(sa.text("delete from embeddings"))
    odd = replace(settings, batch_size=13, score_workers=0)
    assert score_run(odd, "s1", str(demo_data["detector"])).embedded == scored.images_in_run
    again = _scores(settings, scored.detector_id)
    for sha, (p, label) in whole.items():
        assert again[sha][1] == label and again[sha][0] == pytest.approx(p, abs=1e-5)


@pytest.mark.slow
def test_face_signals_are_written_once_per_image(settings, scored):
    with transaction(settings) as conn:
        rows = conn.execute(sa.text("select f.*, d.kind from face_signals f join detectors d using (detector_id)")).all()
    assert len(rows) == scored.images_in_run == scored.faces_analyzed
    assert {r.kind for r in rows} == {"faces"}
    for r in rows:  # no face or no eyes: NULL distance and NULL verdict; else both set
        assert (r.eye_alignment_distance is None) == (r.gan_eye_aligned is None)
    assert score_run(settings, "s1", scored.detector_id).faces_analyzed == 0


def test_prefetch_keeps_order_and_bounds_the_queue():
    started: list[int] = []
    lock = threading.Lock()
    ahead = []

    def prepare(batch):
        with lock:
            started.append(batch[0])
        time.sleep(0.002)
        return [x * 2 for x in batch]

    out = []
    for consumed, (_, result) in enumerate(prefetch(batched(list(range(100)), 4), prepare, workers=2, depth=3), 1):
        out.extend(result)
        with lock:
            ahead.append(len(started) - consumed)
    assert out == [x * 2 for x in range(100)]
    assert max(ahead) <= 3  # never more than `depth` prepared batches wait for the consumer
    with pytest.raises(ValueError, match="batch size"):
        list(batched([1], 0))


def test_prefetch_surfaces_worker_errors():
    def prepare(batch):
        if batch[0] == 8:
            raise RuntimeError("broken image 8")
        return batch

    with pytest.raises(RuntimeError, match="broken image 8"):
        list(prefetch(batched(list(range(20)), 4), prepare, workers=2))


@pytest.mark.slow
def test_cached_embeddings_match_a_fresh_forward_pass(settings, demo_data, scored):
    from pipeline.images.acquire import load_stored_image

    with transaction(settings) as conn:
        rows = conn.execute(sa.text("select e.vector, i.storage_path from embeddings e join images i using (sha256)"
                                    " order by sha256 limit 5")).all()
    probe = demo_data["probe"]
    fresh = probe.embed([load_stored_image(settings, r.storage_path) for r in rows])
    np.testing.assert_allclose(np.asarray([r.vector for r in rows], dtype=np.float32), fresh, rtol=1e-4, atol=1e-5)
