"""Stage `score`: each distinct image is scored once per detector, in overlapped batches.

- Embedding detectors (the CLIP probe): the embedding is cached per (image sha256, backbone id).
  Images already embedded with the backbone are scored from the cache: no forward pass, and the
  image file is never opened. So a new head over the same backbone rescores everything cheaply.
- Images to embed are decoded and preprocessed in worker threads that fill a bounded queue while
  the model runs (``Settings.score_workers``, ``Settings.batch_size``).
- Work can be split into shards by image hash (``shard_index`` of ``shard_count``) so Airflow can
  map the stage across workers; shards never overlap and together cover the run.
- The run's detector comes from the detector registry (``resolve_detector``: a stored id, a saved
  file, or the promoted default); every registered face-signal kind (``detectors.base.face_signal_kinds``,
  today ``faces``) writes ``face_signals`` in the same stage.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa

from detectors import Detector, EmbeddingDetector
from detectors.base import face_signal_kinds
from detectors.batching import batched, prefetch
from pipeline.config import Settings
from pipeline.core.db import insert_rows, transaction
from pipeline.core.progress import Counter
from pipeline.core.runs import set_detector
from pipeline.errors import UserError
from pipeline.images.acquire import load_stored_image
from pipeline.scoring.claims import score_claimed
from pipeline.scoring.detector_store import register_detector, resolve_detector

if TYPE_CHECKING:
    from pipeline.stages import RunContext

log = logging.getLogger(__name__)
CACHE_CHUNK = 2000  # cached embeddings read per query when rescoring from the cache


@dataclass(frozen=True)
class ScoreResult:
    detector_id: str
    images_in_run: int  # distinct images of the run in this shard
    newly_scored: int
    embedded: int  # forward passes actually run
    from_cache: int  # scored from cached embeddings, without opening the image
    shard_index: int = 0
    shard_count: int = 1
    faces_analyzed: int = 0
    images_per_second: float = 0.0  # newly scored images / wall seconds of this stage
    skipped: str = ""  # why nothing was scored (no detector named and none promoted)


@dataclass(frozen=True)
class ScoreStats:
    embedded: int = 0
    from_cache: int = 0


def in_shard(sha256: str, shard_index: int, shard_count: int) -> bool:
    """Shard membership by hash: stable, disjoint, and balanced for any number of shards."""
    return shard_count <= 1 or int(sha256[-12:], 16) % shard_count == shard_index


def check_shard(shard_index: int, shard_count: int) -> None:
    if shard_count < 1 or not 0 <= shard_index < shard_count:
        raise UserError(f"shard index {shard_index} of {shard_count}: need shard_count >= 1 and 0 <= index < count")


def _run_images(settings: Settings, run_key: str, shard_index: int, shard_count: int) -> list[tuple[str, str]]:
    with transaction(settings) as conn:
        rows = conn.execute(
            sa.text("select distinct i.sha256, i.storage_path from account_avatars a join images i using (sha256)"
                    " where a.run_key = :k order by i.sha256"),
            {"k": run_key},
        ).all()
    return [(r.sha256, r.storage_path) for r in rows if in_shard(r.sha256, shard_index, shard_count)]


def _done(settings: Settings, table: str, shas: list[str], *, detector_id: str | None = None,
          backbone_id: str | None = None) -> set[str]:
    """The images among ``shas`` that already have a row in ``table`` for this detector (image_scores,
    face_signals) or backbone (embeddings), read in chunks so a large run stays one cheap query each."""
    column, value = ("detector_id", detector_id) if detector_id is not None else ("backbone_id", backbone_id)
    found: set[str] = set()
    with transaction(settings) as conn:
        for chunk in batched(shas, 10_000):
            found.update(conn.execute(sa.text(f"select sha256 from {table} where {column} = :v and sha256 = any(:s)"),
                                      {"v": value, "s": chunk}).scalars())
    return found


def score_run(settings: Settings, run_key: str, detector_ref: str | None = None, shard_index: int = 0,
              shard_count: int = 1) -> ScoreResult:
    """Score the run's images not yet scored by the detector (only this shard's, when sharded)."""
    check_shard(shard_index, shard_count)
    started = time.perf_counter()
    detector = resolve_detector(settings, detector_ref)
    register_detector(settings, detector)
    set_detector(settings, run_key, detector.id)
    images = _run_images(settings, run_key, shard_index, shard_count)
    done = _done(settings, "image_scores", [sha for sha, _ in images], detector_id=detector.id)
    todo = [(sha, path) for sha, path in images if sha not in done]
    # claimed chunk by chunk, so a concurrent run or shard never embeds the same image (pipeline/scoring/claims.py)
    stats, mine = score_claimed(settings, detector.id, run_key, todo, lambda batch: score_images(settings, detector, batch),
                                lambda a, b: ScoreStats(a.embedded + b.embedded, a.from_cache + b.from_cache), ScoreStats())
    faces = face_signals_for(settings, images) if settings.face_signals else 0
    seconds = time.perf_counter() - started
    return ScoreResult(detector.id, len(images), mine, stats.embedded, stats.from_cache, shard_index, shard_count,
                       faces, round(mine / seconds, 1) if mine and seconds > 0 else 0.0)


def _loader(settings: Settings) -> Callable[[str], Any]:
    def load(storage_path: str) -> Any:
        try:
            return load_stored_image(settings, storage_path)
        except FileNotFoundError:
            raise UserError(f"stored image {settings.image_dir / storage_path} is missing; rerun the acquire_images "
                            "stage (it stores the files again) or restore $PROFILE_AUDIT_HOME/images") from None
    return load


def _write_scores(conn: sa.Connection, detector_id: str, shas: list[str], scores: list[Any]) -> None:
    insert_rows(
        conn,
        "insert into image_scores (sha256, detector_id, probability, label, reason)"
        " values (:sha256, :d, :p, :label, :reason)"
        " on conflict (sha256, detector_id) do update set probability = excluded.probability,"
        " label = excluded.label, reason = excluded.reason",
        ({"sha256": sha, "d": detector_id, "p": s.probability, "label": s.label, "reason": s.reason}
         for sha, s in zip(shas, scores)),
    )


def score_images(settings: Settings, detector: Detector, images: list[tuple[str, str]]) -> ScoreStats:
    """Score (sha256, storage_path) pairs into image_scores; returns forward passes and cache hits."""
    counter = Counter("score", len(images))
    try:
        if isinstance(detector, EmbeddingDetector):
            return _score_embedding_detector(settings, detector, images, counter)
        load = _loader(settings)
        for batch, scores in prefetch(batched(images, settings.batch_size),
                                      lambda b: detector.score([load(p) for _, p in b]), settings.score_workers):
            with transaction(settings) as conn:
                _write_scores(conn, detector.id, [sha for sha, _ in batch], scores)
            counter.update(len(batch))
        return ScoreStats()
    finally:
        counter.close()


def _score_embedding_detector(settings: Settings, detector: EmbeddingDetector, images: list[tuple[str, str]],
                              counter: Counter) -> ScoreStats:
    if hasattr(detector, "device"):
        detector.device = settings.device
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)
    backbone = detector.backbone_id
    cached = _done(settings, "embeddings", [sha for sha, _ in images], backbone_id=backbone)
    hits = [sha for sha, _ in images if sha in cached]
    for chunk in batched(hits, CACHE_CHUNK):  # rescoring from the cache: no image is opened
        with transaction(settings) as conn:
            rows = {r.sha256: r.vector for r in conn.execute(
                sa.text("select sha256, vector from embeddings where backbone_id = :b and sha256 = any(:s)"),
                {"b": backbone, "s": chunk})}
            vectors = np.asarray([rows[sha] for sha in chunk], dtype=np.float32)
            _write_scores(conn, detector.id, chunk, detector.score_embeddings(vectors))
        counter.update(len(chunk))

    missing = [(sha, path) for sha, path in images if sha not in cached]
    load = _loader(settings)
    embedded = 0
    for batch, tensors in prefetch(batched(missing, settings.batch_size),
                                   lambda b: detector.preprocess([load(p) for _, p in b]), settings.score_workers):
        vectors = detector.embed_preprocessed(tensors)
        embedded += len(batch)
        shas = [sha for sha, _ in batch]
        with transaction(settings) as conn:
            insert_rows(
                conn,
                "insert into embeddings (sha256, backbone_id, dim, vector) values (:sha, :b, :dim, :v)"
                " on conflict do nothing",
                ({"sha": sha, "b": backbone, "dim": int(v.shape[0]), "v": v.tolist()} for sha, v in zip(shas, vectors)),
            )
            _write_scores(conn, detector.id, shas, detector.score_embeddings(vectors))
        counter.update(len(batch))
    return ScoreStats(embedded=embedded, from_cache=len(hits))



def face_signals_for(settings: Settings, images: list[tuple[str, str]]) -> int:
    """Face signals from every registered face-signal kind, for images without a row of its current detector."""
    return sum(_face_signals(settings, kind(), images) for kind in face_signal_kinds())


def _face_signals(settings: Settings, detector: Any, images: list[tuple[str, str]]) -> int:
    """Face count, usable-face pre-filter and eye alignment of one face detector; returns images analysed."""
    register_detector(settings, detector)
    done = _done(settings, "face_signals", [sha for sha, _ in images], detector_id=detector.id)
    todo = [(sha, path) for sha, path in images if sha not in done]
    load = _loader(settings)
    counter = Counter("faces", len(todo))
    try:
        # face detection (dlib, or the Haar fallback) runs in the worker threads
        for batch, signals in prefetch(batched(todo, settings.batch_size),
                                       lambda b: detector.analyze([load(p) for _, p in b]), settings.score_workers):
            with transaction(settings) as conn:
                insert_rows(
                    conn,
                    "insert into face_signals (sha256, detector_id, face_count, eye_alignment_distance, gan_eye_aligned,"
                    " usable_face, details) values (:sha, :d, :n, :dist, :aligned, :usable, cast(:details as jsonb))"
                    " on conflict (sha256, detector_id) do update set face_count = excluded.face_count,"
                    " eye_alignment_distance = excluded.eye_alignment_distance, usable_face = excluded.usable_face,"
                    " gan_eye_aligned = excluded.gan_eye_aligned, details = excluded.details",
                    ({"sha": sha, "d": detector.id, "n": s.face_count, "dist": s.eye_alignment_distance,
                      "aligned": s.gan_eye_aligned, "usable": s.usable_face, "details": _json(s.details)}
                     for (sha, _), s in zip(batch, signals)),
                )
            counter.update(len(batch))
    finally:
        counter.close()
    return len(todo)


def _json(data: Any) -> str:
    import json

    return json.dumps(data, sort_keys=True)


def run_stage(ctx: RunContext) -> Any:
    """Stage `score`: one shard of the run's images; with no detector named and none promoted, skipped
    (`begin` recorded the warning on the run; --require-detector refuses there instead)."""
    if ctx.detector is None and not ctx.settings.detector:
        try:
            resolve_detector(ctx.settings, None)
        except UserError as exc:
            images = _run_images(ctx.settings, ctx.run_key, ctx.shard_index, ctx.shard_count)
            return ScoreResult("", len(images), 0, 0, 0, ctx.shard_index, ctx.shard_count, skipped=str(exc))
    return score_run(ctx.settings, ctx.run_key, ctx.detector, ctx.shard_index, ctx.shard_count)
