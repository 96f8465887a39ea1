"""The table's check (seed 002, CONTRACT section 11): the open dine-in order of a table,
and what OpenApp is shown of it.

A line's status comes from the order's own records: CANCELLED once voided after its ticket
reached a printer, COMPLIMENTARY once complimented, DELIVERED once `order.items_delivered`
named it, IN_KITCHEN once its food ticket reached a printer, ORDERED before that. A line
voided before any ticket of it reached a printer was never in the kitchen: it is removed
from the check (LINES_REMOVED), not shown as cancelled. `total` is qty x unit_price over the
lines neither cancelled nor complimentary, less the discounts, never below 0; a line with no
known price counts 0.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from enum import StrEnum
from typing import Any

from edge.orders import kitchen, status
from edge.store import as_tx, checks, orders
from edge.store.orders import OrderRow


class LineStatus(StrEnum):
    ORDERED = "ORDERED"
    IN_KITCHEN = "IN_KITCHEN"
    DELIVERED = "DELIVERED"
    CANCELLED = "CANCELLED"
    COMPLIMENTARY = "COMPLIMENTARY"


NOT_CHARGED = (LineStatus.CANCELLED, LineStatus.COMPLIMENTARY)


def open_check(conn: sqlite3.Connection, table_id: str) -> OrderRow | None:
    """The table's open check: its newest dine-in order that is not final."""
    return orders.open_dine_in(conn, table_id, status.WORKING)


def reached_lines(conn: sqlite3.Connection, order_id: str) -> set[str]:
    """Lines whose food ticket reached a printer (or may have: sending, unconfirmed)."""
    jobs = kitchen.order_jobs(as_tx(conn), order_id)
    return {line for lines in kitchen.reached_lines_by_station(jobs).values() for line in lines}


def removed(conn: sqlite3.Connection, order_id: str, line_ids: Iterable[str]) -> bool:
    """Were these lines (just voided) all removed before the kitchen had any of them?"""
    return not set(line_ids) & reached_lines(conn, order_id)


def lines(conn: sqlite3.Connection, order_id: str) -> list[dict[str, Any]]:
    reached = reached_lines(conn, order_id)
    extra = checks.lines(conn, order_id)
    out: list[dict[str, Any]] = []
    for line in orders.lines_summary(conn, order_id):
        line_id = str(line["line_id"])
        state = str(line["state"])
        if state == "voided" and line_id not in reached:
            continue
        more = extra.get(line_id)
        if state == "voided":
            line_status = LineStatus.CANCELLED
        elif state == "comped":
            line_status = LineStatus.COMPLIMENTARY
        elif more is not None and more.delivered_at is not None:
            line_status = LineStatus.DELIVERED
        elif line_id in reached:
            line_status = LineStatus.IN_KITCHEN
        else:
            line_status = LineStatus.ORDERED
        out.append({"line_id": line_id,
                    "product_id": more.product_id if more is not None else None,
                    "name": str(line["name"]), "qty": int(line["qty"]),
                    "unit_price": more.unit_price if more is not None else None,
                    "status": line_status.value,
                    "added_by": more.added_by if more is not None else "pos"})
    return out


def charged(check_lines: Iterable[dict[str, Any]]) -> int:
    """What the lines cost, before discounts."""
    return sum(x["qty"] * x["unit_price"] for x in check_lines
               if x["status"] not in NOT_CHARGED and x["unit_price"] is not None)


def document(conn: sqlite3.Connection, order_id: str, currency: str | None) -> dict[str, Any]:
    """The `order` of CONTRACT section 11."""
    check_lines = lines(conn, order_id)
    discounts = checks.discounts(conn, order_id)
    total = charged(check_lines) - sum(d.amount for d in discounts)
    return {"order_id": order_id, "currency": currency, "total": max(0, total),
            "lines": check_lines,
            "discounts": [{"discount_id": d.discount_id, "amount": d.amount, "reason": d.reason}
                          for d in discounts]}


def left_to_discount(conn: sqlite3.Connection, order_id: str) -> int:
    """How much more discount the check can take before its total would go below 0."""
    check_lines = lines(conn, order_id)
    return charged(check_lines) - sum(d.amount for d in checks.discounts(conn, order_id))


__all__ = ["NOT_CHARGED", "LineStatus", "charged", "document", "left_to_discount", "lines",
           "open_check", "reached_lines", "removed"]
