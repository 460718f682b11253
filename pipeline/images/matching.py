"""Is it the same picture? A local-feature match between two images: ORB keypoints, Lowe's ratio test,
then a RANSAC similarity transform (rotation, uniform scale, shift); the count of keypoint pairs that
one transform explains is the measure.

Then the check that it is one picture and not one framing: the second image is mapped onto the first by
that transform and the two images' band-pass detail (texture finer than the face, the hair or the frame,
at the scale the smaller image still holds) is correlated. A copy has both: a large share of its keypoints
under the transform and detail correlating at 0.6-1. Two different people can have one of them (two
StyleGAN faces, aligned by their generator, correlate up to 0.69 with few inliers; an FFHQ pair had 29%
of keypoints as inliers with detail at 0.3), never both, on the sources measured.

Why this and not a second global hash: pHash and dHash summarise the whole frame at 32 x 32 and 9 x 8,
so on aligned, frontal portraits on plain backgrounds (generated.photos, a studio series, FFHQ crops)
the frame dominates both and two different people collide in both. A crop, resize, re-encode or small
edit of one photo keeps hundreds of its fine keypoints (eyelashes, hair strands, skin texture, JPEG
aside) where one similarity transform maps each onto its twin; two different people, however well
aligned, share only a handful of chance matches. Measured on distinct faces from seven sources and on
crops/resizes/re-encodes of them: bench/image_rings.py, docs/networks.md "Image rings".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

MATCH_SIDE = 256  # both images are compared at this longer side: near-duplicates come at any size
ORB_FEATURES = 1000
RATIO = 0.8  # Lowe's ratio test: a keypoint's best match must beat its second best by this factor
RANSAC_PIXELS = 3.0
BAND = (0.8, 4.0)  # band-pass sigmas in pixels of the smaller image: its texture, not its frame  # reprojection error (at MATCH_SIDE) within which a match counts as explained


@dataclass(frozen=True)
class LocalMatch:
    inliers: int  # keypoint matches one similarity transform explains
    matches: int  # matches that passed the ratio test
    keypoints: tuple[int, int]  # keypoints found in each image
    transform: np.ndarray | None = None  # 2 x 3, points of the first image to the second (at MATCH_SIDE)


def _grey(image: Image.Image) -> np.ndarray:
    grey = image.convert("L")
    scale = MATCH_SIDE / max(grey.size)
    size = (max(1, round(grey.width * scale)), max(1, round(grey.height * scale)))
    return np.asarray(grey.resize(size, Image.Resampling.LANCZOS), dtype=np.uint8)


@dataclass(frozen=True)
class Keypoints:
    """One image's ORB keypoints at MATCH_SIDE: positions (n, 2) float32 and descriptors (n, 32) uint8."""

    points: np.ndarray
    descriptors: np.ndarray


def keypoints(image: Image.Image) -> Keypoints:
    import cv2

    orb = cv2.ORB_create(nfeatures=ORB_FEATURES, fastThreshold=10)
    found, descriptors = orb.detectAndCompute(_grey(image), None)
    if descriptors is None or not found:
        return Keypoints(np.empty((0, 2), np.float32), np.empty((0, 32), np.uint8))
    return Keypoints(np.array([k.pt for k in found], dtype=np.float32), descriptors)


def match_keypoints(a: Keypoints, b: Keypoints) -> LocalMatch:
    """The number of ratio-test matches between ``a`` and ``b`` that one RANSAC similarity transform explains."""
    import cv2

    counts = (len(a.points), len(b.points))
    if min(counts) < 2:
        return LocalMatch(0, 0, counts)
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
    good = [pair[0] for pair in matcher.knnMatch(a.descriptors, b.descriptors, k=2)
            if len(pair) == 2 and pair[0].distance < RATIO * pair[1].distance]
    if len(good) < 3:
        return LocalMatch(0, len(good), counts)
    src = a.points[[m.queryIdx for m in good]]
    dst = b.points[[m.trainIdx for m in good]]
    cv2.setRNGSeed(0)  # RANSAC's draws: the same pair gives the same count on every run
    transform, mask = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=RANSAC_PIXELS,
                                                  maxIters=2000, confidence=0.99)
    inliers = 0 if transform is None or mask is None else int(mask.sum())
    return LocalMatch(inliers, len(good), counts, transform if inliers else None)


@dataclass(frozen=True)
class PictureMatch:
    """How alike two pictures are, point by point: what ``confirmed_near_duplicate`` evidence records."""

    inliers: int
    matches: int
    keypoints: tuple[int, int]
    detail_correlation: float  # of the aligned band-pass detail; 0 where no transform was found

    @property
    def inlier_share(self) -> float:
        """Inliers per keypoint of the image with fewer: a count alone grows with the images' size."""
        return self.inliers / max(1, min(self.keypoints))

    def to_evidence(self) -> dict[str, object]:
        return {"inliers": self.inliers, "matches": self.matches, "keypoints": list(self.keypoints),
                "inlier_share": round(self.inlier_share, 4), "detail_correlation": round(self.detail_correlation, 4)}


def _one_way(a: Image.Image, b: Image.Image, a_points: Keypoints, b_points: Keypoints) -> PictureMatch:
    local = match_keypoints(a_points, b_points)
    corr = detail_correlation(a, b, local.transform) if local.transform is not None else 0.0
    return PictureMatch(local.inliers, local.matches, local.keypoints, corr)


def compare_pictures(a: Image.Image, b: Image.Image, a_points: Keypoints | None = None,
                     b_points: Keypoints | None = None) -> PictureMatch:
    """Keypoint match, then detail correlation under the matched transform, both ways round; each measure
    is the smaller of the two. One way alone depends on which image comes first (the ratio test runs on
    the first image's keypoints, the detail is compared in its frame): two shots of one FFHQ sitter scored
    0.60 of the threshold one way and 0.88 the other. Keypoints may be passed in, found once per image."""
    a_points, b_points = a_points or keypoints(a), b_points or keypoints(b)
    ab, ba = _one_way(a, b, a_points, b_points), _one_way(b, a, b_points, a_points)
    return PictureMatch(min(ab.inliers, ba.inliers), min(ab.matches, ba.matches), ab.keypoints,
                        min(ab.detail_correlation, ba.detail_correlation))


def detail_correlation(a: Image.Image, b: Image.Image, transform: np.ndarray) -> float:
    """Correlation of the two images' band-pass detail once ``b`` is mapped onto ``a`` by ``transform``."""
    import cv2

    ga, gb = _grey(a).astype(np.float32), _grey(b).astype(np.float32)
    h, w = ga.shape
    warped = cv2.warpAffine(gb, transform, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderValue=-1)
    valid = cv2.warpAffine(np.ones_like(gb), transform, (w, h), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                           borderValue=0)
    valid = cv2.erode(valid, np.ones((9, 9), np.uint8)) > 0
    if valid.sum() < 0.25 * h * w:
        return 0.0
    # detail finer than the smaller image holds is not compared: a 96 px copy of a 1350 px photo keeps
    # only its coarser texture, and both are seen at that scale
    scale = max(1.0, MATCH_SIDE / max(1, min(max(a.size), max(b.size))))

    def band(g: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(g, (0, 0), BAND[0] * scale) - cv2.GaussianBlur(g, (0, 0), BAND[1] * scale)
    x, y = band(ga)[valid], band(np.where(valid, warped, ga))[valid]  # outside the overlap: no detail compared
    x, y = x - x.mean(), y - y.mean()
    return float((x * y).sum() / max(np.sqrt((x * x).sum() * (y * y).sum()), 1e-9))
