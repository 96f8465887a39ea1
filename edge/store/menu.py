"""The `menu_stock` table: each product's running stock and whether it is listed.

A row exists for every product the menu file ever named. `stock` NULL means "not counted".
`marked_out` tells a product the kitchen set to 0 (86) from one that sold out. `file_stock`
and `file_listed` remember what the file said at the last load, so a reload keeps the
running count unless the file's own figure changed.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from edge.store.rows import query


@dataclass(frozen=True, slots=True)
class StockRow:
    product_id: str
    stock: int | None
    listed: bool
    marked_out: bool
    file_stock: int | None
    file_listed: bool
    in_menu: bool


_COLUMNS = "product_id, stock, listed, marked_out, file_stock, file_listed, in_menu"


def _row(r: sqlite3.Row) -> StockRow:
    return StockRow(str(r["product_id"]), r["stock"], bool(r["listed"]), bool(r["marked_out"]),
                    r["file_stock"], bool(r["file_listed"]), bool(r["in_menu"]))


def get(conn: sqlite3.Connection, product_id: str) -> StockRow | None:
    row = query(conn, f"SELECT {_COLUMNS} FROM menu_stock WHERE product_id = ?",
                (product_id,)).fetchone()
    return None if row is None else _row(row)


def all_rows(conn: sqlite3.Connection) -> dict[str, StockRow]:
    return {str(r["product_id"]): _row(r)
            for r in query(conn, f"SELECT {_COLUMNS} FROM menu_stock")}


def in_menu(conn: sqlite3.Connection) -> list[StockRow]:
    """The products the menu file names now, by id."""
    return [_row(r) for r in query(conn, f"SELECT {_COLUMNS} FROM menu_stock WHERE in_menu = 1 "
                                         "ORDER BY product_id")]


def insert(conn: sqlite3.Connection, product_id: str, *, stock: int | None, listed: bool,
           at: str) -> None:
    query(conn, "INSERT INTO menu_stock (product_id, stock, listed, marked_out, file_stock, "
                "file_listed, updated_at) VALUES (?,?,?,?,?,?,?)",
          (product_id, stock, int(listed), int(stock == 0), stock, int(listed), at))


def set_file(conn: sqlite3.Connection, product_id: str, *, stock: int | None,
             listed: bool) -> None:
    """Remember what the file says now (without changing the running figures)."""
    query(conn, "UPDATE menu_stock SET file_stock = ?, file_listed = ?, in_menu = 1 "
                "WHERE product_id = ?", (stock, int(listed), product_id))


def drop_others(conn: sqlite3.Connection, keep: list[str]) -> int:
    """Products the file no longer names are off the menu (their row is kept: a product
    that comes back keeps its count). The number that left."""
    marks = ",".join("?" * len(keep))
    cursor = query(conn, f"UPDATE menu_stock SET in_menu = 0 WHERE in_menu = 1 "
                         f"AND product_id NOT IN ({marks})" if keep else
                         "UPDATE menu_stock SET in_menu = 0 WHERE in_menu = 1", tuple(keep))
    return cursor.rowcount


def set_stock(conn: sqlite3.Connection, product_id: str, stock: int | None, *,
              marked_out: bool, at: str) -> None:
    query(conn, "UPDATE menu_stock SET stock = ?, marked_out = ?, updated_at = ? "
                "WHERE product_id = ?", (stock, int(marked_out), at, product_id))


def set_listed(conn: sqlite3.Connection, product_id: str, listed: bool, at: str) -> None:
    query(conn, "UPDATE menu_stock SET listed = ?, updated_at = ? WHERE product_id = ?",
          (int(listed), at, product_id))


def take(conn: sqlite3.Connection, product_id: str, portions: int, at: str) -> int:
    """Take up to `portions` from a counted stock, never below 0; the portions taken (0 for a
    product not counted or unknown)."""
    row = get(conn, product_id)
    if row is None or row.stock is None or portions <= 0:
        return 0
    taken = min(row.stock, portions)
    if taken:
        query(conn, "UPDATE menu_stock SET stock = stock - ?, updated_at = ? "
                    "WHERE product_id = ?", (taken, at, product_id))
    return taken


def give_back(conn: sqlite3.Connection, product_id: str, portions: int, at: str) -> bool:
    """Portions back into a counted stock (a line called off before the kitchen had it);
    False when the product is no longer counted (nothing to give back to)."""
    if portions <= 0:
        return False
    cursor = query(conn, "UPDATE menu_stock SET stock = stock + ?, updated_at = ? "
                         "WHERE product_id = ? AND stock IS NOT NULL", (portions, at, product_id))
    return cursor.rowcount > 0


__all__ = ["StockRow", "all_rows", "drop_others", "get", "give_back", "in_menu", "insert",
           "set_file", "set_listed", "set_stock", "take"]
