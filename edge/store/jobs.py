"""The `print_jobs` table: one row per job_key (UNIQUE is what makes "printed once" a
database fact).

Synchronous functions on the caller's `sqlite3.Connection`; none of them commits.

The kitchen's side (creating, holding, releasing, withdrawing: `edge.orders.kitchen`) and
the spooler's (claim, printed, given back, delivered-not-confirmed, confirmed, copied:
`edge.orders.printjobs`) both write through here.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
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
    reported_state: str | None = None    # the last state reported, None: never reported


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
        "reprint_of, reason, created_at, printed_at, reported_state FROM print_jobs "
        "WHERE order_id=? AND state IS NOT reported_state ORDER BY rowid", (order_id,)).fetchall()
    return [JobReport(
        job_key=r["job_key"], station_id=r["station_id"], kind=r["kind"], state=r["state"],
        printer_id=r["printer_id"], backup_from=r["backup_from"],
        may_be_duplicate=bool(r["may_be_duplicate"]), reprint_of=r["reprint_of"],
        reason=r["reason"], created_at=r["created_at"], printed_at=r["printed_at"],
        reported_state=r["reported_state"])
        for r in rows]


def mark_reported(conn: sqlite3.Connection, job_keys: Sequence[str]) -> None:
    conn.executemany("UPDATE print_jobs SET reported_state=state WHERE job_key=?",
                     [(key,) for key in job_keys])


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





# -- the kitchen's side: creating, holding, releasing, withdrawing ------------------------


@dataclass(frozen=True, slots=True)
class OrderJob:
    """One job of an order, as the kitchen's decisions need it."""

    job_key: str
    station_id: str
    kind: str
    change_ref: str
    line_ids: list[str]
    state: str
    wait_reason: str | None
    not_before: str | None
    reprint_of: str | None
    may_be_duplicate: bool


def for_order(conn: sqlite3.Connection, order_id: str) -> list[OrderJob]:
    rows = query(conn,
                 "SELECT job_key, station_id, kind, change_ref, line_ids, state, wait_reason, "
                 "not_before, reprint_of, may_be_duplicate FROM print_jobs WHERE order_id = ? "
                 "ORDER BY rowid", (order_id,)).fetchall()
    return [OrderJob(r["job_key"], r["station_id"], r["kind"], r["change_ref"],
                     list(json.loads(r["line_ids"])), r["state"], r["wait_reason"],
                     r["not_before"], r["reprint_of"], bool(r["may_be_duplicate"]))
            for r in rows]


def add(conn: sqlite3.Connection, *, job_key: str, order_id: str, station_id: str, kind: str,
        change_ref: str, line_ids: Sequence[str], state: str, wait_reason: str | None,
        not_before: str | None, due_at: str | None, created_at: str, queued_at: str | None,
        reprint_of: str | None, note: str | None) -> bool:
    """Insert the job unless its key exists (the key is what makes "printed once" a database
    fact); True when a new job was created."""
    cur = query(conn,
                "INSERT OR IGNORE INTO print_jobs (job_key, order_id, station_id, kind, "
                "change_ref, reprint_of, line_ids, state, wait_reason, not_before, due_at, "
                "created_at, queued_at, note) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (job_key, order_id, station_id, kind, change_ref, reprint_of,
                 json.dumps(list(line_ids)), state, wait_reason, not_before, due_at,
                 created_at, queued_at, note))
    return cur.rowcount == 1


def queue_open(conn: sqlite3.Connection, job_key: str, at: str) -> None:
    """A waiting (or queued) job is queued now."""
    query(conn, "UPDATE print_jobs SET state='queued', wait_reason=NULL, queued_at=? "
                "WHERE job_key=? AND state IN ('waiting','queued')", (at, job_key))


def hold_open(conn: sqlite3.Connection, job_key: str, reason: str) -> None:
    """A waiting (or queued) job waits, for `reason`."""
    query(conn, "UPDATE print_jobs SET state='waiting', wait_reason=? "
                "WHERE job_key=? AND state IN ('waiting','queued')", (reason, job_key))


def withdraw(conn: sqlite3.Connection, job_key: str, reason: str) -> bool:
    cur = query(conn, "UPDATE print_jobs SET state='withdrawn', reason=? "
                      "WHERE job_key=? AND state IN ('waiting','queued')", (reason, job_key))
    return cur.rowcount == 1


def set_lines(conn: sqlite3.Connection, job_key: str, line_ids: Sequence[str]) -> None:
    query(conn, "UPDATE print_jobs SET line_ids=? WHERE job_key=?",
          (json.dumps(list(line_ids)), job_key))


# -- the spooler's side: claim, finish, give back, confirm, copy --------------------------

# True when the printer id bound at its `?` is not among a job's delivered_to printers. Ids
# are slugs ([a-z0-9-]), so the quoted form cannot match a part of another id.
_NOT_HELD_BY = "instr(delivered_to, '\"' || ? || '\"') = 0"


def next_queued(conn: sqlite3.Connection, printer_id: str, stations: Sequence[str],
                copies_for: Sequence[str] = ()) -> str | None:
    """The oldest queued job this printer may take: one of the stations it serves now, or a
    copy of a ticket another printer may hold (a job with delivered_to) for a station it
    backs up. Never a job whose bytes may already be in this printer."""
    # One indexed look per station (print_jobs_queue yields a station's queued jobs in rowid
    # order), then the oldest of those: no sort over the whole queue, however long it is.
    best: tuple[int, str] | None = None
    wanted = [(s, False) for s in stations] + [(s, True) for s in copies_for
                                               if s not in stations]
    for station_id, copies_only in wanted:
        row = query(conn,
                    "SELECT rowid, job_key FROM print_jobs WHERE state='queued' "
                    f"AND station_id=? AND {_NOT_HELD_BY}"
                    + (" AND delivered_to != '[]'" if copies_only else "")
                    + " ORDER BY rowid LIMIT 1", (station_id, printer_id)).fetchone()
        if row is not None and (best is None or int(row["rowid"]) < best[0]):
            best = (int(row["rowid"]), str(row["job_key"]))
    return None if best is None else best[1]


def queued_count(conn: sqlite3.Connection, stations: Sequence[str]) -> int:
    if not stations:
        return 0
    # One count per state, so that each reads its own partial index (print_jobs_queue,
    # print_jobs_sending), not the table.
    marks = ",".join("?" * len(stations))
    row = query(conn,
                f"SELECT (SELECT COUNT(*) FROM print_jobs WHERE state = 'queued' "
                f"AND station_id IN ({marks})) + (SELECT COUNT(*) FROM print_jobs "
                f"WHERE state = 'sending' AND station_id IN ({marks})) AS n",
                (*stations, *stations)).fetchone()
    return int(row["n"])


def unconfirmed_on(conn: sqlite3.Connection, printer_id: str | None = None) -> list[str]:
    """Jobs delivered, not confirmed: at one printer, or at any."""
    if printer_id is None:
        rows = query(conn, "SELECT job_key FROM print_jobs WHERE state='unconfirmed' "
                           "ORDER BY rowid").fetchall()
    else:
        rows = query(conn, "SELECT job_key FROM print_jobs WHERE state='unconfirmed' "
                           "AND printer_id=? ORDER BY rowid", (printer_id,)).fetchall()
    return [str(r["job_key"]) for r in rows]


@dataclass(frozen=True, slots=True)
class Unconfirmed:
    job_key: str
    printer_id: str
    station_id: str


def unconfirmed_jobs(conn: sqlite3.Connection) -> list[Unconfirmed]:
    return [Unconfirmed(str(r["job_key"]), str(r["printer_id"]), str(r["station_id"]))
            for r in query(conn, "SELECT job_key, printer_id, station_id FROM print_jobs "
                                 "WHERE state='unconfirmed' ORDER BY rowid")]


@dataclass(frozen=True, slots=True)
class ToPrint:
    """A job with its order, everything its ticket needs, read in the claim's snapshot."""

    job_key: str
    order_id: str
    station_id: str
    kind: str
    line_ids: list[str]
    reprint_of: str | None
    may_be_duplicate: bool
    created_at: str
    not_before: str | None
    due_at: str | None
    note: str | None
    display_id: str | None
    fulfillment: str | None
    table_label: str | None
    courier: str | None
    channel: str
    order_note: str | None
    service: str | None = None


def to_print(conn: sqlite3.Connection, job_key: str) -> ToPrint | None:
    r = query(conn,
              "SELECT j.order_id, j.station_id, j.kind, j.line_ids, j.reprint_of, "
              "j.may_be_duplicate, j.created_at, j.not_before, j.due_at, j.note, o.display_id, "
              "o.fulfillment, o.table_label, o.courier, o.channel, o.note AS order_note, "
              "o.service FROM print_jobs j JOIN orders o ON o.order_id = j.order_id "
              "WHERE j.job_key=?",
              (job_key,)).fetchone()
    if r is None:
        return None
    return ToPrint(job_key, r["order_id"], r["station_id"], r["kind"],
                   list(json.loads(r["line_ids"])), r["reprint_of"], bool(r["may_be_duplicate"]),
                   r["created_at"], r["not_before"], r["due_at"], r["note"], r["display_id"],
                   r["fulfillment"], r["table_label"], r["courier"], r["channel"],
                   r["order_note"], r["service"])


def mark_sending(conn: sqlite3.Connection, job_key: str, printer_id: str,
                 backup_from: str | None, at: str) -> None:
    query(conn, "UPDATE print_jobs SET state='sending', printer_id=?, backup_from=?, sent_at=?, "
                "attempts=attempts+1 WHERE job_key=?", (printer_id, backup_from, at, job_key))


def mark_printed(conn: sqlite3.Connection, job_key: str, at: str) -> None:
    query(conn, "UPDATE print_jobs SET state='printed', printed_at=?, reason=NULL "
                "WHERE job_key=? AND state='sending'", (at, job_key))


@dataclass(frozen=True, slots=True)
class Standing:
    """What decides where a job goes back to: the job's kind, and its order's status."""

    kind: str
    change_ref: str
    line_ids: list[str]
    reprint_of: str | None
    order_status: str


def standing(conn: sqlite3.Connection, job_key: str) -> Standing | None:
    r = query(conn, "SELECT j.kind, j.change_ref, j.line_ids, j.reprint_of, o.status "
                    "FROM print_jobs j JOIN orders o ON o.order_id = j.order_id "
                    "WHERE j.job_key=?", (job_key,)).fetchone()
    if r is None:
        return None
    return Standing(r["kind"], r["change_ref"], list(json.loads(r["line_ids"])),
                    r["reprint_of"], r["status"])


def has_active_line(conn: sqlite3.Connection, job_key: str, line_ids: Sequence[str]) -> bool:
    """Whether any of these lines of the job's order is not voided."""
    if not line_ids:
        return False
    return query(conn,
                 f"SELECT 1 FROM print_jobs j JOIN order_lines l ON l.order_id = j.order_id "
                 f"WHERE j.job_key=? AND l.state != 'voided' AND l.line_id IN "
                 f"({','.join('?' * len(line_ids))}) LIMIT 1", (job_key, *line_ids)
                 ).fetchone() is not None


def put_back(conn: sqlite3.Connection, job_key: str, *, state: str, reason: str | None,
             wait_reason: str | None, maybe_on_paper: bool) -> None:
    """A `sending` job goes back (queued, waiting or withdrawn)."""
    query(conn, "UPDATE print_jobs SET state=?, reason=?, wait_reason=?, "
                "may_be_duplicate = may_be_duplicate OR ? WHERE job_key=? AND state='sending'",
          (state, reason, wait_reason, 1 if maybe_on_paper else 0, job_key))


def mark_unconfirmed(conn: sqlite3.Connection, job_key: str, reason: str, at: str) -> None:
    """Bytes of the ticket may be in the printer it was sent to: never again into that one."""
    query(conn, "UPDATE print_jobs SET state='unconfirmed', reason=?, unconfirmed_at=?, "
                "delivered_to = json_insert(delivered_to, '$[#]', printer_id) "
                "WHERE job_key=? AND state='sending'", (reason, at, job_key))


@dataclass(frozen=True, slots=True)
class Held:
    order_id: str
    kind: str
    state: str


def held_by(conn: sqlite3.Connection, job_key: str, printer_id: str) -> Held | None:
    """The job, if its bytes may be in this printer."""
    r = query(conn, f"SELECT order_id, kind, state FROM print_jobs WHERE job_key=? AND "
                    f"NOT {_NOT_HELD_BY}", (job_key, printer_id)).fetchone()
    return None if r is None else Held(r["order_id"], r["kind"], r["state"])


def mark_confirmed(conn: sqlite3.Connection, job_key: str, printer_id: str, at: str) -> None:
    query(conn, "UPDATE print_jobs SET state='printed', printed_at=?, printer_id=?, "
                "reason=NULL, wait_reason=NULL WHERE job_key=?", (at, printer_id, job_key))


@dataclass(frozen=True, slots=True)
class Delivered:
    order_id: str
    state: str
    delivered_to: list[str]


def delivered(conn: sqlite3.Connection, job_key: str) -> Delivered | None:
    r = query(conn, "SELECT order_id, state, delivered_to FROM print_jobs WHERE job_key=?",
              (job_key,)).fetchone()
    return None if r is None else Delivered(r["order_id"], r["state"],
                                            list(json.loads(r["delivered_to"])))


def release_copy(conn: sqlite3.Connection, job_key: str, *, state: str,
                 wait_reason: str | None, at: str) -> None:
    """An unconfirmed job's marked copy may print elsewhere: queued (or waiting) again."""
    query(conn, "UPDATE print_jobs SET state=?, wait_reason=?, may_be_duplicate=1, queued_at=? "
                "WHERE job_key=?", (state, wait_reason, at, job_key))


def mark_failed(conn: sqlite3.Connection, job_key: str, reason: str) -> None:
    query(conn, "UPDATE print_jobs SET state='failed', reason=? WHERE job_key=?",
          (reason, job_key))


def sending(conn: sqlite3.Connection) -> list[str]:
    return [str(r["job_key"]) for r in query(
        conn, "SELECT job_key FROM print_jobs WHERE state='sending'")]


def due_scheduled(conn: sqlite3.Connection, at: str) -> list[tuple[str, str]]:
    """(job_key, order_id) of scheduled jobs whose start time has come."""
    return [(str(r["job_key"]), str(r["order_id"])) for r in query(
        conn, "SELECT job_key, order_id FROM print_jobs WHERE state='waiting' "
              "AND wait_reason='scheduled' AND not_before <= ?", (at,))]


def queue_scheduled(conn: sqlite3.Connection, job_keys: Sequence[str], at: str) -> None:
    conn.executemany(
        "UPDATE print_jobs SET state='queued', wait_reason=NULL, queued_at=? WHERE job_key=?",
        [(at, key) for key in job_keys])


def next_scheduled(conn: sqlite3.Connection) -> str | None:
    row = query(conn, "SELECT MIN(not_before) AS at FROM print_jobs WHERE state='waiting' "
                      "AND wait_reason='scheduled'").fetchone()
    return None if row is None or row["at"] is None else str(row["at"])


__all__ = [
    "Delivered",
    "Held",
    "JobReport",
    "JobSource",
    "OrderJob",
    "Standing",
    "TimelineJob",
    "ToPrint",
    "Unconfirmed",
    "add",
    "counts_by_state",
    "delivered",
    "detail",
    "due_scheduled",
    "for_order",
    "for_timeline",
    "has_active_line",
    "held_by",
    "hold_open",
    "listing",
    "mark_confirmed",
    "mark_failed",
    "mark_printed",
    "mark_reported",
    "mark_sending",
    "mark_unconfirmed",
    "next_queued",
    "next_scheduled",
    "put_back",
    "queue_open",
    "queue_scheduled",
    "queued_count",
    "release_copy",
    "sending",
    "set_lines",
    "source_of",
    "standing",
    "to_print",
    "unconfirmed_by_printer",
    "unconfirmed_jobs",
    "unconfirmed_on",
    "unreported",
    "withdraw",
]
