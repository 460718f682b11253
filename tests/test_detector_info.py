"""What the summary, the report and `flags --json` say about a run's detector (pipeline/reporting/detector_info.py):
its name and backbones, whether it is a real detector (a random-initialised backbone anywhere in it, a stack's
parts included, is not), whether it is the shipped one, and what was measured on it. No database here."""

from __future__ import annotations

import json
import re

import pytest

from detectors.avatar_stack import AvatarStack
from detectors.backbones import parse_backbone
from detectors.clip_probe import ClipProbe, FaceProbe
from detectors.face_backbone import DESCRIPTOR_DIM
from detectors.faces import FaceDetector
from detectors.onnx_clip import FEATURES
from pipeline.reporting.detector_info import (NOT_REAL_CAVEAT, detector_info, label_text, parts_text,
                                              rates_text)

METRICS = {"test_roc_auc": 0.97, "test_tpr_at_threshold": 0.9, "test_fpr_at_threshold": 0.01,
           "test_tpr_by_generator": {"stylegan2": 0.98, "sdxl": 0.81},
           "test_fpr_by_real_source": {"ffhq": 0.008, "london": 0.012}}
# the shape bench/detector_real_faces.py --write-preset records: each part and the whole stack, rates per condition
PER_PART = {"command": "python bench/detector_real_faces.py --write-preset --feature cls",
            "on": "test split by image hash (clean, jpeg_q75, resize_0.5)",
            "clip-vit-b16 probe": {"tpr_by_generator": {"sdxl": {"clean": 0.5}}, "fpr_by_real_source": {}},
            "avatar stack": {"tpr_by_generator": {"sdxl": {"clean": 0.9, "jpeg_q75": 0.85, "left_out": 0.7}},
                             "fpr_by_real_source": {"ffhq": {"clean": 0.01, "jpeg_q75": 0.02, "left_out": 0.03}}}}


def _probe(cls, backbone, width: int, training: dict | None = None):
    return cls(backbone=backbone, weight=[0.01] * width, bias=0.1, threshold=0.6, training=training or {})


def _stack(clip: ClipProbe, training: dict | None = None) -> AvatarStack:
    return AvatarStack(clip=clip, face=_probe(FaceProbe, parse_backbone("dlib-face"), DESCRIPTOR_DIM), eye=FaceDetector(),
                       coef={"clip": 0.8, "face": 0.3, "no_face": -0.2, "eye_aligned": 2.5}, intercept=-1.0,
                       threshold=0.7, training=training or {"target_fpr": 0.01})


def _saved(detector) -> dict:
    return json.loads(json.dumps(detector.saved_form()))  # as stored in the detectors table


def test_a_random_backbone_probe_is_not_a_real_detector():
    backbone = parse_backbone("pa-tiny-vit", "random:0")
    saved = _saved(_probe(ClipProbe, backbone, 8))
    info = detector_info(saved)
    assert info["id"] == saved["id"] and info["kind"] == "clip_probe"
    assert info["name"] == "CLIP probe on pa-tiny-vit" and info["backbones"] == [backbone.id]
    assert info["real_detector"] is False and info["caveat"] == NOT_REAL_CAVEAT
    assert "not a real detector" in info["caveat"] and info["shipped"] is False
    assert info["measured"] == {"tpr_by_generator": {}, "fpr_by_real_source": {}}
    assert info["how_measured"] == "no measurement recorded with this detector"
    assert label_text(True, info) == "synthetic (not a real detector)"
    assert label_text(False, info) == "not labelled (not a real detector)" and label_text(None, info) == ""
    assert json.loads(json.dumps(info)) == info  # goes into the summary's JSON as is


def test_a_trained_probe_reports_its_test_rates_per_generator_and_real_source():
    backbone = parse_backbone("ViT-B-16", "openai")
    training = {"metrics": METRICS, "counts": {"test": {"real": 400, "fake": 380}}, "target_fpr": 0.01}
    info = detector_info(_saved(_probe(ClipProbe, backbone, 8, training)), run_params={"detector": "default"})
    assert info["real_detector"] is True and info["caveat"] is None and info["chosen"] == "promoted"
    assert info["backbones"] == ["ViT-B-16/openai/encode_image-l2/resize_center_crop"]
    assert info["measured"]["tpr_by_generator"] == {"sdxl": 0.81, "stylegan2": 0.98}
    assert info["measured"]["fpr_by_real_source"] == {"ffhq": 0.008, "london": 0.012}
    assert info["measured"]["overall"] == {"tpr": 0.9, "fpr": 0.01}
    assert info["how_measured"] == ("on the held-out test split of its training images (400 real, 380 generated)"
                                    " at its threshold 0.600")
    assert rates_text(info["measured"]["tpr_by_generator"]) == "sdxl 0.81, stylegan2 0.98"
    assert rates_text({}) == "none recorded"
    assert label_text(True, info) == "synthetic"
    assert detector_info(_saved(_probe(ClipProbe, backbone, 8)), run_params={"detector": "x.json"})["chosen"] == "named x.json"


@pytest.fixture(scope="module")
def clip_b16():
    return parse_backbone("clip-vit-b16")  # the ONNX file from the model cache (sha256-checked)


def test_an_avatar_stack_names_every_part_s_backbone_and_its_own_measurement(clip_b16):
    stack = _stack(_probe(ClipProbe, clip_b16, FEATURES["cls"]), {"target_fpr": 0.01, "measured": PER_PART})
    info = detector_info(_saved(stack), run_params={"detector": "default"})
    assert info["kind"] == "avatar_stack" and info["name"].startswith("avatar stack (CLIP probe + dlib face probe")
    assert info["backbones"] == [clip_b16.id, stack.face.backbone.id] and info["real_detector"] is True
    # the whole stack's figures, not a part's; single figures are the clean ones, every condition is kept
    assert info["measured"]["tpr_by_generator"] == {"sdxl": 0.9}
    assert info["measured"]["fpr_by_real_source"] == {"ffhq": 0.01}
    assert info["measured"]["by_condition"]["tpr_by_generator"]["sdxl"] == {"clean": 0.9, "jpeg_q75": 0.85,
                                                                            "left_out": 0.7}
    assert info["how_measured"].startswith("test split by image hash") and "at its threshold 0.700" in info["how_measured"]
    assert "`python bench/detector_real_faces.py --write-preset --feature cls`" in info["how_measured"]
    # a flat record (one table for the whole detector) reads the same
    flat = {"tpr_by_generator": {"sdxl": 0.9}, "fpr_by_real_source": {"ffhq": 0.01}, "command": "make it"}
    again = detector_info(_saved(_stack(stack.clip, {"measured": flat})))
    assert again["measured"] == {"tpr_by_generator": {"sdxl": 0.9}, "fpr_by_real_source": {"ffhq": 0.01}}
    assert again["how_measured"].endswith("made by `make it`")


def test_a_stack_with_a_random_clip_part_is_not_a_real_detector():
    stack = _stack(_probe(ClipProbe, parse_backbone("pa-tiny-vit", "random:0"), 8))
    info = detector_info(_saved(stack))
    assert info["real_detector"] is False and info["caveat"] == NOT_REAL_CAVEAT
    assert info["backbones"][0] == "pa-tiny-vit/random-0/encode_image-l2/resize_center_crop"


def test_the_shipped_detector_is_named_as_such(clip_b16, tmp_path, monkeypatch):
    import detectors.presets as presets

    saved = _saved(_stack(_probe(ClipProbe, clip_b16, FEATURES["cls"])))
    (tmp_path / "avatar-faces-v1.json").write_text(json.dumps(saved))
    monkeypatch.setattr(presets, "shipped_detector_path", lambda name=presets.SHIPPED_DETECTOR: tmp_path / f"{name}.json")
    info = detector_info(saved, run_params={"detector": "shipped:avatar-faces-v1"})
    assert info["shipped"] is True and info["chosen"] == "shipped"
    assert info["name"].startswith("shipped avatar-faces-v1 (avatar stack")


def test_parts_text_shows_each_part_s_logit_contribution():
    assert parts_text({"clip": 3.1, "face": 0.4, "eye": 2.2, "bias": -1.0}) == "CLIP +3.10, face +0.40, eye +2.20"
    assert parts_text({"clip": -0.5, "face": 0, "eye": 0}) == "CLIP -0.50, face +0.00, eye +0.00"
    assert parts_text(None) == "" and parts_text({}) == ""


def _summary(info: dict | None, notes: list[str]) -> dict:
    return {"run_key": "r", "export_format": "generic", "detector_id": info and info["id"], "accounts": 3,
            "quarantined": 0, "avatars_stored": 3, "avatars_failed": 0, "distinct_images": 3, "synthetic_avatars": 1,
            "edges": {}, "clusters": 0, "flags": 0, "warnings": [], "notes": notes, "detector": info}


def test_the_summary_prints_the_detector_its_notes_caveat_and_measured_rates():
    from pipeline.reporting.summary import format_summary

    random_probe = _saved(_probe(ClipProbe, parse_backbone("pa-tiny-vit", "random:0"), 8, {"metrics": METRICS}))
    text = format_summary(_summary(detector_info(random_probe, {"detector": "shipped:avatar-faces-v1"}),
                                   ["no promoted detector: scored with the shipped one"]), [])
    lines = text.splitlines()
    assert "  NOTE no promoted detector: scored with the shipped one" in lines
    assert f"  WARNING {NOT_REAL_CAVEAT}" in lines
    assert "  detector CLIP probe on pa-tiny-vit (clip_probe, shipped)" in lines
    assert "    measured TPR by generator: sdxl 0.81, stylegan2 0.98" in lines
    assert "    measured FPR by real source: ffhq 0.01, london 0.01" in lines
    real = detector_info(_saved(_probe(ClipProbe, parse_backbone("ViT-B-16", "openai"), 8,
                                       {"metrics": {"test_tpr_at_threshold": 0.9, "test_fpr_at_threshold": 0.01}})))
    text = format_summary(_summary(real, []), [])
    assert "WARNING" not in text and "NOTE" not in text and "    measured TPR 0.90, FPR 0.01" in text.splitlines()
    assert "detector" not in format_summary(_summary(None, []), []).split("\n", 1)[1]


def test_the_report_s_detector_section_and_member_rows_show_caveat_and_parts():
    from pipeline.reporting.html import detector_section, render_cluster_page

    probe = _saved(_probe(ClipProbe, parse_backbone("pa-tiny-vit", "random:0"), 8, {"metrics": METRICS}))
    info = detector_info(probe, {"detector": "<b>named</b>.json"})
    run = {"run_key": "r", "detector_id": info["id"], "detector_info": info,
           "params": {"notes": ["scored <i>by</i> the shipped detector"]}}
    section = detector_section(run)
    assert f'<p class="warn">Detector {info["id"]}: {NOT_REAL_CAVEAT}' in section
    assert "named &lt;b&gt;named&lt;/b&gt;.json" in section and "<b>named" not in section  # escaped
    assert "NOTE scored &lt;i&gt;by&lt;/i&gt; the shipped detector" in section
    assert re.search(r"<td>stylegan2</td><td class=\"num\">0\.980</td>", section)
    assert re.search(r"<td>london</td><td class=\"num\">0\.012</td>", section)
    assert "held-out test split" in section
    assert "No detector" in detector_section({"run_key": "r", "detector_id": None})

    member = {"account_key": "x:1", "account_id": "1", "handle": "h", "display_name": None, "created_at": None,
              "bio": None, "url": None, "avatar_sha256": "ab" * 32, "avatar_probability": 0.93, "avatar_label": True,
              "avatar_parts": {"clip": 3.1, "face": 0.4, "eye": 2.2, "bias": -1.0}, "storage_path": None,
              "risk": 0.5, "contributions": {"synthetic_avatar": 0.4}}
    cluster = {"run_key": "r", "cluster_id": "c1", "size": 1, "score": 0.5, "features": {}, "flag": None,
               "members": [member], "edges": []}
    page = render_cluster_page(None, run, cluster, with_index=False)
    assert page.count("synthetic (not a real detector)") == 3  # the tile, the graph's legend, the member row
    assert page.count("CLIP +3.10, face +0.40, eye +2.20") == 2
    assert "avatar labelled synthetic (not a real detector)" in page and '<p class="warn">' in page
    real = {**run, "detector_info": {**info, "real_detector": True, "caveat": None}}
    page = render_cluster_page(None, real, cluster, with_index=False)
    assert "not a real detector" not in page and '<span class="syn">synthetic</span>' in page
