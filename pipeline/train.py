"""Training entry point shared by `profile-audit train-probe` and the train-probe DAG."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from detectors.backbone import BackboneSpec
from detectors.clip_probe import LabelledImage, train_clip_probe
from pipeline.config import Settings
from pipeline.db import ensure_schema
from pipeline.detector_store import register_detector
from pipeline.errors import UserError
from pipeline.images import ImageRejected, decode_image
from pipeline.progress import Counter

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


@dataclass(frozen=True)
class TrainResult:
    detector_id: str
    path: Path
    metrics: dict
    skipped: list[str]


def train_probe(
    settings: Settings,
    real: Path,
    fake: Path,
    model: str = "pa-tiny-vit",
    weights: str = "random:0",
    target_fpr: float = 0.01,
    promote: bool = False,
    out: Path | None = None,
) -> TrainResult:
    real_images, skipped_real = load_labelled_folder(real, 0)
    fake_images, skipped_fake = load_labelled_folder(fake, 1)
    try:
        spec = BackboneSpec.parse(model, weights)
    except (FileNotFoundError, ValueError) as exc:
        raise UserError(str(exc)) from None
    counter = Counter("embed", len(real_images) + len(fake_images))
    try:
        probe = train_clip_probe(spec, real_images + fake_images, target_fpr=target_fpr,
                                 torch_threads=settings.torch_threads, progress=counter)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    finally:
        counter.close()
    ensure_schema(settings)
    path = register_detector(settings, probe, promote=promote)
    if out is not None:
        from detectors import save_detector

        path = save_detector(probe, out)
    return TrainResult(probe.id, path, probe.training["metrics"], skipped_real + skipped_fake)
