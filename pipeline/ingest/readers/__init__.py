"""Export readers: each turns one platform's export into AccountRecords, PostRecords and Rejections.

A reader is a small plug-in (`ExportReader`): a ``name``, a one-line ``hint``, what it ``reads``,
a ``detect(path)`` test for ``--format auto`` and ``read(path)`` yielding records. Readers are
registered by unique name in ``READERS`` (a `Registry`: a duplicate name is an error); detection
tries them in registration order (the most specific first) and the first match wins. The CLI's
``--format`` choices and help, the "could not detect" message and the docs' format table all come
from (or are checked against) this registry.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.core.registry import Registry
from pipeline.errors import UserError
from pipeline.ingest.readers.base import AccountRecord, ExportDate, ExportReader, PostRecord, Rejection
from pipeline.ingest.readers.bluesky import BlueskyCarReader, BlueskyReader
from pipeline.ingest.readers.generic import GenericManifestReader
from pipeline.ingest.readers.mastodon import MastodonArchiveReader, MastodonReader
from pipeline.ingest.readers.reddit import RedditReader
from pipeline.ingest.readers.twitter_archive import TwitterArchiveReader
from pipeline.ingest.readers.twitter_io import TwitterIOReader

READERS: Registry[ExportReader] = Registry("export format")
for _reader in (GenericManifestReader(), TwitterArchiveReader(), TwitterIOReader(), BlueskyCarReader(),
                BlueskyReader(), MastodonArchiveReader(), RedditReader(), MastodonReader()):
    READERS.register(_reader.name, _reader)


def format_hints() -> list[str]:
    """'name (hint)' per registered reader, for help texts and error messages."""
    return [f"{r.name} ({r.hint})" for r in READERS.values()]


def format_choices() -> list[str]:
    return ["auto", *READERS.names()]


def resolve_reader(path: Path, fmt: str = "auto") -> ExportReader:
    """Pick the reader by name, or by detection when fmt is 'auto'; clear error otherwise."""
    if not path.exists():
        raise UserError(f"export path {path} does not exist")
    if fmt != "auto":
        if fmt not in READERS:
            raise UserError(f"unknown export format {fmt!r}; known formats: {', '.join(format_choices())}")
        return READERS[fmt]
    for reader in READERS.values():
        if reader.detect(path):
            return reader
    raise UserError(
        f"could not detect the format of {path}; expected one of: {'; '.join(format_hints())}. "
        "Pass --format to choose one"
    )


__all__ = ["AccountRecord", "ExportDate", "ExportReader", "PostRecord", "Rejection", "READERS", "format_choices",
           "format_hints", "resolve_reader"]
