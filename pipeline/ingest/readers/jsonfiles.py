"""Shared plumbing of the JSON readers (Mastodon, Bluesky, Reddit): which files an export path
means, a cheap content test for --format auto, and streaming their records."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from pipeline.ingest.readers.base import FieldError, Rejection
from pipeline.ingest.readers.textio import NotAnArray, json_records, open_text

JSON_SUFFIXES = (".json", ".jsonl", ".ndjson")


def json_files(path: Path) -> list[Path]:
    """The file itself, or the JSON files in a folder (recursively, symlinks out of it skipped), sorted."""
    if path.is_file():
        return [path] if path.suffix.lower() in JSON_SUFFIXES else []
    root = path.resolve()
    return sorted(p for p in path.rglob("*") if p.suffix.lower() in JSON_SUFFIXES and p.is_file()
                  and p.resolve().is_relative_to(root))


def head_text(path: Path, size: int = 8192) -> str:
    try:
        with path.open("rb") as fh:
            return open_text(fh).read(size)
    except (OSError, UnicodeError):
        return ""


def detect_by_markers(path: Path, *markers: str, files: int = 3) -> bool:
    """True when one of the first few JSON files shows every marker in its first 8 KB."""
    candidates = json_files(path) if path.exists() else []
    return any(all(m in head_text(f) for m in markers) for f in candidates[:files])


def iter_json_file(path: Path, root: Path) -> Iterator[tuple[str, str, Any]]:
    """(source name relative to root, locator, value or Rejection); a lone value that is not an array
    comes through as locator 'file' with the value, for the reader to accept or refuse."""
    name = path.relative_to(root).as_posix() if path != root else path.name
    with path.open("rb") as raw:
        try:
            for locator, value in json_records(open_text(raw), name):
                yield name, locator, value
        except NotAnArray as exc:
            yield name, "file", exc


def iter_json_export(path: Path) -> Iterator[tuple[str, str, Any]]:
    """iter_json_file over every JSON file the export path means, names relative to its folder.
    Raises FieldError when there is none, so a wrong path is an error rather than an empty run."""
    files = json_files(path)
    if not files:
        raise FieldError(f"no .json, .jsonl or .ndjson files in {path}")
    root = export_root(path)
    for file in files:
        yield from iter_json_file(file, root)


def export_root(path: Path) -> Path:
    """The folder that source names (and blob paths) are relative to."""
    return path if path.is_dir() else path.parent


def excerpt(value: Any) -> str:
    import json

    try:
        return json.dumps(value, ensure_ascii=False, default=str)[:500]
    except (TypeError, ValueError):
        return repr(value)[:500]


def rejection(name: str, locator: str, reason: str, value: Any) -> Rejection:
    return Rejection.of(name, locator, reason, excerpt(value))
