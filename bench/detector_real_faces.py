"""Detectors measured on real faces: the eye-alignment test and a `dlib-face` probe, leave one generator out.

Data: ``../shared/data/faces`` (see its README). Negatives are the real web headshots
(``real/kaggle_human_faces160``); FFHQ is only shown in the eye test's threshold sweep, because it
is aligned by the very procedure that defines StyleGAN's eye positions. Generators: StyleGAN2
(thispersondoesnotexist), SDXL and FLUX.1-schnell portraits.

1. Eye test (``detectors.faces``, dlib 5-point landmarks): per generator, clean and laundered
   (JPEG q75, resize x0.5): ROC-AUC and AP of the score 1 - distance (no face: 0), TPR at 1% FPR,
   and the share flagged at the detector's threshold (TPR) against the headshots flagged (FPR).
   No ECE: the test is a rule, not a probability. Plus a threshold sweep and images/s.
2. `dlib-face` probe, leave one generator out: for each generator G, a probe is trained (the
   project's own ``fit_probe``: augmentation, the canonical re-encode, Platt, threshold at 1% FPR on
   real validation images) on half the headshots (by hash) and the *other* generators, then
   evaluated on the other half of the headshots and all of G: ROC-AUC, AP, TPR at 1% FPR, ECE, FPR
   at the threshold, images without a face (no score). Row "all (in-domain)": every generator in
   training, evaluated on held-out images of each. Embeddings are computed once per image and
   condition (the probe's input transform applied after the condition, as when scoring).

What this does not tell: anything about CLIP. No pretrained CLIP weights can be had here, and a
random-initialised open_clip backbone detects nothing real; the CLIP probe's quality on real
generators stays unmeasured until the bench runs with real weights (``bench/score_gpu_check.sh``
for speed only). The dlib-face descriptor was trained to tell people apart, not to find generators.

    .venv/bin/python bench/detector_real_faces.py                      # everything (slow on 2 cores)
    .venv/bin/python bench/detector_real_faces.py --per-folder 250     # a quicker subset
    .venv/bin/python bench/detector_real_faces.py --skip-probe --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("PROFILE_AUDIT_NO_PROGRESS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from detectors.backbones import parse_backbone
from detectors.clip_probe import Augmentation, LabelledImage, canonical_reencode, embed_views, fit_probe, split_of
from detectors.faces import FaceDetector
from pipeline.scoring.evaluate import CONDITIONS, metrics
from pipeline.scoring.train import load_labelled_folder

REAL = "real/kaggle_human_faces160"
FFHQ = "real/ffhq_thumbs128"
GENERATORS = {"stylegan2": "fake/tpdne_stylegan2_128", "sdxl": "fake/sfhq_t2i_sdxl",
              "flux1-schnell": "fake/sfhq_t2i_flux1_schnell"}
SWEEP = (0.010, 0.015, 0.020, 0.025, 0.030)


def load(root: Path, folder: str, label: int, source: str, limit: int | None) -> list[LabelledImage]:
    images, _ = load_labelled_folder(root / folder, label)
    return [LabelledImage(im.sha256, im.image, label, source) for im in images[:limit]]


def eval_half(sha256: str) -> bool:
    """Half the headshots (by another part of the hash than the train/val/test split) are held out."""
    return int(sha256[-8:], 16) % 2 == 1


def eye_test(real: list[LabelledImage], fakes: dict[str, list[LabelledImage]], ffhq: list[LabelledImage]) -> dict:
    detector = FaceDetector()
    out: dict = {"threshold": detector.threshold, "landmarks": detector.landmark_source, "conditions": {}}
    distances: dict[str, dict[str, np.ndarray]] = {}
    for condition, view in CONDITIONS.items():
        started = time.perf_counter()
        groups = {"real": real, **fakes, **({"ffhq": ffhq} if condition == "clean" else {})}
        dist = {name: np.array([np.inf if s.eye_alignment_distance is None else s.eye_alignment_distance
                                for s in detector.analyze([view(im.image, im.sha256) for im in items])])
                for name, items in groups.items()}
        seconds = time.perf_counter() - started
        distances[condition] = dist
        entry = {"images_per_second": round(sum(len(v) for v in groups.values()) / seconds, 1)}
        for gen in fakes:
            labels = np.r_[np.zeros(len(dist["real"])), np.ones(len(dist[gen]))]
            score = np.clip(1 - np.r_[dist["real"], dist[gen]], 0, 1)  # no face: 0
            m = metrics(labels, score, 1 - detector.threshold)
            entry[gen] = {k: m[k] for k in ("n_real", "n_fake", "roc_auc", "average_precision", "tpr_at_1pct_fpr",
                                            "tpr_at_threshold", "fpr_at_threshold")}
        out["conditions"][condition] = entry
    clean = distances["clean"]
    out["sweep"] = {f"{t:.3f}": {name: round(float((d < t).mean()), 4) for name, d in clean.items()} for t in SWEEP}
    out["no_face"] = {name: int(np.isinf(d).sum()) for name, d in clean.items()}
    return out


def probe_logo(real: list[LabelledImage], fakes: dict[str, list[LabelledImage]], workers: int) -> dict:
    backbone = parse_backbone("dlib-face")
    augment = Augmentation()
    images = real + [im for items in fakes.values() for im in items]
    started = time.perf_counter()
    clean = embed_views(backbone, images, lambda im, sha: canonical_reencode(im, augment.reencode_quality),
                        workers=workers)
    rate = len(images) / (time.perf_counter() - started)
    views = {"clean": clean}
    for condition in ("jpeg_q75", "resize_0.5"):
        view = CONDITIONS[condition]
        views[condition] = embed_views(backbone, images, lambda im, sha, v=view: canonical_reencode(
            v(im, sha), augment.reencode_quality), workers=workers)
    train_view = embed_views(backbone, images, augment.training_view, workers=workers)
    index = {id(im): i for i, im in enumerate(images)}

    def rows(items: list[LabelledImage], table: np.ndarray) -> np.ndarray:
        return table[[index[id(im)] for im in items]] if items else np.zeros((0, table.shape[1]), np.float32)

    def train(train_items: list[LabelledImage]) -> object:
        splits = {name: [im for im in train_items if split_of(im.sha256) == name] for name in ("train", "val", "test")}
        embedded = {name: rows(part, train_view if name == "train" else clean) for name, part in splits.items()}
        y = {name: np.array([im.label for im in part]) for name, part in splits.items()}
        probe, _, _ = fit_probe(backbone, embedded, y, target_fpr=0.01, input_reencode=augment.reencode_quality)
        return probe

    held_real = [im for im in real if eval_half(im.sha256)]
    train_real = [im for im in real if not eval_half(im.sha256)]
    out: dict = {"backbone": backbone.id, "embed_images_per_second": round(rate, 1), "held_out": {}}

    def evaluate(probe, held_fake: list[LabelledImage]) -> dict:
        result = {}
        items = held_real + held_fake
        labels = np.array([im.label for im in items])
        for condition, table in views.items():
            m = metrics(labels, probe.probabilities(rows(items, table)), probe.threshold)
            result[condition] = {k: m[k] for k in ("n_real", "n_fake", "n_unscored_real", "n_unscored_fake", "roc_auc",
                                                   "average_precision", "tpr_at_1pct_fpr", "ece", "fpr_at_threshold",
                                                   "tpr_at_threshold")}
        return result

    for gen, held in fakes.items():
        others = [im for g, items in fakes.items() if g != gen for im in items]
        out["held_out"][gen] = evaluate(train(train_real + others), held)
    # in-domain reference: every generator in training (its eval half of each generator held out)
    train_fakes = [im for items in fakes.values() for im in items if not eval_half(im.sha256)]
    probe = train(train_real + train_fakes)
    out["in_domain"] = {gen: evaluate(probe, [im for im in items if eval_half(im.sha256)]) for gen, items in fakes.items()}
    return out


def print_tables(result: dict) -> None:
    eye = result["eye_test"]
    print(f"\n## Eye test ({eye['landmarks']}, threshold {eye['threshold']}), real = web headshots\n")
    print("| condition | generator | ROC-AUC | AP | TPR@1%FPR | flagged (TPR) | headshots flagged (FPR) | images/s |")
    print("|---|---|---|---|---|---|---|---|")
    for condition, entry in eye["conditions"].items():
        for gen, m in entry.items():
            if gen == "images_per_second":
                continue
            print(f"| {condition} | {gen} | {m['roc_auc']:.3f} | {m['average_precision']:.3f} | {m['tpr_at_1pct_fpr']:.3f}"
                  f" | {m['tpr_at_threshold']:.3f} | {m['fpr_at_threshold']:.3f} | {entry['images_per_second']} |")
    groups = list(next(iter(eye["sweep"].values())))
    print("\nThreshold sweep (clean; share flagged; no face counts as not flagged; "
          f"no face found: {eye['no_face']})\n")
    print("| threshold | " + " | ".join(groups) + " |")
    print("|---|" + "---|" * len(groups))
    for t, rates in eye["sweep"].items():
        print(f"| {t} | " + " | ".join(f"{rates[g]:.4f}" for g in groups) + " |")
    if "probe" not in result:
        return
    probe = result["probe"]
    print(f"\n## dlib-face probe ({probe['backbone']}; {probe['embed_images_per_second']} images/s embedded)\n")
    print("| evaluated on | trained on | condition | ROC-AUC | AP | TPR@1%FPR | ECE | FPR@thr | TPR@thr | no face (real/fake) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for block, trained in (("held_out", "the other generators"), ("in_domain", "all generators")):
        for gen, conditions in probe[block].items():
            for condition, m in conditions.items():
                print(f"| {gen} | {trained} | {condition} | {m['roc_auc']:.3f} | {m['average_precision']:.3f} |"
                      f" {m['tpr_at_1pct_fpr']:.3f} | {m['ece']:.3f} | {m['fpr_at_threshold']:.3f} |"
                      f" {m['tpr_at_threshold']:.3f} | {m['n_unscored_real']}/{m['n_unscored_fake']} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faces", default=str(Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "faces"))
    parser.add_argument("--per-folder", type=int, help="at most this many images per folder (first by name)")
    parser.add_argument("--workers", type=int, default=2, help="preprocessing threads for embedding")
    parser.add_argument("--skip-probe", action="store_true", help="only the eye test")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    root = Path(args.faces)
    if not (root / REAL).is_dir():
        sys.exit(f"no shared faces at {root} (pass --faces)")
    real = load(root, REAL, 0, "headshots", args.per_folder)
    ffhq = load(root, FFHQ, 0, "ffhq", args.per_folder)
    fakes = {gen: load(root, folder, 1, gen, args.per_folder) for gen, folder in GENERATORS.items()}
    print(f"images: {len(real)} web headshots, {len(ffhq)} FFHQ, "
          + ", ".join(f"{len(v)} {k}" for k, v in fakes.items()))
    result = {"counts": {"headshots": len(real), "ffhq": len(ffhq), **{k: len(v) for k, v in fakes.items()}},
              "eye_test": eye_test(real, fakes, ffhq)}
    if not args.skip_probe:
        result["probe"] = probe_logo(real, fakes, args.workers)
    print_tables(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, sort_keys=True), encoding="utf-8")


if __name__ == "__main__":
    main()
