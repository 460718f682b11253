"""Bluesky (AT Protocol): JSON API responses and CAR repository exports, keyed by DID.

JSON (`BlueskyReader`), in a JSON array, JSON lines or one response per file, a file, folder or zip:
- repo records ``{"uri": "at://<did>/<collection>/<rkey>", "cid", "value": {record}}``, alone
  (``getRecord``) or in a ``listRecords`` page (``{"records": [...]}``); ``app.bsky.actor.profile``
  records are accounts, ``app.bsky.feed.post`` and ``app.bsky.feed.repost`` records are posts;
- profile views (``getProfile``; wrapped in ``profiles[]``, ``actors[]``, ``followers[]``,
  ``follows[]`` and ``subject`` by getProfiles, searchActors, getSuggestions, getFollowers,
  getFollows): accounts with handle, counts and the avatar URL;
- ``describeRepo`` responses name a repository, not a profile: quarantined as such.
An author whose posts are in the export but whose profile is not becomes an account with its DID only.

CAR (`BlueskyCarReader`): ``com.atproto.sync.getRepo`` output, what a user downloads from the
account settings. The file is read block by block (varint-framed, each block decoded with
``libipld``'s DAG-CBOR): a first pass keeps only the commit and the Merkle search tree (record
key → CID), a second streams the current profile, post and repost records out. Likes, follows
and records of old commits are not read.

Profile-record avatars are blob refs ``{"$type": "blob", "ref": {"$link": CID}}`` (or the legacy
``{"cid": CID}``): a file named by the CID beside the records is used, else the public CDN URL
``https://cdn.bsky.app/img/avatar/plain/<did>/<cid>@jpeg``. A profile without a picture has no
avatar field (Bluesky has no placeholder URL). Post ids are the posts' ``at://`` URIs, so a
repost's subject URI matches the reposted post.
"""

from __future__ import annotations

import io
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Iterator

from pipeline.ingest.readers.base import (
    AccountRecord,
    ExportDate,
    ExportReader,
    FieldError,
    PostRecord,
    Rejection,
    clean_text,
    parse_count,
    parse_timestamp,
    real_avatar,
)
from pipeline.ingest.readers.files import ExportFiles
from pipeline.ingest.readers.jsonfiles import detect_by_markers, iter_json_export, lone_value, rejection

PLATFORM = "bluesky"
PROFILE_TYPE = "app.bsky.actor.profile"
POST_TYPE = "app.bsky.feed.post"
REPOST_TYPE = "app.bsky.feed.repost"
CDN_AVATAR = "https://cdn.bsky.app/img/avatar/plain/{did}/{cid}@jpeg"
VIEW_LISTS = ("profiles", "actors", "followers", "follows")
_DID = re.compile(r"^did:(plc:[a-z2-7]{24}|web:[a-zA-Z0-9.:%-]+)$")
_CID = re.compile(r"^[a-zA-Z0-9]{20,100}$")
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


def _uri(value: Any) -> str | None:
    uri = value.get("uri") if isinstance(value, dict) else None
    return clean_text(uri, "uri") if isinstance(uri, str) and uri.startswith("at://") else None


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
        raise FieldError(f"avatar is a JSON {type(blob).__name__}, not a blob")
    ref = blob.get("ref")
    cid = ref.get("$link") if isinstance(ref, dict) else (ref if isinstance(ref, (str, bytes)) else blob.get("cid"))
    if isinstance(cid, bytes):  # a CAR's binary CID link
        import libipld

        cid = libipld.encode_cid(cid)
    if not isinstance(cid, str) or not _CID.match(cid):
        raise FieldError(f"avatar blob has no valid CID ({str(cid)[:80]!r})")
    return blobs.get(cid) or CDN_AVATAR.format(did=did, cid=cid)


class BlueskyReader(ExportReader):
    name = "bluesky"
    hint = "Bluesky API JSON: listRecords/getRecord records, getProfile(s)/getFollowers/getFollows/searchActors views"
    reads = ("accounts", "avatars", "posts", "reposts")
    sample = "bluesky/bskyr-actor-views, bluesky/bskyr-repo-records"

    def detect(self, path: Path) -> bool:
        return (detect_by_markers(path, PROFILE_TYPE) or detect_by_markers(path, '"did:plc:', '"handle"')
                or detect_by_markers(path, '"at://did:', '"$type":"app.bsky.')
                or detect_by_markers(path, '"at://did:', '"$type": "app.bsky.'))

    def read(self, path: Path) -> Iterator[AccountRecord | PostRecord | Rejection]:
        with ExportFiles(path) as files:
            blobs = _blob_index(files)
            accounts: set[str] = set()
            authors: dict[str, tuple[str, str]] = {}  # DIDs with posts -> where first seen
            for name, locator, value in iter_json_export(files):
                if isinstance(value, Rejection):
                    yield value
                    continue
                for loc, item in _unwrap(locator, lone_value(value)):
                    try:
                        record = self._item(name, loc, item, blobs)
                    except FieldError as exc:
                        yield rejection(name, loc, str(exc), item)
                        continue
                    if isinstance(record, AccountRecord):
                        accounts.add(record.account_id)
                    else:
                        authors.setdefault(record.account_id, (name, loc))
                    yield record
            for did, (name, loc) in sorted(authors.items()):
                if did not in accounts:  # posts of a repo listing without its profile: the author exists
                    yield AccountRecord(PLATFORM, did, name, f"{loc} (author of posts)")

    @staticmethod
    def _item(source: str, locator: str, item: Any, blobs: dict[str, str]) -> AccountRecord | PostRecord:
        if not isinstance(item, dict):
            raise FieldError(f"expected a record or profile view object, got a JSON {type(item).__name__}")
        if "didDoc" in item or "collections" in item:
            raise FieldError("a describeRepo response names a repository and carries no profile: not an account")
        uri = item.get("uri")
        record = item.get("value", item.get("record"))
        if isinstance(record, dict):  # a repo record
            did = check_did(item.get("did") or did_of(uri))
            kind = record.get("$type")
            if kind in (POST_TYPE, REPOST_TYPE):
                if not isinstance(uri, str) or not uri.startswith("at://"):
                    raise FieldError(f"{kind} record has no at:// uri")
                return post_record(source, locator, did, clean_text(uri, "uri") or "", record)
            if kind not in (None, PROFILE_TYPE):
                raise FieldError(f"record type {str(kind)[:80]!r} is not read (profiles, posts and reposts are)")
            return profile_account(source, locator, did, record, blob_avatar(did, record.get("avatar"), blobs),
                                   item.get("handle"))
        if item.get("$type") == PROFILE_TYPE:  # a bare profile record has no DID
            raise FieldError("record has no DID (neither 'did' nor an at:// 'uri')")
        did = check_did(item.get("did") or did_of(uri))
        if "handle" not in item:
            raise FieldError("an object with a DID but no handle and no record: not a profile view")
        return _view_account(source, locator, did, item, blobs)


def _view_account(source: str, locator: str, did: str, view: dict, blobs: dict[str, str]) -> AccountRecord:
    """A profile view (``app.bsky.actor.defs#profileView*``): the avatar is a URL string, counts are given."""
    avatar = view.get("avatar")
    ref = clean_text(avatar, "avatar") if isinstance(avatar, str) else blob_avatar(did, avatar, blobs)
    record = profile_account(source, locator, did, view, real_avatar(PLATFORM, ref), view.get("handle"))
    return AccountRecord(**{**record.__dict__,
                            "followers": parse_count(view.get("followersCount"), "followersCount"),
                            "following": parse_count(view.get("followsCount"), "followsCount"),
                            "posts": parse_count(view.get("postsCount"), "postsCount")})


def _unwrap(locator: str, value: Any) -> list[tuple[str, Any]]:
    """The records or views inside an API response (listRecords, getProfiles, getFollowers, ...)."""
    if not isinstance(value, dict):
        return [(locator, value)]
    out: list[tuple[str, Any]] = []
    if isinstance(value.get("subject"), dict) and "did" in value["subject"]:  # getFollowers/getFollows: whose list
        out.append((f"{locator} subject", value["subject"]))
    for key in ("records", *VIEW_LISTS):
        if isinstance(value.get(key), list):
            out.extend((f"{locator} {key}[{i}]", v) for i, v in enumerate(value[key]))
    return out or [(locator, value)]


def _blob_index(files: ExportFiles) -> dict[str, str]:
    """CID -> avatar reference, for blob files that sit beside the records (named by CID, any extension)."""
    found: dict[str, str] = {}
    for name in files.names():
        stem = name.rsplit("/", 1)[-1].split(".", 1)[0]
        if _CID.match(stem):
            found.setdefault(stem, files.ref(name))
    return found


# --- CAR repository exports ------------------------------------------------------------------------


def _varint(fh: IO[bytes]) -> int | None:
    """An unsigned LEB128 varint, or None at a clean end of file."""
    shift = value = 0
    while True:
        byte = fh.read(1)
        if not byte:
            if shift:
                raise FieldError("the CAR file ends inside a length prefix (truncated?)")
            return None
        value |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return value
        shift += 7
        if shift > 63:
            raise FieldError("a CAR length prefix is longer than 9 bytes: not a CAR file")


def _cid_length(block: bytes) -> int:
    """Length of the CID at the start of a CAR block: CIDv0 is 34 bytes, CIDv1 is varints + multihash."""
    if block[:2] == b"\x12\x20":
        return 34
    buf = io.BytesIO(block)
    for _ in range(3):  # version, codec, hash code
        if _varint(buf) is None:
            raise FieldError("a CAR block has a truncated CID")
    size = _varint(buf)
    if size is None:
        raise FieldError("a CAR block has a truncated CID")
    return buf.tell() + size


def car_blocks(fh: IO[bytes]) -> Iterator[tuple[bytes, bytes] | dict]:
    """The header (a dict) first, then (CID bytes, block bytes) per block, read one at a time."""
    import libipld

    size = _varint(fh)
    if size is None or size > MAX_BLOCK_BYTES:
        raise FieldError("not a CAR file (no header)")
    try:
        header = libipld.decode_dag_cbor(fh.read(size))
    except ValueError as exc:
        raise FieldError(f"not a CAR file: the header is not DAG-CBOR ({exc})") from None
    if not isinstance(header, dict) or header.get("version") != 1 or not header.get("roots"):
        raise FieldError("not a CAR v1 file with a root (header version/roots missing)")
    yield header
    while (size := _varint(fh)) is not None:
        if size > MAX_BLOCK_BYTES:
            raise FieldError(f"a CAR block claims {size} bytes, over the {MAX_BLOCK_BYTES}-byte limit")
        block = fh.read(size)
        if len(block) < size:
            raise FieldError("the CAR file ends inside a block (truncated?)")
        cid_len = _cid_length(block)
        yield block[:cid_len], block[cid_len:]


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

    def read(self, path: Path) -> Iterator[AccountRecord | PostRecord | Rejection | ExportDate]:
        with ExportFiles(path) as files:
            names = files.with_suffix(".car")
            if not names:
                raise FieldError(f"no .car repository export in {path}")
            yield from files.unsafe()
            for name in names:
                try:
                    yield from self._repo(files, name)
                except (FieldError, ValueError) as exc:  # one broken CAR does not lose the others
                    yield Rejection.of(files.label(name), "file", f"unreadable CAR: {exc}", "")

    def _repo(self, files: ExportFiles, name: str) -> Iterator[AccountRecord | PostRecord | Rejection | ExportDate]:
        label = files.label(name)
        commit, keys = _commit_and_keys(files, name)
        did = check_did(commit["did"])
        stamp = tid_time(commit.get("rev"))
        if stamp is not None:
            yield ExportDate(stamp, f"{label} commit rev {commit['rev']}")
        profile: tuple[str, dict] = ("commit", {})
        for key, value in _current_records(files, name, keys):
            locator = f"record {key}"
            if isinstance(value, str):
                yield Rejection.of(label, locator, value, "")
            elif not isinstance(value, dict):
                yield rejection(label, locator, "record is not an object", value)
            elif key.startswith(PROFILE_TYPE + "/"):
                profile = (locator, value)
            else:
                try:
                    yield post_record(label, locator, did, f"at://{did}/{key}", {"$type": key.split("/", 1)[0], **value})
                except FieldError as exc:
                    yield rejection(label, locator, str(exc), _printable(value))
        locator, value = profile
        try:
            yield profile_account(label, locator, did, value, blob_avatar(did, value.get("avatar"), {}))
        except FieldError as exc:
            yield rejection(label, locator, str(exc), _printable(value))
            yield AccountRecord(PLATFORM, did, label, "commit")


def _commit_and_keys(files: ExportFiles, name: str) -> tuple[dict, dict[bytes, str]]:
    """Pass 1: the root commit and record CID -> key of its tree. Only commit and tree-node blocks are
    kept, as raw bytes (decoded once, during the walk), so memory is a few dozen bytes per record."""
    import libipld

    nodes: dict[bytes, bytes] = {}
    roots: list[bytes] = []
    with files.open(name) as fh:
        for item in car_blocks(fh):
            if isinstance(item, dict):
                roots = list(item["roots"])
            elif item[0][1:2] == b"\x71" and _structural(item[1]):  # records are not decoded in this pass
                nodes[item[0]] = item[1]
    try:
        commit = libipld.decode_dag_cbor(nodes[roots[0]]) if roots and roots[0] in nodes else None
    except ValueError:
        commit = None
    if not isinstance(commit, dict) or "did" not in commit or "data" not in commit:
        raise FieldError("the CAR root is not a repository commit (did, data)")
    read = (PROFILE_TYPE, POST_TYPE, REPOST_TYPE)  # likes and follows, most of a real repo, are not kept
    return commit, {cid: key for cid, key in _walk_tree(nodes, commit["data"]) if key.split("/", 1)[0] in read}


def _structural(data: bytes) -> bool:
    """Could the block be a tree node or a commit? DAG-CBOR sorts map keys by length, then bytes, so a
    node ``{e, l}`` starts with map(2) "e" and a commit with map(4..6) "did"; records start otherwise.
    A cheap test on the first bytes that spares decoding every record twice."""
    return data[:3] == b"\xa2ae" or (data[:1] in (b"\xa4", b"\xa5", b"\xa6") and data[1:5] == b"cdid")


def _current_records(files: ExportFiles, name: str, keys: dict[bytes, str]) -> Iterator[tuple[str, Any]]:
    """Pass 2: (key, decoded record or the reason it is unreadable) for the profile, posts and reposts."""
    import libipld

    read = (PROFILE_TYPE, POST_TYPE, REPOST_TYPE)
    with files.open(name) as fh:
        for item in car_blocks(fh):
            key = None if isinstance(item, dict) else keys.pop(item[0], None)
            if key is None or key.split("/", 1)[0] not in read:
                continue
            try:
                yield key, libipld.decode_dag_cbor(item[1])
            except ValueError as exc:
                yield key, f"record is not DAG-CBOR: {exc}"


def _walk_tree(nodes: dict[bytes, bytes], root: bytes) -> Iterator[tuple[bytes, str]]:
    """(record CID, key) for every entry of the repository's Merkle search tree, in key order."""
    import libipld

    stack: list[tuple[str, Any]] = [("node", root)]
    seen: set[bytes] = set()
    while stack:
        kind, value = stack.pop()
        if kind == "entry":
            yield value
            continue
        if value is None or value in seen:
            continue
        seen.add(value)
        try:
            node = libipld.decode_dag_cbor(nodes[value]) if value in nodes else None
        except ValueError:
            node = None  # an undecodable node: its subtree's records are not reached
        if not isinstance(node, dict) or not isinstance(node.get("e"), list):
            continue  # a subtree the export does not include (a partial CAR)
        pending: list[tuple[str, Any]] = [("node", node.get("l"))]
        key = b""
        for entry in node["e"]:
            if not isinstance(entry, dict) or not isinstance(entry.get("k"), bytes):
                continue
            key = key[: int(entry.get("p") or 0)] + entry["k"]
            if isinstance(entry.get("v"), bytes):
                pending.append(("entry", (entry["v"], key.decode("utf-8", "replace"))))
            pending.append(("node", entry.get("t")))
        stack.extend(reversed(pending))


def _printable(value: dict) -> dict:
    return {k: (v.hex() if isinstance(v, bytes) else v) for k, v in value.items()}
