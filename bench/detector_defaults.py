"""The probe's input defaults measured on the shared faces: re-encode range and preprocessing, clean and
laundered, and the format shortcut with and without the re-encode rule.

For each backbone and setting (canonical re-encode range: none, 50-80, 30-100; open_clip preprocessing:
resize_center_crop, center_crop), two probes are trained with the project's ``fit_probe`` (UnivFD
augmentation, the setting's re-encode as the input transform, Platt, threshold at 1% FPR on real
validation images):

- task "generator": web headshots (JPEG, 160 px) vs StyleGAN2 (JPEG, 128 px), split by hash;
  held-out ROC-AUC and TPR at 1% FPR, clean, after JPEG q75 and after resize x0.5;
- task "format shortcut": FFHQ (PNG, 128 px) vs StyleGAN2 (JPEG, 128 px). In-domain AUC, then the
  share of held-out *web headshots* (real, JPEG like the fakes) labelled synthetic at the threshold:
  a probe that learned "PNG = real" labels JPEG reals synthetic, far above the 1% it promises.

The open_clip backbone is a random-initialised tiny config: it measures what survives each setting
(shortcuts, low-level traces), not what a real CLIP detects. ``dlib-face`` is a real pretrained
network but slow on a CPU, so it runs on fewer images.

    .venv/bin/python bench/detector_defaults.py                              # tiny open_clip, 400 per folder
    .venv/bin/python bench/detector_defaults.py --backbones dlib-face --per-folder 150
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PROFILE_AUDIT_NO_PROGRESS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from detectors.backbones import parse_backbone
from detectors.clip_probe import Augmentation, LabelledImage, canonical_reencode, embed_views, fit_probe, split_of
from pipeline.scoring.evaluate import CONDITIONS, metrics
from pipeline.scoring.train import load_labelled_folder

FOLDERS = {"headshots": ("real/kaggle_human_faces160", 0), "ffhq": ("real/ffhq_thumbs128", 0),
           "stylegan2": ("fake/tpdne_stylegan2_128", 1)}
REENCODE = {"none": None, "50-80": (50, 80), "30-100": (30, 100)}


def settings_for(backbone_kind: str) -> list[tuple[str, str]]:
    preprocess = ["resize_center_crop", "center_crop"] if backbone_kind == "open_clip" else ["resize_center_crop"]
    return [(r, p) for r in REENCODE for p in preprocess]


def run_setting(model: str, reencode: str, preprocess: str, data: dict[str, list[LabelledImage]], workers: int) -> dict:
    quality = REENCODE[reencode]
    backbone = parse_backbone(model, "random:0" if model != "dlib-face" else None, preprocess=preprocess)
    augment = Augmentation(reencode_quality=quality)
    images = [im for items in data.values() for im in items]
    index = {id(im): i for i, im in enumerate(images)}
    started = time.perf_counter()
    views = {name: embed_views(backbone, images, lambda im, sha, v=view: canonical_reencode(v(im, sha), quality),
                               workers=workers) for name, view in CONDITIONS.items()}
    train_view = embed_views(backbone, images, augment.training_view, workers=workers)
    rate = 4 * len(images) / (time.perf_counter() - started)

    def rows(items: list[LabelledImage], table: np.ndarray) -> np.ndarray:
        return table[[index[id(im)] for im in items]]

    def train(items: list[LabelledImage]):
        splits = {name: [im for im in items if split_of(im.sha256) == name] for name in ("train", "val", "test")}
        embedded = {name: rows(part, train_view if name == "train" else views["clean"]) for name, part in splits.items()}
        y = {name: np.array([im.label for im in part]) for name, part in splits.items()}
        probe, _, _ = fit_probe(backbone, embedded, y, target_fpr=0.01, input_reencode=quality)
        return probe, splits["test"]

    out: dict = {"images_per_second": round(rate, 1)}
    probe, test = train(data["headshots"] + data["stylegan2"])
    labels = np.array([im.label for im in test])
    out["generator"] = {}
    for name, table in views.items():
        m = metrics(labels, probe.probabilities(rows(test, table)), probe.threshold)
        out["generator"][name] = {k: m[k] for k in ("roc_auc", "tpr_at_1pct_fpr", "fpr_at_threshold", "tpr_at_threshold")}
    probe, test = train(data["ffhq"] + data["stylegan2"])
    labels = np.array([im.label for im in test])
    m = metrics(labels, probe.probabilities(rows(test, views["clean"])), probe.threshold)
    held = [im for im in data["headshots"] if split_of(im.sha256) == "test"]
    p_heads = probe.probabilities(rows(held, views["clean"]))
    p_heads = p_heads[~np.isnan(p_heads)]
    out["format_shortcut"] = {"in_domain_roc_auc": m["roc_auc"], "ffhq_fpr_at_threshold": m["fpr_at_threshold"],
                              "headshots_labelled": round(float((p_heads >= probe.threshold).mean()), 4),
                              "n_headshots": len(p_heads)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faces", default=str(Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "faces"))
    parser.add_argument("--backbones", default="pa-tiny-vit", help="comma-separated: an open_clip model and/or dlib-face")
    parser.add_argument("--per-folder", type=int, default=400)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    root = Path(args.faces)
    if not (root / FOLDERS["headshots"][0]).is_dir():
        sys.exit(f"no shared faces at {root} (pass --faces)")
    data = {}
    for name, (folder, label) in FOLDERS.items():
        images, _ = load_labelled_folder(root / folder, label)
        data[name] = [LabelledImage(im.sha256, im.image, label, name) for im in images[: args.per_folder]]
    print("images: " + ", ".join(f"{len(v)} {k}" for k, v in data.items()))
    results = {}
    print("\n| backbone | re-encode | preprocess | condition | ROC-AUC | TPR@1%FPR | FPR@thr | TPR@thr |"
          " format shortcut: FFHQ-vs-StyleGAN AUC | headshots labelled (promise 1%) | images/s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for model in args.backbones.split(","):
        kind = "dlib-face" if model == "dlib-face" else "open_clip"
        for reencode, preprocess in settings_for(kind):
            r = run_setting(model, reencode, preprocess, data, args.workers)
            results[f"{model}|{reencode}|{preprocess}"] = r
            fs = r["format_shortcut"]
            for condition, m in r["generator"].items():
                shortcut = (f"{fs['in_domain_roc_auc']:.3f} | {fs['headshots_labelled']:.3f} of {fs['n_headshots']}"
                            if condition == "clean" else " | ")
                print(f"| {model} | {reencode} | {preprocess if kind == 'open_clip' else 'face chip'} | {condition} |"
                      f" {m['roc_auc']:.3f} | {m['tpr_at_1pct_fpr']:.3f} | {m['fpr_at_threshold']:.3f} |"
                      f" {m['tpr_at_threshold']:.3f} | {shortcut} | {r['images_per_second']} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, sort_keys=True), encoding="utf-8")


if __name__ == "__main__":
    main()
