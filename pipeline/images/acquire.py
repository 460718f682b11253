"""Stage `acquire_images`: validate avatars and store them content-addressed by sha256.

Validation happens on the bytes: the type is sniffed (never taken from the file name), the pixel
count is checked from the header before any decode (a decompression bomb is refused, not decoded),
and a full decode catches truncated files. Each distinct image is stored and scored once.
"""

from __future__ import annotations

import hashlib
import io
import re
import threading
import warnings
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from PIL import Image, ImageOps

from pipeline.config import Settings
from pipeline.core.bulk import copy_rows
from pipeline.core.db import insert_rows, transaction
from pipeline.core.progress import Counter, progress
from pipeline.core.storage import atomic_write, resolve_inside, sweep_stale_temp
from pipeline.images.fetch import FetchResult, SafeFetcher
from pipeline.ingest import quarantine
from pipeline.ingest.archives import ExportSource, UnsafeMember
from pipeline.ingest.exports import pinned_exports, split_ref
from pipeline.ingest.readers import resolve_reader

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
    dhash: str = ""  # second hash family and detail score for the image-ring test (pipeline/images/measures.py)
    detail: float | None = None

    @property
    def storage_path(self) -> str:
        return f"{self.sha256[:2]}/{self.sha256[2:4]}/{self.sha256}.{ALLOWED_FORMATS[self.format]}"


_MARKUP = re.compile(rb"<\s*(script|html|svg|iframe|\?php)\b|<!doctype|javascript:", re.IGNORECASE)


def polyglot_reason(data: bytes, fmt: str) -> str | None:
    """Why bytes that decode as an image are also something else (a zip, a page, a script), or None.

    Such files pass an image decoder but are stored and served as-is (content addressing keeps the
    original bytes), so they are refused rather than carried into the image store.
    """
    if b"PK\x05\x06" in data[-66_000:]:
        return "polyglot: the file is also a zip archive; refused"
    found = _MARKUP.search(data)
    if found:
        return f"polyglot: the file carries markup or script ({found.group(0)[:20].decode('latin-1')!r}); refused"
    if fmt == "PNG":
        end = data.rfind(b"IEND")
        if end >= 0 and len(data) - (end + 8) > 0:
            return f"polyglot: {len(data) - end - 8} bytes after the end of the PNG image; refused"
    return None


def draft_request(size: tuple[int, int], need: tuple[int, int] | None) -> tuple[int, int] | None:
    """The size to pass to Pillow's JPEG ``draft`` (DCT-domain scaling by 1/2, 1/4 or 1/8) so that the
    decoded image keeps a short side >= ``need[0]`` and a long side >= ``need[1]``; None: full decode."""
    if need is None:
        return None
    width, height = size
    for k in (8, 4, 2):
        if min(width, height) // k >= need[0] and max(width, height) // k >= need[1]:
            return (width // k, height // k)
    return None


def decode_image(data: bytes, draft: tuple[int, int] | None = None) -> tuple[str, Image.Image]:
    """Sniff, bound and fully decode image bytes to upright RGB; raise ImageRejected with a reason.

    ``draft`` (short side, long side) lets a JPEG at least twice that size decode at reduced scale
    in the DCT domain (much cheaper than a full decode and a resize); other formats decode in full.
    """
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
            hidden = polyglot_reason(data, fmt)
            if hidden:
                raise ImageRejected(hidden)
            width, height = img.size
            if width * height > MAX_IMAGE_PIXELS:
                raise ImageRejected(
                    f"{width}x{height} pixels exceeds the {MAX_IMAGE_PIXELS}-pixel limit (decompression bomb?)"
                )
            img.seek(0)  # animated images: score the first frame
            request = draft_request(img.size, draft) if fmt == "JPEG" else None
            if request is not None:
                img.draft("RGB", request)
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
    from pipeline.images.measures import measure_image

    fmt, rgb = decode_image(data)
    measures = measure_image(rgb)
    return ValidatedImage(
        sha256=hashlib.sha256(data).hexdigest(),
        data=data,
        format=fmt,
        width=rgb.width,
        height=rgb.height,
        rgb=rgb,
        phash=measures.phash,
        dhash=measures.dhash,
        detail=measures.detail,
    )


def store_image(settings: Settings, image: ValidatedImage) -> Path:
    """Write once under images/ab/cd/<sha256>.<ext>; atomic rename so readers never see half a file."""
    target = settings.image_dir / image.storage_path
    if not target.exists():
        atomic_write(target, image.data)
    return target


def load_stored_image(settings: Settings, storage_path: str, draft: tuple[int, int] | None = None) -> Image.Image:
    return decode_image((settings.image_dir / storage_path).read_bytes(), draft)[1]


def read_local_avatar(export_root: Path, ref: str) -> bytes:
    """Read a file named by the export, refusing anything that resolves outside the export folder."""
    candidate = resolve_inside(export_root, ref)
    if candidate is None:
        raise ImageRejected(f"avatar path {ref!r} points outside the export folder; refused")
    if not candidate.is_file():
        raise ImageRejected(f"avatar file {ref!r} not found in the export")
    size = candidate.stat().st_size
    if size > MAX_IMAGE_BYTES:
        raise ImageRejected(f"{size} bytes exceeds the {MAX_IMAGE_BYTES}-byte limit")
    return candidate.read_bytes()


def is_url(ref: str) -> bool:
    return ref.lower().startswith(("http://", "https://"))


class LocalAvatars:
    """Reads avatar references that live in the export: relative paths and ``zip:<archive>!<member>``.

    Zips are opened once each and members streamed into memory with the byte cap; nothing is
    extracted. The archive path itself must stay inside the export folder.
    """

    def __init__(self, export_root: Path):
        self.root = export_root
        self._zips: dict[str, ExportSource] = {}

    def read(self, ref: str) -> bytes:
        if ref.startswith("zip:"):
            archive, sep, member = ref[4:].partition("!")
            if not sep or not member:
                raise ImageRejected(f"avatar reference {ref!r} is not zip:<archive>!<member>")
            return self._zip_member(archive, member)
        if ref.lower().startswith(("file:", "ftp:", "data:")) or "://" in ref:
            raise ImageRejected(f"avatar reference {ref[:80]!r} is neither a path in the export nor an http(s) URL")
        return read_local_avatar(self.root, ref)

    def _zip_member(self, archive: str, member: str) -> bytes:
        if archive not in self._zips:
            path = resolve_inside(self.root, archive)
            if path is None:
                raise ImageRejected(f"zip {archive!r} points outside the export folder; refused")
            if not path.is_file():
                raise ImageRejected(f"zip {archive!r} not found in the export")
            try:
                self._zips[archive] = ExportSource(path)
            except (OSError, ValueError, zipfile.BadZipFile) as exc:
                raise ImageRejected(f"zip {archive!r} is unreadable: {exc}") from None
        source = self._zips[archive]
        try:
            return source.read_bytes(member, MAX_IMAGE_BYTES)
        except (UnsafeMember, zipfile.BadZipFile, OSError, EOFError) as exc:
            raise ImageRejected(str(exc) if isinstance(exc, UnsafeMember) else f"zip member {member!r}: {exc}") from None

    def close(self) -> None:
        for source in self._zips.values():
            source.close()


@dataclass(frozen=True)
class AcquireResult:
    stored: int
    failed: int
    distinct_images: int
    fetched: int = 0  # URLs fetched successfully


def acquire_avatars(settings: Settings, run_key: str, fetcher: SafeFetcher | None = None) -> AcquireResult:
    """Validate and store every avatar the run's snapshots name; failures are recorded per avatar.

    Each distinct reference is read or fetched once. URLs go through the safe fetcher (bounded
    concurrency, public destinations only); images are validated and stored as they arrive, so
    only metadata stays in memory; per-account rows are joined in SQL. ``fetcher`` is for tests;
    production builds it from settings.
    """
    sweep_stale_temp(settings.image_dir)  # temp files of a killed or disk-full earlier store
    with transaction(settings) as conn:
        run = conn.execute(
            sa.text("select export_path, export_format, params from runs where run_key = :k"), {"k": run_key}
        ).one()
        refs = conn.execute(sa.text(  # distinct references only: per-account rows stay in the database
            "select distinct avatar_ref from account_snapshots where run_key = :k and avatar_ref is not null"
            " order by avatar_ref"), {"k": run_key}).scalars().all()
    # each export's folder, by label ('' for a run of one export); tagged references name their export
    roots = {spec.label: resolve_reader(spec.path, spec.format).export_root(spec.path)
             for spec in pinned_exports(run.export_path, run.export_format, run.params)}

    outcomes: dict[str, dict | str] = {}  # ref -> image metadata, or the reason it failed
    images: dict[str, dict] = {}

    def accept(ref: str, data: bytes) -> None:
        try:
            image = validate_image(data)
        except ImageRejected as exc:
            outcomes[ref] = str(exc)
            return
        store_image(settings, image)  # keep only metadata in memory
        outcomes[ref] = images[image.sha256] = {
            "sha256": image.sha256, "byte_size": len(image.data), "width": image.width,
            "height": image.height, "format": image.format, "phash": image.phash,
            "dhash": image.dhash, "detail": image.detail,
            "storage_path": image.storage_path,
        }

    locals_ = {label: LocalAvatars(root) for label, root in roots.items()}
    try:
        for ref in progress([r for r in refs if not is_url(r)], desc="images (export)", unit="avatar"):
            label, inner = split_ref(ref)
            try:
                if label not in locals_:
                    raise ImageRejected(f"avatar reference {ref[:80]!r} names no export of this run")
                accept(ref, locals_[label].read(inner))
            except ImageRejected as exc:
                outcomes[ref] = str(exc)
    finally:
        for local in locals_.values():
            local.close()
    urls = [r for r in refs if is_url(r)]
    fetched = 0
    if urls:
        counter = Counter("images (fetch)", len(urls), unit="url")
        lock = threading.Lock()  # on_result runs in the fetcher's worker threads

        def on_result(result: FetchResult) -> None:
            nonlocal fetched
            if result.ok:
                accept(result.url, result.data)  # decode outside the lock: Pillow releases the GIL
            with lock:
                counter.update(1)
                if result.ok:
                    fetched += 1
                else:
                    outcomes[result.url] = f"fetch failed: {result.reason}"

        (fetcher or SafeFetcher.from_settings(settings)).fetch_all(urls, on_result)
        counter.close()

    with transaction(settings) as conn:
        store_images(conn, images.values())
        stored, failed = _record_outcomes(conn, run_key, outcomes)
    return AcquireResult(stored=stored, failed=failed, distinct_images=len(images), fetched=fetched)


def store_images(conn: sa.Connection, images: Iterable[dict[str, Any]]) -> int:
    """Upsert image rows in sha256 order. The images table is shared by every run, and two runs acquiring
    overlapping avatars at once (a backfill's days) each lock the rows they upsert: taken in one global
    order, one waits for the other; taken in each export's own order, they could deadlock."""
    return insert_rows(
        conn,
        "insert into images (sha256, byte_size, width, height, format, phash, dhash, detail, storage_path)"
        " values (:sha256, :byte_size, :width, :height, :format, :phash, :dhash, :detail, :storage_path)"
        " on conflict (sha256) do update set dhash = coalesce(images.dhash, excluded.dhash),"
        " detail = coalesce(images.detail, excluded.detail)",
        sorted(images, key=lambda row: row["sha256"]),
    )


def _record_outcomes(conn: sa.Connection, run_key: str, outcomes: dict[str, dict | str]) -> tuple[int, int]:
    """Per-account avatar rows and quarantine rows, joined in SQL from the per-reference outcomes."""
    k = {"k": run_key}
    conn.execute(sa.text("create temporary table _avatar_outcomes (avatar_ref text primary key, sha256 text,"
                         " reason text) on commit drop"))
    rows = [(ref, None if isinstance(o, str) else o["sha256"], o if isinstance(o, str) else None)
            for ref, o in outcomes.items()]
    for start in range(0, len(rows), 10_000):  # COPY: one round trip per batch, not per row
        copy_rows(conn, "_avatar_outcomes", ("avatar_ref", "sha256", "reason"), rows[start:start + 10_000])
    conn.execute(sa.text("delete from account_avatars where run_key = :k"), k)
    conn.execute(sa.text(
        "insert into account_avatars (run_key, account_key, avatar_ref, sha256, status, reason)"
        " select :k, s.account_key, s.avatar_ref, o.sha256, case when o.sha256 is null then 'failed' else 'stored' end,"
        " o.reason from account_snapshots s join _avatar_outcomes o using (avatar_ref) where s.run_key = :k"), k)
    quarantine.clear_stage(conn, run_key, "images")
    quarantine.add_from_query(
        conn, run_key, "images",
        "select s.source_file, s.source_locator || ' avatar', o.reason, s.avatar_ref"
        " from account_snapshots s join _avatar_outcomes o using (avatar_ref)"
        " where s.run_key = :k and o.sha256 is null", k)
    counts = dict(conn.execute(sa.text(
        "select status, count(*) from account_avatars where run_key = :k group by status"), k).all())
    return counts.get("stored", 0), counts.get("failed", 0)
