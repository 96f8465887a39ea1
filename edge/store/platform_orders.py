"""The `platform_orders` table: what a delivery platform POSTed to the aggregator API
(CONTRACT section 10, seed 004), one row per platform order id.

The row is written in the same transaction as the order's events, so "this order id was
taken" is exactly as durable as the order itself: a repeat of `POST /orders` is answered
from it (200, nothing new) even when the kitchen has long moved on. The courier's progress
is kept here too, so a status that goes backwards is refused (409) against what was taken,
not against what the kitchen has applied so far. Nothing about the consumer or the courier
is stored.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, fields

from edge.store.rows import query


@dataclass(frozen=True, slots=True)
class PlatformOrder:
    platform_id: str
    order_id: str
    store_id: str
    provider: str
    fulfillment: str
    answer: str                     # waiting | accepted | store_closed
    received_at: str
    repeats: int
    dasher_status: str | None
    dasher_at: str | None
    cancelled_at: str | None


_COLUMNS = tuple(f.name for f in fields(PlatformOrder))
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM platform_orders"


def _row(row: sqlite3.Row) -> PlatformOrder:
    return PlatformOrder(**{c: row[c] for c in _COLUMNS})


def get(conn: sqlite3.Connection, platform_id: str) -> PlatformOrder | None:
    row = query(conn, _SELECT + " WHERE platform_id = ?", (platform_id,)).fetchone()
    return None if row is None else _row(row)


def add(conn: sqlite3.Connection, *, platform_id: str, order_id: str, store_id: str,
        provider: str, fulfillment: str, answer: str, at: str) -> bool:
    """Record a platform order; False if its id was taken before."""
    cur = query(conn,
                "INSERT OR IGNORE INTO platform_orders (platform_id, order_id, store_id, "
                "provider, fulfillment, answer, received_at) VALUES (?,?,?,?,?,?,?)",
                (platform_id, order_id, store_id, provider, fulfillment, answer, at))
    return cur.rowcount == 1


def count_repeat(conn: sqlite3.Connection, platform_id: str) -> None:
    query(conn, "UPDATE platform_orders SET repeats = repeats + 1 WHERE platform_id = ?",
          (platform_id,))


def set_dasher(conn: sqlite3.Connection, platform_id: str, status: str, at: str) -> None:
    query(conn, "UPDATE platform_orders SET dasher_status = ?, dasher_at = ? "
                "WHERE platform_id = ?", (status, at, platform_id))


def set_cancelled(conn: sqlite3.Connection, platform_id: str, at: str) -> None:
    query(conn, "UPDATE platform_orders SET cancelled_at = ? WHERE platform_id = ? "
                "AND cancelled_at IS NULL", (at, platform_id))


def recent(conn: sqlite3.Connection, limit: int = 20) -> list[PlatformOrder]:
    """The latest platform orders, newest first."""
    return [_row(r) for r in query(conn, _SELECT + " ORDER BY received_at DESC, rowid DESC "
                                               "LIMIT ?", (limit,))]


def counts(conn: sqlite3.Connection) -> dict[str, int]:
    """How many platform orders got each answer on arrival, and how many repeats came."""
    out = {str(r["answer"]): int(r["n"]) for r in query(
        conn, "SELECT answer, COUNT(*) AS n FROM platform_orders GROUP BY answer")}
    row = query(conn, "SELECT COALESCE(SUM(repeats), 0) AS n FROM platform_orders").fetchone()
    out["repeats"] = int(row["n"])
    return out


__all__ = ["PlatformOrder", "add", "count_repeat", "counts", "get", "recent", "set_cancelled",
           "set_dasher"]
