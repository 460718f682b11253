"""Per-image measures for the image-ring test: pHash, a second and independent hash family (dHash),
and a detail score that tells photographs from low-detail pictures.

pHash keeps the signs of the low DCT frequencies; dHash keeps the signs of horizontal neighbour
gradients on a 9x8 reduction. They fail differently, so two distinct photographs that collide in
both are far rarer than in either (measured on real photos: docs/networks.md, "Strong pairs").
Both collide easily on low-detail pictures (flat logos, cartoons, default avatars): ``detail``
measures how much of the picture is texture, so such images can be kept out of image rings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

DETAIL_SIZE = 32  # the scale pHash sees (imagehash.phash reduces to 32 x 32): detail finer than this is not hashed
DETAIL_STEP = 8.0  # a grey-level step (of 255) between neighbours that counts as texture


@dataclass(frozen=True)
class ImageMeasures:
    phash: str  # 16 hex digits
    dhash: str  # 16 hex digits
    detail: float  # share of the reduced image's pixels on a texture step, in [0, 1]


def image_detail(rgb: Image.Image) -> float:
    """Share of pixels of the 32 x 32 grey reduction whose step to the right or below neighbour exceeds
    ``DETAIL_STEP``. Photographs are mostly texture (hair, skin, background); a flat logo or a
    cartoon has steps only along its outlines. Pixel-level noise (JPEG, the demo's generator trace)
    averages out in the reduction, so it does not pass for detail."""
    grey = np.asarray(rgb.convert("L").resize((DETAIL_SIZE, DETAIL_SIZE), Image.Resampling.BOX), dtype=np.float32)
    step = np.zeros_like(grey)
    step[:, :-1] = np.abs(np.diff(grey, axis=1))
    step[:-1, :] = np.maximum(step[:-1, :], np.abs(np.diff(grey, axis=0)))
    return round(float((step > DETAIL_STEP).mean()), 4)


def measure_image(rgb: Image.Image) -> ImageMeasures:
    import imagehash

    return ImageMeasures(str(imagehash.phash(rgb)), str(imagehash.dhash(rgb)), image_detail(rgb))
