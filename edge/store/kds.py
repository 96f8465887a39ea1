"""The kitchen display's tables (`kds_tickets`, `kds_bumps`) and the reads that make its cards.

A card is a cooking ticket (a NEW, ADDED or later-course FIRE print job) at its station,
from the moment its job first became printable until the station bumps it. The job, its
order and its lines stay in their own tables; this module only joins them.

Synchronous functions on the caller's `sqlite3.Connection`; none of them commits.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from edge.store.rows import chunks
from edge.store.rows import query as _query


@dataclass(frozen=True, slots=True)
class TicketRow:
    """An open card: the ticket, its job and its order, as the kitchen needs them."""

    job_key: str
    order_id: str
    station_id: str
    shown_at: str
    line_ids: tuple[str, ...]       # the lines as the kitchen first saw them
    kind: str
    job_state: str
    display_id: str | None
    channel: str
    fulfillment: str | None
    table_label: str | None
    order_note: str | None
    status: str
    stage: str
    recalled: bool
    service: str | None = None      # who brings a platform's delivery (seed 004)


@dataclass(frozen=True, slots=True)
class TicketLine:
    order_id: str
    line_id: str
    qty: int
    name: str
    modifiers: tuple[str, ...]
    note: str | None
    allergens: tuple[str, ...]
    state: str                      # active | voided | comped


@dataclass(frozen=True, slots=True)
class Bumped:
    job_key: str
    order_id: str
    station_id: str


# -- writes -----------------------------------------------------------------------------


def show(conn: sqlite3.Connection, *, job_key: str, order_id: str, station_id: str,
         line_ids: Sequence[str], at: str) -> bool:
    """The ticket reached the kitchen: it becomes a card, once. True when it is new."""
    cur = conn.execute(
        "INSERT OR IGNORE INTO kds_tickets (job_key, order_id, station_id, line_ids, shown_at) "
        "VALUES (?,?,?,?,?)", (job_key, order_id, station_id, json.dumps(list(line_ids)), at))
    return cur.rowcount == 1


# Tickets that tell a station to cook (as `edge.orders.kitchen.cooks` says): NEW, ADDED, and
# the FIRE of a later course; never a reprint (the card is the original's) or a test ticket.
_COOKING = ("j.reprint_of IS NULL AND (j.kind IN ('NEW', 'ADDED') "
            "OR (j.kind = 'FIRE' AND j.change_ref LIKE '%-course-%'))")


def show_jobs(conn: sqlite3.Connection, job_keys: Iterable[str], at: str) -> list[str]:
    """Of these jobs, the cooking tickets that are printable (not waiting, not withdrawn)
    become cards, each once. Returns the order ids of the new cards."""
    keys = sorted(set(job_keys))
    shown: list[str] = []
    for chunk in chunks(keys):
        rows = _query(conn,
            "SELECT j.job_key, j.order_id, j.station_id, j.line_ids FROM print_jobs j "
            f"WHERE j.job_key IN ({','.join('?' * len(chunk))}) AND {_COOKING} "
            "AND j.state NOT IN ('waiting', 'withdrawn')", chunk).fetchall()
        for r in rows:
            if show(conn, job_key=r["job_key"], order_id=r["order_id"],
                    station_id=r["station_id"], line_ids=json.loads(r["line_ids"]), at=at):
                shown.append(str(r["order_id"]))
    return shown


def bump(conn: sqlite3.Connection, job_key: str, stations: Sequence[str] | None,
         at: str) -> Bumped | None:
    """Bump an open card of one of `stations` (None: any). None when there is no such open
    card: already bumped (a double tap), closed, or another station's."""
    row = _query(conn,
        "SELECT order_id, station_id FROM kds_tickets WHERE job_key=? AND bumped_at IS NULL "
        "AND closed_at IS NULL", (job_key,)).fetchone()
    if row is None or (stations is not None and row["station_id"] not in stations):
        return None
    conn.execute("UPDATE kds_tickets SET bumped_at=? WHERE job_key=?", (at, job_key))
    conn.execute("INSERT INTO kds_bumps (station_id, job_key, order_id, bumped_at) "
                 "VALUES (?,?,?,?)", (row["station_id"], job_key, row["order_id"], at))
    return Bumped(job_key, str(row["order_id"]), str(row["station_id"]))


def recall_last(conn: sqlite3.Connection, stations: Sequence[str] | None,
                at: str) -> Bumped | None:
    """Bring back the last bump of `stations` (None: of any station) that is still bumped;
    its card keeps its timer. None when there is nothing to recall."""
    where, args = "", []
    if stations is not None:
        where = f" AND b.station_id IN ({','.join('?' * len(stations))})"
        args = list(stations)
    row = _query(conn,
        "SELECT b.id, b.job_key, b.order_id, b.station_id FROM kds_bumps b "
        "JOIN kds_tickets t ON t.job_key = b.job_key "
        "WHERE b.recalled_at IS NULL AND t.bumped_at IS NOT NULL AND t.closed_at IS NULL"
        f"{where} ORDER BY b.id DESC LIMIT 1", args).fetchone()
    if row is None:
        return None
    conn.execute("UPDATE kds_bumps SET recalled_at=? WHERE id=?", (at, row["id"]))
    conn.execute("UPDATE kds_tickets SET bumped_at=NULL WHERE job_key=?", (row["job_key"],))
    return Bumped(str(row["job_key"]), str(row["order_id"]), str(row["station_id"]))


def close_order(conn: sqlite3.Connection, order_id: str, at: str) -> list[str]:
    """The order left the kitchen by another way (out for delivery, completed): its cards
    leave the screens. Returns the stations whose open cards closed."""
    stations = [str(r["station_id"]) for r in _query(conn,
        "SELECT DISTINCT station_id FROM kds_tickets WHERE order_id=? AND bumped_at IS NULL "
        "AND closed_at IS NULL", (order_id,))]
    conn.execute("UPDATE kds_tickets SET closed_at=? WHERE order_id=? AND closed_at IS NULL",
                 (at, order_id))
    return stations


# -- reads ------------------------------------------------------------------------------

_TICKETS = (
    "SELECT t.job_key, t.order_id, t.station_id, t.shown_at, t.line_ids, j.kind, "
    "j.state AS job_state, o.display_id, o.channel, o.fulfillment, o.table_label, "
    "o.note AS order_note, o.service, o.status, "
    "COALESCE(o.kitchen_stage, 'received') AS stage, "
    "EXISTS (SELECT 1 FROM kds_bumps b WHERE b.job_key = t.job_key "
    "        AND b.recalled_at IS NOT NULL) AS recalled "
    "FROM kds_tickets t JOIN print_jobs j ON j.job_key = t.job_key "
    "JOIN orders o ON o.order_id = t.order_id "
    "WHERE t.bumped_at IS NULL AND t.closed_at IS NULL AND t.shown_at >= ?")


_ORDER = " ORDER BY t.shown_at, t.rowid"


def _ticket(row: sqlite3.Row) -> TicketRow:
    return TicketRow(
        job_key=row["job_key"], order_id=row["order_id"], station_id=row["station_id"],
        shown_at=row["shown_at"], line_ids=tuple(json.loads(row["line_ids"])),
        kind=row["kind"], job_state=row["job_state"], display_id=row["display_id"],
        channel=row["channel"], fulfillment=row["fulfillment"],
        table_label=row["table_label"], order_note=row["order_note"], status=row["status"],
        stage=row["stage"], recalled=bool(row["recalled"]), service=row["service"])


def open_tickets(conn: sqlite3.Connection, stations: Sequence[str] | None, *, since: str,
                 order_ids: Iterable[str] | None = None) -> list[TicketRow]:
    """Open cards of `stations` (None: all) shown since `since`, oldest first; only those of
    `order_ids` when given."""
    sql, args = _TICKETS, [since]
    if stations is not None:
        sql += f" AND t.station_id IN ({','.join('?' * len(stations))})"
        args += list(stations)
    if order_ids is None:
        return [_ticket(r) for r in _query(conn, sql + _ORDER, args)]
    wanted = sorted(set(order_ids))
    out: list[TicketRow] = []
    for chunk in chunks(wanted):     # a burst of orders: bounded statements
        out += [_ticket(r) for r in _query(
            conn, sql + f" AND t.order_id IN ({','.join('?' * len(chunk))})" + _ORDER,
            args + chunk)]
    out.sort(key=lambda t: t.shown_at)
    return out


def lines_of(conn: sqlite3.Connection, order_ids: Iterable[str]) -> dict[tuple[str, str],
                                                                          TicketLine]:
    """Every line of these orders, by (order_id, line_id)."""
    wanted = sorted(set(order_ids))
    out: dict[tuple[str, str], TicketLine] = {}
    for chunk in chunks(wanted):
        for r in _query(conn,
                "SELECT order_id, line_id, qty, name, modifiers, note, allergens, state "
                f"FROM order_lines WHERE order_id IN ({','.join('?' * len(chunk))})", chunk):
            out[(r["order_id"], r["line_id"])] = TicketLine(
                order_id=r["order_id"], line_id=r["line_id"], qty=int(r["qty"]), name=r["name"],
                modifiers=tuple(json.loads(r["modifiers"])), note=r["note"],
                allergens=tuple(json.loads(r["allergens"])), state=r["state"])
    return out


def all_bumped(conn: sqlite3.Connection, order_id: str) -> bool:
    """Every card of the order, at every station, is bumped (and it has at least one)."""
    row = _query(conn,
        "SELECT COUNT(*) AS cards, SUM(bumped_at IS NULL AND closed_at IS NULL) AS open "
        "FROM kds_tickets WHERE order_id=?", (order_id,)).fetchone()
    return bool(row["cards"]) and not row["open"]


# The order's kitchen is done only while it is being worked on and not ready yet: a held or
# called-off order, or one already ready or further, is not made ready by its bumps.
_READY_FROM_STATUS = ("created", "sent_to_kitchen", "partially_sent")
_READY_FROM_STAGE = ("received", "accepted")


def ready_channel(conn: sqlite3.Connection, order_id: str) -> str | None:
    """The order's channel when every card of it is bumped and it may become ready; else
    None."""
    if not all_bumped(conn, order_id):
        return None
    row = _query(conn,
        "SELECT channel, status, COALESCE(kitchen_stage, 'received') AS stage FROM orders "
        "WHERE order_id=?", (order_id,)).fetchone()
    if row is None or row["status"] not in _READY_FROM_STATUS \
            or row["stage"] not in _READY_FROM_STAGE:
        return None
    return str(row["channel"])


def bumped_not_ready(conn: sqlite3.Connection, since: str) -> list[tuple[str, str, str]]:
    """(order_id, channel, station of the last bump) of the orders bumped at every station
    since `since` that may become ready and are not ready yet."""
    rows = _query(conn,
        "SELECT b.order_id, MAX(b.id) AS last FROM kds_bumps b "
        "WHERE b.bumped_at >= ? AND b.recalled_at IS NULL GROUP BY b.order_id",
        (since,)).fetchall()
    out: list[tuple[str, str, str]] = []
    for row in rows:
        channel = ready_channel(conn, row["order_id"])
        if channel is not None:
            station = _query(conn, "SELECT station_id FROM kds_bumps WHERE id=?",
                             (row["last"],)).fetchone()["station_id"]
            out.append((str(row["order_id"]), channel, str(station)))
    return out


__all__ = [
    "Bumped",
    "TicketLine",
    "TicketRow",
    "all_bumped",
    "bump",
    "bumped_not_ready",
    "close_order",
    "lines_of",
    "open_tickets",
    "ready_channel",
    "recall_last",
    "show",
    "show_jobs",
]
