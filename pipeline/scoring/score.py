"""Stage `score`: each distinct image is scored once per detector, in overlapped batches.

- Embedding detectors (the CLIP probe): the embedding is cached per (image sha256, backbone id).
  Images already embedded with the backbone are scored from the cache: no forward pass, and the
  image file is never opened. So a new head over the same backbone rescores everything cheaply.
- Images to embed are read and decoded once, in workers (processes or threads, ``Settings.score_decode``)
  that fill a bounded queue while the model runs (``Settings.score_workers``, ``Settings.batch_size``);
  the face detectors analyse the same decoded pixels in the same workers (``pipeline/scoring/prepare.py``).
  Embeddings, scores and face signals are written with binary COPY on a writer thread, overlapping the
  next batch's inference. On CUDA the probe's JPEGs are decoded and preprocessed on the GPU
  (``detectors/gpu_batch.py``).
- Work can be split into shards by image hash (``shard_index`` of ``shard_count``) so Airflow can
  map the stage across workers; shards never overlap and together cover the run.
- The score stage (``pipeline/stages/score.py``) scores with the detector id pinned on the run at
  `begin`, never another; ``score_run`` with a detector named now (the ``score`` command) resolves it
  from the registry (``resolve_detector``: a stored id, a saved file, or the promoted default) and
  pins it on the run. Every registered face-signal kind (``detectors.base.face_signal_kinds``, today
  ``faces``) writes ``face_signals`` in the same stage.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import sqlalchemy as sa

from detectors import Detector, EmbeddingDetector
from detectors.base import face_signal_kinds
from detectors.batching import BackgroundWriter, batched, prefetch
from detectors.gpu_batch import gpu_plan, pin_if_cuda
from pipeline.config import Settings
from pipeline.core.bulk import copy_upsert
from pipeline.core.db import transaction
from pipeline.core.progress import Counter
from pipeline.core.runs import set_detector
from pipeline.errors import UserError
from pipeline.images.acquire import load_stored_image
from pipeline.scoring.claims import score_claimed
from pipeline.scoring.detector_store import register_detector, resolve_detector
from pipeline.scoring.prepare import (
    Prepared,
    PreparePlan,
    combined_draft,
    decode_pool,
    merge_prepared,
    prepare_batch,
    started_pools,
)

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


def run_images(settings: Settings, run_key: str, shard_index: int, shard_count: int) -> list[tuple[str, str]]:
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
    """Score the run's images not yet scored by the detector (only this shard's, when sharded), and pin it
    on the run. ``detector_ref`` None: the promoted default, for the ``score`` command only; the score
    stage always passes the id `begin` pinned."""
    check_shard(shard_index, shard_count)
    started = time.perf_counter()
    detector = resolve_detector(settings, detector_ref)
    register_detector(settings, detector)
    set_detector(settings, run_key, detector.id)
    images = run_images(settings, run_key, shard_index, shard_count)
    done = _done(settings, "image_scores", [sha for sha, _ in images], detector_id=detector.id)
    todo = [(sha, path) for sha, path in images if sha not in done]
    # the face detectors ride along with the probe: the images it decodes get their face signals from
    # the same pixels; face_signals_for below then only decodes what the probe did not (cache hits)
    faces = face_work(settings, images) if settings.face_signals else []
    # claimed chunk by chunk, so a concurrent run or shard never embeds the same image (pipeline/scoring/claims.py)
    stats, mine = score_claimed(settings, detector.id, run_key, todo,
                                lambda batch: score_images(settings, detector, batch, faces),
                                lambda a, b: ScoreStats(a.embedded + b.embedded, a.from_cache + b.from_cache), ScoreStats())
    analysed = face_signals_for(settings, images) + sum(f.shared for f in faces) if settings.face_signals else 0
    seconds = time.perf_counter() - started
    return ScoreResult(detector.id, len(images), mine, stats.embedded, stats.from_cache, shard_index, shard_count,
                       analysed, round(mine / seconds, 1) if mine and seconds > 0 else 0.0)


@dataclass
class FaceWork:
    """One face detector and the images that still lack its face_signals row."""

    detector: Any
    todo: set[str]
    shared: int = 0  # analysed on the probe's decoded pixels


def face_work(settings: Settings, images: list[tuple[str, str]]) -> list[FaceWork]:
    work = []
    for kind in face_signal_kinds():
        detector = kind()
        register_detector(settings, detector)
        done = _done(settings, "face_signals", [sha for sha, _ in images], detector_id=detector.id)
        work.append(FaceWork(detector, {sha for sha, _ in images if sha not in done}))
    return work


def _loader(settings: Settings) -> Callable[[str], Any]:
    def load(storage_path: str) -> Any:
        try:
            return load_stored_image(settings, storage_path)
        except FileNotFoundError:
            raise UserError(f"stored image {settings.image_dir / storage_path} is missing; rerun the acquire_images "
                            "stage (it stores the files again) or restore $PROFILE_AUDIT_HOME/images") from None
    return load


SCORE_COLUMNS = (("sha256", "text"), ("detector_id", "text"), ("probability", "float8"), ("label", "bool"),
                 ("reason", "text"), ("parts", "jsonb"))
EMBEDDING_COLUMNS = (("sha256", "text"), ("backbone_id", "text"), ("dim", "int4"), ("vector", "real[]"))
FACE_COLUMNS = (("sha256", "text"), ("detector_id", "text"), ("face_count", "int4"),
                ("eye_alignment_distance", "float8"), ("gan_eye_aligned", "bool"), ("usable_face", "bool"),
                ("details", "jsonb"))


def _write_scores(conn: sa.Connection, detector_id: str, shas: list[str], scores: list[Any]) -> None:
    copy_upsert(conn, "image_scores", SCORE_COLUMNS,
                ((sha, detector_id, s.probability, s.label, s.reason, None if s.parts is None else _json(s.parts))
                 for sha, s in zip(shas, scores)),
                "(sha256, detector_id) do update set probability = excluded.probability,"
                " label = excluded.label, reason = excluded.reason, parts = excluded.parts")


def write_embeddings(conn: sa.Connection, backbone_id: str, shas: list[str], vectors: np.ndarray) -> None:
    """Binary COPY: the float32 vectors reach real[] bit for bit."""
    copy_upsert(conn, "embeddings", EMBEDDING_COLUMNS,
                ((sha, backbone_id, int(v.shape[0]), v) for sha, v in zip(shas, vectors)), "do nothing")


def write_face_signals(conn: sa.Connection, detector_id: str, signals: list[tuple[str, Any]]) -> None:
    copy_upsert(conn, "face_signals", FACE_COLUMNS,
                ((sha, detector_id, s.face_count, s.eye_alignment_distance, s.gan_eye_aligned, s.usable_face,
                  _json(s.details)) for sha, s in signals),
                "(sha256, detector_id) do update set face_count = excluded.face_count,"
                " eye_alignment_distance = excluded.eye_alignment_distance, usable_face = excluded.usable_face,"
                " gan_eye_aligned = excluded.gan_eye_aligned, details = excluded.details")


def _writer(settings: Settings) -> BackgroundWriter:
    def run(job: Callable[[sa.Connection], None]) -> None:
        with transaction(settings) as conn:
            job(conn)
    return BackgroundWriter(run, threaded=settings.score_workers > 0)


def score_images(settings: Settings, detector: Detector, images: list[tuple[str, str]],
                 faces: list[FaceWork] | None = None) -> ScoreStats:
    """Score (sha256, storage_path) pairs into image_scores; returns forward passes and cache hits.
    ``faces``: face detectors to run on the pixels decoded for the probe (their rows are written too)."""
    counter = Counter("score", len(images))
    try:
        if isinstance(detector, EmbeddingDetector):
            return _score_embedding_detector(settings, detector, images, counter, faces or [])
        load = _loader(settings)
        for batch, scores in prefetch(batched(images, settings.batch_size),
                                      lambda b: detector.score([load(p) for _, p in b]), settings.score_workers):
            with transaction(settings) as conn:
                _write_scores(conn, detector.id, [sha for sha, _ in batch], scores)
            counter.update(len(batch))
        return ScoreStats()
    finally:
        counter.close()


def _plan(settings: Settings, detector: EmbeddingDetector | None, faces: list[FaceWork],
          gpu: bool = False) -> PreparePlan:
    needs = ([] if detector is None or gpu else [detector.draft_need()]) + [f.detector.draft_need() for f in faces]
    return PreparePlan(settings.image_dir, combined_draft(needs) if settings.score_draft else None,
                       None if detector is None else detector.input_pipeline(),
                       tuple(f.detector for f in faces), gpu_decode=gpu)


def _score_embedding_detector(settings: Settings, detector: EmbeddingDetector, images: list[tuple[str, str]],
                              counter: Counter, faces: list[FaceWork]) -> ScoreStats:
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

    missing = [(sha, path, tuple(k for k, f in enumerate(faces) if sha in f.todo))
               for sha, path in images if sha not in cached]
    gpu = gpu_plan(settings, detector)
    plan = _plan(settings, detector, faces, gpu is not None)
    pool = decode_pool(_pool_kind(settings, any(f.todo for f in faces), len(missing)), settings.score_workers)
    writer = _writer(settings)
    embedded = 0
    group: list[tuple[list[Any], Prepared]] = []

    def flush() -> None:
        nonlocal embedded
        batch = [item for items, _ in group for item in items]
        prepared = merge_prepared([p for _, p in group])
        group.clear()
        clock = time.perf_counter()
        tensors = gpu(prepared.raw) if gpu is not None else pin_if_cuda(prepared.tensors, settings.device)
        vectors = detector.embed_preprocessed(tensors)
        scores = detector.score_embeddings(vectors)
        PROFILE.add({"encode": time.perf_counter() - clock})
        embedded += len(batch)
        shas = [sha for sha, _, _ in batch]
        for work, signals in zip(faces, prepared.faces):
            work.todo.difference_update(sha for sha, _ in signals)
            work.shared += len(signals)
        writer.submit(partial(_write_batch, detector.id, backbone, shas, vectors, scores,
                              [(f.detector.id, signals) for f, signals in zip(faces, prepared.faces) if signals]))
        counter.update(len(batch))

    try:
        # workers prepare units of batch_size / workers images, so even one batch spreads over every
        # worker; the model then runs on whole batches again
        for batch, prepared in prefetch(batched(missing, _unit(settings)), partial(prepare_batch, plan),
                                        settings.score_workers, pool=pool):
            PROFILE.add(prepared.seconds)
            group.append((batch, prepared))
            if sum(len(items) for items, _ in group) >= settings.batch_size:
                flush()
        if group:
            flush()
    finally:
        writer.close()
    return ScoreStats(embedded=embedded, from_cache=len(hits))


PROCESSES_MIN_IMAGES = 1000  # below this, starting the processes (12-32 s, importing torch and dlib) costs more than it saves


def _pool_kind(settings: Settings, faces: bool, images: int) -> str:
    """``auto``: processes when a face detector runs on at least ``PROCESSES_MIN_IMAGES`` images (dlib
    holds the GIL: processes saved about 40 ms an image on 2 cores, against a 12-32 s start), threads
    otherwise (PIL releases the GIL, and a thread hands its tensors over without pickling); measured in
    docs/benchmarks.md. A pool already started in this process is always worth using."""
    if settings.score_decode == "auto":
        started = settings.score_workers in started_pools()
        return "processes" if faces and (images >= PROCESSES_MIN_IMAGES or started) else "threads"
    return settings.score_decode


def _unit(settings: Settings) -> int:
    return max(1, -(-settings.batch_size // max(1, settings.score_workers)))


def _write_batch(detector_id: str, backbone: str, shas: list[str], vectors: np.ndarray, scores: list[Any],
                 faces: list[tuple[str, list[tuple[str, Any]]]], conn: sa.Connection) -> None:
    clock = time.perf_counter()
    write_embeddings(conn, backbone, shas, vectors)
    _write_scores(conn, detector_id, shas, scores)
    for face_id, signals in faces:
        write_face_signals(conn, face_id, signals)
    PROFILE.add({"write": time.perf_counter() - clock})


class Profile:
    """Seconds per step of the score stage in this process (worker time for read/decode/preprocess/faces,
    main-thread time for encode, writer-thread time for write); the benchmark prints the breakdown."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, seconds: dict[str, float]) -> None:
        with self._lock:
            for key, value in seconds.items():
                self.seconds[key] = self.seconds.get(key, 0.0) + value

    def reset(self) -> dict[str, float]:
        with self._lock:
            out, self.seconds = self.seconds, {}
        return out


PROFILE = Profile()


def face_signals_for(settings: Settings, images: list[tuple[str, str]]) -> int:
    """Face signals from every registered face-signal kind, for images without a row of its current detector
    (each image decoded once for all kinds); returns the images analysed."""
    faces = face_work(settings, images)
    todo = [(sha, path, tuple(k for k, f in enumerate(faces) if sha in f.todo)) for sha, path in images]
    todo = [item for item in todo if item[2]]
    if not todo:
        return 0
    plan = _plan(settings, None, faces)
    counter = Counter("faces", len(todo))
    writer = _writer(settings)
    try:
        # face detection (dlib, or the Haar fallback) runs in the workers (processes by default)
        for batch, prepared in prefetch(batched(todo, _unit(settings)), partial(prepare_batch, plan),
                                        settings.score_workers, pool=decode_pool(_pool_kind(settings, True, len(todo)), settings.score_workers)):
            PROFILE.add(prepared.seconds)
            jobs = [(f.detector.id, signals) for f, signals in zip(faces, prepared.faces) if signals]
            writer.submit(partial(_write_faces, jobs))
            counter.update(len(batch))
    finally:
        writer.close()
        counter.close()
    return len(todo)


def _write_faces(jobs: list[tuple[str, list[tuple[str, Any]]]], conn: sa.Connection) -> None:
    clock = time.perf_counter()
    for face_id, signals in jobs:
        write_face_signals(conn, face_id, signals)
    PROFILE.add({"write": time.perf_counter() - clock})


def _json(data: Any) -> str:
    import json

    return json.dumps(data, sort_keys=True)
