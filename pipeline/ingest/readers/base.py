"""The one account model every reader maps to, and the parsing helpers readers share."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

EXCERPT_CHARS = 500
MAX_FIELD_CHARS = 65_536  # a bio or URL longer than this is not a profile field
APPROXIMATE_ID = "~"  # prefix of a post id the export wrote as a float; ingest resolves it to an exact id


@dataclass(frozen=True)
class AccountRecord:
    platform: str
    account_id: str
    source_file: str
    source_locator: str
    handle: str | None = None
    display_name: str | None = None
    bio: str | None = None
    url: str | None = None
    location: str | None = None
    created_at: datetime | None = None  # UTC
    followers: int | None = None
    following: int | None = None
    posts: int | None = None
    language: str | None = None
    avatar_ref: str | None = None  # path relative to the export, zip member, or URL

    @property
    def account_key(self) -> str:
        return f"{self.platform}:{self.account_id}"


@dataclass(frozen=True)
class PostRecord:
    """One post (tweet, toot) for the ``posts`` table, which the network stage reads."""

    platform: str
    account_id: str
    post_id: str
    source_file: str
    source_locator: str
    posted_at: datetime | None = None  # UTC
    reposted_id: str | None = None
    quoted_id: str | None = None
    replied_id: str | None = None
    urls: tuple[str, ...] = ()
    hashtags: tuple[str, ...] = ()  # lower-case, without '#'
    text: str | None = None

    @property
    def account_key(self) -> str:
        return f"{self.platform}:{self.account_id}"


@dataclass(frozen=True)
class ExportDate:
    """The date an export states for itself (an archive manifest's generation date): account ages
    of a single-account export are measured at it rather than at the newest account creation."""

    at: datetime  # UTC
    source: str  # where it was read, e.g. 'data/manifest.js generationDate'


@dataclass(frozen=True)
class Rejection:
    source_file: str
    locator: str
    reason: str
    excerpt: str

    @classmethod
    def of(cls, source_file: str, locator: str, reason: str, raw: object) -> "Rejection":
        text = raw if isinstance(raw, str) else repr(raw)
        return cls(source_file, locator, reason, text[:EXCERPT_CHARS])


class ExportReader(ABC):
    """A format plug-in, registered by ``name`` in ``pipeline.ingest.readers.READERS``.

    ``hint`` is the one-line description the CLI help and the "could not detect" message show;
    ``reads`` says which of accounts, avatars, posts, reposts the format carries (the docs' format
    table is checked against it); ``sample`` names a real sample under ``shared/data/exports``.
    """

    name: str
    hint: str
    reads: tuple[str, ...] = ("accounts", "avatars")
    sample: str = ""

    @abstractmethod
    def detect(self, path: Path) -> bool:
        """Cheap test on file names or the first bytes, for --format auto."""

    @abstractmethod
    def read(self, path: Path) -> Iterator[AccountRecord | PostRecord | Rejection]:
        """Stream records; a bad record becomes a Rejection and reading goes on."""

    def export_root(self, path: Path) -> Path:
        """The folder that relative avatar paths (and ``zip:`` references) resolve against."""
        return path.parent if path.is_file() else path


class FieldError(ValueError):
    """A field that cannot be parsed; the message names the field and the value."""


_UNDECODED = re.compile("[\udc80-\udcff]")  # bytes that surrogateescape kept from an undecodable file
_DATE_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d", "%a %b %d %H:%M:%S %z %Y")


def parse_timestamp(value: str | int | float | None, field: str = "created_at") -> datetime | None:
    """ISO 8601, 'YYYY-MM-DD[ HH:MM[:SS]]', Twitter's legacy format, or epoch seconds; always UTC."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, (int, float)) or re.fullmatch(r"\d{9,11}(\.\d+)?", str(value).strip()):
        try:
            return datetime.fromtimestamp(float(value), tz=timezone.utc)
        except (OverflowError, OSError, ValueError):
            raise FieldError(f"{field} {value!r} is not a valid epoch time") from None
    text = str(value).strip()
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        parsed = None
        for fmt in _DATE_FORMATS:
            try:
                parsed = datetime.strptime(text, fmt)
                break
            except ValueError:
                continue
        if parsed is None:
            raise FieldError(f"{field} {text[:40]!r} is not a date (expected ISO 8601 or YYYY-MM-DD)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def parse_count(value: str | int | None, field: str) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = int(str(value).strip().replace(",", ""))
    except ValueError:
        raise FieldError(f"{field} {str(value)[:40]!r} is not a whole number") from None
    if number < 0:
        raise FieldError(f"{field} {number} is negative")
    return number


def clean_text(value: object, field: str) -> str | None:
    """Strip, refuse oversized fields and undecodable bytes, map empty to None."""
    if value is None:
        return None
    text = str(value)
    if len(text) > MAX_FIELD_CHARS:
        raise FieldError(f"{field} is {len(text)} characters (limit {MAX_FIELD_CHARS})")
    if _UNDECODED.search(text):
        raise FieldError(f"{field} is not valid UTF-8")
    if "\x00" in text:
        raise FieldError(f"{field} contains a NUL byte")
    text = text.strip()
    return text or None


def required_id(value: object, field: str) -> str:
    """An id that must be present: stripped text, or FieldError naming the field."""
    text = clean_text(value, field)
    if not text:
        raise FieldError(f"{field} is missing")
    return text


# Platform placeholder avatars: shared by every account without a picture, so scoring them or linking
# accounts through them would be noise (identical-avatar edges at scale). Matched on the URL or file name.
DEFAULT_AVATAR_PATTERNS: dict[str, tuple[re.Pattern[str], ...]] = {
    "twitter": (re.compile(r"default_profile_images?/", re.I), re.compile(r"(^|/)default_profile(_\w+)?\.(png|jpe?g)$", re.I)),
    "reddit": (re.compile(r"(^|/)avatar_default_\d+", re.I), re.compile(r"/static/avatars/defaults/", re.I)),
    "mastodon": (re.compile(r"(^|/)missing(_\w+)?\.png$", re.I), re.compile(r"/avatars/original/missing\.png", re.I)),
}  # Bluesky has no placeholder URL: a profile without a picture has no avatar field at all
DEFAULT_AVATAR_PATTERNS["x"] = DEFAULT_AVATAR_PATTERNS["twitter"]  # as generic manifests may name it


def is_default_avatar(platform: str, ref: str | None) -> bool:
    return bool(ref) and any(p.search(ref) for p in DEFAULT_AVATAR_PATTERNS.get(platform, ()))


def real_avatar(platform: str, ref: str | None) -> str | None:
    """The avatar reference, or None for the platform's placeholder ("no avatar")."""
    return None if is_default_avatar(platform, ref) else ref


def zip_ref(archive: str, member: str) -> str:
    """How a snapshot names an avatar inside a zip: ``zip:<archive path>!<member>``."""
    return f"zip:{archive}!{member}"
