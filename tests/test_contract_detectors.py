"""The contract every registered detector kind keeps: its saved form round-trips to the same id and
scores, the id changes with its content, a tampered or foreign saved form is refused, and ``score``
gives one ImageScore per image (a probability in [0, 1], or None with a reason where the detector
cannot score the image). Embedding detectors also split into preprocess / embed / score_embeddings."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from PIL import Image

from detectors import DETECTORS, EmbeddingDetector, detector_from_saved, register
from detectors.avatar_stack import AvatarStack
from detectors.backbones import parse_backbone
from detectors.clip_probe import ClipProbe, FaceProbe
from detectors.faces import FaceDetector


def _probe(cls, backbone, seed: int):
    dim = backbone.load().embed_dim
    weight = np.random.default_rng(seed).normal(size=dim).tolist()
    return cls(backbone=backbone, weight=weight, bias=0.1, platt_a=2.0, platt_b=-0.5, threshold=0.6,
               input_reencode=(50, 80), training={"target_fpr": 0.01})


# one example per registered kind; a new kind must add one here, or the coverage test fails
EXAMPLES = {
    "clip_probe": lambda: _probe(ClipProbe, parse_backbone("pa-tiny-vit", "random:0"), 0),
    "face_probe": lambda: _probe(FaceProbe, parse_backbone("dlib-face"), 1),
    "faces": lambda: FaceDetector(),
    "avatar_stack": lambda: AvatarStack(clip=_probe(ClipProbe, parse_backbone("clip-vit-b16"), 2),
                                        face=_probe(FaceProbe, parse_backbone("dlib-face"), 3), eye=FaceDetector(),
                                        coef={"clip": 0.8, "face": 0.3, "no_face": -0.2, "eye_aligned": 2.5},
                                        intercept=-1.0, threshold=0.7, training={"target_fpr": 0.01}),
}


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    import skimage.data

    face = Image.fromarray(skimage.data.astronaut()).crop((130, 30, 320, 220)).resize((160, 160))
    return [face, Image.new("RGB", (96, 80), (120, 130, 140)), face.rotate(8)]


def test_every_registered_detector_has_a_contract_example():
    assert set(EXAMPLES) == set(DETECTORS.names())


def test_a_duplicate_detector_kind_is_an_error_not_an_overwrite():
    class Impostor(FaceDetector):
        pass

    with pytest.raises(ValueError, match="already registered"):
        register(Impostor)
    assert DETECTORS["faces"] is FaceDetector


@pytest.mark.parametrize("kind", DETECTORS.names())
def test_detector_contract(kind, images):
    detector = EXAMPLES[kind]()
    assert detector.kind == kind and DETECTORS[kind] is type(detector)
    saved = json.loads(json.dumps(detector.saved_form()))  # JSON-serialisable
    again = detector_from_saved(saved)
    assert again.id == detector.id == EXAMPLES[kind]().id and again.id.startswith(f"{kind}-v{detector.version}:")
    assert again.to_spec() == detector.to_spec()

    scores = detector.score(images)
    assert len(scores) == len(images)
    for s in scores:
        assert isinstance(s.label, bool) and isinstance(s.reason, str) and s.reason
        assert s.probability is None or 0.0 <= s.probability <= 1.0
        assert not (s.probability is None and s.label)
    assert [(s.probability, s.label) for s in again.score(images)] == [(s.probability, s.label) for s in scores]

    if isinstance(detector, EmbeddingDetector):
        vectors = detector.embed(images)
        np.testing.assert_allclose(detector.embed_preprocessed(detector.preprocess(images)), vectors, rtol=1e-5, atol=1e-6)
        assert [s.probability for s in detector.score_embeddings(vectors)] == [s.probability for s in scores]
        assert isinstance(detector.backbone_id, str)
        parts = [detector] if hasattr(detector, "backbone") else [detector.clip, detector.face]  # a stack's parts
        assert all(p.backbone.id in detector.backbone_id for p in parts)

    changed = copy.deepcopy(saved)
    changed["spec"]["threshold"] = 0.0123
    assert detector_from_saved({**changed, "id": None}).id != detector.id  # content makes the id
    with pytest.raises(ValueError, match="does not match its content"):
        detector_from_saved(changed)
    with pytest.raises(ValueError, match="this code reads"):
        detector_from_saved({**saved, "version": "999"})


def test_a_probe_kind_holds_only_its_backbone_kind():
    face = EXAMPLES["face_probe"]().saved_form()
    with pytest.raises(ValueError, match="cannot hold a dlib-face backbone"):
        ClipProbe.from_spec(face["spec"])


def test_face_probe_gives_no_score_without_a_face_and_says_why(images):
    (_, blank, _) = EXAMPLES["face_probe"]().score(images)
    assert blank.probability is None and not blank.label and blank.reason == "no dlib-face score: no face found"


def test_the_docs_table_lists_every_registered_detector_kind():
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "detectors.md").read_text(encoding="utf-8")
    assert all(f"| `{name}` |" in text for name in DETECTORS.names())


def test_a_stack_keeps_each_part_s_contribution_and_refuses_a_wrong_part(images):
    stack = EXAMPLES["avatar_stack"]()
    scores = stack.score(images)
    for s in scores:
        assert set(s.parts) == {"clip", "face", "eye", "bias"}
        logit = sum(s.parts.values())
        assert s.probability == pytest.approx(1 / (1 + np.exp(-logit)), abs=2e-3)  # parts rounded to 3 places
        assert "CLIP probe" in s.reason and "eye test" in s.reason
    assert scores[1].parts["face"] == pytest.approx(-0.2)  # the blank image: no face, the no-face term alone
    saved = stack.saved_form()
    swapped = copy.deepcopy(saved["spec"])
    swapped["face"] = saved["spec"]["clip"]
    with pytest.raises(ValueError, match="face part must be a face_probe"):
        AvatarStack.from_spec(swapped)
