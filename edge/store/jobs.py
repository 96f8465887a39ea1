"""The `print_jobs` table: one row per job_key (UNIQUE is what makes "printed once" a
database fact).

Synchronous functions on the caller's `sqlite3.Connection`; none of them commits.

Not all of the table's SQL is here yet: the spooler's claim / finish / give-back statements
(edge/printing/jobs.py) and the kitchen's create / hold / withdraw statements
(edge/orders/kitchen.py) move here once issue 10's rework of them has landed.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from edge.store.rows import query


@dataclass(frozen=True, slots=True)
class JobSource:
    """What a reprint copies from the job it reprints."""

    order_id: str
    station_id: str
    kind: str
    change_ref: str
    line_ids: list[str]
    due_at: str | None


@dataclass(frozen=True, slots=True)
class JobReport:
    """A job whose state the upstream has not been told yet (a print_job record)."""

    job_key: str
    station_id: str
    kind: str
    state: str
    printer_id: str | None
    backup_from: str | None
    may_be_duplicate: bool
    reprint_of: str | None
    reason: str | None
    created_at: str
    printed_at: str | None


@dataclass(frozen=True, slots=True)
class TimelineJob:
    job_key: str
    state: str
    created_at: str
    queued_at: str | None
    printed_at: str | None


def source_of(conn: sqlite3.Connection, job_key: str) -> JobSource | None:
    row = query(conn,
        "SELECT order_id, station_id, kind, change_ref, line_ids, due_at "
        "FROM print_jobs WHERE job_key=?", (job_key,)).fetchone()
    if row is None:
        return None
    return JobSource(str(row["order_id"]), str(row["station_id"]), str(row["kind"]),
                     str(row["change_ref"]), list(json.loads(row["line_ids"])), row["due_at"])


def unreported(conn: sqlite3.Connection, order_id: str) -> list[JobReport]:
    rows = query(conn,
        "SELECT job_key, station_id, kind, state, printer_id, backup_from, may_be_duplicate, "
        "reprint_of, reason, created_at, printed_at FROM print_jobs "
        "WHERE order_id=? AND state IS NOT reported_state ORDER BY rowid", (order_id,)).fetchall()
    return [JobReport(
        job_key=r["job_key"], station_id=r["station_id"], kind=r["kind"], state=r["state"],
        printer_id=r["printer_id"], backup_from=r["backup_from"],
        may_be_duplicate=bool(r["may_be_duplicate"]), reprint_of=r["reprint_of"],
        reason=r["reason"], created_at=r["created_at"], printed_at=r["printed_at"])
        for r in rows]


def mark_reported(conn: sqlite3.Connection, job_key: str) -> None:
    query(conn, "UPDATE print_jobs SET reported_state=state WHERE job_key=?", (job_key,))


def for_timeline(conn: sqlite3.Connection, order_id: str) -> list[TimelineJob]:
    """The order's original kitchen jobs (no reprints, no test tickets), the initial
    ticket first, then by creation."""
    rows = query(conn,
        "SELECT job_key, state, created_at, queued_at, printed_at FROM print_jobs"
        " WHERE order_id = ? AND reprint_of IS NULL AND kind != 'TEST'"
        " ORDER BY change_ref != 'initial', created_at, rowid", (order_id,)).fetchall()
    return [TimelineJob(str(r["job_key"]), str(r["state"]), str(r["created_at"]),
                        r["queued_at"], r["printed_at"]) for r in rows]


def counts_by_state(conn: sqlite3.Connection) -> dict[str, int]:
    return {str(r["state"]): int(r["n"]) for r in query(conn,
        "SELECT state, COUNT(*) AS n FROM print_jobs GROUP BY state")}


def listing(conn: sqlite3.Connection, *, state: str | None = None,
            order_id: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """Recent jobs for the operator, newest first."""
    sql = ("SELECT job_key, order_id, station_id, kind, state, printer_id, attempts, "
           "may_be_duplicate, backup_from, created_at, printed_at, reason FROM print_jobs")
    where: list[str] = []
    args: list[Any] = []
    if state:
        where.append("state = ?")
        args.append(state)
    if order_id:
        where.append("order_id = ?")
        args.append(order_id)
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY rowid DESC LIMIT ?"
    return [dict(r) for r in query(conn, sql, (*args, limit)).fetchall()]


def unconfirmed_by_printer(conn: sqlite3.Connection) -> dict[str, list[str]]:
    """printer_id -> job keys delivered there, not confirmed (may be on paper, may not)."""
    out: dict[str, list[str]] = {}
    for row in query(conn, "SELECT printer_id, job_key FROM print_jobs "
                           "WHERE state='unconfirmed' ORDER BY rowid"):
        out.setdefault(row["printer_id"], []).append(row["job_key"])
    return out


def detail(conn: sqlite3.Connection, job_key: str) -> dict[str, Any] | None:
    row = query(conn, "SELECT * FROM print_jobs WHERE job_key = ?", (job_key,)).fetchone()
    if row is None:
        return None
    job = dict(row)
    job["line_ids"] = json.loads(job["line_ids"])
    return job


__all__ = [
    "JobReport",
    "JobSource",
    "TimelineJob",
    "counts_by_state",
    "detail",
    "for_timeline",
    "listing",
    "mark_reported",
    "source_of",
    "unconfirmed_by_printer",
    "unreported",
]
