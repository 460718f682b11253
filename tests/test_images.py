"""Image validation on hostile files, and the content-addressed store."""

from __future__ import annotations

import io
import os

import pytest
import sqlalchemy as sa
from PIL import Image

from pipeline.core.db import transaction
from pipeline.images.acquire import ImageRejected, decode_image, read_local_avatar, validate_image


def png(size=(40, 30), mode="RGB", color=(200, 10, 10), **save) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, "PNG", **save)
    return buf.getvalue()


def jpeg(size=(40, 30), exif=None) -> bytes:
    buf = io.BytesIO()
    img = Image.new("RGB", size, (10, 200, 10))
    img.save(buf, "JPEG", **({"exif": exif} if exif else {}))
    return buf.getvalue()


def test_truncated_jpeg_is_refused():
    data = jpeg((256, 256))
    with pytest.raises(ImageRejected, match="unreadable image: image file is truncated"):
        decode_image(data[: len(data) // 2])


def test_png_bomb_is_refused_before_decoding():
    buf = io.BytesIO()
    Image.new("1", (6000, 6000)).save(buf, "PNG")  # 36 Mpx that compress to a few KB
    assert len(buf.getvalue()) < 100_000
    with pytest.raises(ImageRejected, match="6000x6000 pixels exceeds the 25000000-pixel limit"):
        decode_image(buf.getvalue())


@pytest.mark.parametrize("data,reason", [
    (b"", "empty file"),
    (b"<html><script>alert(1)</script></html>", "not an image"),
    (b"%PDF-1.4\n1 0 obj <<>> endobj", "not an image"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "unreadable image"),
])
def test_not_images(data, reason):
    with pytest.raises(ImageRejected, match=reason):
        decode_image(data)


def test_type_is_sniffed_not_taken_from_name(tmp_path):
    (tmp_path / "avatar.gif").write_bytes(jpeg())
    fmt, rgb = decode_image(read_local_avatar(tmp_path, "avatar.gif"))
    assert fmt == "JPEG" and rgb.mode == "RGB"


def test_bmp_is_not_accepted():
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, "BMP")
    with pytest.raises(ImageRejected, match="image type BMP is not accepted"):
        decode_image(buf.getvalue())


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    _, rgb = decode_image(jpeg((40, 30), exif=exif.tobytes()))
    assert rgb.size == (30, 40)


def test_palette_alpha_and_animation_become_rgb():
    _, rgb = decode_image(png(mode="RGBA", color=(0, 0, 0, 0)))
    assert rgb.mode == "RGB" and rgb.getpixel((0, 0)) == (255, 255, 255)  # transparent -> white
    frames = [Image.new("P", (8, 8), i) for i in (1, 2, 3)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    fmt, rgb = decode_image(buf.getvalue())
    assert fmt == "GIF" and rgb.mode == "RGB"


def test_sha256_is_of_the_original_bytes():
    import hashlib

    data = png()
    image = validate_image(data)
    assert image.sha256 == hashlib.sha256(data).hexdigest()
    assert len(image.phash) == 16 and image.storage_path.endswith(".png")


@pytest.mark.parametrize("ref", ["../outside.png", "/etc/passwd", "sub/../../outside.png", "link.png"])
def test_paths_outside_the_export_are_refused(tmp_path, ref):
    export = tmp_path / "export"
    (export / "sub").mkdir(parents=True)
    (tmp_path / "outside.png").write_bytes(png())
    os.symlink(tmp_path / "outside.png", export / "link.png")
    with pytest.raises(ImageRejected, match="outside the export folder"):
        read_local_avatar(export, ref)


def test_acquire_stores_each_distinct_image_once_and_quarantines_failures(settings, tmp_path):
    from pipeline.core.db import ensure_schema
    from pipeline.core.runs import start_run
    from pipeline.images.acquire import acquire_avatars
    from pipeline.ingest.load import ingest_export

    export = tmp_path / "export"
    (export / "a").mkdir(parents=True)
    (export / "a" / "one.png").write_bytes(png())
    (export / "a" / "copy.png").write_bytes(png())  # same bytes, other name
    (export / "a" / "bad.jpg").write_bytes(jpeg((64, 64))[:300])
    (export / "manifest.csv").write_text(
        "platform,account_id,avatar\n"
        "x,1,a/one.png\nx,2,a/copy.png\nx,3,a/bad.jpg\nx,4,a/missing.png\n"
        "x,5,http://169.254.169.254/latest/meta-data\nx,6,\n")
    ensure_schema(settings)
    start_run(settings, "img", str(export), "generic")
    ingest_export(settings, "img", export)
    result = acquire_avatars(settings, "img")
    assert (result.stored, result.failed, result.distinct_images) == (2, 3, 1)
    with transaction(settings) as conn:
        reasons = dict(conn.execute(sa.text(
            "select locator, reason from quarantine where run_key = 'img' and stage = 'images'")).all())
        stored = conn.execute(sa.text("select storage_path from images")).scalars().all()
    assert sorted(reasons) == ["line 4 avatar", "line 5 avatar", "line 6 avatar"]
    assert reasons["line 4 avatar"].startswith("unreadable image")
    assert reasons["line 5 avatar"] == "avatar file 'a/missing.png' not found in the export"
    assert reasons["line 6 avatar"] == "fetch failed: destination 169.254.169.254 is link-local (cloud metadata range); refused"
    assert len(stored) == 1 and (settings.image_dir / stored[0]).read_bytes() == png()


def test_cmyk_palette_and_grey_alpha_become_rgb():
    buf = io.BytesIO()
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(buf, "JPEG", quality=95)  # red in CMYK
    fmt, rgb = decode_image(buf.getvalue())
    assert (fmt, rgb.mode) == ("JPEG", "RGB")
    r, g, b = rgb.getpixel((8, 8))
    assert r > 200 and g < 60 and b < 60
    _, rgb = decode_image(png(mode="P", color=3))
    assert rgb.mode == "RGB"
    _, rgb = decode_image(png(mode="LA", color=(0, 0)))
    assert rgb.getpixel((0, 0)) == (255, 255, 255)


def test_animated_webp_uses_its_first_frame():
    frames = [Image.new("RGB", (16, 16), c) for c in ((250, 0, 0), (0, 250, 0), (0, 0, 250))]
    buf = io.BytesIO()
    frames[0].save(buf, "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    fmt, rgb = decode_image(buf.getvalue())
    assert fmt == "WEBP" and rgb.getpixel((8, 8)) == (250, 0, 0)
