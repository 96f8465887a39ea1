"""The `orders`, `order_lines` and `activities` tables: an order, its lines, and its own log.

Synchronous functions on the caller's `sqlite3.Connection`; none of them commits. Rows come
back as typed records read by column name.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Protocol

from edge.store.rows import query


@dataclass(frozen=True, slots=True)
class OrderRow:
    order_id: str
    channel: str
    device: str | None
    display_id: str | None
    fulfillment: str | None
    table_label: str | None
    courier: str | None
    note: str | None
    status: str
    held_from: str | None
    kitchen_stage: str | None
    prep_minutes: int | None
    scheduled_for: str | None
    paid_cents: int
    refunded_cents: int
    hold_count: int
    fired_course: int | None
    timeline_digest: str | None
    created_at: str
    updated_at: str
    intake_event_id: str
    requires_acceptance: int = 0
    attention_at: str | None = None
    service: str | None = None           # platform_delivery | fleet_delivery (seed 004)
    courier_status: str | None = None    # the courier's last status before pick-up

    @property
    def awaits_acceptance(self) -> bool:
        """Sent for the restaurant to accept or reject, and not answered yet."""
        return bool(self.requires_acceptance) and self.stage == "received"

    @property
    def stage(self) -> str:
        # Written with every order ("received" at creation); NULL only in hand-made rows.
        return self.kitchen_stage or "received"


_ORDER_COLUMNS = tuple(f.name for f in fields(OrderRow))
# What `update` may set; the names are spliced into SQL, so only these.
_SETTABLE = frozenset({"status", "held_from", "kitchen_stage", "prep_minutes", "paid_cents",
                       "refunded_cents", "hold_count", "fired_course", "attention_at",
                       "courier_status"})


class NewLine(Protocol):
    """An order line as an event carries it (the schema's Item fits)."""

    @property
    def line_id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def qty(self) -> int: ...
    @property
    def category(self) -> str | None: ...
    @property
    def modifiers(self) -> Sequence[str]: ...
    @property
    def note(self) -> str | None: ...
    @property
    def allergens(self) -> Sequence[str]: ...
    @property
    def course(self) -> int | None: ...


@dataclass(frozen=True, slots=True)
class LineRow:
    line_id: str
    qty: int
    name: str
    modifiers: tuple[str, ...]
    note: str | None
    allergens: tuple[str, ...]
    course: int | None
    state: str


_GET = f"SELECT {', '.join(_ORDER_COLUMNS)} FROM orders WHERE order_id=?"


def get(conn: sqlite3.Connection, order_id: str) -> OrderRow | None:
    # Read several times for every event applied: the columns come in the record's own
    # order, so the row is handed over positionally, without a dict per read.
    row = conn.execute(_GET, (order_id,)).fetchone()
    return None if row is None else OrderRow(*row)


def exists(conn: sqlite3.Connection, order_id: str) -> bool:
    return query(conn, "SELECT 1 FROM orders WHERE order_id=?", (order_id,)).fetchone() \
        is not None


def add(conn: sqlite3.Connection, *, order_id: str, channel: str, device: str | None,
        display_id: str | None, fulfillment: str, table_label: str | None,
        courier: str | None, note: str | None, status: str, stage: str,
        scheduled_for: str | None, fired_course: int | None, at: str,
        intake_event_id: str, requires_acceptance: bool = False,
        service: str | None = None) -> OrderRow | None:
    """Insert the order unless one with its order_id exists (None then, nothing written);
    returns the row as written (the table's defaults for the rest), so the caller need not
    read back what it has just written, nor look first."""
    cur = query(conn,
        "INSERT INTO orders (order_id, channel, device, display_id, fulfillment, table_label,"
        " courier, note, status, kitchen_stage, scheduled_for, fired_course, created_at,"
        " updated_at, intake_event_id, requires_acceptance, service)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(order_id) DO NOTHING",
        (order_id, channel, device, display_id, fulfillment, table_label, courier, note,
         status, stage, scheduled_for, fired_course, at, at, intake_event_id,
         1 if requires_acceptance else 0, service))
    if cur.rowcount != 1:
        return None
    return OrderRow(
        order_id=order_id, channel=channel, device=device, display_id=display_id,
        fulfillment=fulfillment, table_label=table_label, courier=courier, note=note,
        status=str(status), held_from=None, kitchen_stage=str(stage), prep_minutes=None,
        scheduled_for=scheduled_for, paid_cents=0, refunded_cents=0, hold_count=0,
        fired_course=fired_course, timeline_digest=None, created_at=at, updated_at=at,
        intake_event_id=intake_event_id, requires_acceptance=1 if requires_acceptance else 0,
        attention_at=None, service=service, courier_status=None)


def awaiting_acceptance(conn: sqlite3.Connection) -> list[OrderRow]:
    """Orders sent for the restaurant to accept or reject, not answered yet, oldest first."""
    rows = query(conn, f"SELECT {', '.join(_ORDER_COLUMNS)} FROM orders "
                       "WHERE requires_acceptance = 1 AND kitchen_stage = 'received' "
                       "AND status NOT IN ('cancelled', 'void') ORDER BY created_at").fetchall()
    return [OrderRow(**{c: row[c] for c in _ORDER_COLUMNS}) for row in rows]


def open_dine_in(conn: sqlite3.Connection, table_label: str,
                 working: Iterable[str]) -> OrderRow | None:
    """The newest dine-in order of the table whose status is one of `working` (the table's
    open check, seed 002), or None."""
    states = list(working)
    row = query(conn, f"SELECT {', '.join(_ORDER_COLUMNS)} FROM orders "
                      "WHERE fulfillment = 'dine_in' AND table_label = ? "
                      f"AND status IN ({','.join('?' * len(states))}) "
                      "ORDER BY created_at DESC, rowid DESC LIMIT 1",
                (table_label, *states)).fetchone()
    return None if row is None else OrderRow(**{c: row[c] for c in _ORDER_COLUMNS})


def update(conn: sqlite3.Connection, order_id: str, at: str, **cols: Any) -> None:
    unknown = set(cols) - _SETTABLE
    if unknown:
        raise ValueError(f"orders: cannot set {sorted(unknown)}")
    assigns = ", ".join(f"{k}=?" for k in cols)
    query(conn, f"UPDATE orders SET {assigns}, updated_at=? WHERE order_id=?",
                 (*cols.values(), at, order_id))


def set_timeline_digest(conn: sqlite3.Connection, order_id: str, digest: str) -> None:
    query(conn, "UPDATE orders SET timeline_digest=? WHERE order_id=?", (digest, order_id))


def summary(conn: sqlite3.Connection, order_id: str) -> dict[str, Any] | None:
    """The operator's view of the order row."""
    row = query(conn,
        "SELECT order_id, channel, display_id, fulfillment, service, table_label, status, "
        "held_from, kitchen_stage, courier_status, prep_minutes, scheduled_for, paid_cents, "
        "refunded_cents, created_at, updated_at FROM orders WHERE order_id = ?",
        (order_id,)).fetchone()
    return None if row is None else dict(row)


# -- lines ------------------------------------------------------------------------------


def _json_list(values: Sequence[str]) -> str:
    # Most lines have no modifiers or allergens: "[]" without the encoder.
    return json.dumps(list(values), ensure_ascii=False) if values else "[]"


def add_lines(conn: sqlite3.Connection, order_id: str, batch_ref: str,
              lines: Iterable[NewLine]) -> None:
    conn.executemany(
        "INSERT INTO order_lines (order_id, line_id, batch_ref, name, qty, category, "
        "modifiers, note, allergens, course) VALUES (?,?,?,?,?,?,?,?,?,?)",
        [(order_id, i.line_id, batch_ref, i.name, i.qty, i.category,
          _json_list(i.modifiers), i.note, _json_list(i.allergens), i.course)
         for i in lines])


def has_batch(conn: sqlite3.Connection, order_id: str, batch_ref: str) -> bool:
    return query(conn, "SELECT 1 FROM order_lines WHERE order_id=? AND batch_ref=? LIMIT 1",
                        (order_id, batch_ref)).fetchone() is not None


def has_lines(conn: sqlite3.Connection, order_id: str) -> bool:
    return query(conn, "SELECT 1 FROM order_lines WHERE order_id = ? LIMIT 1",
                        (order_id,)).fetchone() is not None


def first_existing(conn: sqlite3.Connection, order_id: str,
                   line_ids: Sequence[str]) -> str | None:
    """The first of these line ids the order already has, if any."""
    if not line_ids:
        return None
    row = query(conn,
        f"SELECT line_id FROM order_lines WHERE order_id=? AND line_id IN "
        f"({','.join('?' * len(line_ids))})", (order_id, *line_ids)).fetchone()
    return None if row is None else str(row["line_id"])


def line_states(conn: sqlite3.Connection, order_id: str) -> dict[str, str]:
    return {str(r["line_id"]): str(r["state"]) for r in query(conn,
        "SELECT line_id, state FROM order_lines WHERE order_id=?", (order_id,))}


def line_ids(conn: sqlite3.Connection, order_id: str, *, include_voided: bool) -> set[str]:
    sql = "SELECT line_id FROM order_lines WHERE order_id=?"
    if not include_voided:
        sql += " AND state != 'voided'"
    return {str(r["line_id"]) for r in query(conn, sql, (order_id,))}


def set_line_state(conn: sqlite3.Connection, order_id: str, line_ids: Iterable[str],
                   state: str) -> None:
    conn.executemany("UPDATE order_lines SET state=? WHERE order_id=? AND line_id=?",
                     [(state, order_id, x) for x in line_ids])


def lines(conn: sqlite3.Connection, order_id: str, line_ids: Sequence[str]) -> dict[str, LineRow]:
    """These lines of the order, by line id (what a ticket prints)."""
    if not line_ids:
        return {}
    rows = query(conn,
        f"SELECT line_id, qty, name, modifiers, note, allergens, course, state FROM order_lines "
        f"WHERE order_id=? AND line_id IN ({','.join('?' * len(line_ids))})",
        (order_id, *line_ids)).fetchall()
    return {str(r["line_id"]): LineRow(
        str(r["line_id"]), int(r["qty"]), str(r["name"]), tuple(json.loads(r["modifiers"])),
        r["note"], tuple(json.loads(r["allergens"])), r["course"], str(r["state"]))
        for r in rows}


def lines_summary(conn: sqlite3.Connection, order_id: str) -> list[dict[str, Any]]:
    return [dict(r) for r in query(conn,
        "SELECT line_id, qty, name, category, course, state, batch_ref FROM order_lines "
        "WHERE order_id = ? ORDER BY rowid", (order_id,)).fetchall()]


# -- activities -------------------------------------------------------------------------


def add_activity(conn: sqlite3.Connection, *, order_id: str | None, event_id: str | None,
                 what: str, channel: str | None, device: str | None, at: str,
                 detail: Mapping[str, Any]) -> None:
    query(conn,
        "INSERT INTO activities (order_id, event_id, what, channel, device, at, detail) "
        "VALUES (?,?,?,?,?,?,?)",
        (order_id, event_id, what, channel, device, at,
         json.dumps({k: v for k, v in detail.items() if v is not None}, ensure_ascii=False)))


def has_activity_with(conn: sqlite3.Connection, order_id: str, key: str, value: str) -> bool:
    """An activity of the order whose detail has `key` = `value` (a payment_id, ...)."""
    return query(conn,
        "SELECT 1 FROM activities WHERE order_id=? AND json_extract(detail, ?) = ? LIMIT 1",
        (order_id, f"$.{key}", value)).fetchone() is not None


def activities(conn: sqlite3.Connection, order_id: str) -> list[dict[str, Any]]:
    out = [dict(r) for r in query(conn,
        "SELECT at, what, channel, device, event_id, detail FROM activities "
        "WHERE order_id = ? ORDER BY id", (order_id,)).fetchall()]
    for row in out:
        row["detail"] = json.loads(row["detail"])
    return out


__all__ = [
    "LineRow",
    "NewLine",
    "OrderRow",
    "activities",
    "add",
    "add_activity",
    "add_lines",
    "awaiting_acceptance",
    "exists",
    "first_existing",
    "get",
    "has_activity_with",
    "has_batch",
    "has_lines",
    "line_ids",
    "line_states",
    "lines",
    "lines_summary",
    "open_dine_in",
    "set_line_state",
    "set_timeline_digest",
    "summary",
    "update",
]
