"""Each platform reader on a realistic export in the platform's own layout, plus the real IO file."""

from __future__ import annotations

import csv
import json
from datetime import datetime, timezone

import pytest
from conftest import SHARED_DATA
from export_fixtures import (
    BIG_ID,
    BSKY_CID,
    BSKY_DID_A,
    BSKY_DID_B,
    HASH_A,
    HASH_B,
    mastodon_accounts,
    write_bluesky_export,
    write_io_export,
    write_personal_archive,
    write_reddit_export,
)

from pipeline.errors import UserError
from pipeline.ingest.readers import READERS, AccountRecord, PostRecord, Rejection, resolve_reader

CUBA = SHARED_DATA / "twitter_io" / "cuba_092020_users_csv_hashed.csv"


def split(items):
    items = list(items)
    return ([i for i in items if isinstance(i, AccountRecord)], [i for i in items if isinstance(i, PostRecord)],
            [i for i in items if isinstance(i, Rejection)])


@pytest.mark.skipif(not CUBA.is_file(), reason=f"the real IO users file is not at {CUBA}")
def test_io_reader_on_the_real_cuba_file():
    assert resolve_reader(CUBA.parent).name == "twitter_io"
    accounts, posts, rejected = split(READERS["twitter_io"].read(CUBA.parent))
    assert rejected == [] and posts == []
    with CUBA.open(newline="", encoding="utf-8") as fh:  # an independent parse of the same file
        expected = list(csv.DictReader(fh))
    assert len(expected) == 526 and len(accounts) == 526
    assert len({a.account_key for a in accounts}) == 526
    multi_line = 0
    for record, row in zip(accounts, expected, strict=True):
        assert record.account_id == row["userid"] and record.handle == row["user_screen_name"]
        assert record.bio == (row["user_profile_description"].strip() or None)
        assert record.followers == int(row["follower_count"])
        assert record.created_at == datetime.fromisoformat(row["account_creation_date"]).replace(tzinfo=timezone.utc)
        multi_line += "\n" in row["user_profile_description"].strip()
    assert multi_line > 0 and multi_line == sum("\n" in (a.bio or "") for a in accounts)


def test_io_release_folder_with_tweets_media_zip_and_avatar_manifest(tmp_path):
    export = write_io_export(tmp_path / "io")
    assert resolve_reader(export).name == "twitter_io"
    accounts, posts, rejected = split(READERS["twitter_io"].read(export))
    assert rejected == []
    by_id = {a.account_id: a for a in accounts}
    assert list(by_id) == [HASH_A, HASH_B, BIG_ID]
    assert by_id[HASH_A].bio == 'Joven Cubano.\n\n#Revolucionario, "siempre"'
    assert by_id[HASH_A].platform == "twitter" and by_id[HASH_A].account_key == f"twitter:{HASH_A}"
    # hashed ids with '+' are found under their base64url file name; the manifest's URL is kept
    assert by_id[HASH_A].avatar_ref == "zip:cuba_092020_profile_images.zip!profile_images/" \
                                       + HASH_A.replace("+", "-") + ".jpg"
    assert by_id[HASH_B].avatar_ref == f"zip:cuba_092020_profile_images.zip!profile_images/{HASH_B}.png"
    assert by_id[BIG_ID].avatar_ref == "https://pbs.example.com/profile_images/1/a.jpg"
    assert (by_id[BIG_ID].handle, by_id[BIG_ID].location, by_id[BIG_ID].bio) == ("noticiashabana", "La Habana", None)
    original, retweet, reply = posts
    assert (original.post_id, original.posted_at) == ("1300000000000000001", datetime(2020, 5, 1, 13, 45, tzinfo=timezone.utc))
    assert original.text == "Viva #Cuba https://t.co/x\nsegunda línea"
    assert (original.hashtags, original.urls) == (("cuba", "cubaviva"), ("https://granma.cu/a",))
    assert (retweet.account_id, retweet.reposted_id, retweet.urls) == (HASH_B, "1300000000000000001", ())
    assert (reply.replied_id, reply.quoted_id, reply.reposted_id) == ("1300000000000000001", "1299999999999999999", None)
    assert reply.urls == ("https://a.example/x", "https://b.example/y")


def test_personal_archive_zip(tmp_path):
    archive = write_personal_archive(tmp_path / "twitter-2024-01-01.zip")
    assert resolve_reader(archive).name == "twitter_archive"
    accounts, posts, rejected = split(READERS["twitter_archive"].read(archive))
    assert rejected == []
    (account,) = accounts
    assert (account.account_key, account.handle, account.display_name) == ("twitter:1234567890", "maria_lopez84", "María López")
    assert account.bio == "Periodista.\nOpiniones propias."
    assert (account.url, account.location) == ("https://t.co/w", "Madrid")
    assert account.created_at == datetime(2011, 6, 23, 13, 4, 14, tzinfo=timezone.utc)
    assert (account.followers, account.following, account.posts) == (3, 1, 2)
    assert account.avatar_ref == "zip:twitter-2024-01-01.zip!data/profile_media/1234567890-AbCd_400x400.jpg"
    assert [(p.post_id, p.hashtags, p.urls, p.replied_id) for p in posts] == [
        ("1500000000000000001", ("prensa",), ("https://elpais.com/x",), None),
        ("1500000000000000002", (), (), "1499999999999999999"),
    ]
    assert posts[0].posted_at == datetime(2021, 6, 23, 13, 4, 14, tzinfo=timezone.utc)


def test_personal_archive_unpacked_folder(tmp_path):
    import zipfile

    archive = write_personal_archive(tmp_path / "a.zip")
    folder = tmp_path / "unpacked"
    zipfile.ZipFile(archive).extractall(folder)
    assert resolve_reader(folder).name == "twitter_archive"
    accounts, posts, rejected = split(READERS["twitter_archive"].read(folder))
    assert rejected == [] and len(posts) == 2
    assert accounts[0].avatar_ref == "data/profile_media/1234567890-AbCd_400x400.jpg"


@pytest.mark.parametrize("layout", ["array", "jsonl"])
def test_mastodon_accounts(tmp_path, layout):
    rows = mastodon_accounts()
    path = tmp_path / ("accounts.json" if layout == "array" else "accounts.jsonl")
    path.write_text(json.dumps(rows, indent=1) if layout == "array" else "\n".join(json.dumps(r) for r in rows))
    assert resolve_reader(path).name == "mastodon"
    accounts, _, rejected = split(READERS["mastodon"].read(path))
    assert rejected == []
    ana, bob = accounts
    assert (ana.account_key, ana.handle) == ("mastodon:ana@mastodon.social", "ana@mastodon.social")
    assert ana.bio == "Investigadora & docente.\n\nLínea 2\nlínea 3"
    assert ana.avatar_ref == "https://files.mastodon.social/accounts/avatars/109/382/static/still.png"  # the static one
    assert (ana.followers, ana.following, ana.posts) == (321, 12, 877)
    assert ana.created_at == datetime(2022, 11, 7, tzinfo=timezone.utc)
    assert (bob.account_id, bob.avatar_ref, bob.bio) == ("bob@fosstodon.org", None, None)  # missing.png is no avatar


def test_bluesky_records_with_blobs(tmp_path):
    export = write_bluesky_export(tmp_path / "bsky")
    assert resolve_reader(export).name == "bluesky"
    accounts, _, rejected = split(READERS["bluesky"].read(export))
    assert rejected == []
    ana, bob = accounts
    assert ana.account_key == f"bluesky:{BSKY_DID_A}"
    assert (ana.display_name, ana.bio) == ("Ana 🌊", "Hola.\nSegunda línea")
    assert ana.avatar_ref == f"blobs/{BSKY_CID}"  # the blob beside the records
    assert ana.created_at == datetime(2023, 4, 5, 10, 11, 12, tzinfo=timezone.utc)
    assert bob.avatar_ref == (f"https://cdn.bsky.app/img/avatar/plain/{BSKY_DID_B}/"
                              "bafkreiaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@jpeg")


def test_reddit_about_json_folder(tmp_path):
    export = write_reddit_export(tmp_path / "reddit")
    assert resolve_reader(export).name == "reddit"
    accounts, _, rejected = split(READERS["reddit"].read(export))
    assert [(a.account_key, a.handle) for a in accounts] == [("reddit:abc12", "mapmaker"), ("reddit:1w72", "spez")]
    spez = accounts[1]
    assert spez.avatar_ref == "https://styles.redditmedia.com/t5_abc/styles/profileIcon_x.png?width=256&s=9f2"
    assert spez.created_at == datetime(2012, 1, 5, 5, 35, 2, tzinfo=timezone.utc)
    assert (spez.followers, spez.bio, spez.display_name) == (42, "I post maps.", "spez things")
    assert [(r.source_file, r.locator, r.reason) for r in rejected] == [
        ("gone_user/about.json", "line 1", "id is missing (suspended accounts have no id)")]


def test_detection_failure_is_a_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "data.csv").write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match=r"could not detect the format of .*expected one of: generic .*Pass --format"):
        resolve_reader(tmp_path)
    with pytest.raises(UserError, match=r"unknown export format 'tiktok'; known formats: auto, generic, twitter_archive"):
        resolve_reader(tmp_path, "tiktok")


def test_every_format_has_a_reader():
    assert sorted(READERS) == ["bluesky", "bluesky_car", "generic", "mastodon", "mastodon_archive", "reddit",
                               "twitter_archive", "twitter_io"]


def test_explicit_format_on_a_file_of_another_format_quarantines_rather_than_guessing(tmp_path):
    path = tmp_path / "accounts.json"
    path.write_text(json.dumps(mastodon_accounts()))
    accounts, _, rejected = split(READERS["reddit"].read(path))
    assert accounts == [] and {r.reason for r in rejected} == {
        'expected a Reddit account object ({"kind": "t2", "data": {...}}) or a Listing'}


