"""Orders a channel sends for the restaurant to accept or reject (seeds 001 and 004).

Such an order (`order.created` with `requires_acceptance`) is in the kitchen's database at
once, but its tickets wait (`wait_reason` 'acceptance') until `order.accepted`;
`order.rejected` calls it off before anything printed. Marketplaces cancel orders nobody
answers, so a forgotten one is expensive: one still waiting after
`acceptance.attention_after` gets one ATTENTION ticket at the default station, telling the
kitchen to accept or reject it (CONTRACT section 9).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta

from edge.clock import Restamp, parse_rfc3339, rfc3339_ms
from edge.orders import kitchen
from edge.orders.progress import set_order
from edge.orders.records import add_activity
from edge.orders.routing import job_key
from edge.store import Tx, orders
from edge.store.orders import OrderRow

ATTENTION = "ATTENTION"


@dataclass(frozen=True)
class Waiting:
    """An order waiting for the restaurant's answer, for the CLI, the page and the metric."""

    order_id: str
    display_id: str | None
    channel: str
    device: str | None
    fulfillment: str | None
    since: str
    waited_s: float
    reminded: bool


def waiting(conn: sqlite3.Connection, now: datetime,
            restamp: Restamp | None = None) -> list[Waiting]:
    """Orders waiting for acceptance, oldest first (read-only). `restamp`: the clock's,
    so a step of the clock since an order came does not change how long it waited."""
    return [_waiting(o, now, restamp) for o in orders.awaiting_acceptance(conn)]


def _waiting(order: OrderRow, now: datetime, restamp: Restamp | None) -> Waiting:
    since = _since(order, restamp)
    return Waiting(order.order_id, order.display_id, order.channel, order.device,
                   order.fulfillment, order.created_at,
                   max(0.0, (now - since).total_seconds()), order.attention_at is not None)


def _since(order: OrderRow, restamp: Restamp | None) -> datetime:
    since = parse_rfc3339(order.created_at)
    return restamp(since) if restamp else since


def remind(tx: Tx, now: datetime, after: timedelta, station_id: str | None,
           restamp: Restamp | None = None) -> list[str]:
    """One ATTENTION ticket for each order waiting longer than `after`; the new job keys."""
    if station_id is None:
        return []
    made: list[str] = []
    for order in orders.awaiting_acceptance(tx.conn):
        if order.attention_at is not None or _since(order, restamp) + after > now:
            continue
        label = order.display_id or order.order_id
        where = order.device or order.channel
        since = parse_rfc3339(order.created_at).strftime("%H:%M")
        key = job_key(order.order_id, "attention", station_id)
        if kitchen.insert_job(tx, job_key=key, order_id=order.order_id, station_id=station_id,
                              kind=ATTENTION, change_ref="attention", line_ids=[], now=now,
                              note=f"Accept or reject order {label} ({where}): "
                                   f"waiting since {since}"):
            made.append(key)
        set_order(tx, order.order_id, now, attention_at=rfc3339_ms(now))
        add_activity(tx, None, "Waiting for acceptance: ATTENTION ticket", now,
                     {"job_key": key, "station": station_id}, order_id=order.order_id)
    return made


def withdraw_reminders(tx: Tx, order_id: str) -> None:
    """The order was answered: an ATTENTION ticket not printed yet has nothing left to say."""
    for job in kitchen.order_jobs(tx, order_id):
        if job.kind == ATTENTION and job.state in kitchen.OPEN:
            kitchen.withdraw(tx, order_id, job.job_key, "the order was answered")


__all__ = ["ATTENTION", "Waiting", "remind", "waiting", "withdraw_reminders"]
