"""The detector interface: each image-level signal is a small plug-in.

Modelled on python-threatexchange's SignalType: a detector has a ``kind`` (its type name in the
registry), a ``version`` (bumped when its scoring changes), a content-derived ``id``, a
``score`` method, and a saved form (a JSON spec) that round-trips through ``to_spec``/``from_spec``.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from pipeline.core.registry import Registry


@dataclass(frozen=True)
class ImageScore:
    probability: float | None  # calibrated probability that the image is generated; None: not scorable
    label: bool  # probability >= the detector's threshold
    reason: str  # short human-readable explanation
    parts: dict[str, float] | None = None  # a fused detector's per-part logit contributions (image_scores.parts)


class Detector(ABC):
    kind: ClassVar[str]
    version: ClassVar[str]

    @abstractmethod
    def score(self, images: Sequence[Image.Image]) -> list[ImageScore]:
        """Score decoded RGB images; one ImageScore per image, in order."""

    @abstractmethod
    def to_spec(self) -> dict[str, Any]:
        """Everything needed to rebuild this detector, as JSON-serialisable data."""

    @classmethod
    @abstractmethod
    def from_spec(cls, spec: dict[str, Any]) -> Detector:
        ...

    @property
    def id(self) -> str:
        """Content-derived: identical detectors share an id, any change to weights gives a new one."""
        body = json.dumps(self.to_spec(), sort_keys=True, separators=(",", ":")).encode()
        return f"{self.kind}-v{self.version}:{hashlib.sha256(body).hexdigest()[:16]}"

    def saved_form(self) -> dict[str, Any]:
        return {"kind": self.kind, "version": self.version, "id": self.id, "spec": self.to_spec()}


class EmbeddingDetector(Detector):
    """A detector that scores a backbone embedding; the pipeline caches the embeddings per backbone."""

    @property
    @abstractmethod
    def backbone_id(self) -> str:
        ...

    @abstractmethod
    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        ...

    @abstractmethod
    def score_embeddings(self, embeddings: np.ndarray) -> list[ImageScore]:
        ...

    def preprocess(self, images: Sequence[Image.Image]) -> Any:
        """The CPU half of embedding (decode-side work); the scorer runs it in worker threads."""
        return list(images)

    def embed_preprocessed(self, batch: Any) -> np.ndarray:
        """The inference half: ``embed(images) == embed_preprocessed(preprocess(images))``."""
        return self.embed(batch)

    def input_pipeline(self) -> Any:
        """``preprocess`` as a picklable callable, for the score stage's worker processes."""
        return self.preprocess

    def draft_need(self) -> tuple[int, int] | None:
        """(short side, long side) of pixels this detector needs, or None: decode in full (the default)."""
        return None

    def score(self, images: Sequence[Image.Image]) -> list[ImageScore]:
        return self.score_embeddings(self.embed(images))


DETECTORS: Registry[type[Detector]] = Registry("detector")
REGISTRY = DETECTORS  # the older name


def register(cls: type[Detector]) -> type[Detector]:
    """Class decorator: register a detector kind by its ``kind`` (a duplicate kind is an error)."""
    return DETECTORS.register(cls.kind, cls)


class FaceSignalSource(ABC):
    """A detector that also writes ``face_signals`` rows (face count, pre-filter, eye test) in the score stage."""

    @abstractmethod
    def analyze(self, images: Sequence[Image.Image]) -> list[Any]:
        """One ``detectors.faces.FaceSignal`` per image, in order."""


def face_signal_kinds() -> list[type[Detector]]:
    """The registered detector kinds that write face signals; the score stage runs each of them."""
    return [cls for cls in DETECTORS.values() if issubclass(cls, FaceSignalSource)]


def detector_from_saved(saved: dict[str, Any]) -> Detector:
    from detectors.validation import check_saved_detector

    check_saved_detector(saved)  # one line for a corrupted file, before any stage runs
    kind = saved.get("kind")
    if kind not in DETECTORS:
        raise ValueError(f"unknown detector kind {kind!r}; known: {sorted(DETECTORS)}")
    cls = DETECTORS[kind]
    if saved.get("version") != cls.version:  # before from_spec: an old spec may not fit today's fields
        raise ValueError(f"saved detector is {kind} v{saved.get('version')}, this code reads v{cls.version}")
    detector = cls.from_spec(saved["spec"])
    if saved.get("id") and saved["id"] != detector.id:
        raise ValueError(f"saved detector id {saved['id']} does not match its content ({detector.id})")
    return detector


def save_detector(detector: Detector, path: Path) -> Path:
    """Atomically (temp file + rename): score shards of concurrent runs save the same detector at once."""
    from pipeline.core.storage import atomic_write

    return atomic_write(path, json.dumps(detector.saved_form(), indent=1, sort_keys=True))


def read_detector_file(path: Path) -> Detector:
    try:
        saved = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read detector file {path}: {exc}") from None
    return detector_from_saved(saved)
