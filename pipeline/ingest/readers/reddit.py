"""Reddit ``about.json`` (``{"kind": "t2", "data": {...}}``): one file, a folder of them, or JSON
lines / a JSON array of them.

The account id is the base36 ``id``. Suspended accounts come back with only ``name`` and
``is_suspended`` and no id; they are quarantined with that reason. The avatar is ``icon_img``
(HTML entities in Reddit's JSON URLs are decoded), else ``snoovatar_img``. Bio, title and
follower count come from the profile's ``subreddit`` object when present.
"""

from __future__ import annotations

import html
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
from pipeline.ingest.readers.jsonfiles import detect_by_markers, iter_json_export, rejection
from pipeline.ingest.readers.textio import NotAnArray

PLATFORM = "reddit"


class RedditReader(ExportReader):
    name = "reddit"

    def detect(self, path: Path) -> bool:
        return detect_by_markers(path, '"t2"', '"created_utc"')

    def read(self, path: Path) -> Iterator[AccountRecord | Rejection]:
        for name, locator, value in iter_json_export(path):
            if isinstance(value, Rejection):
                yield value
                continue
            item = value.value if isinstance(value, NotAnArray) else value
            try:
                yield self._record(name, locator, item)
            except FieldError as exc:
                yield rejection(name, locator, str(exc), item)

    @staticmethod
    def _record(source: str, locator: str, item: Any) -> AccountRecord:
        if not isinstance(item, dict) or item.get("kind") != "t2" or not isinstance(item.get("data"), dict):
            raise FieldError("expected a Reddit account object ({\"kind\": \"t2\", \"data\": {...}})")
        data = item["data"]
        name = clean_text(data.get("name"), "name")
        account_id = clean_text(data.get("id"), "id")
        if not account_id:
            suspended = " (suspended accounts have no id)" if data.get("is_suspended") else ""
            raise FieldError(f"id is missing{suspended}")
        sub = data.get("subreddit") if isinstance(data.get("subreddit"), dict) else {}
        icon = clean_text(data.get("icon_img"), "icon_img") or clean_text(data.get("snoovatar_img"), "snoovatar_img")
        return AccountRecord(
            platform=PLATFORM,
            account_id=account_id.removeprefix("t2_"),
            source_file=source,
            source_locator=locator,
            handle=name,
            display_name=clean_text(sub.get("title"), "subreddit.title"),
            bio=clean_text(sub.get("public_description"), "subreddit.public_description"),
            created_at=parse_timestamp(data.get("created_utc"), "created_utc"),
            followers=parse_count(_whole(sub.get("subscribers")), "subreddit.subscribers"),
            avatar_ref=html.unescape(icon) if icon else None,
        )


def _whole(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value
