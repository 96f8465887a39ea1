"""Print-job bookkeeping inside the writer transaction: what each station has seen, and
creating, holding and withdrawing jobs. The SQL is `edge.store.jobs`'; every job created,
queued or withdrawn here is also a change on the transaction (`JobCreated`, `JobQueued`,
`JobWithdrawn`).

"Reached a printer" means a job is `printed`, `sending` or `unconfirmed` (its bytes may be on
paper): a job caught mid-send counts as printed for VOID and CANCELLED tickets, so the
kitchen is never left cooking something it was not told to stop.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from edge.clock import rfc3339_ms
from edge.feed import JobCreated, JobQueued, JobWithdrawn
from edge.store import Tx, jobs


class JobState(StrEnum):
    WAITING = "waiting"            # held, a later course, or scheduled
    QUEUED = "queued"
    SENDING = "sending"
    UNCONFIRMED = "unconfirmed"    # delivered, not confirmed
    PRINTED = "printed"
    FAILED = "failed"
    WITHDRAWN = "withdrawn"


REACHED = (JobState.PRINTED, JobState.SENDING, JobState.UNCONFIRMED)
OPEN = (JobState.WAITING, JobState.QUEUED)
FOOD_KINDS = ("NEW", "ADDED", "FIRE")
NOTICE_KINDS = ("VOID", "HOLD", "FIRE", "CANCELLED")


@dataclass
class JobRow:
    job_key: str
    station_id: str
    kind: str
    change_ref: str
    line_ids: list[str]
    state: str
    wait_reason: str | None
    not_before: str | None
    reprint_of: str | None
    may_be_duplicate: bool = False

    @property
    def reached(self) -> bool:
        """On paper, or may be: sending now, or given back after its bytes may have reached
        the printer (a crash mid-send, a send that failed half-way). A void, cancel or hold
        must tell the station about such a ticket too."""
        return self.state in REACHED or (self.state in OPEN and self.may_be_duplicate)


def order_jobs(tx: Tx, order_id: str) -> list[JobRow]:
    return [JobRow(j.job_key, j.station_id, j.kind, j.change_ref, j.line_ids, j.state,
                   j.wait_reason, j.not_before, j.reprint_of, j.may_be_duplicate)
            for j in jobs.for_order(tx.conn, order_id)]


def food_jobs(rows: Iterable[JobRow]) -> list[JobRow]:
    return [j for j in rows if j.kind in FOOD_KINDS and j.reprint_of is None]


def cooks(kind: str, change_ref: str) -> bool:
    """A ticket that tells a station to cook: NEW, ADDED, or a later course's FIRE.

    Only these wait while the order is held and are dropped once it is called off; notices
    (VOID, HOLD, CANCELLED, and the FIRE that ends a hold) tell the kitchen to stop or go,
    and are never held back.
    """
    return kind in ("NEW", "ADDED") or (kind == "FIRE" and "-course-" in change_ref)


def reached_lines_by_station(rows: Iterable[JobRow]) -> dict[str, list[str]]:
    """station -> line ids whose food ticket reached that station's printer, in order."""
    out: dict[str, list[str]] = {}
    for job in food_jobs(rows):
        if job.reached:
            seen = out.setdefault(job.station_id, [])
            seen.extend(line for line in job.line_ids if line not in seen)
    return out


def any_reached(rows: Iterable[JobRow]) -> bool:
    return any(j.reached for j in food_jobs(rows))


def insert_job(
    tx: Tx,
    *,
    job_key: str,
    order_id: str,
    station_id: str,
    kind: str,
    change_ref: str,
    line_ids: Sequence[str],
    now: datetime,
    wait_reason: str | None = None,
    not_before: datetime | None = None,
    due_at: datetime | None = None,
    reprint_of: str | None = None,
    note: str | None = None,
) -> bool:
    """Create the job unless its key exists; True when a new job was created."""
    state = JobState.WAITING if wait_reason else JobState.QUEUED
    stamp = rfc3339_ms(now)
    created = jobs.add(
        tx.conn, job_key=job_key, order_id=order_id, station_id=station_id, kind=kind,
        change_ref=change_ref, line_ids=line_ids, state=state, wait_reason=wait_reason,
        not_before=rfc3339_ms(not_before) if not_before else None,
        due_at=rfc3339_ms(due_at) if due_at else None, created_at=stamp,
        queued_at=None if wait_reason else stamp, reprint_of=reprint_of, note=note)
    if created:
        tx.emit(JobCreated(job_key, order_id, station_id, kind, state))
        if state is JobState.QUEUED:
            tx.emit(JobQueued(job_key, order_id, station_id))
    return created


def set_wait(tx: Tx, order_id: str, job: JobRow, reason: str | None, now: datetime) -> None:
    """An open job is queued now (`reason` None) or waits for `reason`."""
    if reason is None:
        jobs.queue_open(tx.conn, job.job_key, rfc3339_ms(now))
        tx.emit(JobQueued(job.job_key, order_id, job.station_id))
    else:
        jobs.hold_open(tx.conn, job.job_key, reason)


def withdraw(tx: Tx, order_id: str, job_key: str, reason: str) -> bool:
    if jobs.withdraw(tx.conn, job_key, reason):
        tx.emit(JobWithdrawn(job_key, order_id, reason))
        return True
    return False


def set_lines(tx: Tx, job_key: str, line_ids: Sequence[str]) -> None:
    jobs.set_lines(tx.conn, job_key, line_ids)


def retract_notices(tx: Tx, order_id: str, station_id: str) -> list[str]:
    """Withdraw the unprinted notices (VOID, HOLD, FIRE, CANCELLED) at a station about lines
    that never reached it after all: a ticket counted as on paper while it was being sent,
    and then left without a byte written. Returns the withdrawn job keys."""
    rows = order_jobs(tx, order_id)
    reached = set(reached_lines_by_station(rows).get(station_id, []))
    gone: list[str] = []
    for job in rows:
        if job.station_id != station_id or job.state not in OPEN or job.reprint_of is not None:
            continue
        if job.kind not in NOTICE_KINDS or cooks(job.kind, job.change_ref):
            continue
        if not reached & set(job.line_ids) and withdraw(
                tx, order_id, job.job_key, "the station never received the ticket it was about"):
            gone.append(job.job_key)
    return gone
