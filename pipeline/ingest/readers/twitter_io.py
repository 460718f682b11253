"""X/Twitter Information Operations archive: ``<op>_users_csv_hashed.csv``, optional
``<op>_tweets_csv_hashed*.csv`` (posts), and avatars from media zips or an avatar manifest.

The users CSV has no avatar column. Avatars come from, in this order:
- ``avatars.csv`` beside the users file, columns ``userid,avatar``; ``avatar`` is a path relative
  to the folder, a URL, or ``zip:<zip>!<member>``;
- members of any ``*.zip`` in the folder whose file name (without extension) is the userid, or
  the userid with ``/`` and ``+`` written as ``_`` and ``-`` (base64url, since hashed ids may hold
  ``/``). Unsafe member names are quarantined and never used.

Headers are read in either spelling: ``user_screen_name`` or the camel case of later releases
(``userScreenName``, ``accountCreationDate``). A tweets CSV alone (or a folder of tweets CSVs only)
is read too: its accounts are taken from the user columns of each account's first tweet. Ids that a
release wrote as floats (``1.1434335552400015e+18``, pandas' doing) are marked approximate
(``~<integer of the float>``); ingest resolves them to the export's post whose id rounds to the same
double, so replies, quotes and retweets still match.

Hashed accounts (fewer than 5,000 followers) carry the same hash in ``userid``,
``user_display_name`` and ``user_screen_name``; it is kept as written.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from pathlib import Path, PurePosixPath

from pipeline.ingest.archives import ExportSource
from pipeline.ingest.readers.base import (
    APPROXIMATE_ID,
    AccountRecord,
    ExportReader,
    FieldError,
    PostRecord,
    Rejection,
    clean_text,
    parse_count,
    parse_timestamp,
    real_avatar,
    required_id,
    zip_ref,
)
from pipeline.ingest.readers.files import ExportFiles, is_zip
from pipeline.ingest.readers.textio import csv_rows, open_text, split_list

USER_COLUMNS = ("userid", "user_display_name", "user_screen_name", "user_reported_location",
                "user_profile_description", "user_profile_url", "follower_count", "following_count",
                "account_creation_date", "account_language")
TWEET_COLUMNS = ("tweetid", "userid", "tweet_text", "tweet_time")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp"}
AVATAR_MANIFEST = "avatars.csv"
PLATFORM = "twitter"
_FLOAT_ID = re.compile(r"^\d(\.\d+)?[eE]\+?\d{1,2}$|^\d+\.0+$")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def column_name(header: str) -> str:
    """``userScreenName`` -> ``user_screen_name``; snake case stays as it is."""
    return _CAMEL.sub("_", header.strip().strip('"').lstrip("\ufeff")).lower()


def io_id(value: str | None) -> str | None:
    """An id as written, or for a float-written one the approximate marker and the float's integer."""
    if value and _FLOAT_ID.match(value):
        try:
            return f"{APPROXIMATE_ID}{int(float(value))}"
        except (OverflowError, ValueError):
            return value
    return value


def _header(files: ExportFiles, name: str) -> set[str]:
    line = files.head(name, 8192).split("\n", 1)[0]
    return {column_name(c) for c in line.strip().split(",")}


def _normalised(rows: Iterator[tuple[str, dict | Rejection]]) -> Iterator[tuple[str, dict | Rejection]]:
    for locator, row in rows:
        yield locator, row if isinstance(row, Rejection) else {column_name(k): v for k, v in row.items() if k is not None}


class TwitterIOReader(ExportReader):
    name = "twitter_io"
    hint = "X/Twitter IO release: users CSV (userid,user_screen_name,...) and/or tweets CSVs (tweetid,userid,...)"
    reads = ("accounts", "avatars", "posts", "reposts")
    sample = "twitter_io/cuba_092020_users_csv_hashed.csv, coordination/CooRTweet-russian-as-io, coordination/QUT-cnt"

    @staticmethod
    def _csvs(files: ExportFiles) -> list[str]:
        return files.with_suffix(".csv")

    def users_file(self, files: ExportFiles) -> str | None:
        names = self._csvs(files)
        ordered = [n for n in names if "users_csv" in n] + [n for n in names if "users_csv" not in n]
        for name in ordered:
            columns = _header(files, name)
            if {"userid", "user_screen_name"} <= columns and "tweetid" not in columns:
                return name
        return None

    def tweet_files(self, files: ExportFiles) -> list[str]:
        return [n for n in self._csvs(files) if {"tweetid", "userid"} <= _header(files, n)]

    def detect(self, path: Path) -> bool:
        try:
            with ExportFiles(path) as files:
                if files.only is None and not files.is_zip and not self._csvs(files):
                    return False
                return self.users_file(files) is not None or bool(self.tweet_files(files))
        except (OSError, ValueError):
            return False

    def read(self, path: Path) -> Iterator[AccountRecord | PostRecord | Rejection]:
        given = None
        if path.is_file() and not is_zip(path):
            with ExportFiles(path) as one:
                if self.users_file(one):  # a users file given alone: its tweets and media sit beside it
                    given, path = path.name, path.parent
        with ExportFiles(path) as files:
            yield from files.unsafe()
            users = given or self.users_file(files)
            tweet_files = self.tweet_files(files)
            if users is None and not tweet_files:
                raise FieldError(f"no IO users CSV (header {','.join(USER_COLUMNS[:3])},...) or tweets CSV "
                                 f"(header {','.join(TWEET_COLUMNS[:2])},...) in {path}")
            avatars: dict[str, str] = {}
            yield from self._avatar_index(files, avatars)
            if users is not None:
                label = files.label(users)
                with files.open(users) as raw:
                    for locator, row in _normalised(csv_rows(open_text(raw), label, ())):
                        yield self._checked(partial(self._account, avatars=avatars), label, locator, row)
            seen: set[str] | None = None if users is not None else set()  # else: accounts from the tweets
            for tweets in tweet_files:
                yield from self._tweets(files, tweets, avatars, seen)

    def _tweets(self, files: ExportFiles, name: str, avatars: dict[str, str],
                seen: set[str] | None) -> Iterator[AccountRecord | PostRecord | Rejection]:
        """Posts of one tweets CSV; with ``seen``, each new userid's first row is its account too."""
        label = files.label(name)
        if missing := [c for c in TWEET_COLUMNS if c not in _header(files, name)]:
            yield Rejection.of(label, "file", f"tweets CSV lacks {', '.join(missing)}", "")
            return
        with files.open(name) as raw:
            for locator, row in _normalised(csv_rows(open_text(raw), label, ())):
                if not isinstance(row, Rejection) and seen is not None and (row.get("userid") or "").strip() not in seen:
                    seen.add((row.get("userid") or "").strip())
                    yield self._checked(partial(self._account, avatars=avatars), label, locator, row)
                yield self._checked(self._post, label, locator, row)

    @staticmethod
    def _checked(make: Callable[[str, str, dict], AccountRecord | PostRecord], label: str, locator: str,
                 row: dict | Rejection) -> AccountRecord | PostRecord | Rejection:
        """The record ``make`` builds from a row, or the row's rejection."""
        if isinstance(row, Rejection):
            return row
        try:
            return make(label, locator, row)
        except FieldError as exc:
            return Rejection.of(label, locator, str(exc), json.dumps(row, ensure_ascii=False, default=str))

    @staticmethod
    def _account(source: str, locator: str, row: dict, avatars: dict[str, str]) -> AccountRecord:
        userid = required_id(row.get("userid"), "userid")
        text = {c: clean_text(row.get(c), c) for c in ("user_display_name", "user_screen_name", "user_reported_location",
                                                       "user_profile_description", "user_profile_url", "account_language")}
        avatar = avatars.get(userid) or avatars.get(userid.replace("/", "_").replace("+", "-"))
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
            avatar_ref=real_avatar(PLATFORM, avatar),
        )

    @staticmethod
    def _post(source: str, locator: str, row: dict) -> PostRecord:
        def opt_id(name: str) -> str | None:
            value = clean_text(row.get(name), name)
            return io_id(value) if value and value not in ("0", "None", "nan", "NaN") else None

        retweet = str(row.get("is_retweet", "")).strip().lower() in ("true", "1", "yes")
        return PostRecord(
            platform=PLATFORM,
            account_id=required_id(row.get("userid"), "userid"),
            post_id=(io_id(required_id(row.get("tweetid"), "tweetid")) or "").lstrip(APPROXIMATE_ID),
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

    def _avatar_index(self, files: ExportFiles, avatars: dict[str, str]) -> Iterator[Rejection]:
        """Fill userid -> avatar reference from the media zips, then the avatar manifest (which wins)."""
        if files.is_zip:  # a zipped release: its image members are the media
            _add_images(avatars, files.names(), files.ref)
        for archive in sorted(files.export_root.glob("*.zip")) if not files.is_zip else []:
            try:
                source = ExportSource(archive)
            except (OSError, ValueError) as exc:
                yield Rejection.of(archive.name, "file", f"unreadable zip: {exc}", "")
                continue
            with source:
                _add_images(avatars, source.names(), lambda name, zipped=archive.name: zip_ref(zipped, name))
                for raw_name, reason in source.unsafe:
                    yield Rejection.of(archive.name, f"member {raw_name[:200]}", reason, raw_name)
        manifests = files.named(AVATAR_MANIFEST)
        if manifests:
            yield from self._avatar_manifest(files, manifests[0], avatars)

    @staticmethod
    def _avatar_manifest(files: ExportFiles, name: str, avatars: dict[str, str]) -> Iterator[Rejection]:
        label = files.label(name)
        with files.open(name) as raw:
            for locator, row in csv_rows(open_text(raw), label, ("userid", "avatar")):
                if isinstance(row, Rejection):
                    yield row
                    continue
                try:
                    avatar = required_id(row["avatar"], "avatar")
                    if files.is_zip and "://" not in avatar and not avatar.startswith("zip:"):
                        avatar = files.ref(avatar, relative_to=name)
                    avatars[required_id(row["userid"], "userid")] = avatar
                except FieldError as exc:
                    yield Rejection.of(label, locator, str(exc), repr(row))


def _add_images(avatars: dict[str, str], names: Iterable[str], ref: Callable[[str], str]) -> None:
    """Media named by userid (file name without extension); the first of a name wins."""
    for name in names:
        member = PurePosixPath(name)
        if member.suffix.lower() in IMAGE_SUFFIXES:
            avatars.setdefault(member.stem, ref(name))
