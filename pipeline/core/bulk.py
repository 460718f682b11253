"""Bulk loading with PostgreSQL COPY: one round trip per batch, and rows streamed, never all in memory."""

from __future__ import annotations

import io
from datetime import datetime
from typing import Any, Iterable, Sequence

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


def copy_rows(conn: Connection, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    """COPY rows (tuples in column order) into table on the connection's own transaction."""
    buf = io.StringIO()
    count = 0
    for row in rows:
        buf.write("\t".join(copy_value(v) for v in row))
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
