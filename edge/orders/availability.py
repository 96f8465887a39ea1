"""`{root}/menu/availability` (retained): what the restaurant offers now (CONTRACT section 8).

`{"store": {"state", "busy_minutes", "until"}, "products": {id: {"stock", "listed"}}}`,
published after every change (`AvailabilityChanged` on the feed) and at every start. Parts
are contributed by the modules that own them: the store state here, the menu's products by
the menu (a `Part` registered in `PARTS`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import datetime
from typing import Any

from edge.orders import opening

Part = Callable[[sqlite3.Connection, datetime], tuple[str, Any]]


def _store(conn: sqlite3.Connection, now: datetime) -> tuple[str, Any]:
    return "store", opening.current(conn).public(now)


def _no_products(conn: sqlite3.Connection, now: datetime) -> tuple[str, Any]:
    return "products", {}


# The menu replaces the products part when it exists.
PARTS: dict[str, Part] = {"store": _store, "products": _no_products}


def document(conn: sqlite3.Connection, now: datetime) -> dict[str, Any]:
    return dict(part(conn, now) for part in PARTS.values())


__all__ = ["PARTS", "Part", "document"]
