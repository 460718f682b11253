"""Export readers: each turns one platform's export into AccountRecords, PostRecords and Rejections.

A reader is a small plug-in: a ``name``, a ``detect(path)`` test for ``--format auto``, and
``read(path)`` yielding records. Register new readers in ``READERS``; detection tries them in
that order (the most specific first) and the first match wins.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import UserError
from pipeline.ingest.readers.base import AccountRecord, ExportReader, PostRecord, Rejection
from pipeline.ingest.readers.bluesky import BlueskyReader
from pipeline.ingest.readers.generic import GenericManifestReader
from pipeline.ingest.readers.mastodon import MastodonReader
from pipeline.ingest.readers.reddit import RedditReader
from pipeline.ingest.readers.twitter_archive import TwitterArchiveReader
from pipeline.ingest.readers.twitter_io import TwitterIOReader

READERS: dict[str, ExportReader] = {
    reader.name: reader
    for reader in (GenericManifestReader(), TwitterArchiveReader(), TwitterIOReader(), BlueskyReader(),
                   RedditReader(), MastodonReader())
}
FORMAT_HINTS = (
    "generic (folder with manifest.csv or manifest.jsonl)",
    "twitter_archive (personal archive zip or folder with data/account.js)",
    "twitter_io (IO users CSV, header userid,user_display_name,...)",
    "bluesky (app.bsky.actor.profile records)",
    "reddit (about.json, kind t2)",
    "mastodon (Account JSON array or JSON lines)",
)


def resolve_reader(path: Path, fmt: str = "auto") -> ExportReader:
    """Pick the reader by name, or by detection when fmt is 'auto'; clear error otherwise."""
    if not path.exists():
        raise UserError(f"export path {path} does not exist")
    if fmt != "auto":
        if fmt not in READERS:
            raise UserError(f"unknown export format {fmt!r}; known formats: auto, {', '.join(sorted(READERS))}")
        return READERS[fmt]
    for reader in READERS.values():
        if reader.detect(path):
            return reader
    raise UserError(
        f"could not detect the format of {path}; expected one of: {'; '.join(FORMAT_HINTS)}. "
        "Pass --format to choose one"
    )


__all__ = ["AccountRecord", "ExportReader", "PostRecord", "Rejection", "READERS", "resolve_reader"]
