"""Streaming text helpers the readers share: encoding sniffing, CSV rows with per-row quarantine,
and JSON arrays / JSON lines parsed one record at a time (memory stays bounded by one record)."""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
import sys
from collections.abc import Iterable, Iterator
from typing import IO, Any

from pipeline.ingest import ledger
from pipeline.ingest.readers.base import EXCERPT_CHARS, MAX_FIELD_CHARS, FieldError, Rejection

SNIFF_BYTES = 1 << 20
MAX_JSON_RECORD_CHARS = 16 * 1024 * 1024
_MISSING = object()  # DictReader's filler for cells a short row lacks
_UTF8_MULTIBYTE = re.compile(rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}")


def sniff_encoding(head: bytes) -> str:
    """BOMs first (UTF-8, UTF-16, UTF-32), then BOM-less UTF-16 by its NUL pattern, then UTF-8.

    A sample that is not valid UTF-8 and holds no UTF-8 multi-byte sequence at all is a legacy
    single-byte file (Windows-1252, a superset of Latin-1 for text): decoding it as UTF-8 would
    reject every row with an accent. A sample with both is mixed: UTF-8, and the bad rows are
    quarantined one by one.
    """
    for bom, name in ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
                      (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")):
        if head.startswith(bom):
            return name
    sample = head[:4096]
    if len(sample) >= 4:
        if sample[1::2].count(0) > len(sample) // 4 and sample[0::2].count(0) == 0:
            return "utf-16-le"
        if sample[0::2].count(0) > len(sample) // 4 and sample[1::2].count(0) == 0:
            return "utf-16-be"
    try:
        head.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError as exc:
        if exc.start >= len(head) - 3 and len(head) == SNIFF_BYTES:  # a character cut by the sample's end
            return "utf-8"
    return "utf-8" if _UTF8_MULTIBYTE.search(head) else "cp1252"


def open_text(binary: IO[bytes]) -> IO[str]:
    """Wrap a binary stream as text in its sniffed encoding; undecodable bytes stay visible as
    surrogates so that the row holding them is rejected, not the file."""
    buffered = binary if isinstance(binary, io.BufferedReader) else io.BufferedReader(binary, SNIFF_BYTES)  # type: ignore[arg-type]
    encoding = sniff_encoding(buffered.peek(SNIFF_BYTES)[:SNIFF_BYTES])
    return io.TextIOWrapper(buffered, encoding=encoding, errors="surrogateescape", newline="")


def counted(source: str, units: Iterator[tuple[str, Any]]) -> Iterator[tuple[str, Any]]:
    """Each (locator, unit) counted as seen in the ingest ledger; the file is registered even when it has none.
    A lone JSON value (NotAnArray) is one unit too: the reader takes it as a record or rejects it."""
    ledger.saw(source, 0)
    try:
        for unit in units:
            ledger.saw(source)
            yield unit
    except NotAnArray:
        ledger.saw(source)
        raise


def csv_rows(fh: IO[str], source: str, required: Iterable[str]) -> Iterator[tuple[str, dict[str, Any] | Rejection]]:
    """(locator, row) for each CSV record, or (locator, Rejection) for a record that cannot be read;
    each counted as seen in the ingest ledger."""
    return counted(source, _csv_rows(fh, source, required))


def _csv_rows(fh: IO[str], source: str, required: Iterable[str]) -> Iterator[tuple[str, dict[str, Any] | Rejection]]:
    """(locator, row) for each CSV record, or (locator, Rejection) for a record that cannot be read.

    Quoted fields may span lines (the locator is the record's first line). Broken quoting shows up
    as too many or too few cells and is rejected; an oversized field is rejected by the csv module.
    """
    csv.field_size_limit(min(sys.maxsize, MAX_FIELD_CHARS * 4))
    lines = _CountedLines(fh)  # csv's own line_num is not advanced by a row that raised
    reader = csv.DictReader(lines, restval=_MISSING)
    try:
        fieldnames = reader.fieldnames
    except csv.Error as exc:
        raise FieldError(f"{source} has an unreadable header: {exc}") from None
    required = tuple(required)
    missing = [c for c in required if c not in (fieldnames or [])]
    if missing:
        raise FieldError(f"{source} has no {','.join(required)} header (missing {', '.join(missing)}; got {fieldnames})")
    while True:
        line = lines.count + 1
        try:
            row = next(reader)
        except StopIteration:
            yield from lines.take_overlong(source)
            return
        except csv.Error as exc:
            yield from lines.take_overlong(source)
            yield f"line {line}", Rejection.of(source, f"line {line}", f"unreadable CSV: {exc}", "")
            continue
        if lines.overlong:
            yield from lines.take_overlong(source)
            line = lines.count  # the row is the last line read (a multi-line row after a long line: its end)
        if None in row:  # more cells than header columns: quoting is broken
            yield f"line {line}", Rejection.of(source, f"line {line}", "more cells than header columns (broken quoting?)",
                                               repr(row))
            continue
        if _MISSING in row.values():  # fewer cells: typically a quote left open to the end
            yield f"line {line}", Rejection.of(source, f"line {line}", "fewer cells than header columns (broken quoting?)",
                                               repr({k: v for k, v in row.items() if v is not _MISSING}))
            continue
        yield f"line {line}", row


MAX_CSV_LINE_CHARS = 16 * 1024 * 1024


class _CountedLines:
    """The text file's lines, counted as the csv reader pulls them (quoted fields span lines).

    A line is never buffered past ``max_chars``: the rest of it is read in chunks and dropped, the
    csv reader sees an empty line (which it skips), and the line is reported by `take_overlong`."""

    def __init__(self, fh: IO[str], max_chars: int = MAX_CSV_LINE_CHARS):
        self._fh = fh
        self.count = 0
        self.max_chars = max_chars
        self.overlong: list[tuple[int, str]] = []  # (line number, head)

    def __iter__(self) -> _CountedLines:
        return self

    def __next__(self) -> str:
        line = self._fh.readline(self.max_chars + 1)
        if not line:
            raise StopIteration
        self.count += 1
        if len(line) > self.max_chars and not line.endswith("\n"):
            head = line[:EXCERPT_CHARS]
            while (rest := self._fh.readline(1 << 20)) and not rest.endswith("\n"):
                pass
            self.overlong.append((self.count, head))
            return "\n"
        return line

    def take_overlong(self, source: str) -> Iterator[tuple[str, Rejection]]:
        for number, head in self.overlong:
            yield f"line {number}", Rejection.of(source, f"line {number}",
                                                 f"line longer than {self.max_chars} characters", head)
        self.overlong = []


class NotAnArray(ValueError):
    """The file holds one JSON value that is not an array."""

    def __init__(self, value: Any):
        self.value = value
        super().__init__(f"expected a JSON array or JSON lines, got a JSON {type(value).__name__}")


MAX_JSON_DEPTH = 64  # real exports nest under 10 levels; deeper is hostile (and breaks repr and json.dumps later)
TOO_DEEP = f"JSON nested deeper than {MAX_JSON_DEPTH} levels; refused"
_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]|"')  # a whole string, a bracket, or an open string


def json_depth(text: str, start: int = 0, end: int | None = None) -> int:
    """The deepest bracket nesting of the JSON text[start:end] (strings skipped), without recursion."""
    end = len(text) if end is None else end
    if text.count("[", start, end) + text.count("{", start, end) <= MAX_JSON_DEPTH:
        return 0  # cheap bound: fewer brackets than the limit cannot nest past it
    depth = deepest = 0
    for match in _JSON_TOKEN.finditer(text, start, end):
        token = match.group()
        if token in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif token in "]}":
            depth -= 1
    return deepest


class ValueEnd:
    """Finds where the JSON value starting at a bracket ends, resumably across chunks and in linear
    time (each character is scanned once), so a too-deep record can be skipped without parsing it."""

    def __init__(self) -> None:
        self.scanned = 0  # characters after the value's start already scanned
        self.depth = 0

    def find(self, buf: str, pos: int) -> int | None:
        """End offset in buf of the value at buf[pos], or None when buf ends first."""
        for match in _JSON_TOKEN.finditer(buf, pos + self.scanned):
            token = match.group()
            if token == '"':  # a string that buf cuts: resume from its quote
                self.scanned = match.start() - pos
                return None
            if token in "[{":
                self.depth += 1
            elif token in "]}":
                self.depth -= 1
                if self.depth == 0:
                    return match.end()
        self.scanned = len(buf) - pos
        return None


class _Skipper:
    """Finds where a JSON value (an array, object or string) ends while it streams by, chunk after chunk,
    keeping nothing of it: how a record too large to buffer is skipped so the records after it are read.
    Strings are followed across chunk boundaries (an escape cut by a chunk's end included)."""

    _OUTSIDE = re.compile(r'[\[\]{}"]')
    _STRING_BODY = re.compile(r'[^"\\]*(?:\\.[^"\\]*)*')

    def __init__(self) -> None:
        self.depth = 0
        self.in_string = False
        self.carry = ""  # a backslash that ended the previous chunk, inside a string

    def feed(self, text: str) -> int | None:
        """Offset in ``text`` just past the value's end, or None when the value goes on past it."""
        if self.carry:
            text = self.carry + text
            shift = len(self.carry)
            self.carry = ""
        else:
            shift = 0
        pos = 0
        while pos < len(text):
            if self.in_string:
                pos = self._STRING_BODY.match(text, pos).end()
                if pos >= len(text):
                    return None
                if text[pos] == "\\":  # a backslash with nothing after it yet
                    self.carry = text[pos:]
                    return None
                self.in_string = False  # the closing quote
                pos += 1
                if self.depth == 0:
                    return pos - shift
                continue
            match = self._OUTSIDE.search(text, pos)
            if match is None:
                return None
            token, pos = match.group(), match.end()
            if token == '"':
                self.in_string = True
            elif token in "[{":
                self.depth += 1
            else:
                self.depth -= 1
                if self.depth <= 0:
                    return pos - shift
        return None


_DECODER = json.JSONDecoder(strict=False)  # raw control characters (a NUL, a tab) inside strings: the record
# sanitises them; refusing them would lose the record and, inside an array, every record after it


def decode_json(text: str) -> Any:
    """json.loads with bounded depth: ValueError(TOO_DEEP) for hostile nesting, JSONDecodeError as usual.
    Raw control characters inside strings are accepted (records sanitise their text)."""
    if json_depth(text) > MAX_JSON_DEPTH:
        raise ValueError(TOO_DEEP)
    try:
        return _DECODER.decode(text)
    except RecursionError:  # pragma: no cover - json_depth caught it first
        raise ValueError(TOO_DEEP) from None


_WHITESPACE = re.compile(r"[ \t\r\n]*")


def skip_ws(buf: str, pos: int) -> int:
    """Past JSON whitespace, at C speed (a gigabyte of padding took minutes one character at a time)."""
    return _WHITESPACE.match(buf, pos).end()


def json_records(fh: IO[str], source: str, start_at: str | None = None, chunk: int = 1 << 20,
                 array_only: bool = False) -> Iterator[tuple[str, Any]]:
    """`_json_records`, each record (or Rejection) counted as seen in the ingest ledger."""
    return counted(source, _json_records(fh, source, start_at, chunk, array_only))


def _json_records(fh: IO[str], source: str, start_at: str | None = None, chunk: int = 1 << 20,
                  array_only: bool = False) -> Iterator[tuple[str, Any]]:
    """(locator, value) per record of a JSON array or of JSON lines, reading ``chunk`` characters at a time.

    ``start_at`` skips a JavaScript prefix up to and including that marker (``window.YTD.x.part0 =``). A
    single JSON value that is not an array raises NotAnArray (its value attached), and with
    ``array_only`` any non-array does (JSON lines are not accepted). An unparseable line of JSON lines is
    yielded as a Rejection and reading goes on. Inside an array, a record (object or array) is delimited
    by its brackets before it is parsed, so a record that is not valid JSON, nested deeper than
    MAX_JSON_DEPTH or larger than MAX_JSON_RECORD_CHARS (skipped as it streams by, never buffered whole)
    is one Rejection and the records after it are read; only a break the brackets cannot get past (the
    file ends inside a record, a bare value that is not JSON) ends the file, as a Rejection. Data after
    the array's end is one Rejection too (a second array appended, garbage): never dropped in silence.
    """
    decoder = _DECODER
    buf = fh.read(chunk)
    eof = len(buf) < chunk
    pos = 0
    if start_at is not None:  # parse what follows the marker
        while buf.find(start_at) < 0 and not eof and len(buf) < 65536:  # the prefix is short
            more = fh.read(chunk)
            eof = len(more) < chunk
            buf += more
        found = buf.find(start_at)
        if found < 0:
            raise FieldError(f"{source} does not contain {start_at!r}: not the expected file")
        pos = found + len(start_at)
    if buf[pos:pos + 1] == "\ufeff":
        pos += 1
    start = pos
    pos = skip_ws(buf, pos)
    if pos >= len(buf):
        return
    if buf[pos] != "[" and array_only:
        rest = buf[pos:] + ("" if eof else fh.read(MAX_JSON_RECORD_CHARS))
        if json_depth(rest) > MAX_JSON_DEPTH:
            yield "file", Rejection.of(source, "file", TOO_DEEP, rest[:500])
            return
        try:
            value = decoder.raw_decode(rest)[0]
        except json.JSONDecodeError as exc:
            yield "file", Rejection.of(source, "file", f"not JSON: {exc.msg}", rest[:500])
            return
        raise NotAnArray(value)
    if buf[pos] != "[":
        yield from _json_lines(buf[start:], fh, source, decoder, eof, chunk)
        return
    pos += 1
    index = 0
    while True:
        pos = skip_ws(buf, pos)
        while pos >= len(buf) and not eof:
            more = fh.read(chunk)
            eof = len(more) < chunk
            buf, pos = buf[pos:] + more, 0
            pos = skip_ws(buf, pos)
        if pos >= len(buf):
            yield f"record {index + 1}", Rejection.of(source, f"record {index + 1}", "the JSON array is not closed (truncated file?)", "")
            return
        if buf[pos] == "]":
            yield from _after_array(buf[pos + 1:], fh, source, chunk, eof)
            return
        if index and buf[pos] == ",":
            pos += 1
            continue
        locator = f"record {index + 1}"
        end: int | None = None
        if buf[pos] in "[{":  # find the record's end first: linear, and the depth is known before parsing
            finder = ValueEnd()
            while (end := finder.find(buf, pos)) is None and not eof and len(buf) - pos <= MAX_JSON_RECORD_CHARS:
                more = fh.read(chunk)
                eof = len(more) < chunk
                buf, pos = buf[pos:] + more, 0
            if end is None and not eof:  # too large to buffer: skip to its end as it streams by
                index += 1
                head = buf[pos:pos + 500]
                rest = skip_value(buf[pos:], fh, chunk)
                if rest is None:
                    yield locator, Rejection.of(source, locator, f"record larger than {MAX_JSON_RECORD_CHARS} characters,"
                                                " and the file ends inside it (truncated file?)", head)
                    return
                yield locator, Rejection.of(source, locator, f"record larger than {MAX_JSON_RECORD_CHARS} characters; "
                                            "skipped", head)
                buf, pos, eof = rest[0], 0, rest[1]
                continue
            if end is not None and json_depth(buf, pos, end) > MAX_JSON_DEPTH:
                index += 1
                yield locator, Rejection.of(source, locator, TOO_DEEP, buf[pos:pos + 500])
                pos = end
                continue
        refused: Rejection | None = None
        while True:
            try:
                value, parsed_end = decoder.raw_decode(buf, pos)
                if end is not None and parsed_end != end:  # brackets and the parser disagree: not one value
                    raise json.JSONDecodeError("extra data inside the record", buf, parsed_end)
                break
            except json.JSONDecodeError as exc:
                if end is not None:  # the brackets delimit the broken record: refuse it, read on after it
                    refused = Rejection.of(source, locator, f"not JSON: {exc.msg}", buf[pos:min(end, pos + 500)])
                    break
                if eof or len(buf) - pos > MAX_JSON_RECORD_CHARS:
                    reason = (f"record larger than {MAX_JSON_RECORD_CHARS} characters" if not eof
                              else f"not JSON: {exc.msg} (the rest of the file is unreadable)")
                    yield locator, Rejection.of(source, locator, reason, buf[pos:pos + 500])
                    return
                more = fh.read(chunk)
                eof = len(more) < chunk
                buf, pos = buf[pos:] + more, 0
        index += 1
        if refused is None:
            yield locator, value
            pos = parsed_end
        else:
            yield locator, refused
            pos = end  # type: ignore[assignment]  # set whenever a record is refused
        if pos > chunk:
            buf, pos = buf[pos:], 0


def skip_value(start: str, fh: IO[str], chunk: int) -> tuple[str, bool] | None:
    """Stream past the value that ``start`` begins (and fh continues), keeping none of it: (what follows
    it in the chunk it ends in, whether that chunk was the file's last), or None when the file ends first."""
    skipper = _Skipper()
    at = skipper.feed(start)
    if at is not None:
        return start[at:], False
    while True:
        text = fh.read(chunk)
        eof = len(text) < chunk
        at = skipper.feed(text)
        if at is not None:
            return text[at:], eof
        if eof:
            return None


_TRAILER = re.compile(r"[ \t\r\n;]*")  # whitespace, and a JavaScript file's closing semicolon


def _after_array(rest: str, fh: IO[str], source: str, chunk: int, eof: bool) -> Iterator[tuple[str, Any]]:
    """What follows the array's closing bracket: nothing (or a semicolon), else one Rejection for it,
    read to the end in chunks (a second array appended, trailing garbage) with its head as the excerpt."""
    while True:
        at = _TRAILER.match(rest).end()
        if at < len(rest):
            head = rest[at:at + 500]
            while not eof:
                eof = len(fh.read(chunk)) < chunk
            yield "after the array", Rejection.of(source, "after the array",
                                                  "data after the end of the JSON array (appended or garbage); ignored",
                                                  head)
            return
        if eof:
            return
        rest = fh.read(chunk)
        eof = len(rest) < chunk


def _json_lines(first: str, fh: IO[str], source: str, decoder: json.JSONDecoder, eof: bool,
                chunk: int) -> Iterator[tuple[str, Any]]:
    """JSON lines, or one (possibly pretty-printed) JSON value that is not an array."""
    head = first.lstrip(" \t\r\n")
    first_line = head.split("\n", 1)[0] if "\n" in head or eof else None
    try:
        line_ok = first_line is not None and decode_json(first_line) is not None
    except ValueError:  # JSONDecodeError or too deep
        line_ok = False
    if not line_ok:  # maybe one pretty-printed value: read it whole (bounded) and look
        parts = [first]
        size = len(first)
        while not eof and size <= MAX_JSON_RECORD_CHARS:
            more = fh.read(chunk)
            eof = len(more) < chunk
            parts.append(more)
            size += len(more)
        first = "".join(parts)
        try:
            at = skip_ws(first, 0)
            if json_depth(first, at) <= MAX_JSON_DEPTH:
                value, end = decoder.raw_decode(first, at)
                trailer = first[end:].strip()
                if eof and not trailer:
                    raise NotAnArray(value)
                if eof and "\n" not in trailer:  # one value, then garbage (not a second line of JSON lines)
                    yield "after the value", Rejection.of(source, "after the value",
                                                          "data after the end of the JSON value (appended or garbage); "
                                                          "ignored", trailer[:500])
                    raise NotAnArray(value)
        except json.JSONDecodeError:
            pass
    for number, text in enumerate(_lines(first, fh, chunk, eof), start=1):
        locator = f"line {number}"
        if isinstance(text, _LongLine):
            yield locator, Rejection.of(source, locator, f"line longer than {MAX_JSON_RECORD_CHARS} characters",
                                        text.head)
            continue
        if not text.strip():
            continue
        try:
            yield locator, decode_json(text)
        except json.JSONDecodeError as exc:
            yield locator, Rejection.of(source, locator, f"not JSON: {exc.msg}", text)
        except ValueError as exc:
            yield locator, Rejection.of(source, locator, str(exc), text)


class _LongLine:
    """A line longer than MAX_JSON_RECORD_CHARS: only its head was kept; the rest was read and dropped."""

    def __init__(self, head: str):
        self.head = head


def _lines(first: str, fh: IO[str], chunk: int, eof: bool,
           max_chars: int = MAX_JSON_RECORD_CHARS) -> Iterator[str | _LongLine]:
    """The lines of ``first`` + the rest of fh, in linear time: each chunk is searched for newlines
    once, and a line is never buffered past ``max_chars`` (its overflow is skipped as it streams by)."""
    pending: list[str] = []  # pieces of the current, unfinished line
    pending_len = 0
    overflow: _LongLine | None = None
    text = first
    while True:
        at = 0
        while (nl := text.find("\n", at)) >= 0:
            piece = text[at:nl]
            if overflow is not None:
                yield overflow
                overflow = None
            elif pending_len + len(piece) > max_chars:
                yield _LongLine(("".join(pending) + piece[:EXCERPT_CHARS])[:EXCERPT_CHARS])
            elif pending:
                yield "".join(pending) + piece
            else:
                yield piece
            pending, pending_len, at = [], 0, nl + 1
        rest = text[at:]
        if overflow is None and pending_len + len(rest) > max_chars:
            overflow = _LongLine(("".join(pending) + rest[:EXCERPT_CHARS])[:EXCERPT_CHARS])
            pending, pending_len = [], 0
        elif overflow is None and rest:
            pending.append(rest)
            pending_len += len(rest)
        if eof:
            if overflow is not None:
                yield overflow
            elif pending:
                yield "".join(pending)
            return
        text = fh.read(chunk)
        eof = len(text) < chunk


def split_list(value: str | None) -> tuple[str, ...]:
    """The IO archive's list-like strings: ``[a, b]``, ``['a', 'b']`` or ``[]``."""
    if not value:
        return ()
    text = value.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    items = (item.strip().strip("'\"").strip() for item in text.split(","))
    return tuple(item for item in items if item)
