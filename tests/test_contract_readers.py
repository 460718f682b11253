"""The reader contract, run over every registered reader (modelled on python-threatexchange's
SignalTypeAutoTest): a new reader gets these checks by registering and adding its sample here.

For each reader: its sample is detected as its own format; every record is well formed; what it
yields matches what it says it ``reads``; damaged input is quarantined, never raised, and loses no
valid record; the zip of the export gives the same records as the folder. The docs' format table
and the CLI's --format choices are checked against the registry.
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import replace
from datetime import timezone
from pathlib import Path

import pytest
from conftest import REPO, SHARED_DATA
from export_fixtures import (
    bluesky_views,
    io_users_rows,
    mastodon_accounts,
    mastodon_archive_members,
    personal_archive_members,
    write_bluesky_car,
    write_bluesky_export,
    write_reddit_export,
    write_reddit_history,
)

from pipeline.core.registry import Registry
from pipeline.ingest.readers import READERS, AccountRecord, ExportDate, PostRecord, Rejection, format_choices, resolve_reader
from pipeline.ingest.readers.base import ExportReader, Ignored
from ledger_checks import assert_reader_balances, read_counted

KNOWN_READS = {"accounts", "avatars", "posts", "reposts"}


def _write(root: Path, members: dict[str, bytes]) -> Path:
    for name, data in members.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def sample_generic(root: Path) -> Path:
    return _write(root, {"manifest.csv": b"platform,account_id,handle,avatar,created_at\n"
                                         b"x,1,ana,img/a.png,2020-01-01\nx,2,bob,https://i.example/b.png,\n",
                         "img/a.png": b"png"})


def sample_twitter_io(root: Path) -> Path:
    import csv
    import io

    from export_fixtures import IO_TWEET_COLUMNS, IO_USER_COLUMNS

    users = io.StringIO()
    writer = csv.DictWriter(users, IO_USER_COLUMNS)
    writer.writeheader()
    writer.writerows(io_users_rows())
    tweets = io.StringIO()
    writer = csv.DictWriter(tweets, IO_TWEET_COLUMNS, restval="")
    writer.writeheader()
    first = io_users_rows()[0]["userid"]
    writer.writerows([{"tweetid": "10", "userid": first, "tweet_text": "hola", "tweet_time": "2020-05-01 13:45",
                       "is_retweet": "False"},
                      {"tweetid": "11", "userid": io_users_rows()[1]["userid"], "tweet_text": "RT", "is_retweet": "True",
                       "retweet_tweetid": "10", "tweet_time": "2020-05-01 13:46"}])
    return _write(root, {"op_users_csv_hashed.csv": users.getvalue().encode(),
                         "op_tweets_csv_hashed.csv": tweets.getvalue().encode(),
                         "avatars.csv": f"userid,avatar\n{first},media/a.jpg\n".encode(), "media/a.jpg": b"jpg"})


def sample_bluesky(root: Path) -> Path:
    write_bluesky_export(root)
    for name, body in bluesky_views().items():
        (root / name).write_text(json.dumps(body))
    did = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
    (root / "posts.json").write_text(json.dumps({"records": [
        {"uri": f"at://{did}/app.bsky.feed.post/3k1", "cid": "x",
         "value": {"$type": "app.bsky.feed.post", "text": "hola", "createdAt": "2024-01-01T00:00:00Z"}},
        {"uri": f"at://{did}/app.bsky.feed.repost/3k2", "cid": "y",
         "value": {"$type": "app.bsky.feed.repost", "createdAt": "2024-01-02T00:00:00Z",
                   "subject": {"uri": "at://did:plc:z72i7hdynmk6r22z27h6tvur/app.bsky.feed.post/3k0", "cid": "z"}}}]}))
    return root


def sample_bluesky_car(root: Path) -> Path:
    write_bluesky_car(root / "repo.car")
    return root


def sample_reddit(root: Path) -> Path:
    write_reddit_export(root)
    write_reddit_history(root / "history")
    listing = json.loads((root / "history" / "mapmaker" / "submitted.json").read_text())
    listing["data"]["children"][0]["data"]["author_fullname"] = "t2_1w72"  # a crosspost by spez too
    listing["data"]["children"] = listing["data"]["children"][1:2]
    listing["data"]["children"][0]["data"].update(author_fullname="t2_1w72", name="t3_s1", author="spez")
    (root / "spez" / "submitted.json").write_text(json.dumps(listing))
    return root


def sample_mastodon(root: Path) -> Path:
    return _write(root, {"accounts.json": json.dumps(mastodon_accounts()).encode()})


SAMPLES = {
    "generic": sample_generic,
    "twitter_archive": lambda root: _write(root, {**personal_archive_members(), "data/tweets-part2.js": (
        'window.YTD.tweets.part2 = [{"tweet": {"id_str": "7", "created_at": "Thu Jun 24 09:00:00 +0000 2021",'
        ' "full_text": "RT @otra: la noticia", "entities": {}}}]').encode()}),
    "twitter_io": sample_twitter_io,
    "bluesky_car": sample_bluesky_car,
    "bluesky": sample_bluesky,
    "mastodon_archive": lambda root: _write(root, mastodon_archive_members()),
    "reddit": sample_reddit,
    "mastodon": sample_mastodon,
}

# Damage: a record or file each reader must quarantine, keeping every valid record.
DAMAGE = {
    "generic": lambda root: (root / "manifest.csv").open("a").write('x,,no id\nx,3,"open quote\n'),
    "twitter_archive": lambda root: (root / "data" / "tweets-part1.js").write_text(
        'window.YTD.tweets.part1 = [{"tweet": {"id_str": "9", "full_'),
    "twitter_io": lambda root: (root / "op_users_csv_hashed.csv").open("a").write('"",x\n"9","a","b",extra,,,,,,,,,\n'),
    "bluesky_car": lambda root: (root / "truncated.car").write_bytes((root / "repo.car").read_bytes()[:-7]),
    "bluesky": lambda root: (root / "broken.json").write_text('[{"did": "did:plc:../x", "handle": "h"}, 5, {"val'),
    "mastodon_archive": lambda root: (root / "outbox.json").write_text(json.dumps(
        {**json.loads((root / "outbox.json").read_text()),
         "orderedItems": [*json.loads((root / "outbox.json").read_text())["orderedItems"], "not an activity",
                          {"type": "Announce", "published": "x"}]})),
    "reddit": lambda root: (root / "broken.json").write_text('{"kind": "Listing", "data": {"children": [{"kind": "t3"}]}}\n{"x'),
    "mastodon": lambda root: (root / "broken.json").write_text('[{"username": "x"}, "str", {"id": 1}]'),
}

REAL_SAMPLES = {
    "twitter_io": [SHARED_DATA / "twitter_io", SHARED_DATA / "exports/coordination/CooRTweet-russian-as-io"],
    "bluesky_car": [SHARED_DATA / "exports/bluesky/indigo-testdata-car"],
    "bluesky": [SHARED_DATA / "exports/bluesky/bskyr-actor-views", SHARED_DATA / "exports/bluesky/bskyr-repo-records"],
    "reddit": [SHARED_DATA / "exports/reddit/praw-cassettes", SHARED_DATA / "exports/reddit/asyncpraw-cassettes"],
    "mastodon": [SHARED_DATA / "exports/mastodon/mastodonpy-cassettes",
                 SHARED_DATA / "exports/mastodon/mastodon-docs-examples"],
}

NAMES = list(READERS.names())


def test_every_registered_reader_has_a_sample_and_damage():
    assert sorted(SAMPLES) == sorted(NAMES) == sorted(DAMAGE)


def test_registry_refuses_a_duplicate_reader_name():
    registry: Registry[ExportReader] = Registry("export format")
    registry.register("bluesky", READERS["bluesky"])
    with pytest.raises(ValueError, match="already registered"):
        registry.register("bluesky", READERS["mastodon"])


def items_of(reader: ExportReader, path: Path) -> list:
    return list(reader.read(path))


def valid(items: list) -> list:
    return [i for i in items if isinstance(i, (AccountRecord, PostRecord))]


@pytest.fixture(params=NAMES)
def case(request, tmp_path):
    name = request.param
    root = SAMPLES[name](tmp_path / "export")
    return name, READERS[name], root


def test_metadata(case):
    name, reader, _ = case
    assert reader.name == name and reader.hint.strip() and "%" not in reader.hint
    assert set(reader.reads) <= KNOWN_READS and "accounts" in reader.reads
    assert reader.sample.strip()


def test_detects_its_own_sample(case):
    name, reader, root = case
    assert reader.detect(root)
    assert resolve_reader(root).name == name


@pytest.mark.parametrize("name", [n for n in NAMES if n in REAL_SAMPLES])
def test_detects_its_real_samples(name):
    present = [p for p in REAL_SAMPLES[name] if p.exists()]
    if not present:
        pytest.skip(f"no real sample for {name} under {SHARED_DATA}")
    for path in present:
        assert resolve_reader(path).name == name, path
        assert any(isinstance(i, AccountRecord) for i in READERS[name].read(path)), path


def test_every_unit_is_accounted_for(case):
    """The ledger contract (issue 24): every unit a reader's plumbing saw became a record, a rejection or
    an ignored unit, file by file, for the sample each reader is registered with."""
    name, reader, root = case
    items, ledger = read_counted(reader, root)
    assert ledger.files, f"{name} counted no unit of {root}"
    assert_reader_balances(ledger)


def test_records_are_well_formed_and_match_what_it_reads(case):
    name, reader, root = case
    items = items_of(reader, root)
    assert all(isinstance(i, (AccountRecord, PostRecord, Rejection, ExportDate, Ignored)) for i in items)
    accounts = [i for i in items if isinstance(i, AccountRecord)]
    posts = [i for i in items if isinstance(i, PostRecord)]
    assert accounts
    for record in accounts + posts:
        assert record.platform and record.platform == record.platform.lower()
        assert record.account_id and record.source_file and record.source_locator
    for post in posts:
        assert post.post_id and (post.posted_at is None or post.posted_at.tzinfo == timezone.utc)
        assert all(isinstance(u, str) and u for u in post.urls)
        assert all(h == h.lower() and not h.startswith("#") for h in post.hashtags)
    for account in accounts:
        assert account.created_at is None or account.created_at.tzinfo == timezone.utc
    assert {a.account_key for a in accounts} >= {p.account_key for p in posts}  # no orphan posts
    assert bool(posts) == ("posts" in reader.reads)
    assert any(p.reposted_id for p in posts) == ("reposts" in reader.reads)
    assert any(a.avatar_ref for a in accounts) == ("avatars" in reader.reads)
    for rejection in (i for i in items if isinstance(i, Rejection)):
        assert rejection.source_file and rejection.locator and rejection.reason and len(rejection.excerpt) <= 500


def test_bad_input_is_quarantined_not_raised(case):
    name, reader, root = case
    before = items_of(reader, root)
    DAMAGE[name](root)
    after = items_of(reader, root)  # must not raise
    rejected_before = [i for i in before if isinstance(i, Rejection)]
    rejected_after = [i for i in after if isinstance(i, Rejection)]
    assert len(rejected_after) > len(rejected_before)
    assert set(valid(before)) <= set(valid(after))  # every valid record is kept


def _unzipped(record, zip_name: str):
    prefix = f"{zip_name}!"
    out = replace(record, source_file=record.source_file.removeprefix(prefix))
    if isinstance(record, AccountRecord) and record.avatar_ref:
        out = replace(out, avatar_ref=record.avatar_ref.removeprefix(f"zip:{prefix}"))
    return out


def test_zip_and_folder_give_the_same_records(case, tmp_path):
    name, reader, root = case
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(root).as_posix())
    assert reader.detect(archive) and resolve_reader(archive).name == name
    folder = [i for i in items_of(reader, root) if not isinstance(i, ExportDate)]
    zipped = [_unzipped(i, archive.name) if isinstance(i, (AccountRecord, PostRecord)) else i
              for i in items_of(reader, archive) if not isinstance(i, ExportDate)]
    assert valid(zipped) == valid(folder)
    assert [(r.locator, r.reason) for r in zipped if isinstance(r, Rejection)] == \
        [(r.locator, r.reason) for r in folder if isinstance(r, Rejection)]


def test_cli_format_choices_come_from_the_registry():
    from pipeline.cli import build_parser

    parser = build_parser()
    audit = next(a for a in parser._subparsers._group_actions[0].choices["audit"]._actions if a.dest == "format")
    assert list(audit.choices) == format_choices() == ["auto", *NAMES]
    assert all(READERS[n].hint in audit.help for n in NAMES)


def test_docs_format_table_matches_the_registry():
    text = (REPO / "docs" / "formats.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `([a-z_]+)` \|(.*)$", text.split("## Export formats", 1)[1].split("\n## ", 1)[0], re.M)
    table = {}
    for fmt, rest in rows:
        cells = [c.strip() for c in rest.split("|")]
        if len(cells) >= 7:  # | what to pass | accounts | avatars | posts | reposts | sample |
            table[fmt] = {k for k, cell in zip(("accounts", "avatars", "posts", "reposts"), cells[1:5], strict=True)
                          if cell.startswith("yes")}
    assert list(table) == NAMES
    for fmt in NAMES:
        assert table[fmt] == set(READERS[fmt].reads), fmt
