"""End-to-end scoring throughput against the bare detectors, and the cost of a rerun.

For each backbone (open_clip configs random-initialised: the figures measure the machinery, not a real
detector; ``clip-vit-b16`` is the pretrained INT8 ONNX that the shipped detector uses), on the same stored
JPEG avatars, model loading and the worker pool's start excluded:

1. bare encode: ``encode_image`` alone on tensors decoded and preprocessed beforehand, timed before
   and after the end-to-end runs (mean of the two, to average out load from other processes);
2. bare faces: the face detector alone on pre-decoded pixels, in the stage's workers (the best of
   in-process and the worker pool is printed);
3. bare detectors: both, the compute the stage cannot avoid: 1 / (1/encode + 1/faces);
4. end to end, faces on: the score stage from the stored files (one decode per image for the probe
   and the face detector, in workers; embed; head; binary COPY of embeddings, scores and face signals
   on a writer thread), then e2e / bare detectors and e2e / bare encode (the decode ceiling);
5. end to end, faces off, and its ratio to bare encode;
6. the breakdown of the faces-on run: ms per image of read, decode, preprocess and faces (worker
   time, summed over workers), encode+head (main thread) and write (writer thread);
7. rerun, same detector: forward passes (must be 0) and wall time / first run; a new head over the
   same backbone: forward passes (must be 0: scored from the embedding cache) and wall time / first.

Uses the embedded PostgreSQL in a temporary folder.

    .venv/bin/python bench/score_throughput.py                      # ViT-B-32 and the tiny config
    .venv/bin/python bench/score_throughput.py --models pa-tiny-vit --images 512 --decode threads
    .venv/bin/python bench/score_throughput.py --models clip-vit-b16 --images 512   # the shipped backbone
    .venv/bin/python bench/score_throughput.py --device cuda --images 2048 --batch-size 128   # on a GPU
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PROFILE_AUDIT_NO_PROGRESS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import sqlalchemy as sa

from detectors import save_detector
from detectors.backbone import BackboneSpec
from detectors.backbones import BACKBONES, parse_backbone
from detectors.batching import batched, prefetch
from detectors.clip_probe import ClipProbe
from detectors.faces import FaceDetector
from pipeline import audit
from pipeline.config import load_settings
from pipeline.core.db import transaction
from pipeline.images.acquire import load_stored_image
from pipeline.scoring.prepare import decode_pool, warm_pool
from pipeline.scoring.score import PROFILE, score_run
from pipeline.stages import RunContext, run_one
from pipeline.testing.demo import draw_face, encode


def make_export(root: Path, count: int, size: int) -> Path:
    """A generic export of `count` accounts, each with its own avatar: a JPEG at quality 80."""
    rng = np.random.default_rng(0)
    (root / "avatars").mkdir(parents=True)
    with (root / "manifest.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["platform", "account_id", "handle", "avatar"])
        for i in range(count):
            (root / "avatars" / f"{i:06d}.jpg").write_bytes(encode(draw_face(rng, size), "JPEG", quality=80))
            writer.writerow(["bench", str(i), f"user{i}", f"avatars/{i:06d}.jpg"])
    return root


def random_probe(spec: BackboneSpec, dim: int, seed: int) -> ClipProbe:
    rng = np.random.default_rng(seed)
    return ClipProbe(backbone=spec, weight=(rng.normal(size=dim) / np.sqrt(dim)).tolist(), bias=0.0,
                     training={"target_fpr": "bench"})


def bare_rate(backbone, tensors: list) -> float:
    started = time.perf_counter()
    for batch in tensors:
        backbone.embed_tensors(batch)
    seconds = time.perf_counter() - started
    return sum(int(b.shape[0]) for b in tensors) / seconds


def _analyze(detector, images: list) -> list:
    return detector.analyze(images)


def bare_faces(settings, images: list) -> tuple[float, float]:
    """Face detector img/s on pre-decoded pixels: in this process, and in the stage's worker pool."""
    detector = FaceDetector()
    started = time.perf_counter()
    detector.analyze(images[: max(8, len(images) // 4)])
    alone = max(8, len(images) // 4) / (time.perf_counter() - started)
    pool = decode_pool("threads" if settings.score_decode == "threads" else "processes", settings.score_workers)
    started = time.perf_counter()
    list(prefetch(batched(images, max(1, settings.batch_size // 4)), partial(_analyze, detector),
                  settings.score_workers, pool=pool))
    return alone, len(images) / (time.perf_counter() - started)


def clear(settings, backbone_id: str) -> None:
    with transaction(settings) as conn:
        conn.execute(sa.text("delete from image_scores"))
        conn.execute(sa.text("delete from face_signals"))
        conn.execute(sa.text("delete from embeddings where backbone_id = :b"), {"b": backbone_id})


def timed_run(settings, run_key: str, probe_path: Path, backbone) -> tuple[float, int, dict, object]:
    passes = backbone.forward_passes
    PROFILE.reset()
    started = time.perf_counter()
    result = score_run(settings, run_key, str(probe_path))
    seconds = time.perf_counter() - started
    return seconds, backbone.forward_passes - passes, PROFILE.reset(), result


def bench_model(settings, run_key: str, model: str, workdir: Path, device: str | None) -> dict:
    # a registered backbone kind (clip-vit-b16: the pretrained ONNX) or an open_clip config, random-initialised
    spec = parse_backbone(model) if model in BACKBONES and model != "open_clip" else BackboneSpec.parse(model, "random:0")
    backbone = spec.load(torch_threads=settings.torch_threads, device=device)
    probe = random_probe(spec, backbone.embed_dim, 1)
    probe_path = save_detector(probe, workdir / f"{model}-probe.json")
    with transaction(settings) as conn:
        paths = conn.execute(sa.text("select distinct i.storage_path from account_avatars a join images i using (sha256)"
                                     " where a.run_key = :k order by 1"), {"k": run_key}).scalars().all()
    # the bare baselines' input: the same images, decoded (and preprocessed) beforehand (not timed)
    images = [load_stored_image(settings, p) for p in paths]
    tensors = [backbone.tensors(images[i:i + settings.batch_size]) for i in range(0, len(images), settings.batch_size)]
    backbone.embed_tensors(tensors[0])  # warm-up (allocator, kernels)
    bare_before = bare_rate(backbone, tensors)
    faces_alone, faces_pool = bare_faces(settings, images)
    bare_face = max(faces_alone, faces_pool)

    clear(settings, spec.id)
    off_seconds, _, _, _ = timed_run(replace(settings, face_signals=False), run_key, probe_path, backbone)
    clear(settings, spec.id)
    on_seconds, first_passes, breakdown, first = timed_run(settings, run_key, probe_path, backbone)
    assert first.faces_analyzed == len(paths), (first.faces_analyzed, len(paths))
    bare_after = bare_rate(backbone, tensors)
    bare = (bare_before + bare_after) / 2
    bare_detectors = 1 / (1 / bare + 1 / bare_face)
    faces_on = first.newly_scored / on_seconds
    faces_off = len(paths) / off_seconds

    rerun_seconds, rerun_passes, _, rerun = timed_run(settings, run_key, probe_path, backbone)
    new_head = save_detector(random_probe(spec, backbone.embed_dim, 2), workdir / f"{model}-probe2.json")
    rescore_seconds, rescore_passes, _, rescored = timed_run(settings, run_key, new_head, backbone)
    del tensors
    return {
        "model": model, "images": len(paths), "bare_before": bare_before, "bare_after": bare_after, "bare": bare,
        "faces_alone": faces_alone, "faces_pool": faces_pool, "bare_face": bare_face,
        "bare_detectors": bare_detectors, "e2e": faces_on, "e2e_off": faces_off,
        "ratio_detectors": faces_on / bare_detectors, "ratio_encode": faces_on / bare, "ratio_off": faces_off / bare,
        "breakdown": {k: 1000 * v / len(paths) for k, v in breakdown.items()},
        "first_passes": first_passes, "rerun_passes": rerun_passes, "rerun_ratio": rerun_seconds / on_seconds,
        "rerun_scored": rerun.newly_scored, "rescore_passes": rescore_passes,
        "rescore_ratio": rescore_seconds / on_seconds, "rescored": rescored.newly_scored,
        "rescore_from_cache": rescored.from_cache,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="ViT-B-32,pa-tiny-vit", help="comma-separated open_clip model names")
    parser.add_argument("--images", type=int, default=256, help="distinct avatars (default 256)")
    parser.add_argument("--size", type=int, default=400, help="avatar side in pixels (default 400)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="decode/preprocess/face workers (0 = no overlap)")
    parser.add_argument("--decode", default="auto", choices=("auto", "threads", "processes"),
                        help="worker kind (auto: processes with faces on, threads with faces off)")
    parser.add_argument("--no-draft", action="store_true", help="never decode JPEGs at reduced scale")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: CUDA when available)")
    args = parser.parse_args()

    import torch

    with tempfile.TemporaryDirectory(prefix="pa-score-bench-") as tmp:
        workdir = Path(tmp)
        settings = replace(load_settings(env={}, home=workdir / "home"), batch_size=args.batch_size,
                           score_workers=args.workers, torch_threads=args.threads, device=args.device,
                           face_signals=True, score_decode=args.decode, score_draft=not args.no_draft)
        export = make_export(workdir / "export", args.images, args.size)
        placeholder = save_detector(random_probe(BackboneSpec.parse("pa-tiny-vit", "random:0"), 64, 0),
                                    workdir / "placeholder.json")
        run_key = audit.begin(settings, "bench", export, "generic", settings.policy(), str(placeholder))
        ctx = RunContext(settings, run_key, settings.network)
        run_one(ctx, "ingest")
        run_one(ctx, "acquire_images")
        started = time.perf_counter()
        pool = decode_pool("threads" if args.decode == "threads" else "processes", settings.score_workers)
        if pool is not None:  # spawn the workers now (they import torch): excluded, like model loading
            warm_pool(pool, args.workers)
        pool_seconds = time.perf_counter() - started
        face = FaceDetector()
        print(f"{args.images} distinct {args.size}x{args.size} JPEG avatars; batch {args.batch_size}, "
              f"{args.workers} {args.decode} workers (start {pool_seconds:.1f} s, excluded), torch threads "
              f"{torch.get_num_threads()}, device {args.device or ('cuda' if torch.cuda.is_available() else 'cpu')}, "
              f"{os.cpu_count()} CPUs, draft {'off' if args.no_draft else 'on'}, faces: {face.landmark_source}")
        print(f"{'model':<12} {'bare enc img/s':>20} {'bare faces':>16} {'bare det':>9} {'e2e faces on':>13} "
              f"{'e2e/det':>8} {'e2e/enc':>8} {'e2e faces off':>14} {'off/enc':>8} {'passes':>7} {'rerun p.':>8} "
              f"{'rerun/1st':>9} {'new head p.':>11} {'new/1st':>8}")
        results = []
        for model in [m.strip() for m in args.models.split(",") if m.strip()]:
            r = bench_model(settings, run_key, model, workdir, args.device)
            results.append(r)
            bare = f"{r['bare']:.1f} ({r['bare_before']:.0f}/{r['bare_after']:.0f})"
            faces = f"{r['bare_face']:.1f} ({r['faces_alone']:.0f}/{r['faces_pool']:.0f})"
            print(f"{r['model']:<12} {bare:>20} {faces:>16} {r['bare_detectors']:>9.1f} {r['e2e']:>13.1f} "
                  f"{r['ratio_detectors']:>8.2f} {r['ratio_encode']:>8.3f} {r['e2e_off']:>14.1f} {r['ratio_off']:>8.3f} "
                  f"{r['first_passes']:>7} {r['rerun_passes']:>8} {r['rerun_ratio']:>9.3f} {r['rescore_passes']:>11} "
                  f"{r['rescore_ratio']:>8.3f}", flush=True)
            assert r["rerun_passes"] == 0 and r["rescore_passes"] == 0 and r["rescore_from_cache"] == r["images"]
        print("breakdown of the faces-on run, ms per image (worker steps are summed over workers; "
              "encode = embed + head in the main thread; write = binary COPY on the writer thread):")
        for r in results:
            print(f"  {r['model']:<12} " + "  ".join(f"{k} {v:.2f}" for k, v in sorted(r["breakdown"].items())))
        print("bare enc = encode_image alone on pre-decoded tensors (mean of before/after; before/after in brackets); "
              "bare faces = the face detector on pre-decoded pixels (best of in-process/worker pool); bare det = "
              "1/(1/enc + 1/faces); e2e = the score stage from the stored files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
