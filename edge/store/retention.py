"""Retention (issue 12): the SQL that keeps the file from growing for ever.

A *final* order (seed 003: completed, cancelled, void, refunded, partially refunded) whose
last change is older than the retention period, or an order that never became final and has
not changed for the (longer) abandoned-order period, is *compacted*, once nothing about it is
still in flight: no ticket left to print or confirm, no event waiting to be applied, no
partner call pending, and (with an upstream) every outbox record of it accepted. Its bulky
rows go (events and their payloads, lines, check lines and discounts, print jobs, KDS cards
and bumps, activities, outbox records, partner calls, the aggregator's and marketplaces'
copies of it); one `order_tombstones` row stays. That row is what an operator can still see
of the order, and what keeps the promise "printed once": every event naming a compacted
order is refused (`replayed`), a replay of one of its own events quietly, as a duplicate.

Also here: the caps on dead letters and on the activity log, tombstones past their own
(optional) period, and handing free pages back to the file system in small steps
(`release_pages`: auto_vacuum=INCREMENTAL). OpenApp's own messages are pruned by its
component after 72 hours (`edge.store.openapp.prune`).

Every function is synchronous, takes the caller's connection, and commits nothing. Each
does a bounded amount of work (`limit`), so the retention component can run it in short
transactions that never hold the kitchen's writer for long.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import structlog

from edge.clock import parse_rfc3339
from edge.store import outbox
from edge.store.rows import query

log = structlog.get_logger(__name__)

# Seed 003's final statuses (edge.orders.status.FINAL; the store may not import the domain).
FINAL_STATUSES = ("completed", "cancelled", "void", "refunded", "partially_refunded")
_FINAL_SQL = "status IN ('completed','cancelled','void','refunded','partially_refunded')"
# Job states after which the printer has nothing more to do with a job.
_DONE_JOBS = "('printed','failed','withdrawn')"
_REACHED_JOBS = "('printed','unconfirmed','sending')"
EVENT_KEY_BYTES = 8
# A file at most this big is switched to auto_vacuum=INCREMENTAL at open by a one-time
# VACUUM (a few seconds on a mini-PC, before the kitchen starts). A bigger one is left as it
# is, with a warning: VACUUM it with the daemon stopped (docs/retention.md).
VACUUM_AT_OPEN_MAX_BYTES = 64 * 1024 * 1024
AUTO_VACUUM_INCREMENTAL = 2

# Rows of the order, table by table, deleted at compaction. `calls` are only ever deleted
# once done (a pending one keeps the order from being compacted at all). Kept on purpose:
# `platform_orders` and `marketplace_orders`, the connectors' own memory of what a partner
# already sent (a repeated POST, a marketplace still listing an old order): without them a
# connector would take the order for a new one and call the partner again. They are small
# next to the rest (no events, no payload copies beyond the marketplace's listing).
_ORDER_ROWS = (
    "events", "order_lines", "check_lines", "check_discounts", "activities", "print_jobs",
    "kds_tickets", "kds_bumps", "calls",
)
# The outbox has no index on order_id alone (every write would move an entry in it): an
# order's records are reached through the partial indexes. Accepted records other than the
# confirmation go by age in the sender's compaction (`upstream.retention_hours`, 72 h by
# default, well inside the retention period) and in `compact_due` by the period's own
# cutoff, so they are not looked for here.
_ORDER_OUTBOX = (
    "DELETE FROM outbox WHERE kind = 'confirmation' AND order_id = ?",
    "DELETE FROM outbox WHERE state = 'pending' AND order_id = ?",
    "DELETE FROM outbox WHERE state = 'parked' AND order_id = ?",
)


def event_key(event_id: str) -> bytes:
    return hashlib.sha256(event_id.encode()).digest()[:EVENT_KEY_BYTES]


# Where a pass has got to in the final orders, by (updated_at, order_id): each step goes on
# from there, so orders that must wait (records not yet accepted, a ticket unconfirmed) are
# looked at once a pass, not once a step.
Cursor = tuple[str, str]
START: Cursor = ("", "")


@dataclass(frozen=True, slots=True)
class Compacted:
    orders: int
    rows: int
    cursor: Cursor = START


def due_orders(conn: sqlite3.Connection, *, before: str, upstream: bool, limit: int,
               after: Cursor = START, final: bool = True) -> list[tuple[str, str]]:
    """(updated_at, order_id) of final orders (`final=False`: of orders that never became
    final) last changed before `before` with nothing in flight, oldest first, after the
    cursor `after`.

    Without an upstream (`upstream=False`) nobody will ever send the outbox, so its pending
    records do not hold an order back; they go with it (docs/retention.md).

    Final orders are found through their partial index. Abandoned ones are looked for by
    reading the orders table: an index over working orders would move on every change of
    every order (storage wear), and the table is kept small by retention itself; this runs
    once a pass, not once an order."""
    # One NOT EXISTS per state: each is served by its partial index (edge.store.outbox);
    # `state IN (...)` would be served by none and read the whole outbox for every order.
    synced = (" AND NOT EXISTS (SELECT 1 FROM outbox x WHERE x.order_id = o.order_id"
              " AND x.state = 'pending')"
              " AND NOT EXISTS (SELECT 1 FROM outbox x WHERE x.order_id = o.order_id"
              " AND x.state = 'parked')") if upstream else ""
    rows = query(conn,
        f"SELECT o.updated_at, o.order_id FROM orders o"
        f" WHERE {'' if final else 'NOT '}(o.{_FINAL_SQL})"
        f" AND o.updated_at < ? AND (o.updated_at, o.order_id) > (?, ?)"
        f" AND NOT EXISTS (SELECT 1 FROM print_jobs j WHERE j.order_id = o.order_id"
        f"                 AND j.state NOT IN {_DONE_JOBS})"
        f" AND NOT EXISTS (SELECT 1 FROM events e WHERE e.order_id = o.order_id"
        f"                 AND e.applied = 0)"
        f" AND NOT EXISTS (SELECT 1 FROM calls c WHERE c.order_id = o.order_id"
        f"                 AND c.state != 'done')"
        f"{synced} ORDER BY o.updated_at, o.order_id LIMIT ?",
        (before, *after, limit)).fetchall()
    return [(str(r["updated_at"]), str(r["order_id"])) for r in rows]


def compact_order(conn: sqlite3.Connection, order_id: str, *, now: str) -> int:
    """Replace the order by its tombstone; returns the rows deleted (0: nothing to do)."""
    order = query(conn,
        "SELECT order_id, channel, display_id, fulfillment, status, kitchen_stage, paid_cents,"
        " refunded_cents, created_at, updated_at FROM orders WHERE order_id = ?",
        (order_id,)).fetchone()
    if order is None:
        return 0
    keys = b"".join(event_key(str(r["event_id"])) for r in query(conn,
        "SELECT event_id FROM events WHERE order_id = ? ORDER BY rowid", (order_id,)))
    lines = query(conn, "SELECT COUNT(*) AS n FROM order_lines WHERE order_id = ?",
                  (order_id,)).fetchone()["n"]
    tickets = query(conn, f"SELECT COUNT(*) AS n FROM print_jobs WHERE order_id = ?"
                          f" AND state IN {_REACHED_JOBS}", (order_id,)).fetchone()["n"]
    query(conn,
        "INSERT INTO order_tombstones (order_id, channel, display_id, fulfillment, status,"
        " kitchen_stage, paid_cents, refunded_cents, lines, tickets, created_at, final_at,"
        " compacted_at, event_keys) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
        " ON CONFLICT(order_id) DO UPDATE SET event_keys = event_keys || excluded.event_keys",
        (order_id, order["channel"], order["display_id"], order["fulfillment"],
         order["status"], order["kitchen_stage"], order["paid_cents"],
         order["refunded_cents"], lines, tickets, order["created_at"], order["updated_at"],
         now, keys))
    deleted = 0
    for table in _ORDER_ROWS:
        deleted += query(conn, f"DELETE FROM {table} WHERE order_id = ?",
                         (order_id,)).rowcount
    for statement in _ORDER_OUTBOX:
        deleted += query(conn, statement, (order_id,)).rowcount
    deleted += query(conn, "DELETE FROM orders WHERE order_id = ?", (order_id,)).rowcount
    return deleted


def compact_due(conn: sqlite3.Connection, *, before: str, upstream: bool, now: str,
                max_rows: int, after: Cursor = START, final: bool = True) -> Compacted:
    """Compact due orders (final ones, or with `final=False` abandoned ones: see
    `due_orders`) after the cursor until about `max_rows` rows are deleted (one short
    transaction); returns the new cursor with the counts."""
    done = rows = 0
    cursor = after
    while rows < max_rows:
        # Abandoned orders cost a read of the table per look: take more of them per look.
        batch = due_orders(conn, before=before, upstream=upstream, limit=8 if final else 64,
                           after=cursor, final=final)
        if not batch:
            break
        for key in batch:
            rows += compact_order(conn, key[1], now=now)
            done += 1
            cursor = key
            if rows >= max_rows:
                break
    if rows < max_rows:
        # What the upstream had before the period, whatever order it was of, with what is
        # left of the step: the outbox is reached by age (the sender's own compaction, a
        # bounded scan in seq order), never per order.
        rows += outbox.compact(conn, older_than=parse_rfc3339(before), limit=max_rows - rows)
    return Compacted(done, rows, cursor)


def any_compacted(conn: sqlite3.Connection) -> bool:
    """Whether any order was compacted at all: until one is, `replayed` is None for every
    event, and a batch need not ask per event."""
    return query(conn, "SELECT 1 FROM order_tombstones LIMIT 1").fetchone() is not None


def replayed(conn: sqlite3.Connection, order_id: str, event_id: str) -> bool | None:
    """None: the order is not compacted. True: this event is one of the compacted order's
    own (a late duplicate). False: a new event for an order that is gone."""
    row = query(conn, "SELECT event_keys FROM order_tombstones WHERE order_id = ?",
                (order_id,)).fetchone()
    if row is None:
        return None
    keys = bytes(row["event_keys"])
    key = event_key(event_id)
    return any(keys[i:i + EVENT_KEY_BYTES] == key
               for i in range(0, len(keys), EVENT_KEY_BYTES))


def tombstone(conn: sqlite3.Connection, order_id: str) -> dict[str, Any] | None:
    """What the operator still sees of a compacted order."""
    row = query(conn,
        "SELECT order_id, channel, display_id, fulfillment, status, kitchen_stage, paid_cents,"
        " refunded_cents, lines, tickets, created_at, final_at, compacted_at,"
        " length(event_keys) / ? AS events FROM order_tombstones WHERE order_id = ?",
        (EVENT_KEY_BYTES, order_id)).fetchone()
    return None if row is None else dict(row)


def _delete_ids(conn: sqlite3.Connection, table: str, key: str, ids: Iterable[Any]) -> int:
    wanted = list(ids)
    if not wanted:
        return 0
    return int(query(conn, f"DELETE FROM {table} WHERE {key} IN ({','.join('?' * len(wanted))})",
                     wanted).rowcount)


def cap_newest(conn: sqlite3.Connection, table: str, *, keep: int, limit: int) -> int:
    """Delete the oldest rows of `table` (dead_letters, activities: integer `id` in arrival
    order) beyond the newest `keep`; at most `limit` of them."""
    if table not in ("dead_letters", "activities"):
        raise ValueError(table)
    row = query(conn, f"SELECT id FROM {table} ORDER BY id DESC LIMIT 1 OFFSET ?",
                (keep,)).fetchone()
    if row is None:
        return 0
    ids = [r["id"] for r in query(conn, f"SELECT id FROM {table} WHERE id <= ? ORDER BY id"
                                        f" LIMIT ?", (row["id"], limit))]
    return _delete_ids(conn, table, "id", ids)


def expire_tombstones(conn: sqlite3.Connection, *, before: str, limit: int) -> int:
    """Tombstones compacted before `before` (only when the operator set a period for them:
    past it, a replay of that order would be taken as new)."""
    ids = [r["order_id"] for r in query(conn,
        "SELECT order_id FROM order_tombstones WHERE compacted_at < ? ORDER BY compacted_at"
        " LIMIT ?", (before, limit))]
    return _delete_ids(conn, "order_tombstones", "order_id", ids)


def free_pages(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA freelist_count").fetchone()[0])


def release_pages(conn: sqlite3.Connection, pages: int) -> int:
    """Give up to `pages` free pages back to the file system (auto_vacuum=INCREMENTAL);
    returns how many went. Python's sqlite3 steps a statement that returns no rows once, and
    one step of incremental_vacuum moves one page: hence one statement per page."""
    if int(conn.execute("PRAGMA auto_vacuum").fetchone()[0]) != AUTO_VACUUM_INCREMENTAL:
        return 0
    before = free_pages(conn)
    for _ in range(min(pages, before)):
        conn.execute("PRAGMA incremental_vacuum(1)")
    return before - free_pages(conn)


def ensure_incremental_vacuum(conn: sqlite3.Connection, path: str) -> str:
    """Put the file in auto_vacuum=INCREMENTAL mode (called by `migrate`, outside any
    transaction). Once the file has a header (and WAL writes one) this takes a VACUUM, done
    here while the file is small: instant for a new file. Returns what was done."""
    mode = int(conn.execute("PRAGMA auto_vacuum").fetchone()[0])
    if mode == AUTO_VACUUM_INCREMENTAL:
        return "already"
    conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
    try:
        size = os.path.getsize(path)
    except OSError:
        size = 0
    if size > VACUUM_AT_OPEN_MAX_BYTES:
        log.warning("database_not_incremental", path=path, bytes=size,
                    action="stop the daemon and run VACUUM once (docs/retention.md)")
        return "too_big"
    try:
        conn.execute("VACUUM")
    except sqlite3.OperationalError as exc:   # disk full, a reader in the way: next start
        log.warning("database_vacuum_failed", path=path, error=str(exc))
        return "failed"
    log.info("database_made_incremental", path=path, bytes=size)
    return "vacuumed"


__all__ = [
    "FINAL_STATUSES",
    "START",
    "VACUUM_AT_OPEN_MAX_BYTES",
    "Compacted",
    "Cursor",
    "cap_newest",
    "compact_due",
    "compact_order",
    "due_orders",
    "ensure_incremental_vacuum",
    "event_key",
    "expire_tombstones",
    "free_pages",
    "release_pages",
    "replayed",
    "tombstone",
]
