"""Stage 2, acquire images: validate avatars and store them content-addressed by sha256.

Validation happens on the bytes: the type is sniffed (never taken from the file name), the pixel
count is checked from the header before any decode (a decompression bomb is refused, not decoded),
and a full decode catches truncated files. Each distinct image is stored and scored once.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from PIL import Image, ImageOps

from pipeline.config import Settings
from pipeline.db import insert_rows, transaction
from pipeline.progress import progress
from pipeline.quarantine import replace_stage_rows
from pipeline.readers import Rejection, resolve_reader

MAX_IMAGE_BYTES = 10 * 1024 * 1024
MAX_IMAGE_PIXELS = 25_000_000  # 5000 x 5000: far above any avatar, far below a bomb
ALLOWED_FORMATS = {"JPEG": "jpg", "PNG": "png", "GIF": "gif", "WEBP": "webp"}


class ImageRejected(ValueError):
    """The bytes are not an image we accept; the message says why."""


@dataclass(frozen=True)
class ValidatedImage:
    sha256: str
    data: bytes
    format: str
    width: int
    height: int
    rgb: Image.Image
    phash: str

    @property
    def storage_path(self) -> str:
        return f"{self.sha256[:2]}/{self.sha256[2:4]}/{self.sha256}.{ALLOWED_FORMATS[self.format]}"


def decode_image(data: bytes) -> tuple[str, Image.Image]:
    """Sniff, bound and fully decode image bytes to upright RGB; raise ImageRejected with a reason."""
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageRejected(f"{len(data)} bytes exceeds the {MAX_IMAGE_BYTES}-byte limit")
    if not data:
        raise ImageRejected("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            fmt = img.format or "unknown"
            if fmt not in ALLOWED_FORMATS:
                raise ImageRejected(f"image type {fmt} is not accepted (JPEG, PNG, GIF, WEBP)")
            width, height = img.size
            if width * height > MAX_IMAGE_PIXELS:
                raise ImageRejected(
                    f"{width}x{height} pixels exceeds the {MAX_IMAGE_PIXELS}-pixel limit (decompression bomb?)"
                )
            img.seek(0)  # animated images: score the first frame
            img.load()
            img = ImageOps.exif_transpose(img)
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                rgba = img.convert("RGBA")
                background = Image.new("RGB", rgba.size, (255, 255, 255))
                background.paste(rgba, mask=rgba.getchannel("A"))
                rgb = background
            else:
                rgb = img.convert("RGB")
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected(f"decompression bomb refused: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        reason = str(exc) or type(exc).__name__
        if "cannot identify image file" in reason:
            reason = "not an image (type not recognised from its bytes)"
        raise ImageRejected(f"unreadable image: {reason}") from None
    return fmt, rgb


def validate_image(data: bytes) -> ValidatedImage:
    import imagehash

    fmt, rgb = decode_image(data)
    return ValidatedImage(
        sha256=hashlib.sha256(data).hexdigest(),
        data=data,
        format=fmt,
        width=rgb.width,
        height=rgb.height,
        rgb=rgb,
        phash=str(imagehash.phash(rgb)),
    )


def store_image(settings: Settings, image: ValidatedImage) -> Path:
    """Write once under images/ab/cd/<sha256>.<ext>; atomic rename so readers never see half a file."""
    target = settings.image_dir / image.storage_path
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as fh:
            fh.write(image.data)
        os.replace(tmp, target)
    return target


def load_stored_image(settings: Settings, storage_path: str) -> Image.Image:
    return decode_image((settings.image_dir / storage_path).read_bytes())[1]


def read_local_avatar(export_root: Path, ref: str) -> bytes:
    """Read a file named by the export, refusing anything that resolves outside the export folder."""
    root = export_root.resolve()
    candidate = (root / ref).resolve()
    if Path(ref).is_absolute() or not candidate.is_relative_to(root):
        raise ImageRejected(f"avatar path {ref!r} points outside the export folder; refused")
    if not candidate.is_file():
        raise ImageRejected(f"avatar file {ref!r} not found in the export")
    size = candidate.stat().st_size
    if size > MAX_IMAGE_BYTES:
        raise ImageRejected(f"{size} bytes exceeds the {MAX_IMAGE_BYTES}-byte limit")
    return candidate.read_bytes()


def fetch_avatar_bytes(export_root: Path, ref: str) -> bytes:
    if ref.lower().startswith(("http://", "https://")):
        raise ImageRejected("remote avatar URLs are not fetched by this version; put the files in the export")
    return read_local_avatar(export_root, ref)


@dataclass(frozen=True)
class AcquireResult:
    stored: int
    failed: int
    distinct_images: int


def acquire_avatars(settings: Settings, run_key: str) -> AcquireResult:
    """Validate and store every avatar the run's snapshots name; failures are quarantined per avatar."""
    with transaction(settings) as conn:
        run = conn.execute(
            sa.text("select export_path, export_format from runs where run_key = :k"), {"k": run_key}
        ).one()
        snapshots = conn.execute(
            sa.text(
                "select account_key, avatar_ref, source_file, source_locator from account_snapshots"
                " where run_key = :k and avatar_ref is not null order by account_key"
            ),
            {"k": run_key},
        ).all()
    export_path = Path(run.export_path)
    export_root = resolve_reader(export_path, run.export_format or "auto").export_root(export_path)

    by_ref: dict[str, dict | ImageRejected] = {}  # one read per distinct reference
    avatars, rejections, images = [], [], {}
    for snap in progress(snapshots, desc="images", unit="avatar", total=len(snapshots)):
        if snap.avatar_ref not in by_ref:
            try:
                image = validate_image(fetch_avatar_bytes(export_root, snap.avatar_ref))
            except ImageRejected as exc:
                by_ref[snap.avatar_ref] = exc
            else:
                store_image(settings, image)  # keep only metadata in memory
                by_ref[snap.avatar_ref] = images[image.sha256] = {
                    "sha256": image.sha256, "byte_size": len(image.data), "width": image.width,
                    "height": image.height, "format": image.format, "phash": image.phash,
                    "storage_path": image.storage_path,
                }
        outcome = by_ref[snap.avatar_ref]
        row = {"run_key": run_key, "account_key": snap.account_key, "avatar_ref": snap.avatar_ref}
        if isinstance(outcome, ImageRejected):
            avatars.append({**row, "sha256": None, "status": "failed", "reason": str(outcome)})
            rejections.append(Rejection.of(snap.source_file, f"{snap.source_locator} avatar", str(outcome),
                                           snap.avatar_ref))
        else:
            avatars.append({**row, "sha256": outcome["sha256"], "status": "stored", "reason": None})
    with transaction(settings) as conn:
        insert_rows(
            conn,
            "insert into images (sha256, byte_size, width, height, format, phash, storage_path)"
            " values (:sha256, :byte_size, :width, :height, :format, :phash, :storage_path)"
            " on conflict (sha256) do nothing",
            images.values(),
        )
        conn.execute(sa.text("delete from account_avatars where run_key = :k"), {"k": run_key})
        insert_rows(
            conn,
            "insert into account_avatars (run_key, account_key, avatar_ref, sha256, status, reason)"
            " values (:run_key, :account_key, :avatar_ref, :sha256, :status, :reason)",
            avatars,
        )
        replace_stage_rows(conn, run_key, "images", rejections)
    stored = sum(1 for a in avatars if a["status"] == "stored")
    return AcquireResult(stored=stored, failed=len(avatars) - stored, distinct_images=len(images))
