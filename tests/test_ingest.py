"""The generic manifest reader on hostile input: each bad record is quarantined by line and reason,
and every valid record in the same file is kept."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from pipeline.readers import AccountRecord, Rejection, resolve_reader
from pipeline.readers.base import MAX_FIELD_CHARS, parse_timestamp
from pipeline.readers.generic import GenericManifestReader

HEADER = b"platform,account_id,handle,bio,created_at,followers,avatar\n"


def read(path):
    items = list(GenericManifestReader().read(path))
    return ([i for i in items if isinstance(i, AccountRecord)], [i for i in items if isinstance(i, Rejection)])


def write(tmp_path, body: bytes, name="manifest.csv"):
    (tmp_path / name).write_bytes(body)
    return tmp_path


def test_multiline_quoted_bio_and_dates(tmp_path):
    body = HEADER + b'x,1,alice,"line one\nline two, with comma",2020-05-01,10,\n' \
                    b'x,2,bob,,1589000000,,\n' \
                    b'x,3,carol,,2020-05-01 13:45,0,\n'
    records, rejected = read(write(tmp_path, body))
    assert rejected == []
    assert [r.account_id for r in records] == ["1", "2", "3"]
    assert records[0].bio == "line one\nline two, with comma"
    assert records[1].created_at == datetime(2020, 5, 9, 4, 53, 20, tzinfo=timezone.utc)
    assert records[2].created_at == datetime(2020, 5, 1, 13, 45, tzinfo=timezone.utc)
    assert records[2].source_locator == "line 5"  # the bio of line 2 spans two physical lines


def test_bad_rows_are_quarantined_and_valid_rows_kept(tmp_path):
    body = (HEADER
            + b"x,1,ok1,,2020-01-01,5,\n"
            + b"x,,noid,,2020-01-01,5,\n"                       # missing id
            + b"x,3,count,,2020-01-01,many,\n"                  # bad number
            + b"x,4,date,,yesterday,5,\n"                       # bad date
            + b"x,5,latin,caf\xe9,2020-01-01,5,\n"              # Latin-1 byte in a UTF-8 file
            + b"x,6,nul,a\x00b,2020-01-01,5,\n"                 # NUL byte
            + b"x,1,dup,,2020-01-01,5,\n"                       # duplicate id
            + b"x,8,extra,bio,2020-01-01,5,a.png,surplus\n"     # broken quoting: more cells than columns
            + b"x,9,ok2,,2020-01-01,5,\n")
    records, rejected = read(write(tmp_path, body))
    assert [r.account_id for r in records] == ["1", "9"]
    reasons = {r.locator: r.reason for r in rejected}
    assert reasons == {
        "line 3": "platform and account_id are required",
        "line 4": "followers 'many' is not a whole number",
        "line 5": "created_at 'yesterday' is not a date (expected ISO 8601 or YYYY-MM-DD)",
        "line 6": "bio is not valid UTF-8",
        "line 7": "bio contains a NUL byte",
        "line 8": "duplicate account x:1 (first at line 2)",
        "line 9": "more cells than header columns (broken quoting?)",
    }
    assert all(r.source_file == "manifest.csv" and len(r.excerpt) <= 500 for r in rejected)


def test_huge_field_is_refused_with_bounded_excerpt(tmp_path):
    huge = b"A" * (10 * 1024 * 1024)
    body = HEADER + b"x,1,big," + huge + b",2020-01-01,1,\n" + b"x,2,small,,2020-01-01,1,\n"
    records, rejected = read(write(tmp_path, body))
    assert [r.account_id for r in records] == ["2"]
    assert len(rejected) == 1 and rejected[0].locator == "line 2"
    assert "field larger than field limit" in rejected[0].reason or str(MAX_FIELD_CHARS) in rejected[0].reason
    assert len(rejected[0].excerpt) <= 500


def test_unterminated_quote_does_not_lose_earlier_rows(tmp_path):
    body = HEADER + b"x,1,ok,,2020-01-01,1,\n" + b'x,2,open,"never closed,2020-01-01,1,\n'
    records, rejected = read(write(tmp_path, body))
    assert [r.account_id for r in records] == ["1"]
    assert [(r.locator, r.reason) for r in rejected] == [("line 3", "fewer cells than header columns (broken quoting?)")]


def test_jsonl_manifest(tmp_path):
    lines = [json.dumps({"platform": "Mastodon", "account_id": "42", "handle": "x", "followers": 3}),
             "[1, 2]", "{not json", json.dumps({"platform": "m", "handle": "no id"}), ""]
    records, rejected = read(write(tmp_path, "\n".join(lines).encode(), "manifest.jsonl"))
    assert [(r.platform, r.account_id, r.followers) for r in records] == [("mastodon", "42", 3)]
    assert [(r.locator, r.reason.split(":")[0]) for r in rejected] == [
        ("line 2", "not a JSON object"), ("line 3", "not JSON"), ("line 4", "platform and account_id are required")]


def test_utf8_bom_header(tmp_path):
    records, rejected = read(write(tmp_path, b"\xef\xbb\xbf" + HEADER + b"x,1,a,,,,\n"))
    assert [r.account_id for r in records] == ["1"] and rejected == []
    assert resolve_reader(tmp_path).name == "generic"


@pytest.mark.parametrize("value", ["2020-13-45", "12345678901234567890", "Tue Feb 30 10:00:00 +0000 2020"])
def test_impossible_dates(value):
    from pipeline.readers.base import FieldError

    with pytest.raises(FieldError):
        parse_timestamp(value)


def test_twitter_legacy_date():
    assert parse_timestamp("Wed Jun 23 13:04:14 +0000 2011") == datetime(2011, 6, 23, 13, 4, 14, tzinfo=timezone.utc)
