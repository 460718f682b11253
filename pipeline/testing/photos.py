"""Real pixels for planted populations where pixels matter: distinct real photographs from
``../shared/data/faces/real`` (organic avatars and the photo rings' originals), their crops, resizes
and re-encodes (a photo ring's near-duplicates), and flat brand logos (the look-alikes).

Every image's pHash, dHash and detail are computed from the decoded pixels, as the acquire stage
would (pipeline/images/measures.py). The photo sets carry their own near-duplicates (the same web
photo twice), so the pool drops every photo within ``DISTINCT_BITS`` of an earlier one in either hash.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pipeline.images.measures import measure_image

DISTINCT_BITS = 12  # pool photos differ from each other in more than this many bits of pHash and of dHash


@dataclass(frozen=True)
class PlantedImage:
    sha256: str
    phash: int
    dhash: int
    detail: float
    width: int
    height: int
    byte_size: int
    data: bytes = field(default=b"", repr=False, compare=False)  # the encoded file, stored by the planted run


def default_faces_dir() -> Path:
    """``$PROFILE_AUDIT_SHARED_DATA/faces``, else ``../shared/data/faces`` beside the repository."""
    shared = os.environ.get("PROFILE_AUDIT_SHARED_DATA")
    root = Path(shared) if shared else Path(__file__).resolve().parents[2].parent / "shared" / "data"
    return root / "faces"


def _measured(data: bytes) -> PlantedImage:
    rgb = Image.open(io.BytesIO(data)).convert("RGB")
    m = measure_image(rgb)
    return PlantedImage(hashlib.sha256(data).hexdigest(), int(m.phash, 16), int(m.dhash, 16), m.detail,
                        rgb.width, rgb.height, len(data), data)


@functools.lru_cache(maxsize=4)
def _pool(faces_dir: str) -> tuple[tuple[bytes, PlantedImage], ...]:
    files = sorted(p for p in (Path(faces_dir) / "real").glob("*/*") if p.is_file())
    kept: list[tuple[bytes, PlantedImage]] = []
    for path in files:
        data = path.read_bytes()
        image = _measured(data)
        if all((image.phash ^ o.phash).bit_count() > DISTINCT_BITS and (image.dhash ^ o.dhash).bit_count() > DISTINCT_BITS
               for _, o in kept):
            kept.append((data, image))
    return tuple(kept)


def photo_pool(faces_dir: Path) -> list[tuple[bytes, PlantedImage]]:
    """Distinct real photos (bytes, measures), in file order; empty when the folder is absent."""
    return list(_pool(str(faces_dir))) if (faces_dir / "real").is_dir() else []


def folder_photos(folders: list[Path]) -> list[PlantedImage]:
    """Every image file in these folders, in file order, as it is: no pool de-duplication, so photos of one
    studio series or one generator's aligned portraits stay as alike as they are (the image-ring test's
    hard negatives)."""
    files = sorted(p for folder in folders for p in folder.glob("*") if p.is_file())
    return [_measured(p.read_bytes()) for p in files]


def near_duplicate(data: bytes, rng: np.random.Generator, sides: tuple[int, int] = (96, 201)) -> PlantedImage:
    """A crop (up to 3% a side), resize (``sides``: 96-200 px by default) and JPEG re-encode (quality 60-92)
    of a photo."""
    rgb = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = rgb.size
    left, top, right, bottom = (rng.uniform(0, 0.03, size=4) * [w, h, w, h]).astype(int)
    side = int(rng.integers(*sides))
    out = rgb.crop((left, top, w - right, h - bottom)).resize((side, side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    out.save(buf, "JPEG", quality=int(rng.integers(60, 93)))
    return _measured(buf.getvalue())


def flat_logo(brand: int, size: int = 256, quality: int | None = None) -> PlantedImage:
    """A brand's flat logo: a disc and a bar on a plain background, as PNG or a JPEG re-encode."""
    rng = np.random.default_rng(brand)
    background, ink = (tuple(int(c) for c in rng.integers(0, 256, 3)) for _ in range(2))
    img = Image.new("RGB", (256, 256), background)
    d = ImageDraw.Draw(img)
    d.ellipse([48, 48, 208, 208], fill=ink)
    d.rectangle([96, 112, 160, 144], fill=background)
    img = img.resize((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, "PNG") if quality is None else img.save(buf, "JPEG", quality=quality)
    return _measured(buf.getvalue())
