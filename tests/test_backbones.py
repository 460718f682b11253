"""Backbones: local-dir folders, identity, feature choice, device choice with CPU fallback, threads."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from detectors.backbone import MODEL_CONFIG_DIR, Backbone, BackboneLoadError, BackboneSpec, load_backbone
from pipeline.testing.demo import draw_face


def _images(n=3):
    rng = np.random.default_rng(1)
    return [Image.fromarray(draw_face(rng).clip(0, 255).astype(np.uint8)) for _ in range(n)]


@pytest.fixture
def local_dir(tmp_path):
    """A folder as open_clip's local-dir: schema reads it: open_clip_config.json plus a checkpoint."""
    from safetensors.torch import save_file

    source = load_backbone(BackboneSpec.parse("pa-tiny-vit", "random:5"))
    folder = tmp_path / "tiny-model"
    folder.mkdir()
    config = json.loads((MODEL_CONFIG_DIR / "pa-tiny-vit.json").read_text())
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": config, "preprocess_cfg": {}}))
    save_file({k: v.contiguous() for k, v in source.model.state_dict().items()},
              str(folder / "open_clip_model.safetensors"))
    return folder, source


def test_local_dir_loads_the_folder_weights_and_names_them_by_hash(local_dir, tmp_path):
    folder, source = local_dir
    spec = BackboneSpec.parse("tiny-from-dir", f"local-dir:{folder}")
    assert spec.id.startswith("tiny-from-dir/local-dir-sha256-") and spec.id.endswith("/encode_image-l2/resize_center_crop")
    images = _images()
    np.testing.assert_allclose(load_backbone(spec).embed(images), source.embed(images), rtol=1e-5, atol=1e-6)
    moved = tmp_path / "elsewhere"
    shutil.copytree(folder, moved)
    assert BackboneSpec.parse("tiny-from-dir", f"local-dir:{moved}").id == spec.id  # content, not path

    checkpoint = folder / "open_clip_model.safetensors"
    checkpoint.write_bytes(checkpoint.read_bytes()[:-8] + b"\x01" * 8)
    with pytest.raises(BackboneLoadError, match="does not match the recorded sha256"):
        Backbone(spec)


def test_local_dir_mistakes(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        BackboneSpec.parse("m", f"local-dir:{tmp_path / 'none'}")
    with pytest.raises(FileNotFoundError, match="no open_clip_config.json"):
        BackboneSpec.parse("m", f"local-dir:{tmp_path}")


def test_feature_choice_normalised_or_not():
    images = _images()
    raw = load_backbone(BackboneSpec.parse("pa-tiny-vit", "random:0", normalize=False)).embed(images)
    l2 = load_backbone(BackboneSpec.parse("pa-tiny-vit", "random:0")).embed(images)
    np.testing.assert_allclose(np.linalg.norm(l2, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), l2, rtol=1e-4, atol=1e-6)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)


def test_cpu_runs_fp32_and_threads_are_set():
    import torch

    before = torch.get_num_threads()
    try:
        backbone = load_backbone(BackboneSpec.parse("pa-tiny-vit", "random:0"), torch_threads=1, device="cpu")
        assert torch.get_num_threads() == 1
        assert backbone.device == "cpu" and backbone.precision == "fp32"
        assert next(backbone.model.parameters()).dtype == torch.float32
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a GPU is present: the fallback is not reachable")
def test_auto_device_falls_back_to_the_cpu_when_cuda_cannot_start(monkeypatch):
    """On this CPU-only machine, pretend torch reports a GPU: the real CUDA initialisation then fails,
    and an auto-selected device must fall back to the CPU. An explicit --device cuda must not."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    spec = BackboneSpec.parse("pa-tiny-vit", "random:0")
    backbone = Backbone(spec)
    assert backbone.device == "cpu" and backbone.precision == "fp32"
    assert backbone.embed(_images(1)).shape == (1, 64)
    with pytest.raises((RuntimeError, AssertionError)):
        Backbone(spec, device="cuda")


def test_embed_equals_preprocess_then_embed_tensors():
    backbone = load_backbone(BackboneSpec.parse("pa-tiny-vit", "random:0"))
    images = _images(5)
    before = backbone.forward_passes
    np.testing.assert_array_equal(backbone.embed(images), backbone.embed_tensors(backbone.tensors(images)))
    assert backbone.forward_passes - before == 10


def test_fp16_model_gets_fp16_input_even_when_its_first_parameter_is_fp32():
    """open_clip's fp16 (our CUDA setting) casts only conv/linear/attention weights, so the model's first
    parameter stays fp32. Found on an H100: inputs cast to that dtype met fp16 conv weights and failed.
    Reproduced on the CPU, where torch runs fp16 convolutions too."""
    import open_clip
    import torch

    backbone = Backbone(BackboneSpec.parse("pa-tiny-vit", "random:0"), device="cpu")
    fp16 = open_clip.create_model("pa-tiny-vit", precision="fp16", device="cpu").eval()
    assert next(fp16.parameters()).dtype == torch.float32 and fp16.visual.conv1.weight.dtype == torch.float16
    backbone.model, backbone.precision = fp16, "fp16"
    features = backbone.embed(_images(2))
    assert features.shape == (2, backbone.embed_dim) and features.dtype == np.float32 and np.isfinite(features).all()
