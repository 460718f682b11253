"""Training entry point shared by `profile-audit train-probe` and the train-probe DAG.

Inputs are folders of labelled images: ``--real DIR --fake DIR``, where the fake folder may hold one
sub-folder per generator and the real folder one per real source (the sub-folder name is recorded as
the image's source; training balances the sources and holds the target FPR on every real one).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detectors.backbone import BackboneLoadError
from detectors.backbones import parse_backbone
from detectors.clip_probe import (
    Augmentation,
    LabelledImage,
    manifest_sha256,
    split_of,
    train_clip_probe,
    training_manifest,
)
from pipeline.config import Settings
from pipeline.core.db import ensure_schema
from pipeline.core.progress import Counter
from pipeline.errors import UserError
from pipeline.images.acquire import ImageRejected, decode_image
from pipeline.scoring.detector_store import register_detector
from pipeline.scoring.train_options import DEFAULT_MODEL

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp"}


def load_labelled_folder(folder: Path, label: int) -> tuple[list[LabelledImage], list[str]]:
    """Every decodable image under folder (recursively); the source is the first sub-folder name."""
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder of images")
    images, skipped = [], []
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
        data = path.read_bytes()
        try:
            _, rgb = decode_image(data)
        except ImageRejected as exc:
            skipped.append(f"{path}: {exc}")
            continue
        rel = path.relative_to(folder)
        source = rel.parts[0] if len(rel.parts) > 1 else folder.name
        images.append(LabelledImage(hashlib.sha256(data).hexdigest(), rgb, label, source))
    if not images:
        raise UserError(f"no readable images under {folder}")
    return images, skipped


FEATURE_MODELS = ("clip-vit-b16", "avatar-stack")  # the models whose CLIP part takes a ``feature`` option


def check_feature(model: str, feature: str | None) -> None:
    """``--feature`` is an option of the clip-vit-b16 backbone only; anywhere else it is a mistake."""
    if feature is not None and model not in FEATURE_MODELS:
        raise UserError(f"--feature {feature} applies only to --model {' or '.join(FEATURE_MODELS)}, not {model!r}")


@dataclass(frozen=True)
class TrainResult:
    detector_id: str
    path: Path
    metrics: dict
    skipped: list[str]
    manifest_path: Path | None = None


def parse_range(text: str | tuple | list | None, name: str, cast: type = int) -> tuple | None:
    """'30-100' or (30, 100) -> (30, 100); 'none' or '' -> None."""
    if text is None or (isinstance(text, str) and text.strip().lower() in ("", "none", "off")):
        return None
    try:
        low, high = (cast(v) for v in (text.split("-") if isinstance(text, str) else text))
    except ValueError:
        raise UserError(f"{name} must look like LOW-HIGH (e.g. 30-100), got {text!r}") from None
    if low > high:
        raise UserError(f"{name}: {low} > {high}")
    return low, high


def train_probe(
    settings: Settings,
    real: Path,
    fake: Path,
    model: str = DEFAULT_MODEL,
    weights: str | None = None,
    target_fpr: float = 0.01,
    promote: bool = False,
    out: Path | None = None,
    calibration: str = "platt",
    augmentation: Augmentation | None = None,
    normalize: bool = True,
    preprocess: str = "resize_center_crop",
    feature: str | None = None,
    eye_exempt: tuple[str, ...] = (),
) -> TrainResult:
    """Load the folders, train, then save the detector and its manifest to Postgres and to files.

    ``model`` is an open_clip model name (``weights`` then defaults to ``random:0``, tests only) or a
    registered backbone kind such as ``dlib-face``, which takes no weights. ``feature`` (cls, embeds or
    patch_mean) picks the clip-vit-b16 features; None leaves the backbone's default.
    """
    if not 0 < target_fpr < 1:
        raise UserError(f"--target-fpr must be between 0 and 1 (e.g. 0.01), got {target_fpr}")
    if calibration not in ("platt", "isotonic"):
        raise UserError(f"--calibration must be platt or isotonic, got {calibration!r}")
    check_feature(model, feature)
    real_images, skipped_real = load_labelled_folder(real, 0)
    fake_images, skipped_fake = load_labelled_folder(fake, 1)
    try:
        options = {"normalize": normalize, "preprocess": preprocess}
        if feature is not None:  # only the clip-vit-b16 spec takes it (open_clip's would not)
            options["feature"] = feature
        spec = None if model == STACK_MODEL else parse_backbone(model, weights, **options)
    except (FileNotFoundError, ValueError) as exc:
        raise UserError(str(exc)) from None
    images = real_images + fake_images
    if model == STACK_MODEL:
        probe = train_stack_from_images(settings, images, feature or "cls", target_fpr, eye_exempt)
        return _save(settings, probe, images, promote, out, skipped_real + skipped_fake)
    views = (augmentation or Augmentation()).views
    counter = Counter("embed", len(images) + (views - 1) * sum(split_of(im.sha256) == "train" for im in images))
    try:
        probe = train_clip_probe(spec, images, target_fpr=target_fpr, torch_threads=settings.torch_threads,
                                 progress=counter, calibration=calibration, augmentation=augmentation,
                                 batch_size=settings.batch_size, workers=settings.score_workers,
                                 device=settings.device)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    except BackboneLoadError:
        raise
    finally:
        counter.close()
    return _save(settings, probe, images, promote, out, skipped_real + skipped_fake)


def _save(settings: Settings, probe: Any, images: list[LabelledImage], promote: bool, out: Path | None,
          skipped: list[str]) -> TrainResult:
    ensure_schema(settings)
    manifest = training_manifest(images)
    path = register_detector(settings, probe, promote=promote, manifest=manifest)
    manifest_path = path.with_suffix(".manifest.csv")
    if out is not None:
        from detectors import save_detector

        path = save_detector(probe, out)
    return TrainResult(probe.id, path, probe.training["metrics"], skipped, manifest_path)


STACK_MODEL = "avatar-stack"  # train-probe --model avatar-stack: the fused detector (detectors.avatar_stack)


def train_stack_from_images(settings: Settings, images: list[LabelledImage], feature: str, target_fpr: float,
                            eye_exempt: tuple[str, ...] = ()) -> Any:
    """Embed every image once in the stack's layout (CLIP feature, face descriptor, eye distance; each part's
    own input view), then ``fit_avatar_stack``. No training augmentation: measured, it broke the FPR
    target on sources the shipped stack had seen (docs/detectors.md, "Choices measured")."""
    import numpy as np

    from detectors.avatar_stack import AvatarStack, clip_width, fit_avatar_stack
    from detectors.batching import batched, prefetch
    from detectors.clip_probe import DEFAULT_REENCODE_QUALITY, ClipProbe, FaceProbe
    from detectors.face_backbone import DESCRIPTOR_DIM
    from detectors.faces import FaceDetector

    try:
        clip_spec = parse_backbone("clip-vit-b16", feature=feature)
        face_spec = parse_backbone("dlib-face")
    except (FileNotFoundError, ValueError) as exc:
        raise UserError(str(exc)) from None
    zeros = {"bias": 0.0, "input_reencode": DEFAULT_REENCODE_QUALITY}
    provisional = AvatarStack(clip=ClipProbe(backbone=clip_spec, weight=[0.0] * clip_width(clip_spec), **zeros),
                              face=FaceProbe(backbone=face_spec, weight=[0.0] * DESCRIPTOR_DIM, **zeros),
                              eye=FaceDetector(), coef={}, intercept=0.0)
    provisional.device = settings.device
    counter = Counter("embed", len(images))
    rows = []
    try:
        for batch, prepared in prefetch(batched(images, settings.batch_size),
                                        lambda b: provisional.preprocess([im.image for im in b]), settings.score_workers):
            rows.append(provisional.embed_preprocessed(prepared))
            counter.update(len(batch))
    finally:
        counter.close()
    vectors = np.concatenate(rows)
    splits = np.array([split_of(im.sha256) for im in images])
    labels, sources = np.array([im.label for im in images]), np.array([im.source for im in images], dtype=object)
    masks = {name: splits == name for name in ("train", "val", "test")}
    for name, mask in masks.items():
        if set(labels[mask].tolist()) != {0, 1}:
            raise UserError(f"the {name} split needs real and generated images; add more images to both classes")
    try:
        stack = fit_avatar_stack(clip_spec, face_spec, {n: vectors[m] for n, m in masks.items()},
                                 {n: labels[m] for n, m in masks.items()}, {n: sources[m] for n, m in masks.items()},
                                 target_fpr=target_fpr, eye_exempt=eye_exempt)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    test = masks["test"]
    predicted = stack.probabilities(vectors[test]) >= stack.threshold
    stack.training["metrics"] = {
        key: {str(name): round(float(predicted[(labels[test] == label) & (sources[test] == name)].mean()), 4)
              for name in sorted(set(sources[test][labels[test] == label].tolist()))}
        for label, key in ((0, "test_fpr_by_real_source"), (1, "test_tpr_by_generator"))}
    stack.training["sources"] = sorted(set(sources.tolist()))
    stack.training["data_manifest_sha256"] = manifest_sha256(training_manifest(images))
    return stack
