"""Stage 3, score: each distinct image is scored once per detector.

For embedding detectors (the CLIP probe) the embedding is cached per (image, backbone), so a new
head over the same backbone rescoring everything does no forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sqlalchemy as sa

from detectors import Detector, EmbeddingDetector
from pipeline.config import Settings
from pipeline.db import insert_rows, transaction
from pipeline.detector_store import register_detector, resolve_detector
from pipeline.images import load_stored_image
from pipeline.progress import Counter
from pipeline.runs import set_detector


@dataclass(frozen=True)
class ScoreResult:
    detector_id: str
    images_in_run: int
    newly_scored: int
    embedded: int  # forward passes actually run


def score_run(settings: Settings, run_key: str, detector_ref: str | None = None) -> ScoreResult:
    detector = resolve_detector(settings, detector_ref)
    register_detector(settings, detector)
    set_detector(settings, run_key, detector.id)
    with transaction(settings) as conn:
        in_run = conn.execute(
            sa.text("select count(distinct sha256) from account_avatars where run_key = :k and sha256 is not null"),
            {"k": run_key},
        ).scalar_one()
        todo = conn.execute(
            sa.text(
                "select distinct i.sha256, i.storage_path from account_avatars a join images i using (sha256)"
                " where a.run_key = :k and not exists (select 1 from image_scores s"
                "   where s.sha256 = i.sha256 and s.detector_id = :d) order by i.sha256"
            ),
            {"k": run_key, "d": detector.id},
        ).all()
    embedded = score_images(settings, detector, [(r.sha256, r.storage_path) for r in todo])
    return ScoreResult(detector.id, in_run, len(todo), embedded)


def score_images(settings: Settings, detector: Detector, images: list[tuple[str, str]]) -> int:
    """Score (sha256, storage_path) pairs in batches; returns the number of forward passes run."""
    counter = Counter("score", len(images))
    forward = 0
    try:
        for start in range(0, len(images), settings.batch_size):
            batch = images[start : start + settings.batch_size]
            if isinstance(detector, EmbeddingDetector):
                vectors, computed = _embeddings(settings, detector, batch)
                scores = detector.score_embeddings(vectors)
                forward += computed
            else:
                scores = detector.score([load_stored_image(settings, path) for _, path in batch])
            with transaction(settings) as conn:
                insert_rows(
                    conn,
                    "insert into image_scores (sha256, detector_id, probability, label, reason)"
                    " values (:sha256, :d, :p, :label, :reason)"
                    " on conflict (sha256, detector_id) do update set probability = excluded.probability,"
                    " label = excluded.label, reason = excluded.reason",
                    (
                        {"sha256": sha, "d": detector.id, "p": s.probability, "label": s.label, "reason": s.reason}
                        for (sha, _), s in zip(batch, scores)
                    ),
                )
            counter.update(len(batch))
    finally:
        counter.close()
    return forward


def _embeddings(
    settings: Settings, detector: EmbeddingDetector, batch: list[tuple[str, str]]
) -> tuple[np.ndarray, int]:
    """Cached embeddings for the batch, computing and storing the missing ones."""
    shas = [sha for sha, _ in batch]
    with transaction(settings) as conn:
        cached = {
            row.sha256: np.asarray(row.vector, dtype=np.float32)
            for row in conn.execute(
                sa.text("select sha256, vector from embeddings where backbone_id = :b and sha256 = any(:s)"),
                {"b": detector.backbone_id, "s": shas},
            )
        }
    missing = [(sha, path) for sha, path in batch if sha not in cached]
    if missing:
        vectors = detector.embed([load_stored_image(settings, path) for _, path in missing])
        with transaction(settings) as conn:
            insert_rows(
                conn,
                "insert into embeddings (sha256, backbone_id, dim, vector) values (:sha, :b, :dim, :v)"
                " on conflict do nothing",
                (
                    {"sha": sha, "b": detector.backbone_id, "dim": int(v.shape[0]), "v": [float(x) for x in v]}
                    for (sha, _), v in zip(missing, vectors)
                ),
            )
        cached.update({sha: v for (sha, _), v in zip(missing, vectors)})
    return np.stack([cached[sha] for sha in shas]), len(missing)
