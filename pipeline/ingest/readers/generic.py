"""The project's own generic manifest: CSV or JSON lines, one account per row.

Columns: ``platform, account_id`` (required) and optionally ``handle, display_name, bio, url,
location, created_at, followers, following, posts, language, avatar`` (a path relative to the
manifest, or a URL). It is also the format of the demo export.
"""

from __future__ import annotations

import json
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
)
from pipeline.ingest.readers.textio import NotAnArray, csv_rows, json_records, open_text

MANIFEST_NAMES = ("manifest.csv", "manifest.jsonl")
TEXT_FIELDS = ("handle", "display_name", "bio", "url", "location", "language", "avatar")
COUNT_FIELDS = ("followers", "following", "posts")


class GenericManifestReader(ExportReader):
    name = "generic"

    def manifest_path(self, path: Path) -> Path | None:
        if path.is_file():
            return path if path.suffix in (".csv", ".jsonl") else None
        for name in MANIFEST_NAMES:
            if (path / name).is_file():
                return path / name
        return None

    def detect(self, path: Path) -> bool:
        manifest = self.manifest_path(path)
        if manifest is None:
            return False
        with manifest.open("rb") as fh:
            head = fh.read(4096).decode("utf-8", "replace").lstrip("\ufeff")
        if manifest.suffix == ".jsonl":
            return '"account_id"' in head and '"platform"' in head
        header = head.splitlines()[0] if head else ""
        columns = {c.strip() for c in header.split(",")}
        return {"platform", "account_id"} <= columns

    def export_root(self, path: Path) -> Path:
        return path.parent if path.is_file() else path

    def read(self, path: Path) -> Iterator[AccountRecord | Rejection]:
        """Rows in file order; duplicate accounts are found by the ingest stage, in the database."""
        manifest = self.manifest_path(path)
        if manifest is None:
            raise FileNotFoundError(f"no manifest.csv or manifest.jsonl in {path}")
        with manifest.open("rb") as raw:
            fh = open_text(raw)
            if manifest.suffix == ".jsonl":
                rows = ((loc, _object_or_rejection(manifest.name, loc, row)) for loc, row in json_records(fh, manifest.name))
            else:
                rows = csv_rows(fh, manifest.name, ("platform", "account_id"))
            try:
                for locator, row in rows:
                    if isinstance(row, Rejection):
                        yield row
                        continue
                    try:
                        yield self._record(manifest.name, locator, row)
                    except FieldError as exc:
                        yield Rejection.of(manifest.name, locator, str(exc), json.dumps(row, default=str))
            except NotAnArray as exc:
                yield Rejection.of(manifest.name, "file", str(exc), repr(exc.value))

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
            avatar_ref=text["avatar"],
            created_at=parse_timestamp(row.get("created_at")),
            **counts,
        )


def _object_or_rejection(source: str, locator: str, row: object) -> object:
    if isinstance(row, (dict, Rejection)):
        return row
    return Rejection.of(source, locator, "not a JSON object", json.dumps(row, default=str))
