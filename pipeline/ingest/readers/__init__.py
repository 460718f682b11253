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
from pipeline.ingest.readers.bluesky import BlueskyReader
from pipeline.ingest.readers.bluesky_car import BlueskyCarReader
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
    raise UserError(undetected_message(path))


MAX_COLUMNS_SHOWN = 12  # of a CSV header that matched no format
MAX_NAME_CHARS = 60  # a column or file name in the message


def csv_requirements() -> list[tuple[str, tuple[str, ...]]]:
    """The columns each CSV format needs, from the readers' own constants (what their ``detect`` tests)."""
    from pipeline.ingest.readers import generic, twitter_io

    # generic.REQUIRED_COLUMNS is asked of its owner (twitter_io.USERS_REQUIRED is being added); until then, the
    # columns their detect() tests. tests/test_cli_mistakes.py checks that a CSV with just these is detected.
    return [("generic manifest", getattr(generic, "REQUIRED_COLUMNS", ("platform", "account_id"))),
            ("IO users file", getattr(twitter_io, "USERS_REQUIRED", ("userid", "user_screen_name"))),
            ("IO tweets file", tuple(twitter_io.TWEET_COLUMNS))]


def _short(text: str, limit: int = MAX_NAME_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _csv_columns(head: str) -> list[str]:
    import csv

    first = head.lstrip("\ufeff").splitlines()[0] if head.strip() else ""
    try:
        return [c.strip() for c in next(csv.reader([first]), [])]
    except csv.Error:
        return [c.strip().strip('"') for c in first.split(",")]


def _format_label(reader: ExportReader) -> str:
    """A reader's hint up to its first colon or parenthesis: "X/Twitter IO release"."""
    return reader.hint.split(":")[0].split(" (")[0].strip()


def undetected_message(path: Path) -> str:
    """One line for an export no reader recognised: an empty folder or zip says so; a CSV names the columns
    it has and those each CSV format needs; anything else names the formats, short."""
    from pipeline.ingest.readers.files import ExportFiles

    start = f"could not detect the format of {path}"
    choose = "Pass --format NAME to choose one (`profile-audit audit --help` describes each)"
    try:
        with ExportFiles(path) as files:
            names = files.names()
            refused = len(files.source.unsafe)
            csvs = sorted(files.with_suffix(".csv"), key=lambda n: (not n.endswith("manifest.csv"), n.count("/"), n))
            header = _csv_columns(files.head(csvs[0], 8192)) if csvs else []
    except (OSError, ValueError) as exc:
        return f"{start}: it cannot be read ({exc.__class__.__name__}: {_short(str(exc), 200)}). {choose}"
    if not names and path.is_dir():
        return (f"{start}: it is an empty folder (no files in it or below it). "
                "Pass the folder that holds the export's files, a zip of it, or one export file")
    if not names:
        refusal = f" ({refused} member{'s' if refused != 1 else ''} refused for unsafe names)" if refused else ""
        return (f"{start}: it is a zip with no files in it{refusal}. "
                "Pass the zip of the export's files, the folder they are in, or one export file")
    if path.is_file() and path.stat().st_size == 0:
        return f"{start}: it is an empty file (0 bytes). Pass the complete export file, or the export's folder or zip"
    if csvs:
        shown = ", ".join(_short(c) for c in header[:MAX_COLUMNS_SHOWN]) or "none (no header line)"
        more = f" and {len(header) - MAX_COLUMNS_SHOWN} more" if len(header) > MAX_COLUMNS_SHOWN else ""
        others = f" (and {len(csvs) - 1} more CSV{'s' if len(csvs) > 2 else ''}, none matching)" if len(csvs) > 1 else ""
        needs = ", ".join(f"{label} (needs {', '.join(columns)})" for label, columns in csv_requirements())
        return (f"{start}: the CSV {_short(csvs[0])}{others} has columns {shown}{more}; expected one of: {needs}. "
                f"Rename the columns to match one of these. Pass --format NAME to force a format ({', '.join(READERS.names())})")
    listed = ", ".join(_short(n) for n in names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    formats = ", ".join(f"{r.name} ({_format_label(r)})" for r in READERS.values())
    return (f"{start}: no reader recognised its {len(names)} file{'s' if len(names) != 1 else ''} ({listed}); "
            f"expected one of: {formats}. {choose}")


__all__ = ["AccountRecord", "ExportDate", "ExportReader", "PostRecord", "Rejection", "READERS", "format_choices",
           "format_hints", "resolve_reader"]
