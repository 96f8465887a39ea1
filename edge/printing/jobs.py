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

from edge.clock import parse_rfc3339, rfc3339_ms
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


def next_queued(conn: sqlite3.Connection, stations: Sequence[str]) -> str | None:
    if not stations:
        return None
    row = conn.execute(
        f"SELECT job_key FROM print_jobs WHERE state='queued' AND station_id IN "
        f"({','.join('?' * len(stations))}) ORDER BY rowid LIMIT 1",
        tuple(stations),
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


def claim(conn: sqlite3.Connection, stations: Sequence[str], printer_id: str,
          backup_from: dict[str, str], now: datetime, late_after: float) -> Claimed | None:
    """Take the oldest queued job of these stations, mark it sending, build its ticket."""
    key = next_queued(conn, stations)
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
    sync_records(conn, job[0], now)
    return Claimed(key, job[0], station, printer_id, came_from, ticket, created)


def printed(conn: sqlite3.Connection, claimed: Claimed, now: datetime) -> None:
    conn.execute("UPDATE print_jobs SET state='printed', printed_at=?, reason=NULL "
                 "WHERE job_key=? AND state='sending'", (rfc3339_ms(now), claimed.job_key))
    where = claimed.printer_id + (f" (backup for {claimed.backup_from})"
                                  if claimed.backup_from else "")
    add_activity(conn, None, f"{claimed.ticket.kind} ticket printed at {where}", now,
                 {"job_key": claimed.job_key, "station": claimed.station_id},
                 order_id=claimed.order_id)
    refresh_progress(conn, claimed.order_id, now)
    sync_records(conn, claimed.order_id, now)


def give_back(conn: sqlite3.Connection, claimed: Claimed, reason: str, *,
              maybe_on_paper: bool) -> None:
    """The send failed: queue the job again. If any byte may have reached the printer, the
    next copy says MAY BE DUPLICATE."""
    conn.execute(
        "UPDATE print_jobs SET state='queued', reason=?, "
        "may_be_duplicate = may_be_duplicate OR ? WHERE job_key=? AND state='sending'",
        (reason, 1 if maybe_on_paper else 0, claimed.job_key),
    )


def fail(conn: sqlite3.Connection, claimed: Claimed, reason: str, now: datetime) -> None:
    conn.execute("UPDATE print_jobs SET state='failed', reason=? WHERE job_key=?",
                 (reason, claimed.job_key))
    sync_records(conn, claimed.order_id, now)


def recover_after_crash(conn: sqlite3.Connection) -> list[str]:
    """Jobs left `sending` by a crash may be on paper: queue them again, marked."""
    keys = [r[0] for r in conn.execute("SELECT job_key FROM print_jobs WHERE state='sending'")]
    conn.execute("UPDATE print_jobs SET state='queued', may_be_duplicate=1, "
                 "reason='interrupted while sending' WHERE state='sending'")
    return keys


def release_due(conn: sqlite3.Connection, now: datetime) -> list[str]:
    """Scheduled jobs whose start time has come are queued."""
    stamp = rfc3339_ms(now)
    keys = [r[0] for r in conn.execute(
        "SELECT job_key FROM print_jobs WHERE state='waiting' AND wait_reason='scheduled' "
        "AND not_before <= ?", (stamp,))]
    if keys:
        conn.executemany(
            "UPDATE print_jobs SET state='queued', wait_reason=NULL, queued_at=? WHERE job_key=?",
            [(stamp, k) for k in keys])
    return keys


def next_due(conn: sqlite3.Connection) -> datetime | None:
    row = conn.execute("SELECT MIN(not_before) FROM print_jobs WHERE state='waiting' "
                       "AND wait_reason='scheduled'").fetchone()
    return parse_rfc3339(row[0]) if row and row[0] else None
