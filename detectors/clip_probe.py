"""The linear probe (UnivFD-style): frozen backbone features -> Linear(d, 1).

The backbone is any registered kind (``detectors.backbones``): open_clip ``encode_image`` features
(detector kind ``clip_probe``) or dlib's face descriptor (kind ``face_probe``, the same code).
The raw logit is calibrated to a probability (Platt scaling or isotonic regression) fitted on
held-out images, and the label threshold is set for a target false-positive rate on held-out
*real* images, not at 0.5.

One input transform from calibration to scoring: ``input_view`` (the canonical re-encode, JPEG at a
quality drawn from the image's pixels within ``input_reencode``) is what the backbone sees of every
validation, test, evaluated and scored image, so the threshold's FPR is measured on images processed
exactly as avatars are. Training images get UnivFD's augmentation first, then the same transform.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import numpy as np
from PIL import Image

from detectors.backbones import backbone_from_dict
from detectors.base import EmbeddingDetector, ImageScore, register
from detectors.batching import batched, prefetch

# Every image (both classes, every split, and every scored avatar) is re-encoded at a JPEG quality drawn
# from this range before embedding. Measured on the demo faces (tests/test_detectors.py): a ceiling at
# or below the usual upload quality masks a JPEG-vs-PNG difference in the training files; a range up to
# 100 (UnivFD's 30-100) leaves most of it. docs/detectors.md has the measurement on the shared faces.
DEFAULT_REENCODE_QUALITY = (50, 80)


def canonical_reencode(image: Image.Image, quality_range: tuple[int, int] | None, side: int | None = None) -> Image.Image:
    """The input transform: JPEG at a quality drawn from the decoded pixels (so the same image gets the
    same quality in training, evaluation and scoring, whatever file it came from); None = RGB only.

    ``side``: first scale the image (up or down, bicubic) so its short side is ``side`` pixels, so every
    source reaches the backbone at one resolution and the resolution itself is no cue (measured in
    docs/detectors.md, "The shipped detector")."""
    rgb = image.convert("RGB")
    if side:
        scale = side / min(rgb.size)
        size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
        if size != rgb.size:
            rgb = rgb.resize(size, Image.BICUBIC)
    if quality_range is None:
        return rgb
    return reencode_jpeg(rgb, hashlib.sha256(rgb.tobytes()).hexdigest(), tuple(quality_range))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -500, 500)))


@register
@dataclass(eq=False)
class ClipProbe(EmbeddingDetector):
    kind = "clip_probe"
    version = "1"

    backbone: Any  # a spec of a registered backbone kind (detectors.backbones)
    weight: list[float]
    bias: float
    platt_a: float = 1.0  # probability = sigmoid(platt_a * logit + platt_b)
    platt_b: float = 0.0
    threshold: float = 0.5
    training: dict[str, Any] = field(default_factory=dict)  # data manifest, split, metrics
    # isotonic calibration instead of Platt: probability = interp(logit, x, y); None = Platt
    isotonic: dict[str, list[float]] | None = None
    # the canonical re-encode applied to every image before the backbone (None: RGB only, as presets)
    input_reencode: tuple[int, int] | None = None
    # the canonical resolution: the short side is scaled to this before the re-encode (None: as decoded)
    input_side: int | None = None

    @property
    def backbone_id(self) -> str:
        """The embedding cache key: the backbone and the input transform, which both shape the vector."""
        side = f"+side{self.input_side}" if self.input_side else ""
        if self.input_reencode is None:
            return self.backbone.id + side
        return f"{self.backbone.id}{side}+jpeg{self.input_reencode[0]}-{self.input_reencode[1]}"

    def input_view(self, image: Image.Image, sha256: str = "") -> Image.Image:
        """What the backbone sees of an image, in calibration, evaluation and scoring alike."""
        return canonical_reencode(image, self.input_reencode, self.input_side)

    # the scorer sets these (Settings.device / torch_threads) before it embeds
    device: str | None = field(default=None, repr=False, compare=False, metadata={"runtime": True})

    def loaded_backbone(self) -> Any:
        return self.backbone.load(device=self.device)

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.embed_preprocessed(self.preprocess(images))

    def preprocess(self, images: Sequence[Image.Image]) -> Any:
        return self.loaded_backbone().tensors([self.input_view(im) for im in images])

    def embed_preprocessed(self, batch: Any) -> np.ndarray:
        return self.loaded_backbone().embed_tensors(batch)

    def input_pipeline(self) -> Any:
        """The input view and the backbone's transform, without the model: what a worker process needs."""
        if self.backbone.kind != "open_clip":
            return self.preprocess
        return ProbeInput(self.loaded_backbone().preprocess, self.input_reencode, self.input_side)

    def draft_need(self) -> tuple[int, int] | None:
        """The model input side, when a DCT-reduced decode stays within the measured tolerance: open_clip's
        resize + center crop with no canonical re-encode (that one hashes and re-encodes the full-size
        pixels, so it gets them); None otherwise (docs/detectors.md, "Decoding")."""
        if self.backbone.kind != "open_clip" or self.input_reencode is not None or self.input_side:
            return None
        if self.backbone.preprocess != "resize_center_crop":
            return None
        size = self.loaded_backbone().model.visual.image_size
        side = int(size[0] if isinstance(size, (tuple, list)) else size)
        return (side, side)

    def logits(self, embeddings: np.ndarray) -> np.ndarray:
        w = np.asarray(self.weight, dtype=np.float64)
        if embeddings.shape[-1] != w.shape[0]:
            raise ValueError(f"embedding width {embeddings.shape[-1]} != head width {w.shape[0]} ({self.backbone_id})")
        return embeddings.astype(np.float64) @ w + self.bias

    def calibrate(self, logits: np.ndarray) -> np.ndarray:
        if self.isotonic is not None:
            return np.interp(logits, self.isotonic["x"], self.isotonic["y"])
        return _sigmoid(self.platt_a * logits + self.platt_b)

    def probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        return self.calibrate(self.logits(embeddings))

    def score_embeddings(self, embeddings: np.ndarray) -> list[ImageScore]:
        """One score per row; a NaN row (the backbone found nothing to embed, e.g. no face) gets none."""
        probs = self.probabilities(embeddings)
        name = "clip probe" if self.kind == "clip_probe" else f"{self.kind.replace('_', ' ')}"
        return [
            ImageScore(None, False, f"no {self.backbone.kind} score: {NO_EMBEDDING.get(self.backbone.kind, 'no embedding')}")
            if np.isnan(p) else
            ImageScore(
                probability=float(p),
                label=bool(p >= self.threshold),
                reason=f"{name} p={p:.3f} {'>=' if p >= self.threshold else '<'} "
                f"threshold {self.threshold:.3f} ({self.training.get('target_fpr', '?')} FPR on real)",
            )
            for p in probs
        ]

    def to_spec(self) -> dict[str, Any]:
        # full float precision: JSON round-trips Python floats exactly, so a loaded detector scores
        # bit-for-bit like the one that was saved
        spec = {
            "backbone": self.backbone.to_dict(),
            "weight": [float(v) for v in self.weight],
            "bias": float(self.bias),
            "platt_a": float(self.platt_a),
            "platt_b": float(self.platt_b),
            "threshold": float(self.threshold),
            "training": self.training,
        }
        if self.input_reencode is not None:  # only when used, so detectors without one keep their ids
            spec["input_reencode"] = [int(v) for v in self.input_reencode]
        if self.input_side:
            spec["input_side"] = int(self.input_side)
        if self.isotonic is not None:  # only when used, so Platt detectors keep their ids
            spec["isotonic"] = {"x": [float(v) for v in self.isotonic["x"]], "y": [float(v) for v in self.isotonic["y"]]}
        return spec

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> ClipProbe:
        backbone = backbone_from_dict(spec["backbone"])
        if PROBE_KINDS.get(backbone.kind, "clip_probe") != cls.kind:
            raise ValueError(f"a {cls.kind} detector cannot hold a {backbone.kind} backbone")
        return cls(
            backbone=backbone,
            weight=list(spec["weight"]),
            bias=float(spec["bias"]),
            platt_a=float(spec.get("platt_a", 1.0)),
            platt_b=float(spec.get("platt_b", 0.0)),
            threshold=float(spec.get("threshold", 0.5)),
            training=dict(spec.get("training", {})),
            isotonic=dict(spec["isotonic"]) if spec.get("isotonic") else None,
            input_reencode=tuple(spec["input_reencode"]) if spec.get("input_reencode") else None,
            input_side=int(spec["input_side"]) if spec.get("input_side") else None,
        )


@register
@dataclass(eq=False)
class FaceProbe(ClipProbe):
    """The same linear probe over the ``dlib-face`` backbone: scores faces, gives no score without one."""

    kind = "face_probe"
    version = "1"


@dataclass(frozen=True)
class ProbeInput:
    """``ClipProbe.preprocess`` as data: the canonical re-encode and the backbone's torchvision transform."""

    transform: Any
    reencode: tuple[int, int] | None
    side: int | None = None

    def __call__(self, images: Sequence[Image.Image]) -> Any:
        import torch

        views = [canonical_reencode(im, self.reencode, self.side) for im in images]
        split = _tensor_tail(self.transform)
        if split is None or not views:
            return torch.stack([self.transform(im) for im in views])
        pil_steps, mean, std = split
        pixels = []
        for im in views:
            for step in pil_steps:
                im = step(im)
            pixels.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
        # ToTensor + Normalize on the whole batch at once: the same float32 operations in the same order
        # as torchvision's per-image ones (so the same values), at a fraction of their per-call cost
        batch = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).float().div_(255)
        return batch.sub_(mean.view(1, 3, 1, 1)).div_(std.view(1, 3, 1, 1)).contiguous()


def _tensor_tail(transform: Any) -> tuple[list[Any], Any, Any] | None:
    """(PIL steps, mean, std) when the transform ends in ToTensor + Normalize (open_clip's); else None."""
    import torch

    steps = list(getattr(transform, "transforms", []))
    if len(steps) < 2 or type(steps[-1]).__name__ != "Normalize" or "ToTensor" not in type(steps[-2]).__name__:
        return None
    pil = [t for t in steps[:-2] if type(t).__name__ != "MaybeConvertMode"]  # convert("RGB") is done below
    if any(type(t).__name__ not in ("Resize", "CenterCrop") for t in pil):
        return None
    norm = steps[-1]
    return pil, torch.tensor(norm.mean, dtype=torch.float32), torch.tensor(norm.std, dtype=torch.float32)


PROBE_KINDS = {"open_clip": ClipProbe.kind, "clip-vit-b16": ClipProbe.kind, "dlib-face": FaceProbe.kind}  # backbone kind -> detector kind
NO_EMBEDDING = {"dlib-face": "no face found"}


def probe_class(backbone: Any) -> type[ClipProbe]:
    return FaceProbe if backbone.kind == "dlib-face" else ClipProbe


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
    return _jpeg(image, quality)


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, "JPEG", quality=int(quality))
    buf.seek(0)
    return Image.open(buf).convert("RGB")


@dataclass(frozen=True)
class Augmentation:
    """UnivFD's training augmentation, then the re-encode rule; recorded in the saved detector.

    - blur: with probability ``blur_p``, Gaussian blur with sigma drawn from ``blur_sigma``;
    - JPEG: with probability ``jpeg_p``, JPEG at a quality drawn from ``jpeg_quality`` (UnivFD: 30-100);
    - the re-encode rule: every image of both classes, in every split, is finally re-encoded as JPEG
      at a quality drawn from ``reencode_quality``, so no file-format difference survives. None
      disables the rule (only to measure what it does).

    The draws are seeded by the image hash and never by the label: both classes go through exactly
    the same function. Each training image is embedded in ``views`` independently drawn views (as
    UnivFD sees each image augmented afresh in every epoch), so the head also sees unaugmented ones.
    """

    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.0, 3.0)
    jpeg_p: float = 0.5
    jpeg_quality: tuple[int, int] = (30, 100)
    reencode_quality: tuple[int, int] | None = DEFAULT_REENCODE_QUALITY
    views: int = 1
    # platform-style downscaling and off-centre crops: off unless measured to help (docs/detectors.md)
    resize_p: float = 0.0
    resize_scale: tuple[float, float] = (0.5, 1.0)
    crop_p: float = 0.0
    crop_fraction: tuple[float, float] = (0.8, 1.0)

    def training_view(self, image: Image.Image, sha256: str, view: int = 0) -> Image.Image:
        """What the backbone sees of a training-split image, in its ``view``-th augmented view."""
        from PIL import ImageFilter

        rng = np.random.default_rng([int(sha256[16:32], 16), view])
        if self.crop_p and rng.random() < self.crop_p:
            side = float(rng.uniform(*self.crop_fraction))
            w, h = image.size
            cw, ch = max(1, round(w * side)), max(1, round(h * side))
            left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            image = image.crop((left, top, left + cw, top + ch))
        if self.resize_p and rng.random() < self.resize_p:
            scale = float(rng.uniform(*self.resize_scale))
            image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BICUBIC)
        if rng.random() < self.blur_p:
            image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(*self.blur_sigma))))
        if rng.random() < self.jpeg_p:
            image = _jpeg(image, int(rng.integers(self.jpeg_quality[0], self.jpeg_quality[1] + 1)))
        return self.held_out_view(image, sha256)

    def held_out_view(self, image: Image.Image, sha256: str = "") -> Image.Image:
        """What the backbone sees of a validation or test image, and of a scored avatar: the input
        transform only (the trained probe records it as ``input_reencode``)."""
        return canonical_reencode(image, self.reencode_quality)

    def to_dict(self) -> dict[str, Any]:
        """The saved form; the resize and crop steps only when used, so earlier detectors keep their ids."""
        data = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        for step, keys in (("resize_p", ("resize_p", "resize_scale")), ("crop_p", ("crop_p", "crop_fraction"))):
            if not data[step]:
                for key in keys:
                    data.pop(key)
        return data


def threshold_at_fpr(real_probabilities: np.ndarray, target_fpr: float) -> float:
    """Smallest threshold whose false-positive rate on these real images is <= target_fpr."""
    ordered = np.sort(np.asarray(real_probabilities, dtype=np.float64))[::-1]
    allowed = int(np.floor(target_fpr * len(ordered)))
    if allowed >= len(ordered):
        return 0.0
    return float(np.nextafter(ordered[allowed], np.inf))


def training_manifest(images: Sequence[LabelledImage]) -> list[dict[str, Any]]:
    """One row per training image (hash, label, split, source), sorted: what exactly a detector saw."""
    rows = {(im.sha256, im.label): {"sha256": im.sha256, "label": im.label, "split": split_of(im.sha256),
                                    "source": im.source} for im in images}
    return [rows[k] for k in sorted(rows)]


def manifest_sha256(manifest: Sequence[dict[str, Any]]) -> str:
    return hashlib.sha256("".join(f"{r['sha256']}:{r['label']}\n" for r in manifest).encode()).hexdigest()


def embed_views(backbone: Any, items: Sequence[LabelledImage], view: Callable[[Image.Image, str], Image.Image],
                batch_size: int = 64, workers: int = 2, torch_threads: int | None = None,
                device: str | None = None, progress: Any = None) -> np.ndarray:
    """Embed ``view(image, sha)`` of each item; augmentation and preprocessing overlap with inference."""
    bb = backbone.load(torch_threads=torch_threads, device=device)
    chunks = [np.zeros((0, bb.embed_dim), dtype=np.float32)]
    for batch, tensor in prefetch(batched(items, batch_size),
                                  lambda b: bb.tensors([view(im.image, im.sha256) for im in b]), workers):
        chunks.append(bb.embed_tensors(tensor))
        if progress is not None:
            progress.update(len(batch))
    return np.concatenate(chunks)


def fit_calibration(probe: ClipProbe, logits: np.ndarray, labels: np.ndarray, method: str) -> None:
    """Fit the logit -> probability map on validation images (Platt: 2 parameters; isotonic: monotone steps)."""
    from sklearn.linear_model import LogisticRegression

    if method == "platt":
        platt = LogisticRegression(C=1e6, max_iter=5000).fit(logits[:, None], labels)
        probe.platt_a, probe.platt_b, probe.isotonic = float(platt.coef_[0][0]), float(platt.intercept_[0]), None
    elif method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(logits, labels)
        probe.isotonic = {"x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()}
    else:
        raise ValueError(f"calibration must be 'platt' or 'isotonic', not {method!r}")


def train_clip_probe(
    backbone: Any,
    images: Sequence[LabelledImage],
    target_fpr: float = 0.01,
    reencode_quality: tuple[int, int] | None = DEFAULT_REENCODE_QUALITY,
    regularization: float = 1.0,
    torch_threads: int | None = None,
    progress: Any = None,
    calibration: str = "platt",
    augmentation: Augmentation | None = None,
    batch_size: int = 64,
    workers: int = 2,
    device: str | None = None,
) -> ClipProbe:
    """Fit the linear head on augmented train images, calibrate on validation, set the threshold at target FPR.

    ``augmentation`` None means UnivFD's defaults with ``reencode_quality`` as the re-encode rule.
    """

    if not 0 < target_fpr < 1:
        raise ValueError(f"target FPR must be between 0 and 1, got {target_fpr}")
    if calibration not in ("platt", "isotonic"):
        raise ValueError(f"calibration must be 'platt' or 'isotonic', not {calibration!r}")
    augment = augmentation or Augmentation(reencode_quality=reencode_quality)
    splits = {name: [im for im in images if split_of(im.sha256) == name] for name in ("train", "val", "test")}
    for name, part in splits.items():
        labels = {im.label for im in part}
        if labels != {0, 1}:
            raise ValueError(
                f"the {name} split needs real and generated images, got labels {sorted(labels)} "
                f"from {len(images)} images; add more images to both classes"
            )
    if augment.views < 1:
        raise ValueError(f"augmentation views must be at least 1, got {augment.views}")
    embed = partial(embed_views, backbone, batch_size=batch_size, workers=workers, torch_threads=torch_threads,
                    device=device, progress=progress)
    embedded = {name: embed(part, augment.held_out_view) for name, part in splits.items() if name != "train"}
    y = {name: np.array([im.label for im in part]) for name, part in splits.items()}
    # the train split: `views` augmented views of every image, stacked, labels repeated
    embedded["train"] = np.concatenate([embed(splits["train"], partial(augment.training_view, view=v))
                                        for v in range(augment.views)])
    y["train"] = np.tile(y["train"], augment.views)
    sources = {name: np.array([im.source for im in part], dtype=object) for name, part in splits.items()}
    sources["train"] = np.tile(sources["train"], augment.views)
    probe, unembedded, metrics = fit_probe(backbone, embedded, y, target_fpr=target_fpr, calibration=calibration,
                                           regularization=regularization, input_reencode=augment.reencode_quality,
                                           sources=sources)
    manifest = training_manifest(images)
    probe.training = {
        "target_fpr": target_fpr,
        "calibration": calibration,
        "augmentation": augment.to_dict(),
        "reencode_jpeg_quality": list(augment.reencode_quality) if augment.reencode_quality else None,
        "counts": probe.training["counts"],
        "train_views": augment.views,  # the train counts are of embedded views
        "not_embedded": unembedded,
        "input_transform": (f"jpeg q{augment.reencode_quality[0]}-{augment.reencode_quality[1]} (canonical, also when scoring)"
                            if augment.reencode_quality else "none (RGB as decoded)"),
        "data_manifest_sha256": manifest_sha256(manifest),
        "sources": sorted({im.source for im in images if im.source}),
        "balance": "classes and sources (each source an equal share of its class)",
        "threshold_rule": f"{target_fpr} FPR on every real source of the validation split",
        "metrics": metrics,
    }
    return probe


def source_weights(labels: np.ndarray, sources: np.ndarray) -> np.ndarray:
    """Sample weights that give each class half the total and each source an equal share of its class,
    so a source of 1,000 images does not drown one of 64."""
    weights = np.zeros(len(labels), dtype=np.float64)
    for label in (0, 1):
        in_class = labels == label
        names = sorted(set(sources[in_class].tolist()))
        for name in names:
            mask = in_class & (sources == name)
            weights[mask] = 1.0 / (len(names) * mask.sum())
    return weights * len(labels) / 2.0


def threshold_for_every_source(probs: np.ndarray, sources: np.ndarray, target_fpr: float) -> float:
    """The smallest threshold at which *every* real source's false-positive rate is at most the target: the
    worst source sets it, not the pooled mean (a source with fewer than 1/target images allows none)."""
    return max(threshold_at_fpr(probs[sources == name], target_fpr) for name in sorted(set(sources.tolist())))


def fit_probe(backbone: Any, embedded: dict[str, np.ndarray], y: dict[str, np.ndarray], target_fpr: float = 0.01,
              calibration: str = "platt", regularization: float = 1.0,
              input_reencode: tuple[int, int] | None = DEFAULT_REENCODE_QUALITY,
              sources: dict[str, np.ndarray] | None = None, balance: bool = True, input_side: int | None = None,
              ) -> tuple[ClipProbe, dict[str, int], dict[str, Any]]:
    """The head, calibration and threshold from embeddings of the train/val/test splits (``embedded``,
    labels ``y``): returns the probe, the rows left out per split (NaN: nothing embedded) and test metrics.
    ``train_clip_probe`` embeds then calls this; the benches call it on cached embeddings.

    ``sources`` (per split, each row's source folder) turns on the per-source rules: with ``balance`` the
    head is fitted with class- and source-balanced weights, and the threshold holds the target FPR on every
    real source of the validation split (``threshold_for_every_source``). Without sources, the reals are
    one source."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score, roc_auc_score

    embedded, y = dict(embedded), dict(y)
    sources = {name: np.asarray(sources[name]) if sources else np.full(len(y[name]), "", dtype=object)
               for name in ("train", "val", "test")}
    # a backbone may have no embedding for an image (dlib-face: no face); such images are left out
    unembedded = {}
    for name in ("train", "val", "test"):
        keep = ~np.isnan(embedded[name]).any(axis=1)
        unembedded[name] = int((~keep).sum())
        embedded[name], y[name], sources[name] = embedded[name][keep], y[name][keep], sources[name][keep]
        if set(y[name].tolist()) != {0, 1}:
            raise ValueError(f"the {name} split has no {'real' if 1 in y[name] else 'generated'} image the "
                             f"{backbone.kind} backbone can embed ({unembedded[name]} left out)")

    # fit on standardised features (so one C suits any backbone), then fold the scaling into the head
    mean, std = embedded["train"].mean(axis=0), embedded["train"].std(axis=0) + 1e-6
    weights = source_weights(y["train"], sources["train"]) if balance else None
    head = LogisticRegression(C=regularization, max_iter=5000).fit((embedded["train"] - mean) / std, y["train"],
                                                                   sample_weight=weights)
    weight = head.coef_[0] / std
    probe = probe_class(backbone)(backbone=backbone, weight=weight.tolist(), bias=float(head.intercept_[0] - weight @ mean),
                                  input_reencode=input_reencode, input_side=input_side)
    fit_calibration(probe, probe.logits(embedded["val"]), y["val"], calibration)
    val_probs = probe.probabilities(embedded["val"])
    val_real = y["val"] == 0
    probe.threshold = threshold_for_every_source(val_probs[val_real], sources["val"][val_real], target_fpr)

    test_probs = probe.probabilities(embedded["test"])
    predicted = test_probs >= probe.threshold
    metrics = {
        "test_roc_auc": round(float(roc_auc_score(y["test"], test_probs)), 4),
        "test_average_precision": round(float(average_precision_score(y["test"], test_probs)), 4),
        "test_tpr_at_threshold": round(float(predicted[y["test"] == 1].mean()), 4),
        "test_fpr_at_threshold": round(float(predicted[y["test"] == 0].mean()), 4),
        "val_fpr_at_threshold": round(float((val_probs[y["val"] == 0] >= probe.threshold).mean()), 4),
    }
    for label, key in ((0, "test_fpr_by_real_source"), (1, "test_tpr_by_generator")):
        in_class = y["test"] == label
        names = sorted(set(sources["test"][in_class].tolist()) - {""})
        if names:
            metrics[key] = {name: round(float(predicted[in_class & (sources["test"] == name)].mean()), 4)
                            for name in names}
    probe.training = {"counts": {name: {"real": int((y[name] == 0).sum()), "fake": int((y[name] == 1).sum())}
                                 for name in y}}
    return probe, unembedded, metrics
