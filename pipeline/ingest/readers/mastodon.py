"""Mastodon: API Account entities, and account archives ("Request your archive").

`MastodonReader`: Account entities as a JSON array, JSON lines or one (pretty-printed) object per
file; a file, a folder or a zip of them. An entity that carries an Account under ``account``
(Admin::Account, Status, Notification) is read as that account; a search result's ``accounts``
list is unwrapped, each account one unit.

`MastodonArchiveReader`: the archive a user downloads (zip or unpacked folder): ``actor.json`` (an
ActivityPub Person: the account, its ``icon`` the avatar file of the archive), ``outbox.json`` (an
OrderedCollection whose top-level ``orderedItems`` are streamed item by item): ``Create`` of a
``Note`` (or ``Question``, ``Article``) is a post (reply target ``inReplyTo``, hashtags from
``tag``, links from the HTML), ``Announce`` is a repost (a boost: ``reposted_id`` is the boosted
status URI); every other activity is an `Ignored` unit. ``likes.json`` and ``bookmarks.json``
(collections of status URIs) are read and each item ignored, so every unit of the archive is
accounted for. Post ids are status URIs, so a boost matches the status it boosts across archives.

The account id in the API is local to the server that answered, so the key is the account's
address ``username@domain`` (``acct`` when it has a domain, else with the domain of ``url``).
``note`` is HTML and becomes plain text. ``avatar_static`` is scored (it differs from ``avatar``
only for animated images); Mastodon's ``missing.png`` placeholder is no avatar.
"""

from __future__ import annotations

import html
import json
import logging
import posixpath
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from pipeline.ingest import ledger
from pipeline.ingest.readers.base import (
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
)
from pipeline.ingest.readers.files import ExportFiles
from pipeline.ingest.readers.jsonfiles import detect_by_markers, iter_json_file, json_names
from pipeline.ingest.readers.textio import (
    MAX_JSON_DEPTH,
    MAX_JSON_RECORD_CHARS,
    TOO_DEEP,
    NotAnArray,
    ValueEnd,
    json_depth,
    open_text,
    skip_ws,
)

log = logging.getLogger(__name__)

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


def html_field(value: object, field: str) -> str | None:
    """An HTML field (``note``, ``summary``, ``content``) as plain text. A value that is not text is refused
    as every text field is (an object or array: FieldError naming the field); a number is its digits."""
    text = clean_text(value, field)
    return clean_text(html_to_text(text), field) if text else None


def url_domain(url: str, field: str) -> str | None:
    """The host of a URL; a URL that cannot be parsed (``https://[host/``: an unclosed IPv6 bracket) is the
    record's error, naming the field."""
    try:
        return urlsplit(url).hostname
    except ValueError as exc:
        raise FieldError(f"{field} {url[:80]!r} is not a valid URL ({exc})") from None


class MastodonReader(ExportReader):
    name = "mastodon"
    hint = "Mastodon API Account JSON: an array, JSON lines or one object per file"
    reads = ("accounts", "avatars")
    sample = "mastodon/mastodonpy-cassettes, mastodon/mastodon-docs-examples"

    def detect(self, path: Path) -> bool:
        return detect_by_markers(path, '"acct"', '"username"', '"followers_count"')

    def read(self, path: Path) -> Iterator[AccountRecord | PostRecord | Rejection | Ignored]:
        if MastodonArchiveReader().detect(path):  # --format mastodon on an archive reads it as one
            yield from MastodonArchiveReader().read(path)
            return
        with ExportFiles(path) as files:
            names = json_names(files)
            if not names:
                raise FieldError(f"no .json, .jsonl or .ndjson files in {files.path}")
            yield from files.unsafe()
            for name in names:  # one file's failure is its own: the others are read on
                yield from guarded_file(files.label(name), self._file(files, name))

    def _file(self, files: ExportFiles, name: str) -> Iterator[AccountRecord | Rejection | Ignored]:
        for label, locator, value in iter_json_file(files, name):
            if isinstance(value, Rejection):
                yield value
                continue
            if isinstance(value, NotAnArray):  # one Account object (or one response), pretty-printed or not
                locator, value = "record 1", value.value
            listed = value.get("accounts") if isinstance(value, dict) and "username" not in value else None
            if isinstance(listed, list):  # a search result: its accounts are the units
                ledger.saw(label, len(listed))
                yield Ignored(label, locator, "search result (its accounts read one by one)")
                for i, item in enumerate(listed):
                    where = f"{locator} accounts[{i}]"
                    yield guarded(label, where, item, lambda i=item, w=where, s=label: self._entity(s, w, i))
                continue
            yield guarded(label, locator, value, lambda v=value, w=locator, s=label: self._entity(s, w, v))

    def _entity(self, source: str, locator: str, row: Any) -> AccountRecord:
        """An Account entity, or the Account an Admin::Account, Status or Notification carries."""
        if not isinstance(row, dict):
            raise FieldError(f"expected an Account object, got a JSON {type(row).__name__}")
        inner = row.get("account")
        if isinstance(inner, dict) and ("acct" not in row or "followers_count" not in row):
            return self._record(source, f"{locator} account", inner)
        return self._record(source, locator, row)

    @staticmethod
    def _record(source: str, locator: str, row: dict) -> AccountRecord:
        username = required_id(row.get("username"), "username")
        acct = clean_text(row.get("acct"), "acct") or username
        profile_url = clean_text(row.get("url"), "url")
        domain = url_domain(profile_url, "url") if profile_url else None  # a broken url is the record's error
        if "@" not in acct:
            if not domain:
                raise FieldError(f"acct {acct[:80]!r} has no domain and there is no url to take it from")
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
            bio=html_field(row.get("note"), "note"),
            url=profile_url,
            created_at=parse_timestamp(row.get("created_at")),
            followers=parse_count(row.get("followers_count"), "followers_count"),
            following=parse_count(row.get("following_count"), "following_count"),
            posts=parse_count(row.get("statuses_count"), "statuses_count"),
            avatar_ref=real_avatar(PLATFORM, avatar),
        )


# --- the archive's collections, walked structurally --------------------------------------------------------

_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_TOKEN = re.compile(r'[^\s,\]}\[{"]+')  # a number or literal runs to the next delimiter
TRUNCATED = "the file ends inside the orderedItems array (truncated?): the rest of it is unreadable"


class _Cursor:
    """A JSON text read ``chunk`` characters at a time and walked value by value. Values the reader does not
    want are skipped by bracket matching (linear, strings skipped, nothing parsed or kept), so a deep or
    large ``@context`` costs nothing, and only one array element is held at a time."""

    def __init__(self, fh: IO[str], chunk: int):
        self.fh, self.chunk = fh, chunk
        self.buf, self.pos, self.eof = "", 0, False

    def more(self) -> bool:
        """Read the next chunk, dropping what is behind ``pos``; False at the end of the file."""
        if self.eof:
            return False
        data = self.fh.read(self.chunk)
        if not data:
            self.eof = True
            return False
        self.buf, self.pos = self.buf[self.pos:] + data, 0
        return True

    def peek(self) -> str:
        """The next character that is not whitespace ("" at the end of the file)."""
        while True:
            self.pos = skip_ws(self.buf, self.pos)
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.more():
                return ""

    def scalar(self) -> Any:
        """Decode the string, number or literal at ``pos`` (whole: a chunk boundary never cuts it)."""
        while True:
            if self.buf[self.pos] == '"':
                found = _STRING.match(self.buf, self.pos)
            else:
                found = _TOKEN.match(self.buf, self.pos)
                if not found:
                    raise FieldError(f"not JSON at {self.buf[self.pos:self.pos + 20]!r}")
                if found.end() == len(self.buf) and not self.eof:
                    found = None  # "-0" may go on as ".0015" in the next chunk
            if found:
                try:
                    value = json.loads(found.group())
                except json.JSONDecodeError as exc:
                    raise FieldError(f"not JSON: {exc.msg}") from None
                self.pos = found.end()
                return value
            if len(self.buf) - self.pos > MAX_JSON_RECORD_CHARS:
                raise FieldError(f"a value larger than {MAX_JSON_RECORD_CHARS} characters")
            if not self.more():
                raise FieldError("the file ends inside a value (truncated?)")

    def end_of_container(self, keep: bool) -> int | None:
        """Where the object or array at ``pos`` ends. With ``keep`` the value stays in the buffer (None when
        it is larger than MAX_JSON_RECORD_CHARS); without, what is scanned is dropped as it goes."""
        finder = ValueEnd()
        while (end := finder.find(self.buf, self.pos)) is None:
            if keep and len(self.buf) - self.pos > MAX_JSON_RECORD_CHARS:
                return None
            if not keep:
                self.pos += finder.scanned
                finder.scanned = 0
                if len(self.buf) - self.pos > MAX_JSON_RECORD_CHARS:  # one string that long
                    raise FieldError(f"a string longer than {MAX_JSON_RECORD_CHARS} characters")
            if not self.more():
                raise FieldError("the file ends inside a value (truncated?)")
        return end

    def skip(self) -> None:
        if self.buf[self.pos] in "[{":
            self.pos = self.end_of_container(keep=False) or self.pos
        else:
            self.scalar()

    def expect(self, char: str, what: str) -> None:
        found = self.peek()
        if found != char:
            raise FieldError(f"expected {what}, found {found[:1]!r}" if found else
                             f"the file ends where {what} was expected (truncated?)")
        self.pos += 1


class _Truncated(Exception):
    """The array's element could not be ended: one Rejection stood for the rest of the file."""


def _element(cur: _Cursor, source: str, locator: str) -> Any:
    """The value of the array element at the cursor, or its Rejection when it is not JSON, too deep or too
    large (the cursor then stands after it). Raises _Truncated, carrying the Rejection for the rest of the
    file, when the element cannot be ended."""
    head = cur.buf[cur.pos:cur.pos + 500]
    if cur.buf[cur.pos] not in "[{":
        try:
            return cur.scalar()
        except FieldError as exc:
            raise _Truncated(Rejection.of(source, locator, f"{exc} (the rest of the file is unreadable)", head)) from None
    try:
        end = cur.end_of_container(keep=True)
        if end is None:  # larger than a record may be: skipped as it streams by
            cur.end_of_container(keep=False)
            return Rejection.of(source, locator, f"record larger than {MAX_JSON_RECORD_CHARS} characters", head)
    except FieldError:
        raise _Truncated(Rejection.of(source, locator, TRUNCATED, head)) from None
    start, cur.pos = cur.pos, end
    if json_depth(cur.buf, start, end) > MAX_JSON_DEPTH:
        return Rejection.of(source, locator, TOO_DEEP, head)
    try:  # a raw control character (a NUL, a tab) inside a string is kept: the record repairs its text
        return json.loads(cur.buf[start:end], strict=False)
    except json.JSONDecodeError as exc:  # its brackets balance, so the next element is still found
        return Rejection.of(source, locator, f"not JSON: {exc.msg}", head)


def _elements(cur: _Cursor, source: str, start: int) -> Iterator[tuple[str, Any]]:
    """(locator, value or Rejection) per element of the array at the cursor. An element that is not JSON,
    too deep or too large is its own Rejection and the next is read; a file cut inside the array ends
    with one Rejection for the rest (and raises _Truncated after it)."""
    cur.pos += 1
    index = start
    while True:
        char = cur.peek()
        if char == "]":
            cur.pos += 1
            return
        locator = f"record {index + 1}"
        if index > start:
            if char != ",":
                reason = (f"not JSON: expected ',' or ']' after record {index} (the rest of the file is unreadable)"
                          if char else TRUNCATED)
                yield locator, Rejection.of(source, locator, reason, cur.buf[cur.pos:cur.pos + 500])
                raise _Truncated
            cur.pos += 1
            char = cur.peek()
        index += 1
        if not char:
            yield locator, Rejection.of(source, locator, TRUNCATED, "")
            raise _Truncated
        try:
            value = _element(cur, source, locator)
        except _Truncated as cut:
            yield locator, cut.args[0]
            raise
        yield locator, value


class _Collection:
    """The walk of one collection file's top-level keys (see `collection_items`)."""

    def __init__(self, fh: IO[str], source: str, key: str, chunk: int):
        self.cur, self.source, self.key = _Cursor(fh, chunk), source, key
        self.arrays = self.items = 0
        self.total: Any = None
        self.other: str | None = None  # what the top-level key held when it was not an array

    def open(self) -> None:
        cur = self.cur
        if cur.peek() == "\ufeff":
            cur.pos += 1
        char = cur.peek()
        if char != "{":
            raise FieldError(f"not a JSON object (an ActivityStreams collection with {self.key})" if char else
                             "the file is empty")
        cur.pos += 1

    def walk(self) -> Iterator[tuple[str, Any]]:
        """The items of each top-level array named ``key``; every other value skipped unread."""
        cur, first = self.cur, True
        while cur.peek() != "}":
            if not first:
                cur.expect(",", "',' between the collection's keys")
            first = False
            if cur.peek() != '"':
                cur.expect('"', "a key of the collection")
            name = cur.scalar()
            cur.expect(":", f"':' after the key {str(name)[:40]!r}")
            char = cur.peek()
            if not char:
                raise FieldError("the file ends inside the collection (truncated?)")
            if name == self.key and char == "[":
                self.arrays += 1
                for locator, value in _elements(cur, self.source, self.items):
                    self.items += 1
                    ledger.saw(self.source)
                    yield locator, value
            elif name == "totalItems" and char not in "[{":
                self.total = cur.scalar()
            else:
                if name == self.key:
                    self.other = "an object" if char == "{" else "not an array"
                cur.skip()

    def check(self) -> None:
        """One error when there was no array; warnings when the file says something else than was read."""
        key, source = self.key, self.source
        if not self.arrays:
            raise FieldError(f"its top-level {key} is {self.other}, not an array" if self.other else
                             f"no top-level {key} array: not an ActivityPub collection")
        if self.arrays > 1:
            ledger.note(source, f"{self.arrays} top-level {key} arrays: the items of each were read")
        total = self.total
        if isinstance(total, int) and not isinstance(total, bool) and total != self.items:
            ledger.note(source, f"totalItems says {total}, but its {key} array holds {self.items} items (Mastodon writes the account's status count there; a large gap may mean a cut or partial file)")


def collection_items(fh: IO[str], source: str, key: str = "orderedItems",
                     chunk: int = 1 << 20) -> Iterator[tuple[str, Any]]:
    """(locator, value or Rejection) per item of the top-level ``orderedItems`` array of an ActivityStreams
    collection file, streamed; each item is one unit seen in the ingest ledger.

    The top-level object's keys are walked in order and their values skipped unread, so a key of the same
    name nested anywhere else is never taken for it. A file that is not a JSON object or has no top-level
    array of that name raises FieldError (one error for the file). A file cut inside the array keeps the
    items before the cut and ends with one Rejection for the rest. ``totalItems`` is a cross-check: when it
    differs from the items read, a warning is logged (Mastodon writes the account's statuses_count there)."""
    ledger.saw(source, 0)
    walk = _Collection(fh, source, key, chunk)
    walk.open()
    try:
        yield from walk.walk()
    except _Truncated:
        return
    except FieldError as exc:
        if not walk.arrays:
            raise
        ledger.note(source, f"{exc}, after its {key} array (all {walk.items} of its items were read)")
    walk.check()


# --- the archive --------------------------------------------------------------------------------------------

MAX_ACTOR_CHARS = 1 << 20
POST_TYPES = ("Note", "Question", "Article")
ARCHIVE_FILES = ("outbox.json", "likes.json", "bookmarks.json")
COLLECTIONS = {"likes.json": "liked status", "bookmarks.json": "bookmarked status"}
_TYPE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_:.-]{0,47}")  # an ActivityStreams type, compacted or prefixed


UNRECOGNISED = "?"  # a type that is not a plain name (too long, odd characters): never a ledger key as is


def _type_of(value: Any) -> str | None:
    """The object's type, to test and to name in an ignored unit's reason (bounded: see UNRECOGNISED)."""
    if isinstance(value, list):  # JSON-LD allows several types: a post type wins, else the first
        names = [v for v in value if isinstance(v, str)]
        value = next((v for v in names if v in POST_TYPES), names[0] if names else None)
    if not isinstance(value, str) or not value.strip():
        return None
    return value if _TYPE_NAME.fullmatch(value) else UNRECOGNISED


def _a(name: str | None) -> str:
    """'a Page', 'an Event', 'an unrecognised type', 'an object without type': for reasons."""
    if name is None:
        return "an object without type"
    if name == UNRECOGNISED:
        return "an object of an unrecognised type"
    return f"an {name}" if name[:1].lower() in "aeiou" else f"a {name}"


def _uri(value: Any) -> Any:
    """A reference that may be embedded as an object with an ``id``, or (JSON-LD) be a list: its first."""
    if isinstance(value, list):
        value = next((v for v in value if isinstance(v, (str, dict))), None)
    return value.get("id") if isinstance(value, dict) else value


class MastodonArchiveReader(ExportReader):
    name = "mastodon_archive"
    hint = "Mastodon account archive (zip or folder with actor.json, outbox.json, avatar)"
    reads = ("accounts", "avatars", "posts", "reposts")
    sample = "synthetic only (tests/export_fixtures.py write_mastodon_archive): no public real archive"

    def detect(self, path: Path) -> bool:
        try:
            with ExportFiles(path) as files:
                return any('"preferredUsername"' in files.head(n, 65536) for n in files.named("actor.json")[:1])
        except (OSError, ValueError):
            return False

    def read(self, path: Path) -> Iterator[AccountRecord | PostRecord | Rejection | Ignored]:
        """Each ``actor.json`` with the outbox, likes and bookmarks beside it (a folder may hold several
        archives; a single actor's files are taken wherever they are). JSON files that belong to no actor are
        registered and ignored as whole files: one unit each, its reason in the ledger."""
        with ExportFiles(path) as files:
            actors = files.named("actor.json")
            if not actors:
                raise FieldError(f"no actor.json in {path}: not a Mastodon archive")
            yield from files.unsafe()
            names = set(files.names())
            read: set[str] = set()
            for actor_name in actors:
                folder = posixpath.dirname(actor_name)
                group = {base: posixpath.join(folder, base) for base in ARCHIVE_FILES
                         if posixpath.join(folder, base) in names}
                if len(actors) == 1:  # one account: its outbox is its own wherever the archive was unpacked to
                    group = {base: group.get(base) or files.named(base)[0] for base in ARCHIVE_FILES
                             if group.get(base) or files.named(base)}
                read.add(actor_name)
                read.update(group.values())
                yield from self._archive(files, actor_name, group)
            for name in json_names(files):
                if name not in read:
                    label = files.label(name)
                    ledger.saw(label)
                    yield Ignored(label, "file", "JSON file that is not part of a Mastodon archive (not read)")

    def _archive(self, files: ExportFiles, actor_name: str,
                 group: dict[str, str]) -> Iterator[AccountRecord | PostRecord | Rejection | Ignored]:
        label = files.label(actor_name)
        ledger.saw(label)
        actor: Any = None
        account: AccountRecord | Rejection
        try:
            actor = self._actor_json(files, actor_name)
        except FieldError as exc:
            account = Rejection.of(label, "file", str(exc), "")
        except (OSError, ValueError) as exc:  # a zip member refused while inflating (UnsafeMember), I/O
            account = Rejection.of(label, "file", f"actor.json unreadable ({type(exc).__name__}: {str(exc)[:200]})", "")
        else:
            account = guarded(label, "file", actor, lambda: self._account(files, actor_name, actor))
        yield account
        # Posts of a rejected actor are still read, each under the address the actor gives (or the file's
        # name): ingest quarantines them one by one as posts of an account the export does not have.
        account_id = account.account_id if isinstance(account, AccountRecord) else _fallback_id(actor, label)
        if "outbox.json" in group:
            outbox = group["outbox.json"]
            yield from guarded_file(files.label(outbox), self._outbox(files, outbox, account_id), "outbox.json")
        else:  # nothing to count, so the ledger cannot say it: the log does
            ledger.note(label, "no outbox.json beside it: the archive's posts are not in the export")
        for base, reason in COLLECTIONS.items():
            if base in group:
                yield from guarded_file(files.label(group[base]), self._collection(files, group[base], reason), base)

    @staticmethod
    def _actor_json(files: ExportFiles, actor_name: str) -> Any:
        with files.open(actor_name) as raw:
            text = open_text(raw).read(MAX_ACTOR_CHARS + 1).lstrip("\ufeff")
        if len(text) > MAX_ACTOR_CHARS:
            raise FieldError(f"actor.json is larger than {MAX_ACTOR_CHARS} characters: not an actor")
        if json_depth(text) > MAX_JSON_DEPTH:
            raise FieldError(f"actor.json: {TOO_DEEP}")
        try:
            return json.loads(text, strict=False)
        except json.JSONDecodeError as exc:
            raise FieldError(f"actor.json is not JSON: {exc.msg}") from None

    @staticmethod
    def _account(files: ExportFiles, actor_name: str, actor: Any) -> AccountRecord:
        if not isinstance(actor, dict) or _type_of(actor.get("type")) not in ("Person", "Service", "Application",
                                                                               "Group", "Organization"):
            raise FieldError("actor.json is not an ActivityPub actor (type Person)")
        username = required_id(actor.get("preferredUsername"), "preferredUsername")
        actor_id = clean_text(actor.get("id"), "id") or clean_text(actor.get("url"), "url")
        domain = url_domain(actor_id, "id") if actor_id else None
        if not domain:
            raise FieldError("actor has no id URL to take the server's domain from")
        icon = actor.get("icon")
        icon = next((i for i in icon if isinstance(i, dict)), None) if isinstance(icon, list) else icon
        avatar = clean_text(_uri(icon.get("url")) if isinstance(icon, dict) else None, "icon.url")
        if avatar and "://" not in avatar:  # a file of the archive, relative to actor.json
            avatar = files.ref(avatar.lstrip("/"), relative_to=actor_name)
        return AccountRecord(
            platform=PLATFORM,
            account_id=f"{username}@{domain}".lower(),
            source_file=files.label(actor_name),
            source_locator="file",
            handle=f"{username}@{domain}",
            display_name=clean_text(actor.get("name"), "name"),
            bio=html_field(actor.get("summary"), "summary"),
            url=clean_text(_uri(actor.get("url")), "url"),
            created_at=parse_timestamp(actor.get("published"), "published"),
            avatar_ref=real_avatar(PLATFORM, avatar),
        )

    @staticmethod
    def _outbox(files: ExportFiles, name: str, account_id: str) -> Iterator[PostRecord | Rejection | Ignored]:
        label = files.label(name)
        with files.open(name) as raw:
            for locator, item in collection_items(open_text(raw), label):
                if isinstance(item, Rejection):
                    yield item
                    continue
                yield guarded(label, locator, item, lambda item=item, locator=locator: activity_post(
                    label, locator, account_id, item))

    @staticmethod
    def _collection(files: ExportFiles, name: str, reason: str) -> Iterator[Rejection | Ignored]:
        """likes.json, bookmarks.json: status URIs; each one counted and ignored (not the account's posts)."""
        label = files.label(name)
        with files.open(name) as raw:
            for locator, item in collection_items(open_text(raw), label):
                if isinstance(item, Rejection):
                    yield item
                elif isinstance(_uri(item), str) and _uri(item).strip():
                    yield Ignored(label, locator, reason)
                else:
                    yield Rejection.of(label, locator, f"expected a status URI, got a JSON {type(item).__name__}",
                                       repr(item))


def _fallback_id(actor: Any, label: str) -> str:
    """The address a rejected actor still gives (``preferredUsername@domain``), else the actor file's name."""
    if isinstance(actor, dict) and isinstance(actor.get("preferredUsername"), str) and isinstance(actor.get("id"), str):
        try:
            domain = urlsplit(actor["id"]).hostname
        except ValueError:
            domain = None
        if domain and actor["preferredUsername"].strip():
            return f"{actor['preferredUsername'].strip()}@{domain}".lower()[:200]
    return f"rejected {label}"


def activity_post(source: str, locator: str, account_id: str, item: Any) -> PostRecord | Ignored:
    """A ``Create`` (of a Note, Question or Article) or ``Announce`` activity as a post; any other activity,
    and a Create of another object type, is an Ignored unit naming what it is."""
    if not isinstance(item, dict):
        raise FieldError(f"expected an activity object, got a JSON {type(item).__name__}")
    kind = _type_of(item.get("type"))
    if kind is None:
        raise FieldError("activity has no type")
    if kind == UNRECOGNISED:
        return Ignored(source, locator, "activity of an unrecognised type")
    if kind == "Announce":
        return PostRecord(PLATFORM, account_id, required_id(item.get("id"), "id"), source, locator,
                          posted_at=parse_timestamp(item.get("published"), "published"),
                          reposted_id=required_id(_uri(item.get("object")), "object"))
    if kind != "Create":
        return Ignored(source, locator, f"activity {kind}")
    note = item.get("object")
    if not isinstance(note, dict):
        raise FieldError("Create activity has no object" if note is None else
                         f"Create activity's object is a JSON {type(note).__name__}, not an embedded object")
    what = _type_of(note.get("type"))
    if what not in POST_TYPES:
        return Ignored(source, locator, f"Create of {_a(what)}")
    tags = note.get("tag")
    tags = tags if isinstance(tags, list) else [tags]
    hashtags = (clean_text(t.get("name"), "tag.name") for t in tags
                if isinstance(t, dict) and t.get("type") == "Hashtag" and isinstance(t.get("name"), str))
    content = clean_text(note.get("content"), "content")
    quote = note.get("quoteUri") or note.get("_misskey_quote") or note.get("quoteUrl") or note.get("quote")
    return PostRecord(
        platform=PLATFORM,
        account_id=account_id,
        post_id=required_id(note.get("id"), "object.id"),
        source_file=source,
        source_locator=locator,
        posted_at=parse_timestamp(note.get("published") or item.get("published"), "published"),
        replied_id=clean_text(_uri(note.get("inReplyTo")), "inReplyTo"),
        quoted_id=clean_text(_uri(quote), "quoteUri"),
        urls=html_links(content),
        hashtags=tuple(dict.fromkeys(h.lstrip("#").lower() for h in hashtags if h and h.lstrip("#"))),
        text=clean_text(html_to_text(content), "content"),
    )
