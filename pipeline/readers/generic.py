"""The project's own generic manifest: CSV or JSON lines, one account per row.

Columns: ``platform, account_id`` (required) and optionally ``handle, display_name, bio, url,
location, created_at, followers, following, posts, language, avatar`` (a path relative to the
manifest, or a URL). It is also the format of the demo export.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any, Iterator

from pipeline.readers.base import (
    MAX_FIELD_CHARS,
    AccountRecord,
    ExportReader,
    FieldError,
    Rejection,
    clean_text,
    parse_count,
    parse_timestamp,
)

MANIFEST_NAMES = ("manifest.csv", "manifest.jsonl")
TEXT_FIELDS = ("handle", "display_name", "bio", "url", "location", "language", "avatar")
COUNT_FIELDS = ("followers", "following", "posts")
_MISSING = object()  # DictReader's filler for cells a short row lacks


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
        manifest = self.manifest_path(path)
        if manifest is None:
            raise FileNotFoundError(f"no manifest.csv or manifest.jsonl in {path}")
        rows = self._jsonl_rows(manifest) if manifest.suffix == ".jsonl" else self._csv_rows(manifest)
        seen: dict[str, str] = {}
        for locator, row in rows:
            if isinstance(row, Rejection):
                yield row
                continue
            try:
                record = self._record(manifest.name, locator, row)
            except FieldError as exc:
                yield Rejection.of(manifest.name, locator, str(exc), json.dumps(row, default=str))
                continue
            if record.account_key in seen:
                yield Rejection.of(
                    manifest.name,
                    locator,
                    f"duplicate account {record.account_key} (first at {seen[record.account_key]})",
                    json.dumps(row, default=str),
                )
                continue
            seen[record.account_key] = locator
            yield record

    def _csv_rows(self, manifest: Path) -> Iterator[tuple[str, dict[str, Any] | Rejection]]:
        csv.field_size_limit(min(sys.maxsize, MAX_FIELD_CHARS * 4))
        # surrogateescape keeps undecodable bytes visible, so the row is rejected, not the file
        with manifest.open("r", encoding="utf-8-sig", errors="surrogateescape", newline="") as fh:
            reader = csv.DictReader(fh, restval=_MISSING)
            if not reader.fieldnames or not {"platform", "account_id"} <= set(reader.fieldnames):
                raise FieldError(f"{manifest.name} has no platform,account_id header (got {reader.fieldnames})")
            while True:
                line = reader.line_num + 1
                try:
                    row = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:
                    yield f"line {line}", Rejection.of(manifest.name, f"line {line}", f"unreadable CSV: {exc}", "")
                    continue
                if None in row:  # more cells than header columns: quoting is broken
                    yield f"line {line}", Rejection.of(
                        manifest.name, f"line {line}", "more cells than header columns (broken quoting?)", repr(row)
                    )
                    continue
                if _MISSING in row.values():  # fewer cells: typically a quote left open to the end
                    yield f"line {line}", Rejection.of(
                        manifest.name, f"line {line}", "fewer cells than header columns (broken quoting?)", repr(row)
                    )
                    continue
                yield f"line {line}", row

    def _jsonl_rows(self, manifest: Path) -> Iterator[tuple[str, dict[str, Any] | Rejection]]:
        with manifest.open("r", encoding="utf-8-sig", errors="surrogateescape") as fh:
            for number, text in enumerate(fh, start=1):
                locator = f"line {number}"
                if not text.strip():
                    continue
                try:
                    row = json.loads(text)
                except json.JSONDecodeError as exc:
                    yield locator, Rejection.of(manifest.name, locator, f"not JSON: {exc.msg}", text)
                    continue
                if not isinstance(row, dict):
                    yield locator, Rejection.of(manifest.name, locator, "not a JSON object", text)
                    continue
                yield locator, row

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
