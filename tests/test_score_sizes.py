"""The score stage on both sides of every size switch, for every registered backbone kind (issue 21,
item 5): threads vs processes (``score_decode`` threads, processes, and ``auto`` below and at its
image-count switch), one prepared unit per inference batch vs several units merged into one, and a
last partial batch. The rows written must be the same on every side, not just written.

A ``dlib-face`` audit of 1,765 avatars failed in ``merge_prepared`` (``torch.cat`` of the backbone's
list of face chips): merging units had only ever run with open_clip tensors. The kinds come from
``detectors.backbones.BACKBONES``, so a newly registered kind is covered here without an edit (its
example spec from ``test_contract_backbones.EXAMPLES``; a kind whose model cannot be loaded here skips,
saying why).

Real components: the embedded PostgreSQL, the tiny random-initialised open_clip config, dlib, and 12
faces from the shared data plus a blank image (no face: a dlib-face NaN row); skips when they are absent.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
import torch
from conftest import SHARED_DATA, contents_difference, table_contents
from PIL import Image

from detectors.backbones import BACKBONES, parse_backbone
from detectors.faces import FaceSignal
from pipeline.core.db import transaction
from pipeline.scoring.prepare import Prepared, merge_prepared

FACES = SHARED_DATA / "faces" / "real" / "kaggle_human_faces160"
BATCH = 8  # 13 images: inference batches of 8, then a last partial one of 5, on every side below

# (side, score_workers, score_decode, pool kind it must take, units merged into each inference batch).
# Units are batch_size / score_workers images: 8 | 4+4, 4+1 | 2+2+2+2, 2+2+1. Every side embeds the same
# two batches (8 and 5 images), so the embeddings must match bit for bit, not only closely.
SIDES = [
    ("threads, one unit a batch", 1, "threads", "threads", [1, 1]),
    ("threads, units merged", 2, "threads", "threads", [2, 2]),
    ("processes, units merged", 2, "processes", "processes", [2, 2]),
    ("auto below the switch", 4, "auto", "threads", [4, 3]),
    ("auto at the switch", 2, "auto", "processes", [2, 2]),
]


def test_merge_prepared_concatenates_every_batch_type():
    """torch tensors (open_clip), lists with None for no face (dlib-face), numpy arrays (onnxruntime
    backbones): one batch in unit order, of the type the backbone's embed_tensors takes."""
    signal = FaceSignal(1, 0.1, False, {}, True)

    def part(tensors: Any, n: int) -> Prepared:
        return Prepared(tensors, [[(f"s{n}", signal)]], {"decode": 1.0})

    chips = [np.zeros((2, 2, 3), np.uint8), None, np.ones((2, 2, 3), np.uint8)]
    merged = merge_prepared([part(chips[:2], 0), part(chips[2:], 1)])
    assert isinstance(merged.tensors, list) and [c is None for c in merged.tensors] == [False, True, False]
    assert merged.tensors[2] is chips[2] and merged.faces == [[("s0", signal), ("s1", signal)]]
    assert merged.seconds == {"decode": 2.0}

    arrays = np.arange(5 * 3 * 2 * 2, dtype=np.float32).reshape(5, 3, 2, 2)
    merged = merge_prepared([part(arrays[:3], 0), part(arrays[3:], 1)])
    assert isinstance(merged.tensors, np.ndarray) and merged.tensors.dtype == np.float32
    assert np.array_equal(merged.tensors, arrays)

    tensors = torch.from_numpy(arrays)
    merged = merge_prepared([part(tensors[:1], 0), part(tensors[1:], 1)])
    assert isinstance(merged.tensors, torch.Tensor) and torch.equal(merged.tensors, tensors)

    # a fused detector's batch (avatar_stack): one batch per part, merged part by part
    fused = merge_prepared([part((arrays[:3], chips[:2], np.array([0.1, np.nan])), 0),
                            part((arrays[3:], chips[2:], np.array([0.5])), 1)])
    assert isinstance(fused.tensors, tuple) and np.array_equal(fused.tensors[0], arrays)
    assert [c is None for c in fused.tensors[1]] == [False, True, False]
    assert np.array_equal(fused.tensors[2], np.array([0.1, np.nan, 0.5]), equal_nan=True)

    assert merge_prepared([part(None, 0), part(None, 1)]).tensors is None  # face signals only
    single = part(chips, 0)
    assert merge_prepared([single]) is single


def _spec(kind: str) -> tuple[Any, Any]:
    """The kind's example spec (the contract test requires one per kind) and its loaded backbone, after one
    embedding (some kinds open their model lazily); a skip saying why when its model is not here. Only
    errors that mean "not installed here" skip: any other error fails the test."""
    from detectors.backbone import BackboneLoadError
    from pipeline.errors import UserError
    from test_contract_backbones import EXAMPLES

    try:
        spec = EXAMPLES[kind]() if kind in EXAMPLES else parse_backbone(kind)
        loaded = spec.load()
        loaded.embed([Image.new("RGB", (64, 64), (90, 90, 90))])
    except (BackboneLoadError, UserError, FileNotFoundError, ImportError) as exc:
        pytest.skip(f"backbone {kind!r} cannot be loaded here: {type(exc).__name__}: {exc}")
    return spec, loaded


def _export(folder: Path) -> Path:
    if not FACES.is_dir():
        pytest.skip(f"shared faces not found at {FACES}")
    (folder / "avatars").mkdir(parents=True)
    lines = ["platform,account_id,handle,avatar"]
    for i, path in enumerate(sorted(FACES.glob("*.jpg"))[:12]):
        shutil.copyfile(path, folder / "avatars" / f"{i}.jpg")
        lines.append(f"t,{i},user{i},avatars/{i}.jpg")
    Image.new("RGB", (160, 160), (120, 130, 140)).save(folder / "avatars" / "blank.png")  # no face
    lines.append("t,blank,blank,avatars/blank.png")
    (folder / "manifest.csv").write_text("\n".join(lines) + "\n")
    return folder


STACK = "avatar_stack"  # the fused detector: its batch is one per part (CLIP array, dlib chips, eye distances)


@pytest.mark.slow
@pytest.mark.parametrize("kind", [*BACKBONES.names(), STACK])
def test_every_backbone_scores_the_same_on_both_sides_of_every_switch(kind, settings, tmp_path, monkeypatch):
    from detectors import save_detector
    from detectors.clip_probe import probe_class
    from pipeline import audit
    from pipeline.stages import RunContext, run_one
    from pipeline.images.acquire import decode_image
    from pipeline.scoring import score as score_module

    if kind == STACK:
        from test_contract_detectors import EXAMPLES as DETECTOR_EXAMPLES

        _spec("clip-vit-b16")  # skips, saying why, where the ONNX cannot be had
        probe = DETECTOR_EXAMPLES[STACK]()
    else:
        spec, loaded = _spec(kind)
        weight = list(np.random.default_rng(1).normal(size=loaded.embed_dim) / 8)
        probe = probe_class(spec)(backbone=spec, weight=weight, bias=0.0, input_reencode=(50, 80))
    path = save_detector(probe, tmp_path / "probe.json")
    export = _export(tmp_path / "export")
    settings = replace(settings, batch_size=BATCH, face_signals=True)
    audit.begin(settings, "s1", export, "generic", settings.policy(), str(path))
    ctx = RunContext(settings, "s1", settings.network)
    run_one(ctx, "ingest")
    run_one(ctx, "acquire_images")
    with transaction(settings) as conn:
        stored = dict(conn.execute(sa.text("select sha256, storage_path from images")).all())
    images = len(stored)
    assert images == 13 < score_module.PROCESSES_MIN_IMAGES

    # which pool each run took and how many units each inference batch merged
    pools: list[str] = []
    merges: list[tuple[int, int]] = []
    real_pool, real_merge = score_module.decode_pool, score_module.merge_prepared

    def record_merge(parts: list[Prepared]) -> Prepared:
        merged = real_merge(parts)
        batch = merged.tensors[0] if isinstance(merged.tensors, tuple) else merged.tensors
        merges.append((len(parts), len(batch)))
        return merged

    monkeypatch.setattr(score_module, "decode_pool", lambda kind, workers: pools.append(kind) or real_pool(kind, workers))
    monkeypatch.setattr(score_module, "merge_prepared", record_merge)

    baseline: dict[str, list] | None = None
    for side, workers, decode, pool, units in SIDES:
        with transaction(settings) as conn:  # nothing cached: every image is decoded, embedded, analysed
            for table in ("image_scores", "embeddings", "face_signals"):
                conn.execute(sa.text(f"delete from {table}"))
        with monkeypatch.context() as patch:
            if decode == "auto":
                # the switch moved to this run's size: 1,000+ dlib-face images would take minutes here.
                # A pool started by an earlier side must not decide: only the image count does.
                patch.setattr(score_module, "PROCESSES_MIN_IMAGES", images if pool == "processes" else images + 1)
                patch.setattr(score_module, "started_pools", set)
            pools.clear()
            merges.clear()
            result = score_module.score_run(replace(settings, score_workers=workers, score_decode=decode), "s1", str(path))
        assert pools[:1] == [pool], side
        assert merges == [(n, size) for n, size in zip(units, (BATCH, images - BATCH))], side
        assert (result.embedded, result.from_cache, result.faces_analyzed) == (images, 0, images), side
        rows = table_contents(settings)
        assert len(rows["image_scores"]) == len(rows["embeddings"]) == len(rows["face_signals"]) == images, side
        if baseline is None:
            baseline = rows
        assert contents_difference(rows, baseline) == {}, side

    # and each row belongs to its own image: the baseline's vectors are the probe's own, image by image
    with transaction(settings) as conn:
        vectors = {r.sha256: np.asarray(r.vector, dtype=np.float32) for r in conn.execute(
            sa.text("select sha256, vector from embeddings"))}
        reasons = dict(conn.execute(sa.text("select sha256, reason from image_scores")).all())
    shas = sorted(stored)
    expected = probe.embed([decode_image((settings.image_dir / stored[sha]).read_bytes())[1] for sha in shas])
    np.testing.assert_allclose(np.stack([vectors[sha] for sha in shas]), expected, rtol=1e-4, atol=1e-5)
    if kind == "dlib-face":
        blank = hashlib.sha256((export / "avatars" / "blank.png").read_bytes()).hexdigest()
        assert reasons[blank] == "no dlib-face score: no face found"
        found = sum(bool(np.isfinite(v).all()) for v in vectors.values())
        assert 6 <= found < images  # faces embedded, and None chips among them (9 of 13 found when written)
