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
is read too: its accounts are taken from the user columns of each account's first tweet (as is the
account of an author whose users-file row is missing or was rejected). Ids that a
release wrote as floats (``1.1434335552400015e+18``, pandas' doing) are marked approximate
(``~<integer of the float>``); ingest resolves them to the export's post whose id rounds to the same
double, so replies, quotes and retweets still match.

Hashed accounts (fewer than 5,000 followers) carry the same hash in ``userid``,
``user_display_name`` and ``user_screen_name``; it is kept as written.

Ingest ledger (issue 24): the units are the rows of the users and tweets CSVs. Accounts made from a
tweets file's author columns are ``inferred``. The avatar manifest and the media zips are auxiliary
(merged into the accounts, not units): only their rejections count, one unit each. A users or tweets
file whose header lacks the required columns is one rejection naming them (its rows cannot be read;
given alone, it is an error); a users header lacking other columns is a warning naming them. Any
other CSV in the export is one unit, ignored ("neither an IO users nor an IO tweets file").
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath

from pipeline.ingest import ledger
from pipeline.ingest.archives import ExportSource
from pipeline.ingest.readers.base import (
    APPROXIMATE_ID,
    AccountRecord,
    ExportReader,
    FieldError,
    Ignored,
    PostRecord,
    Rejection,
    clean_text,
    guarded,
    guarded_file,
    parse_count,
    parse_timestamp,
    real_avatar,
    required_id,
    zip_ref,
)
from pipeline.ingest.readers.files import ExportFiles, is_zip
from pipeline.ingest.readers.textio import _csv_rows, csv_rows, open_text, split_list

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


USERS_REQUIRED = ("userid", "user_screen_name")
_IO_NAME = re.compile(r"_(users|tweets)_csv", re.I)  # the releases' file names: op_users_csv_hashed.csv, ...
NOT_IO_CSV = "CSV that is neither an IO users nor an IO tweets file (not read)"


@dataclass(frozen=True)
class _Plan:
    """What each CSV of the export is, from its header (and, for a damaged header, its name)."""

    users: list[str]  # users files, read in this order
    tweets: list[str]
    damaged: dict[str, str]  # users/tweets file by name or by part of its header -> what its header lacks
    other: list[str]  # CSVs of something else: each one unit, ignored


class TwitterIOReader(ExportReader):
    name = "twitter_io"
    hint = "X/Twitter IO release: users CSV (userid,user_screen_name,...) and/or tweets CSVs (tweetid,userid,...)"
    reads = ("accounts", "avatars", "posts", "reposts")
    sample = "twitter_io/cuba_092020_users_csv_hashed.csv, coordination/CooRTweet-russian-as-io, coordination/QUT-cnt"

    @staticmethod
    def _csvs(files: ExportFiles) -> list[str]:
        return [n for n in files.with_suffix(".csv") if PurePosixPath(n).name != AVATAR_MANIFEST]

    def plan(self, files: ExportFiles, only_users: str | None = None) -> _Plan:
        """Each CSV classified: users (``userid``, ``user_screen_name``, no ``tweetid``), tweets
        (``tweetid``, ``userid``), a damaged one of these (named ``*_users_csv*``/``*_tweets_csv*`` or
        holding three or more of their columns, but lacking the required ones), or another CSV. With
        ``only_users`` (a users file given alone), other users files and CSVs of the folder are not
        part of the export: only its tweets files are."""
        names = self._csvs(files)
        ordered = [n for n in names if "users_csv" in n] + [n for n in names if "users_csv" not in n]
        plan = _Plan([], [], {}, [])
        for name in ordered:
            columns = _header(files, name)
            found = _IO_NAME.search(PurePosixPath(name).name)
            if {"tweetid", "userid"} <= columns:
                plan.tweets.append(name)
            elif only_users is not None and name != only_users and not (found and found.group(1).lower() == "tweets"):
                continue  # beside a users file given alone: another release's file, not part of this export
            elif set(USERS_REQUIRED) <= columns and "tweetid" not in columns:
                plan.users.append(name)
            elif found or len(columns & (set(USER_COLUMNS) | {"tweetid"})) >= 3:
                kind = found.group(1).lower() if found else ("tweets" if "tweetid" in columns else "users")
                required = TWEET_COLUMNS[:2] if kind == "tweets" else USERS_REQUIRED
                missing = ", ".join(c for c in required if c not in columns)
                plan.damaged[name] = (f"IO {kind} CSV whose header lacks {missing} (header truncated or damaged?);"
                                      " its rows were not read")
            else:
                plan.other.append(name)
        plan.tweets.sort(key=names.index)
        return plan

    def users_file(self, files: ExportFiles) -> str | None:
        users = self.plan(files).users
        return users[0] if users else None

    def tweet_files(self, files: ExportFiles) -> list[str]:
        return self.plan(files).tweets

    def detect(self, path: Path) -> bool:
        try:
            with ExportFiles(path) as files:
                if files.only is None and not files.is_zip and not self._csvs(files):
                    return False
                plan = self.plan(files)
                # a damaged users or tweets file named as a release names it is still this format: the
                # reader then says what its header lacks, rather than "could not detect"
                return bool(plan.users or plan.tweets or any(_IO_NAME.search(n) for n in plan.damaged))
        except (OSError, ValueError):
            return False

    def read(self, path: Path) -> Iterator[AccountRecord | PostRecord | Rejection | Ignored]:
        given = None
        if path.is_file() and not is_zip(path):
            with ExportFiles(path) as one:
                if self.plan(one).users:  # a users file given alone: its tweets and media sit beside it
                    given, path = path.name, path.parent
        with ExportFiles(path) as files:
            yield from files.unsafe()
            plan = self.plan(files, given)
            if not plan.users and not plan.tweets:
                if plan.damaged:
                    name, why = next(iter(plan.damaged.items()))
                    raise FieldError(f"{files.label(name)}: {why}")
                raise FieldError(f"no IO users CSV (header {','.join(USER_COLUMNS[:3])},...) or tweets CSV "
                                 f"(header {','.join(TWEET_COLUMNS[:2])},...) in {path}")
            for name, why in plan.damaged.items():
                label = files.label(name)
                ledger.saw(label)  # the file is the one unit it stands for
                yield Rejection.of(label, "file", why, files.head(name, 300).split("\n", 1)[0])
            for name in plan.other:
                ledger.saw(files.label(name))
                yield Ignored(files.label(name), "file", NOT_IO_CSV)
            avatars: dict[str, str] = {}
            yield from self._avatar_index(files, avatars)
            accounts: set[str] = set()  # made from a users file, or tried from a tweet's author columns
            for users in plan.users:
                label = files.label(users)
                for item in guarded_file(label, self._users(files, users, label, avatars)):
                    if isinstance(item, AccountRecord):
                        accounts.add(item.account_id)
                    yield item
            for tweets in plan.tweets:
                label = files.label(tweets)
                yield from guarded_file(label, self._tweets(files, tweets, label, avatars, accounts))

    def _users(self, files: ExportFiles, name: str, label: str,
               avatars: dict[str, str]) -> Iterator[AccountRecord | Rejection]:
        """The accounts of one users CSV. A header without some of the usual columns is a note of the
        file (a warning of the run, naming them): its rows are read without those fields, and a row that
        no longer fits the cut header is rejected as such."""
        if missing := [c for c in USER_COLUMNS if c not in _header(files, name)]:
            ledger.note(label, f"IO users CSV header lacks {', '.join(missing)} (truncated or damaged header?);"
                               " its rows are read without those columns")
        with files.open(name) as raw:
            for locator, row in _normalised(csv_rows(open_text(raw), label, ())):
                yield self._checked(partial(self._account, avatars=avatars), label, locator, row)

    def _tweets(self, files: ExportFiles, name: str, label: str, avatars: dict[str, str],
                accounts: set[str]) -> Iterator[AccountRecord | PostRecord | Rejection]:
        """Posts of one tweets CSV. An author with no account yet (no users file, or its row there lost or
        rejected) gets one from the author columns of its first tweet: ``inferred``, as it has no record
        of its own, so its tweets are kept rather than quarantined as orphans."""
        if missing := [c for c in TWEET_COLUMNS if c not in _header(files, name)]:
            ledger.saw(label)
            yield Rejection.of(label, "file", f"tweets CSV lacks {', '.join(missing)}", "")
            return
        with files.open(name) as raw:
            for locator, row in _normalised(csv_rows(open_text(raw), label, ())):
                if not isinstance(row, Rejection):
                    userid = row.get("userid")
                    key = userid.strip() if isinstance(userid, str) else ""
                    if key and key not in accounts:
                        accounts.add(key)
                        account = self._checked(partial(self._account, avatars=avatars, inferred=True), label,
                                                locator, row)
                        if isinstance(account, Rejection):
                            # the author's columns, which could not make its account: the ledger's
                            # `inferred` counts only accounts made, so this one unit is counted as seen
                            ledger.saw(label)
                        yield account
                yield self._checked(self._post, label, locator, row)

    @staticmethod
    def _checked(make: Callable[[str, str, dict], AccountRecord | PostRecord], label: str, locator: str,
                 row: dict | Rejection) -> AccountRecord | PostRecord | Rejection:
        """The record ``make`` builds from a row, or the row's rejection."""
        if isinstance(row, Rejection):
            return row
        return guarded(label, locator, row, partial(make, label, locator, row))

    @staticmethod
    def _account(source: str, locator: str, row: dict, avatars: dict[str, str], inferred: bool = False) -> AccountRecord:
        userid = required_id(row.get("userid"), "userid")
        text = {c: clean_text(row.get(c), c) for c in ("user_display_name", "user_screen_name", "user_reported_location",
                                                       "user_profile_description", "user_profile_url", "account_language")}
        avatar = avatars.get(userid) or avatars.get(userid.replace("/", "_").replace("+", "-"))
        return AccountRecord(
            platform=PLATFORM,
            account_id=userid,
            source_file=source,
            source_locator=f"{locator} (author of posts)" if inferred else locator,
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
            inferred=inferred,
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
            yield from guarded_file(archive.name, _zip_media(archive, avatars), "the media zip")
        manifests = files.named(AVATAR_MANIFEST)
        if manifests:
            yield from self._avatar_manifest(files, manifests[0], avatars)

    @staticmethod
    def _avatar_manifest(files: ExportFiles, name: str, avatars: dict[str, str]) -> Iterator[Rejection]:
        """The avatar manifest is auxiliary (merged into the accounts, its rows are not units): each
        rejection there counts as the one unit it stands for."""
        label = files.label(name)

        def rows() -> Iterator[Rejection]:
            with files.open(name) as raw:
                for locator, row in _csv_rows(open_text(raw), label, ("userid", "avatar")):
                    if isinstance(row, Rejection):
                        ledger.saw(label)
                        yield row
                        continue
                    try:
                        avatar = required_id(row["avatar"], "avatar")
                        if files.is_zip and "://" not in avatar and not avatar.startswith("zip:"):
                            avatar = files.ref(avatar, relative_to=name)
                        avatars[required_id(row["userid"], "userid")] = avatar
                    except FieldError as exc:
                        ledger.saw(label)
                        yield Rejection.of(label, locator, str(exc), repr(row))

        yield from guarded_file(label, rows(), "the avatar manifest")


def _zip_media(archive: Path, avatars: dict[str, str]) -> Iterator[Rejection]:
    """The images of one media zip, by userid; the zip is auxiliary (its images are not units), so each
    member refused by its name is counted as the unit it stands for."""
    with ExportSource(archive) as source:
        if not source.is_zip:
            raise FieldError("not a zip archive (damaged or truncated?)")
        _add_images(avatars, source.names(), lambda name: zip_ref(archive.name, name))
        for raw_name, reason in source.unsafe:
            ledger.saw(archive.name)
            yield Rejection.of(archive.name, f"member {raw_name[:200]}", reason, raw_name)


def _add_images(avatars: dict[str, str], names: Iterable[str], ref: Callable[[str], str]) -> None:
    """Media named by userid (file name without extension); the first of a name wins."""
    for name in names:
        member = PurePosixPath(name)
        if member.suffix.lower() in IMAGE_SUFFIXES:
            avatars.setdefault(member.stem, ref(name))
