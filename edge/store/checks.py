"""The table check of seed 002: `check_lines` (each order line's product, price, who added
it, the portions it took, when it was delivered), `check_discounts`, and `table_streams`
(the tables OpenApp follows)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

from edge.store.rows import query


@dataclass(frozen=True, slots=True)
class CheckLine:
    line_id: str
    product_id: str | None
    unit_price: int | None
    added_by: str
    stock_taken: int
    delivered_at: str | None


@dataclass(frozen=True, slots=True)
class NewCheckLine:
    line_id: str
    product_id: str | None
    unit_price: int | None
    added_by: str
    stock_taken: int


@dataclass(frozen=True, slots=True)
class Discount:
    discount_id: str
    amount: int
    reason: str | None


@dataclass(frozen=True, slots=True)
class Stream:
    table_id: str
    active: bool
    started_at: str
    ended_at: str | None


# -- lines ------------------------------------------------------------------------------


def add_lines(conn: sqlite3.Connection, order_id: str, lines: Iterable[NewCheckLine]) -> None:
    conn.executemany(
        "INSERT INTO check_lines (order_id, line_id, product_id, unit_price, added_by, "
        "stock_taken) VALUES (?,?,?,?,?,?)",
        [(order_id, x.line_id, x.product_id, x.unit_price, x.added_by, x.stock_taken)
         for x in lines])


def lines(conn: sqlite3.Connection, order_id: str) -> dict[str, CheckLine]:
    return {str(r["line_id"]): CheckLine(str(r["line_id"]), r["product_id"], r["unit_price"],
                                         str(r["added_by"]), int(r["stock_taken"]),
                                         r["delivered_at"])
            for r in query(conn, "SELECT line_id, product_id, unit_price, added_by, "
                                 "stock_taken, delivered_at FROM check_lines "
                                 "WHERE order_id = ?", (order_id,))}


def clear_taken(conn: sqlite3.Connection, order_id: str, line_id: str) -> None:
    query(conn, "UPDATE check_lines SET stock_taken = 0 WHERE order_id = ? AND line_id = ?",
          (order_id, line_id))


def mark_delivered(conn: sqlite3.Connection, order_id: str, line_ids: Iterable[str],
                   at: str) -> None:
    """Delivered lines; a line with no check row yet (an order from before the check
    existed) gets one."""
    for line_id in line_ids:
        cursor = query(conn, "UPDATE check_lines SET delivered_at = ? "
                             "WHERE order_id = ? AND line_id = ?", (at, order_id, line_id))
        if cursor.rowcount == 0:
            query(conn, "INSERT INTO check_lines (order_id, line_id, added_by, delivered_at) "
                        "VALUES (?, ?, 'pos', ?)", (order_id, line_id, at))


# -- discounts --------------------------------------------------------------------------


def add_discount(conn: sqlite3.Connection, order_id: str, discount: Discount, at: str) -> None:
    query(conn, "INSERT INTO check_discounts (order_id, discount_id, amount, reason, at) "
                "VALUES (?,?,?,?,?)",
          (order_id, discount.discount_id, discount.amount, discount.reason, at))


def discounts(conn: sqlite3.Connection, order_id: str) -> list[Discount]:
    return [Discount(str(r["discount_id"]), int(r["amount"]), r["reason"])
            for r in query(conn, "SELECT discount_id, amount, reason FROM check_discounts "
                                 "WHERE order_id = ? ORDER BY rowid", (order_id,))]


def has_discount(conn: sqlite3.Connection, order_id: str, discount_id: str) -> bool:
    return query(conn, "SELECT 1 FROM check_discounts WHERE order_id = ? AND discount_id = ?",
                 (order_id, discount_id)).fetchone() is not None


# -- streams ----------------------------------------------------------------------------


def stream(conn: sqlite3.Connection, table_id: str) -> Stream | None:
    row = query(conn, "SELECT table_id, active, started_at, ended_at FROM table_streams "
                      "WHERE table_id = ?", (table_id,)).fetchone()
    return None if row is None else Stream(str(row["table_id"]), bool(row["active"]),
                                           str(row["started_at"]), row["ended_at"])


def start_stream(conn: sqlite3.Connection, table_id: str, at: str) -> bool:
    """Stream the table; True when it was not streamed before (a new session)."""
    current = stream(conn, table_id)
    if current is not None and current.active:
        return False
    query(conn, "INSERT INTO table_streams (table_id, active, started_at) VALUES (?, 1, ?) "
                "ON CONFLICT(table_id) DO UPDATE SET active = 1, started_at = excluded.started_at,"
                " ended_at = NULL", (table_id, at))
    return True


def end_stream(conn: sqlite3.Connection, table_id: str, at: str) -> None:
    query(conn, "UPDATE table_streams SET active = 0, ended_at = ? WHERE table_id = ?",
          (at, table_id))


def any_streamed(conn: sqlite3.Connection) -> bool:
    """Whether any table is streamed now (a handful of rows, one per table ever streamed)."""
    return query(conn, "SELECT 1 FROM table_streams WHERE active = 1 LIMIT 1").fetchone() \
        is not None


def active_streams(conn: sqlite3.Connection) -> list[Stream]:
    return [Stream(str(r["table_id"]), True, str(r["started_at"]), None)
            for r in query(conn, "SELECT table_id, started_at FROM table_streams "
                                 "WHERE active = 1 ORDER BY table_id")]


__all__ = [
    "CheckLine",
    "Discount",
    "NewCheckLine",
    "Stream",
    "active_streams",
    "add_discount",
    "add_lines",
    "any_streamed",
    "clear_taken",
    "discounts",
    "end_stream",
    "has_discount",
    "lines",
    "mark_delivered",
    "start_stream",
    "stream",
]
