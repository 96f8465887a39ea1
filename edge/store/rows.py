"""Statements whose rows are read by column name, on any connection: the daemon's (which
has `sqlite3.Row` set), an operator tool's, or a test's bare one."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def query(conn: sqlite3.Connection, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
    cursor = conn.cursor()
    cursor.row_factory = sqlite3.Row
    return cursor.execute(sql, params)


def chunks(items: Iterable[T], size: int = 500) -> Iterator[list[T]]:
    """`items` in lists of at most `size`: SQLite caps the parameters one statement binds."""
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


__all__ = ["chunks", "query"]
