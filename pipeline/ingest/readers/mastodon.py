"""Mastodon: API Account entities, and account archives ("Request your archive").

`MastodonReader`: Account entities as a JSON array, JSON lines or one (pretty-printed) object per
file; a file, a folder or a zip of them.

`MastodonArchiveReader`: the archive a user downloads (zip or unpacked folder): ``actor.json`` (an
ActivityPub Person: the account, its ``icon`` the avatar file of the archive), ``outbox.json`` (an
OrderedCollection, streamed item by item): ``Create`` activities of a ``Note`` are posts (reply
target ``inReplyTo``, hashtags from ``tag``, links from the HTML), ``Announce`` activities are
reposts (boosts: ``reposted_id`` is the boosted status URI). Post ids are status URIs, so a boost
matches the status it boosts across archives.

The account id in the API is local to the server that answered, so the key is the account's
address ``username@domain`` (``acct`` when it has a domain, else with the domain of ``url``).
``note`` is HTML and becomes plain text. ``avatar_static`` is scored (it differs from ``avatar``
only for animated images); Mastodon's ``missing.png`` placeholder is no avatar.
"""

from __future__ import annotations

import html
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import IO, Any, Iterator
from urllib.parse import urlsplit

from pipeline.ingest.readers.base import (
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
)
from pipeline.ingest.readers.files import ExportFiles
from pipeline.ingest.readers.jsonfiles import detect_by_markers, excerpt, iter_json_export, rejection
from pipeline.ingest.readers.textio import NotAnArray, json_records, open_text

PLATFORM = "mastodon"


class _Text(HTMLParser):
    """HTML to text: paragraphs and <br> become line breaks, tags are dropped, entities decoded."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.links: list[str] = []  # hrefs that are not mentions or hashtags

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag == "a":
            values = dict(attrs)
            classes = (values.get("class") or "").split()
            if values.get("href") and not {"mention", "hashtag", "u-url"} & set(classes) and "tag" != values.get("rel"):
                self.links.append(values["href"])
        if tag == "br":
            self.parts.append("\n")
        elif tag == "p" and self.parts:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def _parse(value: str) -> _Text:
    parser = _Text()
    parser.feed(value)
    parser.close()
    return parser


def html_to_text(value: str | None) -> str | None:
    if not value:
        return None
    return html.unescape("".join(_parse(value).parts))


def html_links(value: str | None) -> tuple[str, ...]:
    return tuple(dict.fromkeys(_parse(value).links)) if value else ()


class MastodonReader(ExportReader):
    name = "mastodon"
    hint = "Mastodon API Account JSON: an array, JSON lines or one object per file"
    reads = ("accounts", "avatars")
    sample = "mastodon/mastodonpy-cassettes, mastodon/mastodon-docs-examples"

    def detect(self, path: Path) -> bool:
        return detect_by_markers(path, '"acct"', '"username"', '"followers_count"')

    def read(self, path: Path) -> Iterator[AccountRecord | PostRecord | Rejection]:
        if MastodonArchiveReader().detect(path):  # --format mastodon on an archive reads it as one
            yield from MastodonArchiveReader().read(path)
            return
        with ExportFiles(path) as files:
            for name, locator, value in iter_json_export(files):
                if isinstance(value, Rejection):
                    yield value
                    continue
                if isinstance(value, NotAnArray):  # one Account object, pretty-printed or not
                    locator, value = "record 1", value.value
                if not isinstance(value, dict):
                    yield rejection(name, locator, f"expected an Account object, got a JSON {type(value).__name__}", value)
                    continue
                try:
                    yield self._record(name, locator, value)
                except FieldError as exc:
                    yield rejection(name, locator, str(exc), value)

    @staticmethod
    def _record(source: str, locator: str, row: dict) -> AccountRecord:
        username = required_id(row.get("username"), "username")
        acct = clean_text(row.get("acct"), "acct") or username
        profile_url = clean_text(row.get("url"), "url")
        if "@" not in acct:
            domain = urlsplit(profile_url).hostname if profile_url else None
            if not domain:
                raise FieldError(f"acct {acct!r} has no domain and there is no url to take it from")
            acct = f"{acct}@{domain}"
        if row.get("id") in (None, ""):
            raise FieldError("id is missing")
        avatar = clean_text(row.get("avatar_static") or row.get("avatar"), "avatar_static")
        return AccountRecord(
            platform=PLATFORM,
            account_id=acct.lstrip("@").lower(),
            source_file=source,
            source_locator=locator,
            handle=acct.lstrip("@"),
            display_name=clean_text(row.get("display_name"), "display_name"),
            bio=clean_text(html_to_text(row.get("note")), "note"),
            url=profile_url,
            created_at=parse_timestamp(row.get("created_at")),
            followers=parse_count(row.get("followers_count"), "followers_count"),
            following=parse_count(row.get("following_count"), "following_count"),
            posts=parse_count(row.get("statuses_count"), "statuses_count"),
            avatar_ref=real_avatar(PLATFORM, avatar),
        )


class _After:
    """A text stream that starts with what is left of a buffer, then goes on with the file."""

    def __init__(self, rest: str, fh: IO[str]):
        self._rest, self._fh = rest, fh

    def read(self, size: int = -1) -> str:
        if self._rest:
            head, self._rest = (self._rest, "") if size < 0 or size >= len(self._rest) else \
                (self._rest[:size], self._rest[size:])
            return head if size < 0 or len(head) == size else head + self._fh.read(size - len(head))
        return self._fh.read(size)


def ordered_items(fh: IO[str], source: str) -> Iterator[tuple[str, Any]]:
    """The ``orderedItems`` of an ActivityStreams collection, one at a time (the outbox may be GBs)."""
    buf = ""
    while True:
        found = re.search(r'"orderedItems"\s*:\s*(?=\[)', buf)
        if found:
            break
        more = fh.read(1 << 16)
        if not more or len(buf) > (1 << 20):
            raise FieldError(f"{source} has no orderedItems array in its first MB: not an ActivityPub outbox")
        buf += more
    yield from json_records(_After(buf[found.end():], fh), source)  # type: ignore[arg-type]


class MastodonArchiveReader(ExportReader):
    name = "mastodon_archive"
    hint = "Mastodon account archive (zip or folder with actor.json, outbox.json, avatar)"
    reads = ("accounts", "avatars", "posts", "reposts")
    sample = "synthetic only (tests/export_fixtures.py write_mastodon_archive): no public real archive"

    def detect(self, path: Path) -> bool:
        try:
            with ExportFiles(path) as files:
                return bool(files.named("actor.json")) and any(
                    '"preferredUsername"' in files.head(n) for n in files.named("actor.json")[:1])
        except (OSError, ValueError):
            return False

    def read(self, path: Path) -> Iterator[AccountRecord | PostRecord | Rejection]:
        with ExportFiles(path) as files:
            yield from files.unsafe()
            actors = files.named("actor.json")
            if not actors:
                raise FieldError(f"no actor.json in {path}: not a Mastodon archive")
            actor_name = actors[0]
            label = files.label(actor_name)
            with files.open(actor_name) as raw:
                try:
                    actor = json.loads(open_text(raw).read(MAX_ACTOR_CHARS + 1))
                except json.JSONDecodeError as exc:
                    raise FieldError(f"{label} is not JSON: {exc.msg}") from None
            try:
                account = self._account(files, actor_name, actor)
            except FieldError as exc:
                yield rejection(label, "file", str(exc), actor)
                return
            yield account
            outboxes = [n for n in files.named("outbox.json") if n.rsplit("/", 1)[0:-1] == actor_name.rsplit("/", 1)[0:-1]]
            for name in outboxes[:1]:
                yield from self._outbox(files, name, account.account_id)

    @staticmethod
    def _account(files: ExportFiles, actor_name: str, actor: Any) -> AccountRecord:
        if not isinstance(actor, dict) or actor.get("type") not in ("Person", "Service", "Application", "Group"):
            raise FieldError("actor.json is not an ActivityPub actor (type Person)")
        username = required_id(actor.get("preferredUsername"), "preferredUsername")
        actor_id = clean_text(actor.get("id"), "id") or clean_text(actor.get("url"), "url")
        domain = urlsplit(actor_id).hostname if actor_id else None
        if not domain:
            raise FieldError("actor has no id URL to take the server's domain from")
        icon = actor.get("icon") if isinstance(actor.get("icon"), dict) else {}
        avatar = clean_text(icon.get("url"), "icon.url")
        if avatar and "://" not in avatar:  # a file of the archive, relative to actor.json
            avatar = files.ref(avatar.lstrip("/"), relative_to=actor_name)
        return AccountRecord(
            platform=PLATFORM,
            account_id=f"{username}@{domain}".lower(),
            source_file=files.label(actor_name),
            source_locator="file",
            handle=f"{username}@{domain}",
            display_name=clean_text(actor.get("name"), "name"),
            bio=clean_text(html_to_text(actor.get("summary")), "summary"),
            url=clean_text(actor.get("url"), "url"),
            created_at=parse_timestamp(actor.get("published"), "published"),
            avatar_ref=real_avatar(PLATFORM, avatar),
        )

    def _outbox(self, files: ExportFiles, name: str, account_id: str) -> Iterator[PostRecord | Rejection]:
        label = files.label(name)
        with files.open(name) as raw:
            for locator, item in ordered_items(open_text(raw), label):
                if isinstance(item, Rejection):
                    yield item
                    continue
                try:
                    post = activity_post(label, locator, account_id, item)
                except FieldError as exc:
                    yield Rejection.of(label, locator, str(exc), excerpt(item))
                    continue
                if post is not None:
                    yield post


MAX_ACTOR_CHARS = 1 << 20


def activity_post(source: str, locator: str, account_id: str, item: Any) -> PostRecord | None:
    """A ``Create`` (of a Note) or ``Announce`` activity as a post; other activities are not posts (None)."""
    if not isinstance(item, dict):
        raise FieldError(f"expected an activity object, got a JSON {type(item).__name__}")
    kind = item.get("type")
    if kind == "Announce":
        target = item.get("object")
        target = target.get("id") if isinstance(target, dict) else target
        return PostRecord(PLATFORM, account_id, required_id(item.get("id"), "id"), source, locator,
                          posted_at=parse_timestamp(item.get("published"), "published"),
                          reposted_id=required_id(target, "object"))
    if kind != "Create":
        return None
    note = item.get("object")
    if not isinstance(note, dict):
        raise FieldError("Create activity has no object")
    if note.get("type") not in ("Note", "Question", "Article"):
        return None
    tags = note.get("tag") if isinstance(note.get("tag"), list) else []
    hashtags = tuple(str(t.get("name", "")).lstrip("#").lower() for t in tags
                     if isinstance(t, dict) and t.get("type") == "Hashtag" and t.get("name"))
    content = note.get("content") if isinstance(note.get("content"), str) else None
    reply = note.get("inReplyTo")
    quote = note.get("quoteUri") or note.get("_misskey_quote") or note.get("quoteUrl")
    return PostRecord(
        platform=PLATFORM,
        account_id=account_id,
        post_id=required_id(note.get("id"), "object.id"),
        source_file=source,
        source_locator=locator,
        posted_at=parse_timestamp(note.get("published") or item.get("published"), "published"),
        replied_id=clean_text(reply, "inReplyTo") if isinstance(reply, str) else None,
        quoted_id=clean_text(quote, "quoteUri") if isinstance(quote, str) else None,
        urls=html_links(content),
        hashtags=tuple(dict.fromkeys(h for h in hashtags if h)),
        text=clean_text(html_to_text(content), "content"),
    )
