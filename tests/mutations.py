"""Deterministic mutators that damage an export file the way transit or buggy exporters do (issue 24).

Each mutator takes the file's bytes and a seeded `random.Random` and returns a `Mutated`: the damaged
bytes, how many units of the intact file the damage may cost (``damaged``: 1 for one record's field,
0 for a mutation that adds a unit, ``None`` for structural damage whose cost has no bound, such as a
truncated file), and a note saying what was done (it names the case when an assertion fails). A
mutator that does not apply to the file (no UTF-8 sequence to cut, no count field) returns None.

Field-level damage goes through the parsed file and back (JSON re-serialised in the file's style, CSV
re-written with the file's quoting), with a marker replaced by raw bytes where the damage is not
valid text (an invalid UTF-8 byte, a raw NUL, NaN, a 10,000-deep value), so the rest of the file is
the same data. The CAR mutators walk the CAR framing (varint-length sections of CID + block).
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from export_fixtures import varint

MARK = "@@FUZZ-MARK@@"
DEEP = 10_000
HUGE_RECORD_CHARS = 17 * 1024 * 1024

INTERESTING = ("note", "url", "display_name", "displayName", "username", "acct", "handle", "description", "avatar",
               "created_at", "createdAt", "indexedAt", "followers_count", "following_count", "statuses_count",
               "followersCount", "followsCount", "postsCount", "name", "id", "did", "text", "uri", "link_karma",
               "created_utc", "icon_img", "user_display_name", "user_screen_name", "user_profile_description",
               "user_profile_url", "follower_count", "following_count", "account_creation_date", "tweet_text",
               "tweet_time", "userid", "tweetid", "retweet_tweetid")
HUGE_VALUES: tuple[tuple[str, bytes], ...] = (("2**70", str(2**70).encode()), ("1e19", b"1e19"), ("-1", b"-1"),
                                              ("1e308", b"1e308"), ("NaN", b"NaN"), ('"NaN"', b'"NaN"'))
EDGE_DATES = ("0001-01-01 00:00:00+05:00", "9999-12-31 23:59:59-05:00", "0001-01-01T00:00:00+05:00",
              "9999-12-31T23:59:59-05:00")
WRONG_TYPES: tuple[tuple[str, Any], ...] = (("number", 12345), ("list", [1, "two"]), ("object", {"a": {"b": 1}}),
                                            ("null", None), ("bool", True))
BAD_UTF8 = (b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80", b"\xf4\x90\x80\x80")


@dataclass(frozen=True)
class Mutated:
    data: bytes
    damaged: int | None  # units of the intact file this may cost; None: unbounded (structural)
    note: str


Mutator = Callable[[bytes, random.Random], "Mutated | None"]


# --- byte-level damage (any format) ----------------------------------------------------------------

def truncate_random(data: bytes, rng: random.Random) -> Mutated | None:
    if len(data) < 2:
        return None
    at = rng.randrange(1, len(data))
    return Mutated(data[:at], None, f"truncated at byte {at} of {len(data)}")


def truncate_mid_record(data: bytes, rng: random.Random) -> Mutated | None:
    """A cut inside the body, away from the first and last 10% (where the framing is)."""
    if len(data) < 20:
        return None
    at = rng.randrange(len(data) // 10, len(data) - len(data) // 10)
    return Mutated(data[:at], None, f"truncated mid-file at byte {at} of {len(data)}")


def truncate_mid_utf8(data: bytes, rng: random.Random) -> Mutated | None:
    leads = [i for i in range(len(data) - 1) if data[i] >= 0xC2 and 0x80 <= data[i + 1] <= 0xBF]
    if not leads:
        return None
    at = rng.choice(leads) + 1
    return Mutated(data[:at], None, f"truncated inside a UTF-8 sequence at byte {at}")


def byte_flips(data: bytes, rng: random.Random) -> Mutated | None:
    if not data:
        return None
    out = bytearray(data)
    spots = sorted(rng.sample(range(len(data)), min(len(data), rng.randint(1, 3))))
    for at in spots:
        out[at] ^= rng.randrange(1, 256)
    return Mutated(bytes(out), None, f"bytes flipped at {spots}")


def trailing_garbage(data: bytes, rng: random.Random) -> Mutated | None:
    garbage = rng.choice([bytes(rng.randrange(256) for _ in range(3)), b"\x00\x00\x00", b"}]x", b"\n{\"broken\": "])
    return Mutated(data + garbage, 0, f"trailing garbage {garbage!r}")


# --- JSON ------------------------------------------------------------------------------------------

@dataclass
class _JsonFile:
    lines: list[str] | None  # JSON lines (raw text per line), or None for one document
    doc: Any
    pretty: bool

    @classmethod
    def parse(cls, data: bytes) -> _JsonFile | None:
        text = data.decode("utf-8-sig")
        body = text.strip()
        try:
            return cls(None, json.loads(body), "\n" in body)
        except json.JSONDecodeError:
            pass
        try:
            lines = text.split("\n")
            for line in lines:
                if line.strip():
                    json.loads(line)
            return cls(lines, None, False)
        except json.JSONDecodeError:
            return None

    def records(self) -> list[Any]:
        """The list the file's records live in: the array, a wrapped response's array, or []."""
        if self.lines is not None:
            return []
        if isinstance(self.doc, list):
            return self.doc
        if isinstance(self.doc, dict):
            lists = [v for v in self.doc.values() if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)]
            if lists:
                return max(lists, key=len)
        return []

    def record_slots(self) -> list[tuple[Callable[[], Any], Callable[[Any], None]]]:
        """(get, set) for each record of the file: JSON lines, array elements, or the lone document."""
        if self.lines is not None:
            idx = [i for i, line in enumerate(self.lines) if line.strip()]
            return [(lambda i=i: json.loads(self.lines[i]), lambda v, i=i: self.lines.__setitem__(i, _dumps(v, False)))
                    for i in idx]
        records = self.records()
        if records:
            return [(lambda i=i: records[i], lambda v, i=i: records.__setitem__(i, v)) for i in range(len(records))]

        def set_doc(v: Any) -> None:
            self.doc = v
        return [(lambda: self.doc, set_doc)]

    def dump(self) -> bytes:
        if self.lines is not None:
            return "\n".join(self.lines).encode()
        return (_dumps(self.doc, self.pretty) + "\n").encode()


def _dumps(value: Any, pretty: bool) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2 if pretty else None)


def _leaves(record: Any, depth: int = 2) -> list[tuple[list[Any], Any]]:
    """(path, value) of each scalar field of the record, up to ``depth`` levels of objects."""
    out: list[tuple[list[Any], Any]] = []
    if not isinstance(record, dict):
        return out
    for key, value in record.items():
        if isinstance(value, dict) and depth > 1:
            out += [([key, *path], v) for path, v in _leaves(value, depth - 1)]
        elif not isinstance(value, (dict, list)):
            out.append(([key], value))
    return out


def _pick_leaf(leaves: list[tuple[list[Any], Any]], rng: random.Random) -> tuple[list[Any], Any]:
    nice = [leaf for leaf in leaves if str(leaf[0][-1]) in INTERESTING]
    return rng.choice(nice if nice and rng.random() < 0.8 else leaves)


def _set_path(record: Any, path: list[Any], value: Any) -> None:
    for key in path[:-1]:
        record = record[key]
    record[path[-1]] = value


def _json_field(data: bytes, rng: random.Random, want: Callable[[Any, Any], bool],
                make: Callable[[Any], tuple[Any, bytes | None, str]]) -> Mutated | None:
    """Replace one field (``want(key, value)``) of one record by ``make(old)``: (value, raw bytes for the
    marker or None, note)."""
    parsed = _JsonFile.parse(data)
    if parsed is None:
        return None
    slots = parsed.record_slots()
    order = list(range(len(slots)))
    rng.shuffle(order)
    for i in order:
        get, put = slots[i]
        record = get()
        leaves = [leaf for leaf in _leaves(record) if want(leaf[0][-1], leaf[1])]
        if not leaves:
            continue
        path, old = _pick_leaf(leaves, rng)
        value, raw, note = make(old)
        _set_path(record, path, MARK if raw is not None else value)
        put(record)
        out = parsed.dump()
        if raw is not None:
            out = out.replace(json.dumps(MARK).encode(), raw, 1)
        return Mutated(out, 1, f"record {i + 1} field {'.'.join(map(str, path))}: {note}")
    return None


def _is_text(_key: Any, value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def _any(_key: Any, value: Any) -> bool:
    return True


def _is_count(key: Any, value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) or str(key).endswith(("count", "Count", "karma"))


def _is_date(key: Any, value: Any) -> bool:
    k = str(key).lower()
    return ("created" in k or "date" in k or k.endswith("at") or "time" in k) and isinstance(value, (str, int, float))


def _json_insert(data: bytes, rng: random.Random, insert: bytes, what: str) -> Mutated | None:
    """``insert`` (raw bytes) put at a random place inside one text field's value."""
    def make(old: str) -> tuple[Any, bytes, str]:
        at = rng.randrange(len(old) + 1)
        raw = json.dumps(old[:at], ensure_ascii=False).encode()[:-1] + insert + json.dumps(old[at:], ensure_ascii=False).encode()[1:]
        return None, raw, what
    return _json_field(data, rng, _is_text, make)


def json_bad_utf8(data: bytes, rng: random.Random) -> Mutated | None:
    bad = rng.choice(BAD_UTF8)
    return _json_insert(data, rng, bad, f"invalid UTF-8 {bad!r} inserted")


def json_nul(data: bytes, rng: random.Random) -> Mutated | None:
    escaped = rng.random() < 0.5
    return _json_insert(data, rng, b"\\u0000" if escaped else b"\x00",
                        f"NUL ({'escaped' if escaped else 'raw byte'}) inserted")


def json_wrong_type(data: bytes, rng: random.Random) -> Mutated | None:
    name, value = rng.choice(WRONG_TYPES)
    return _json_field(data, rng, _any, lambda old: (value, None, f"replaced by a JSON {name}"))


def json_huge_value(data: bytes, rng: random.Random) -> Mutated | None:
    name, raw = rng.choice(HUGE_VALUES)
    return _json_field(data, rng, _is_count, lambda old: (None, raw, f"replaced by {name}"))


def json_edge_date(data: bytes, rng: random.Random) -> Mutated | None:
    value = rng.choice(EDGE_DATES)
    return _json_field(data, rng, _is_date, lambda old: (value, None, f"replaced by {value!r}"))


def json_deep(data: bytes, rng: random.Random) -> Mutated | None:
    kind = rng.choice(["list", "object"])
    raw = (b"[" * DEEP + b"]" * DEEP) if kind == "list" else (b'{"a":' * DEEP + b"1" + b"}" * DEEP)
    return _json_field(data, rng, _any, lambda old: (None, raw, f"replaced by a {kind} nested {DEEP} deep"))


def json_duplicate(data: bytes, rng: random.Random) -> Mutated | None:
    parsed = _JsonFile.parse(data)
    if parsed is None:
        return None
    if parsed.lines is not None:
        idx = [i for i, line in enumerate(parsed.lines) if line.strip()]
        i = rng.choice(idx)
        parsed.lines.insert(i + 1, parsed.lines[i])
        return Mutated(parsed.dump(), 0, f"line {i + 1} duplicated")
    records = parsed.records()
    if not records:
        return None
    i = rng.randrange(len(records))
    records.insert(i + 1, json.loads(json.dumps(records[i])))
    return Mutated(parsed.dump(), 0, f"record {i + 1} duplicated")


def json_huge_record(data: bytes, rng: random.Random) -> Mutated | None:
    """A record over the 16 MB record limit inserted among the others (a copy of one, with one text field
    made 17 MB): it is refused, every other record is kept."""
    parsed = _JsonFile.parse(data)
    if parsed is None:
        return None
    records = parsed.records()
    if parsed.lines is None and not records:
        return None
    slots = parsed.record_slots()
    i = rng.randrange(len(slots))
    record = json.loads(json.dumps(slots[i][0]()))
    leaves = [leaf for leaf in _leaves(record) if _is_text(*leaf)]
    path = _pick_leaf(leaves, rng)[0] if leaves else ["padding"]
    if not isinstance(record, dict):
        record = {"padding": record}
    _set_path(record, path, MARK)
    text = _dumps(record, False).replace(json.dumps(MARK), json.dumps("x" * HUGE_RECORD_CHARS))
    if parsed.lines is not None:
        parsed.lines.insert(i + 1, MARK)
        return Mutated(parsed.dump().replace(MARK.encode(), text.encode()), 0, f"17 MB line after line {i + 1}")
    records.insert(i + 1, MARK)
    return Mutated(parsed.dump().replace(json.dumps(MARK).encode(), text.encode(), 1), 0,
                   f"17 MB record after record {i + 1} (field {'.'.join(map(str, path))})")


# --- CSV -------------------------------------------------------------------------------------------

@dataclass
class _CsvFile:
    rows: list[list[str]]
    encoding: str
    quote_all: bool
    newline: str

    @classmethod
    def parse(cls, data: bytes) -> _CsvFile:
        try:
            text, encoding = data.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            text, encoding = data.decode("cp1252", errors="replace"), "cp1252"
        return cls(list(csv.reader(io.StringIO(text, newline=""))), encoding, text.startswith('"'),
                   "\r\n" if "\r\n" in text[:10000] else "\n")

    def dump(self) -> bytes:
        out = io.StringIO()
        writer = csv.writer(out, quoting=csv.QUOTE_ALL if self.quote_all else csv.QUOTE_MINIMAL,
                            lineterminator=self.newline)
        writer.writerows(self.rows)
        return out.getvalue().encode(self.encoding, errors="replace")


def _csv_field(data: bytes, rng: random.Random, want: Callable[[str, str], bool],
               make: Callable[[str], tuple[str, bytes | None, str]]) -> Mutated | None:
    table = _CsvFile.parse(data)
    if len(table.rows) < 2:
        return None
    header = table.rows[0]
    body = [i for i in range(1, len(table.rows)) if len(table.rows[i]) == len(header)]
    rng.shuffle(body)
    for i in body:
        cells = [(c, name) for c, name in enumerate(header) if want(name, table.rows[i][c])]
        if not cells:
            continue
        nice = [cell for cell in cells if cell[1] in INTERESTING]
        c, name = rng.choice(nice if nice and rng.random() < 0.8 else cells)
        value, raw, note = make(table.rows[i][c])
        table.rows[i][c] = MARK if raw is not None else value
        out = table.dump()
        if raw is not None:
            out = out.replace(MARK.encode(), raw, 1)
        return Mutated(out, 1, f"row {i} column {name}: {note}")
    return None


def _csv_text(_name: str, value: str) -> bool:
    return bool(value)


def _csv_count(name: str, value: str) -> bool:
    return name.endswith("_count") or (value.isdigit() and len(value) < 12)


def _csv_date(name: str, value: str) -> bool:
    return "date" in name or "time" in name


def csv_bad_utf8(data: bytes, rng: random.Random) -> Mutated | None:
    bad = rng.choice(BAD_UTF8)

    def make(old: str) -> tuple[str, bytes, str]:
        at = rng.randrange(len(old) + 1)
        return "", old[:at].replace('"', '""').encode() + bad + old[at:].replace('"', '""').encode(), f"invalid UTF-8 {bad!r}"
    return _csv_field(data, rng, _csv_text, make)


def csv_nul(data: bytes, rng: random.Random) -> Mutated | None:
    def make(old: str) -> tuple[str, bytes, str]:
        at = rng.randrange(len(old) + 1)
        return "", old[:at].replace('"', '""').encode() + b"\x00" + old[at:].replace('"', '""').encode(), "NUL inserted"
    return _csv_field(data, rng, _csv_text, make)


def csv_wrong_type(data: bytes, rng: random.Random) -> Mutated | None:
    name, value = rng.choice(WRONG_TYPES)
    text = json.dumps(value)
    return _csv_field(data, rng, lambda n, v: True, lambda old: (text, None, f"replaced by a JSON {name} {text}"))


def csv_huge_value(data: bytes, rng: random.Random) -> Mutated | None:
    name, raw = rng.choice(HUGE_VALUES)
    return _csv_field(data, rng, _csv_count, lambda old: (raw.decode().strip('"'), None, f"replaced by {name}"))


def csv_edge_date(data: bytes, rng: random.Random) -> Mutated | None:
    value = rng.choice(EDGE_DATES)
    return _csv_field(data, rng, _csv_date, lambda old: (value, None, f"replaced by {value!r}"))


def csv_deep(data: bytes, rng: random.Random) -> Mutated | None:
    text = "[" * DEEP + "]" * DEEP
    return _csv_field(data, rng, lambda n, v: True, lambda old: (text, None, f"replaced by a list nested {DEEP} deep"))


def csv_duplicate(data: bytes, rng: random.Random) -> Mutated | None:
    table = _CsvFile.parse(data)
    if len(table.rows) < 2:
        return None
    i = rng.randrange(1, len(table.rows))
    table.rows.insert(i + 1, list(table.rows[i]))
    return Mutated(table.dump(), 0, f"row {i} duplicated")


def csv_extra_cells(data: bytes, rng: random.Random) -> Mutated | None:
    table = _CsvFile.parse(data)
    if len(table.rows) < 2:
        return None
    i = rng.randrange(1, len(table.rows))
    table.rows[i] += ["extra"] * rng.randint(1, 3)
    return Mutated(table.dump(), 1, f"row {i} given extra cells")


def csv_open_quote(data: bytes, rng: random.Random) -> Mutated | None:
    """A closing quote dropped (or an opening one added): the field runs on into the following rows."""
    table = _CsvFile.parse(data)
    if len(table.rows) < 2:
        return None
    i = rng.randrange(1, len(table.rows))
    c = rng.randrange(len(table.rows[i]))
    table.rows[i][c] = MARK
    out = table.dump()
    mark = f'"{MARK}"'.encode() if table.quote_all else MARK.encode()
    return Mutated(out.replace(mark, b'"unclosed value', 1), None, f"row {i} cell {c}: quote left open")


def csv_truncated_header(data: bytes, rng: random.Random) -> Mutated | None:
    end = data.find(b"\n")
    if end < 2:
        return None
    at = rng.randrange(1, end)
    return Mutated(data[:at] + data[end:], None, f"header cut at byte {at} of {end}")


# --- CAR (Bluesky repository exports) --------------------------------------------------------------

def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data):
            raise ValueError("varint runs past the end")
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at += 1
        if not byte & 0x80:
            return value, at
        shift += 7


def car_sections(data: bytes) -> tuple[tuple[int, int], list[tuple[int, int, int]]]:
    """((header start, header end), [(block start, data start, block end)]) of a CAR v1 file."""
    size, at = _varint(data, 0)
    header = (at, at + size)
    at += size
    blocks = []
    while at < len(data):
        size, body = _varint(data, at)
        end = body + size
        if data[body] == 0x12 and data[body + 1] == 0x20:  # CIDv0: sha2-256 multihash
            cid_end = body + 34
        else:
            _, p = _varint(data, body)  # version
            _, p = _varint(data, p)  # codec
            _, p = _varint(data, p)  # hash code
            length, p = _varint(data, p)
            cid_end = p + length
        blocks.append((at, cid_end, end))
        at = end
    return header, blocks


def car_truncated_block(data: bytes, rng: random.Random) -> Mutated | None:
    _, blocks = car_sections(data)
    if not blocks:
        return None
    i = rng.randrange(len(blocks))
    start, _, end = blocks[i]
    at = rng.randrange(start + 1, end)
    return Mutated(data[:at], None, f"cut inside block {i + 1} of {len(blocks)} at byte {at}")


def car_trailing_garbage(data: bytes, rng: random.Random) -> Mutated | None:
    garbage = bytes(rng.randrange(256) for _ in range(rng.choice([1, 3, 7])))
    return Mutated(data + garbage, 0, f"{len(garbage)} bytes of trailing garbage {garbage!r}")


def car_flipped_byte(data: bytes, rng: random.Random) -> Mutated | None:
    _, blocks = car_sections(data)
    blocks = [b for b in blocks if b[2] > b[1]]
    if not blocks:
        return None
    i = rng.randrange(len(blocks))
    _, body, end = blocks[i]
    at = rng.randrange(body, end)
    out = bytearray(data)
    out[at] ^= rng.randrange(1, 256)
    return Mutated(bytes(out), None, f"byte {at} flipped in block {i + 1}")


def _cbor_text(text: str) -> bytes:
    raw = text.encode()
    assert len(raw) < 24
    return bytes([0x60 | len(raw)]) + raw


def car_broken_header(data: bytes, rng: random.Random) -> Mutated | None:
    (start, end), _ = car_sections(data)
    roots = {"roots an integer": b"\x01", "roots a text": _cbor_text("bafy"), "roots empty": b"\x80",
             "roots a list of integers": b"\x82\x01\x02", "roots a map": b"\xa1" + _cbor_text("a") + b"\x01"}
    kind = rng.choice([*roots, "version 2", "header length past the end", "header cut", "header not CBOR"])
    body = data[end:]
    if kind in roots:
        header = b"\xa2" + _cbor_text("roots") + roots[kind] + _cbor_text("version") + b"\x01"
    elif kind == "version 2":
        header = data[start:end].replace(_cbor_text("version") + b"\x01", _cbor_text("version") + b"\x02")
    elif kind == "header length past the end":
        return Mutated(varint(len(data) + 100) + data[start:], None, kind)
    elif kind == "header cut":
        at = rng.randrange(start, end)
        return Mutated(data[:at], None, kind)
    else:
        header = bytes(rng.randrange(256) for _ in range(end - start))
    return Mutated(varint(len(header)) + header + body, None, kind)


# --- the registry ------------------------------------------------------------------------------------

COMMON: dict[str, Mutator] = {
    "truncate_random": truncate_random, "truncate_mid_record": truncate_mid_record,
    "truncate_mid_utf8": truncate_mid_utf8, "byte_flips": byte_flips, "trailing_garbage": trailing_garbage,
}
JSON_MUTATORS: dict[str, Mutator] = {
    **COMMON, "bad_utf8_field": json_bad_utf8, "nul_field": json_nul, "wrong_type": json_wrong_type,
    "huge_value": json_huge_value, "edge_date": json_edge_date, "deep_value": json_deep,
    "duplicate_record": json_duplicate, "huge_record": json_huge_record,
}
CSV_MUTATORS: dict[str, Mutator] = {
    **COMMON, "bad_utf8_field": csv_bad_utf8, "nul_field": csv_nul, "wrong_type": csv_wrong_type,
    "huge_value": csv_huge_value, "edge_date": csv_edge_date, "deep_value": csv_deep,
    "duplicate_record": csv_duplicate, "extra_cells": csv_extra_cells, "open_quote": csv_open_quote,
    "truncated_header": csv_truncated_header,
}
CAR_MUTATORS: dict[str, Mutator] = {
    "truncate_random": truncate_random, "byte_flips": byte_flips, "car_truncated_block": car_truncated_block,
    "car_trailing_garbage": car_trailing_garbage, "car_flipped_byte": car_flipped_byte,
    "car_broken_header": car_broken_header,
}
BY_SUFFIX: dict[str, dict[str, Mutator]] = {".json": JSON_MUTATORS, ".jsonl": JSON_MUTATORS, ".ndjson": JSON_MUTATORS,
                                            ".csv": CSV_MUTATORS, ".car": CAR_MUTATORS}


def mutators_for(suffix: str) -> dict[str, Mutator]:
    return BY_SUFFIX.get(suffix.lower(), {})
