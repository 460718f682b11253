"""The generic manifest reader on hostile input: each bad record is quarantined by line and reason,
and every valid record in the same file is kept."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from pipeline.ingest.readers import AccountRecord, Rejection, resolve_reader
from pipeline.ingest.readers.base import MAX_FIELD_CHARS, parse_timestamp
from pipeline.ingest.readers.generic import GenericManifestReader

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
    body = body.replace(b"caf\xe9", "caf\u00e9 \u2713".encode() + b"\xe9")  # mixed: UTF-8 elsewhere, one stray byte
    records, rejected = read(write(tmp_path, body))
    # duplicates are found by the ingest stage in the database (test_ingest_quarantines_duplicates...)
    assert [r.account_id for r in records] == ["1", "5", "6", "1", "9"]
    # one stray byte or NUL in one field repairs that field (issue 24): the record is kept, never the export lost
    assert records[1].bio == "caf\u00e9 \u2713\ufffd" and records[2].bio == "ab"
    reasons = {r.locator: r.reason for r in rejected}
    assert reasons == {
        "line 3": "platform and account_id are required",
        "line 4": "followers 'many' is not a whole number",
        "line 5": "created_at 'yesterday' is not a date (expected ISO 8601 or YYYY-MM-DD)",
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
    from pipeline.ingest.readers.base import FieldError

    with pytest.raises(FieldError):
        parse_timestamp(value)


def test_twitter_legacy_date():
    assert parse_timestamp("Wed Jun 23 13:04:14 +0000 2011") == datetime(2011, 6, 23, 13, 4, 14, tzinfo=timezone.utc)


# --- the ingest stage against a real PostgreSQL -------------------------------------------------

def _ingest(settings, run_key, export, fmt="auto"):
    from pipeline.core.db import ensure_schema
    from pipeline.core.runs import start_run
    from pipeline.ingest.load import ingest_export

    ensure_schema(settings)
    start_run(settings, run_key, str(export), fmt)
    return ingest_export(settings, run_key, export, fmt)


def _rows(settings, sql, **params):
    import sqlalchemy as sa

    from pipeline.core.db import transaction

    with transaction(settings) as conn:
        return [tuple(r) for r in conn.execute(sa.text(sql), params).all()]


def test_ingest_quarantines_duplicates_in_the_database_first_wins(settings, tmp_path):
    write(tmp_path, HEADER + b"x,1,first,,2020-01-01,5,\nx,2,two,,,,\nx,1,second,,2020-01-01,6,\n")
    result = _ingest(settings, "dup", tmp_path)
    assert (result.accounts, result.rejected) == (2, 1)
    assert _rows(settings, "select account_key, handle, source_locator from account_snapshots order by 1") == [
        ("x:1", "first", "line 2"), ("x:2", "two", "line 3")]
    assert _rows(settings, "select locator, reason from quarantine") == [
        ("line 4", "duplicate account x:1 (first at manifest.csv line 2)")]


def test_io_export_ingests_accounts_and_posts(settings, tmp_path):
    from export_fixtures import BIG_ID, HASH_A, HASH_B, write_io_export

    export = write_io_export(tmp_path / "io")
    result = _ingest(settings, "io", export)
    assert (result.export_format, result.accounts, result.posts, result.rejected) == ("twitter_io", 3, 3, 0)
    posts = _rows(settings, "select account_key, post_id, reposted_id, replied_id, quoted_id, urls, hashtags,"
                            " posted_at at time zone 'UTC' from posts order by post_id")
    assert [p[:5] for p in posts] == [
        (f"twitter:{HASH_A}", "1300000000000000001", None, None, None),
        (f"twitter:{HASH_B}", "1300000000000000002", "1300000000000000001", None, None),
        (f"twitter:{BIG_ID}", "1300000000000000003", None, "1300000000000000001", "1299999999999999999"),
    ]
    assert posts[0][5:] == (["https://granma.cu/a"], ["cuba", "cubaviva"], datetime(2020, 5, 1, 13, 45))
    assert posts[2][5] == ["https://a.example/x", "https://b.example/y"]


def _io_export_with_bad_posts(tmp_path):
    """The IO fixture plus a post by an account the export lacks and a repeated post id."""
    import csv as _csv

    from export_fixtures import HASH_A, IO_TWEET_COLUMNS, write_io_export

    export = write_io_export(tmp_path / "io", avatar_url=None)
    with (export / "cuba_092020_tweets_csv_hashed.csv").open("a", newline="", encoding="utf-8") as fh:
        writer = _csv.DictWriter(fh, IO_TWEET_COLUMNS, quoting=_csv.QUOTE_ALL, restval="")
        writer.writerow({"tweetid": "77", "userid": "someone-else", "tweet_text": "orphan", "tweet_time": "2020-05-03 10:00"})
        writer.writerow({"tweetid": "1300000000000000001", "userid": HASH_A, "tweet_text": "again",
                         "tweet_time": "2020-05-03 10:00"})
    return export


def test_posts_by_authors_missing_from_the_users_file_are_kept_and_duplicate_posts_quarantined(settings, tmp_path):
    """Issue 24: a tweet whose author has no row in the users file (lost, or never there) is kept, its author an
    account inferred from the tweet's own user columns (``inferred`` in the ledger), not an orphan."""
    export = _io_export_with_bad_posts(tmp_path)
    result = _ingest(settings, "io", export)
    assert (result.accounts, result.posts, result.rejected) == (4, 4, 1)
    assert _rows(settings, "select source_locator from account_snapshots where account_key = 'twitter:someone-else'") \
        == [("line 8 (author of posts)",)]
    # the first tweet spans lines 2-5 (its author's bio and its text hold line breaks)
    assert _rows(settings, "select source_file, locator, reason from quarantine order by locator") == [
        ("cuba_092020_tweets_csv_hashed.csv", "line 9",
         "duplicate post 1300000000000000001 (first at cuba_092020_tweets_csv_hashed.csv line 2)"),
    ]


def test_a_post_three_times_keeps_the_first_and_quarantines_both_repeats(settings, tmp_path):
    """The primary key's build is what finds duplicates; when it fails, every later copy is quarantined
    naming the first, and the first one's text is the one kept."""
    import csv as _csv

    from export_fixtures import HASH_A, IO_TWEET_COLUMNS, write_io_export

    export = write_io_export(tmp_path / "io", avatar_url=None)
    with (export / "cuba_092020_tweets_csv_hashed.csv").open("a", newline="", encoding="utf-8") as fh:
        writer = _csv.DictWriter(fh, IO_TWEET_COLUMNS, quoting=_csv.QUOTE_ALL, restval="")
        for text in ("first", "second", "third"):
            writer.writerow({"tweetid": "5", "userid": HASH_A, "tweet_text": text, "tweet_time": "2020-05-03 10:00"})
    result = _ingest(settings, "io", export)
    assert (result.posts, result.rejected) == (4, 2)
    assert _rows(settings, "select text from posts where post_id = '5'") == [("first",)]
    assert _rows(settings, "select locator, reason from quarantine order by length(locator), locator") == [
        ("line 9", "duplicate post 5 (first at cuba_092020_tweets_csv_hashed.csv line 8)"),
        ("line 10", "duplicate post 5 (first at cuba_092020_tweets_csv_hashed.csv line 8)"),
    ]


OTHER = "it's a \\ key"  # quotes and backslashes in a run key: its partition's bound and name


def test_posts_load_into_one_partition_per_run_and_reruns_replace_it(settings, tmp_path):
    """The run's posts are one partition of posts, rebuilt on rerun: same rows, the bad rows still
    quarantined, rows written into posts directly for the run moved out, other runs untouched."""
    from pipeline.core.db import transaction
    from pipeline.ingest.load import posts_partition

    export = _io_export_with_bad_posts(tmp_path)
    _ingest(settings, OTHER, export)
    first = _ingest(settings, "io", export)
    posts_sql = "select * from posts where run_key = :k order by account_key, post_id"
    before = _rows(settings, posts_sql, k="io")
    quarantined = _rows(settings, "select run_key, locator, reason from quarantine where run_key = 'io' order by 2")
    # a run whose posts were written straight into posts (they land in posts_default) is then ingested
    from pipeline.core.runs import start_run

    start_run(settings, "late", str(export), "auto")
    _rows(settings, "insert into posts (run_key, account_key, post_id, source_file, source_locator)"
                    " select 'late', account_key, 'stray', 'x', 'y' from account_snapshots where run_key = 'io' limit 1"
                    " returning 1")
    assert _rows(settings, "select count(*) from posts_default") == [(1,)]
    _ingest(settings, "late", export)
    assert _rows(settings, "select count(*) from posts_default") == [(0,)]
    assert _rows(settings, "select count(*) from posts where run_key = 'late' and post_id = 'stray'") == [(0,)]
    again = _ingest(settings, "io", export)
    assert (again.accounts, again.posts, again.rejected) == (first.accounts, first.posts, first.rejected) == (4, 4, 1)
    assert _rows(settings, posts_sql, k="io") == before
    assert _rows(settings, "select run_key, locator, reason from quarantine where run_key = 'io' order by 2") \
        == quarantined and len(quarantined) == 1
    assert _rows(settings, "select count(*) from posts where run_key = :k", k=OTHER) == [(4,)]
    _ingest(settings, OTHER, export)  # its rerun finds and replaces its partition
    assert _rows(settings, "select count(*) from posts where run_key = :k", k=OTHER) == [(4,)]
    with transaction(settings) as conn:
        names = {k: posts_partition(conn, k) for k in ("io", OTHER, "late", "missing")}
    assert len({names["io"], names[OTHER], names["late"]}) == 3 and names["missing"] is None
    assert _rows(settings, "select count(*) from pg_inherits where inhparent = 'posts'::regclass") == [(4,)]


def test_reingesting_an_identical_export_changes_nothing(settings, tmp_path):
    from conftest import table_contents
    from export_fixtures import write_io_export

    from pipeline.images.acquire import acquire_avatars

    export = write_io_export(tmp_path / "io", avatar_url=None)
    (export / "cuba_092020_users_csv_hashed.csv").open("a", encoding="utf-8").write('"x","","","","","","many","","",""\n')
    _ingest(settings, "same", export)
    acquire_avatars(settings, "same")
    before = table_contents(settings)
    assert len(before["account_snapshots"]) == 3 and len(before["posts"]) == 3 and len(before["quarantine"]) == 1
    _ingest(settings, "same", export)
    acquire_avatars(settings, "same")
    assert table_contents(settings) == before


def test_avatar_change_under_a_new_run_key_keeps_history(settings, tmp_path):
    from export_fixtures import image_bytes

    from pipeline.images.acquire import acquire_avatars

    export = tmp_path / "e"
    (export / "a").mkdir(parents=True)
    (export / "a" / "me.jpg").write_bytes(image_bytes((10, 10, 10)))
    write(export, b"platform,account_id,avatar\nx,1,a/me.jpg\n")
    _ingest(settings, "day1", export)
    acquire_avatars(settings, "day1")
    (export / "a" / "me.jpg").write_bytes(image_bytes((250, 250, 250)))  # switched to another face
    _ingest(settings, "day2", export)
    acquire_avatars(settings, "day2")
    history = _rows(settings, "select run_key, sha256 from account_avatars where account_key = 'x:1' order by run_key")
    assert [r[0] for r in history] == ["day1", "day2"] and history[0][1] != history[1][1]
    assert _rows(settings, "select count(*) from images") == [(2,)]
    assert _rows(settings, "select first_seen_run from accounts") == [("day1",)]


def test_unreadable_export_is_a_user_error_and_keeps_the_previous_rows(settings, tmp_path):
    from pipeline.errors import UserError

    write(tmp_path, HEADER + b"x,1,a,,,,\n")
    _ingest(settings, "r", tmp_path)
    (tmp_path / "manifest.csv").write_bytes(b"platform,handle\nx,a\n")
    with pytest.raises(UserError, match=r"cannot read .* as generic: manifest.csv has no platform,account_id header \(missing account_id; "):
        _ingest(settings, "r", tmp_path, "generic")
    assert _rows(settings, "select account_key from account_snapshots") == [("x:1",)]


@pytest.mark.slow
def test_whole_audit_detects_and_runs_an_io_release_and_a_personal_archive(settings, demo_data, tmp_path):
    from export_fixtures import write_io_export, write_personal_archive

    from pipeline.audit import audit_export

    io_export = write_io_export(tmp_path / "io", avatar_url=None)
    archive = write_personal_archive(tmp_path / "drop" / "twitter-2024.zip")
    for run_key, export in (("io", io_export), ("archive", archive)):
        audit_export(settings, export, run_key=run_key, detector=str(demo_data["detector"]))
    assert _rows(settings, "select run_key, export_format, status from runs order by 1") == [
        ("archive", "twitter_archive", "succeeded"), ("io", "twitter_io", "succeeded")]
    assert _rows(settings, "select run_key, count(*) from account_avatars where status = 'stored' group by 1 order by 1") == [
        ("archive", 1), ("io", 2)]
    assert _rows(settings, "select run_key, count(*) from posts group by 1 order by 1") == [("archive", 2), ("io", 3)]
    scored = _rows(settings, "select count(distinct a.sha256) from account_avatars a join image_scores s using (sha256)")
    assert scored == [(3,)]
