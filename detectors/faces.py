"""Face signals, a second detector: face presence and count, and the GAN eye-alignment test.

- Face count is a pre-filter, as in Ricker et al. (RAID 2024): a detector of synthetic *faces* says
  little about an avatar with no face in it.
- Eye alignment is the test of Yang, Singh and Menczer (2024): StyleGAN-family generators place the
  eyes of every face at the same spot, (0.3808, 0.4771) and (0.6152, 0.4771) of the image. The eye
  centres, normalised by the image size, are compared with those points; the summed Euclidean
  distance divided by 2*sqrt(2) (its largest possible value) below 0.02 marks the face aligned.
  The authors report recall above 99.5% on GAN faces; aligned real photos (passport-style crops)
  exist, so this is a signal for review, not a verdict.

Faces and eyes are found with OpenCV's Haar cascades, whose weights ship inside the
``opencv-python-headless`` wheel (4.x; 5.x ships none). cv2 is imported only when a detector is used.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from detectors.base import Detector, ImageScore, register

STYLEGAN_EYES = ((0.3808, 0.4771), (0.6152, 0.4771))
ALIGNMENT_THRESHOLD = 0.02
FACE_CASCADE = "haarcascade_frontalface_default.xml"
EYE_CASCADE = "haarcascade_eye.xml"


@dataclass(frozen=True)
class FaceSignal:
    face_count: int
    eye_alignment_distance: float | None  # None when no face with two eyes was found
    gan_eye_aligned: bool | None
    details: dict[str, Any] = field(default_factory=dict)  # boxes and normalised eye centres


def cascade_path(name: str) -> Path:
    import cv2

    path = Path(cv2.data.haarcascades) / name
    if not path.is_file():
        raise RuntimeError(f"OpenCV has no {name} at {path}; install opencv-python-headless>=4.8,<5 (5.x ships none)")
    return path


def eye_alignment_distance(left: tuple[float, float], right: tuple[float, float]) -> float:
    """Yang-Singh-Menczer distance of normalised eye centres (image left eye first) from StyleGAN's."""
    (lx, ly), (rx, ry) = STYLEGAN_EYES
    return (math.hypot(left[0] - lx, left[1] - ly) + math.hypot(right[0] - rx, right[1] - ry)) / (2 * math.sqrt(2))


_local = threading.local()


def _cascade(name: str) -> Any:
    """One classifier per file per thread: the scorer runs face detection in its worker threads."""
    import cv2

    cache = _local.__dict__.setdefault("cascades", {})
    if name not in cache:
        cache[name] = cv2.CascadeClassifier(str(cascade_path(name)))
    return cache[name]


@register
@dataclass(eq=False)
class FaceDetector(Detector):
    """Haar-cascade faces and eyes; the score is the eye-alignment rule (1 aligned, 0 not), not a probability."""

    kind: ClassVar[str] = "faces"
    version: ClassVar[str] = "1"

    scale_factor: float = 1.1
    min_neighbors: int = 5
    min_face_fraction: float = 0.1  # faces smaller than this share of the shorter side are ignored
    max_side: int = 512  # larger images are downscaled first (coordinates are normalised anyway)
    threshold: float = ALIGNMENT_THRESHOLD
    cascades: dict[str, str] = field(default_factory=dict)  # cascade file -> sha256, filled on first use

    def __post_init__(self) -> None:
        if not self.cascades:
            self.cascades = {name: hashlib.sha256(cascade_path(name).read_bytes()).hexdigest()
                             for name in (FACE_CASCADE, EYE_CASCADE)}

    def analyze_one(self, image: Image.Image) -> FaceSignal:
        import cv2

        rgb = image.convert("RGB")
        scale = min(1.0, self.max_side / max(rgb.size))
        if scale < 1.0:
            rgb = rgb.resize((max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))), Image.BILINEAR)
        gray = cv2.equalizeHist(cv2.cvtColor(np.asarray(rgb), cv2.COLOR_RGB2GRAY))
        height, width = gray.shape
        side = int(self.min_face_fraction * min(width, height))
        faces = _cascade(FACE_CASCADE).detectMultiScale(gray, scaleFactor=self.scale_factor,
                                                        minNeighbors=self.min_neighbors, minSize=(side, side))
        faces = sorted((tuple(int(v) for v in f) for f in faces), key=lambda f: -f[2] * f[3])
        details: dict[str, Any] = {"faces": [list(f) for f in faces], "size": [width, height]}
        if not faces:
            return FaceSignal(0, None, None, details)
        eyes = self._eyes(gray, faces[0])
        if eyes is None:
            details["eyes"] = None
            return FaceSignal(len(faces), None, None, details)
        left, right = ((x / width, y / height) for x, y in eyes)
        distance = eye_alignment_distance(left, right)
        details["eyes"] = [[round(float(v), 4) for v in left], [round(float(v), 4) for v in right]]
        return FaceSignal(len(faces), distance, bool(distance < self.threshold), details)

    def _eyes(self, gray: np.ndarray, face: tuple[int, ...]) -> tuple[tuple[float, float], tuple[float, float]] | None:
        """Centres of the largest eye in each half of the face's upper part, in pixels; None if one is missing."""
        x, y, w, h = face
        roi = gray[y : y + int(h * 0.6), x : x + w]
        min_eye = max(4, w // 10)
        found = _cascade(EYE_CASCADE).detectMultiScale(roi, scaleFactor=1.05, minNeighbors=4,
                                                       minSize=(min_eye, min_eye), maxSize=(w // 2, w // 2))
        halves: dict[int, tuple[int, int, int, int]] = {}
        for ex, ey, ew, eh in found:
            cx = ex + ew / 2
            half = 0 if cx < w / 2 else 1
            if half not in halves or ew * eh > halves[half][2] * halves[half][3]:
                halves[half] = (ex, ey, ew, eh)
        if len(halves) < 2:
            return None
        return tuple((x + ex + ew / 2, y + ey + eh / 2) for ex, ey, ew, eh in (halves[0], halves[1]))  # type: ignore

    def analyze(self, images: Sequence[Image.Image]) -> list[FaceSignal]:
        return [self.analyze_one(im) for im in images]

    def score(self, images: Sequence[Image.Image]) -> list[ImageScore]:
        out = []
        for signal in self.analyze(images):
            if signal.eye_alignment_distance is None:
                reason = f"{signal.face_count} face(s), eyes not found" if signal.face_count else "no face found"
                out.append(ImageScore(0.0, False, reason))
                continue
            aligned = bool(signal.gan_eye_aligned)
            out.append(ImageScore(1.0 if aligned else 0.0, aligned,
                                  f"{signal.face_count} face(s); eyes {signal.eye_alignment_distance:.4f} from StyleGAN's "
                                  f"positions ({'<' if aligned else '>='} {self.threshold})"))
        return out

    def to_spec(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> FaceDetector:
        detector = cls(**spec)
        current = cls().cascades
        if detector.cascades != current:
            raise ValueError(f"the installed OpenCV cascades differ from the ones this face detector recorded "
                             f"({detector.cascades} vs {current}); register a new face detector")
        return detector
