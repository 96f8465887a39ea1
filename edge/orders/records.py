"""What the rest of the world learns about an order, written in the same transaction as the
change: activity entries (the order's own log), and outbox records for the upstream:
one `confirmation` per order, `print_job` records for job state changes, and a `status`
record whenever the public timeline changes (CONTRACT sections 6 and 7).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from datetime import datetime
from typing import Any

from edge.clock import rfc3339_ms
from edge.ingest.events import Event
from edge.timeline import build_timeline
from edge.upstream.outbox import add_record


def add_activity(conn: sqlite3.Connection, event: Event | None, what: str, now: datetime,
                 detail: dict[str, Any], *, order_id: str | None = None) -> None:
    env = event.envelope if event else None
    conn.execute(
        "INSERT INTO activities (order_id, event_id, what, channel, device, at, detail) "
        "VALUES (?,?,?,?,?,?,?)",
        (
            env.order_id if env else order_id,
            env.event_id if env else None,
            what,
            env.source.channel if env else "kitchen",
            env.source.device if env else None,
            rfc3339_ms(now),
            json.dumps({k: v for k, v in detail.items() if v is not None}, ensure_ascii=False),
        ),
    )


def confirmation_if_first(conn: sqlite3.Connection, order_id: str, job_key: str,
                          now: datetime) -> None:
    """The customer-notification request, once per order, with its first kitchen job."""
    row = conn.execute(
        "SELECT channel, display_id, fulfillment, scheduled_for FROM orders WHERE order_id=?",
        (order_id,),
    ).fetchone()
    if row is None:
        return
    add_record(
        conn,
        kind="confirmation",
        record_id=f"confirmation:{order_id}",
        order_id=order_id,
        body={
            "order_id": order_id,
            "channel": row[0],
            "display_id": row[1],
            "fulfillment": row[2],
            "scheduled_for": row[3],
            "first_job_key": job_key,
            "status": "Confirmation recorded",
        },
        created_at=now,
    )


def sync_records(conn: sqlite3.Connection, order_id: str, now: datetime, *,
                 timeline: bool = True) -> dict[str, Any] | None:
    """Outbox records for whatever changed about the order since the last call. Returns the
    timeline when it changed (the caller publishes it once committed), else None."""
    jobs = conn.execute(
        "SELECT job_key, station_id, kind, state, printer_id, backup_from, may_be_duplicate, "
        "reprint_of, reason, created_at, printed_at FROM print_jobs "
        "WHERE order_id=? AND state IS NOT reported_state ORDER BY rowid",
        (order_id,),
    ).fetchall()
    for job in jobs:
        add_record(
            conn,
            kind="print_job",
            record_id=f"print_job:{job[0]}:{job[3]}:{rfc3339_ms(now)}",
            order_id=order_id,
            body={
                "job_key": job[0], "station_id": job[1], "kind": job[2], "state": job[3],
                "printer_id": job[4], "backup_from": job[5], "may_be_duplicate": bool(job[6]),
                "reprint_of": job[7], "reason": job[8], "created_at": job[9],
                "printed_at": job[10],
            },
            created_at=now,
        )
        conn.execute("UPDATE print_jobs SET reported_state=state WHERE job_key=?", (job[0],))
    if not timeline:
        return None
    current = build_timeline(conn, order_id)
    if current is None:
        return None
    text = json.dumps(current, sort_keys=True, ensure_ascii=False)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    row = conn.execute("SELECT timeline_digest FROM orders WHERE order_id=?",
                       (order_id,)).fetchone()
    if row is not None and row[0] == digest:
        return None
    conn.execute("UPDATE orders SET timeline_digest=? WHERE order_id=?", (digest, order_id))
    add_record(conn, kind="status", record_id=f"status:{order_id}:{digest}", order_id=order_id,
               body=current, created_at=now)
    return current
