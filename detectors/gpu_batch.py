"""The GPU input path: batched JPEG decoding and open_clip's preprocessing on the device.

On CUDA the CPU cannot decode fast enough to feed the model (an H100 ran bare ViT-B-32 at 8,058 img/s
against 214 img/s end to end, bound by decoding). So, with ``Settings.gpu_decode`` and a CUDA backbone,
the workers only read the files and this module turns each batch of JPEG bytes into the model input:

1. ``torchvision.io.decode_jpeg(list, device=...)``: one batched nvJPEG call (EXIF orientation applied,
   RGB out); a file it cannot decode (not a JPEG, CMYK, corrupt) falls back to the CPU decoder alone;
2. open_clip's transform on the device, on uint8 like PIL: resize of the short side (bicubic,
   antialiased), center crop, then /255 and the mean/std normalisation (or the center crop alone for
   the ``center_crop`` mode).

The same code runs with ``device="cpu"`` (torchvision's decoder is libjpeg-turbo there), which is how
the tests check it against the PIL preprocessing on a machine without a GPU. ``pin_if_cuda`` pins the
CPU path's batches so the host-to-device copy is asynchronous.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DeviceTransform:
    """open_clip's image transform, as parameters, applied to decoded uint8 CHW tensors on a device."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    mode: str = "resize_center_crop"  # or "center_crop" (no resize: UnivFD's test setting)
    device: str = "cpu"

    @classmethod
    def from_transform(cls, transform: Any, mode: str, device: str) -> DeviceTransform:
        from torchvision import transforms

        norm = next(t for t in transform.transforms if isinstance(t, transforms.Normalize))
        crop = next(t for t in transform.transforms if isinstance(t, transforms.CenterCrop))
        return cls(int(crop.size[0]), tuple(float(v) for v in norm.mean), tuple(float(v) for v in norm.std),  # type: ignore[arg-type]
                   mode, device)

    def one(self, image: Any) -> Any:
        """uint8 CHW (on the device) -> float32 CHW normalised model input."""
        import torch
        from torchvision.transforms.v2 import InterpolationMode
        from torchvision.transforms.v2 import functional as F

        if self.mode == "resize_center_crop":
            image = F.resize(image, [self.size], interpolation=InterpolationMode.BICUBIC, antialias=True)
        image = F.center_crop(image, [self.size, self.size])
        mean = torch.tensor(self.mean, device=image.device).view(3, 1, 1)
        std = torch.tensor(self.std, device=image.device).view(3, 1, 1)
        return (image.float() / 255.0 - mean) / std

    def decode(self, datas: Sequence[bytes]) -> list[Any]:
        """Decode a batch of JPEG files on the device (one batched call); CPU fallback per failed file."""
        import torch
        from torchvision.io import ImageReadMode, decode_jpeg

        raw = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]
        try:
            return list(decode_jpeg(raw, mode=ImageReadMode.RGB, device=self.device, apply_exif_orientation=True))
        except RuntimeError:  # one file the batched decoder refuses: decode one by one, PIL for the refused
            out = []
            for data, tensor in zip(datas, raw):
                try:
                    out.append(decode_jpeg(tensor, mode=ImageReadMode.RGB, device=self.device,
                                           apply_exif_orientation=True))
                except RuntimeError:
                    out.append(_pil_decode(data).to(self.device))
            return out

    def __call__(self, datas: Sequence[bytes]) -> Any:
        """A batch of stored files -> the model input batch, on the device."""
        import torch

        jpeg = [i for i, d in enumerate(datas) if d[:3] == b"\xff\xd8\xff"]
        decoded: list[Any] = [None] * len(datas)
        for i, tensor in zip(jpeg, self.decode([datas[i] for i in jpeg]) if jpeg else []):
            decoded[i] = tensor
        for i, data in enumerate(datas):  # PNG, GIF, WEBP: the CPU decoder (alpha, palettes, frames)
            if decoded[i] is None:
                decoded[i] = _pil_decode(data).to(self.device)
        return torch.stack([self.one(img) for img in decoded])


def _pil_decode(data: bytes) -> Any:
    import numpy as np
    import torch

    from pipeline.images.acquire import decode_image

    rgb = decode_image(data)[1]
    return torch.from_numpy(np.asarray(rgb, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def device_transform_for(detector: Any, device: str) -> DeviceTransform | None:
    """The device transform for a detector whose input is the plain decoded image (an open_clip probe
    without a canonical re-encode, which needs PIL); None when the GPU path does not apply."""
    if (getattr(detector, "input_reencode", "n/a") is not None or getattr(detector, "input_side", None)
            or getattr(detector.backbone, "kind", "") != "open_clip"):
        return None
    # both modes' Compose carry the CenterCrop and the Normalize the device transform reads
    return DeviceTransform.from_transform(detector.loaded_backbone().preprocess, detector.backbone.preprocess, device)


def gpu_plan(settings: Any, detector: Any) -> DeviceTransform | None:
    """The GPU input path for this stage, or None (no CUDA backbone, ``gpu_decode`` off, or a detector
    whose input view needs PIL)."""
    if not getattr(settings, "gpu_decode", False) or not hasattr(detector, "loaded_backbone"):
        return None
    try:
        device = detector.loaded_backbone().device
    except Exception:  # noqa: BLE001 - a detector without an open_clip backbone
        return None
    if not str(device).startswith("cuda"):
        return None
    return device_transform_for(detector, str(device))


def pin_if_cuda(tensors: Any, device: str | None) -> Any:
    """Page-locked host memory for a CPU-prepared batch bound for CUDA (the copy then runs async)."""
    import torch

    # torch tensors only: other backbones hand over numpy arrays (onnxruntime) or lists (dlib chips)
    if isinstance(tensors, torch.Tensor) and torch.cuda.is_available() and (device is None or str(device).startswith("cuda")):
        return tensors.pin_memory()
    return tensors


def pil_reference(datas: Sequence[bytes], transform: Any) -> Any:
    """The CPU path's tensors for the same files (decode_image + the PIL transform): the tests' reference."""
    import torch

    from pipeline.images.acquire import decode_image

    return torch.stack([transform(decode_image(d)[1]) for d in datas])

