"""Detectors measured on real faces, and the shipped face detector trained (issue 21).

Data: ``../shared/data/faces`` (its README): five real sources (``real/*``) and four generators
(``fake/*``). Every image goes through the probes' input transform (the canonical JPEG re-encode, q50-80)
after the condition, as in the score stage. Splits are by image hash (``split_of``: 60/20/20).

What it measures, one table per detector (``--tables``):
- the CLIP ViT-B/16 probe (``clip-vit-b16``, INT8 ONNX) on the chosen feature;
- the dlib-face probe (``dlib-face``, dlib's 128-d descriptor);
- the eye-alignment test (dlib 5-point landmarks, threshold 0.02);
- the avatar stack (``avatar_stack``: a logistic stack of the three, fitted on the validation split).

For each real source: FPR at the detector's threshold on its test split (clean, JPEG q75, resize x0.5),
and FPR on *all* its images when that source was left out of training ("left out"). For each generator:
TPR the same way. The threshold is the one training sets: the target FPR (1%) on every real source of the
validation split (FFHQ excluded for the eye test and the stack: it is aligned like StyleGAN by
construction, so its fused FPR is reported, and held to the target by the CLIP probe alone).

``--features`` compares the CLIP feature choices (512-d projected embedding, 768-d CLS token, mean of
the patch tokens) and ``--augment`` the training augmentations, on the same protocol.
``--write-preset`` trains the shipped detector on every source (train split for the heads, validation
split for the stack and the threshold) and writes ``detectors/presets/avatar-faces-v1.json`` and its
training manifest. Embeddings are cached per condition in ``--cache`` (default /var/tmp/profile-audit-faces).

    .venv/bin/python bench/detector_real_faces.py                     # every table (about 40 min on 2 cores, cold)
    .venv/bin/python bench/detector_real_faces.py --features --augment
    .venv/bin/python bench/detector_real_faces.py --write-preset      # the command that made the shipped file
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from PIL import Image

os.environ.setdefault("PROFILE_AUDIT_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from detectors.avatar_stack import AvatarStack, fit_avatar_stack
from detectors.backbones import parse_backbone
from detectors.batching import batched, prefetch
from detectors.clip_probe import (
    DEFAULT_REENCODE_QUALITY,
    Augmentation,
    canonical_reencode,
    manifest_sha256,
    split_of,
)
from detectors.faces import FaceDetector
from pipeline.images.acquire import decode_image
from pipeline.scoring.evaluate import CONDITIONS

SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
FFHQ = "ffhq_thumbs128"  # aligned like StyleGAN: no negative set for the eye test
TARGET_FPR = 0.01
SEED_NOTE = "splits by image hash (split_of), no random draws: the same data gives the same detector"
CACHE_VERSION = "1"  # bump when what is cached changes
# the training sources' licences, as ../shared/data/faces/README.md states them
LICENCES = {
    "ffhq_thumbs128": "FFHQ: CC BY-NC-SA 4.0 (research use)",
    "kaggle_human_faces160": "none stated (web scrape)",
    "lfw_deepfunneled_250": "none stated (LFW: research use)",
    "utkface_200": "UTKFace: non-commercial research only (repository MIT)",
    "london_neutral_1350": "CC BY 4.0 (Face Research Lab London Set)",
    "tpdne_stylegan2_128": "none stated",
    "sfhq_t2i_sdxl": "MIT (SFHQ-T2I)",
    "sfhq_t2i_flux1_schnell": "MIT (SFHQ-T2I)",
    "sd21_sdfd": "none stated (SDFD, Baltsou et al., FG 2024)",
}


@dataclass(frozen=True)
class Item:
    sha256: str
    label: int
    source: str
    path: Path


def find_faces(root: Path) -> list[Item]:
    items = []
    for label, top in ((0, "real"), (1, "fake")):
        for folder in sorted(p for p in (root / top).iterdir() if p.is_dir()):
            for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES and p.is_file()):
                items.append(Item(hashlib.sha256(path.read_bytes()).hexdigest(), label, folder.name, path))
    return items


# --- embeddings, cached per condition ---------------------------------------------------------------------

class Embedder:
    """CLIP features (every choice, one forward pass per image) of the probe's view, and the face part: the
    dlib-face descriptor of the canonical view and the eye-alignment distance of the decoded pixels."""

    def __init__(self, workers: int = 2):
        self.clip = parse_backbone("clip-vit-b16").load()
        self.face = parse_backbone("dlib-face").load()
        self.eye = FaceDetector()
        self.workers = workers

    @staticmethod
    def decoded(condition: str, item: Item) -> Image.Image:
        """The image's pixels under ``condition``: what the eye test reads, as in the score stage."""
        return CONDITIONS[condition](decode_image(item.path.read_bytes())[1], item.sha256)

    @staticmethod
    def view(image: Image.Image, item: Item, augment: Augmentation | None, side: int | None = None) -> Image.Image:
        """What a probe's backbone sees: training views are the augmentation, then the canonical view."""
        if augment is not None:
            image = augment.training_view(image, item.sha256)
        return canonical_reencode(image, DEFAULT_REENCODE_QUALITY, side)

    def clip_inputs(self, condition: str, side: int | None, augment: Augmentation | None, items: list[Item]) -> np.ndarray:
        return self.clip.tensors([self.view(self.decoded(condition, it), it, augment, side) for it in items])

    def face_inputs(self, condition: str, augment: Augmentation | None, items: list[Item]) -> tuple[list, np.ndarray]:
        chips, dist = [], []
        for it in items:
            image = self.decoded(condition, it)  # decoded once for the eye test and the face chip
            signal = self.eye.analyze([image])[0]
            dist.append(np.nan if signal.eye_alignment_distance is None else signal.eye_alignment_distance)
            chips.append(self.face.chip(self.view(image, it, augment)))
        return chips, np.asarray(dist, dtype=np.float32)

    def clip_run(self, condition: str, side: int | None, augment: Augmentation | None, items: list[Item]) -> dict:
        out: dict[str, list[np.ndarray]] = {"embeds": [], "cls": [], "patch_mean": []}
        for _, pixels in self._progress(f"CLIP {condition}", items,
                                            partial(self.clip_inputs, condition, side, augment)):
            for name, values in self.clip.features(pixels).items():
                out[name].append(values)
        return {k: np.concatenate(v) for k, v in out.items()}

    def face_run(self, condition: str, augment: Augmentation | None, items: list[Item]) -> dict:
        out: dict[str, list[np.ndarray]] = {"face": [], "eye": []}
        for _, (chips, dist) in self._progress(f"faces {condition}", items,
                                                   partial(self.face_inputs, condition, augment)):
            out["face"].append(self.face.embed_tensors(chips))
            out["eye"].append(dist)
        return {k: np.concatenate(v) for k, v in out.items()}

    def _progress(self, what: str, items: list[Item], prepare):
        started, done = time.perf_counter(), 0
        for batch, prepared in prefetch(batched(items, 16), prepare, self.workers):
            yield batch, prepared
            done += len(batch)
            if done % 512 < 16 or done == len(items):
                print(f"  {what}: {done}/{len(items)} images, {done / (time.perf_counter() - started):.1f}/s",
                      file=sys.stderr, flush=True)


def embeddings(cache: Path, embedder: Embedder, condition: str, items: list[Item], side: int | None,
               augment: tuple[str, Augmentation] | None = None) -> dict[str, np.ndarray]:
    """CLIP and face features of ``items`` under ``condition`` (or augmented training views), cached."""
    tag = f"train-{augment[0]}" if augment else condition
    aug = augment[1] if augment else None
    clip = cached(cache, f"clip-{tag}-side{side or 0}", items, partial(embedder.clip_run, condition, side, aug))
    faces = cached(cache, f"faces-{tag}", items, partial(embedder.face_run, condition, aug))
    return {**clip, **faces}


def cached(cache: Path, name: str, items: list[Item], compute) -> dict[str, np.ndarray]:
    """Rows for ``items`` (in order), computing only the images the cache file lacks."""
    path = cache / f"{name}-v{CACHE_VERSION}.npz"
    have: dict[str, dict[str, np.ndarray]] = {}
    if path.is_file():
        with np.load(path, allow_pickle=False) as data:  # each data[key] reads the file again: read once
            arrays = {k: data[k] for k in data.files}
        have = {sha: {k: v[i] for k, v in arrays.items() if k != "sha"} for i, sha in enumerate(arrays["sha"].tolist())}
    todo = [it for it in items if it.sha256 not in have]
    if todo:
        print(f"embedding {len(todo)} images for {name} ({len(items) - len(todo)} cached)", file=sys.stderr)
        new = compute(todo)
        for i, it in enumerate(todo):
            have[it.sha256] = {k: v[i] for k, v in new.items()}
        cache.mkdir(parents=True, exist_ok=True)
        shas = sorted(have)
        keys = list(next(iter(have.values())))
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, sha=np.array(shas), **{k: np.stack([have[s][k] for s in shas]) for k in keys})
        os.replace(tmp, path)
    keys = list(next(iter(have.values()))) if have else []
    return {k: np.stack([have[it.sha256][k] for it in items]) for k in keys}


# --- training on cached features ----------------------------------------------------------------------------

@dataclass
class Data:
    items: list[Item]
    feats: dict[str, np.ndarray]  # clean features of every item
    train_feats: dict[str, np.ndarray]  # what the heads train on (augmented views, or the clean ones)
    side: int | None = None  # the CLIP probe's canonical resolution (input_side) the features were made with

    def __post_init__(self) -> None:
        self.y = np.array([it.label for it in self.items])
        self.src = np.array([it.source for it in self.items])
        self.split = np.array([split_of(it.sha256) for it in self.items])


def train_stack(data: Data, keep: np.ndarray, feature: str, regularization: float = 1.0,
                augmentation: Augmentation | None = None) -> AvatarStack:
    """``fit_avatar_stack`` on the kept images: heads on the train split, stack and threshold on validation."""
    masks = {s: keep & (data.split == s) for s in ("train", "val", "test")}
    if not masks["test"].any() or len(set(data.y[masks["test"]].tolist())) < 2:
        masks["test"] = masks["val"]  # a left-out protocol can empty the test split of one class
    stack = fit_avatar_stack(parse_backbone("clip-vit-b16", feature=feature), parse_backbone("dlib-face"),
                             {s: stack_embedding(data.feats, feature, m) for s, m in masks.items()},
                             {s: data.y[m] for s, m in masks.items()}, {s: data.src[m] for s, m in masks.items()},
                             train_clip=data.train_feats[feature][masks["train"]], target_fpr=TARGET_FPR,
                             regularization=regularization, input_reencode=DEFAULT_REENCODE_QUALITY,
                             input_side=data.side, eye_exempt=(FFHQ,))
    stack.training["augmentation"] = (augmentation or Augmentation(blur_p=0, jpeg_p=0)).to_dict()
    return stack


def stack_embedding(feats: dict[str, np.ndarray], feature: str, mask: np.ndarray | slice = slice(None)) -> np.ndarray:
    """The stack's cached embedding layout: CLIP feature, face descriptor, eye distance."""
    return np.column_stack([feats[feature][mask], feats["face"][mask], feats["eye"][mask]])


def rates(data: Data, feats: dict[str, np.ndarray], mask: np.ndarray, stack: AvatarStack, feature: str) -> dict:
    """Labelled share per source, for each detector of the stack and the stack itself."""
    clip, face, eye = stack.clip, stack.face, stack.eye
    labels = {
        "clip-vit-b16 probe": clip.probabilities(feats[feature][mask]) >= clip.threshold,
        # no face: no score, so not labelled
        "dlib-face probe": np.nan_to_num(face.probabilities(feats["face"][mask]), nan=-1.0) >= face.threshold,
        "eye test": np.nan_to_num(feats["eye"][mask], nan=1.0) < eye.threshold,
        "avatar stack": stack.probabilities(stack_embedding(feats, feature, mask)) >= stack.threshold,
    }
    src = data.src[mask]
    return {det: {s: (float(lab[src == s].mean()), int((src == s).sum())) for s in sorted(set(src.tolist()))}
            for det, lab in labels.items()}


# --- the protocols ----------------------------------------------------------------------------------------

def in_domain(data: Data, by_condition: dict[str, tuple[np.ndarray, dict]], feature: str, **kw) -> dict:
    stack = train_stack(data, np.ones(len(data.items), bool), feature, **kw)
    return {cond: rates(data, feats, mask, stack, feature) for cond, (mask, feats) in by_condition.items()}


def left_out(data: Data, feature: str, **kw) -> dict:
    """Each real source and each generator left out of training (heads, stack and threshold), then
    measured on all of its images."""
    out: dict[str, dict] = {}
    for source in sorted(set(data.src.tolist())):
        stack = train_stack(data, data.src != source, feature, **kw)
        for det, per in rates(data, data.feats, data.src == source, stack, feature).items():
            out.setdefault(det, {})[source] = per[source]
        print(f"  left out {source}", file=sys.stderr, flush=True)
    return out


def print_tables(data: Data, measured: dict, feature: str) -> None:
    reals = sorted(set(data.src[data.y == 0].tolist()))
    gens = sorted(set(data.src[data.y == 1].tolist()))
    conds = list(measured["in_domain"])
    for det in measured["in_domain"][conds[0]]:
        print(f"\n## {det}" + (f" ({feature} feature)" if "clip" in det or "stack" in det else ""))
        print("\n| source | kind | n test | " + " | ".join(conds) + " | left out of training (n) |")
        print("|---|---|---|" + "---|" * len(conds) + "---|")
        for s in reals + gens:
            kind = "real: FPR" if s in reals else "generated: TPR"
            cells = [f"{measured['in_domain'][c][det].get(s, (float('nan'), 0))[0]:.3f}" for c in conds]
            lo = measured["left_out"][det][s]
            n = measured["in_domain"][conds[0]][det].get(s, (0, 0))[1]
            print(f"| {s} | {kind} | {n} | " + " | ".join(cells) + f" | {lo[0]:.3f} ({lo[1]}) |")


def compare_features(data: Data) -> None:
    """Each CLIP feature choice alone (a probe, no stack): in-domain test rates and left-out rates."""
    reals = sorted(set(data.src[data.y == 0].tolist()))
    gens = sorted(set(data.src[data.y == 1].tolist()))
    print("\n## CLIP feature choice (clip-vit-b16 probe alone; test split / left out of training)\n")
    print("| feature | C | " + " | ".join(reals) + " | " + " | ".join(gens) + " |")
    print("|---|---|" + "---|" * (len(reals) + len(gens)))
    for feature in ("embeds", "cls", "patch_mean"):
        for c in (0.1, 1.0):
            stack = train_stack(data, np.ones(len(data.items), bool), feature, regularization=c)
            test = rates(data, data.feats, data.split == "test", stack, feature)["clip-vit-b16 probe"]
            lo = {}
            for source in reals + gens:
                s = train_stack(data, data.src != source, feature, regularization=c)
                lo[source] = rates(data, data.feats, data.src == source, s, feature)["clip-vit-b16 probe"][source][0]
            print(f"| {feature} | {c} | " + " | ".join(f"{test[s][0]:.3f} / {lo[s]:.3f}" for s in reals + gens) + " |",
                  flush=True)


def write_preset(data: Data, stack: AvatarStack, measured: dict, out_dir: Path, command: str) -> Path:
    from detectors import save_detector

    manifest = [{"sha256": it.sha256, "label": it.label, "split": split_of(it.sha256), "source": it.source}
                for it in sorted(data.items, key=lambda it: (it.sha256, it.label))]
    reals = sorted(set(data.src[data.y == 0].tolist()))
    gens = sorted(set(data.src[data.y == 1].tolist()))
    conds = measured["in_domain"]

    def table(det: str) -> dict:
        return {"fpr_by_real_source": {s: {c: round(conds[c][det][s][0], 4) for c in conds} | {
                    "left_out": round(measured["left_out"][det][s][0], 4)} for s in reals},
                "tpr_by_generator": {g: {c: round(conds[c][det][g][0], 4) for c in conds} | {
                    "left_out": round(measured["left_out"][det][g][0], 4)} for g in gens}}

    stack.training = {
        **stack.training,
        "data_manifest_sha256": manifest_sha256(manifest),
        "manifest_file": "avatar-faces-v1.manifest.csv",
        "sources": {s: {"label": "real" if s in reals else "generated", "images": int((data.src == s).sum()),
                        "licence": LICENCES.get(s, "unknown")} for s in reals + gens},
        "licence_note": ("some training sources are for non-commercial research use only (FFHQ, UTKFace, LFW); "
                         "see docs/detectors.md, 'The shipped detector', before relying on the head commercially"),
        "measured": {"command": command, "on": "test split by image hash (clean, jpeg_q75, resize_0.5) and, "
                     "'left_out', all images of a source or generator left out of training",
                     **{det: table(det) for det in measured["in_domain"]["clean"]}},
        "reproduce": SEED_NOTE,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "avatar-faces-v1.manifest.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["sha256", "label", "split", "source"])
        writer.writeheader()
        writer.writerows(manifest)
    return save_detector(stack, out_dir / "avatar-faces-v1.json")


AUGMENTATIONS = {"none": None, "univfd": Augmentation(),  # UnivFD: blur and JPEG, each with p 0.5
                 "platform": Augmentation(resize_p=0.5, crop_p=0.5)}  # the same, plus resize and crop


def with_train_views(data: Data, cache: Path, embedder: Embedder, name: str) -> Data:
    """The data with the train split's CLIP rows replaced by their augmented views (``name``)."""
    if AUGMENTATIONS[name] is None:
        return data
    mask = data.split == "train"
    train_items = [it for it, m in zip(data.items, mask) if m]
    # the CLIP probe's views only: the dlib-face head keeps the clean ones (its faces cost four times as much)
    sub = cached(cache, f"clip-train-{name}-side{data.side or 0}", train_items,
                 partial(embedder.clip_run, "clean", data.side, AUGMENTATIONS[name]))
    out = {k: v.copy() for k, v in data.feats.items()}
    for k in sub:
        out[k][mask] = sub[k]
    return Data(data.items, data.feats, out, data.side)


def compare_augmentations(data: Data, cache: Path, embedder: Embedder, by_condition: dict, feature: str) -> None:
    print("\n## Training augmentation (CLIP probe and avatar stack)")
    for name, aug in AUGMENTATIONS.items():
        d = with_train_views(data, cache, embedder, name)
        m = {"in_domain": in_domain(d, by_condition, feature, augmentation=aug),
             "left_out": left_out(d, feature, augmentation=aug)}
        keep = ("clip-vit-b16 probe", "avatar stack")
        print(f"\n### augmentation: {name}")
        print_tables(d, {"in_domain": {c: {k: v[k] for k in keep} for c, v in m["in_domain"].items()},
                         "left_out": m["left_out"]}, feature)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    root_default = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "faces"
    parser.add_argument("--faces", default=str(root_default))
    parser.add_argument("--cache", default="/var/tmp/profile-audit-faces", help="embedding cache folder")
    parser.add_argument("--feature", default="cls", choices=["cls", "embeds", "patch_mean"])
    parser.add_argument("--regularization", type=float, default=1.0, help="C of the heads' logistic regression")
    parser.add_argument("--features", action="store_true", help="compare the CLIP feature choices")
    parser.add_argument("--augment", action="store_true",
                        help="compare training augmentations (embeds augmented views of the train split)")
    parser.add_argument("--train-augmentation", choices=["none", "univfd", "platform"], default="none",
                        help="what the shipped heads train on (measured by --augment)")
    parser.add_argument("--write-preset", nargs="?", const=str(Path(__file__).resolve().parent.parent / "detectors" / "presets"),
                        help="train on every source and write the shipped detector here")
    parser.add_argument("--input-side", type=int, default=None,
                        help="the CLIP probe's canonical resolution: short side scaled to this before the re-encode")
    parser.add_argument("--compare-sides", type=int, nargs="*", help="print every table for these sides and none")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    root = Path(args.faces)
    if not (root / "real").is_dir() or not (root / "fake").is_dir():
        sys.exit(f"no shared faces at {root} (pass --faces)")
    items = find_faces(root)
    print(f"{len(items)} images: " + ", ".join(f"{s} {sum(it.source == s for it in items)}"
                                                for s in sorted({it.source for it in items})), file=sys.stderr)
    cache = Path(args.cache)
    embedder = Embedder(args.workers)
    sides = [None, *args.compare_sides] if args.compare_sides else [args.input_side]
    for side in sides:  # a comparison of canonical resolutions prints the tables once per side
        data = Data(items, embeddings(cache, embedder, "clean", items, side), {}, side)
        data.train_feats = data.feats
        test = data.split == "test"
        test_items = [it for it, t in zip(items, test) if t]
        by_condition = {"clean": (test, data.feats)}
        for cond in ("jpeg_q75", "resize_0.5"):
            sub = embeddings(cache, embedder, cond, test_items, side)
            full = {k: np.full((len(items), *v.shape[1:]), np.nan, dtype=v.dtype) for k, v in sub.items()}
            for k in full:
                full[k][test] = sub[k]
            by_condition[cond] = (test, full)
        data = with_train_views(data, cache, embedder, args.train_augmentation)
        if len(sides) > 1:
            print(f"\n# CLIP input side: {side or 'as decoded'}")
        if args.features:
            compare_features(data)
        if args.augment:
            compare_augmentations(data, cache, embedder, by_condition, args.feature)
        run_protocols(args, data, by_condition)


def run_protocols(args: argparse.Namespace, data: Data, by_condition: dict) -> None:
    """The tables for the chosen feature, and with --write-preset the shipped file."""
    items = data.items
    aug = AUGMENTATIONS[args.train_augmentation]
    measured = {"in_domain": in_domain(data, by_condition, args.feature, regularization=args.regularization,
                                       augmentation=aug),
                "left_out": left_out(data, args.feature, regularization=args.regularization, augmentation=aug)}
    print_tables(data, measured, args.feature)
    if args.json:
        Path(args.json).write_text(json.dumps(measured, indent=1, sort_keys=True), encoding="utf-8")
    if args.write_preset:
        stack = train_stack(data, np.ones(len(items), bool), args.feature, regularization=args.regularization,
                            augmentation=aug)
        command = ("python bench/detector_real_faces.py --write-preset --feature " + args.feature
                   + f" --regularization {args.regularization} --train-augmentation {args.train_augmentation}"
                   + (f" --input-side {args.input_side}" if args.input_side else ""))
        path = write_preset(data, stack, measured, Path(args.write_preset), command)
        print(f"\nwrote {path} ({stack.id}); threshold {stack.threshold:.4f}; stack {stack.coef}, "
              f"intercept {stack.intercept:.3f}")


if __name__ == "__main__":
    main()
