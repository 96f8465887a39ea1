"""The menu in the kitchen (CONTRACT section 8): prices and categories for items that name a
product, the running stock, 86, and the `products` part of `{root}/menu/availability`.

The menu file (`edge.config.menu`) says what is sold and where counting starts; the running
figures live in the database (`edge.store.menu`). Portions are taken in the transaction that
puts the item on an order, never below 0. An order from a channel is not refused here: the
partner or the waiter already has it, and the kitchen must hear of it; a line the stock
cannot cover takes what is left and the shortfall is written in the order's activities.
OpenApp asks first (`available`), in the same transaction, and rejects what cannot be had.
A line called off before any ticket of it reached a printer gives its portions back.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from edge.clock import rfc3339_ms
from edge.config.menu import Menu
from edge.feed import AvailabilityChanged
from edge.orders.events import Event, Item, Rejected, RejectKind
from edge.orders.records import add_activity
from edge.store import Tx, checks
from edge.store import menu as stock_table
from edge.store.checks import NewCheckLine
from edge.store.menu import StockRow

OPENAPP = "openapp"


def added_by(channel: str) -> str:
    """Who put a line on the check, as OpenApp sees it: the guest's phone, or the POS side
    (a waiter, a kiosk, a bridge)."""
    return "openapp" if channel == OPENAPP else "pos"


def priced(menu: Menu | None, items: Sequence[Item]) -> list[Item]:
    """Items of a known product take its category and unit price when they have none."""
    if menu is None:
        return list(items)
    out: list[Item] = []
    for item in items:
        product = menu.product(item.product_id)
        update: dict[str, Any] = {}
        if product is not None:
            if item.category is None:
                update["category"] = product.category
            if item.unit_price is None:
                update["unit_price"] = product.price
        out.append(item.model_copy(update=update) if update else item)
    return out


def take_for_lines(tx: Tx, event: Event[Any], order_id: str, items: Sequence[Item],
                   now: datetime) -> None:
    """The check's part of new order lines (product, price, who added them) and the
    portions they take from the stock, in the caller's transaction."""
    at = rfc3339_ms(now)
    rows: list[NewCheckLine] = []
    short: list[dict[str, Any]] = []
    changed = False
    for item in items:
        taken = 0
        counted = _counted(tx.conn, item.product_id)
        if counted is not None and item.product_id is not None:
            taken = stock_table.take(tx.conn, item.product_id, item.qty, at)
            changed = changed or taken > 0
            if taken < item.qty:
                short.append({"line_id": item.line_id, "product_id": item.product_id,
                              "qty": item.qty, "taken": taken})
        rows.append(NewCheckLine(item.line_id, item.product_id, item.unit_price,
                                 added_by(event.envelope.source.channel), taken))
    checks.add_lines(tx.conn, order_id, rows)
    if changed:
        tx.emit(AvailabilityChanged())
    if short:
        # Accepted all the same: the kitchen is told what the waiter or the partner promised.
        add_activity(tx, event, "Stock short", now, {"lines": short})


def give_back(tx: Tx, order_id: str, line_ids: Iterable[str], now: datetime) -> None:
    """Lines called off before the kitchen had them: their portions go back."""
    wanted = set(line_ids)
    if not wanted:
        return
    at = rfc3339_ms(now)
    changed = False
    for line in checks.lines(tx.conn, order_id).values():
        if line.line_id in wanted and line.stock_taken > 0 and line.product_id is not None:
            changed = stock_table.give_back(tx.conn, line.product_id, line.stock_taken, at) \
                or changed
            checks.clear_taken(tx.conn, order_id, line.line_id)
    if changed:
        tx.emit(AvailabilityChanged())


def _counted(conn: sqlite3.Connection, product_id: str | None) -> StockRow | None:
    if product_id is None:
        return None
    row = stock_table.get(conn, product_id)
    return row if row is not None and row.in_menu and row.stock is not None else None


# -- what OpenApp may have --------------------------------------------------------------


@dataclass(frozen=True)
class Offer:
    """Whether `qty` of a product can be had now: `reason` None, or why not (the rejection
    reasons of CONTRACT section 11), with what is left or what it costs."""

    reason: str | None
    available_qty: int | None = None
    current_price: int | None = None


def offer(conn: sqlite3.Connection, menu: Menu | None, product_id: str, qty: int,
          unit_price: int, already: int = 0) -> Offer:
    """`already`: portions of the same product earlier items of the same request take."""
    product = menu.product(product_id) if menu is not None else None
    row = stock_table.get(conn, product_id) if product is not None else None
    if product is None or row is None or not row.in_menu or not row.listed:
        return Offer("DELISTED")
    if unit_price != product.price:
        return Offer("PRICE_CHANGED", current_price=product.price)
    if row.stock is None:
        return Offer(None)
    left = max(0, row.stock - already)
    if left == 0 and row.marked_out:
        # The kitchen said it is out (86); sold out by orders is "insufficient, 0 left".
        return Offer("OUT_OF_STOCK", available_qty=0)
    if left < qty:
        return Offer("INSUFFICIENT_STOCK", available_qty=left)
    return Offer(None)


# -- the menu file, at every start and reload -------------------------------------------


def sync(tx: Tx, menu: Menu | None, now: datetime) -> bool:
    """Bring the running figures in line with the menu file: a new product starts from the
    file's stock; a known one keeps its running count unless the file's own figure for it
    changed since the last load (the operator edited it on purpose). Products the file no
    longer names leave the menu. True when anything the availability topic shows changed."""
    at = rfc3339_ms(now)
    rows = stock_table.all_rows(tx.conn)
    products = menu.products if menu is not None else []
    changed = False
    for product in products:
        row = rows.get(product.id)
        if row is None:
            stock_table.insert(tx.conn, product.id, stock=product.stock, listed=product.listed,
                               at=at)
            changed = True
            continue
        if row.file_stock != product.stock:
            stock_table.set_stock(tx.conn, product.id, product.stock,
                                  marked_out=product.stock == 0, at=at)
            changed = True
        if row.file_listed != product.listed:
            stock_table.set_listed(tx.conn, product.id, product.listed, at)
            changed = True
        changed = changed or not row.in_menu
        stock_table.set_file(tx.conn, product.id, stock=product.stock, listed=product.listed)
    changed = stock_table.drop_others(tx.conn, [p.id for p in products]) > 0 or changed
    if changed:
        tx.emit(AvailabilityChanged())
    return changed


def availability_part(conn: sqlite3.Connection, now: datetime) -> tuple[str, Any]:
    """The `products` part of `{root}/menu/availability`."""
    return "products", {row.product_id: {"stock": row.stock, "listed": row.listed}
                        for row in stock_table.in_menu(conn)}


def stock_levels(conn: sqlite3.Connection) -> dict[str, StockRow]:
    """Every product on the menu, with its running stock (for the CLI and the page)."""
    return {row.product_id: row for row in stock_table.in_menu(conn)}


# -- the operator's stock command -------------------------------------------------------

_COMMAND_ID = re.compile(r"^[A-Za-z0-9._:-]{1,120}$")
_PRODUCT_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_UNSET: Any = object()


@dataclass(frozen=True)
class StockCommand:
    """`{root}/commands/stock`: `{"command_id", "product_id", "stock": int or null?,
    "listed": bool?}`. A `stock` key with null means "not counted"; an absent one leaves
    the count alone. `kitchen-edge menu 86 PRODUCT` is stock 0."""

    command_id: str
    product_id: str
    stock: int | Any | None = _UNSET
    listed: bool | None = None

    @property
    def sets_stock(self) -> bool:
        return self.stock is not _UNSET

    @classmethod
    def from_document(cls, doc: Any) -> StockCommand:
        if not isinstance(doc, dict):
            raise Rejected("payload must be a JSON object")
        command_id = doc.get("command_id")
        if not isinstance(command_id, str) or not _COMMAND_ID.match(command_id):
            raise Rejected("schema: command_id: required, 1 to 120 of A-Z a-z 0-9 . _ : -",
                           RejectKind.SCHEMA)
        product_id = doc.get("product_id")
        if not isinstance(product_id, str) or not _PRODUCT_ID.match(product_id):
            raise Rejected("schema: product_id: required, 1 to 64 of A-Z a-z 0-9 . _ -",
                           RejectKind.SCHEMA)
        stock: Any = _UNSET
        if "stock" in doc:
            stock = doc["stock"]
            if stock is not None and (type(stock) is not int or stock < 0):
                raise Rejected("schema: stock: must be a whole number of portions >= 0, or "
                               "null for not counted", RejectKind.SCHEMA)
        listed = doc.get("listed")
        if listed is not None and type(listed) is not bool:
            raise Rejected("schema: listed: must be true or false", RejectKind.SCHEMA)
        if stock is _UNSET and listed is None:
            raise Rejected("schema: stock: give stock, listed, or both", RejectKind.SCHEMA)
        return cls(command_id, product_id, stock, listed)


def apply_stock(tx: Tx, command: StockCommand, now: datetime) -> dict[str, Any]:
    """The product's new stock and listing; `{root}/menu/availability` follows."""
    row = stock_table.get(tx.conn, command.product_id)
    if row is None or not row.in_menu:
        raise Rejected(f"product_id: '{command.product_id}' is not on the menu")
    at = rfc3339_ms(now)
    if command.sets_stock:
        stock: int | None = command.stock
        stock_table.set_stock(tx.conn, command.product_id, stock, marked_out=stock == 0, at=at)
    if command.listed is not None:
        stock_table.set_listed(tx.conn, command.product_id, command.listed, at)
    tx.emit(AvailabilityChanged())
    after = stock_table.get(tx.conn, command.product_id)
    assert after is not None
    return {"product_id": after.product_id, "stock": after.stock, "listed": after.listed}


__all__ = ["Offer", "StockCommand", "added_by", "apply_stock", "availability_part",
           "give_back", "offer", "priced", "stock_levels", "sync", "take_for_lines"]
