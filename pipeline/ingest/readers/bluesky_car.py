"""Bluesky CAR repository exports (`BlueskyCarReader`), with the account and post model of
`pipeline.ingest.readers.bluesky`.

``com.atproto.sync.getRepo`` output, what a user downloads from the
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
"""

from __future__ import annotations

import io
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
    guarded,
    guarded_file,
)
from pipeline.ingest.readers.files import ExportFiles
from pipeline.ingest.readers.bluesky import (
    NSID,
    PLATFORM,
    PROFILE_TYPE,
    READ_COLLECTIONS,
    blob_avatar,
    check_did,
    post_record,
    profile_account,
    type_name,
)

_RKEY = re.compile(r"^[A-Za-z0-9._:~-]{1,512}$")
MAX_BLOCK_BYTES = 2 * 1024 * 1024  # a repo block (record or tree node) is at most a few KB; 2 MB is hostile


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
        raise FieldError(f"the CAR header is {type_name(header)}, not a map")
    if header.get("version") != 1:
        raise FieldError(f"the CAR header's version is {str(header.get('version'))[:20]!r}, not 1")
    roots = header.get("roots")
    if not isinstance(roots, list) or not roots:
        raise FieldError(f"the CAR header's roots is {'an empty list' if roots == [] else type_name(roots)}, "
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
        raise FieldError(f"record is {type_name(value)}, not a map")
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
        raise FieldError(f"the commit's data (the tree root) is {type_name(commit['data'])}, not a CID")
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
        yield TreeFault(where, f"tree link is {type_name(link)}, not a CID: the records under it are not read")
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
        yield TreeFault(locator, f"tree node's entries 'e' are {type_name(entries)}, not a list: "
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
        return None, TreeFault(locator, f"tree entry is {type_name(entry)}, not a map")
    k, p, v = entry.get("k"), entry.get("p"), entry.get("v")
    if not isinstance(k, bytes):
        return None, TreeFault(locator, f"tree entry's key 'k' is {type_name(k)}, not bytes")
    if isinstance(p, bool) or not isinstance(p, int) or p < 0:
        return None, TreeFault(locator, f"tree entry's prefix length 'p' is {str(p)[:40]!r}, not a whole number")
    if p and previous is None:
        return None, TreeFault(locator, "tree entry's key continues a key that could not be read")
    if previous is not None and p > len(previous):
        return None, TreeFault(locator, f"tree entry's prefix length 'p' {p} is longer than the previous key")
    key = (previous or b"")[:p] + k
    text = key.decode("utf-8", "replace")
    collection, _, rkey = text.partition("/")
    if not NSID.match(collection) or not _RKEY.match(rkey):
        return key, TreeFault(f"record {text[:200]}", "tree key is not <collection>/<record key>")
    if not is_cid(v):
        return key, TreeFault(f"record {text}", f"tree entry's record link 'v' is {type_name(v)}, not a CID")
    return key, TreeEntry(text, v)


def _printable(value: Any) -> Any:
    return {k: (v.hex() if isinstance(v, bytes) else v) for k, v in value.items()} if isinstance(value, dict) else value
