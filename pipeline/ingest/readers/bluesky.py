"""Bluesky (AT Protocol): the account and post model, and JSON API responses (`BlueskyReader`); keyed by
DID. CAR repository exports are read by `pipeline.ingest.readers.bluesky_car` with this model.

JSON (`BlueskyReader`), in a JSON array, JSON lines or one response per file, a file, folder or zip:
- repo records ``{"uri": "at://<did>/<collection>/<rkey>", "cid", "value": {record}}``, alone
  (``getRecord``) or in a ``listRecords`` page (``{"records": [...]}``); ``app.bsky.actor.profile``
  records are accounts, ``app.bsky.feed.post`` and ``app.bsky.feed.repost`` records are posts;
- profile views (``getProfile``; wrapped in ``profiles[]``, ``actors[]``, ``followers[]``,
  ``follows[]`` and ``subject`` by getProfiles, searchActors, getSuggestions, getFollowers,
  getFollows): accounts with handle, counts and the avatar URL;
- post views (``posts[]`` of getPosts, ``feed[].post`` of getAuthorFeed/getTimeline): posts;
- ``describeRepo`` responses name a repository, not a profile: ignored as such.
An author whose posts are in the export but whose profile is not becomes an account with its DID only
(``inferred``: no unit of the export stands for it).

JSON units (the ingest ledger's ``seen``): each item of a response's list (``records``, ``profiles``,
``actors``, ``followers``, ``follows``, ``posts``, ``feed``), and its ``subject`` (the account whose
followers or follows are listed); a value that is no such response (a ``getRecord`` record, a
``getProfile`` view, an array element or JSON line that is a record) is one unit; a response whose
lists are empty is one unit, ignored. A response (a lone object, one JSON line, or an array element,
of any size) is decoded item by item: one item nested too deep, broken or over 16 MB is that item's
rejection, the others are read; a file over 16 MB and any array are streamed (memory bounded by one
item), and a value over 16 MB that is no response is one rejection. Ignored, by reason: ``describeRepo response (no account)``, ``record <collection>`` (a like,
follow, block, ... record), ``response with empty lists (no records or views)``.

Profile-record avatars are blob refs ``{"$type": "blob", "ref": {"$link": CID}}`` (or the legacy
``{"cid": CID}``): a file named by the CID beside the records is used, else the public CDN URL
``https://cdn.bsky.app/img/avatar/plain/<did>/<cid>@jpeg``. A profile without a picture has no
avatar field (Bluesky has no placeholder URL). Post ids are the posts' ``at://`` URIs, so a
repost's subject URI matches the reposted post.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterator

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
)
from pipeline.ingest.readers.files import ExportFiles
from pipeline.ingest.readers.jsonfiles import detect_by_markers, iter_json_file, json_names, lone_value
from pipeline.ingest.readers.textio import (
    MAX_JSON_DEPTH,
    MAX_JSON_RECORD_CHARS,
    TOO_DEEP,
    ValueEnd,
    json_depth,
    open_text,
    skip_value,
)

PLATFORM = "bluesky"
PROFILE_TYPE = "app.bsky.actor.profile"
POST_TYPE = "app.bsky.feed.post"
REPOST_TYPE = "app.bsky.feed.repost"
READ_COLLECTIONS = (PROFILE_TYPE, POST_TYPE, REPOST_TYPE)
CDN_AVATAR = "https://cdn.bsky.app/img/avatar/plain/{did}/{cid}@jpeg"
VIEW_LISTS = ("profiles", "actors", "followers", "follows")
LIST_KEYS = ("records", *VIEW_LISTS, "posts", "feed")  # the lists of an API response whose items are units
DESCRIBE_REPO = "describeRepo response (no account)"
EMPTY_RESPONSE = "response with empty lists (no records or views)"
_DID = re.compile(r"^did:(plc:[a-z2-7]{24}|web:[a-zA-Z0-9.:%-]+)$")
_CID = re.compile(r"^[a-zA-Z0-9]{20,100}$")
NSID = re.compile(r"^[a-zA-Z][a-zA-Z0-9-]{0,62}(\.[a-zA-Z0-9-]{1,63}){2,}$")  # a collection name


def check_did(value: Any) -> str:
    did = str(value or "").strip()
    if not did:
        raise FieldError("record has no DID (neither 'did' nor an at:// 'uri')")
    if not _DID.match(did):
        raise FieldError(f"{did[:80]!r} is not a did:plc or did:web identifier")
    return did


def did_of(uri: Any) -> str | None:
    return uri[5:].split("/", 1)[0] if isinstance(uri, str) and uri.startswith("at://") else None


def _collection_of(uri: Any) -> str | None:
    parts = uri[5:].split("/") if isinstance(uri, str) and uri.startswith("at://") else []
    return parts[1] if len(parts) >= 3 else None


def _uri(value: Any) -> str | None:
    uri = value.get("uri") if isinstance(value, dict) else None
    return clean_text(uri, "uri") if isinstance(uri, str) and uri.startswith("at://") else None


def type_name(value: Any) -> str:
    """What a value is, for a reason: "a map", "an integer", "text", "null"."""
    return {dict: "a map", list: "a list", str: "text", bytes: "bytes", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "null"}.get(type(value), f"a {type(value).__name__}")


def post_record(source: str, locator: str, did: str, uri: str, value: dict) -> PostRecord:
    """An ``app.bsky.feed.post`` or ``app.bsky.feed.repost`` record as a post (a repost: reposted_id set)."""
    kind = value.get("$type")
    if kind == REPOST_TYPE:
        subject = _uri(value.get("subject"))
        if not subject:
            raise FieldError("repost has no subject at:// uri")
        return PostRecord(PLATFORM, did, uri, source, locator, posted_at=parse_timestamp(value.get("createdAt"), "createdAt"),
                          reposted_id=subject)
    embed = value.get("embed") if isinstance(value.get("embed"), dict) else {}
    quoted = embed.get("record") if isinstance(embed.get("record"), dict) else {}
    quoted = quoted.get("record") if isinstance(quoted.get("record"), dict) else quoted  # recordWithMedia
    media = embed.get("media") if isinstance(embed.get("media"), dict) else embed
    external = media.get("external") if isinstance(media.get("external"), dict) else {}
    urls: list[str] = []
    tags: list[str] = [t.lstrip("#").lower() for t in _list(value.get("tags")) if isinstance(t, str)]
    for facet in _list(value.get("facets")):
        for feature in _list(facet.get("features")) if isinstance(facet, dict) else []:
            if not isinstance(feature, dict):
                continue
            if isinstance(feature.get("uri"), str):
                urls.append(feature["uri"])
            if isinstance(feature.get("tag"), str):
                tags.append(feature["tag"].lstrip("#").lower())
    if isinstance(external.get("uri"), str) and external["uri"] not in urls:
        urls.append(external["uri"])
    reply = value.get("reply") if isinstance(value.get("reply"), dict) else {}
    return PostRecord(
        platform=PLATFORM, account_id=did, post_id=uri, source_file=source, source_locator=locator,
        posted_at=parse_timestamp(value.get("createdAt"), "createdAt"),
        quoted_id=_uri(quoted), replied_id=_uri(reply.get("parent")),
        urls=tuple(clean_text(u, "facet uri") or "" for u in urls if u),
        hashtags=tuple(dict.fromkeys(t for t in tags if t)),
        text=clean_text(value.get("text"), "text"),
    )


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def profile_account(source: str, locator: str, did: str, profile: dict, avatar: str | None,
                    handle: str | None = None) -> AccountRecord:
    return AccountRecord(
        platform=PLATFORM, account_id=did, source_file=source, source_locator=locator,
        handle=clean_text(handle, "handle"),
        display_name=clean_text(profile.get("displayName"), "displayName"),
        bio=clean_text(profile.get("description"), "description"),
        created_at=parse_timestamp(profile.get("createdAt"), "createdAt"),
        avatar_ref=avatar,
    )


def blob_avatar(did: str, blob: Any, blobs: dict[str, str]) -> str | None:
    """A profile record's avatar blob as a local file (by CID) or the CDN URL."""
    if blob is None:
        return None
    if not isinstance(blob, dict):
        raise FieldError(f"avatar is {type_name(blob)}, not a blob")
    ref = blob.get("ref")
    cid = ref.get("$link") if isinstance(ref, dict) else (ref if isinstance(ref, (str, bytes)) else blob.get("cid"))
    if isinstance(cid, bytes):  # a CAR's binary CID link
        import libipld

        try:
            cid = libipld.encode_cid(cid)
        except ValueError:
            raise FieldError(f"avatar blob ref is not a CID ({cid[:40].hex()})") from None
    if not isinstance(cid, str) or not _CID.match(cid):
        raise FieldError(f"avatar blob has no valid CID ({str(cid)[:80]!r})")
    return blobs.get(cid) or CDN_AVATAR.format(did=did, cid=cid)


class _Empty:
    """A response whose lists hold no item: one unit, ignored."""


EMPTY = _Empty()
Unit = Any  # a decoded JSON value, a Rejection, or EMPTY


class BlueskyReader(ExportReader):
    name = "bluesky"
    hint = "Bluesky API JSON: listRecords/getRecord records, getProfile(s)/getFollowers/getFollows/searchActors views"
    reads = ("accounts", "avatars", "posts", "reposts")
    sample = "bluesky/bskyr-actor-views, bluesky/bskyr-repo-records"

    def detect(self, path: Path) -> bool:
        return (detect_by_markers(path, PROFILE_TYPE) or detect_by_markers(path, '"did:plc:', '"handle"')
                or detect_by_markers(path, '"at://did:', '"$type":"app.bsky.')
                or detect_by_markers(path, '"at://did:', '"$type": "app.bsky.'))

    def read(self, path: Path) -> Iterator[AccountRecord | PostRecord | Rejection | Ignored]:
        with ExportFiles(path) as files:
            names = json_names(files)
            if not names:
                raise FieldError(f"no .json, .jsonl or .ndjson files in {files.path}")
            blobs = _blob_index(files)
            yield from files.unsafe()
            accounts: set[str] = set()
            authors: dict[str, tuple[str, str]] = {}  # DIDs with posts -> where first seen
            for name in names:
                label = files.label(name)
                for record in guarded_file(label, self._file(files, name, label, blobs)):
                    if isinstance(record, AccountRecord):
                        accounts.add(record.account_id)
                    elif isinstance(record, PostRecord):
                        authors.setdefault(record.account_id, (record.source_file, record.source_locator))
                    yield record
            for did, (label, loc) in sorted(authors.items()):
                if did not in accounts:  # posts of a repo listing without its profile: the author exists
                    yield AccountRecord(PLATFORM, did, label, f"{loc} (author of posts)", inferred=True)

    def _file(self, files: ExportFiles, name: str, label: str,
              blobs: dict[str, str]) -> Iterator[AccountRecord | PostRecord | Rejection | Ignored]:
        """Each unit of one JSON file (counted as seen by `json_units`) as a record, a rejection or ignored."""
        for loc, unit in json_units(files, name, label):
            if isinstance(unit, Rejection):
                yield unit
            elif unit is EMPTY:
                yield Ignored(label, loc, EMPTY_RESPONSE)
            else:
                yield guarded(label, loc, unit, lambda loc=loc, unit=unit: self._item(label, loc, unit, blobs))

    @staticmethod
    def _item(source: str, locator: str, item: Any, blobs: dict[str, str]) -> AccountRecord | PostRecord | Ignored:
        if not isinstance(item, dict):
            raise FieldError(f"expected a record or profile view object, got a JSON {type(item).__name__}")
        if "didDoc" in item or "collections" in item:  # names a repository and carries no profile
            return Ignored(source, locator, DESCRIBE_REPO)
        if isinstance(item.get("post"), dict) and "uri" in item["post"]:  # a feed item: the post view in it
            item = item["post"]
        uri = item.get("uri")
        record = item.get("value", item.get("record"))
        if isinstance(record, dict):  # a repo record (or a post view's record)
            return _repo_record(source, locator, item, uri, record, blobs)
        if item.get("$type") == PROFILE_TYPE:  # a bare profile record has no DID
            raise FieldError("record has no DID (neither 'did' nor an at:// 'uri')")
        did = check_did(item.get("did") or did_of(uri))
        if "handle" not in item:
            raise FieldError("an object with a DID but no handle and no record: not a profile view")
        return _view_account(source, locator, did, item, blobs)


def _repo_record(source: str, locator: str, item: dict, uri: Any, record: dict,
                 blobs: dict[str, str]) -> AccountRecord | PostRecord | Ignored:
    kind = record.get("$type", _collection_of(uri))
    if kind not in (None, *READ_COLLECTIONS):
        if isinstance(kind, str) and NSID.match(kind):
            return Ignored(source, locator, f"record {kind}")
        raise FieldError(f"record $type {str(kind)[:80]!r} is not a collection name")
    did = check_did(item.get("did") or did_of(uri))
    if kind in (POST_TYPE, REPOST_TYPE):
        if not isinstance(uri, str) or not uri.startswith("at://"):
            raise FieldError(f"{kind} record has no at:// uri")
        return post_record(source, locator, did, clean_text(uri, "uri") or "", {**record, "$type": kind})
    return profile_account(source, locator, did, record, blob_avatar(did, record.get("avatar"), blobs),
                           item.get("handle"))


def _view_account(source: str, locator: str, did: str, view: dict, blobs: dict[str, str]) -> AccountRecord:
    """A profile view (``app.bsky.actor.defs#profileView*``): the avatar is a URL string, counts are given."""
    avatar = view.get("avatar")
    ref = clean_text(avatar, "avatar") if isinstance(avatar, str) else blob_avatar(did, avatar, blobs)
    record = profile_account(source, locator, did, view, real_avatar(PLATFORM, ref), view.get("handle"))
    return AccountRecord(**{**record.__dict__,
                            "followers": parse_count(view.get("followersCount"), "followersCount"),
                            "following": parse_count(view.get("followsCount"), "followsCount"),
                            "posts": parse_count(view.get("postsCount"), "postsCount")})


def _unwrap(locator: str, value: Any) -> list[tuple[str, Unit]]:
    """The units of one decoded JSON value: the records or views inside an API response (listRecords,
    getProfiles, getFollowers, ...) and its subject; the value itself when it is no response; EMPTY for a
    response whose lists are empty."""
    lists = [k for k in LIST_KEYS if isinstance(value, dict) and isinstance(value.get(k), list)]
    if not lists:
        return [(locator, value)]
    out: list[tuple[str, Unit]] = []
    if isinstance(value.get("subject"), dict) and "did" in value["subject"]:  # getFollowers/getFollows: whose list
        out.append((f"{locator} subject", value["subject"]))
    for key in lists:
        out.extend((f"{locator} {key}[{i}]", v) for i, v in enumerate(value[key]))
    return out or [(locator, EMPTY)]


def json_units(files: ExportFiles, name: str, label: str) -> Iterator[tuple[str, Unit]]:
    """(locator, unit) for each unit of one JSON file, each counted as seen in the ingest ledger.

    A file that starts with an object and fits in MAX_JSON_RECORD_CHARS (a response, or JSON lines of
    them) is scanned in memory, each list item decoded on its own with a depth bound. A larger one, and
    an array of any size, is streamed (`_stream_units`): each value of up to MAX_JSON_RECORD_CHARS is
    scanned the same way, and a larger response is walked member by member, so only an item over the
    limit is lost (one rejection). Other files go through the shared plumbing, which counts its values,
    and a response among them is unwrapped (its items beyond the first counted here)."""
    ledger.saw(label, 0)
    head = files.head(name, 4096).lstrip("\ufeff \t\r\n")
    if head.startswith("{"):
        with files.open(name) as raw:
            text = open_text(raw).read(MAX_JSON_RECORD_CHARS + 1)
        if len(text) <= MAX_JSON_RECORD_CHARS:
            for loc, unit in _text_values(text, label):
                ledger.saw(label)
                yield loc, unit
            return
        del text
    if head.startswith(("{", "[")):
        with files.open(name) as raw:
            for loc, unit in _stream_units(open_text(raw), label):
                ledger.saw(label)
                yield loc, unit
        return
    for _, loc, value in iter_json_file(files, name):
        if isinstance(value, Rejection):
            yield loc, value
            continue
        units = _unwrap(loc, lone_value(value))
        ledger.saw(label, len(units) - 1)  # the plumbing counted the value once; its items are the units
        yield from units


# --- a response decoded item by item ------------------------------------------------------------------

_DECODER = json.JSONDecoder()
_WS = re.compile(r"[ \t\r\n]*")
_BRACKETS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]|"')


def _ws(text: str, pos: int) -> int:
    return _WS.match(text, pos).end()


def _value_end(text: str, pos: int) -> int:
    """Where the JSON value at text[pos] ends: brackets matched (strings skipped) without recursion and in
    linear time, so a value nested 10,000 deep is found without parsing it; ValueError if it does not end."""
    if text[pos:pos + 1] not in ("[", "{"):
        return _DECODER.raw_decode(text, pos)[1]  # a scalar (JSONDecodeError is a ValueError)
    depth = 0
    for match in _BRACKETS.finditer(text, pos):
        token = match.group()
        if token == '"':
            raise ValueError(f"unterminated string at character {match.start()}")
        if token in ("[", "{"):
            depth += 1
        elif token in ("]", "}"):
            depth -= 1
            if depth == 0:
                return match.end()
    raise ValueError("the JSON value is not closed (truncated?)")


def _decode(text: str, start: int, end: int, label: str, loc: str) -> Any:
    """text[start:end] decoded, or its Rejection (nested too deep, not JSON)."""
    if json_depth(text, start, end) > MAX_JSON_DEPTH:
        return Rejection.of(label, loc, TOO_DEEP, text[start:start + 500])
    try:
        return json.loads(text[start:end])
    except json.JSONDecodeError as exc:
        return Rejection.of(label, loc, f"not JSON: {exc.msg}", text[start:start + 500])
    except RecursionError:  # pragma: no cover - json_depth caught it first
        return Rejection.of(label, loc, TOO_DEEP, "")


def _text_values(text: str, label: str) -> Iterator[tuple[str, Unit]]:
    """The units of a file's text: one value (pretty-printed or not), or JSON lines (the first line is a
    whole value) each unwrapped. A line that is not JSON is its rejection; the next lines are read."""
    pos = _ws(text, 1 if text.startswith("\ufeff") else 0)
    if pos >= len(text):
        return
    newline = text.find("\n", pos)
    first_line = text[pos:newline if newline >= 0 else len(text)]
    try:
        one_line = _ws(first_line, _value_end(first_line, 0)) == len(first_line)
    except ValueError:
        one_line = False
    if not one_line:  # one value over several lines; anything after it is unreadable
        end = yield from _response_units(text, pos, label, "file")
        if end is not None and _ws(text, end) < len(text):
            yield "file end", Rejection.of(label, f"character {end}", "not JSON: extra data after the value "
                                           "(the rest of the file is unreadable)", text[end:end + 500])
        return
    for number, line in enumerate(text[pos:].split("\n"), start=text.count("\n", 0, pos) + 1):
        yield from _line_units(line, label, f"line {number}")


def _line_units(line: str, label: str, loc: str) -> Iterator[tuple[str, Unit]]:
    """The units of one JSON line (none for a blank one); data after its value is one rejection."""
    start = _ws(line, 0)
    if start >= len(line):
        return
    end = yield from _response_units(line, start, label, loc)
    if end is not None and _ws(line, end) < len(line):
        yield loc, Rejection.of(label, loc, "not JSON: extra data after the value", line[:500])


def _response_units(text: str, start: int, label: str, loc: str) -> Iterator[tuple[str, Unit]]:
    """Units of the value at text[start]; returns where it ended (None when it is broken). An object with
    a list of LIST_KEYS is a response: its subject and each list item are units, each decoded alone, and a
    syntax error inside it loses only the items after it (one rejection)."""
    if text[start] != "{":
        try:
            end = _value_end(text, start)
        except ValueError as exc:
            yield loc, Rejection.of(label, loc, f"not JSON: {exc}", text[start:start + 500])
            return None
        yield loc, _decode(text, start, end, label, loc)
        return end
    scan = _ObjectScan(text, start, label, loc)
    try:
        yield from scan.units()
    except ValueError as exc:
        where = f"{loc} after {scan.last}" if scan.response else loc
        rest = " (the rest of the response is unreadable)" if scan.response else ""
        yield where, Rejection.of(label, where, f"not JSON: {exc}{rest}", text[scan.pos:scan.pos + 500])
        return None
    if not scan.response:
        yield loc, _decode(text, start, scan.pos, label, loc)
    elif not scan.yielded:
        yield loc, EMPTY
    return scan.pos


@dataclass
class _ObjectScan:
    """Walks one JSON object's members by position, decoding only the subject and the list items."""

    text: str
    pos: int
    label: str
    loc: str
    response: bool = False  # a list of LIST_KEYS was found
    yielded: int = 0
    last: str = "its start"
    subject: tuple[int, int] | None = None

    def units(self) -> Iterator[tuple[str, Unit]]:
        text = self.text
        self.pos = _ws(text, self.pos + 1)
        if text[self.pos:self.pos + 1] == "}":
            self.pos += 1
            return
        while True:
            if text[self.pos:self.pos + 1] != '"':
                raise ValueError(f"expected a member name at character {self.pos}")
            key, self.pos = _DECODER.raw_decode(text, self.pos)
            self.pos = _ws(text, self.pos)
            if text[self.pos:self.pos + 1] != ":":
                raise ValueError(f"expected ':' at character {self.pos}")
            self.pos = _ws(text, self.pos + 1)
            if key in LIST_KEYS and text[self.pos:self.pos + 1] == "[":
                if not self.response:
                    self.response = True
                    yield from self._subject()
                yield from self._items(key)
            else:
                end = _value_end(text, self.pos)
                if key == "subject" and text[self.pos] == "{":
                    self.subject = (self.pos, end)
                    if self.response:
                        yield from self._subject()
                self.pos = end
            self.pos = _ws(text, self.pos)
            separator = text[self.pos:self.pos + 1]
            if separator == "}":
                self.pos += 1
                return
            if separator != ",":
                raise ValueError(f"expected ',' or '}}' at character {self.pos}")
            self.pos = _ws(text, self.pos + 1)

    def _subject(self) -> Iterator[tuple[str, Unit]]:
        if self.subject is None:
            return
        loc = f"{self.loc} subject"
        value = _decode(self.text, *self.subject, self.label, loc)
        self.subject = None
        if isinstance(value, Rejection) or (isinstance(value, dict) and "did" in value):
            self.yielded += 1
            yield loc, value

    def _items(self, key: str) -> Iterator[tuple[str, Unit]]:
        text = self.text
        self.pos = _ws(text, self.pos + 1)
        index = 0
        while text[self.pos:self.pos + 1] != "]":
            if index:
                if text[self.pos:self.pos + 1] != ",":
                    raise ValueError(f"expected ',' or ']' at character {self.pos}")
                self.pos = _ws(text, self.pos + 1)
            end = _value_end(text, self.pos)
            loc = f"{self.loc} {key}[{index}]"
            self.yielded += 1
            self.last = f"{key}[{index}]"
            yield loc, _decode(text, self.pos, end, self.label, loc)
            self.pos = _ws(text, end)
            index += 1
        self.pos += 1


# --- a file too large to hold, streamed value by value and a large response item by item ------------

_SCALAR = json.JSONDecoder(strict=False)  # only to find where a scalar ends; values are decoded by `_decode`
_LINE_SPACE = re.compile(r"[ \t\r]*")


def _oversize() -> str:
    return f"larger than {MAX_JSON_RECORD_CHARS} characters"


class _Feed:
    """A text file read a chunk at a time through a window ``buf[pos:]``: a value is buffered only up to
    MAX_JSON_RECORD_CHARS, and one larger is streamed past (textio's skipper) without being kept."""

    def __init__(self, fh: IO[str], chunk: int = 1 << 20):
        self.fh, self.chunk = fh, chunk
        self.buf, self.pos, self.eof = "", 0, False
        self.total = 0  # characters read from fh
        self.newlines = 0  # newlines among them

    def read(self, size: int) -> str:
        """fh.read, counted (textio's skipper reads through this too)."""
        text = self.fh.read(size)
        self.total += len(text)
        self.newlines += text.count("\n")
        return text

    def more(self) -> bool:
        """One more chunk into the window (what is before ``pos`` dropped); False at the end of the file."""
        if self.eof:
            return False
        if self.pos > self.chunk:
            self.buf, self.pos = self.buf[self.pos:], 0
        text = self.read(self.chunk)
        self.eof = len(text) < self.chunk
        self.buf += text
        return bool(text)

    def ws(self) -> str:
        """Past whitespace; the next character, or "" at the end of the file."""
        while True:
            self.pos = _ws(self.buf, self.pos)
            if self.pos < len(self.buf) or not self.more():
                return self.buf[self.pos:self.pos + 1]

    def at(self) -> int:
        """The file offset (in characters) of ``pos``, for messages."""
        return self.total - len(self.buf) + self.pos

    def line_number(self) -> int:
        return self.newlines - self.buf.count("\n", self.pos) + 1

    def excerpt(self) -> str:
        return self.buf[self.pos:self.pos + 500]

    def span(self) -> int | None:
        """Where the value at ``pos`` ends in buf (brackets matched, so a deep value is not parsed), or None
        when it is longer than MAX_JSON_RECORD_CHARS; ValueError when the file ends inside it or a scalar is
        not JSON."""
        limit = MAX_JSON_RECORD_CHARS
        if self.buf[self.pos:self.pos + 1] in ("[", "{"):
            finder = ValueEnd()
            while (end := finder.find(self.buf, self.pos)) is None:
                if len(self.buf) - self.pos > limit:
                    return None
                if not self.more():
                    raise ValueError("the JSON value is not closed (truncated?)")
            return end if end - self.pos <= limit else None
        while True:
            try:
                end = _SCALAR.raw_decode(self.buf, self.pos)[1]
                if end < len(self.buf) or self.eof:  # a number cut by the window's end is not its end
                    return end if end - self.pos <= limit else None
            except json.JSONDecodeError as exc:
                if self.eof:
                    raise ValueError(f"{exc.msg} at character {self.at()}") from None
            if len(self.buf) - self.pos > limit:
                return None
            self.more()

    def skip(self) -> None:
        """Past the value at ``pos``, streamed by and kept nowhere; ValueError when the file ends inside it."""
        if self.buf[self.pos:self.pos + 1] not in ("[", "{", '"'):
            end = self.span()
            if end is None:
                raise ValueError(f"a value {_oversize()} that is not JSON at character {self.at()}")
            self.pos = end
            return
        rest = skip_value(self.buf[self.pos:], self, self.chunk)  # type: ignore[arg-type]  # reads via self.read
        if rest is None:
            self.buf, self.pos, self.eof = "", 0, True
            raise ValueError(f"a value {_oversize()}, and the file ends inside it (truncated?)")
        self.buf, self.pos, self.eof = rest[0], 0, self.eof or rest[1]

    def skip_line(self) -> None:
        """Past the next newline (or to the end of the file)."""
        while (newline := self.buf.find("\n", self.pos)) < 0:
            self.pos = len(self.buf)
            if not self.more():
                return
        self.pos = newline + 1


def _stream_units(fh: IO[str], label: str) -> Iterator[tuple[str, Unit]]:
    """The units of a JSON file read as a stream: an array's elements (``record N``), JSON lines
    (``line N``), or one pretty-printed value (``file``). Each value of up to MAX_JSON_RECORD_CHARS is
    scanned as `_response_units` scans a small file; a larger response is walked member by member
    (`_StreamScan`), a larger value of another kind is one rejection and skipped."""
    feed = _Feed(fh)
    feed.more()
    if feed.buf.startswith("\ufeff"):
        feed.pos = 1
    first = feed.ws()
    if first == "[":
        yield from _stream_array(feed, label)
    elif first and _first_line_is_a_value(feed):
        yield from _stream_lines(feed, label)
    elif first:
        ok = yield from _stream_value(feed, label, "file")
        if ok and feed.ws():
            yield "file end", Rejection.of(label, f"character {feed.at()}", "not JSON: extra data after the value "
                                           "(the rest of the file is unreadable)", feed.excerpt())


def _first_line_is_a_value(feed: _Feed) -> bool:
    """JSON lines or one pretty-printed value, as `_text_values` tells them: is the first line a whole value?
    A first line longer than the window is taken as a (long) JSON line."""
    newline = feed.buf.find("\n", feed.pos)
    if newline < 0:
        return True
    line = feed.buf[feed.pos:newline]
    try:
        return _ws(line, _value_end(line, 0)) == len(line)
    except ValueError:
        return False


def _stream_array(feed: _Feed, label: str) -> Iterator[tuple[str, Unit]]:
    """Each element of a top-level array, as the shared plumbing delimits them (``record N``); a response
    element is read item by item. The array left open, and data after it, are one rejection each."""
    feed.pos += 1
    index = 0
    while True:
        char = feed.ws()
        if not char:
            yield f"record {index + 1}", Rejection.of(label, f"record {index + 1}",
                                                      "the JSON array is not closed (truncated file?)", "")
            return
        if char == "]":
            feed.pos += 1
            if feed.ws():
                yield "after the array", Rejection.of(label, "after the array", "data after the end of the JSON "
                                                      "array (appended or garbage); ignored", feed.excerpt())
            return
        if index and char == ",":
            feed.pos += 1
            continue
        index += 1
        if not (yield from _stream_value(feed, label, f"record {index}")):
            return  # the brackets could not get past it: the rest of the file is unreadable


def _stream_lines(feed: _Feed, label: str) -> Iterator[tuple[str, Unit]]:
    """JSON lines, each read as `_text_values` reads a line; a line over MAX_JSON_RECORD_CHARS that holds
    a response is read item by item, and a broken one loses only itself."""
    number = feed.line_number() - 1
    while feed.pos < len(feed.buf) or feed.more():
        number += 1
        newline = feed.buf.find("\n", feed.pos)
        while newline < 0 and len(feed.buf) - feed.pos <= MAX_JSON_RECORD_CHARS and feed.more():
            newline = feed.buf.find("\n", feed.pos)
        end = newline if newline >= 0 else len(feed.buf)
        if end - feed.pos <= MAX_JSON_RECORD_CHARS and (newline >= 0 or feed.eof):
            yield from _line_units(feed.buf[feed.pos:end], label, f"line {number}")
            feed.pos = end + 1
            continue
        loc = f"line {number}"
        feed.ws()
        ok = yield from _stream_value(feed, label, loc)
        if ok:
            feed.pos = _LINE_SPACE.match(feed.buf, feed.pos).end()
            while feed.pos >= len(feed.buf) and feed.more():
                feed.pos = _LINE_SPACE.match(feed.buf, feed.pos).end()
            if feed.buf[feed.pos:feed.pos + 1] not in ("\n", ""):
                yield loc, Rejection.of(label, loc, "not JSON: extra data after the value", feed.excerpt())
        feed.skip_line()
        number = feed.line_number() - 1


def _stream_value(feed: _Feed, label: str, loc: str) -> Iterator[tuple[str, Unit]]:
    """The units of the value at ``feed.pos`` (past it afterwards); returns False when reading cannot go on
    past it (the file ends inside it, a syntax error in a streamed response), after its rejection."""
    head = feed.excerpt()
    try:
        end = feed.span()
    except ValueError as exc:
        yield loc, Rejection.of(label, loc, f"not JSON: {exc}", head)
        return False
    if end is not None:
        text, feed.pos = feed.buf[feed.pos:end], end
        yield from _response_units(text, 0, label, loc)
        return True
    if head.startswith("{"):
        scan = _StreamScan(feed, label, loc)
        try:
            yield from scan.units()
        except ValueError as exc:
            where = f"{loc} after {scan.last}" if scan.response else loc
            rest = " (the rest of the response is unreadable)" if scan.response else ""
            yield where, Rejection.of(label, where, f"not JSON: {exc}{rest}", feed.excerpt() or head)
            return False
        if not scan.response:
            yield loc, Rejection.of(label, loc, f"value {_oversize()} with no list of records or views; skipped", head)
        elif not scan.yielded:
            yield loc, EMPTY
        return True
    try:
        feed.skip()
    except ValueError as exc:
        yield loc, Rejection.of(label, loc, str(exc), head)
        return False
    yield loc, Rejection.of(label, loc, f"value {_oversize()}; skipped", head)
    return True


@dataclass
class _StreamScan:
    """`_ObjectScan` over a stream, for a response too large to hold: member by member, the subject and
    each list item decoded alone (an item over MAX_JSON_RECORD_CHARS is skipped: its rejection), every
    other member streamed past."""

    feed: _Feed
    label: str
    loc: str
    response: bool = False
    yielded: int = 0
    last: str = "its start"
    subject: Unit | None = None  # the decoded subject (or its Rejection), until a list shows a response

    def units(self) -> Iterator[tuple[str, Unit]]:
        feed = self.feed
        feed.pos += 1
        if feed.ws() == "}":
            feed.pos += 1
            return
        while True:
            key = self._member_name()
            char = feed.buf[feed.pos:feed.pos + 1]
            if key in LIST_KEYS and char == "[":
                if not self.response:
                    self.response = True
                    yield from self._subject()
                yield from self._items(key)
            elif key == "subject" and char == "{":
                self.subject = self._take(f"{self.loc} subject")
                if self.response:
                    yield from self._subject()
            else:
                feed.skip()
            separator = feed.ws()
            if separator == "}":
                feed.pos += 1
                return
            if separator != ",":
                raise ValueError(f"expected ',' or '}}' at character {feed.at()}")
            feed.pos += 1
            feed.ws()

    def _member_name(self) -> str:
        """The member name at the feed's position; the feed moved to its value."""
        feed = self.feed
        if feed.buf[feed.pos:feed.pos + 1] != '"':
            raise ValueError(f"expected a member name at character {feed.at()}")
        end = feed.span()
        if end is None:
            raise ValueError(f"a member name {_oversize()}")
        key = json.loads(feed.buf[feed.pos:end])
        feed.pos = end
        if feed.ws() != ":":
            raise ValueError(f"expected ':' at character {feed.at()}")
        feed.pos += 1
        if not feed.ws():
            raise ValueError("the JSON value is not closed (truncated?)")
        return key

    def _take(self, loc: str) -> Unit:
        """The value at the feed's position decoded (or its Rejection), the feed moved past it."""
        feed = self.feed
        head = feed.excerpt()
        end = feed.span()
        if end is None:
            feed.skip()
            return Rejection.of(self.label, loc, f"item {_oversize()}; skipped", head)
        value = _decode(feed.buf, feed.pos, end, self.label, loc)
        feed.pos = end
        return value

    def _subject(self) -> Iterator[tuple[str, Unit]]:
        value, self.subject = self.subject, None
        if isinstance(value, Rejection) or (isinstance(value, dict) and "did" in value):
            self.yielded += 1
            yield f"{self.loc} subject", value

    def _items(self, key: str) -> Iterator[tuple[str, Unit]]:
        feed = self.feed
        feed.pos += 1
        index = 0
        while (char := feed.ws()) != "]":
            if not char:
                raise ValueError("the JSON value is not closed (truncated?)")
            if index:
                if char != ",":
                    raise ValueError(f"expected ',' or ']' at character {feed.at()}")
                feed.pos += 1
                feed.ws()
            loc = f"{self.loc} {key}[{index}]"
            value = self._take(loc)
            self.yielded += 1
            self.last = f"{key}[{index}]"
            yield loc, value
            index += 1
        feed.pos += 1


def _blob_index(files: ExportFiles) -> dict[str, str]:
    """CID -> avatar reference, for blob files that sit beside the records (named by CID, any extension)."""
    found: dict[str, str] = {}
    for name in files.names():
        stem = name.rsplit("/", 1)[-1].split(".", 1)[0]
        if _CID.match(stem):
            found.setdefault(stem, files.ref(name))
    return found
