"""Mastodon API Account entities, as a JSON array or JSON lines (one file, or a folder of them).

The account id in the API is local to the server that answered, so the key is the account's
address ``username@domain`` (``acct`` when it has a domain, else with the domain of ``url``).
``note`` is HTML and becomes plain text. ``avatar_static`` is scored (it differs from ``avatar``
only for animated images); Mastodon's ``missing.png`` placeholder is no avatar.
"""

from __future__ import annotations

import html
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

from pipeline.ingest.readers.base import (
    AccountRecord,
    ExportReader,
    FieldError,
    Rejection,
    clean_text,
    parse_count,
    parse_timestamp,
    required_id,
)
from pipeline.ingest.readers.jsonfiles import detect_by_markers, iter_json_export, rejection
from pipeline.ingest.readers.textio import NotAnArray

PLATFORM = "mastodon"


class _Text(HTMLParser):
    """HTML to text: paragraphs and <br> become line breaks, tags are dropped, entities decoded."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag == "br":
            self.parts.append("\n")
        elif tag == "p" and self.parts:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def html_to_text(value: str | None) -> str | None:
    if not value:
        return None
    parser = _Text()
    parser.feed(value)
    parser.close()
    return html.unescape("".join(parser.parts))


class MastodonReader(ExportReader):
    name = "mastodon"

    def detect(self, path: Path) -> bool:
        return detect_by_markers(path, '"acct"', '"username"', '"followers_count"')

    def read(self, path: Path) -> Iterator[AccountRecord | Rejection]:
        for name, locator, value in iter_json_export(path):
            if isinstance(value, Rejection):
                yield value
            elif isinstance(value, NotAnArray):
                yield rejection(name, "file", f"{value} (Mastodon accounts come as an array or JSON lines)", value.value)
            elif not isinstance(value, dict):
                yield rejection(name, locator, f"expected an Account object, got a JSON {type(value).__name__}", value)
            else:
                try:
                    yield self._record(name, locator, value)
                except FieldError as exc:
                    yield rejection(name, locator, str(exc), value)

    @staticmethod
    def _record(source: str, locator: str, row: dict) -> AccountRecord:
        username = required_id(row.get("username"), "username")
        acct = clean_text(row.get("acct"), "acct") or username
        profile_url = clean_text(row.get("url"), "url")
        if "@" not in acct:
            domain = urlsplit(profile_url).hostname if profile_url else None
            if not domain:
                raise FieldError(f"acct {acct!r} has no domain and there is no url to take it from")
            acct = f"{acct}@{domain}"
        if row.get("id") in (None, ""):
            raise FieldError("id is missing")
        avatar = clean_text(row.get("avatar_static") or row.get("avatar"), "avatar_static")
        if avatar and avatar.rsplit("/", 1)[-1].startswith("missing."):
            avatar = None
        return AccountRecord(
            platform=PLATFORM,
            account_id=acct.lstrip("@").lower(),
            source_file=source,
            source_locator=locator,
            handle=acct.lstrip("@"),
            display_name=clean_text(row.get("display_name"), "display_name"),
            bio=clean_text(html_to_text(row.get("note")), "note"),
            url=profile_url,
            created_at=parse_timestamp(row.get("created_at")),
            followers=parse_count(row.get("followers_count"), "followers_count"),
            following=parse_count(row.get("following_count"), "following_count"),
            posts=parse_count(row.get("statuses_count"), "statuses_count"),
            avatar_ref=avatar,
        )
