"""Bulk loading with PostgreSQL COPY: one round trip per batch, and rows streamed, never all in memory."""

from __future__ import annotations

import io
import struct
from datetime import datetime
from typing import Any, Iterable, Sequence

import numpy as np
from sqlalchemy.engine import Connection


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _array(items: Iterable[Any]) -> str:
    quoted = ('"' + str(i).replace("\\", "\\\\").replace('"', '\\"') + '"' for i in items)
    return "{" + ",".join(quoted) + "}"


def copy_value(value: Any) -> str:
    """One field in COPY's text format (NULL is \\N; tabs, newlines and backslashes escaped)."""
    if value is None:
        return "\\N"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (tuple, list)):
        return _escape(_array(value))
    if isinstance(value, bool):
        return "t" if value else "f"
    return _escape(str(value))


def copy_line(row: Sequence[Any]) -> str:
    """One row in COPY's text format: the same text as ``copy_value`` per field, with plain strings and
    numbers (nearly all fields) formatted without its checks, which were most of the time of loading ten
    million planted accounts."""
    out = []
    for v in row:
        t = type(v)
        if t is str:
            out.append(_escape(v) if "\\" in v or "\t" in v or "\n" in v or "\r" in v else v)
        elif v is None:
            out.append("\\N")
        elif t is int or t is float:
            out.append(str(v))
        else:
            out.append(copy_value(v))
    return "\t".join(out)


def copy_rows(conn: Connection, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    """COPY rows (tuples in column order) into table on the connection's own transaction."""
    buf = io.StringIO()
    count = 0
    for row in rows:
        buf.write(copy_line(row))
        buf.write("\n")
        count += 1
    if not count:
        return 0
    buf.seek(0)
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        cursor.copy_expert(f"copy {table} ({', '.join(columns)}) from stdin", buf)
    finally:
        cursor.close()
    return count


# --- binary COPY -----------------------------------------------------------------------------------
# PostgreSQL's binary COPY format: no text formatting of floats (a real[] vector goes over the wire as
# its IEEE bytes, so it round-trips exactly), and no parsing on the server side.

_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_TRAILER = struct.pack(">h", -1)
FLOAT4_OID = 700
_VECTOR_ELEMENT = np.dtype([("len", ">i4"), ("value", ">f4")])


def _binary_field(value: Any, kind: str) -> bytes:
    if value is None:
        return b"\xff\xff\xff\xff"
    if kind == "text":
        data = str(value).encode("utf-8")
    elif kind == "jsonb":
        data = b"\x01" + str(value).encode("utf-8")  # jsonb's binary form: version 1, then the text
    elif kind == "float8":
        data = struct.pack(">d", float(value))
    elif kind == "int4":
        data = struct.pack(">i", int(value))
    elif kind == "bool":
        data = b"\x01" if value else b"\x00"
    elif kind == "real[]":
        vector = np.asarray(value, dtype=np.float32).reshape(-1)
        elements = np.empty(vector.shape[0], dtype=_VECTOR_ELEMENT)
        elements["len"] = 4
        elements["value"] = vector
        data = struct.pack(">iiiii", 1, 0, FLOAT4_OID, vector.shape[0], 1) + elements.tobytes()
    else:
        raise ValueError(f"binary COPY of {kind} is not supported")
    return struct.pack(">i", len(data)) + data


def binary_copy_payload(kinds: Sequence[str], rows: Iterable[Sequence[Any]]) -> tuple[bytes, int]:
    """The rows (tuples in column order) in PostgreSQL's binary COPY format; returns (payload, row count)."""
    parts = [_SIGNATURE]
    count = 0
    header = struct.pack(">h", len(kinds))
    for row in rows:
        parts.append(header)
        parts.extend(_binary_field(value, kind) for value, kind in zip(row, kinds))
        count += 1
    parts.append(_TRAILER)
    return b"".join(parts), count


def copy_binary(conn: Connection, table: str, columns: Sequence[tuple[str, str]], rows: Iterable[Sequence[Any]]) -> int:
    """Binary COPY of rows into table; ``columns`` are (name, kind) with kind text, jsonb, float8, int4,
    bool or real[]. Runs on the connection's own transaction."""
    payload, count = binary_copy_payload([kind for _, kind in columns], rows)
    if not count:
        return 0
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        cursor.copy_expert(f"copy {table} ({', '.join(name for name, _ in columns)}) from stdin with (format binary)",
                           io.BytesIO(payload))
    finally:
        cursor.close()
    return count


def copy_upsert(conn: Connection, table: str, columns: Sequence[tuple[str, str]], rows: Iterable[Sequence[Any]],
                conflict: str) -> int:
    """Binary COPY into a temporary staging table, then one ``insert ... select ... on conflict`` into
    ``table``: COPY's speed with the upsert semantics COPY itself lacks. ``conflict`` is the clause after
    ``on conflict`` (e.g. ``do nothing``, or ``(key) do update set ...``)."""
    rows = list(rows)
    if not rows:
        return 0
    names = ", ".join(name for name, _ in columns)
    stage = f"_stage_{table}"
    conn.exec_driver_sql(f"create temp table if not exists {stage} as select {names} from {table} with no data")
    conn.exec_driver_sql(f"truncate {stage}")
    count = copy_binary(conn, stage, columns, rows)
    conn.exec_driver_sql(f"insert into {table} ({names}) select {names} from {stage} on conflict {conflict}")
    conn.exec_driver_sql(f"truncate {stage}")
    return count
