"""The spooler's side of the print_jobs table: claim, finish, give back, recover.

Each function runs inside one writer transaction. Claiming marks the job `sending` and
reads everything the ticket needs in the same transaction, so a void that lands a moment
later sees the job as possibly on paper and prints a VOID ticket for it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from edge.clock import parse_rfc3339, rfc3339_ms
from edge.orders import kitchen
from edge.orders.apply import refresh_progress
from edge.orders.records import add_activity, sync_records
from edge.printing.ticket import Ticket, TicketItem


@dataclass(frozen=True)
class Claimed:
    job_key: str
    order_id: str
    station_id: str
    printer_id: str
    backup_from: str | None
    ticket: Ticket
    created_at: datetime


def _service(fulfillment: str | None, table: str | None, courier: str | None) -> str:
    if fulfillment == "dine_in":
        return f"TABLE {table}" if table else "DINE IN"
    if fulfillment == "delivery":
        return f"DELIVERY ({courier} courier)" if courier else "DELIVERY"
    if fulfillment == "pickup":
        return "PICKUP"
    return (fulfillment or "").upper()


# True when the printer id bound at its `?` is not among a job's delivered_to printers. Ids
# are slugs ([a-z0-9-]), so the quoted form cannot match a part of another id.
_NOT_HELD_BY = "instr(delivered_to, '\"' || ? || '\"') = 0"


def next_queued(conn: sqlite3.Connection, printer_id: str, stations: Sequence[str],
                copies_for: Sequence[str] = ()) -> str | None:
    """The oldest queued job this printer may take: one of the stations it serves now, or a
    copy of a ticket another printer may hold (a job with delivered_to) for a station it
    backs up. Never a job whose bytes may already be in this printer."""
    if not stations and not copies_for:
        return None
    where = []
    args: list[str] = [printer_id]
    if stations:
        where.append(f"station_id IN ({','.join('?' * len(stations))})")
        args += stations
    if copies_for:
        where.append(f"(delivered_to != '[]' AND station_id IN "
                     f"({','.join('?' * len(copies_for))}))")
        args += copies_for
    row = conn.execute(
        f"SELECT job_key FROM print_jobs WHERE state='queued' AND {_NOT_HELD_BY} "
        f"AND ({' OR '.join(where)}) ORDER BY rowid LIMIT 1",
        tuple(args),
    ).fetchone()
    return str(row[0]) if row else None


def queued_count(conn: sqlite3.Connection, stations: Sequence[str]) -> int:
    if not stations:
        return 0
    row = conn.execute(
        f"SELECT COUNT(*) FROM print_jobs WHERE state IN ('queued','sending') AND station_id IN "
        f"({','.join('?' * len(stations))})",
        tuple(stations),
    ).fetchone()
    return int(row[0])


def unconfirmed_on(conn: sqlite3.Connection, printer_id: str | None = None) -> list[str]:
    """Jobs delivered, not confirmed: at one printer, or at any."""
    if printer_id is None:
        rows = conn.execute("SELECT job_key FROM print_jobs WHERE state='unconfirmed' "
                            "ORDER BY rowid").fetchall()
    else:
        rows = conn.execute("SELECT job_key FROM print_jobs WHERE state='unconfirmed' "
                            "AND printer_id=? ORDER BY rowid", (printer_id,)).fetchall()
    return [str(r[0]) for r in rows]


def claim(conn: sqlite3.Connection, stations: Sequence[str], printer_id: str,
          backup_from: dict[str, str], now: datetime, late_after: float,
          copies_for: Sequence[str] = ()) -> Claimed | None:
    """Take the oldest job `next_queued` offers, mark it sending, build its ticket."""
    key = next_queued(conn, printer_id, stations, copies_for)
    if key is None:
        return None
    job = conn.execute(
        "SELECT j.order_id, j.station_id, j.kind, j.line_ids, j.reprint_of, j.may_be_duplicate,"
        " j.created_at, j.not_before, j.due_at, j.note, o.display_id, o.fulfillment,"
        " o.table_label, o.courier, o.channel, o.note FROM print_jobs j"
        " JOIN orders o ON o.order_id = j.order_id WHERE j.job_key=?",
        (key,),
    ).fetchone()
    station = job[1]
    came_from = backup_from.get(station)
    conn.execute(
        "UPDATE print_jobs SET state='sending', printer_id=?, backup_from=?, sent_at=?, "
        "attempts=attempts+1 WHERE job_key=?",
        (printer_id, came_from, rfc3339_ms(now), key),
    )
    line_ids: list[str] = json.loads(job[3])
    lines = {
        r[0]: r
        for r in conn.execute(
            f"SELECT line_id, qty, name, modifiers, note, allergens, course, state "
            f"FROM order_lines WHERE order_id=? AND line_id IN ({','.join('?' * len(line_ids))})",
            (job[0], *line_ids),
        )
    } if line_ids else {}
    kind = job[2]
    items = tuple(
        TicketItem(
            qty=r[1], name=r[2], modifiers=tuple(json.loads(r[3])), note=r[4],
            allergens=tuple(json.loads(r[5])), course=r[6],
        )
        for line_id in line_ids
        if (r := lines.get(line_id)) is not None and (kind == "VOID" or r[7] != "voided")
    )
    created = parse_rfc3339(job[6])
    reference = parse_rfc3339(job[7]) if job[7] and job[7] > job[6] else created
    ticket = Ticket(
        kind=kind,
        station=station,
        order_label=job[10] or job[0],
        service=_service(job[11], job[12], job[13]),
        channel=job[14],
        created_at=created,
        job_key=key,
        items=items,
        order_note=job[15] if kind in ("NEW",) else None,
        reason=job[9],
        due_at=parse_rfc3339(job[8]) if job[8] else None,
        printed_at=now,
        reprint=job[4] is not None,
        backup_from=came_from,
        may_be_duplicate=bool(job[5]),
        late=late_after > 0 and now - reference > timedelta(seconds=late_after),
    )
    # queued -> sending is a print_job record, but no timeline step: both count as "handed
    # to a printer", so the timeline is not rebuilt on this hot path.
    sync_records(conn, job[0], now, timeline=False)
    return Claimed(key, job[0], station, printer_id, came_from, ticket, created)


def printed(conn: sqlite3.Connection, claimed: Claimed,
            now: datetime) -> dict[str, Any] | None:
    """Mark the job printed; returns the order's timeline if that changed it."""
    conn.execute("UPDATE print_jobs SET state='printed', printed_at=?, reason=NULL "
                 "WHERE job_key=? AND state='sending'", (rfc3339_ms(now), claimed.job_key))
    where = claimed.printer_id + (f" (backup for {claimed.backup_from})"
                                  if claimed.backup_from else "")
    add_activity(conn, None, f"{claimed.ticket.kind} ticket printed at {where}", now,
                 {"job_key": claimed.job_key, "station": claimed.station_id},
                 order_id=claimed.order_id)
    refresh_progress(conn, claimed.order_id, now)
    return sync_records(conn, claimed.order_id, now)


def _back_to(conn: sqlite3.Connection, job_key: str) -> tuple[str, str | None]:
    """Where a job goes when its send did not finish: the order may have changed while the
    bytes were on their way. A cancel or void then already counted the job as on paper and
    told the station (CANCELLED / VOID), so a cooking ticket must not come back after that;
    a hold makes it wait like the order's other unprinted tickets."""
    row = conn.execute(
        "SELECT j.kind, j.change_ref, j.line_ids, j.reprint_of, o.status FROM print_jobs j "
        "JOIN orders o ON o.order_id = j.order_id WHERE j.job_key=?", (job_key,)).fetchone()
    if row is None or row[3] is not None or not kitchen.cooks(row[0], row[1]):
        return "queued", None
    if row[4] in ("cancelled", "void"):
        return "withdrawn", f"order {row[4]} while the ticket was being sent"
    line_ids: list[str] = json.loads(row[2])
    if line_ids and not conn.execute(
            f"SELECT 1 FROM print_jobs j JOIN order_lines l ON l.order_id = j.order_id "
            f"WHERE j.job_key=? AND l.state != 'voided' AND l.line_id IN "
            f"({','.join('?' * len(line_ids))}) LIMIT 1", (job_key, *line_ids)).fetchone():
        return "withdrawn", "all its lines were voided while it was being sent"
    if row[4] == "held":
        return "waiting", "held"
    return "queued", None


def _put_back(conn: sqlite3.Connection, job_key: str, reason: str, maybe_on_paper: bool) -> None:
    state, why = _back_to(conn, job_key)
    conn.execute(
        "UPDATE print_jobs SET state=?, reason=?, wait_reason=?, "
        "may_be_duplicate = may_be_duplicate OR ? WHERE job_key=? AND state='sending'",
        (state, why if state == "withdrawn" else reason, why if state == "waiting" else None,
         1 if maybe_on_paper else 0, job_key),
    )


def unclaim(conn: sqlite3.Connection, claimed: Claimed, reason: str) -> None:
    """No byte of the ticket left (the printer was not ready, or could not be reached): the
    job goes back as it was, unmarked, and may print anywhere. A cancel or void that came
    while it was claimed counted it as on paper; with nothing printed, the notice it caused
    at this station is taken back if it has not printed yet."""
    _put_back(conn, claimed.job_key, reason, False)
    kitchen.retract_notices(conn, claimed.order_id, claimed.station_id)


def unconfirmed(conn: sqlite3.Connection, claimed: Claimed, reason: str, now: datetime) -> None:
    """Bytes of the ticket may be in the printer, and it did not confirm them. The job is
    never sent to that printer again (see `next_queued`); it waits for a confirmation
    (`confirm`) or for its copy to be let go to another printer (`release_copy`)."""
    conn.execute(
        "UPDATE print_jobs SET state='unconfirmed', reason=?, unconfirmed_at=?, "
        "delivered_to = json_insert(delivered_to, '$[#]', printer_id) "
        "WHERE job_key=? AND state='sending'",
        (reason, rfc3339_ms(now), claimed.job_key),
    )
    add_activity(conn, None, f"{claimed.ticket.kind} ticket delivered to {claimed.printer_id}, "
                 "not confirmed", now, {"job_key": claimed.job_key, "reason": reason},
                 order_id=claimed.order_id)
    sync_records(conn, claimed.order_id, now)


def confirm(conn: sqlite3.Connection, job_keys: Sequence[str], printer_id: str,
            now: datetime) -> list[tuple[str, str, dict[str, Any] | None]]:
    """The printer that held these tickets said ready on the connection that carried them:
    its buffer printed them. Jobs still waiting for that (or whose copy has not been taken
    yet) are printed; a copy already on its way elsewhere is left alone. Returns
    (job_key, order_id, the order's timeline if it changed) for the jobs it changed."""
    done: list[tuple[str, str, dict[str, Any] | None]] = []
    for key in job_keys:
        row = conn.execute(
            "SELECT order_id, kind, state FROM print_jobs WHERE job_key=? AND "
            f"NOT {_NOT_HELD_BY}", (key, printer_id)).fetchone()
        if row is None or row["state"] not in ("unconfirmed", "queued", "waiting"):
            continue
        conn.execute("UPDATE print_jobs SET state='printed', printed_at=?, printer_id=?, "
                     "reason=NULL, wait_reason=NULL WHERE job_key=?",
                     (rfc3339_ms(now), printer_id, key))
        add_activity(conn, None, f"{row['kind']} ticket confirmed printed at {printer_id} "
                     "after the fault cleared", now, {"job_key": key},
                     order_id=row["order_id"])
        refresh_progress(conn, row["order_id"], now)
        done.append((key, row["order_id"], sync_records(conn, row["order_id"], now)))
    return done


def release_copy(conn: sqlite3.Connection, job_key: str, printers: Sequence[str],
                 now: datetime) -> str | None:
    """An unconfirmed ticket waited long enough: let one marked copy go to another printer of
    its station (`printers`: the station's primary and backup). Returns the state the job
    went to, or None when it stays unconfirmed: no printer left that may take it, or the
    order was called off (the kitchen was told with a CANCELLED / VOID ticket)."""
    row = conn.execute("SELECT order_id, state, delivered_to FROM print_jobs WHERE job_key=?",
                       (job_key,)).fetchone()
    if row is None or row["state"] != "unconfirmed":
        return None
    held: list[str] = json.loads(row["delivered_to"])
    if not [p for p in printers if p not in held]:
        return None
    state, why = _back_to(conn, job_key)
    if state == "withdrawn":
        return None
    conn.execute(
        "UPDATE print_jobs SET state=?, wait_reason=?, may_be_duplicate=1, queued_at=? "
        "WHERE job_key=?",
        (state, why if state == "waiting" else None, rfc3339_ms(now), job_key))
    add_activity(conn, None, "Ticket not confirmed: a marked copy may print on another "
                 "printer", now, {"job_key": job_key, "not_on": held}, order_id=row["order_id"])
    sync_records(conn, row["order_id"], now)
    return state


def fail(conn: sqlite3.Connection, claimed: Claimed, reason: str, now: datetime) -> None:
    conn.execute("UPDATE print_jobs SET state='failed', reason=? WHERE job_key=?",
                 (reason, claimed.job_key))
    sync_records(conn, claimed.order_id, now)


def recover_after_crash(conn: sqlite3.Connection) -> list[str]:
    """Jobs left `sending` by a crash may be on paper: queue them again, marked, unless the
    order was held or called off meanwhile (see `_back_to`).

    This is the one case where a ticket may go to the same printer again: the daemon cannot
    know whether the bytes left before it died. It is safe for the printer's buffer because
    every send asks the printer first and writes nothing unless it says ready, and a ready
    printer holds nothing back: whatever it received before the crash is on paper or being
    printed, so the marked copy lands after it, never beside it in the buffer."""
    keys = [r[0] for r in conn.execute("SELECT job_key FROM print_jobs WHERE state='sending'")]
    for key in keys:
        _put_back(conn, key, "interrupted while sending", True)
    return keys


def release_due(conn: sqlite3.Connection, now: datetime) -> list[str]:
    """Scheduled jobs whose start time has come are queued (and reported upstream)."""
    stamp = rfc3339_ms(now)
    due = conn.execute(
        "SELECT job_key, order_id FROM print_jobs WHERE state='waiting' "
        "AND wait_reason='scheduled' AND not_before <= ?", (stamp,)).fetchall()
    if due:
        conn.executemany(
            "UPDATE print_jobs SET state='queued', wait_reason=NULL, queued_at=? WHERE job_key=?",
            [(stamp, key) for key, _ in due])
        for order_id in {order for _, order in due}:
            sync_records(conn, order_id, now)
    return [key for key, _ in due]


def next_due(conn: sqlite3.Connection) -> datetime | None:
    row = conn.execute("SELECT MIN(not_before) FROM print_jobs WHERE state='waiting' "
                       "AND wait_reason='scheduled'").fetchone()
    return parse_rfc3339(row[0]) if row and row[0] else None
