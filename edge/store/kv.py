"""The `kv` table: small facts the daemon keeps across restarts (last upstream success,
the durable point before upstream sends)."""

from __future__ import annotations

import sqlite3

from edge.store.rows import query


def get(conn: sqlite3.Connection, key: str) -> str | None:
    row = query(conn, "SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row["value"])


def put(conn: sqlite3.Connection, key: str, value: str) -> None:
    query(conn, "INSERT INTO kv (key, value) VALUES (?, ?)"
                 " ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))


__all__ = ["get", "put"]
