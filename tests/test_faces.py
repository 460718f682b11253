"""The face detector: Haar-cascade faces and eyes (opencv-python-headless 4.x) and the GAN
eye-alignment test of Yang, Singh and Menczer, on a real photograph that scikit-image ships."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from detectors import REGISTRY, detector_from_saved
from detectors.faces import ALIGNMENT_THRESHOLD, STYLEGAN_EYES, FaceDetector, eye_alignment_distance

# the astronaut's eye centres, read off the 512 x 512 photograph by hand (x, y in pixels)
ASTRONAUT_EYES = ((202.0, 100.0), (246.0, 102.0))


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    import skimage.data

    return Image.fromarray(skimage.data.astronaut())


def warp_eyes_to(image: Image.Image, eyes, targets, size: int = 256) -> Image.Image:
    """A similarity transform (rotation, scale, shift) that carries the two eye centres onto targets."""
    import cv2

    src = np.array(eyes, dtype=np.float32)
    dst = np.array([(x * size, y * size) for x, y in targets], dtype=np.float32)
    matrix, _ = cv2.estimateAffinePartial2D(src, dst)
    return Image.fromarray(cv2.warpAffine(np.asarray(image), matrix, (size, size), flags=cv2.INTER_LINEAR,
                                          borderMode=cv2.BORDER_REFLECT))


def test_distance_formula():
    assert eye_alignment_distance(*STYLEGAN_EYES) == 0.0
    # one eye off by 0.05 horizontally: 0.05 / (2 sqrt 2)
    moved = ((STYLEGAN_EYES[0][0] + 0.05, STYLEGAN_EYES[0][1]), STYLEGAN_EYES[1])
    assert eye_alignment_distance(*moved) == pytest.approx(0.05 / (2 * math.sqrt(2)))
    assert eye_alignment_distance((0.0, 0.0), (1.0, 1.0)) <= 1.0


def test_real_photograph_has_one_face_and_unaligned_eyes(astronaut):
    signal = FaceDetector().analyze_one(astronaut)
    assert signal.face_count == 1
    found = [(x * 512, y * 512) for x, y in signal.details["eyes"]]
    for (fx, fy), (ex, ey) in zip(found, ASTRONAUT_EYES):
        assert abs(fx - ex) < 8 and abs(fy - ey) < 8  # the eyes found are the astronaut's eyes
    assert signal.eye_alignment_distance > 0.1 and signal.gan_eye_aligned is False


def test_photo_warped_to_stylegan_eye_positions_is_aligned(astronaut):
    warped = warp_eyes_to(astronaut, ASTRONAUT_EYES, STYLEGAN_EYES)
    signal = FaceDetector().analyze_one(warped)
    assert signal.face_count == 1
    assert signal.eye_alignment_distance < ALIGNMENT_THRESHOLD and signal.gan_eye_aligned is True
    (score,) = FaceDetector().score([warped])
    assert score.label and "from StyleGAN's positions" in score.reason


def test_same_face_with_eyes_elsewhere_is_not_aligned(astronaut):
    shifted = ((STYLEGAN_EYES[0][0] - 0.06, STYLEGAN_EYES[0][1] + 0.08), (STYLEGAN_EYES[1][0] - 0.06, STYLEGAN_EYES[1][1] + 0.08))
    signal = FaceDetector().analyze_one(warp_eyes_to(astronaut, ASTRONAUT_EYES, shifted))
    assert signal.face_count == 1 and signal.gan_eye_aligned is False
    assert signal.eye_alignment_distance > ALIGNMENT_THRESHOLD


def test_no_face_gives_null_distance():
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 255, (200, 200, 3), dtype=np.uint8))
    for image in (Image.new("RGB", (200, 200), (120, 130, 140)), noise):
        signal = FaceDetector().analyze_one(image)
        assert signal.face_count == 0 and signal.eye_alignment_distance is None and signal.gan_eye_aligned is None


def test_two_faces_are_counted(astronaut):
    pair = Image.new("RGB", (1024, 512))
    pair.paste(astronaut, (0, 0))
    pair.paste(astronaut, (512, 0))
    assert FaceDetector(max_side=1024).analyze_one(pair).face_count == 2


def test_registered_and_saved_form_round_trips():
    detector = FaceDetector()
    assert REGISTRY["faces"] is FaceDetector
    again = detector_from_saved(detector.saved_form())
    assert again.id == detector.id and again.to_spec() == detector.to_spec()
    spec = detector.to_spec()
    spec["cascades"] = {k: "0" * 64 for k in spec["cascades"]}
    with pytest.raises(ValueError, match="cascades differ"):
        FaceDetector.from_spec(spec)


def test_opencv_is_a_4x_build_with_cascades():
    import cv2

    assert int(cv2.__version__.split(".")[0]) == 4
