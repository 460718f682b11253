"""Image-level detectors behind one small interface (see ``detectors.base``).

Importing this package registers the built-in detectors; it does not import torch.
"""

from detectors import clip_probe, faces  # noqa: F401  (registers ClipProbe, FaceDetector)
from detectors.base import (
    REGISTRY,
    Detector,
    EmbeddingDetector,
    ImageScore,
    detector_from_saved,
    read_detector_file,
    register,
    save_detector,
)

__all__ = [
    "REGISTRY",
    "Detector",
    "EmbeddingDetector",
    "ImageScore",
    "detector_from_saved",
    "read_detector_file",
    "register",
    "save_detector",
]
