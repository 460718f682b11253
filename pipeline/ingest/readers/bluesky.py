"""Bluesky (AT Protocol) ``app.bsky.actor.profile`` records, keyed by DID.

Accepted shapes, in a JSON array, JSON lines, or a ``com.atproto.repo.listRecords`` response
(``{"records": [...]}``), one file or a folder of them:
- ``{"uri": "at://did:plc:.../app.bsky.actor.profile/self", "cid": ..., "value": {profile}}``
- ``{"did": "did:plc:...", "handle": ..., "value" | "record": {profile}}``

The avatar is a blob ref ``{"$type": "blob", "ref": {"$link": CID}, "mimeType", "size"}`` (or
the legacy ``{"cid": CID}``). A file named by the CID anywhere in the export folder (any
extension) is used; otherwise the blob is fetched from the public CDN URL
``https://cdn.bsky.app/img/avatar/plain/<did>/<cid>@jpeg``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

from pipeline.ingest.readers.base import AccountRecord, ExportReader, FieldError, Rejection, clean_text, parse_timestamp
from pipeline.ingest.readers.jsonfiles import detect_by_markers, export_root, iter_json_export, rejection
from pipeline.ingest.readers.textio import NotAnArray

PLATFORM = "bluesky"
PROFILE_TYPE = "app.bsky.actor.profile"
CDN_AVATAR = "https://cdn.bsky.app/img/avatar/plain/{did}/{cid}@jpeg"
_DID = re.compile(r"^did:(plc:[a-z2-7]{24}|web:[a-zA-Z0-9.:%-]+)$")
_CID = re.compile(r"^[a-zA-Z0-9]{20,100}$")


class BlueskyReader(ExportReader):
    name = "bluesky"

    def detect(self, path: Path) -> bool:
        return detect_by_markers(path, PROFILE_TYPE) or detect_by_markers(path, '"did:plc:', '"displayName"')

    def read(self, path: Path) -> Iterator[AccountRecord | Rejection]:
        blobs = self._blob_index(export_root(path), shallow=not path.is_dir())
        for name, locator, value in iter_json_export(path):
            if isinstance(value, Rejection):
                yield value
                continue
            lone = value.value if isinstance(value, NotAnArray) else value
            if isinstance(lone, dict) and isinstance(lone.get("records"), list):  # a listRecords page
                items = [(f"{locator} record {i}", v) for i, v in enumerate(lone["records"], start=1)]
            else:
                items = [(locator, lone)]
            for loc, item in items:
                try:
                    yield self._record(name, loc, item, blobs)
                except FieldError as exc:
                    yield rejection(name, loc, str(exc), item)

    @staticmethod
    def _blob_index(root: Path, shallow: bool = False) -> dict[str, str]:
        """CID -> path relative to the export root, for blob files that sit beside the records."""
        found: dict[str, str] = {}
        resolved = root.resolve()
        for path in sorted(root.glob("*") if shallow else root.rglob("*")):
            stem = path.name.split(".", 1)[0]
            if _CID.match(stem) and path.is_file() and path.resolve().is_relative_to(resolved):
                found.setdefault(stem, path.relative_to(root).as_posix())
        return found

    @staticmethod
    def _record(source: str, locator: str, item: Any, blobs: dict[str, str]) -> AccountRecord:
        if not isinstance(item, dict):
            raise FieldError(f"expected a profile record object, got a JSON {type(item).__name__}")
        did = item.get("did")
        uri = item.get("uri")
        if not did and isinstance(uri, str) and uri.startswith("at://"):
            did = uri[5:].split("/", 1)[0]
        if not did:
            raise FieldError("record has no DID (neither 'did' nor an at:// 'uri')")
        did = str(did).strip()
        if not _DID.match(did):
            raise FieldError(f"{did[:80]!r} is not a did:plc or did:web identifier")
        profile = item.get("value", item.get("record", item))
        if not isinstance(profile, dict):
            raise FieldError("the profile record is not an object")
        kind = profile.get("$type")
        if kind not in (None, PROFILE_TYPE):
            raise FieldError(f"record type {str(kind)[:80]!r} is not {PROFILE_TYPE}")
        return AccountRecord(
            platform=PLATFORM,
            account_id=did,
            source_file=source,
            source_locator=locator,
            handle=clean_text(item.get("handle"), "handle"),
            display_name=clean_text(profile.get("displayName"), "displayName"),
            bio=clean_text(profile.get("description"), "description"),
            created_at=parse_timestamp(profile.get("createdAt"), "createdAt"),
            avatar_ref=_avatar_ref(did, profile.get("avatar"), blobs),
        )


def _avatar_ref(did: str, blob: Any, blobs: dict[str, str]) -> str | None:
    if not isinstance(blob, dict):
        return None
    ref = blob.get("ref")
    cid = ref.get("$link") if isinstance(ref, dict) else (ref if isinstance(ref, str) else blob.get("cid"))
    if not isinstance(cid, str) or not _CID.match(cid):
        raise FieldError(f"avatar blob has no valid CID ({str(cid)[:80]!r})")
    return blobs.get(cid) or CDN_AVATAR.format(did=did, cid=cid)
