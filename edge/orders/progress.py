"""Order status changes: every write of an order's status goes through `set_order`, so each
one is an `OrderStatusChanged` change; `refresh_progress` moves Created / Sent to Kitchen /
Partially Sent to match what reached a printer."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from edge.clock import rfc3339_ms
from edge.feed import OrderStatusChanged
from edge.orders import kitchen, status
from edge.orders.records import add_activity
from edge.store import Tx, orders


def set_order(tx: Tx, order_id: str, now: datetime, **cols: Any) -> None:
    """Update the order's columns; a status change is recorded for the feed."""
    previous = None
    if "status" in cols:
        current = orders.get(tx.conn, order_id)
        previous = current.status if current is not None else None
    orders.update(tx.conn, order_id, rfc3339_ms(now), **cols)
    if "status" in cols and cols["status"] != previous:
        tx.emit(OrderStatusChanged(order_id, str(cols["status"]), previous))


def refresh_progress(tx: Tx, order_id: str, now: datetime) -> None:
    """Move Created / Sent to Kitchen / Partially Sent to match what reached a printer."""
    order = orders.get(tx.conn, order_id)
    if order is None:
        return
    active = orders.line_ids(tx.conn, order_id, include_voided=False)
    reached: set[str] = set()
    jobs = kitchen.order_jobs(tx, order_id)
    for lines in kitchen.reached_lines_by_station(jobs).values():
        reached.update(lines)
    current = order.status
    target = status.progress_status(len(active), len(reached & active), current)
    if target != current:
        status.check(current, target)
        set_order(tx, order_id, now, status=target)
        if target == status.Status.SENT_TO_KITCHEN or (
                current == status.Status.CREATED and target == status.Status.PARTIALLY_SENT):
            add_activity(tx, None, "Order sentToKitchen", now, {}, order_id=order_id)


__all__ = ["refresh_progress", "set_order"]
