"""Image-level detectors behind one small interface (see ``detectors.base``).

Importing this package registers the built-in detectors; it does not import torch.
"""

from detectors import avatar_stack, clip_probe, faces  # noqa: F401  (registers ClipProbe, FaceProbe, FaceDetector, AvatarStack)
from detectors.backbones import BACKBONES, backbone_from_dict, parse_backbone
from detectors.base import (
    DETECTORS,
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
    "BACKBONES",
    "DETECTORS",
    "REGISTRY",
    "Detector",
    "EmbeddingDetector",
    "ImageScore",
    "backbone_from_dict",
    "detector_from_saved",
    "parse_backbone",
    "read_detector_file",
    "register",
    "save_detector",
]
