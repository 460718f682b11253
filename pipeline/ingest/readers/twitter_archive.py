"""Personal X/Twitter archive ("Download an archive of your data"), as the zip or its unpacked folder.

Reads ``data/account.js`` and ``data/profile.js`` (each ``window.YTD.<name>.part0 = [...]``),
counts ``data/follower.js`` and ``data/following.js``, and streams ``data/tweets.js`` (or the
older ``data/tweet.js``, and ``-partN`` splits) into posts. ``data/manifest.js`` fills gaps in the
account. The avatar is the file in ``data/profile_media/`` whose name ends with the last path part
of ``avatarMediaUrl``; without it, the URL itself is fetched. The zip is never extracted: members
are streamed, and unsafe member names (``../``, absolute paths, symlinks) are quarantined.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Iterator

from pipeline.ingest.archives import ExportSource, UnsafeMember
from pipeline.ingest.readers.base import (
    AccountRecord,
    ExportDate,
    ExportReader,
    FieldError,
    PostRecord,
    Rejection,
    clean_text,
    parse_timestamp,
    real_avatar,
    required_id,
    zip_ref,
)
from pipeline.ingest.readers.jsonfiles import rejection
from pipeline.ingest.readers.textio import NotAnArray, json_records, open_text

PLATFORM = "twitter"
_TWEET_FILE = re.compile(r"^tweets?(-part\d+)?\.js$")


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

    def read(self, path: Path) -> Iterator[AccountRecord | PostRecord | Rejection]:
        try:
            source = ExportSource(path)
        except (OSError, ValueError) as exc:
            raise FieldError(f"unreadable archive: {exc}") from None
        with source:
            prefix = self._data_prefix(source)
            for raw_name, reason in source.unsafe:
                yield Rejection.of(source.label, f"member {raw_name[:200]}", reason, raw_name)
            if prefix is None:
                raise FieldError(f"{path} has no data/account.js: not a personal X archive")
            account = self._first(source, prefix + "account.js", "account")
            if isinstance(account, Rejection) or account is None:
                yield account or Rejection.of(source.label, prefix + "account.js", "no account record", "")
                return
            profile = self._first(source, prefix + "profile.js", "profile")
            if isinstance(profile, Rejection):
                yield profile
                profile = None
            manifest = self._manifest(source, prefix)
            tweet_files = [n for n in source.names() if n.startswith(prefix) and _TWEET_FILE.match(n[len(prefix):])]
            try:
                record = self._account(source, prefix, account, profile or {}, manifest, tweet_files)
            except FieldError as exc:
                yield rejection(prefix + "account.js", "record 1", str(exc), account)
                return
            yield record
            try:
                generated = parse_timestamp(manifest.get("_generationDate"), "generationDate")
            except FieldError:
                generated = None
            if generated is not None:
                yield ExportDate(generated, f"{prefix}manifest.js archiveInfo.generationDate")
            for name in tweet_files:
                yield from self._posts(source, name, record.account_id)

    def _entries(self, source: ExportSource, name: str) -> Iterator[tuple[str, Any]]:
        with source.open_binary(name) as raw:
            try:
                yield from json_records(open_text(raw), name, start_at="=", array_only=True)
            except NotAnArray as exc:
                yield "file", Rejection.of(name, "file", str(exc), repr(exc.value))
            except UnsafeMember as exc:  # a member that inflates past a cap: the records read so far stay
                yield "file", Rejection.of(name, "file", str(exc), "")

    def _first(self, source: ExportSource, name: str, key: str) -> dict | Rejection | None:
        if not source.exists(name):
            return None
        for locator, item in self._entries(source, name):
            if isinstance(item, Rejection):
                return item
            if not isinstance(item, dict) or not isinstance(item.get(key), dict):
                return rejection(name, locator, f"expected an object with a {key!r} object", item)
            return item[key]
        return None

    def _count(self, source: ExportSource, name: str) -> int | None:
        if not source.exists(name):
            return None
        return sum(1 for _, item in self._entries(source, name) if not isinstance(item, Rejection))

    def _manifest(self, source: ExportSource, prefix: str) -> dict:
        name = prefix + "manifest.js"
        if not source.exists(name):
            return {}
        with source.open_binary(name) as raw:
            text = open_text(raw).read(1 << 20)
        start = text.find("{")
        try:
            value = json.JSONDecoder().raw_decode(text, start)[0] if start >= 0 else {}
        except json.JSONDecodeError:
            return {}
        info = value.get("userInfo") if isinstance(value, dict) else None
        archive = value.get("archiveInfo") if isinstance(value, dict) else None
        info = dict(info) if isinstance(info, dict) else {}
        if isinstance(archive, dict) and archive.get("generationDate"):
            info["_generationDate"] = archive["generationDate"]
        return info

    def _avatar(self, source: ExportSource, prefix: str, media_url: str | None) -> str | None:
        if not media_url:
            return None
        last = media_url.rstrip("/").rsplit("/", 1)[-1]
        folder = prefix + "profile_media/"
        for name in source.names():
            if name.startswith(folder) and name.endswith(last):
                return zip_ref(source.label, name) if source.is_zip else name
        return media_url

    def _account(self, source: ExportSource, prefix: str, account: dict, profile: dict, manifest: dict,
                 tweet_files: list[str]) -> AccountRecord:
        description = profile.get("description") if isinstance(profile.get("description"), dict) else {}
        account_id = required_id(account.get("accountId") or manifest.get("accountId"), "accountId")
        posts = sum(self._count(source, n) or 0 for n in tweet_files) if tweet_files else None
        return AccountRecord(
            platform=PLATFORM,
            account_id=account_id,
            source_file=prefix + "account.js",
            source_locator="record 1",
            handle=clean_text(account.get("username") or manifest.get("userName"), "username"),
            display_name=clean_text(account.get("accountDisplayName") or manifest.get("displayName"), "accountDisplayName"),
            bio=clean_text(description.get("bio"), "bio"),
            url=clean_text(description.get("website"), "website"),
            location=clean_text(description.get("location"), "location"),
            created_at=parse_timestamp(account.get("createdAt"), "createdAt"),
            followers=self._count(source, prefix + "follower.js"),
            following=self._count(source, prefix + "following.js"),
            posts=posts,
            avatar_ref=real_avatar(PLATFORM, self._avatar(source, prefix,
                                                          clean_text(profile.get("avatarMediaUrl"), "avatarMediaUrl"))),
        )

    def _posts(self, source: ExportSource, name: str, account_id: str) -> Iterator[PostRecord | Rejection]:
        try:
            for locator, item in self._entries(source, name):
                if isinstance(item, Rejection):
                    yield item
                    continue
                tweet = item.get("tweet") if isinstance(item, dict) else None
                if not isinstance(tweet, dict):
                    yield rejection(name, locator, "expected an object with a 'tweet' object", item)
                    continue
                try:
                    yield self._post(name, locator, tweet, account_id)
                except FieldError as exc:
                    yield rejection(name, locator, str(exc), tweet)
        except UnsafeMember as exc:
            yield Rejection.of(name, "file", str(exc), "")

    @staticmethod
    def _post(name: str, locator: str, tweet: dict, account_id: str) -> PostRecord:
        entities = tweet.get("entities") if isinstance(tweet.get("entities"), dict) else {}
        urls = tuple(u.get("expanded_url") or u.get("url") for u in entities.get("urls") or [] if isinstance(u, dict))
        tags = tuple(str(h.get("text", "")).lower() for h in entities.get("hashtags") or [] if isinstance(h, dict))
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
