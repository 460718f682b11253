"""The one account model every reader maps to, and the parsing helpers readers share."""

from __future__ import annotations

import json
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, TypeVar

from pipeline.ingest import ledger

log = logging.getLogger(__name__)

EXCERPT_CHARS = 500
MAX_COUNT = 2**63 - 1  # PostgreSQL bigint: a larger follower count is not a count
EARLIEST = datetime(1970, 1, 1, tzinfo=timezone.utc)  # no platform date is older than the epoch
LATEST = datetime(2100, 1, 1, tzinfo=timezone.utc)  # nor newer than this (a 9999-12-31 placeholder)
# A platform's own epoch: an account created before its platform existed is a broken or forged record.
# Posts are not bounded by it (Bluesky keeps the createdAt a client sets, and imported archives backdate).
PLATFORM_EPOCH = {
    # a few days before launch: founders' and staff accounts predate it (Reddit's spez: 2005-06-06)
    "twitter": datetime(2006, 3, 1, tzinfo=timezone.utc),
    "x": datetime(2006, 3, 1, tzinfo=timezone.utc),
    "reddit": datetime(2005, 6, 1, tzinfo=timezone.utc),
    "mastodon": datetime(2016, 3, 16, tzinfo=timezone.utc),
}
MAX_FIELD_CHARS = 65_536  # a bio or URL longer than this is not a profile field
APPROXIMATE_ID = "~"  # prefix of a post id the export wrote as a float; ingest resolves it to an exact id


_SURROGATE = re.compile("[\ud800-\udfff]")  # any lone surrogate: PostgreSQL (UTF-8) cannot store it
REPLACEMENT = "\ufffd"


def sanitise(text: str) -> tuple[str, list[str]]:
    """Text PostgreSQL can store: undecodable bytes (lone surrogates) become U+FFFD, NULs are removed.
    Returns the text and what was done, for the excerpt or the ledger to say so."""
    done: list[str] = []
    if _SURROGATE.search(text):
        text = _SURROGATE.sub(REPLACEMENT, text)
        done.append("invalid UTF-8 replaced")
    if "\x00" in text:
        text = text.replace("\x00", "")
        done.append("NUL removed")
    return text, done


class FieldError(ValueError):
    """A field that cannot be parsed; the message names the field and the value."""


def _needs_repair(text: str) -> bool:
    """A NUL, or a lone surrogate (only possible in a non-ASCII string: ``isascii`` is a flag test)."""
    return "\x00" in text or (not text.isascii() and _SURROGATE.search(text) is not None)


def _sanitise_fields(record: Any) -> None:
    """Every text field of a record made storable, once, where the record is made; each repair is
    counted in the active ingest ledger against the record's file. (Two flag tests per field in the
    common case: this runs for every record of a ten-million-row export.)"""
    if not any(_needs_repair(value) if value.__class__ is str else
               value.__class__ is tuple and any(v.__class__ is str and _needs_repair(v) for v in value)
               for value in record.__dict__.values()):
        return
    for name, value in list(record.__dict__.items()):
        if isinstance(value, str):
            object.__setattr__(record, name, sanitise(value)[0])
        elif isinstance(value, tuple):
            object.__setattr__(record, name, tuple(sanitise(v)[0] if isinstance(v, str) else v for v in value))
    ledger.repaired(record.source_file)


def check_count(value: int | None, field: str) -> None:
    if value is not None and not 0 <= value <= MAX_COUNT:
        raise FieldError(f"{field} {value} is out of range (0 to {MAX_COUNT})")


def check_date(value: datetime | None, field: str, earliest: datetime = EARLIEST) -> None:
    if value is None:
        return
    if not earliest <= value < LATEST:
        raise FieldError(f"{field} {value.isoformat()} is outside {earliest.date()} to {LATEST.date()}")


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
    # known only as the author of posts, with no record of its own: the ledger counts it apart from
    # the records seen, as it adds a stored row that no record of the file stands for
    inferred: bool = False

    def __post_init__(self) -> None:
        """Robust by construction: text storable, counts in the bigint range, dates plausible."""
        _sanitise_fields(self)
        for name in ("followers", "following", "posts"):
            check_count(getattr(self, name), name)
        check_date(self.created_at, "created_at", PLATFORM_EPOCH.get(self.platform, EARLIEST))

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

    def __post_init__(self) -> None:
        _sanitise_fields(self)
        check_date(self.posted_at, "posted_at")

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

    def __post_init__(self) -> None:
        """Storable text; an excerpt that had to be repaired says so, as the raw record is what an
        investigator compares it with."""
        for name in ("source_file", "locator", "reason"):
            object.__setattr__(self, name, sanitise(getattr(self, name))[0])
        excerpt, done = sanitise(self.excerpt)
        if done:
            note = f" [{', '.join(done)}]"
            excerpt = excerpt[:EXCERPT_CHARS - len(note)] + note
        object.__setattr__(self, "excerpt", excerpt)

    @classmethod
    def of(cls, source_file: str, locator: str, reason: str, raw: object) -> "Rejection":
        try:
            text = raw if isinstance(raw, str) else repr(raw)
        except (RecursionError, ValueError):  # a value nested too deep to print (or an int too long)
            text = f"<{type(raw).__name__} too deep or too large to print>"
        return cls(source_file, locator, reason, text[:EXCERPT_CHARS])


@dataclass(frozen=True)
class Ignored:
    """One unit of an export (a record, line or activity) that the format defines as neither an account
    nor a post, e.g. a ``Like`` activity or a ``describeRepo`` response. Counted in the ingest ledger
    by ``reason``, never stored: what a reader skips is said, not lost in silence."""

    source_file: str
    locator: str
    reason: str


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


_DATE_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d", "%a %b %d %H:%M:%S %z %Y")


def parse_timestamp(value: str | int | float | None, field: str = "created_at") -> datetime | None:
    """ISO 8601, 'YYYY-MM-DD[ HH:MM[:SS]]', Twitter's legacy format, or epoch seconds; always UTC."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise FieldError(f"{field} is a JSON {type(value).__name__}, not a date")
    if isinstance(value, (int, float)) or re.fullmatch(r"\d{9,11}(\.\d+)?", str(value).strip()):
        try:
            stamp = datetime.fromtimestamp(float(value), tz=timezone.utc)
        except (OverflowError, OSError, ValueError):
            raise FieldError(f"{field} {str(value)[:40]!r} is not a valid epoch time") from None
        check_date(stamp, field)
        return stamp
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
    try:
        stamp = parsed.astimezone(timezone.utc)
    except OverflowError:  # 0001-01-01 00:00+05:00 or 9999-12-31 23:59-05:00: no UTC time exists
        raise FieldError(f"{field} {text[:40]!r} is outside {EARLIEST.date()} to {LATEST.date()}") from None
    check_date(stamp, field)
    return stamp


def parse_count(value: str | int | None, field: str) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise FieldError(f"{field} is a JSON {type(value).__name__}, not a whole number")
    if isinstance(value, float):
        if not value.is_integer():
            raise FieldError(f"{field} {value!r} is not a whole number")
        value = int(value)
    try:
        number = int(str(value).strip().replace(",", "")) if isinstance(value, str) else value
    except ValueError:
        raise FieldError(f"{field} {str(value)[:40]!r} is not a whole number") from None
    if number < 0:
        raise FieldError(f"{field} {number} is negative")
    check_count(number, field)
    return number


def clean_text(value: object, field: str) -> str | None:
    """Strip, refuse oversized fields and values that are not text, map empty to None.

    Undecodable bytes and NULs are not refused here: the record keeps its other fields, and its
    construction repairs them (`sanitise`), counted in the ledger."""
    if value is None:
        return None
    if isinstance(value, (dict, list, tuple, set)):
        raise FieldError(f"{field} is a JSON {'object' if isinstance(value, dict) else 'array'}, not text")
    text = str(value)
    if len(text) > MAX_FIELD_CHARS:
        raise FieldError(f"{field} is {len(text)} characters (limit {MAX_FIELD_CHARS})")
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


T = TypeVar("T")


def guarded(source_file: str, locator: str, raw: object, make: Callable[[], T]) -> T | Rejection:
    """``make()``, or the record's Rejection when it fails: a FieldError's message is the reason; any other
    exception is a reader bug on this record, quarantined naming the exception (and logged with its
    traceback), so one odd record never loses the export and is never skipped in silence."""
    try:
        return make()
    except FieldError as exc:
        return Rejection.of(source_file, locator, str(exc), _excerpt(raw))
    except (RecursionError, MemoryError) as exc:
        return Rejection.of(source_file, locator, f"record too deep or too large ({type(exc).__name__})", "")
    except Exception as exc:  # noqa: BLE001 - a record the reader did not foresee: quarantined, logged
        log.warning("unexpected %s reading %s %s", type(exc).__name__, source_file, locator, exc_info=True)
        return Rejection.of(source_file, locator, f"unreadable record ({type(exc).__name__}: {str(exc)[:200]})",
                            _excerpt(raw))


def guarded_file(source_file: str, records: Iterator[T], unit: str = "the rest of the file") -> Iterator[T | Rejection]:
    """The records of one file; an error that ends the file is one Rejection for ``unit`` (counted as one
    unit seen), and the records before it are kept. The other files of the export are read on."""
    try:
        yield from records
    except FieldError as exc:
        ledger.saw(source_file)
        yield Rejection.of(source_file, "file", f"{unit} unreadable: {exc}", "")
    except (RecursionError, MemoryError) as exc:
        ledger.saw(source_file)
        yield Rejection.of(source_file, "file", f"{unit} unreadable: too deep or too large ({type(exc).__name__})",
                           "")
    except Exception as exc:  # noqa: BLE001 - said, counted and logged; never silent
        log.warning("unexpected %s reading %s", type(exc).__name__, source_file, exc_info=True)
        ledger.saw(source_file)
        yield Rejection.of(source_file, "file", f"{unit} unreadable ({type(exc).__name__}: {str(exc)[:200]})", "")


def _excerpt(raw: object) -> str:
    return raw if isinstance(raw, str) else json_excerpt(raw)


def json_excerpt(value: object) -> str:
    """A value as a quarantine excerpt: its JSON (bounded), else its repr; never an exception, however deep
    or odd the value."""
    try:
        return json.dumps(value, ensure_ascii=False, default=str)[:EXCERPT_CHARS]
    except (TypeError, ValueError, RecursionError):
        try:
            return repr(value)[:EXCERPT_CHARS]
        except (RecursionError, ValueError):
            return f"<{type(value).__name__} too deep or too large to print>"
