"""Shared plumbing of the JSON readers (Mastodon, Bluesky, Reddit): which files an export path
means (a file, a folder or a zip, through `ExportFiles`), a cheap content test for --format auto,
and streaming their records."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from pipeline.ingest.readers.base import FieldError, Rejection, json_excerpt
from pipeline.ingest.readers.files import ExportFiles
from pipeline.ingest.readers.textio import NotAnArray, json_records, open_text

JSON_SUFFIXES = (".json", ".jsonl", ".ndjson")


def json_names(files: ExportFiles) -> list[str]:
    return files.with_suffix(*JSON_SUFFIXES)


def detect_by_markers(path: Path, *markers: str, files: int = 3) -> bool:
    """True when one of the first few JSON files shows every marker in its first 8 KB."""
    if not path.exists():
        return False
    try:
        with ExportFiles(path) as export:
            return any(all(m in export.head(n) for m in markers) for n in json_names(export)[:files])
    except (OSError, ValueError):
        return False


def iter_json_file(files: ExportFiles, name: str) -> Iterator[tuple[str, str, Any]]:
    """(source label, locator, value or Rejection); a lone value that is not an array comes through
    as locator 'file' with a NotAnArray holding it, for the reader to accept or refuse."""
    label = files.label(name)
    with files.open(name) as raw:
        try:
            for locator, value in json_records(open_text(raw), label):
                yield label, locator, value
        except NotAnArray as exc:
            yield label, "file", exc


def iter_json_export(files: ExportFiles, names: list[str] | None = None) -> Iterator[tuple[str, str, Any]]:
    """iter_json_file over every JSON file of the export (or ``names``). Raises FieldError when there
    is none, so a wrong path is an error rather than an empty run."""
    names = json_names(files) if names is None else names
    if not names:
        raise FieldError(f"no .json, .jsonl or .ndjson files in {files.path}")
    for refused in files.unsafe():
        yield refused.source_file, refused.locator, refused
    for name in names:
        for label, locator, value in iter_json_file(files, name):
            yield label, locator, value


def lone_value(value: Any) -> Any:
    """The value itself, or the single (pretty-printed) object a file held."""
    return value.value if isinstance(value, NotAnArray) else value


excerpt = json_excerpt  # a record's JSON as its quarantine excerpt (one definition, in base)


def rejection(name: str, locator: str, reason: str, value: Any) -> Rejection:
    return Rejection.of(name, locator, reason, excerpt(value))
