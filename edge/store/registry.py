"""The `printer_registry` table (what discovery has seen, where, and when) and the
`printer_states` table (what each configured printer last said).

Plain synchronous SQL on a `sqlite3.Connection`, meant to run inside `Store.transact` (writes)
or `Store.read` / `open_readonly` (reads). The registry is shared by every discovery source
('mdns', 'usb'); discovery writes it, nothing else.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from typing import Any

from edge.store.rows import query

__all__ = [
    "list_registry", "mark_gone", "mark_source_absent", "printer_states", "set_printer_state",
    "upsert_seen",
]


def upsert_seen(
    conn: sqlite3.Connection,
    *,
    source: str,
    name: str,
    address: str | None,
    port: int | None,
    details: Mapping[str, Any],
    seen_at: str,
) -> None:
    """Record that `name` was seen now: present again, latest address; first_seen is kept."""
    query(conn,
        """
        INSERT INTO printer_registry
            (source, name, address, port, details, first_seen, last_seen, present)
        VALUES (?, ?, ?, ?, ?, ?, ?, 1)
        ON CONFLICT (source, name) DO UPDATE SET
            address = excluded.address,
            port = excluded.port,
            details = excluded.details,
            last_seen = excluded.last_seen,
            present = 1
        """,
        (source, name, address, port, json.dumps(dict(details), sort_keys=True), seen_at, seen_at),
    )


def mark_gone(conn: sqlite3.Connection, *, source: str, name: str) -> None:
    """The printer withdrew or stopped answering; last_seen stays the last time it answered."""
    query(conn,
        "UPDATE printer_registry SET present = 0 WHERE source = ? AND name = ?", (source, name)
    )


def mark_source_absent(conn: sqlite3.Connection, source: str) -> int:
    """At start-up nothing of a source has been seen yet in this run; rows turn present on sight."""
    return query(conn,
        "UPDATE printer_registry SET present = 0 WHERE source = ? AND present = 1", (source,)
    ).rowcount


def list_registry(conn: sqlite3.Connection, source: str | None = None) -> list[dict[str, Any]]:
    """Every row (of one source, or all), details decoded, present as a bool, newest seen first."""
    sql = (
        "SELECT source, name, address, port, details, first_seen, last_seen, present"
        " FROM printer_registry"
    )
    params: tuple[str, ...] = ()
    if source is not None:
        sql += " WHERE source = ?"
        params = (source,)
    sql += " ORDER BY last_seen DESC, source, name"
    out: list[dict[str, Any]] = []
    for row in query(conn, sql, params).fetchall():
        out.append(
            {
                "source": row["source"],
                "name": row["name"],
                "address": row["address"],
                "port": row["port"],
                "details": json.loads(row["details"]) if row["details"] else {},
                "first_seen": row["first_seen"],
                "last_seen": row["last_seen"],
                "present": bool(row["present"]),
            }
        )
    return out


def set_printer_state(conn: sqlite3.Connection, printer_id: str, state: str, since: str,
                      detail: str | None) -> None:
    query(conn,
        "INSERT INTO printer_states (printer_id, state, since, detail) VALUES (?,?,?,?) "
        "ON CONFLICT(printer_id) DO UPDATE SET state=excluded.state, "
        "since=excluded.since, detail=excluded.detail",
        (printer_id, state, since, detail))


def printer_states(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    cur = query(conn, "SELECT * FROM printer_states ORDER BY printer_id")
    return [dict(row) for row in cur.fetchall()]
