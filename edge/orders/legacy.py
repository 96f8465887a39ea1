"""Connection-level entry points for edge/printing/jobs.py until issue 10 lands.

The spooler's bookkeeping (being reworked on main for issue 10) still calls the domain with a
plain `sqlite3.Connection`. These wrappers give it the old shape over the Tx-based domain; the
changes recorded here are dropped, and what the spooler changed reaches the feed through the
daemon's bridge from the spooler's callbacks instead. Phase B of the house moves that
bookkeeping onto a `Tx` and deletes this module.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

from edge.orders import progress, records
from edge.orders.events import Event
from edge.store import Tx


def refresh_progress(conn: sqlite3.Connection, order_id: str, now: datetime) -> None:
    progress.refresh_progress(Tx(conn), order_id, now)


def sync_records(conn: sqlite3.Connection, order_id: str, now: datetime, *,
                 timeline: bool = True) -> dict[str, Any] | None:
    return records.sync_records(Tx(conn), order_id, now, timeline=timeline)


def add_activity(conn: sqlite3.Connection, event: Event[Any] | None, what: str, now: datetime,
                 detail: dict[str, Any], *, order_id: str | None = None) -> None:
    records.add_activity(Tx(conn), event, what, now, detail, order_id=order_id)


__all__ = ["add_activity", "refresh_progress", "sync_records"]
