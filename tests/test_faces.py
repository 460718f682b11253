"""The face detector: dlib 5-point landmarks (Haar cascades only as a fallback), Ricker et al.'s
usable-face pre-filter and the GAN eye-alignment test of Yang, Singh and Menczer, on a real photograph
that scikit-image ships and, where present, on the shared real and StyleGAN faces."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import SHARED_DATA
from PIL import Image

from detectors import REGISTRY, detector_from_saved
from detectors.faces import ALIGNMENT_THRESHOLD, MIN_EYE_DISTANCE, STYLEGAN_EYES, FaceDetector, eye_alignment_distance

FACES = SHARED_DATA / "faces"

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


@pytest.fixture(params=["dlib", "haar"])
def landmarks(request) -> str:
    return request.param


def test_dlib_is_the_default_and_says_so():
    detector = FaceDetector()
    assert detector.landmarks == "dlib" and detector.fallback_reason is None
    assert set(detector.models) == {"shape_predictor_5_face_landmarks.dat"}
    assert FaceDetector(landmarks="haar").id != detector.id  # the landmark source is part of the identity


def test_haar_is_the_fallback_when_dlib_cannot_load_and_details_say_so(tmp_path, astronaut):
    detector = FaceDetector(model_folder=tmp_path)  # no shape predictor there
    assert detector.landmarks == "haar" and "not found" in detector.fallback_reason
    assert detector.id == FaceDetector(landmarks="haar").id
    details = detector.analyze_one(astronaut).details
    assert details["landmarks"].startswith("opencv haar cascades (fallback: dlib model file")


def test_real_photograph_has_one_face_and_unaligned_eyes(astronaut, landmarks):
    signal = FaceDetector(landmarks=landmarks).analyze_one(astronaut)
    assert signal.face_count == 1
    found = [(x * 512, y * 512) for x, y in signal.details["eyes"]]
    for (fx, fy), (ex, ey) in zip(found, ASTRONAUT_EYES):
        assert abs(fx - ex) < 8 and abs(fy - ey) < 8  # the eyes found are the astronaut's eyes
    assert signal.eye_alignment_distance > 0.1 and signal.gan_eye_aligned is False
    # the eyes are 44 px apart in a 512 px photograph: below Ricker et al.'s 0.1 of the width
    assert signal.usable_face is False and signal.details["eye_distance"] < MIN_EYE_DISTANCE


def test_photo_warped_to_stylegan_eye_positions_is_aligned(astronaut, landmarks):
    warped = warp_eyes_to(astronaut, ASTRONAUT_EYES, STYLEGAN_EYES)
    signal = FaceDetector(landmarks=landmarks).analyze_one(warped)
    assert signal.face_count == 1
    assert signal.eye_alignment_distance < ALIGNMENT_THRESHOLD and signal.gan_eye_aligned is True
    assert signal.usable_face is True  # the warp puts the eyes 0.23 of the width apart
    (score,) = FaceDetector(landmarks=landmarks).score([warped])
    assert score.label and "from StyleGAN's positions" in score.reason


def test_same_face_with_eyes_elsewhere_is_not_aligned(astronaut, landmarks):
    shifted = ((STYLEGAN_EYES[0][0] - 0.06, STYLEGAN_EYES[0][1] + 0.08), (STYLEGAN_EYES[1][0] - 0.06, STYLEGAN_EYES[1][1] + 0.08))
    signal = FaceDetector(landmarks=landmarks).analyze_one(warp_eyes_to(astronaut, ASTRONAUT_EYES, shifted))
    assert signal.face_count == 1 and signal.gan_eye_aligned is False
    assert signal.eye_alignment_distance > ALIGNMENT_THRESHOLD


def test_no_face_gives_null_distance(landmarks):
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 255, (200, 200, 3), dtype=np.uint8))
    for image in (Image.new("RGB", (200, 200), (120, 130, 140)), noise, Image.new("RGB", (3, 2))):
        signal = FaceDetector(landmarks=landmarks).analyze_one(image)
        assert signal.face_count == 0 and signal.eye_alignment_distance is None and signal.gan_eye_aligned is None
        assert signal.usable_face is None


def test_two_faces_are_counted(astronaut, landmarks):
    pair = Image.new("RGB", (1024, 512))
    pair.paste(astronaut, (0, 0))
    pair.paste(astronaut, (512, 0))
    assert FaceDetector(landmarks=landmarks, max_side=1024).analyze_one(pair).face_count == 2


def test_registered_and_saved_form_round_trips(landmarks):
    detector = FaceDetector(landmarks=landmarks)
    assert REGISTRY["faces"] is FaceDetector
    again = detector_from_saved(detector.saved_form())
    assert again.id == detector.id and again.to_spec() == detector.to_spec()
    spec = detector.to_spec()
    spec["models"] = {k: "0" * 64 for k in spec["models"]}
    with pytest.raises(ValueError, match="face models differ"):
        FaceDetector.from_spec(spec)
    with pytest.raises(ValueError, match="landmarks must be one of"):
        FaceDetector(landmarks="mtcnn")


def test_version_1_saved_form_is_refused_before_it_is_read():
    old = {"kind": "faces", "version": "1", "id": "faces-v1:0", "spec": {"cascades": {}, "scale_factor": 1.1}}
    with pytest.raises(ValueError, match="faces v1, this code reads v2"):
        detector_from_saved(old)


def _folder_rate(detector: FaceDetector, folder) -> tuple[float, int]:
    """Share of the folder's images the eye test flags (images with no face count as not flagged)."""
    files = sorted(p for p in folder.iterdir() if p.is_file())
    flagged = sum(bool(detector.analyze_one(Image.open(p)).gan_eye_aligned) for p in files)
    return flagged / len(files), len(files)


@pytest.mark.slow
@pytest.mark.skipif(not (FACES / "fake" / "tpdne_stylegan2_128").is_dir(), reason="shared faces absent")
def test_eye_test_flags_stylegan_faces_and_few_real_headshots():
    """Done-when of issue 11: >= 99% of the 1,500 StyleGAN2 faces, <= 5% of the 1,200 real web headshots.

    FFHQ is not used as negatives: it is aligned by the very procedure that defines StyleGAN's eye positions."""
    detector = FaceDetector()
    assert detector.landmarks == "dlib"
    fake, n_fake = _folder_rate(detector, FACES / "fake" / "tpdne_stylegan2_128")
    real, n_real = _folder_rate(detector, FACES / "real" / "kaggle_human_faces160")
    print(f"eye test at {detector.threshold}: StyleGAN {fake:.4f} of {n_fake}, web headshots {real:.4f} of {n_real}")
    assert n_fake >= 1000 and n_real >= 1000
    assert fake >= 0.99 and real <= 0.05


@pytest.mark.skipif(not (FACES / "fake" / "tpdne_stylegan2_128").is_dir(), reason="shared faces absent")
def test_haar_misses_stylegan_eyes_that_dlib_finds():
    """Why dlib: on the same 60 StyleGAN faces the Haar fallback finds both eyes less often."""
    files = sorted((FACES / "fake" / "tpdne_stylegan2_128").iterdir())[:60]
    found = {name: sum(FaceDetector(landmarks=name).analyze_one(Image.open(p)).eye_alignment_distance is not None
                       for p in files) for name in ("dlib", "haar")}
    print("faces with both eyes found, of 60 StyleGAN faces:", found)
    assert found["dlib"] >= 59 and found["haar"] < found["dlib"]


def test_opencv_is_a_4x_build_with_cascades():
    import cv2

    assert int(cv2.__version__.split(".")[0]) == 4
