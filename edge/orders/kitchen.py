"""Print-job bookkeeping inside the writer transaction: what each station has seen, and
creating, holding and withdrawing jobs.

"Reached a printer" means a job is `printed`, `sending` or `unconfirmed` (its bytes may be on
paper): a job caught mid-send counts as printed for VOID and CANCELLED tickets, so the
kitchen is never left cooking something it was not told to stop.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from edge.clock import rfc3339_ms

REACHED = ("printed", "sending", "unconfirmed")
OPEN = ("waiting", "queued")
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


def order_jobs(conn: sqlite3.Connection, order_id: str) -> list[JobRow]:
    rows = conn.execute(
        "SELECT job_key, station_id, kind, change_ref, line_ids, state, wait_reason, "
        "not_before, reprint_of, may_be_duplicate FROM print_jobs WHERE order_id = ? "
        "ORDER BY rowid",
        (order_id,),
    ).fetchall()
    return [
        JobRow(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6], r[7], r[8], bool(r[9]))
        for r in rows
    ]


def food_jobs(jobs: Iterable[JobRow]) -> list[JobRow]:
    return [j for j in jobs if j.kind in FOOD_KINDS and j.reprint_of is None]


def cooks(kind: str, change_ref: str) -> bool:
    """A ticket that tells a station to cook: NEW, ADDED, or a later course's FIRE.

    Only these wait while the order is held and are dropped once it is called off; notices
    (VOID, HOLD, CANCELLED, and the FIRE that ends a hold) tell the kitchen to stop or go,
    and are never held back.
    """
    return kind in ("NEW", "ADDED") or (kind == "FIRE" and "-course-" in change_ref)


def reached_lines_by_station(jobs: Iterable[JobRow]) -> dict[str, list[str]]:
    """station -> line ids whose food ticket reached that station's printer, in order."""
    out: dict[str, list[str]] = {}
    for job in food_jobs(jobs):
        if job.reached:
            seen = out.setdefault(job.station_id, [])
            seen.extend(line for line in job.line_ids if line not in seen)
    return out


def any_reached(jobs: Iterable[JobRow]) -> bool:
    return any(j.reached for j in food_jobs(jobs))


def insert_job(
    conn: sqlite3.Connection,
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
    """Insert the job unless its key exists; True when a new job was created."""
    state = "waiting" if wait_reason else "queued"
    cur = conn.execute(
        "INSERT OR IGNORE INTO print_jobs (job_key, order_id, station_id, kind, change_ref, "
        "reprint_of, line_ids, state, wait_reason, not_before, due_at, created_at, queued_at, "
        "note) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            job_key, order_id, station_id, kind, change_ref, reprint_of,
            json.dumps(list(line_ids)), state, wait_reason,
            rfc3339_ms(not_before) if not_before else None,
            rfc3339_ms(due_at) if due_at else None,
            rfc3339_ms(now), None if wait_reason else rfc3339_ms(now), note,
        ),
    )
    return cur.rowcount == 1


def set_wait(conn: sqlite3.Connection, job_key: str, reason: str | None, now: datetime) -> None:
    if reason is None:
        conn.execute(
            "UPDATE print_jobs SET state='queued', wait_reason=NULL, queued_at=? "
            "WHERE job_key=? AND state IN ('waiting','queued')",
            (rfc3339_ms(now), job_key),
        )
    else:
        conn.execute(
            "UPDATE print_jobs SET state='waiting', wait_reason=? "
            "WHERE job_key=? AND state IN ('waiting','queued')",
            (reason, job_key),
        )


def withdraw(conn: sqlite3.Connection, job_key: str, reason: str) -> bool:
    cur = conn.execute(
        "UPDATE print_jobs SET state='withdrawn', reason=? "
        "WHERE job_key=? AND state IN ('waiting','queued')",
        (reason, job_key),
    )
    return cur.rowcount == 1


def set_lines(conn: sqlite3.Connection, job_key: str, line_ids: Sequence[str]) -> None:
    conn.execute("UPDATE print_jobs SET line_ids=? WHERE job_key=?",
                 (json.dumps(list(line_ids)), job_key))


def retract_notices(conn: sqlite3.Connection, order_id: str, station_id: str) -> list[str]:
    """Withdraw the unprinted notices (VOID, HOLD, FIRE, CANCELLED) at a station about lines
    that never reached it after all: a ticket counted as on paper while it was being sent,
    and then left without a byte written. Returns the withdrawn job keys."""
    jobs = order_jobs(conn, order_id)
    reached = set(reached_lines_by_station(jobs).get(station_id, []))
    gone: list[str] = []
    for job in jobs:
        if job.station_id != station_id or job.state not in OPEN or job.reprint_of is not None:
            continue
        if job.kind not in NOTICE_KINDS or cooks(job.kind, job.change_ref):
            continue
        if not reached & set(job.line_ids) and withdraw(
                conn, job.job_key, "the station never received the ticket it was about"):
            gone.append(job.job_key)
    return gone
