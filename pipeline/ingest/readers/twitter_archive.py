"""Personal X/Twitter archive ("Download an archive of your data"), as the zip or its unpacked folder.

Reads ``data/account.js`` and ``data/profile.js`` (each ``window.YTD.<name>.part0 = [...]``),
counts ``data/follower.js`` and ``data/following.js``, and streams ``data/tweets.js`` (or the
older ``data/tweet.js``, and ``-partN`` splits) into posts. ``data/manifest.js`` fills gaps in the
account. The avatar is the file in ``data/profile_media/`` whose name ends with the last path part
of ``avatarMediaUrl``; without it, the URL itself is fetched. The zip is never extracted: members
are streamed, and unsafe member names (``../``, absolute paths, symlinks) are quarantined.

Ingest ledger (issue 24): the units are the entries of ``account.js`` (the first is the account, a
further one is rejected) and of the tweet files (each a post or a rejection). ``profile.js``,
``manifest.js``, ``follower.js`` and ``following.js`` are auxiliary: what they hold is merged into
the one account record (its bio, avatar, fallback names, follower and following counts), so their
entries are not units of their own; a problem reading one is a rejection, counted as one unit of
that file. The tweets are read once: the account, whose post count is theirs, comes after them.
"""

from __future__ import annotations

import hashlib
import json
import re
from functools import partial
from pathlib import Path
from typing import Any, Iterator

from pipeline.ingest import ledger
from pipeline.ingest.archives import ExportSource, UnsafeMember
from pipeline.ingest.readers.base import (
    AccountRecord,
    ExportDate,
    ExportReader,
    FieldError,
    PostRecord,
    Rejection,
    clean_text,
    guarded,
    guarded_file,
    parse_timestamp,
    real_avatar,
    required_id,
    zip_ref,
)
from pipeline.ingest.readers.jsonfiles import rejection
from pipeline.ingest.readers.textio import NotAnArray, _json_records, json_records, open_text

PLATFORM = "twitter"
_TWEET_FILE = re.compile(r"^tweets?(-part\d+)?\.js$")
MANIFEST_CHARS = 1 << 20
Entry = tuple[str, Any]  # (locator, value), or (locator, Rejection)


class TwitterArchiveReader(ExportReader):
    name = "twitter_archive"
    hint = "personal X/Twitter archive: the zip or its folder with data/account.js"
    reads = ("accounts", "avatars", "posts", "reposts")
    sample = "synthetic only (tests/export_fixtures.py write_personal_archive): no public real archive"

    @staticmethod
    def _data_prefix(source: ExportSource) -> str | None:
        """The path before ``data/account.js`` (archives are sometimes zipped inside a top folder)."""
        for name in source.names():
            if name == "data/account.js" or name.endswith("/data/account.js"):
                return name[: -len("account.js")]
        return None

    def detect(self, path: Path) -> bool:
        if path.is_dir():
            return (path / "data" / "account.js").is_file()
        if path.suffix.lower() != ".zip":
            return False
        try:
            with ExportSource(path) as source:
                return self._data_prefix(source) is not None
        except (OSError, ValueError):
            return False

    def read(self, path: Path) -> Iterator[AccountRecord | PostRecord | Rejection | ExportDate]:
        try:
            source = ExportSource(path)
        except (OSError, ValueError) as exc:
            raise FieldError(f"unreadable archive: {exc}") from None
        with source:
            prefix = self._data_prefix(source)
            for raw_name, reason in source.unsafe:
                ledger.saw(source.label)  # a member refused by its name is a unit of the archive
                yield Rejection.of(source.label, f"member {raw_name[:200]}", reason, raw_name)
            if prefix is None:
                raise FieldError(f"{path} has no data/account.js: not a personal X archive")
            account_name = prefix + "account.js"
            account = yield from self._account_entry(source, account_name)
            profile = yield from self._merged(source, prefix + "profile.js", "profile")
            manifest = yield from self._manifest(source, prefix)
            followers = yield from self._count(source, prefix + "follower.js")
            following = yield from self._count(source, prefix + "following.js")
            account_id, why = self._account_id(account, manifest)
            if account_id is None and account is not None:  # the account's own unit: rejected here
                yield rejection(account_name, account[0], why, account[1])
            if generated := self._generated(manifest):
                yield ExportDate(generated, f"{prefix}manifest.js archiveInfo.generationDate")
            tweets = [0]
            for name in [n for n in source.names() if n.startswith(prefix) and _TWEET_FILE.match(n[len(prefix):])]:
                yield from self._posts(source, name, account_id, why, tweets)
            if account is not None and account_id is not None:
                locator, raw = account
                yield guarded(account_name, locator, raw, partial(
                    self._account, source, prefix, account_name, locator, account_id, raw, profile or {}, manifest,
                    followers, following, tweets[0]))

    def _entries(self, source: ExportSource, name: str, counted: bool) -> Iterator[Entry | Rejection]:
        """The ``window.YTD...`` array of one file, each entry counted as a unit when ``counted``; an
        error that ends the file is its rejection (the entries before it kept). The entries of an
        auxiliary file are not units, so there each rejection counts as the one unit it stands for."""
        def entries() -> Iterator[Entry]:
            read = json_records if counted else _json_records
            with source.open_binary(name) as raw:
                try:
                    for locator, value in read(open_text(raw), name, start_at="=", array_only=True):
                        if not counted and isinstance(value, Rejection):
                            ledger.saw(name)
                        yield locator, value
                except NotAnArray as exc:  # counted by json_records when the entries are units
                    if not counted:
                        ledger.saw(name)
                    yield "file", Rejection.of(name, "file", str(exc), repr(exc.value))
                except UnsafeMember as exc:  # a member that inflates past a cap: the entries read so far stay
                    ledger.saw(name)
                    yield "file", Rejection.of(name, "file", str(exc), "")

        for item in guarded_file(name, entries()):
            yield item if isinstance(item, Rejection) else item[1] if isinstance(item[1], Rejection) else item

    def _account_entry(self, source: ExportSource, name: str) -> Iterator[Rejection]:
        """Returns (locator, the 'account' object) of account.js, or None; yields its rejections: a
        further account record, an entry of another shape, or an empty file (then the file is the unit)."""
        account: tuple[str, dict] | None = None
        entries = 0
        for entry in self._entries(source, name, counted=True):
            entries += 1
            if isinstance(entry, Rejection):
                yield entry
            elif account is not None:
                yield rejection(name, entry[0], "a second account record: a personal archive holds one account"
                                " (the first is read)", entry[1])
            elif isinstance(entry[1], dict) and isinstance(entry[1].get("account"), dict):
                account = entry[0], entry[1]["account"]
            else:
                yield rejection(name, entry[0], "expected an object with an 'account' object", entry[1])
        if not entries:
            ledger.saw(name)
            yield Rejection.of(name, "file", "no account record", "")
        return account

    def _merged(self, source: ExportSource, name: str, key: str) -> Iterator[Rejection]:
        """The first ``key`` object of an auxiliary file (merged into the account); returns it, yields
        the file's rejections."""
        found: dict | None = None
        if not source.exists(name):
            return None
        for entry in self._entries(source, name, counted=False):
            if isinstance(entry, Rejection):
                yield entry
            elif found is None:
                if isinstance(entry[1], dict) and isinstance(entry[1].get(key), dict):
                    found = entry[1][key]
                else:
                    ledger.saw(name)
                    yield rejection(name, entry[0], f"expected an object with a {key!r} object", entry[1])
        return found

    def _count(self, source: ExportSource, name: str) -> Iterator[Rejection]:
        """How many entries an auxiliary list holds (followers, following); unknown (None) when the
        file cannot be read to its end, as a partial count would be a wrong one."""
        if not source.exists(name):
            return None
        count: int | None = 0
        for entry in self._entries(source, name, counted=False):
            if isinstance(entry, Rejection):
                count = None
                yield entry
            elif count is not None:
                count += 1
        return count

    def _manifest(self, source: ExportSource, prefix: str) -> Iterator[Rejection]:
        """``userInfo`` (fallback account id and names) and the archive's generation date; an unreadable
        manifest is one rejection (the account is still read, without the fallbacks)."""
        name = prefix + "manifest.js"
        if not source.exists(name):
            return {}
        text = ""
        try:
            with source.open_binary(name) as raw:
                text = open_text(raw).read(MANIFEST_CHARS)
            start = text.find("{")
            value = json.JSONDecoder().raw_decode(text, start)[0] if start >= 0 else None
            if not isinstance(value, dict):
                raise ValueError("no JSON object after the '=' ")
        except (ValueError, RecursionError, OSError, UnsafeMember) as exc:
            ledger.saw(name)
            yield Rejection.of(name, "file", f"unreadable archive manifest ({type(exc).__name__}: "
                               f"{str(exc)[:200]}); the account is read without it", text[:500])
            return {}
        info = value.get("userInfo")
        archive = value.get("archiveInfo")
        info = dict(info) if isinstance(info, dict) else {}
        if isinstance(archive, dict) and archive.get("generationDate"):
            info["_generationDate"] = archive["generationDate"]
        return info

    @staticmethod
    def _generated(manifest: dict) -> Any:
        try:
            return parse_timestamp(manifest.get("_generationDate"), "generationDate")
        except FieldError:
            return None

    @staticmethod
    def _account_id(account: tuple[str, dict] | None, manifest: dict) -> tuple[str | None, str]:
        """The archive's account id (account.js, else the manifest), or None and why not."""
        raw = (account[1].get("accountId") if account else None) or manifest.get("accountId")
        try:
            return required_id(raw, "accountId"), ""
        except FieldError as exc:
            return None, str(exc) if account else "data/account.js has no account record"

    def _avatar(self, source: ExportSource, prefix: str, media_url: str | None) -> str | None:
        if not media_url:
            return None
        last = media_url.rstrip("/").rsplit("/", 1)[-1]
        folder = prefix + "profile_media/"
        for name in source.names():
            if name.startswith(folder) and name.endswith(last):
                return zip_ref(source.label, name) if source.is_zip else name
        return media_url

    def _account(self, source: ExportSource, prefix: str, name: str, locator: str, account_id: str, account: dict,
                 profile: dict, manifest: dict, followers: int | None, following: int | None,
                 tweets: int) -> AccountRecord:
        description = profile.get("description")
        if description is not None and not isinstance(description, dict):
            raise FieldError(f"profile.js description is a JSON {type(description).__name__}, not an object")
        description = description or {}
        return AccountRecord(
            platform=PLATFORM,
            account_id=account_id,
            source_file=name,
            source_locator=locator,
            handle=clean_text(account.get("username") or manifest.get("userName"), "username"),
            display_name=clean_text(account.get("accountDisplayName") or manifest.get("displayName"),
                                    "accountDisplayName"),
            bio=clean_text(description.get("bio"), "bio"),
            url=clean_text(description.get("website"), "website"),
            location=clean_text(description.get("location"), "location"),
            created_at=parse_timestamp(account.get("createdAt"), "createdAt"),
            followers=followers,
            following=following,
            posts=tweets,
            avatar_ref=real_avatar(PLATFORM, self._avatar(source, prefix,
                                                          clean_text(profile.get("avatarMediaUrl"), "avatarMediaUrl"))),
        )

    def _posts(self, source: ExportSource, name: str, account_id: str | None, why: str,
               tweets: list[int]) -> Iterator[PostRecord | Rejection]:
        """Each entry of one tweets file: a post, or its rejection (every entry is a unit). ``tweets[0]``
        counts the tweet objects, the account's post count."""
        for entry in self._entries(source, name, counted=True):
            if isinstance(entry, Rejection):
                yield entry
                continue
            locator, item = entry
            tweet = item.get("tweet") if isinstance(item, dict) else None
            if not isinstance(tweet, dict):
                yield rejection(name, locator, "expected an object with a 'tweet' object", item)
                continue
            tweets[0] += 1
            if account_id is None:
                yield rejection(name, locator, f"{_UNATTRIBUTED} ({why})", tweet)
            else:
                yield guarded(name, locator, tweet, partial(self._post, name, locator, tweet, account_id))

    @staticmethod
    def _post(name: str, locator: str, tweet: dict, account_id: str) -> PostRecord:
        entities = tweet.get("entities") if isinstance(tweet.get("entities"), dict) else {}
        urls = tuple(clean_text(u.get("expanded_url") or u.get("url"), "entities.urls")
                     for u in _objects(entities.get("urls")))
        tags = tuple((clean_text(h.get("text"), "entities.hashtags") or "").lower()
                     for h in _objects(entities.get("hashtags")))
        retweeted = tweet.get("retweeted_status") if isinstance(tweet.get("retweeted_status"), dict) else {}
        text = clean_text(tweet.get("full_text") or tweet.get("text"), "full_text")
        reposted = clean_text(retweeted.get("id_str"), "retweeted_status.id_str") or retweet_key(text)
        return PostRecord(
            platform=PLATFORM,
            account_id=account_id,
            post_id=required_id(tweet.get("id_str") or tweet.get("id"), "id_str"),
            source_file=name,
            source_locator=locator,
            posted_at=parse_timestamp(tweet.get("created_at"), "created_at"),
            reposted_id=reposted,
            quoted_id=clean_text(tweet.get("quoted_status_id_str"), "quoted_status_id_str"),
            replied_id=clean_text(tweet.get("in_reply_to_status_id_str"), "in_reply_to_status_id_str"),
            urls=tuple(u for u in urls if u),
            hashtags=tuple(t for t in tags if t),
            text=text,
        )


_UNATTRIBUTED = "a tweet with no account to attribute it to"


def _objects(value: Any) -> list[dict]:
    """The objects of an entities list; a list that is not one is a field error, not a crash."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise FieldError(f"entities list is a JSON {type(value).__name__}, not an array")
    return [v for v in value if isinstance(v, dict)]


_RETWEET_TEXT = re.compile(r"^RT @(\w{1,50}): (.*)$", re.S)


def retweet_key(text: str | None) -> str | None:
    """A personal archive's retweet has no ``retweeted_status``, only ``RT @user: <text>``. The original's
    id is not in the archive, so the key is ``rt:@<user>:<sha256 of the text>[:16]``: two archives
    retweeting the same post get the same key (co_repost), an original post gets None."""
    found = _RETWEET_TEXT.match(text or "")
    if not found:
        return None
    body = " ".join(found.group(2).split()).rstrip("…").rstrip()
    return f"rt:@{found.group(1).lower()}:{hashlib.sha256(body.encode()).hexdigest()[:16]}"
