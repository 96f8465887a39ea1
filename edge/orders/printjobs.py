"""A print job's life at the printer, inside the writer transaction: claim, printed, given
back, delivered-not-confirmed, confirmed, copied, failed, recovered after a crash, released
at its scheduled time. What a ticket says is built here, from the job and its order, in the
claim's own snapshot.

Each function takes the spooler's `Tx`; the SQL is `edge.store.jobs`', the decisions are
here, and every move is a change for the feed (`JobClaimed`, `JobPrinted`, `JobReturned`,
`JobUnconfirmed`, `JobConfirmed`, `JobCopyReleased`, `JobFailed`, `JobQueued`). Claiming
marks the job `sending` and reads everything the ticket needs in the same transaction, so a
void that lands a moment later sees the job as possibly on paper and prints a VOID ticket.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from edge.clock import Restamp, clock_synced, parse_rfc3339, rfc3339_ms
from edge.feed import (
    JobClaimed,
    JobConfirmed,
    JobCopyReleased,
    JobFailed,
    JobPrinted,
    JobQueued,
    JobReturned,
    JobUnconfirmed,
)
from edge.orders import kitchen
from edge.orders.kitchen import JobState
from edge.orders.progress import refresh_progress
from edge.orders.records import add_activity, sync_records
from edge.orders.ticket import Ticket, TicketItem, TicketKind
from edge.store import Tx, jobs, orders


@dataclass(frozen=True)
class Claimed:
    job_key: str
    order_id: str
    station_id: str
    printer_id: str
    backup_from: str | None
    ticket: Ticket
    created_at: datetime


# Who brings a delivery when the order says (seed 004's dx_delivery, mx_fleet_delivery).
_SERVICES = {"platform_delivery": "PLATFORM DELIVERY", "fleet_delivery": "FLEET DELIVERY"}


def _service(fulfillment: str | None, table: str | None, courier: str | None,
             service: str | None = None) -> str:
    if fulfillment == "dine_in":
        return f"TABLE {table}" if table else "DINE IN"
    if fulfillment == "delivery" and service in _SERVICES:
        return _SERVICES[service]
    if fulfillment == "delivery":
        return f"DELIVERY ({courier} courier)" if courier else "DELIVERY"
    if fulfillment == "pickup":
        return "PICKUP"
    return (fulfillment or "").upper()


def ticket_of(conn: sqlite3.Connection, job_key: str, now: datetime, late_after: float,
              backup_from: Mapping[str, str],
              restamp: Restamp | None = None) -> tuple[jobs.ToPrint, Ticket] | None:
    """What the job's ticket says if it printed at `now` (`backup_from`: station -> the
    printer it is printing for). Only reads: the spooler's claim, and the screens' preview.
    `restamp` (the clock's) carries our own stamps over the clock's steps (edge.clock)."""
    job = jobs.to_print(conn, job_key)
    if job is None:
        return None
    lines = orders.lines(conn, job.order_id, job.line_ids)
    items = tuple(
        TicketItem(qty=r.qty, name=r.name, modifiers=r.modifiers, note=r.note,
                   allergens=r.allergens, course=r.course)
        for line_id in job.line_ids
        if (r := lines.get(line_id)) is not None and (job.kind == "VOID" or r.state != "voided")
    )
    created = parse_rfc3339(job.created_at)
    # A scheduled job is late from its start time: the publisher's, no stamp of ours.
    reference = parse_rfc3339(job.not_before) if job.not_before and \
        job.not_before > job.created_at else restamp(created) if restamp else created
    return job, Ticket(
        kind=cast(TicketKind, job.kind),   # written by the kitchen: one of the kinds
        station=job.station_id,
        order_label=job.display_id or job.order_id,
        service=_service(job.fulfillment, job.table_label, job.courier, job.service),
        channel=job.channel,
        created_at=created,
        job_key=job_key,
        items=items,
        order_note=job.order_note if job.kind in ("NEW",) else None,
        reason=job.note,
        due_at=parse_rfc3339(job.due_at) if job.due_at else None,
        printed_at=now,
        reprint=job.reprint_of is not None,
        backup_from=backup_from.get(job.station_id),
        may_be_duplicate=job.may_be_duplicate,
        late=late_after > 0 and now - reference > timedelta(seconds=late_after),
        clock_synced=clock_synced(),
    )


def claim(tx: Tx, stations: Sequence[str], printer_id: str, backup_from: dict[str, str],
          now: datetime, late_after: float, copies_for: Sequence[str] = (),
          restamp: Restamp | None = None) -> Claimed | None:
    """Take the oldest job this printer may take (`edge.store.jobs.next_queued`), mark it
    sending, build its ticket."""
    key = jobs.next_queued(tx.conn, printer_id, stations, copies_for)
    if key is None:
        return None
    found = ticket_of(tx.conn, key, now, late_after, backup_from, restamp)
    assert found is not None
    job, ticket = found
    came_from, created = ticket.backup_from, ticket.created_at
    jobs.mark_sending(tx.conn, key, printer_id, came_from, rfc3339_ms(now))
    # queued -> sending is a print_job record, but no timeline step: both count as "handed
    # to a printer", so the timeline is not rebuilt on this hot path.
    sync_records(tx, job.order_id, now, timeline=False)
    tx.emit(JobClaimed(key, job.order_id, job.station_id, printer_id))
    return Claimed(key, job.order_id, job.station_id, printer_id, came_from, ticket, created)


def printed(tx: Tx, claimed: Claimed, now: datetime) -> dict[str, Any] | None:
    """Mark the job printed; returns the order's timeline if that changed it."""
    jobs.mark_printed(tx.conn, claimed.job_key, rfc3339_ms(now))
    where = claimed.printer_id + (f" (backup for {claimed.backup_from})"
                                  if claimed.backup_from else "")
    add_activity(tx, None, f"{claimed.ticket.kind} ticket printed at {where}", now,
                 {"job_key": claimed.job_key, "station": claimed.station_id},
                 order_id=claimed.order_id)
    refresh_progress(tx, claimed.order_id, now)
    tx.emit(JobPrinted(claimed.job_key, claimed.order_id, claimed.station_id,
                       claimed.printer_id, claimed.ticket.kind, claimed.created_at, now))
    return sync_records(tx, claimed.order_id, now)


def _back_to(tx: Tx, job_key: str) -> tuple[JobState, str | None]:
    """Where a job goes when its send did not finish: the order may have changed while the
    bytes were on their way. A cancel or void then already counted the job as on paper and
    told the station (CANCELLED / VOID), so a cooking ticket must not come back after that;
    a hold makes it wait like the order's other unprinted tickets."""
    job = jobs.standing(tx.conn, job_key)
    if job is None or job.reprint_of is not None or not kitchen.cooks(job.kind, job.change_ref):
        return JobState.QUEUED, None
    if job.order_status in ("cancelled", "void"):
        return JobState.WITHDRAWN, f"order {job.order_status} while the ticket was being sent"
    if job.line_ids and not jobs.has_active_line(tx.conn, job_key, job.line_ids):
        return JobState.WITHDRAWN, "all its lines were voided while it was being sent"
    if job.order_status == "held":
        return JobState.WAITING, "held"
    return JobState.QUEUED, None


def _put_back(tx: Tx, job_key: str, order_id: str | None, reason: str,
              maybe_on_paper: bool) -> JobState:
    state, why = _back_to(tx, job_key)
    jobs.put_back(tx.conn, job_key, state=state,
                  reason=why if state is JobState.WITHDRAWN else reason,
                  wait_reason=why if state is JobState.WAITING else None,
                  maybe_on_paper=maybe_on_paper)
    if order_id is not None and state is JobState.QUEUED:
        tx.emit(JobQueued(job_key, order_id))
    return state


def unclaim(tx: Tx, claimed: Claimed, reason: str) -> None:
    """No byte of the ticket left (the printer was not ready, or could not be reached): the
    job goes back as it was, unmarked, and may print anywhere. A cancel or void that came
    while it was claimed counted it as on paper; with nothing printed, the notice it caused
    at this station is taken back if it has not printed yet."""
    state = _put_back(tx, claimed.job_key, None, reason, False)
    tx.emit(JobReturned(claimed.job_key, claimed.order_id, state, reason))
    kitchen.retract_notices(tx, claimed.order_id, claimed.station_id)


def unconfirmed(tx: Tx, claimed: Claimed, reason: str, now: datetime) -> None:
    """Bytes of the ticket may be in the printer, and it did not confirm them. The job is
    never sent to that printer again (see `edge.store.jobs.next_queued`); it waits for a
    confirmation (`confirm`) or for its copy to be let go to another printer (`release_copy`)."""
    jobs.mark_unconfirmed(tx.conn, claimed.job_key, reason, rfc3339_ms(now))
    add_activity(tx, None, f"{claimed.ticket.kind} ticket delivered to {claimed.printer_id}, "
                 "not confirmed", now, {"job_key": claimed.job_key, "reason": reason},
                 order_id=claimed.order_id)
    tx.emit(JobUnconfirmed(claimed.job_key, claimed.order_id, claimed.station_id,
                           claimed.printer_id, reason))
    sync_records(tx, claimed.order_id, now)


def confirm(tx: Tx, job_keys: Sequence[str], printer_id: str,
            now: datetime) -> list[tuple[str, str, dict[str, Any] | None]]:
    """The printer that held these tickets said ready on the connection that carried them:
    its buffer printed them. Jobs still waiting for that (or whose copy has not been taken
    yet) are printed; a copy already on its way elsewhere is left alone. Returns
    (job_key, order_id, the order's timeline if it changed) for the jobs it changed."""
    done: list[tuple[str, str, dict[str, Any] | None]] = []
    for key in job_keys:
        job = jobs.held_by(tx.conn, key, printer_id)
        if job is None or job.state not in (JobState.UNCONFIRMED, JobState.QUEUED,
                                            JobState.WAITING):
            continue
        jobs.mark_confirmed(tx.conn, key, printer_id, rfc3339_ms(now))
        add_activity(tx, None, f"{job.kind} ticket confirmed printed at {printer_id} "
                     "after the fault cleared", now, {"job_key": key}, order_id=job.order_id)
        refresh_progress(tx, job.order_id, now)
        tx.emit(JobConfirmed(key, job.order_id, printer_id))
        done.append((key, job.order_id, sync_records(tx, job.order_id, now)))
    return done


def release_copy(tx: Tx, job_key: str, printers: Sequence[str], now: datetime) -> str | None:
    """An unconfirmed ticket waited long enough: let one marked copy go to another printer of
    its station (`printers`: the station's primary and backup). Returns the state the job
    went to, or None when it stays unconfirmed: no printer left that may take it, or the
    order was called off (the kitchen was told with a CANCELLED / VOID ticket)."""
    job = jobs.delivered(tx.conn, job_key)
    if job is None or job.state != JobState.UNCONFIRMED:
        return None
    held = job.delivered_to
    if not [p for p in printers if p not in held]:
        return None
    state, why = _back_to(tx, job_key)
    if state is JobState.WITHDRAWN:
        return None
    jobs.release_copy(tx.conn, job_key, state=state,
                      wait_reason=why if state is JobState.WAITING else None,
                      at=rfc3339_ms(now))
    add_activity(tx, None, "Ticket not confirmed: a marked copy may print on another "
                 "printer", now, {"job_key": job_key, "not_on": held}, order_id=job.order_id)
    tx.emit(JobCopyReleased(job_key, job.order_id, state, tuple(held)))
    if state is JobState.QUEUED:
        tx.emit(JobQueued(job_key, job.order_id))
    sync_records(tx, job.order_id, now)
    return state


def fail(tx: Tx, claimed: Claimed, reason: str, now: datetime) -> None:
    jobs.mark_failed(tx.conn, claimed.job_key, reason)
    tx.emit(JobFailed(claimed.job_key, claimed.order_id, reason))
    sync_records(tx, claimed.order_id, now)


def recover_after_crash(tx: Tx) -> list[str]:
    """Jobs left `sending` by a crash may be on paper: queue them again, marked, unless the
    order was held or called off meanwhile (see `_back_to`).

    This is the one case where a ticket may go to the same printer again: the daemon cannot
    know whether the bytes left before it died. It is safe for the printer's buffer because
    every send asks the printer first and writes nothing unless it says ready, and a ready
    printer holds nothing back: whatever it received before the crash is on paper or being
    printed, so the marked copy lands after it, never beside it in the buffer."""
    keys = jobs.sending(tx.conn)
    for key in keys:
        _put_back(tx, key, None, "interrupted while sending", True)
    return keys


def release_due(tx: Tx, now: datetime) -> list[str]:
    """Scheduled jobs whose start time has come are queued (and reported upstream)."""
    stamp = rfc3339_ms(now)
    due = jobs.due_scheduled(tx.conn, stamp)
    if due:
        jobs.queue_scheduled(tx.conn, [key for key, _ in due], stamp)
        for key, order_id in due:
            tx.emit(JobQueued(key, order_id))
        for order_id in {order for _, order in due}:
            sync_records(tx, order_id, now)
    return [key for key, _ in due]


def next_due(conn: Any) -> datetime | None:
    """When the next scheduled job is due (read-only)."""
    at = jobs.next_scheduled(conn)
    return parse_rfc3339(at) if at else None


__all__ = ["Claimed", "claim", "confirm", "fail", "next_due", "printed", "recover_after_crash",
           "release_copy", "release_due", "unclaim", "unconfirmed"]
