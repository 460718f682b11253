"""Issue 14 through the database: the export's own date as the as-of of account ages (fix 7),
float-written ids resolved to posts (fix 5), avatars read out of zipped exports, and an audit
without a detector (fix 9)."""

from __future__ import annotations

import csv
import json
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa
from conftest import SHARED_DATA
from export_fixtures import (
    IO_TWEET_COLUMNS,
    write_bluesky_car,
    write_mastodon_archive,
    write_personal_archive,
)

from pipeline.core.db import ensure_schema, transaction
from pipeline.core.runs import start_run
from pipeline.errors import UserError
from pipeline.ingest.load import ingest_export

CARS = SHARED_DATA / "exports" / "bluesky" / "indigo-testdata-car"


def ingest(settings, run_key, export, fmt="auto"):
    ensure_schema(settings)
    start_run(settings, run_key, str(export), fmt)
    return ingest_export(settings, run_key, export, fmt)


def one(settings, sql, **params):
    with transaction(settings) as conn:
        return conn.execute(sa.text(sql), params).one()


def ages(settings, run_key):
    from pipeline.signals.aggregate import aggregate_run

    aggregate_run(settings, run_key)
    with transaction(settings) as conn:
        return dict(conn.execute(sa.text("select account_key, account_age_days from account_signals where run_key = :k"),
                                 {"k": run_key}).all())


def test_personal_archive_age_is_measured_at_the_archive_date(settings, tmp_path):
    manifest = {"userInfo": {"accountId": "1234567890", "userName": "maria_lopez84"},
                "archiveInfo": {"generationDate": "2024-01-15T08:00:00.000Z", "isPartialArchive": False}}
    archive = write_personal_archive(tmp_path / "a.zip", {
        "data/manifest.js": ("window.__THAR_CONFIG = " + json.dumps(manifest)).encode()})
    ingest(settings, "arch", archive)
    row = one(settings, "select export_as_of, export_as_of_source from runs where run_key = 'arch'")
    assert row.export_as_of == datetime(2024, 1, 15, 8, tzinfo=timezone.utc)
    assert row.export_as_of_source == "data/manifest.js archiveInfo.generationDate"
    created = datetime(2011, 6, 23, 13, 4, 14, tzinfo=timezone.utc)
    assert float(ages(settings, "arch")["twitter:1234567890"]) == pytest.approx(
        (row.export_as_of - created).total_seconds() / 86400, abs=0.001)


def test_single_account_without_a_stated_date_uses_its_newest_post(settings, tmp_path):
    ingest(settings, "masto", write_mastodon_archive(tmp_path / "m.zip"))
    row = one(settings, "select export_as_of, export_as_of_source from runs where run_key = 'masto'")
    assert (row.export_as_of, row.export_as_of_source) == (datetime(2024, 5, 3, 10, tzinfo=timezone.utc), "newest post")
    age = float(ages(settings, "masto")["mastodon:ana@mastodon.social"])
    assert age == pytest.approx((datetime(2024, 5, 3, 10) - datetime(2019, 3, 1)).total_seconds() / 86400, abs=0.001)
    with transaction(settings) as conn:
        contributions = conn.execute(sa.text("select contributions from account_signals where run_key = 'masto'")).scalar_one()
    assert "new_account" not in contributions  # a 2019 account was "0 days old" before


def test_multi_account_export_keeps_the_newest_creation_as_of(settings, tmp_path):
    export = tmp_path / "g"
    export.mkdir()
    (export / "manifest.csv").write_text("platform,account_id,created_at\nx,1,2020-01-01\nx,2,2021-01-01\n")
    ingest(settings, "multi", export)
    assert one(settings, "select export_as_of from runs where run_key = 'multi'").export_as_of is None
    assert {k: float(v) for k, v in ages(settings, "multi").items()} == {"x:1": pytest.approx(366.0), "x:2": 0.0}


@pytest.mark.skipif(not CARS.exists(), reason=f"the real CAR samples are not at {CARS}")
def test_real_car_commit_rev_is_the_export_date(settings, tmp_path):
    car = tmp_path / "greenground.repo.car"
    car.write_bytes((CARS / "greenground.repo.car").read_bytes())
    ingest(settings, "car", car)
    row = one(settings, "select export_as_of, export_as_of_source from runs where run_key = 'car'")
    assert row.export_as_of_source == "greenground.repo.car commit rev 3k67up3j7hf2x"
    assert row.export_as_of.year == 2023


def test_car_posts_reach_the_posts_table(settings, tmp_path):
    car = write_bluesky_car(tmp_path / "repo.car")
    result = ingest(settings, "carp", car)
    assert (result.export_format, result.accounts, result.posts) == ("bluesky_car", 1, 3)
    with transaction(settings) as conn:
        reposts = conn.execute(sa.text(
            "select count(*) from posts where run_key = 'carp' and reposted_id is not null")).scalar_one()
    assert reposts == 1


def test_float_ids_resolve_at_ingest(settings, tmp_path):
    rows = [
        {"tweetid": "1143433555240001537", "userid": "42", "tweet_text": "original", "tweet_time": "2020-01-01 00:00"},
        {"tweetid": "1143433555240009999", "userid": "43", "tweet_text": "reply", "tweet_time": "2020-01-01 00:01",
         "in_reply_to_tweetid": "1.1434335552400015e+18"},
        {"tweetid": "1143433555240010000", "userid": "43", "tweet_text": "RT", "tweet_time": "2020-01-01 00:02",
         "is_retweet": "True", "retweet_tweetid": "1.1434335552400015e+18"},
        {"tweetid": "1143433555240010001", "userid": "42", "tweet_text": "q", "tweet_time": "2020-01-01 00:03",
         "quoted_tweet_tweetid": "9.9e+17"},
    ]
    path = tmp_path / "t_tweets_csv_hashed.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, IO_TWEET_COLUMNS, restval="")
        writer.writeheader()
        writer.writerows({"user_screen_name": r["userid"], **r} for r in rows)
    ingest(settings, "floats", path)
    with transaction(settings) as conn:
        got = conn.execute(sa.text("select post_id, replied_id, reposted_id, quoted_id from posts where run_key = 'floats'"
                                   " order by post_id")).all()
    assert [tuple(r) for r in got] == [
        ("1143433555240001537", None, None, None),
        ("1143433555240009999", "1143433555240001537", None, None),  # the post whose id rounds to the same double
        ("1143433555240010000", None, "1143433555240001537", None),
        ("1143433555240010001", None, None, "990000000000000000"),  # not in the export: the float's integer
    ]


def test_avatar_inside_a_zipped_mastodon_archive_is_acquired(settings, tmp_path):
    from pipeline.images.acquire import acquire_avatars

    ingest(settings, "mz", write_mastodon_archive(tmp_path / "m.zip"))
    acquire_avatars(settings, "mz")
    row = one(settings, "select status, reason from account_avatars where run_key = 'mz'")
    assert (row.status, row.reason) == ("stored", None)


@pytest.mark.slow
def test_audit_without_a_detector_runs_and_records_the_warning(settings, tmp_path):
    from pipeline.audit import NO_DETECTOR_WARNING, audit_export

    archive = write_personal_archive(tmp_path / "a.zip")
    with pytest.raises(UserError, match="no default detector"):
        audit_export(settings, archive, run_key="strict", require_detector=True)
    summary = audit_export(settings, archive, run_key="lenient")
    assert summary["warnings"] == [NO_DETECTOR_WARNING] and summary["accounts"] == 1
    assert summary["detector_id"] is None and summary["synthetic_avatars"] == 0
    with transaction(settings) as conn:
        scores = conn.execute(sa.text("select count(*) from image_scores")).scalar_one()
        status = conn.execute(sa.text("select status from runs where run_key = 'lenient'")).scalar_one()
    assert (scores, status) == (0, "succeeded")
    with pytest.raises(UserError, match="no detector 'nope'"):  # a named detector that is missing stays an error
        audit_export(settings, archive, run_key="named", detector="nope")


@pytest.mark.slow
def test_cli_require_detector_and_format_choices(tmp_path, database_url):
    import os
    import subprocess
    import sys

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "pipeline.cli", "--database-url", database_url, *args],
                              capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PROFILE_AUDIT_HOME": str(tmp_path / "home")})

    archive = write_mastodon_archive(tmp_path / "m.zip")
    out = cli("audit", str(archive), "--require-detector")
    assert out.returncode == 2 and out.stderr.strip().startswith("profile-audit: error: no default detector")
    out = cli("audit", str(archive), "--format", "tiktok")
    assert out.returncode == 2 and "invalid choice: 'tiktok'" in out.stderr and "bluesky_car" in out.stderr
