"""Backbone kinds, registered by name: what a linear probe's frozen features come from.

- ``open_clip``: an open_clip image tower (model + weights; ``detectors.backbone``), the production
  default for generated-image detection;
- ``dlib-face``: dlib's 128-d face descriptor (``detectors.face_backbone``), needs no weights argument;
- ``clip-vit-b16``: OpenAI CLIP ViT-B/16's image tower as INT8 ONNX, run by onnxruntime
  (``detectors.onnx_clip``): the pretrained CLIP that installs offline, the shipped detector's backbone.

A backbone spec is data: ``parse(model, weights, **options)``, ``to_dict``/``from_dict``, an ``id`` that
names everything that shapes its output (model files by sha256), and ``load()``, which returns an
object with ``embed_dim``, ``tensors(images)`` (the CPU half, run in worker threads),
``embed_tensors(batch)`` (an ``(n, embed_dim)`` float32 array; a NaN row means the backbone has no
embedding for that image) and ``embed(images)``. ``tests/test_contract_backbones.py`` checks every entry.
"""

from __future__ import annotations

from typing import Any

from detectors.backbone import BackboneSpec
from detectors.face_backbone import DlibFaceSpec
from detectors.onnx_clip import OnnxClipSpec
from pipeline.core.registry import Registry

BACKBONES: Registry[type] = Registry("backbone")
BACKBONES.register(BackboneSpec.kind, BackboneSpec)
BACKBONES.register(DlibFaceSpec.kind, DlibFaceSpec)
BACKBONES.register(OnnxClipSpec.kind, OnnxClipSpec)
DEFAULT_KIND = BackboneSpec.kind


def backbone_from_dict(data: dict[str, Any]) -> Any:
    """A saved backbone spec; open_clip specs predate the ``kind`` key, so its absence means open_clip."""
    return BACKBONES.get(data.get("kind", DEFAULT_KIND)).from_dict(data)


def parse_backbone(model: str, weights: str | None = None, **options: Any) -> Any:
    """``--model dlib-face`` (any registered kind name other than open_clip) picks that kind; any other
    model name is an open_clip model, with ``weights`` defaulting to ``random:0`` (tests and the demo)."""
    if model in BACKBONES and model != DEFAULT_KIND:
        return BACKBONES.get(model).parse(model, weights, **options)
    return BackboneSpec.parse(model, weights or "random:0", **options)
