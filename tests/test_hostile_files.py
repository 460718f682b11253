"""Hostile files for the readers (issue 13, items 2 and 10): deep nesting, endless lines, zip bombs.
Each is refused with a reason naming the record, and the valid records around it are kept."""

from __future__ import annotations

import io
import json
import zipfile

import pytest
from export_fixtures import mastodon_accounts, reddit_about

from pipeline.ingest.archives import ExportSource, InflateLimits, UnsafeMember
from pipeline.ingest.readers import READERS, AccountRecord, Rejection
from pipeline.ingest.readers.textio import (
    MAX_JSON_DEPTH,
    TOO_DEEP,
    _lines,
    csv_rows,
    json_depth,
    json_records,
)

DEEP = "[" * 1000 + "]" * 1000  # raised RecursionError in the json module: traceback, exit 1, 0 rows


def _split(items):
    kept = [i for i in items if isinstance(i, AccountRecord)]
    return kept, [(r.locator, r.reason) for r in items if isinstance(r, Rejection)]


def test_deep_json_array_record_is_quarantined_and_the_rest_kept(tmp_path):
    ana, bob = mastodon_accounts()
    path = tmp_path / "accounts.json"
    path.write_text("[" + json.dumps(ana) + ", " + DEEP + ", " + json.dumps(bob) + "]")
    kept, rejected = _split(list(READERS["mastodon"].read(path)))
    assert [a.account_id for a in kept] == ["ana@mastodon.social", "bob@fosstodon.org"]
    assert rejected == [("record 2", TOO_DEEP)]


def test_deep_json_line_in_bluesky_and_reddit(tmp_path):
    ok = {"did": "did:plc:ewvi7nxzyoun6zhxrhs64oiz", "value": {"$type": "app.bsky.actor.profile", "displayName": "ok"}}
    bsky = tmp_path / "bsky.jsonl"
    bsky.write_text(json.dumps(ok) + "\n" + '{"did": ' + DEEP + "}\n" + json.dumps(ok) + "\n")
    kept, rejected = _split(list(READERS["bluesky"].read(bsky)))
    assert [a.display_name for a in kept] == ["ok", "ok"]  # lines 1 and 3 (ingest keeps the first of a DID)
    assert rejected == [("line 2", TOO_DEEP)]
    reddit = tmp_path / "about.json"
    reddit.write_text(json.dumps([reddit_about("mapmaker", "abc12")])[:-1] + ", {\"kind\": " + DEEP + "}]")
    kept, rejected = _split(list(READERS["reddit"].read(reddit)))
    assert [a.handle for a in kept] == ["mapmaker"] and rejected == [("record 2", TOO_DEEP)]


def test_deep_single_value_file_is_refused_not_a_traceback(tmp_path):
    path = tmp_path / "one.json"
    path.write_text('{"a": ' + "[" * 5000 + "]" * 5000 + "}")
    items = list(json_records(io.StringIO(path.read_text()), "one.json", array_only=True))
    assert [(loc, r.reason) for loc, r in items] == [("file", TOO_DEEP)]


def test_depth_limit_is_exact_and_strings_do_not_count():
    ok = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert json_depth(ok) <= MAX_JSON_DEPTH
    assert json_depth("[" + ok + "]") == MAX_JSON_DEPTH + 1
    assert json_depth(json.dumps(["[" * 500, {"k": "{" * 500}])) == 2  # brackets inside strings do not count
    items = list(json_records(io.StringIO("[" + ok + ", " + json.dumps("[" * 500) + "]"), "x.json"))
    assert [v for _, v in items][1] == "[" * 500 and not isinstance(items[0][1], Rejection)


def test_record_split_across_chunks_inside_a_string_with_escapes():
    records = [{"bio": 'a \\" [ { ' * 50 + "x" * i, "n": [i, [i]]} for i in range(200)]
    text = json.dumps(records)
    for chunk in (7, 64, 1000):
        got = [v for _, v in json_records(io.StringIO(text), "x.json", chunk=chunk)]
        assert got == records, chunk


def test_long_json_line_is_refused_while_streaming_and_the_next_lines_kept():
    lines = list(_lines("", io.StringIO('{"a": 1}\n' + "x" * 5000 + "\n" + '{"b": 2}\n'), chunk=100, eof=False,
                        max_chars=1000))
    assert lines[0] == '{"a": 1}' and lines[2] == '{"b": 2}'
    assert len(lines[1].head) == 500  # only the head was ever kept, never the 5000 characters


def test_jsonl_splitting_is_linear_per_chunk():
    """Many chunks of a single endless line: each chunk is searched once (no re-split of the buffer)."""
    text = "y" * 3_000_000
    got = list(_lines("", io.StringIO(text), chunk=1000, eof=False, max_chars=10_000_000))
    assert got == [text]


def test_long_csv_line_is_quarantined_and_the_next_rows_kept():
    from pipeline.ingest.readers import textio

    data = "id,name\n1,a\n2," + "z" * 3000 + "\n3,c\n"
    lines_cls = textio._CountedLines
    old = lines_cls.__init__.__defaults__
    lines_cls.__init__.__defaults__ = (1000,)
    try:
        rows = list(csv_rows(io.StringIO(data), "u.csv", ("id",)))
    finally:
        lines_cls.__init__.__defaults__ = old
    assert [(loc, r["id"]) for loc, r in rows if isinstance(r, dict)] == [("line 2", "1"), ("line 4", "3")]
    assert [(loc, r.reason) for loc, r in rows if isinstance(r, Rejection)] == [
        ("line 3", "line longer than 1000 characters")]


def _bomb(path, inflated: int, name: str = "data/padding.json") -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf, zf.open(name, "w", force_zip64=True) as fh:
        block = b" " * (1 << 20)
        for _ in range(inflated >> 20):
            fh.write(block)


def test_zip_member_that_inflates_past_the_ratio_is_refused_at_the_cap(tmp_path):
    archive = tmp_path / "bomb.zip"
    _bomb(archive, 64 << 20)
    assert archive.stat().st_size < 1 << 20
    with ExportSource(archive, InflateLimits(ratio_grace=1 << 20)) as source:
        fh = source.open_binary("data/padding.json")
        with pytest.raises(UnsafeMember, match="inflates more than 200:1"):
            while fh.read(1 << 16):
                pass
        compressed = zipfile.ZipFile(archive).getinfo("data/padding.json").compress_size
        assert fh.raw.inflated <= 200 * compressed + (1 << 20) < 64 << 20  # stopped at the ratio, not at the end


def test_zip_member_and_export_caps(tmp_path):
    archive = tmp_path / "two.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("a.json", b"1" * 300_000)
        zf.writestr("b.json", b"2" * 300_000)
    with ExportSource(archive, InflateLimits(member_bytes=200_000)) as source, \
            pytest.raises(UnsafeMember, match="inflates past the 200000-byte limit"):
        source.open_binary("a.json").read()
    with ExportSource(archive, InflateLimits(export_bytes=500_000)) as source:
        assert len(source.open_binary("a.json").read()) == 300_000
        with pytest.raises(UnsafeMember, match="per export"):
            source.open_binary("b.json").read()


def test_personal_archive_bomb_member_is_quarantined_and_the_account_kept(tmp_path):
    """The tweets file of a personal archive inflates 1000:1; the account and earlier posts stay."""
    from export_fixtures import write_personal_archive

    archive = tmp_path / "twitter-archive.zip"
    write_personal_archive(archive)
    with zipfile.ZipFile(archive, "a", zipfile.ZIP_DEFLATED) as zf, \
            zf.open("data/tweets-part1.js", "w", force_zip64=True) as fh:
        fh.write(b"window.YTD.tweets.part1 = [")
        for _ in range(40):
            fh.write(b" " * (1 << 20))
        fh.write(b"]")
    from pipeline.ingest.readers import twitter_archive

    limits = InflateLimits(ratio_grace=1 << 20)
    original = twitter_archive.ExportSource
    twitter_archive.ExportSource = lambda path: original(path, limits)
    try:
        items = list(READERS["twitter_archive"].read(archive))
    finally:
        twitter_archive.ExportSource = original
    kept, rejected = _split(items)
    assert [a.account_id for a in kept] == ["1234567890"]
    assert any("a zip bomb?" in reason for _, reason in rejected), rejected
