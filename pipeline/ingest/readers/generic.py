"""The project's own generic manifest: CSV or JSON lines, one account per row.

Columns: ``platform, account_id`` (required) and optionally ``handle, display_name, bio, url,
location, created_at, followers, following, posts, language, avatar`` (a path relative to the
manifest, or a URL). It is also the format of the demo export.

Ingest ledger (issue 24): each CSV row or JSON line is a unit (an account or its rejection); a file of
one JSON value that is not rows is one unit, rejected; a header-only file is registered with no unit.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, Iterator

from pipeline.ingest.readers.base import (
    AccountRecord,
    ExportReader,
    FieldError,
    Rejection,
    clean_text,
    guarded,
    guarded_file,
    parse_count,
    parse_timestamp,
    real_avatar,
)
from pipeline.ingest.readers.files import ExportFiles
from pipeline.ingest.readers.textio import NotAnArray, csv_rows, json_records, open_text

MANIFEST_NAMES = ("manifest.csv", "manifest.jsonl")
REQUIRED_COLUMNS = ("platform", "account_id")  # what detection tests and the CLI's mistake message asks for
TEXT_FIELDS = ("handle", "display_name", "bio", "url", "location", "language", "avatar")
COUNT_FIELDS = ("followers", "following", "posts")


class GenericManifestReader(ExportReader):
    name = "generic"
    hint = "CSV or JSON lines with platform,account_id columns (manifest.csv, or any one such file), folder or zip"
    reads = ("accounts", "avatars")
    sample = "the demo export (profile-audit demo); no third-party sample"

    @staticmethod
    def manifest_name(files: ExportFiles) -> str | None:
        """manifest.csv / manifest.jsonl (shallowest), else the first CSV or JSON lines file with the columns."""
        for name in MANIFEST_NAMES:
            if found := files.named(name):
                return found[0]
        candidates = files.with_suffix(".csv", ".jsonl")
        if files.only is not None:
            return candidates[0] if candidates else None
        return next((n for n in candidates if _has_columns(files, n)), None)

    def detect(self, path: Path) -> bool:
        try:
            with ExportFiles(path) as files:
                name = self.manifest_name(files)
                return name is not None and _has_columns(files, name)
        except (OSError, ValueError):
            return False

    def read(self, path: Path) -> Iterator[AccountRecord | Rejection]:
        """Rows in file order; duplicate accounts are found by the ingest stage, in the database.
        Each row is a unit (the plumbing counts it). A CSV without the platform,account_id header is
        the user's to fix (an error, as the manifest is the whole export); an error later in the file
        is its rejection, and the rows before it are kept."""
        with ExportFiles(path) as files:
            yield from files.unsafe()
            manifest = self.manifest_name(files)
            if manifest is None:
                raise FieldError(f"no manifest.csv or manifest.jsonl (or CSV with platform,account_id) in {path}")
            label = files.label(manifest)
            with files.open(manifest) as raw:
                fh = open_text(raw)
                if manifest.endswith(".jsonl"):
                    rows: Iterator[tuple[str, Any]] = json_records(fh, label)
                else:
                    rows = csv_rows(fh, label, REQUIRED_COLUMNS)
                    first = next(rows, None)  # reads the header: a FieldError here is the user's to fix
                    rows = itertools.chain([first] if first is not None else [], rows)
                yield from guarded_file(label, self._records(files, manifest, label, rows))

    def _records(self, files: ExportFiles, manifest: str, label: str,
                 rows: Iterator[tuple[str, Any]]) -> Iterator[AccountRecord | Rejection]:
        try:
            for locator, row in rows:
                if isinstance(row, Rejection):
                    yield row
                elif not isinstance(row, dict):
                    yield Rejection.of(label, locator, "not a JSON object", _excerpt(row))
                else:
                    yield guarded(label, locator, row, partial(self._located, files, manifest, label, locator, row))
        except NotAnArray as exc:  # one JSON value that is not an array of rows: its one unit, rejected
            yield Rejection.of(label, "file", str(exc), _excerpt(exc.value))

    def _located(self, files: ExportFiles, manifest: str, label: str, locator: str, row: dict) -> AccountRecord:
        return _located(files, manifest, self._record(label, locator, row))

    def _record(self, source: str, locator: str, row: dict[str, Any]) -> AccountRecord:
        platform = clean_text(row.get("platform"), "platform")
        account_id = clean_text(row.get("account_id"), "account_id")
        if not platform or not account_id:
            raise FieldError("platform and account_id are required")
        text = {name: clean_text(row.get(name), name) for name in TEXT_FIELDS}
        counts = {name: parse_count(row.get(name), name) for name in COUNT_FIELDS}
        return AccountRecord(
            platform=platform.lower(),
            account_id=account_id,
            source_file=source,
            source_locator=locator,
            handle=text["handle"],
            display_name=text["display_name"],
            bio=text["bio"],
            url=text["url"],
            location=text["location"],
            language=text["language"],
            avatar_ref=real_avatar(platform.lower(), text["avatar"]),
            created_at=parse_timestamp(row.get("created_at")),
            **counts,
        )


def _has_columns(files: ExportFiles, name: str) -> bool:
    head = files.head(name, 4096).lstrip("\ufeff")
    if name.endswith(".jsonl"):
        return '"account_id"' in head and '"platform"' in head
    header = head.splitlines()[0] if head else ""
    return set(REQUIRED_COLUMNS) <= {c.strip().strip('"') for c in header.split(",")}


def _located(files: ExportFiles, manifest: str, record: AccountRecord) -> AccountRecord:
    """Avatar paths are relative to the manifest: inside a zip or a subfolder, say where."""
    ref = record.avatar_ref
    if not ref or "://" in ref or ref.startswith("zip:") or (not files.is_zip and "/" not in manifest):
        return record
    return replace(record, avatar_ref=files.ref(ref, relative_to=manifest))


def _excerpt(value: object) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, default=str)[:500]
    except (TypeError, ValueError, RecursionError):
        return f"<{type(value).__name__}>"
