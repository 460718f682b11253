"""Published heads as ready detectors. ``univfd``: the UnivFD linear head (Ojha et al., CVPR 2023).

UnivFD is a Linear(768 -> 1) over frozen CLIP ViT-L/14 (``ViT-L-14``/``openai``) ``encode_image``
features, not normalised, trained on ProGAN images only (the paper's 20-class ProGAN training set)
with blur and JPEG augmentation; at test time images are center-cropped to 224 without resizing.
Its output is sigmoid(logit) with 0.5 as the decision threshold. Real use needs the ViT-L-14
weights (about 900 MB, downloaded by open_clip on first use, or a local checkpoint file).

The head file is fetched from its public URL and checked against a pinned sha256 before use.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from detectors.backbone import BackboneSpec, file_sha256
from detectors.clip_probe import ClipProbe


@dataclass(frozen=True)
class HeadPreset:
    name: str
    url: str
    sha256: str
    model: str
    weights: str
    normalize: bool
    preprocess: str
    embed_dim: int
    trained_on: str
    licence: str


UNIVFD = HeadPreset(
    name="univfd",
    url="https://github.com/WisconsinAIVision/UniversalFakeDetect/raw/main/pretrained_weights/fc_weights.pth",
    sha256="477100745713bcc957beb2b40859536859b6483fd6301b3b9293151b194c7847",
    model="ViT-L-14",
    weights="openai",
    normalize=False,
    preprocess="center_crop",
    embed_dim=768,
    trained_on="ProGAN only (UnivFD's 20-class ProGAN training set); reported to generalise to diffusion models",
    licence="MIT (WisconsinAIVision/UniversalFakeDetect)",
)
PRESETS = {UNIVFD.name: UNIVFD}


class PresetError(ValueError):
    """The head file is missing, unreachable or not the published one."""


def fetch_head(preset: HeadPreset, cache_dir: Path, source: Path | None = None, timeout: float = 60.0) -> Path:
    """The verified head file in ``cache_dir``: copied from ``source``, or downloaded from the preset's URL.

    Whatever the origin, the bytes must match the pinned sha256; a mismatch is never kept.
    """
    target = cache_dir / f"{preset.name}-{preset.sha256[:16]}.pth"
    if target.is_file() and file_sha256(target) == preset.sha256:
        return target
    if source is not None:
        if not source.is_file():
            raise PresetError(f"head file {source} not found")
        data = source.read_bytes()
        origin = str(source)
    else:
        import httpx

        try:
            response = httpx.get(preset.url, follow_redirects=True, timeout=timeout)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise PresetError(f"cannot download the {preset.name} head from {preset.url}: {str(exc).splitlines()[0]}; "
                              "download it elsewhere and pass the file (--head-file)") from None
        data, origin = response.content, preset.url
    actual = hashlib.sha256(data).hexdigest()
    if actual != preset.sha256:
        raise PresetError(f"{origin} has sha256 {actual}, not the published {preset.name} head {preset.sha256}")
    from pipeline.core.storage import atomic_write

    return atomic_write(target, data)


def load_head(path: Path, embed_dim: int) -> tuple[list[float], float]:
    """(weight, bias) of a saved torch Linear(embed_dim, 1) state dict; refuses any other shape."""
    import torch

    state = torch.load(str(path), map_location="cpu", weights_only=True)
    weight, bias = state.get("weight"), state.get("bias")
    if weight is None or bias is None or tuple(weight.shape) != (1, embed_dim) or tuple(bias.shape) != (1,):
        shapes = {k: tuple(v.shape) for k, v in state.items()}
        raise PresetError(f"{path} is not a Linear({embed_dim}, 1) state dict: {shapes}")
    return [float(v) for v in weight[0].tolist()], float(bias[0])


def preset_detector(name: str, head_file: Path, model: str | None = None, weights: str | None = None) -> ClipProbe:
    """The preset as a ClipProbe. ``model``/``weights`` override the backbone (a local checkpoint of the
    same model for air-gapped sites, or a random-init config in tests); the id records what was used."""
    if name not in PRESETS:
        raise PresetError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    preset = PRESETS[name]
    if file_sha256(head_file) != preset.sha256:
        raise PresetError(f"{head_file} is not the published {name} head (sha256 mismatch)")
    weight, bias = load_head(head_file, preset.embed_dim)
    spec = BackboneSpec.parse(model or preset.model, weights or preset.weights, normalize=preset.normalize,
                              preprocess=preset.preprocess)
    return ClipProbe(
        backbone=spec, weight=weight, bias=bias, platt_a=1.0, platt_b=0.0, threshold=0.5,
        training={"preset": name, "head_sha256": preset.sha256, "head_url": preset.url, "trained_on": preset.trained_on,
                  "licence": preset.licence, "calibration": "none (sigmoid of the published logit)",
                  "target_fpr": "n/a, UnivFD's 0.5", "metrics": {}},
    )


# --- the shipped face detector ---------------------------------------------------------------------------
# Trained by `python bench/detector_real_faces.py --write-preset` on ../shared/data/faces (fixed splits by
# image hash); its JSON (the detector, with its measured figures and the training sources' licences) and
# its training manifest (one row per image: sha256, label, split, source) ship in this folder.
SHIPPED_DETECTOR = "avatar-faces-v1"
PRESET_DIR = Path(__file__).resolve().parent


def shipped_detector_path(name: str = SHIPPED_DETECTOR) -> Path:
    return PRESET_DIR / f"{name}.json"


def shipped_detector(name: str = SHIPPED_DETECTOR) -> object:
    """The shipped detector, checked like any saved detector (its id must match its content)."""
    from detectors.base import read_detector_file

    path = shipped_detector_path(name)
    if not path.is_file():
        raise PresetError(f"the shipped detector {name} is missing from {PRESET_DIR}; reinstall profile-audit")
    return read_detector_file(path)


def shipped_detector_id(name: str = SHIPPED_DETECTOR) -> str | None:
    """The shipped detector's recorded id, without building it; None when the file is missing or unreadable."""
    import json

    try:
        return json.loads(shipped_detector_path(name).read_text(encoding="utf-8")).get("id")
    except (OSError, ValueError):
        return None


def is_shipped(detector: object, name: str = SHIPPED_DETECTOR) -> bool:
    """Whether ``detector`` is the shipped one (same content, so the same id)."""
    shipped = shipped_detector_id(name)
    return shipped is not None and shipped == getattr(detector, "id", None)
