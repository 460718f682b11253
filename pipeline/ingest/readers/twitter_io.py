"""X/Twitter Information Operations archive: ``<op>_users_csv_hashed.csv``, optional
``<op>_tweets_csv_hashed*.csv`` (posts), and avatars from media zips or an avatar manifest.

The users CSV has no avatar column. Avatars come from, in this order:
- ``avatars.csv`` beside the users file, columns ``userid,avatar``; ``avatar`` is a path relative
  to the folder, a URL, or ``zip:<zip>!<member>``;
- members of any ``*.zip`` in the folder whose file name (without extension) is the userid, or
  the userid with ``/`` and ``+`` written as ``_`` and ``-`` (base64url, since hashed ids may hold
  ``/``). Unsafe member names are quarantined and never used.

Hashed accounts (fewer than 5,000 followers) carry the same hash in ``userid``,
``user_display_name`` and ``user_screen_name``; it is kept as written.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Iterator

from pipeline.ingest.archives import ExportSource
from pipeline.ingest.readers.base import (
    AccountRecord,
    ExportReader,
    FieldError,
    PostRecord,
    Rejection,
    clean_text,
    parse_count,
    parse_timestamp,
    required_id,
    zip_ref,
)
from pipeline.ingest.readers.textio import csv_rows, open_text, split_list

USER_COLUMNS = ("userid", "user_display_name", "user_screen_name", "user_reported_location",
                "user_profile_description", "user_profile_url", "follower_count", "following_count",
                "account_creation_date", "account_language")
TWEET_COLUMNS = ("tweetid", "userid", "tweet_text", "tweet_time")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp"}
AVATAR_MANIFEST = "avatars.csv"
PLATFORM = "twitter"


def _header(path: Path) -> set[str]:
    try:
        with path.open("rb") as fh:
            text = open_text(fh)
            line = text.readline(8192)
    except (OSError, UnicodeError):
        return set()
    return {c.strip().strip('"').lstrip("\ufeff") for c in line.strip().split(",")}


class TwitterIOReader(ExportReader):
    name = "twitter_io"

    def users_file(self, path: Path) -> Path | None:
        if path.is_file():
            return path if path.suffix.lower() == ".csv" and {"userid", "user_screen_name"} <= _header(path) else None
        if not path.is_dir():
            return None
        candidates = sorted(path.glob("*users_csv*.csv")) or sorted(path.glob("*.csv"))
        for candidate in candidates:
            columns = _header(candidate)
            if {"userid", "user_screen_name", "account_creation_date"} <= columns and "tweetid" not in columns:
                return candidate
        return None

    def detect(self, path: Path) -> bool:
        return self.users_file(path) is not None

    def tweet_files(self, path: Path) -> list[Path]:
        folder = path.parent if path.is_file() else path
        return [p for p in sorted(folder.glob("*.csv")) if {"tweetid", "userid"} <= _header(p)]

    def read(self, path: Path) -> Iterator[AccountRecord | PostRecord | Rejection]:
        users = self.users_file(path)
        if users is None:
            raise FieldError(f"no IO users CSV (header {','.join(USER_COLUMNS[:3])},...) in {path}")
        avatars: dict[str, str] = {}
        yield from self._avatar_index(users.parent, avatars)
        with users.open("rb") as raw:
            for locator, row in csv_rows(open_text(raw), users.name, ("userid",)):
                if isinstance(row, Rejection):
                    yield row
                    continue
                try:
                    yield self._account(users.name, locator, row, avatars)
                except FieldError as exc:
                    yield Rejection.of(users.name, locator, str(exc), json.dumps(row, ensure_ascii=False, default=str))
        for tweets in self.tweet_files(users):
            with tweets.open("rb") as raw:
                for locator, row in csv_rows(open_text(raw), tweets.name, TWEET_COLUMNS):
                    if isinstance(row, Rejection):
                        yield row
                        continue
                    try:
                        yield self._post(tweets.name, locator, row)
                    except FieldError as exc:
                        yield Rejection.of(tweets.name, locator, str(exc), json.dumps(row, ensure_ascii=False, default=str))

    @staticmethod
    def _account(source: str, locator: str, row: dict, avatars: dict[str, str]) -> AccountRecord:
        userid = required_id(row.get("userid"), "userid")
        text = {c: clean_text(row.get(c), c) for c in ("user_display_name", "user_screen_name", "user_reported_location",
                                                       "user_profile_description", "user_profile_url", "account_language")}
        return AccountRecord(
            platform=PLATFORM,
            account_id=userid,
            source_file=source,
            source_locator=locator,
            handle=text["user_screen_name"],
            display_name=text["user_display_name"],
            bio=text["user_profile_description"],
            url=text["user_profile_url"],
            location=text["user_reported_location"],
            language=text["account_language"],
            created_at=parse_timestamp(row.get("account_creation_date"), "account_creation_date"),
            followers=parse_count(row.get("follower_count"), "follower_count"),
            following=parse_count(row.get("following_count"), "following_count"),
            avatar_ref=avatars.get(userid) or avatars.get(userid.replace("/", "_").replace("+", "-")),
        )

    @staticmethod
    def _post(source: str, locator: str, row: dict) -> PostRecord:
        def opt_id(name: str) -> str | None:
            value = clean_text(row.get(name), name)
            return value if value and value not in ("0", "None", "nan") else None

        retweet = str(row.get("is_retweet", "")).strip().lower() in ("true", "1", "yes")
        return PostRecord(
            platform=PLATFORM,
            account_id=required_id(row.get("userid"), "userid"),
            post_id=required_id(row.get("tweetid"), "tweetid"),
            source_file=source,
            source_locator=locator,
            posted_at=parse_timestamp(row.get("tweet_time"), "tweet_time"),
            reposted_id=opt_id("retweet_tweetid") if retweet else None,
            quoted_id=opt_id("quoted_tweet_tweetid"),
            replied_id=opt_id("in_reply_to_tweetid"),
            urls=split_list(clean_text(row.get("urls"), "urls")),
            hashtags=tuple(h.lstrip("#").lower() for h in split_list(clean_text(row.get("hashtags"), "hashtags"))),
            text=clean_text(row.get("tweet_text"), "tweet_text"),
        )

    def _avatar_index(self, folder: Path, avatars: dict[str, str]) -> Iterator[Rejection]:
        """Fill userid -> avatar reference from the media zips, then the avatar manifest (which wins)."""
        for archive in sorted(folder.glob("*.zip")):
            try:
                source = ExportSource(archive)
            except (OSError, ValueError) as exc:
                yield Rejection.of(archive.name, "file", f"unreadable zip: {exc}", "")
                continue
            with source:
                for name in source.names():
                    member = PurePosixPath(name)
                    if member.suffix.lower() in IMAGE_SUFFIXES:
                        avatars.setdefault(member.stem, zip_ref(archive.name, name))
                for raw_name, reason in source.unsafe:
                    yield Rejection.of(archive.name, f"member {raw_name[:200]}", reason, raw_name)
        manifest = folder / AVATAR_MANIFEST
        if manifest.is_file():
            with manifest.open("rb") as raw:
                for locator, row in csv_rows(open_text(raw), manifest.name, ("userid", "avatar")):
                    if isinstance(row, Rejection):
                        yield row
                        continue
                    try:
                        avatars[required_id(row["userid"], "userid")] = required_id(row["avatar"], "avatar")
                    except FieldError as exc:
                        yield Rejection.of(manifest.name, locator, str(exc), repr(row))
