"""Statements whose rows are read by column name, on any connection: the daemon's (which
has `sqlite3.Row` set), an operator tool's, or a test's bare one."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any


def query(conn: sqlite3.Connection, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
    cursor = conn.cursor()
    cursor.row_factory = sqlite3.Row
    return cursor.execute(sql, params)


__all__ = ["query"]
