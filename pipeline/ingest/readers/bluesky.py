"""Bluesky (AT Protocol): JSON API responses and CAR repository exports, keyed by DID.

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

CAR (`BlueskyCarReader`): ``com.atproto.sync.getRepo`` output, what a user downloads from the
account settings. The file is read block by block (varint-framed, each block decoded with
``libipld``'s DAG-CBOR): a first pass keeps only the commit and the Merkle search tree (record
key → CID), a second streams the current profile, post and repost records out. Records of old
commits (blocks the current tree does not name) are not units.

CAR units: each entry (leaf) of the repository's current tree, ``<collection>/<rkey>``:
``app.bsky.feed.post`` and ``app.bsky.feed.repost`` → a post, ``app.bsky.actor.profile`` → the
account; any other collection → ignored as ``record <collection>`` (likes, follows, blocks, lists,
threadgates, feed generators, ...). A tree entry that cannot be read (wrong types, a key that is not
``collection/rkey``) and a record whose block is missing or undecodable are rejected. Besides the
entries, a part of the tree that cannot be walked is one unit, rejected naming it: a node (or the
root) missing from the file, undecodable, not a node, linked by something that is not a CID, or
reached twice (the tree loops). Bytes after the last complete block (a truncated file, trailing
garbage) are one unit, rejected; every block before them is read. A file that is no CAR repository
(header, commit) is one unit, rejected. The repository's account, when no profile record of it was
read, is made from the commit's DID, ``inferred``.

Profile-record avatars are blob refs ``{"$type": "blob", "ref": {"$link": CID}}`` (or the legacy
``{"cid": CID}``): a file named by the CID beside the records is used, else the public CDN URL
``https://cdn.bsky.app/img/avatar/plain/<did>/<cid>@jpeg``. A profile without a picture has no
avatar field (Bluesky has no placeholder URL). Post ids are the posts' ``at://`` URIs, so a
repost's subject URI matches the reposted post.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Iterator

from pipeline.ingest import ledger
from pipeline.ingest.readers.base import (
    AccountRecord,
    ExportDate,
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
_NSID = re.compile(r"^[a-zA-Z][a-zA-Z0-9-]{0,62}(\.[a-zA-Z0-9-]{1,63}){2,}$")  # a collection name
_RKEY = re.compile(r"^[A-Za-z0-9._:~-]{1,512}$")
MAX_BLOCK_BYTES = 2 * 1024 * 1024  # a repo block (record or tree node) is at most a few KB; 2 MB is hostile


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


def _type_name(value: Any) -> str:
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
        raise FieldError(f"avatar is {_type_name(blob)}, not a blob")
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
        if isinstance(kind, str) and _NSID.match(kind):
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


# --- CAR repository exports ------------------------------------------------------------------------


class _Counting:
    """A binary stream that counts the bytes read from it, so that a framing error can say where it is."""

    def __init__(self, fh: IO[bytes]):
        self.fh = fh
        self.offset = 0

    def read(self, size: int) -> bytes:
        data = self.fh.read(size)
        self.offset += len(data)
        return data


def _varint(fh: Any) -> int | None:
    """An unsigned LEB128 varint, or None at a clean end of file."""
    byte = fh.read(1)
    if not byte:
        return None
    value, shift = byte[0] & 0x7F, 7
    while byte[0] & 0x80:
        if shift > 63:
            raise FieldError("a CAR length prefix is longer than 9 bytes: not a CAR file")
        byte = fh.read(1)
        if not byte:
            raise FieldError("the CAR file ends inside a length prefix (truncated?)")
        value |= (byte[0] & 0x7F) << shift
        shift += 7
    return value


def _cid_length(block: bytes) -> int:
    """Length of the CID at the start of a CAR block: CIDv0 is 34 bytes, CIDv1 is varints + multihash.
    FieldError when the bytes are no CID (a block of garbage) or the CID is longer than the block."""
    if block[:2] == b"\x12\x20":
        size = 34
    elif len(block) >= 4 and block[0] == 1 and block[1] < 0x80 and block[2] < 0x80 and block[3] < 0x80:
        size = 4 + block[3]  # version 1, one-byte codec, hash code and digest size: nearly every CID
    else:
        if block[:1] != b"\x01":
            raise FieldError("a CAR block does not start with a CID (version 1 or a CIDv0)")
        buf = io.BytesIO(block)
        for _ in range(3):  # version, codec, hash code
            if _varint(buf) is None:
                raise FieldError("a CAR block has a truncated CID")
        digest = _varint(buf)
        if digest is None:
            raise FieldError("a CAR block has a truncated CID")
        size = buf.tell() + digest
    if size > len(block):
        raise FieldError("a CAR block is shorter than its CID")
    return size


def is_cid(value: Any) -> bool:
    """A binary CID link as DAG-CBOR decodes it (libipld gives bytes for links and byte strings alike)."""
    if not isinstance(value, bytes) or len(value) < 4:
        return False
    try:
        return _cid_length(value) == len(value)
    except FieldError:
        return False


def cid_text(value: bytes) -> str:
    import libipld

    try:
        return libipld.encode_cid(value)
    except ValueError:
        return value[:40].hex()


@dataclass(frozen=True)
class CarTail:
    """Where a CAR's block framing broke: the bytes from ``offset`` on are no complete block."""

    offset: int
    blocks: int  # complete blocks before it
    size: int  # bytes from offset to the end of the file
    reason: str


def _check_header(header: Any) -> dict:
    if not isinstance(header, dict):
        raise FieldError(f"the CAR header is {_type_name(header)}, not a map")
    if header.get("version") != 1:
        raise FieldError(f"the CAR header's version is {str(header.get('version'))[:20]!r}, not 1")
    roots = header.get("roots")
    if not isinstance(roots, list) or not roots:
        raise FieldError(f"the CAR header's roots is {'an empty list' if roots == [] else _type_name(roots)}, "
                         "not a list of CIDs")
    if not all(is_cid(r) for r in roots):
        raise FieldError("the CAR header's roots hold something that is not a CID")
    return header


def car_blocks(fh: IO[bytes]) -> Iterator[tuple[bytes, bytes] | dict | CarTail]:
    """The header (a dict) first, then (CID bytes, block bytes) per block, read one at a time. A framing
    error after the header (a truncated last block, trailing garbage) ends the blocks with a CarTail."""
    import libipld

    counting = _Counting(fh)
    size = _varint(counting)
    if size is None or size > MAX_BLOCK_BYTES:
        raise FieldError("not a CAR file (no header)")
    try:
        header = libipld.decode_dag_cbor(counting.read(size))
    except (ValueError, RecursionError) as exc:
        raise FieldError(f"not a CAR file: the header is not DAG-CBOR ({str(exc)[:200]})") from None
    yield _check_header(header)
    blocks = 0
    while True:
        start = counting.offset
        try:
            block = _next_block(counting)
        except FieldError as exc:
            while counting.read(1 << 20):
                pass
            yield CarTail(start, blocks, counting.offset - start, str(exc))
            return
        if block is None:
            return
        blocks += 1
        yield block


def _next_block(fh: _Counting) -> tuple[bytes, bytes] | None:
    size = _varint(fh)
    if size is None:
        return None
    if size > MAX_BLOCK_BYTES:
        raise FieldError(f"a CAR block claims {size} bytes, over the {MAX_BLOCK_BYTES}-byte limit")
    block = fh.read(size)
    if len(block) < size:
        raise FieldError("the CAR file ends inside a block (truncated?)")
    cid_len = _cid_length(block)
    return block[:cid_len], block[cid_len:]


def tid_time(tid: Any) -> datetime | None:
    """A commit ``rev`` (a TID: 13 base32-sortable characters, microseconds since 1970) as a UTC time."""
    alphabet = "234567abcdefghijklmnopqrstuvwxyz"
    if not isinstance(tid, str) or len(tid) != 13 or any(c not in alphabet for c in tid):
        return None
    value = 0
    for c in tid:
        value = value * 32 + alphabet.index(c)
    try:
        return datetime.fromtimestamp((value >> 10) / 1e6, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None


@dataclass(frozen=True)
class TreeEntry:
    """A leaf of the repository's tree: a record key and the CID of its record."""

    key: str
    cid: bytes


@dataclass(frozen=True)
class TreeFault:
    """A unit of the tree that cannot be read: an entry, or a node or link and the records under it."""

    locator: str
    reason: str


class BlueskyCarReader(ExportReader):
    name = "bluesky_car"
    hint = "Bluesky repository export (.car from com.atproto.sync.getRepo / account settings)"
    reads = ("accounts", "avatars", "posts", "reposts")
    sample = "bluesky/indigo-testdata-car"

    def detect(self, path: Path) -> bool:
        try:
            with ExportFiles(path) as files:
                return bool(files.with_suffix(".car"))
        except (OSError, ValueError):
            return False

    def read(self, path: Path) -> Iterator[AccountRecord | PostRecord | Rejection | Ignored | ExportDate]:
        with ExportFiles(path) as files:
            names = files.with_suffix(".car")
            if not names:
                raise FieldError(f"no .car repository export in {path}")
            yield from files.unsafe()
            for name in names:  # one broken CAR does not lose the others
                label = files.label(name)
                ledger.saw(label, 0)
                yield from guarded_file(label, self._repo(files, name, label), "CAR repository")

    def _repo(self, files: ExportFiles, name: str,
              label: str) -> Iterator[AccountRecord | PostRecord | Rejection | Ignored | ExportDate]:
        try:
            commit, did, nodes, tail = _commit(files, name)
        except FieldError as exc:  # no unit of it was counted yet: the file is the one unit
            ledger.saw(label)
            yield Rejection.of(label, "file", f"unreadable CAR: {exc}", "")
            return
        stamp = tid_time(commit.get("rev"))
        if stamp is not None:
            yield ExportDate(stamp, f"{label} commit rev {commit['rev']}")
        wanted: dict[bytes, list[str]] = {}  # record CID -> keys of the profile, posts and reposts
        for unit in walk_tree(nodes, commit["data"]):
            ledger.saw(label)  # every entry of the current tree, and every part of it that cannot be walked
            if isinstance(unit, TreeFault):
                yield Rejection.of(label, unit.locator, unit.reason, "")
            elif unit.key.split("/", 1)[0] in READ_COLLECTIONS:
                wanted.setdefault(unit.cid, []).append(unit.key)
            else:
                yield Ignored(label, f"record {unit.key}", f"record {unit.key.split('/', 1)[0]}")
        del nodes
        account = False
        for record in self._records(files, name, label, did, wanted):
            account = account or isinstance(record, AccountRecord)
            yield record
        if not account:  # no profile record read: the account is known from the commit
            yield AccountRecord(PLATFORM, did, label, "commit", inferred=True)
        if tail is not None:
            ledger.saw(label)
            yield Rejection.of(label, f"byte {tail.offset}", (
                f"unreadable CAR tail: {tail.size} bytes after block {tail.blocks} are not a complete block "
                f"({tail.reason}); the blocks before them were read"), "")

    def _records(self, files: ExportFiles, name: str, label: str, did: str,
                 wanted: dict[bytes, list[str]]) -> Iterator[AccountRecord | PostRecord | Rejection]:
        """Pass 2: the wanted records, as they come in the file; a wanted record whose block is not in the
        file (a partial export) or cannot be reached is its rejection."""
        stopped = ""
        try:
            with files.open(name) as fh:
                for item in car_blocks(fh):
                    keys = wanted.pop(item[0], None) if isinstance(item, tuple) else None
                    for key in keys or ():
                        yield _car_record(label, did, key, item[1])
        except Exception as exc:  # noqa: BLE001 - the records not reached are each rejected, never lost in silence
            stopped = f" (reading stopped: {type(exc).__name__}: {str(exc)[:200]})"
        for cid, keys in wanted.items():
            for key in keys:
                yield Rejection.of(label, f"record {key}",
                                   f"record block {cid_text(cid)} is not in the CAR (a partial export?){stopped}", "")


def _car_record(label: str, did: str, key: str, data: bytes) -> AccountRecord | PostRecord | Rejection:
    locator = f"record {key}"
    value = guarded(label, locator, data[:240].hex(), lambda: _decode_record(data))
    if isinstance(value, Rejection):
        return value
    return guarded(label, locator, _printable(value), lambda: _make_record(label, locator, did, key, value))


def _decode_record(data: bytes) -> Any:
    import libipld

    try:
        return libipld.decode_dag_cbor(data)
    except RecursionError:
        raise FieldError("record nested too deep to decode (DAG-CBOR)") from None
    except (ValueError, TypeError, OverflowError) as exc:
        raise FieldError(f"record is not DAG-CBOR ({str(exc)[:200]})") from None


def _make_record(label: str, locator: str, did: str, key: str, value: Any) -> AccountRecord | PostRecord:
    collection = key.split("/", 1)[0]
    if not isinstance(value, dict):
        raise FieldError(f"record is {_type_name(value)}, not a map")
    kind = value.get("$type", collection)
    if kind != collection:
        raise FieldError(f"record $type {str(kind)[:80]!r} is not its collection {collection}")
    if collection == PROFILE_TYPE:
        return profile_account(label, locator, did, value, blob_avatar(did, value.get("avatar"), {}))
    return post_record(label, locator, did, f"at://{did}/{key}", {**value, "$type": collection})


def _commit(files: ExportFiles, name: str) -> tuple[dict, str, dict[bytes, bytes], CarTail | None]:
    """Pass 1: the root commit, its DID, the blocks that may be tree nodes (raw bytes, decoded once during
    the walk: memory is a few dozen bytes per record) and where the framing broke, if it did."""
    import libipld

    nodes: dict[bytes, bytes] = {}
    roots: list[bytes] = []
    tail: CarTail | None = None
    with files.open(name) as fh:
        for item in car_blocks(fh):
            if isinstance(item, dict):
                roots = item["roots"]
            elif isinstance(item, CarTail):
                tail = item
            elif (item[0][1:2] == b"\x71" and _structural(item[1])) or item[0] == roots[0]:
                nodes[item[0]] = item[1]  # records are not decoded in this pass
    if roots[0] not in nodes:
        raise FieldError(f"the root commit {cid_text(roots[0])} is not in the file")
    try:
        commit = libipld.decode_dag_cbor(nodes.pop(roots[0]))
    except (ValueError, RecursionError) as exc:
        raise FieldError(f"the root commit is not DAG-CBOR ({str(exc)[:200]})") from None
    if not isinstance(commit, dict) or "did" not in commit or "data" not in commit:
        raise FieldError("the CAR root is not a repository commit (did, data)")
    if not is_cid(commit["data"]):
        raise FieldError(f"the commit's data (the tree root) is {_type_name(commit['data'])}, not a CID")
    return commit, check_did(commit["did"]), nodes, tail


def _structural(data: bytes) -> bool:
    """Could the block be a tree node? DAG-CBOR sorts map keys by length, then bytes, so a node ``{e, l}``
    starts with map(2) "e"; records start otherwise. A cheap test on the first bytes that spares decoding
    every record twice."""
    return data[:3] == b"\xa2ae"


def walk_tree(nodes: dict[bytes, bytes], root: bytes) -> Iterator[TreeEntry | TreeFault]:
    """Every entry of the repository's Merkle search tree, in key order, and a TreeFault for each part that
    cannot be walked (a missing or undecodable node, a link that is no CID, a node reached twice, an entry
    of the wrong types). Iterative, each node visited once: a deep or looping tree neither recurses nor hangs."""
    stack: list[tuple[str, Any, str]] = [("node", root, "tree root")]
    visited: set[bytes] = set()
    while stack:
        kind, value, where = stack.pop()
        if kind != "node":
            yield value
        elif value is not None:
            yield from _visit(nodes, value, where, visited, stack)


def _visit(nodes: dict[bytes, bytes], link: Any, where: str, visited: set[bytes],
           stack: list[tuple[str, Any, str]]) -> Iterator[TreeFault]:
    """One node: its faults now, its entries and subtrees pushed on the stack (in key order)."""
    import libipld

    if not is_cid(link):
        yield TreeFault(where, f"tree link is {_type_name(link)}, not a CID: the records under it are not read")
        return
    locator = "tree root" if where == "tree root" else f"tree node {cid_text(link)}"
    if link in visited:
        yield TreeFault(locator, f"tree node reached twice, from {where}: the tree loops (or shares a subtree); "
                                 "walked once")
        return
    visited.add(link)
    if link not in nodes and where == "tree root":
        yield TreeFault(locator, f"the tree root {cid_text(link)} is not in the CAR: no record of the repository "
                                 "can be read (a partial or damaged export?)")
        return
    if link not in nodes:
        yield TreeFault(locator, f"tree node (from {where}) is not in the CAR or is not a tree node: the records "
                                 "under it are not read (a partial or damaged export?)")
        return
    try:
        node = libipld.decode_dag_cbor(nodes[link])
    except (ValueError, RecursionError) as exc:
        yield TreeFault(locator, f"tree node is not DAG-CBOR ({str(exc)[:200]}): the records under it are not read")
        return
    entries = node.get("e") if isinstance(node, dict) else None
    pending: list[tuple[str, Any, str]] = [("node", node.get("l") if isinstance(node, dict) else None,
                                            f"{locator} 'l'")]
    if not isinstance(entries, list):
        yield TreeFault(locator, f"tree node's entries 'e' are {_type_name(entries)}, not a list: "
                                 "the records in it are not read")
        entries = []
    key: bytes | None = b""
    for index, entry in enumerate(entries):
        key, unit = _entry(entry, key, f"{locator} entry {index}")
        pending.append(("unit", unit, ""))
        if isinstance(entry, dict):
            pending.append(("node", entry.get("t"), f"{locator} entry {index} 't'"))
    stack.extend(reversed(pending))


def _entry(entry: Any, previous: bytes | None, locator: str) -> tuple[bytes | None, TreeEntry | TreeFault]:
    """One tree entry (``k`` the key's bytes after the ``p`` bytes it shares with the previous key, ``v`` the
    record's CID) and the key it gives, None when it cannot be known (the next prefixed key cannot be either)."""
    if not isinstance(entry, dict):
        return None, TreeFault(locator, f"tree entry is {_type_name(entry)}, not a map")
    k, p, v = entry.get("k"), entry.get("p"), entry.get("v")
    if not isinstance(k, bytes):
        return None, TreeFault(locator, f"tree entry's key 'k' is {_type_name(k)}, not bytes")
    if isinstance(p, bool) or not isinstance(p, int) or p < 0:
        return None, TreeFault(locator, f"tree entry's prefix length 'p' is {str(p)[:40]!r}, not a whole number")
    if p and previous is None:
        return None, TreeFault(locator, "tree entry's key continues a key that could not be read")
    if previous is not None and p > len(previous):
        return None, TreeFault(locator, f"tree entry's prefix length 'p' {p} is longer than the previous key")
    key = (previous or b"")[:p] + k
    text = key.decode("utf-8", "replace")
    collection, _, rkey = text.partition("/")
    if not _NSID.match(collection) or not _RKEY.match(rkey):
        return key, TreeFault(f"record {text[:200]}", "tree key is not <collection>/<record key>")
    if not is_cid(v):
        return key, TreeFault(f"record {text}", f"tree entry's record link 'v' is {_type_name(v)}, not a CID")
    return key, TreeEntry(text, v)


def _printable(value: Any) -> Any:
    return {k: (v.hex() if isinstance(v, bytes) else v) for k, v in value.items()} if isinstance(value, dict) else value
