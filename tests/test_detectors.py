"""The detector interface, backbones (random, local checkpoint file, pretrained tags) and the probe.

Tests with the tiny random-initialised backbone validate the machinery (embedding, fitting,
calibration, thresholds, saved forms). They say nothing about detecting real generators.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from detectors import REGISTRY, detector_from_saved, read_detector_file, save_detector
from detectors.backbone import BackboneLoadError, BackboneSpec, load_backbone
from detectors.clip_probe import DEFAULT_REENCODE_QUALITY, ClipProbe, reencode_jpeg, split_of, threshold_at_fpr
from pipeline.testing.demo import draw_face, encode

TINY = BackboneSpec.parse("pa-tiny-vit", "random:0")


def test_registry_has_the_clip_probe():
    assert REGISTRY["clip_probe"] is ClipProbe


@pytest.mark.slow
def test_saved_form_round_trips(demo_data, tmp_path):
    probe = demo_data["probe"]
    path = save_detector(probe, tmp_path / "p.json")
    again = read_detector_file(path)
    assert again.id == probe.id and again.to_spec() == probe.to_spec()
    images = [Image.open(p).convert("RGB") for p in sorted(demo_data["fake"].rglob("*.png"))[:4]]
    assert [s.probability for s in again.score(images)] == [s.probability for s in probe.score(images)]


@pytest.mark.slow
def test_tampered_or_foreign_saved_forms_are_refused(demo_data):
    saved = demo_data["probe"].saved_form()
    tampered = json.loads(json.dumps(saved))
    tampered["spec"]["bias"] += 1.0
    with pytest.raises(ValueError, match="does not match its content"):
        detector_from_saved(tampered)
    with pytest.raises(ValueError, match="unknown detector kind"):
        detector_from_saved({**saved, "kind": "magic"})
    with pytest.raises(ValueError, match="this code reads v1"):
        detector_from_saved({**saved, "version": "0"})


def test_backbone_ids_name_model_weights_features_and_preprocessing():
    assert TINY.id == "pa-tiny-vit/random-0/encode_image-l2/resize_center_crop"
    tag = BackboneSpec.parse("ViT-L-14", "openai", normalize=False, preprocess="center_crop")
    assert tag.id == "ViT-L-14/openai/encode_image/center_crop"
    with pytest.raises(ValueError, match="preprocess must be one of"):
        BackboneSpec.parse("ViT-L-14", "openai", preprocess="stretch")


def test_local_checkpoint_file_loads_the_same_weights(tmp_path):
    """The air-gapped path: a checkpoint file written here loads through open_clip's pretrained=."""
    from safetensors.torch import save_file

    source = load_backbone(BackboneSpec.parse("pa-tiny-vit", "random:3"))
    path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in source.model.state_dict().items()}, str(path))
    spec = BackboneSpec.parse("pa-tiny-vit", str(path))
    assert spec.weights == f"file:{path}" and spec.id.startswith("pa-tiny-vit/sha256-")
    images = [Image.fromarray(draw_face(np.random.default_rng(i)).clip(0, 255).astype(np.uint8)) for i in range(3)]
    np.testing.assert_allclose(load_backbone(spec).embed(images), source.embed(images), rtol=1e-5, atol=1e-6)
    other = load_backbone(BackboneSpec.parse("pa-tiny-vit", "random:4")).embed(images)
    assert not np.allclose(other, source.embed(images))

    path.write_bytes(path.read_bytes()[:-8] + b"\x00" * 8)
    from detectors.backbone import Backbone

    with pytest.raises(BackboneLoadError, match="does not match the recorded sha256"):
        Backbone(spec)


def test_missing_checkpoint_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        BackboneSpec.parse("pa-tiny-vit", str(tmp_path / "none.safetensors"))


def test_center_crop_preprocessing_does_not_resize():
    backbone = load_backbone(BackboneSpec.parse("pa-tiny-vit", "random:0", preprocess="center_crop"))
    arr = np.zeros((300, 300, 3), dtype=np.uint8)
    arr[38:262, 38:262] = 255  # exactly the central 224 x 224
    tensor = backbone.tensors([Image.fromarray(arr)])[0]
    assert tensor.shape == (3, 224, 224)
    for channel in tensor:  # all white: nothing of the black border survives the crop
        assert float(channel.min()) == pytest.approx(float(channel.max()))


def test_threshold_at_fpr():
    reals = np.linspace(0, 0.99, 100)
    t = threshold_at_fpr(reals, 0.05)
    assert (reals >= t).mean() <= 0.05 and (reals >= np.nextafter(t, -1) - 0.0101).mean() > 0.05
    assert threshold_at_fpr(reals, 0.0) > reals.max()


def test_split_is_by_hash_and_stable():
    import hashlib

    shas = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(2000)]
    splits = [split_of(s) for s in shas]
    assert splits == [split_of(s) for s in shas]
    assert abs(splits.count("train") / 2000 - 0.6) < 0.05 and abs(splits.count("test") / 2000 - 0.2) < 0.05


@pytest.mark.slow
def test_probe_machinery_separates_the_demo_trace(demo_data):
    """Machinery only: the demo 'generator' is a synthetic trace the tiny backbone can see."""
    metrics = demo_data["probe"].training["metrics"]
    assert metrics["test_roc_auc"] >= 0.95
    assert metrics["test_fpr_at_threshold"] <= 0.05


def _blockiness(img: Image.Image) -> float:
    """JPEG's 8x8 grid: gradient energy on block borders relative to inside blocks."""
    g = np.asarray(img.convert("L"), dtype=np.float64)
    d = np.abs(np.diff(g, axis=1))
    border = d[:, 7::8].mean()
    inner = np.delete(d, np.s_[7::8], axis=1).mean()
    return border / inner


def test_reencode_rule_removes_the_format_difference_on_the_training_path():
    """Reals saved as JPEG and fakes as PNG differ in JPEG blocking; after the training path's
    re-encode both classes carry it alike, so the format cannot separate them."""
    import hashlib

    rng = np.random.default_rng(1)
    reals, fakes = [], []
    for _ in range(30):
        for fmt, bucket in (("JPEG", reals), ("PNG", fakes)):
            data = encode(draw_face(rng), fmt, quality=80)
            bucket.append((hashlib.sha256(data).hexdigest(), Image.open(io.BytesIO(data)).convert("RGB")))
    before = [np.mean([_blockiness(im) for _, im in group]) for group in (reals, fakes)]
    after = [np.mean([_blockiness(reencode_jpeg(im, sha, DEFAULT_REENCODE_QUALITY)) for sha, im in group]) for group in (reals, fakes)]
    assert before[0] - before[1] > 0.05  # the shortcut exists in the raw files
    assert abs(after[0] - after[1]) < abs(before[0] - before[1]) / 3  # and is mostly gone after the rule
    wide = [np.mean([_blockiness(reencode_jpeg(im, sha, (75, 100))) for sha, im in group]) for group in (reals, fakes)]
    assert abs(wide[0] - wide[1]) > abs(after[0] - after[1])  # why the default range stops at 80
