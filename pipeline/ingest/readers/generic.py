"""The project's own generic manifest: CSV or JSON lines, one account per row.

Columns: ``platform, account_id`` (required) and optionally ``handle, display_name, bio, url,
location, created_at, followers, following, posts, language, avatar`` (a path relative to the
manifest, or a URL). It is also the format of the demo export.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

from pipeline.ingest.readers.base import (
    AccountRecord,
    ExportReader,
    FieldError,
    Rejection,
    clean_text,
    parse_count,
    parse_timestamp,
    real_avatar,
)
from pipeline.ingest.readers.files import ExportFiles
from pipeline.ingest.readers.textio import NotAnArray, csv_rows, json_records, open_text

MANIFEST_NAMES = ("manifest.csv", "manifest.jsonl")
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
        """Rows in file order; duplicate accounts are found by the ingest stage, in the database."""
        with ExportFiles(path) as files:
            yield from files.unsafe()
            manifest = self.manifest_name(files)
            if manifest is None:
                raise FieldError(f"no manifest.csv or manifest.jsonl (or CSV with platform,account_id) in {path}")
            label = files.label(manifest)
            with files.open(manifest) as raw:
                fh = open_text(raw)
                if manifest.endswith(".jsonl"):
                    rows = ((loc, _object_or_rejection(label, loc, row)) for loc, row in json_records(fh, label))
                else:
                    rows = csv_rows(fh, label, ("platform", "account_id"))
                try:
                    for locator, row in rows:
                        if isinstance(row, Rejection):
                            yield row
                            continue
                        try:
                            record = self._record(label, locator, row)
                        except FieldError as exc:
                            yield Rejection.of(label, locator, str(exc), json.dumps(row, default=str))
                            continue
                        yield _located(files, manifest, record)
                except NotAnArray as exc:
                    yield Rejection.of(label, "file", str(exc), repr(exc.value))

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
    return {"platform", "account_id"} <= {c.strip().strip('"') for c in header.split(",")}


def _located(files: ExportFiles, manifest: str, record: AccountRecord) -> AccountRecord:
    """Avatar paths are relative to the manifest: inside a zip or a subfolder, say where."""
    ref = record.avatar_ref
    if not ref or "://" in ref or ref.startswith("zip:") or (not files.is_zip and "/" not in manifest):
        return record
    return replace(record, avatar_ref=files.ref(ref, relative_to=manifest))


def _object_or_rejection(source: str, locator: str, row: object) -> object:
    if isinstance(row, (dict, Rejection)):
        return row
    return Rejection.of(source, locator, "not a JSON object", json.dumps(row, default=str))
