"""Read models over the database for the operator's CLI, the local HTTP server and the
screens: an order with its lines, activities, jobs and timeline; recent jobs; dead letters.

All of them only read (through the table owners in `edge.store`): safe on a read-only
connection while the daemon runs.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from edge.orders.timeline import build_timeline
from edge.store import events, jobs, orders, registry, retention


def jobs_list(conn: sqlite3.Connection, *, state: str | None = None, order_id: str | None = None,
              limit: int = 50) -> list[dict[str, Any]]:
    return jobs.listing(conn, state=state, order_id=order_id, limit=limit)


def job_show(conn: sqlite3.Connection, job_key: str) -> dict[str, Any] | None:
    return jobs.detail(conn, job_key)


def order_show(conn: sqlite3.Connection, order_id: str) -> dict[str, Any] | None:
    order = orders.summary(conn, order_id)
    if order is None:
        # Compacted by retention: what is left is its tombstone (docs/retention.md).
        stone = retention.tombstone(conn, order_id)
        return None if stone is None else {"compacted": True, **stone}
    order["lines"] = orders.lines_summary(conn, order_id)
    order["activities"] = activities(conn, order_id)
    order["jobs"] = jobs_list(conn, order_id=order_id, limit=1000)
    order["timeline"] = build_timeline(conn, order_id)
    return order


def activities(conn: sqlite3.Connection, order_id: str) -> list[dict[str, Any]]:
    return orders.activities(conn, order_id)


def order_exists(conn: sqlite3.Connection, order_id: str) -> bool:
    return orders.exists(conn, order_id)


def dead_letters(conn: sqlite3.Connection, limit: int = 50) -> list[dict[str, Any]]:
    return events.recent_dead_letters(conn, limit)


def printer_states(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    return registry.printer_states(conn)


def unconfirmed_jobs(conn: sqlite3.Connection) -> dict[str, list[str]]:
    """printer_id -> job keys delivered there, not confirmed (may be on paper, may not)."""
    return jobs.unconfirmed_by_printer(conn)


__all__ = ["activities", "dead_letters", "job_show", "jobs_list", "order_exists", "order_show",
           "printer_states", "unconfirmed_jobs"]
