"""open_clip backbones described as data, with a stable identity.

A backbone is named like open_clip names it: a model config (built-in, or a JSON file in
``model_configs/``) plus where its weights come from:

- a pretrained tag, e.g. ``ViT-L-14`` / ``openai`` (downloaded by open_clip on first use);
- a local checkpoint file (``.safetensors``, ``.bin``, ``.pt``) for air-gapped sites;
- ``local-dir:<folder>``: a folder with ``open_clip_config.json`` and a checkpoint, as open_clip saves
  and loads them (the model name is then only a label);
- ``random:<seed>``: random initialisation, for tests and the demo only. It detects nothing real.

The id names all of it (model, weights tag or file sha256, feature choice, preprocessing), so an
embedding or a score can always be traced to exactly what produced it.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

MODEL_CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
TINY_MODEL = "pa-tiny-vit"  # 64-wide, 2 layers, patch 32: thousands of images/s on a CPU
PREPROCESS_MODES = ("resize_center_crop", "center_crop")

RANDOM_WEIGHTS = "random:"


def is_random_backbone_id(backbone_id: str) -> bool:
    """Whether a backbone id (``BackboneSpec.id``: model/weights/feature/preprocess) names random weights:
    its embeddings say nothing about what an image shows, so no edge or confirmation may use them."""
    parts = backbone_id.split("/")
    return len(parts) > 1 and parts[1].startswith(RANDOM_WEIGHTS.replace(":", "-"))


_loaded: dict[str, Backbone] = {}
_lock = threading.Lock()
_configs_registered = False


def local_dir_files(folder: Path) -> list[Path]:
    """The files of a local-dir backbone that define it: its config and its checkpoint(s)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and (
        p.name == "open_clip_config.json" or p.suffix in {".safetensors", ".bin", ".pth", ".pt"}))


def local_dir_sha256(folder: Path) -> str:
    """One hash over the config and checkpoint files (names and contents) of a local-dir backbone."""
    if not (folder / "open_clip_config.json").is_file():
        raise FileNotFoundError(f"{folder} has no open_clip_config.json; it is not an open_clip local-dir")
    digest = hashlib.sha256()
    for path in local_dir_files(folder):
        digest.update(f"{path.name}:{file_sha256(path)}\n".encode())
    return digest.hexdigest()


class BackboneLoadError(RuntimeError):
    """The model or its weights could not be loaded (no network for a tag, a bad checkpoint)."""


def register_model_configs() -> None:
    """Make the project's JSON model configs known to open_clip (idempotent)."""
    global _configs_registered
    if not _configs_registered:
        import open_clip

        open_clip.add_model_config(MODEL_CONFIG_DIR)
        _configs_registered = True


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class BackboneSpec:
    kind: ClassVar[str] = "open_clip"  # its name in detectors.backbones.BACKBONES (not in the saved dict)

    model: str
    weights: str  # pretrained tag ('openai'), 'file:<path>', 'local-dir:<folder>' or 'random:<seed>'
    normalize: bool = True  # L2-normalise encode_image output
    preprocess: str = "resize_center_crop"
    weights_sha256: str | None = None  # filled for file and local-dir weights: the identity of the checkpoint

    @classmethod
    def parse(cls, model: str, weights: str, **kw: Any) -> BackboneSpec:
        """Accept a tag, a path to a checkpoint file, 'local-dir:<folder>', or 'random:<seed>'."""
        if kw.get("preprocess", "resize_center_crop") not in PREPROCESS_MODES:
            raise ValueError(f"preprocess must be one of {PREPROCESS_MODES}")
        if weights.startswith("local-dir:"):
            folder = Path(weights[len("local-dir:"):]).expanduser().resolve()
            if not folder.is_dir():
                raise FileNotFoundError(f"local-dir backbone folder {folder} not found")
            sha = kw.pop("weights_sha256", None) or local_dir_sha256(folder)
            return cls(model=model, weights=f"local-dir:{folder}", weights_sha256=sha, **kw)
        if weights.startswith(("random:", "file:")):
            spec = cls(model=model, weights=weights, **kw)
        elif Path(weights).suffix in {".safetensors", ".bin", ".pt", ".pth"} or Path(weights).is_file():
            spec = cls(model=model, weights=f"file:{Path(weights).resolve()}", **kw)
        else:
            spec = cls(model=model, weights=weights, **kw)
        if spec.weights.startswith("file:") and spec.weights_sha256 is None:
            path = Path(spec.weights[5:])
            if not path.is_file():
                raise FileNotFoundError(f"checkpoint file {path} not found")
            spec = cls(**{**asdict(spec), "weights_sha256": file_sha256(path)})
        return spec

    @property
    def id(self) -> str:
        if self.weights.startswith("file:"):
            weights = f"sha256-{(self.weights_sha256 or '')[:16]}"
        elif self.weights.startswith("local-dir:"):
            weights = f"local-dir-sha256-{(self.weights_sha256 or '')[:16]}"
        else:
            weights = self.weights.replace(":", "-")
        feature = "encode_image" + ("-l2" if self.normalize else "")
        return f"{self.model}/{weights}/{feature}/{self.preprocess}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BackboneSpec:
        return cls(**{k: v for k, v in data.items() if k != "kind"})

    def load(self, device: str | None = None, torch_threads: int | None = None) -> Backbone:
        return load_backbone(self, torch_threads=torch_threads, device=device)


class Backbone:
    """A loaded open_clip image tower with its preprocessing; embeds PIL images in batches."""

    def __init__(self, spec: BackboneSpec, device: str | None = None, torch_threads: int | None = None):
        import torch

        register_model_configs()
        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.spec = spec
        wanted = device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            self._load(wanted)
        except BackboneLoadError:
            raise
        except (RuntimeError, AssertionError) as exc:  # torch's CUDA init errors (OOM is a RuntimeError)
            if not wanted.startswith("cuda") or device:
                raise
            # auto-selected CUDA that cannot hold the model (or a broken driver): the CPU still works
            logging.getLogger(__name__).warning("CUDA load of %s failed (%s); falling back to the CPU", spec.id,
                                                str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            self._load("cpu")

    def _load(self, device: str) -> None:
        import open_clip

        spec = self.spec
        self.device = device
        # fp16 on CUDA (the UnivFD and open_clip inference setting); fp32 on the CPU, where fp16 is slow
        self.precision = "fp16" if device.startswith("cuda") else "fp32"
        model_name = spec.model
        if spec.weights.startswith("random:"):
            import torch

            torch.manual_seed(int(spec.weights.split(":", 1)[1]))
            pretrained = None
        elif spec.weights.startswith("file:"):
            path = Path(spec.weights[5:])
            if not path.is_file():
                raise BackboneLoadError(f"checkpoint file {path} not found (backbone {spec.id})")
            if spec.weights_sha256 and file_sha256(path) != spec.weights_sha256:
                raise BackboneLoadError(f"checkpoint {path} does not match the recorded sha256 {spec.weights_sha256}")
            pretrained = str(path)
        elif spec.weights.startswith("local-dir:"):
            folder = Path(spec.weights[len("local-dir:"):])
            try:
                actual = local_dir_sha256(folder)
            except (FileNotFoundError, OSError) as exc:
                raise BackboneLoadError(f"cannot load backbone {spec.id}: {exc}") from None
            if spec.weights_sha256 and actual != spec.weights_sha256:
                raise BackboneLoadError(f"local-dir {folder} does not match the recorded sha256 {spec.weights_sha256}")
            model_name, pretrained = spec.weights, None
        else:
            pretrained = spec.weights
        quiet = logging.getLogger()
        level = quiet.level
        # open_clip logs to the root logger: "no pretrained weights" (intended for random:<seed>) and
        # download failures, which are raised below as BackboneLoadError with the same text
        quiet.setLevel(logging.CRITICAL)
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=pretrained, precision=self.precision, device=device
            )
        except (OSError, ValueError) as exc:
            raise BackboneLoadError(f"cannot load backbone {spec.id}: {str(exc).splitlines()[0]}") from None
        except RuntimeError as exc:
            if device.startswith("cuda"):
                raise  # __init__ falls back to the CPU when CUDA was chosen automatically
            hint = ("; with no network, download the weights once elsewhere and pass the checkpoint file"
                    if pretrained and not spec.weights.startswith("file:") else "")
            raise BackboneLoadError(f"cannot load backbone {spec.id}: {str(exc).splitlines()[0]}{hint}") from None
        finally:
            quiet.setLevel(level)
        model.eval()
        self.model = model
        self.preprocess = self._preprocess(preprocess)
        self.embed_dim = int(model.visual.output_dim)
        self.forward_passes = 0  # images embedded by this process: the benchmark and tests read it

    def _preprocess(self, default: Any) -> Any:
        if self.spec.preprocess == "resize_center_crop":
            return default
        # UnivFD's test setting: center crop to the input size, no resize
        from torchvision import transforms

        size = self.model.visual.image_size
        size = size[0] if isinstance(size, (tuple, list)) else size
        normalize = [t for t in default.transforms if isinstance(t, transforms.Normalize)]
        return transforms.Compose([transforms.CenterCrop(size), transforms.ToTensor(), *normalize])

    def tensors(self, images: Sequence[Image.Image]) -> Any:
        import torch

        return torch.stack([self.preprocess(img) for img in images])

    def embed_tensors(self, batch: Any) -> np.ndarray:
        import torch

        with torch.inference_mode():
            # open_clip's fp16 casts only conv/linear/attention weights (its first parameter may stay
            # fp32), so the input dtype follows the precision, not an arbitrary parameter.
            dtype = torch.float16 if self.precision == "fp16" else torch.float32
            batch = batch.to(self.device, dtype=dtype, non_blocking=True)
            features = self.model.encode_image(batch)
            self.forward_passes += int(batch.shape[0])
            if self.spec.normalize:
                features = torch.nn.functional.normalize(features, dim=-1)
        return features.float().cpu().numpy()

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        return self.embed_tensors(self.tensors(images))


def load_backbone(spec: BackboneSpec, torch_threads: int | None = None, device: str | None = None) -> Backbone:
    """Load once per process, spec and device; model loading dominates small runs.

    ``device`` None picks CUDA (fp16) when available, else the CPU; ``torch_threads`` sets torch's
    intra-op threads (the CPU inference width) for the whole process.
    """
    if torch_threads:
        import torch

        torch.set_num_threads(torch_threads)
    key = f"{spec.id}|{spec.weights}|{device or 'auto'}"
    with _lock:
        if key not in _loaded:
            _loaded[key] = Backbone(spec, device=device, torch_threads=torch_threads)
        return _loaded[key]
