"""dlib face boxes and 5-point landmarks, shared by the `faces` detector and the `dlib-face` backbone.

The model files ship in the ``face-recognition-models`` wheel; dlib itself comes from ``dlib-bin``
(a binary wheel: ``pip install face-recognition`` would compile dlib from source). The package's
``__init__`` imports ``pkg_resources``, absent from modern setuptools, so its folder is located with
``importlib.util.find_spec`` without importing it.

dlib's HOG face detector misses faces that fill a small image, so a second pass upsamples once. The
face it is surest of is kept whatever its score (real web headshots often score low: a tenth of them
under 0.15); further faces count only with a detector score of at least ``EXTRA_FACE_SCORE``, so a weak
response on a glove or a pattern does not turn a portrait into a group photo.
"""

from __future__ import annotations

import hashlib
import importlib.util
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

SHAPE_PREDICTOR = "shape_predictor_5_face_landmarks.dat"
FACE_DESCRIPTOR = "dlib_face_recognition_resnet_model_v1.dat"
EXTRA_FACE_SCORE = 0.5


class LandmarksUnavailable(RuntimeError):
    """dlib or the face-recognition-models files cannot be loaded."""


def models_dir() -> Path:
    """The ``models/`` folder of the installed face-recognition-models package."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise LandmarksUnavailable("face-recognition-models is not installed (pip install face-recognition-models)")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def model_path(name: str, folder: Path | None = None) -> Path:
    path = (folder or models_dir()) / name
    if not path.is_file():
        raise LandmarksUnavailable(f"dlib model file {path} not found")
    return path


@lru_cache(maxsize=16)
def model_sha256(path: Path) -> str:
    from detectors.backbone import file_sha256

    return file_sha256(path)


@dataclass(frozen=True)
class Face:
    box: tuple[int, int, int, int]  # x, y, width, height in pixels of the analysed image
    points: tuple[tuple[float, float], ...]  # dlib's 5 points: two per eye (corners), then the nose
    shape: Any  # the dlib full_object_detection (the descriptor network aligns the face with it)
    score: float = 0.0  # the HOG detector's confidence

    @property
    def eyes(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """Eye centres (mean of each eye's two corners), image-left eye first."""
        a = ((self.points[0][0] + self.points[1][0]) / 2, (self.points[0][1] + self.points[1][1]) / 2)
        b = ((self.points[2][0] + self.points[3][0]) / 2, (self.points[2][1] + self.points[3][1]) / 2)
        left, right = sorted((a, b))
        return left, right


_local = threading.local()


def _models(folder: Path | None) -> tuple[Any, Any]:
    """One HOG detector and shape predictor per thread: the scorer calls them from worker threads."""
    key = str(folder)
    cache = _local.__dict__.setdefault("models", {})
    if key not in cache:
        try:
            import dlib
        except ImportError as exc:
            raise LandmarksUnavailable(f"dlib cannot be imported ({exc}); pip install dlib-bin") from None
        path = model_path(SHAPE_PREDICTOR, folder)
        try:
            cache[key] = (dlib.get_frontal_face_detector(), dlib.shape_predictor(str(path)))
        except RuntimeError as exc:
            raise LandmarksUnavailable(f"dlib cannot load {SHAPE_PREDICTOR}: {exc}") from None
    return cache[key]


RECENT_FACES = 256  # per thread: the avatar stack's eye test and the face signals analyse the same pixels


def find_faces(rgb: np.ndarray, folder: Path | None = None, upsample: Sequence[int] = (0, 1),
               extra_face_score: float = EXTRA_FACE_SCORE) -> list[Face]:
    """Faces of an RGB uint8 array, most confident first; tries each upsampling level until one finds a face.

    The HOG detector costs about as much as a CLIP forward pass, and in the score stage two detectors may ask
    for the faces of the same decoded pixels (the avatar stack's eye test, then the face signals): the last
    ``RECENT_FACES`` answers of this thread are kept, keyed by a hash of the pixels and the options."""
    rgb = np.ascontiguousarray(rgb)
    key = (hashlib.blake2b(rgb.data, digest_size=16).digest(), rgb.shape, str(folder), tuple(upsample),
           extra_face_score)
    recent = _local.__dict__.setdefault("recent", {})
    if key in recent:
        return recent[key]
    faces = _find_faces(rgb, folder, upsample, extra_face_score)
    if len(recent) >= RECENT_FACES:
        recent.pop(next(iter(recent)))
    recent[key] = faces
    return faces


def _find_faces(rgb: np.ndarray, folder: Path | None, upsample: Sequence[int], extra_face_score: float) -> list[Face]:
    detector, predictor = _models(folder)
    found: list[tuple[float, Any]] = []
    for level in upsample:
        rects, scores, _ = detector.run(rgb, level, 0.0)
        found = sorted(zip(scores, rects), key=lambda sr: -sr[0])
        if found:
            break
    faces = []
    for rank, (score, rect) in enumerate(found):
        if rank and score < extra_face_score:
            break
        shape = predictor(rgb, rect)
        points = tuple((float(shape.part(i).x), float(shape.part(i).y)) for i in range(shape.num_parts))
        faces.append(Face((rect.left(), rect.top(), rect.width(), rect.height()), points, shape, float(score)))
    return faces


def check_available(folder: Path | None = None) -> None:
    """Raise LandmarksUnavailable unless dlib and the shape predictor load."""
    _models(folder)
