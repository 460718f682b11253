"""End-to-end scoring throughput against bare ``encode_image``, and the cost of a rerun.

For each backbone (random-initialised: the figures measure the machinery, not a real detector):

1. bare: ``encode_image`` alone on tensors that were decoded and preprocessed beforehand (the
   ceiling), timed twice (before and after step 2, to average out load from other processes);
2. end to end: the score stage on the same images, from the stored files: decode + preprocess
   (worker threads) + embed + head + write of embeddings and scores to PostgreSQL;
3. the ratio end-to-end / bare images/s (target >= 0.9 for ViT-B-32 on a 2-core CPU);
4. rerun, same detector: forward passes performed (must be 0) and wall time / first run;
5. a new head over the same backbone: forward passes (must be 0: scored from the embedding cache)
   and wall time / first run.

Model loading is excluded from every figure. Face signals are off here (a separate detector);
its throughput is printed once at the end. Uses the embedded PostgreSQL in a temporary folder.

    .venv/bin/python bench/score_throughput.py                      # ViT-B-32 and the tiny config
    .venv/bin/python bench/score_throughput.py --models pa-tiny-vit --images 2000
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
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PROFILE_AUDIT_NO_PROGRESS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import sqlalchemy as sa

from detectors import save_detector
from detectors.backbone import BackboneSpec, load_backbone
from detectors.clip_probe import ClipProbe
from pipeline import audit
from pipeline.config import load_settings
from pipeline.core.db import transaction
from pipeline.images.acquire import load_stored_image
from pipeline.scoring.score import face_signals_for, score_run
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


def clear(settings, backbone_id: str) -> None:
    with transaction(settings) as conn:
        conn.execute(sa.text("delete from image_scores"))
        conn.execute(sa.text("delete from embeddings where backbone_id = :b"), {"b": backbone_id})


def bench_model(settings, run_key: str, model: str, workdir: Path, device: str | None) -> dict:
    spec = BackboneSpec.parse(model, "random:0")
    backbone = load_backbone(spec, torch_threads=settings.torch_threads, device=device)
    probe = random_probe(spec, backbone.embed_dim, 1)
    probe_path = save_detector(probe, workdir / f"{model}-probe.json")
    with transaction(settings) as conn:
        paths = conn.execute(sa.text("select distinct i.storage_path from account_avatars a join images i using (sha256)"
                                     " where a.run_key = :k order by 1"), {"k": run_key}).scalars().all()
    # the bare baseline's input: the same images, decoded and preprocessed beforehand (not timed)
    tensors = [backbone.tensors([load_stored_image(settings, p) for p in paths[i:i + settings.batch_size]])
               for i in range(0, len(paths), settings.batch_size)]
    backbone.embed_tensors(tensors[0])  # warm-up (allocator, kernels)
    bare_before = bare_rate(backbone, tensors)

    clear(settings, spec.id)
    passes = backbone.forward_passes
    started = time.perf_counter()
    first = score_run(settings, run_key, str(probe_path))
    first_seconds = time.perf_counter() - started
    first_passes = backbone.forward_passes - passes
    end_to_end = first.newly_scored / first_seconds
    bare_after = bare_rate(backbone, tensors)
    bare = (bare_before + bare_after) / 2

    passes = backbone.forward_passes
    started = time.perf_counter()
    rerun = score_run(settings, run_key, str(probe_path))
    rerun_seconds = time.perf_counter() - started
    rerun_passes = backbone.forward_passes - passes

    new_head = save_detector(random_probe(spec, backbone.embed_dim, 2), workdir / f"{model}-probe2.json")
    passes = backbone.forward_passes
    started = time.perf_counter()
    rescored = score_run(settings, run_key, str(new_head))
    rescore_seconds = time.perf_counter() - started
    rescore_passes = backbone.forward_passes - passes
    del tensors
    return {
        "model": model, "images": len(paths), "bare_before": bare_before, "bare_after": bare_after, "bare": bare,
        "end_to_end": end_to_end, "ratio": end_to_end / bare, "first_seconds": first_seconds,
        "first_passes": first_passes, "rerun_passes": rerun_passes, "rerun_ratio": rerun_seconds / first_seconds,
        "rerun_scored": rerun.newly_scored, "rescore_passes": rescore_passes,
        "rescore_ratio": rescore_seconds / first_seconds, "rescored": rescored.newly_scored,
        "rescore_from_cache": rescored.from_cache,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="ViT-B-32,pa-tiny-vit", help="comma-separated open_clip model names")
    parser.add_argument("--images", type=int, default=256, help="distinct avatars (default 256)")
    parser.add_argument("--size", type=int, default=400, help="avatar side in pixels (default 400)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="decode/preprocess threads (0 = no overlap)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: CUDA when available)")
    args = parser.parse_args()

    import torch

    with tempfile.TemporaryDirectory(prefix="pa-score-bench-") as tmp:
        workdir = Path(tmp)
        settings = replace(load_settings(env={}, home=workdir / "home"), batch_size=args.batch_size,
                           score_workers=args.workers, torch_threads=args.threads, device=args.device,
                           face_signals=False)
        export = make_export(workdir / "export", args.images, args.size)
        placeholder = save_detector(random_probe(BackboneSpec.parse("pa-tiny-vit", "random:0"), 64, 0),
                                    workdir / "placeholder.json")
        run_key = audit.begin(settings, "bench", export, "generic", settings.network, str(placeholder))
        ctx = audit.RunContext(settings, run_key, settings.network)
        audit.run_stage(ctx, "ingest")
        audit.run_stage(ctx, "acquire_images")
        print(f"{args.images} distinct {args.size}x{args.size} JPEG avatars; batch {args.batch_size}, "
              f"{args.workers} preprocessing threads, torch threads {torch.get_num_threads()}, "
              f"device {args.device or ('cuda' if torch.cuda.is_available() else 'cpu')}, {os.cpu_count()} CPUs")
        header = (f"{'model':<12} {'bare img/s':>18} {'end-to-end img/s':>17} {'ratio':>6} {'passes':>7} "
                  f"{'rerun passes':>12} {'rerun/first':>11} {'new head passes':>15} {'new head/first':>14}")
        print(header)
        for model in [m.strip() for m in args.models.split(",") if m.strip()]:
            r = bench_model(settings, run_key, model, workdir, args.device)
            bare = f"{r['bare']:.1f} ({r['bare_before']:.0f}/{r['bare_after']:.0f})"
            print(f"{r['model']:<12} {bare:>18} {r['end_to_end']:>17.1f} {r['ratio']:>6.2f} {r['first_passes']:>7} "
                  f"{r['rerun_passes']:>12} {r['rerun_ratio']:>11.3f} {r['rescore_passes']:>15} {r['rescore_ratio']:>14.3f}",
                  flush=True)
            assert r["rerun_passes"] == 0 and r["rescore_passes"] == 0 and r["rescore_from_cache"] == r["images"]
        with transaction(settings) as conn:
            shas = [(row.sha256, row.storage_path) for row in conn.execute(sa.text("select sha256, storage_path from images"))]
        started = time.perf_counter()
        analysed = face_signals_for(replace(settings, face_signals=True), shas)
        print(f"face signals (Haar cascades, {args.workers} threads): {analysed / (time.perf_counter() - started):.1f} img/s")
        print("bare = encode_image alone on pre-decoded tensors (mean of before/after the end-to-end run); "
              "end-to-end = decode + preprocess + embed + head + write; ratio = end-to-end / bare")
    return 0


if __name__ == "__main__":
    sys.exit(main())
