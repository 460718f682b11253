"""Face signals, a second detector: face presence and count, the usable-face pre-filter, and the GAN
eye-alignment test.

- Usable face, the pre-filter of Ricker et al. (RAID 2024): a face whose eye centres are at least
  ``min_eye_distance`` (0.1) of the image width apart. A detector of synthetic *faces* says little
  about an avatar with no face, or with a face too small to judge.
- Eye alignment is the test of Yang, Singh and Menczer (2024): StyleGAN-family generators place the
  eyes of every face at the same spot, (0.3808, 0.4771) and (0.6152, 0.4771) of the image. The eye
  centres, normalised by the image size, are compared with those points; the summed Euclidean
  distance divided by 2*sqrt(2) (its largest possible value) below the threshold marks the face
  aligned. Measured on the shared faces (docs/detectors.md, "Eye-alignment threshold"): at 0.02 the
  test flags 99.5% of 1,500 StyleGAN2 faces and 1.9% of 1,200 web headshots. Aligned real photos
  (passport-style crops, FFHQ itself) exist, so this is a signal for review, not a verdict.

Face boxes and eye centres come from dlib's HOG detector and 5-point shape predictor (the setup of
Yang, Singh and Menczer; ``detectors.landmarks``). OpenCV's Haar cascades (shipped in the
``opencv-python-headless`` 4.x wheel) are only a fallback when dlib cannot load: they miss both eyes
in 29% of StyleGAN faces. Which one ran is in the detector id and in every ``face_signals.details``.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from detectors.base import Detector, FaceSignalSource, ImageScore, register
from detectors.landmarks import SHAPE_PREDICTOR, LandmarksUnavailable, check_available, find_faces, model_path, model_sha256

STYLEGAN_EYES = ((0.3808, 0.4771), (0.6152, 0.4771))
ALIGNMENT_THRESHOLD = 0.02
MIN_EYE_DISTANCE = 0.1  # Ricker et al.: usable face when the eyes are >= 0.1 of the image width apart
FACE_CASCADE = "haarcascade_frontalface_default.xml"
EYE_CASCADE = "haarcascade_eye.xml"
LANDMARKS = ("dlib", "haar")


@dataclass(frozen=True)
class FaceSignal:
    face_count: int
    eye_alignment_distance: float | None  # None when no face with two eyes was found
    gan_eye_aligned: bool | None
    details: dict[str, Any] = field(default_factory=dict)  # boxes, normalised eye centres, landmark source
    usable_face: bool | None = None  # the pre-filter; None when no face with two eyes was found


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


def installed_models(landmarks: str, folder: Path | None = None) -> dict[str, str]:
    """Model file -> sha256 of what this landmark source loads; part of the detector's identity."""
    if landmarks == "dlib":
        return {SHAPE_PREDICTOR: model_sha256(model_path(SHAPE_PREDICTOR, folder))}
    return {name: hashlib.sha256(cascade_path(name).read_bytes()).hexdigest() for name in (FACE_CASCADE, EYE_CASCADE)}


@register
@dataclass(eq=False)
class FaceDetector(Detector, FaceSignalSource):
    """Faces, the usable-face pre-filter and the eye-alignment rule; the score is 1 aligned, 0 not (no probability)."""

    kind: ClassVar[str] = "faces"
    version: ClassVar[str] = "2"

    landmarks: str = ""  # 'dlib' or 'haar'; empty: dlib when it loads, else Haar (said in the details)
    threshold: float = ALIGNMENT_THRESHOLD
    min_eye_distance: float = MIN_EYE_DISTANCE
    max_side: int = 512  # larger images are downscaled first (coordinates are normalised anyway)
    upsample: tuple[int, ...] = (0, 1)  # dlib: upsampling levels tried in turn until a face is found
    scale_factor: float = 1.1  # Haar only
    min_neighbors: int = 5  # Haar only
    min_face_fraction: float = 0.1  # Haar only: faces smaller than this share of the shorter side are ignored
    models: dict[str, str] = field(default_factory=dict)  # model file -> sha256, filled on construction
    # not part of the saved form: where dlib's files are (tests point it elsewhere), why Haar was chosen
    model_folder: Path | None = field(default=None, repr=False, metadata={"runtime": True})
    fallback_reason: str | None = field(default=None, repr=False, metadata={"runtime": True})

    def __post_init__(self) -> None:
        self.upsample = tuple(int(v) for v in self.upsample)
        if not self.landmarks:
            try:
                check_available(self.model_folder)
                self.landmarks = "dlib"
            except LandmarksUnavailable as exc:
                self.landmarks, self.fallback_reason = "haar", str(exc)
        if self.landmarks not in LANDMARKS:
            raise ValueError(f"face landmarks must be one of {LANDMARKS}, not {self.landmarks!r}")
        if not self.models:
            self.models = installed_models(self.landmarks, self.model_folder)

    @property
    def landmark_source(self) -> str:
        if self.landmarks == "dlib":
            return "dlib 5-point shape predictor"
        return "opencv haar cascades" + (f" (fallback: {self.fallback_reason})" if self.fallback_reason else "")

    def analyze_one(self, image: Image.Image) -> FaceSignal:
        rgb = image.convert("RGB")
        scale = min(1.0, self.max_side / max(rgb.size))
        if scale < 1.0:
            rgb = rgb.resize((max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))), Image.BILINEAR)
        width, height = rgb.size
        faces, eyes = self._dlib(rgb) if self.landmarks == "dlib" else self._haar(rgb)
        details: dict[str, Any] = {"faces": [list(f) for f in faces], "size": [width, height],
                                   "landmarks": self.landmark_source}
        if not faces:
            return FaceSignal(0, None, None, details)
        if eyes is None:
            details["eyes"] = None
            return FaceSignal(len(faces), None, None, details)
        left, right = ((x / width, y / height) for x, y in eyes)
        distance = eye_alignment_distance(left, right)
        eye_distance = math.hypot(eyes[1][0] - eyes[0][0], eyes[1][1] - eyes[0][1]) / width
        details["eyes"] = [[round(float(v), 4) for v in left], [round(float(v), 4) for v in right]]
        details["eye_distance"] = round(eye_distance, 4)
        return FaceSignal(len(faces), distance, bool(distance < self.threshold), details,
                          usable_face=bool(eye_distance >= self.min_eye_distance))

    def _dlib(self, rgb: Image.Image) -> tuple[list[tuple[int, ...]], Any]:
        found = find_faces(np.asarray(rgb), self.model_folder, self.upsample)
        return [f.box for f in found], (found[0].eyes if found else None)

    def _haar(self, rgb: Image.Image) -> tuple[list[tuple[int, ...]], Any]:
        import cv2

        gray = cv2.equalizeHist(cv2.cvtColor(np.asarray(rgb), cv2.COLOR_RGB2GRAY))
        height, width = gray.shape
        side = int(self.min_face_fraction * min(width, height))
        faces = _cascade(FACE_CASCADE).detectMultiScale(gray, scaleFactor=self.scale_factor,
                                                        minNeighbors=self.min_neighbors, minSize=(side, side))
        faces = sorted((tuple(int(v) for v in f) for f in faces), key=lambda f: -f[2] * f[3])
        return faces, (self._haar_eyes(gray, faces[0]) if faces else None)

    def _haar_eyes(self, gray: np.ndarray, face: tuple[int, ...]) -> tuple[tuple[float, float], tuple[float, float]] | None:
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

    def draft_need(self) -> tuple[int, int] | None:
        """Images are analysed at ``max_side`` at most, so a decode whose long side keeps that is enough."""
        return (1, self.max_side)

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
            usable = "" if signal.usable_face else f"; face too small (eyes < {self.min_eye_distance} of the width)"
            out.append(ImageScore(1.0 if aligned else 0.0, aligned,
                                  f"{signal.face_count} face(s); eyes {signal.eye_alignment_distance:.4f} from StyleGAN's "
                                  f"positions ({'<' if aligned else '>='} {self.threshold}){usable}"))
        return out

    def to_spec(self) -> dict[str, Any]:
        spec = {f.name: getattr(self, f.name) for f in fields(self) if not f.metadata.get("runtime")}
        spec["upsample"] = list(self.upsample)
        spec["models"] = dict(self.models)
        return spec

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> FaceDetector:
        detector = cls(**spec)
        try:
            current = installed_models(detector.landmarks)
        except LandmarksUnavailable as exc:
            raise ValueError(f"this face detector uses dlib landmarks, which cannot load here: {exc}") from None
        if detector.models != current:
            raise ValueError(f"the installed face models differ from the ones this face detector recorded "
                             f"({detector.models} vs {current}); register a new face detector")
        return detector
