"""Reddit ``about.json`` (``{"kind": "t2", "data": {...}}``) and history listings
(``/user/<name>/submitted``, ``/user/<name>/comments``, ``/user/<name>/overview``: ``{"kind":
"Listing", "data": {"children": [{"kind": "t3" | "t1", "data": {...}}]}}``): one file, a folder or
a zip of them, or JSON lines / a JSON array of them.

Submissions (t3) and comments (t1) are posts keyed by their fullname (``t3_abc``, ``t1_def``), so a
comment's ``parent_id`` is its ``replied_id``; Reddit's repost is the crosspost
(``crosspost_parent``). A link submission's ``url`` is its link. An author whose posts are in the
export without an ``about.json`` becomes an account with id and name only.

The account id is the base36 ``id``. Suspended accounts come back with only ``name`` and
``is_suspended`` and no id; they are quarantined with that reason. The avatar is ``icon_img``
(HTML entities in Reddit's JSON URLs are decoded), else ``snoovatar_img``; the
``avatar_default_*`` placeholders (or ``is_default_icon``) are no avatar. Bio, title and
follower count come from the profile's ``subreddit`` object when present.

Ingest ledger (issue 24): each JSON value of a file is a unit, except a Listing, whose children are the
units (each a post, an account, a rejection, or ignored: ``more`` stubs, subreddits, messages and other
things that are neither, by reason; an empty Listing is one unit, ignored). Authors known only from
their posts are ``inferred`` accounts, counted against the file of their first post.
"""

from __future__ import annotations

import html
from functools import partial
from pathlib import Path
from typing import Any, Iterator

from pipeline.ingest import ledger
from pipeline.ingest.readers.base import (
    AccountRecord,
    ExportReader,
    FieldError,
    Ignored,
    PostRecord,
    Rejection,
    clean_text,
    guarded,
    guarded_file,
    parse_count,
    parse_timestamp,
    real_avatar,
    required_id,
)
from pipeline.ingest.readers.files import ExportFiles
from pipeline.ingest.readers.jsonfiles import detect_by_markers, iter_json_file, json_names, lone_value, rejection

PLATFORM = "reddit"
# Things that are neither an account (t2) nor a post (t1, t3): ignored, each counted under its reason.
OTHER_THINGS = {"more": "Listing 'more' stub (children not loaded)", "t4": "message (t4)", "t5": "subreddit (t5)",
                "t6": "award (t6)", "LiveUpdate": "live thread update", "LabeledMulti": "multireddit",
                "modaction": "moderator action"}


class RedditReader(ExportReader):
    name = "reddit"
    hint = "Reddit about.json (kind t2) and submitted/comments listings (kind Listing of t3/t1)"
    reads = ("accounts", "avatars", "posts", "reposts")
    sample = "reddit/praw-cassettes, reddit/asyncpraw-cassettes (accounts; listings: synthetic only)"

    def detect(self, path: Path) -> bool:
        return detect_by_markers(path, '"t2"', '"created_utc"') or detect_by_markers(path, '"Listing"', '"author_fullname"')

    def read(self, path: Path) -> Iterator[AccountRecord | PostRecord | Rejection | Ignored]:
        accounts: set[str] = set()
        authors: dict[str, tuple[str | None, str, str]] = {}  # account id -> (name, where first seen)
        with ExportFiles(path) as files:
            names = json_names(files)
            if not names:
                raise FieldError(f"no .json, .jsonl or .ndjson files in {files.path}")
            yield from files.unsafe()
            for name in names:
                label = files.label(name)
                items = (item for _, locator, value in iter_json_file(files, name)
                         for item in self._items(label, locator, value, accounts, authors))
                yield from guarded_file(label, items)
        for account_id, (handle, name, loc) in sorted(authors.items()):
            if account_id not in accounts:
                made = guarded(name, loc, handle, partial(AccountRecord, PLATFORM, account_id, name,
                                                          f"{loc} (author of posts)", handle=handle, inferred=True))
                if isinstance(made, Rejection):  # `inferred` counts only accounts made: this one is a unit seen
                    ledger.saw(name)
                yield made

    def _items(self, name: str, locator: str, value: Any, accounts: set[str],
               authors: dict[str, tuple[str | None, str, str]]) -> Iterator[AccountRecord | PostRecord | Rejection | Ignored]:
        """What one JSON value of a file gives: an account (t2), a Listing's children, or its rejection."""
        if isinstance(value, Rejection):
            yield value
            return
        item = lone_value(value)
        if isinstance(item, dict) and item.get("kind") == "Listing":
            yield from self._listing(name, locator, item, accounts, authors)
            return
        kind = item.get("kind") if isinstance(item, dict) else None
        if isinstance(kind, str) and kind in OTHER_THINGS:
            yield Ignored(name, locator, OTHER_THINGS[kind])
            return
        record = guarded(name, locator, item, partial(self._record, name, locator, item))
        if isinstance(record, AccountRecord):
            accounts.add(record.account_id)
        yield record

    def _listing(self, name: str, locator: str, item: dict, accounts: set[str],
                 authors: dict[str, tuple[str | None, str, str]]) -> Iterator[AccountRecord | PostRecord | Rejection | Ignored]:
        """A Listing's units are its children: the Listing, counted as one unit by the plumbing, stands
        for them, so ``len(children) - 1`` more are seen (an empty Listing is its own unit, ignored)."""
        data = item.get("data") if isinstance(item.get("data"), dict) else {}
        children = data.get("children") if isinstance(data.get("children"), list) else None
        if children is None:
            yield rejection(name, locator, "Listing has no data.children array", item)
            return
        if not children:
            yield Ignored(name, locator, "empty Listing")
            return
        ledger.saw(name, len(children) - 1)
        for i, child in enumerate(children):
            loc = f"{locator} child {i}"
            kind = child.get("kind") if isinstance(child, dict) else None
            if isinstance(kind, str) and kind in OTHER_THINGS:
                yield Ignored(name, loc, OTHER_THINGS[kind])
            elif kind == "t2":
                record = guarded(name, loc, child, partial(self._record, name, loc, child))
                if isinstance(record, AccountRecord):
                    accounts.add(record.account_id)
                yield record
            else:
                post = guarded(name, loc, child, partial(self._post, name, loc, child))
                if isinstance(post, PostRecord):
                    author = child["data"].get("author")
                    handle = author if isinstance(author, str) and 0 < len(author) <= 100 else None
                    authors.setdefault(post.account_id, (handle, name, loc))
                yield post

    @staticmethod
    def _record(source: str, locator: str, item: Any) -> AccountRecord:
        if not isinstance(item, dict) or item.get("kind") != "t2" or not isinstance(item.get("data"), dict):
            raise FieldError("expected a Reddit account object ({\"kind\": \"t2\", \"data\": {...}}) or a Listing")
        data = item["data"]
        name = clean_text(data.get("name"), "name")
        account_id = clean_text(data.get("id"), "id")
        if not account_id:
            suspended = " (suspended accounts have no id)" if data.get("is_suspended") else ""
            raise FieldError(f"id is missing{suspended}")
        sub = data.get("subreddit") if isinstance(data.get("subreddit"), dict) else {}
        icon = clean_text(data.get("icon_img"), "icon_img") or clean_text(data.get("snoovatar_img"), "snoovatar_img")
        icon = html.unescape(icon) if icon else None
        if sub.get("is_default_icon") is True and not data.get("snoovatar_img"):
            icon = None
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
            avatar_ref=real_avatar(PLATFORM, icon),
        )

    @staticmethod
    def _post(source: str, locator: str, child: Any) -> PostRecord:
        """A submission (t3) or comment (t1) of a history listing."""
        if not isinstance(child, dict) or child.get("kind") not in ("t1", "t3") or not isinstance(child.get("data"), dict):
            raise FieldError("expected a submission (t3) or comment (t1) object in the listing")
        kind, data = child["kind"], child["data"]
        author = clean_text(data.get("author_fullname"), "author_fullname")
        if not author:
            raise FieldError("author_fullname is missing (a deleted author?)")
        post_id = clean_text(data.get("name"), "name") or f"{kind}_{required_id(data.get('id'), 'id')}"
        if kind == "t3":
            title = clean_text(data.get("title"), "title") or ""
            body = clean_text(data.get("selftext"), "selftext")
            text = f"{title}\n\n{body}" if body else title
            url = clean_text(data.get("url"), "url")
            url = html.unescape(url) if url else None
            urls = (url,) if url and not data.get("is_self") and url.startswith(("http://", "https://")) else ()
            parent = None
        else:
            text = clean_text(data.get("body"), "body") or ""
            urls = ()
            parent = clean_text(data.get("parent_id"), "parent_id")
        return PostRecord(
            platform=PLATFORM,
            account_id=author.removeprefix("t2_"),
            post_id=post_id,
            source_file=source,
            source_locator=locator,
            posted_at=parse_timestamp(_whole(data.get("created_utc")), "created_utc"),
            reposted_id=clean_text(data.get("crosspost_parent"), "crosspost_parent") if kind == "t3" else None,
            replied_id=parent,
            urls=urls,
            text=text or None,
        )


def _whole(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value
