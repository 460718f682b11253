"""The clip-vit-b16 backbone (OpenAI CLIP ViT-B/16 image tower, INT8 ONNX, onnxruntime): its preprocessing is
open_clip's, its id names the file and the route, and an image's embedding is its own whatever it is batched
with (the graph is dynamically quantised: batched together, images changed each other's embeddings)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from detectors.backbones import parse_backbone
from detectors.model_artifacts import ARTIFACTS
from detectors.onnx_clip import FEATURES, OnnxClipLoadError, clip_pixels


@pytest.fixture(scope="module")
def faces() -> list[Image.Image]:
    import skimage.data

    astronaut = Image.fromarray(skimage.data.astronaut())
    return [astronaut.crop((130, 30, 320, 220)), astronaut.resize((300, 200)), Image.fromarray(skimage.data.chelsea()),
            Image.new("RGB", (96, 80), (120, 130, 140))]


def test_the_id_names_the_pinned_file_the_feature_and_the_route():
    spec = parse_backbone("clip-vit-b16")
    sha = ARTIFACTS["clip-vit-b16"].member_sha256
    assert spec.weights_sha256 == sha and spec.feature == "cls"
    assert spec.id == f"clip-vit-b16/int8-onnx-sha256-{sha[:16]}/cls768-l2/resize_center_crop/onnxruntime"
    assert parse_backbone("clip-vit-b16", feature="embeds").id.split("/")[2] == "embeds512-l2"
    with pytest.raises(ValueError, match="feature must be one of"):
        parse_backbone("clip-vit-b16", feature="pooler")


def test_preprocessing_is_open_clip_s_vit_b16_transform(faces):
    import open_clip

    _, _, transform = open_clip.create_model_and_transforms("ViT-B-16", pretrained=None)
    ours = clip_pixels(faces)
    theirs = np.stack([transform(im).numpy() for im in faces])
    assert ours.shape == theirs.shape == (len(faces), 3, 224, 224)
    assert np.abs(ours - theirs).max() < 0.02  # PIL's bicubic in both; ToTensor/Normalize order only


def test_an_image_embeds_the_same_alone_and_in_any_batch(faces):
    backbone = parse_backbone("clip-vit-b16").load()
    pixels = backbone.tensors(faces)
    together = backbone.features(pixels)
    for i in range(len(faces)):
        alone = backbone.features(pixels[i:i + 1])
        for name, dim in FEATURES.items():
            assert together[name].shape == (len(faces), dim)
            np.testing.assert_array_equal(alone[name][0], together[name][i])
    reversed_ = backbone.embed_tensors(pixels[::-1])
    np.testing.assert_array_equal(reversed_[::-1], backbone.embed_tensors(pixels))
    assert np.allclose(np.linalg.norm(together["cls"], axis=1), 1.0, atol=1e-5)


def test_a_detector_naming_another_onnx_file_is_one_clear_error(faces):
    spec = replace(parse_backbone("clip-vit-b16"), weights_sha256="0" * 64)
    with pytest.raises(OnnxClipLoadError, match="does not pin") as info:
        spec.load().embed(faces[:1])
    assert "\n" not in str(info.value)
