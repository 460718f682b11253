"""The CLIP linear probe (UnivFD-style): frozen open_clip ``encode_image`` features -> Linear(d, 1).

The raw logit is calibrated to a probability with Platt scaling fitted on held-out images, and the
label threshold is set for a target false-positive rate on held-out *real* images, not at 0.5.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from PIL import Image

from detectors.backbone import BackboneSpec, load_backbone
from detectors.base import EmbeddingDetector, ImageScore, register


# Both classes are re-encoded at a JPEG quality drawn from this range before embedding. Measured on
# the demo faces (tests/test_detectors.py): a ceiling at or below the usual upload quality masks a
# JPEG-vs-PNG difference in the training files; a range up to 100 (UnivFD's 30-100) leaves most of it.
DEFAULT_REENCODE_QUALITY = (50, 80)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -500, 500)))


@register
@dataclass(eq=False)
class ClipProbe(EmbeddingDetector):
    kind = "clip_probe"
    version = "1"

    backbone: BackboneSpec
    weight: list[float]
    bias: float
    platt_a: float = 1.0  # probability = sigmoid(platt_a * logit + platt_b)
    platt_b: float = 0.0
    threshold: float = 0.5
    training: dict[str, Any] = field(default_factory=dict)  # data manifest, split, metrics

    @property
    def backbone_id(self) -> str:
        return self.backbone.id

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        return load_backbone(self.backbone).embed(images)

    def logits(self, embeddings: np.ndarray) -> np.ndarray:
        w = np.asarray(self.weight, dtype=np.float64)
        if embeddings.shape[-1] != w.shape[0]:
            raise ValueError(f"embedding width {embeddings.shape[-1]} != head width {w.shape[0]} ({self.backbone_id})")
        return embeddings.astype(np.float64) @ w + self.bias

    def probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        return _sigmoid(self.platt_a * self.logits(embeddings) + self.platt_b)

    def score_embeddings(self, embeddings: np.ndarray) -> list[ImageScore]:
        probs = self.probabilities(embeddings)
        return [
            ImageScore(
                probability=float(p),
                label=bool(p >= self.threshold),
                reason=f"clip probe p={p:.3f} {'>=' if p >= self.threshold else '<'} "
                f"threshold {self.threshold:.3f} ({self.training.get('target_fpr', '?')} FPR on real)",
            )
            for p in probs
        ]

    def to_spec(self) -> dict[str, Any]:
        # full float precision: JSON round-trips Python floats exactly, so a loaded detector scores
        # bit-for-bit like the one that was saved
        return {
            "backbone": self.backbone.to_dict(),
            "weight": [float(v) for v in self.weight],
            "bias": float(self.bias),
            "platt_a": float(self.platt_a),
            "platt_b": float(self.platt_b),
            "threshold": float(self.threshold),
            "training": self.training,
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> "ClipProbe":
        return cls(
            backbone=BackboneSpec.from_dict(spec["backbone"]),
            weight=list(spec["weight"]),
            bias=float(spec["bias"]),
            platt_a=float(spec.get("platt_a", 1.0)),
            platt_b=float(spec.get("platt_b", 0.0)),
            threshold=float(spec.get("threshold", 0.5)),
            training=dict(spec.get("training", {})),
        )


@dataclass(frozen=True)
class LabelledImage:
    sha256: str  # of the original bytes: the split is by hash, so duplicates never straddle splits
    image: Image.Image
    label: int  # 1 = generated
    source: str = ""


def split_of(sha256: str) -> str:
    """Deterministic 60/20/20 split by image hash."""
    bucket = int(sha256[:8], 16) % 10
    return "train" if bucket < 6 else "val" if bucket < 8 else "test"


def reencode_jpeg(image: Image.Image, sha256: str, quality_range: tuple[int, int]) -> Image.Image:
    """Re-encode as JPEG at a quality drawn per image from its hash.

    Real and fake images go through this same path, so the file format of the training data
    cannot become a shortcut ("PNG = fake").
    """
    low, high = quality_range
    quality = low + int(sha256[8:16], 16) % (high - low + 1)
    buf = io.BytesIO()
    image.convert("RGB").save(buf, "JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def threshold_at_fpr(real_probabilities: np.ndarray, target_fpr: float) -> float:
    """Smallest threshold whose false-positive rate on these real images is <= target_fpr."""
    ordered = np.sort(np.asarray(real_probabilities, dtype=np.float64))[::-1]
    allowed = int(np.floor(target_fpr * len(ordered)))
    if allowed >= len(ordered):
        return 0.0
    return float(np.nextafter(ordered[allowed], np.inf))


def train_clip_probe(
    backbone: BackboneSpec,
    images: Sequence[LabelledImage],
    target_fpr: float = 0.01,
    reencode_quality: tuple[int, int] = DEFAULT_REENCODE_QUALITY,
    regularization: float = 1.0,
    torch_threads: int | None = None,
    progress: Any = None,
) -> ClipProbe:
    """Fit the linear head, Platt-calibrate on validation, set the threshold at target FPR."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score, roc_auc_score

    splits = {name: [im for im in images if split_of(im.sha256) == name] for name in ("train", "val", "test")}
    for name, part in splits.items():
        labels = {im.label for im in part}
        if labels != {0, 1}:
            raise ValueError(
                f"the {name} split needs real and generated images, got labels {sorted(labels)} "
                f"from {len(images)} images; add more images to both classes"
            )
    bb = load_backbone(backbone, torch_threads=torch_threads)
    embedded: dict[str, np.ndarray] = {}
    for name, part in splits.items():
        chunks = []
        for start in range(0, len(part), 64):
            batch = [reencode_jpeg(im.image, im.sha256, reencode_quality) for im in part[start : start + 64]]
            chunks.append(bb.embed(batch))
            if progress is not None:
                progress.update(len(batch))
        embedded[name] = np.concatenate(chunks)
    y = {name: np.array([im.label for im in part]) for name, part in splits.items()}

    # fit on standardised features (so one C suits any backbone), then fold the scaling into the head
    mean, std = embedded["train"].mean(axis=0), embedded["train"].std(axis=0) + 1e-6
    head = LogisticRegression(C=regularization, max_iter=5000).fit((embedded["train"] - mean) / std, y["train"])
    weight = head.coef_[0] / std
    probe = ClipProbe(backbone=backbone, weight=weight.tolist(), bias=float(head.intercept_[0] - weight @ mean))
    platt = LogisticRegression(C=1e6, max_iter=5000).fit(probe.logits(embedded["val"])[:, None], y["val"])
    probe.platt_a, probe.platt_b = float(platt.coef_[0][0]), float(platt.intercept_[0])
    val_probs = probe.probabilities(embedded["val"])
    probe.threshold = threshold_at_fpr(val_probs[y["val"] == 0], target_fpr)

    test_probs = probe.probabilities(embedded["test"])
    predicted = test_probs >= probe.threshold
    metrics = {
        "test_roc_auc": round(float(roc_auc_score(y["test"], test_probs)), 4),
        "test_average_precision": round(float(average_precision_score(y["test"], test_probs)), 4),
        "test_tpr_at_threshold": round(float(predicted[y["test"] == 1].mean()), 4),
        "test_fpr_at_threshold": round(float(predicted[y["test"] == 0].mean()), 4),
    }
    manifest = hashlib.sha256("".join(sorted(f"{im.sha256}:{im.label}" for im in images)).encode()).hexdigest()
    probe.training = {
        "target_fpr": target_fpr,
        "reencode_jpeg_quality": list(reencode_quality),
        "counts": {name: {"real": int((y[name] == 0).sum()), "fake": int((y[name] == 1).sum())} for name in y},
        "data_manifest_sha256": manifest,
        "sources": sorted({im.source for im in images if im.source}),
        "metrics": metrics,
    }
    return probe
