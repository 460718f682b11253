"""One calibrated avatar score: a logistic stack over the CLIP probe, the dlib-face probe and the eye test.

Each part is strong where the others are weak (docs/detectors.md, "The shipped detector"): the CLIP probe
on diffusion faces, the eye-alignment test on StyleGAN-family faces (which put the eyes of every face at
the same spot), the dlib-face probe a little on both. The stack is a logistic regression over four
numbers per image, fitted on validation images that the parts' heads did not train on:

- ``clip``: the CLIP probe's raw logit;
- ``face``: the dlib-face probe's raw logit (0 when dlib finds no face);
- ``no_face``: 1 when dlib finds no face to embed;
- ``eye_aligned``: 1 when the eye test finds both eyes within its threshold of StyleGAN's positions.

Its probability is the stack's own sigmoid, and its threshold holds the target false-positive rate on
every real source of the validation split. Every score keeps the parts' contributions (logit units), so an
investigator sees which part made the label (``AvatarStack.parts``, the reason text, ``image_scores.parts``).

The embedding the score stage caches is the concatenation of what the parts read: the CLIP feature, the
128-d face descriptor (NaN without a face) and the eye-alignment distance (NaN without two eyes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from detectors.base import EmbeddingDetector, ImageScore, register
from detectors.clip_probe import ClipProbe, FaceProbe
from detectors.faces import ALIGNMENT_THRESHOLD, FaceDetector

STACK_INPUTS = ("clip", "face", "no_face", "eye_aligned")
PART_LABELS = {"clip": "CLIP probe", "face": "dlib face probe", "eye": "eye test"}


def stack_inputs(clip_logits: np.ndarray, face_logits: np.ndarray, eye_distances: np.ndarray,
                 eye_threshold: float = ALIGNMENT_THRESHOLD) -> np.ndarray:
    """The four stack inputs per image (``STACK_INPUTS``), from the parts' raw outputs (NaN: not found)."""
    no_face = np.isnan(face_logits)
    aligned = ~np.isnan(eye_distances) & (np.nan_to_num(eye_distances, nan=1.0) < eye_threshold)
    return np.column_stack([clip_logits, np.where(no_face, 0.0, face_logits), no_face.astype(float),
                            aligned.astype(float)])


@dataclass(frozen=True)
class StackInput:
    """The workers' half, picklable: each part's input pipeline on the same decoded images."""

    clip: Any
    face: Any
    eye: FaceDetector

    def __call__(self, images: Sequence[Image.Image]) -> tuple[Any, Any, np.ndarray]:
        distances = [np.nan if s.eye_alignment_distance is None else s.eye_alignment_distance
                     for s in self.eye.analyze(images)]
        return self.clip(images), self.face(images), np.asarray(distances, dtype=np.float32)


@register
@dataclass(eq=False)
class AvatarStack(EmbeddingDetector):
    kind = "avatar_stack"
    version = "1"

    clip: ClipProbe
    face: FaceProbe
    eye: FaceDetector
    coef: dict[str, float]  # per STACK_INPUTS name
    intercept: float
    threshold: float = 0.5
    training: dict[str, Any] = field(default_factory=dict)
    device: str | None = field(default=None, repr=False, compare=False, metadata={"runtime": True})

    @property
    def backbone_id(self) -> str:
        return f"stack[{self.clip.backbone_id}|{self.face.backbone_id}|eye-distance-{self.eye.id}]"

    @property
    def widths(self) -> tuple[int, int]:
        return len(self.clip.weight), len(self.face.weight)

    def input_pipeline(self) -> Any:
        return StackInput(self.clip.input_pipeline(), self.face.input_pipeline(), self.eye)

    def preprocess(self, images: Sequence[Image.Image]) -> Any:
        return self.input_pipeline()(images)

    def embed_preprocessed(self, batch: Any) -> np.ndarray:
        clip_batch, face_batch, distances = batch
        self.clip.device = self.face.device = self.device
        clip = self.clip.embed_preprocessed(clip_batch)
        face = self.face.embed_preprocessed(face_batch)
        return np.column_stack([clip, face, np.asarray(distances, dtype=np.float32)]).astype(np.float32)

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.embed_preprocessed(self.preprocess(images))

    def split(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        c, f = self.widths
        if embeddings.shape[-1] != c + f + 1:
            raise ValueError(f"embedding width {embeddings.shape[-1]} != {c + f + 1} ({self.backbone_id})")
        return embeddings[:, :c], embeddings[:, c:c + f], embeddings[:, c + f]

    def inputs(self, embeddings: np.ndarray) -> np.ndarray:
        clip, face, distance = self.split(np.asarray(embeddings, dtype=np.float64))
        return stack_inputs(self.clip.logits(clip), face_logits(self.face, face), distance, self.eye.threshold)

    def terms(self, embeddings: np.ndarray) -> np.ndarray:
        """Each stack input times its coefficient: the logit is their sum plus the intercept."""
        return self.inputs(embeddings) * np.array([self.coef[name] for name in STACK_INPUTS])

    @staticmethod
    def _sigmoid(terms: np.ndarray, intercept: float) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-np.clip(terms.sum(axis=1) + intercept, -500, 500)))

    def _parts(self, terms: np.ndarray) -> list[dict[str, float]]:
        return [{"clip": round(float(t[0]), 3), "face": round(float(t[1] + t[2]), 3), "eye": round(float(t[3]), 3),
                 "bias": round(float(self.intercept), 3)} for t in terms]

    def parts(self, embeddings: np.ndarray) -> list[dict[str, float]]:
        """Each part's contribution to the stack's logit, per image (the face part includes no-face)."""
        return self._parts(self.terms(embeddings))

    def probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        return self._sigmoid(self.terms(embeddings), self.intercept)

    def score_embeddings(self, embeddings: np.ndarray) -> list[ImageScore]:
        terms = self.terms(embeddings)  # once: the probability and the parts come from the same terms
        out = []
        for p, part in zip(self._sigmoid(terms, self.intercept), self._parts(terms)):
            named = ", ".join(f"{PART_LABELS[k]} {v:+.2f}" for k, v in part.items() if k != "bias")
            out.append(ImageScore(float(p), bool(p >= self.threshold),
                                  f"avatar stack p={p:.3f} {'>=' if p >= self.threshold else '<'} threshold "
                                  f"{self.threshold:.3f} ({self.training.get('target_fpr', '?')} FPR on every real "
                                  f"source); logit parts: {named}, bias {part['bias']:+.2f}", parts=part))
        return out

    def to_spec(self) -> dict[str, Any]:
        return {"clip": self.clip.saved_form(), "face": self.face.saved_form(), "eye": self.eye.saved_form(),
                "coef": {k: float(self.coef[k]) for k in STACK_INPUTS}, "intercept": float(self.intercept),
                "threshold": float(self.threshold), "training": self.training}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> AvatarStack:
        from detectors.base import detector_from_saved

        parts = {name: detector_from_saved(spec[name]) for name in ("clip", "face", "eye")}
        expected = {"clip": ClipProbe, "face": FaceProbe, "eye": FaceDetector}
        for name, part in parts.items():
            if type(part) is not expected[name]:
                raise ValueError(f"an avatar stack's {name} part must be a {expected[name].kind}, not {part.kind}")
        return cls(clip=parts["clip"], face=parts["face"], eye=parts["eye"],  # type: ignore[arg-type]
                   coef={k: float(spec["coef"][k]) for k in STACK_INPUTS}, intercept=float(spec["intercept"]),
                   threshold=float(spec.get("threshold", 0.5)), training=dict(spec.get("training", {})))


def fit_stack(inputs: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> tuple[dict[str, float], float]:
    """The stack's coefficients from validation inputs (``stack_inputs``), weighted by class and source."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=1.0, max_iter=5000).fit(inputs, labels, sample_weight=weights)
    return dict(zip(STACK_INPUTS, (float(v) for v in model.coef_[0]))), float(model.intercept_[0])


def face_logits(face: ClipProbe, descriptors: np.ndarray) -> np.ndarray:
    """The face probe's raw logits; NaN where dlib found no face."""
    out = np.full(len(descriptors), np.nan)
    found = ~np.isnan(descriptors).any(axis=1)
    out[found] = face.logits(descriptors[found])
    return out


def fit_avatar_stack(clip_spec: Any, face_spec: Any, embedded: dict[str, np.ndarray], y: dict[str, np.ndarray],
                     sources: dict[str, np.ndarray], train_clip: np.ndarray | None = None, target_fpr: float = 0.01,
                     regularization: float = 1.0, input_reencode: tuple[int, int] | None = (50, 80),
                     input_side: int | None = None, eye_exempt: Sequence[str] = ()) -> AvatarStack:
    """The whole stack from embeddings in its layout (CLIP feature | face descriptor | eye distance) of the
    train/val/test splits: each part's head on the train split (``fit_probe``: class- and source-balanced,
    threshold on every real source), the stack's coefficients and its threshold on the validation split.

    ``train_clip``: the CLIP columns of augmented training views, to train the CLIP head on instead.
    ``eye_exempt``: real sources aligned like StyleGAN by construction (FFHQ): left out of the stack's fit
    and threshold, since they would teach it that aligned eyes mean nothing; the heads still train on them.
    """
    from detectors.clip_probe import fit_probe, source_weights, threshold_for_every_source
    from detectors.face_backbone import DESCRIPTOR_DIM

    clip_dim = clip_width(clip_spec)
    columns = {"clip": slice(0, clip_dim), "face": slice(clip_dim, clip_dim + DESCRIPTOR_DIM)}
    parts = {}
    for name, spec in (("clip", clip_spec), ("face", face_spec)):
        split_embedded = {s: v[:, columns[name]] for s, v in embedded.items()}
        if name == "clip" and train_clip is not None:
            split_embedded["train"] = train_clip
        parts[name], _, _ = fit_probe(spec, split_embedded, y, target_fpr=target_fpr, regularization=regularization,
                                      input_reencode=input_reencode, sources=sources,
                                      input_side=input_side if name == "clip" else None)
    stack = AvatarStack(clip=parts["clip"], face=parts["face"], eye=FaceDetector(), coef={}, intercept=0.0)
    val = embedded["val"].astype(np.float64)
    keep = ~((y["val"] == 0) & np.isin(sources["val"], list(eye_exempt)))
    x = stack.inputs(val[keep])
    stack.coef, stack.intercept = fit_stack(x, y["val"][keep], source_weights(y["val"][keep], sources["val"][keep]))
    probs = stack.probabilities(val[keep])
    real = y["val"][keep] == 0
    stack.threshold = threshold_for_every_source(probs[real], sources["val"][keep][real], target_fpr)
    named = ", ".join(eye_exempt)
    stack.training = {"target_fpr": target_fpr, "feature": getattr(clip_spec, "feature", None),
                      "regularization": regularization, "clip_input_side": input_side,
                      "stack_fitted_on": "validation split" + (f", reals of {named} excluded (aligned like StyleGAN)"
                                                               if named else ""),
                      "threshold_rule": f"{target_fpr} FPR on every real source of the validation split"
                                        + (f" but {named}" if named else "")}
    return stack


def clip_width(clip_spec: Any) -> int:
    """The width of the CLIP part's feature in the stack's layout."""
    from detectors.onnx_clip import FEATURES

    return FEATURES[clip_spec.feature] if getattr(clip_spec, "feature", None) in FEATURES else clip_spec.load().embed_dim
