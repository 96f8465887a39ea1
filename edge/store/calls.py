"""The `calls` table: the durable outbox of HTTP calls to partners (a marketplace's accept,
an aggregator's webhook), kept apart from the upstream `outbox`.

A call is written in the transaction of the change it reports, so it exists exactly when
the change does; the sender (`edge.connectors.calls.CallSender`) marks it done only after a
2xx. Per (destination, order_id) calls go strictly in the order they were written: only the
oldest call not yet done of an order is ever due, so a parked one holds its order back
until the operator retries it (other orders carry on). Calls with no order are not held back
by anything.

States: `pending` (to send, not before `next_at`), `done` (a 2xx came back), `parked` (the
partner refused it with a 4xx that retrying cannot fix).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from edge.store.rows import query

_COLUMNS = ("id, destination, order_id, method, path, body, call_key, state, attempts, "
            "next_at, last_error, status_code, created_at")


@dataclass(frozen=True, slots=True)
class Call:
    id: int
    destination: str
    order_id: str | None
    method: str
    path: str
    body: str | None
    call_key: str | None
    state: str
    attempts: int
    next_at: str
    last_error: str | None
    status_code: int | None
    created_at: str


def _call(row: sqlite3.Row) -> Call:
    return Call(int(row["id"]), str(row["destination"]), row["order_id"], str(row["method"]),
                str(row["path"]), row["body"], row["call_key"], str(row["state"]),
                int(row["attempts"]), str(row["next_at"]), row["last_error"],
                row["status_code"], str(row["created_at"]))


def add(conn: sqlite3.Connection, *, destination: str, order_id: str | None, method: str,
        path: str, body: str | None, at: str, call_key: str | None = None) -> int | None:
    """Queue a call; its id, or None when `call_key` was queued before."""
    cur = query(conn,
                "INSERT OR IGNORE INTO calls (destination, order_id, method, path, body, "
                "call_key, next_at, created_at) VALUES (?,?,?,?,?,?,?,?)",
                (destination, order_id, method, path, body, call_key, at, at))
    return int(cur.lastrowid or 0) if cur.rowcount == 1 else None


# The head of each order: not done, and no earlier call of the same order is not done.
_HEADS = f"""
SELECT {_COLUMNS} FROM calls AS c
WHERE c.destination = ? AND c.state = 'pending'
  AND (c.order_id IS NULL OR NOT EXISTS (
        SELECT 1 FROM calls AS e
        WHERE e.destination = c.destination AND e.order_id = c.order_id
          AND e.id < c.id AND e.state != 'done'))
"""


def due(conn: sqlite3.Connection, destination: str, now: str, limit: int = 100,
        latest: str | None = None) -> list[Call]:
    """The calls to send now, oldest first: at most one per order. A `next_at` after
    `latest` (further ahead than any retry is put off) was stamped before the clock stepped
    back: it is due now, not in a year."""
    return [_call(r) for r in query(
        conn, _HEADS + " AND (c.next_at <= ? OR c.next_at > ?) ORDER BY c.id LIMIT ?",
        (destination, now, latest or "9999", limit))]


def next_at(conn: sqlite3.Connection, destination: str) -> str | None:
    """When the next call of this destination becomes due (it may be now), or None."""
    row = query(conn, f"SELECT MIN(next_at) AS at FROM ({_HEADS})", (destination,)).fetchone()
    return None if row is None or row["at"] is None else str(row["at"])


def mark_done(conn: sqlite3.Connection, call_id: int, status_code: int, at: str) -> None:
    query(conn, "UPDATE calls SET state='done', done_at=?, status_code=?, last_error=NULL, "
                "attempts=attempts+1 WHERE id=? AND state='pending'", (at, status_code, call_id))


def retry_later(conn: sqlite3.Connection, call_id: int, error: str, status_code: int | None,
                next_at: str) -> None:
    query(conn, "UPDATE calls SET attempts=attempts+1, last_error=?, status_code=?, next_at=? "
                "WHERE id=? AND state='pending'", (error[:500], status_code, next_at, call_id))


def park(conn: sqlite3.Connection, call_id: int, error: str, status_code: int | None) -> None:
    query(conn, "UPDATE calls SET state='parked', attempts=attempts+1, last_error=?, "
                "status_code=? WHERE id=? AND state='pending'", (error[:500], status_code,
                                                                  call_id))


def retry_parked(conn: sqlite3.Connection, destination: str | None, at: str) -> int:
    """Operator's call: parked calls are due again (and unblock their orders)."""
    sql = "UPDATE calls SET state='pending', next_at=? WHERE state='parked'"
    args: tuple[Any, ...] = (at,)
    if destination is not None:
        sql += " AND destination=?"
        args += (destination,)
    return int(query(conn, sql, args).rowcount)


def settle_unsent(conn: sqlite3.Connection, call_id: int, note: str, at: str) -> None:
    """Done without being sent: the partner no longer needs it (its connector decides, e.g.
    a marketplace that already has the order where the call would move it). `note` says why;
    the order's next call becomes due."""
    query(conn, "UPDATE calls SET state='done', done_at=?, last_error=?, status_code=NULL "
                "WHERE id=? AND state IN ('pending', 'parked')", (at, note[:500], call_id))


def of_order(conn: sqlite3.Connection, destination: str, order_id: str) -> list[Call]:
    """Every call of one order to one partner, oldest first."""
    return [_call(r) for r in query(
        conn, f"SELECT {_COLUMNS} FROM calls WHERE destination=? AND order_id=? ORDER BY id",
        (destination, order_id))]


def open_to(conn: sqlite3.Connection, destination: str, path: str) -> list[Call]:
    """The calls to one path of a partner not done yet (pending or parked), oldest first."""
    return [_call(r) for r in query(
        conn, f"SELECT {_COLUMNS} FROM calls WHERE destination=? AND path=? AND state!='done' "
              "ORDER BY id", (destination, path))]


def get(conn: sqlite3.Connection, call_id: int) -> Call | None:
    row = query(conn, f"SELECT {_COLUMNS} FROM calls WHERE id=?", (call_id,)).fetchone()
    return None if row is None else _call(row)


def listing(conn: sqlite3.Connection, destination: str | None = None, *,
            state: str | None = None, limit: int = 100) -> list[Call]:
    where, args = [], []
    if destination is not None:
        where.append("destination=?")
        args.append(destination)
    if state is not None:
        where.append("state=?")
        args.append(state)
    sql = f"SELECT {_COLUMNS} FROM calls"
    if where:
        sql += " WHERE " + " AND ".join(where)
    return [_call(r) for r in query(conn, sql + " ORDER BY id LIMIT ?", (*args, limit))]


def counts(conn: sqlite3.Connection, destination: str) -> dict[str, int]:
    return {str(r["state"]): int(r["n"]) for r in query(
        conn, "SELECT state, COUNT(*) AS n FROM calls WHERE destination=? GROUP BY state",
        (destination,))}


__all__ = ["Call", "add", "counts", "due", "get", "listing", "mark_done", "next_at",
           "of_order", "open_to", "park", "retry_later", "retry_parked", "settle_unsent"]
