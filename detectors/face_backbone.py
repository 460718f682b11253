"""The `dlib-face` backbone: dlib's 128-d face descriptor, a pretrained ResNet shipped in the
``face-recognition-models`` wheel, so it works with no download.

What it embeds is the largest face of the image, aligned by dlib's 5-point landmarks into a 150 px
chip (``dlib.get_face_chip``); an image with no face found has no embedding (a NaN row), and a probe
over it gives no score for that image, with that reason. The network was trained to tell people apart,
not to find generators: a probe on it is weak (docs/detectors.md has the measured numbers), but it is
a real pretrained network that can be measured here on real generated faces.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from detectors.backbone import BackboneLoadError
from detectors.landmarks import FACE_DESCRIPTOR, SHAPE_PREDICTOR, LandmarksUnavailable, find_faces, model_path, model_sha256

DESCRIPTOR_DIM = 128


class DlibFaceLoadError(BackboneLoadError):
    """dlib or its model files cannot be loaded, or they are not the recorded ones."""


@dataclass(frozen=True)
class DlibFaceSpec:
    kind: ClassVar[str] = "dlib-face"

    weights_sha256: str  # of dlib_face_recognition_resnet_model_v1.dat
    landmarks_sha256: str  # of shape_predictor_5_face_landmarks.dat (it aligns the face chip)
    chip_size: int = 150  # the network's input, as dlib's examples use it
    chip_padding: float = 0.25
    max_side: int = 512  # larger images are downscaled before face detection
    upsample: tuple[int, ...] = (0, 1)

    @classmethod
    def parse(cls, model: str = "dlib-face", weights: str | None = None, **kw: Any) -> DlibFaceSpec:
        """The installed model files; ``weights`` needs no value (any other value is refused)."""
        if weights not in (None, "", "face-recognition-models"):
            raise ValueError(f"the dlib-face backbone takes no --weights (its model ships in face-recognition-models), "
                             f"got {weights!r}")
        # open_clip's options are accepted at their defaults only (the CLI always passes them)
        defaults = {"normalize": True, "preprocess": "resize_center_crop"}
        changed = sorted(k for k, v in kw.items() if defaults.get(k, object()) != v)
        if changed:
            raise ValueError(f"the dlib-face backbone has no option {', '.join(changed)} (it embeds an aligned face chip)")
        try:
            return cls(weights_sha256=model_sha256(model_path(FACE_DESCRIPTOR)),
                       landmarks_sha256=model_sha256(model_path(SHAPE_PREDICTOR)))
        except LandmarksUnavailable as exc:
            raise FileNotFoundError(str(exc)) from None

    @property
    def id(self) -> str:
        return (f"dlib-face/resnet_v1-sha256-{self.weights_sha256[:16]}/descriptor-{DESCRIPTOR_DIM}/"
                f"chip{self.chip_size}-pad{self.chip_padding}-5pt-{self.landmarks_sha256[:8]}")

    @property
    def weights(self) -> str:
        return f"sha256:{self.weights_sha256}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DlibFaceSpec:
        data = {k: v for k, v in data.items() if k != "kind"}
        return cls(**{**data, "upsample": tuple(data.get("upsample", (0, 1)))})

    def load(self, device: str | None = None, torch_threads: int | None = None) -> DlibFaceBackbone:
        return load_dlib_face(self)


class DlibFaceBackbone:
    """Face chips in worker threads (``tensors``), descriptors in the calling thread (``embed_tensors``)."""

    embed_dim = DESCRIPTOR_DIM

    def __init__(self, spec: DlibFaceSpec):
        self.spec = spec
        try:
            import dlib

            for name, sha in ((FACE_DESCRIPTOR, spec.weights_sha256), (SHAPE_PREDICTOR, spec.landmarks_sha256)):
                if model_sha256(model_path(name)) != sha:
                    raise DlibFaceLoadError(f"installed {name} does not match the recorded sha256 {sha[:16]}")
            self.model = dlib.face_recognition_model_v1(str(model_path(FACE_DESCRIPTOR)))
        except (ImportError, LandmarksUnavailable, RuntimeError) as exc:
            if isinstance(exc, DlibFaceLoadError):
                raise
            raise DlibFaceLoadError(f"cannot load backbone {spec.id}: {exc}") from None
        self.device, self.precision = "cpu", "fp32"
        self.forward_passes = 0

    def chip(self, image: Image.Image) -> np.ndarray | None:
        """The aligned chip of the largest face, or None when no face is found."""
        import dlib

        rgb = image.convert("RGB")
        scale = min(1.0, self.spec.max_side / max(rgb.size))
        if scale < 1.0:
            rgb = rgb.resize((max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))), Image.BILINEAR)
        pixels = np.asarray(rgb)
        faces = find_faces(pixels, upsample=self.spec.upsample)
        if not faces:
            return None
        return np.asarray(dlib.get_face_chip(pixels, faces[0].shape, size=self.spec.chip_size,
                                             padding=self.spec.chip_padding))

    def tensors(self, images: Sequence[Image.Image]) -> list[np.ndarray | None]:
        return [self.chip(im) for im in images]

    def embed_tensors(self, chips: Sequence[np.ndarray | None]) -> np.ndarray:
        out = np.full((len(chips), DESCRIPTOR_DIM), np.nan, dtype=np.float32)
        present = [i for i, c in enumerate(chips) if c is not None]
        if present:
            with _lock:  # one descriptor network per backbone; dlib's object is not documented thread-safe
                vectors = self.model.compute_face_descriptor([chips[i] for i in present])
            out[present] = np.asarray([np.asarray(v) for v in vectors], dtype=np.float32)
            self.forward_passes += len(present)
        return out

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.embed_tensors(self.tensors(images))


_loaded: dict[str, DlibFaceBackbone] = {}
_lock = threading.Lock()


def load_dlib_face(spec: DlibFaceSpec) -> DlibFaceBackbone:
    """Load once per process and spec."""
    with _lock:
        if spec.id not in _loaded:
            _loaded[spec.id] = DlibFaceBackbone(spec)
        return _loaded[spec.id]
