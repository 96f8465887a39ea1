"""What the rest of the world learns about an order, written in the same transaction as the
change: activity entries (the order's own log), and outbox records for the upstream:
one `confirmation` per order, `print_job` records for job state changes, and a `status`
record whenever the public timeline changes (CONTRACT sections 6 and 7).

Each record written is also a `RecordQueued("upstream")` change, and a changed timeline a
`TimelineChanged` one: once committed, the sender wakes and the timeline is published.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from edge.clock import clock_synced, rfc3339_ms
from edge.feed import RecordQueued, TimelineChanged
from edge.orders.events import Event
from edge.orders.timeline import timeline_of
from edge.store import Tx, calls, jobs, orders, outbox
from edge.store.orders import OrderRow

UPSTREAM = "upstream"
# Job states that last while bytes go out (milliseconds, unless a printer hangs): the
# upstream learns where a job settles, not each claim (issue 12: a record each, two per
# order, for states no one upstream acts on).
_PASSING = frozenset({"sending"})
# The text a timeline's digest is taken of: json.dumps(timeline, sort_keys=True,
# ensure_ascii=False), its encoder built once. The digest names the status record
# (`status:{order_id}:{digest}`), so this text must not change.
_DIGEST_JSON = json.JSONEncoder(sort_keys=True, ensure_ascii=False)


def add_activity(tx: Tx, event: Event[Any] | None, what: str, now: datetime,
                 detail: dict[str, Any], *, order_id: str | None = None) -> None:
    env = event.envelope if event else None
    orders.add_activity(
        tx.conn,
        order_id=env.order_id if env else order_id,
        event_id=env.event_id if env else None,
        what=what,
        channel=env.source.channel if env else "kitchen",
        device=env.source.device if env else None,
        at=rfc3339_ms(now),
        detail=detail,
    )


def add_record(tx: Tx, *, kind: str, record_id: str, order_id: str | None,
               body: dict[str, Any], created_at: datetime,
               supersede: bool = True) -> int | None:
    """An outbox record (see `edge.store.outbox.add_record`), announced once committed.
    Written while the box's clock is unsynchronised, its body says so (`clock_synced:
    false`): its times, and the record's `created_at`, may be far off."""
    if not clock_synced():
        body = {**body, "clock_synced": False}
    seq = outbox.add_record(tx.conn, kind=kind, record_id=record_id, order_id=order_id,
                            body=body, created_at=created_at, supersede=supersede)
    if seq is not None:
        tx.emit(RecordQueued(UPSTREAM, order_id))
    return seq


def queue_call(tx: Tx, destination: str, *, order_id: str | None, method: str, path: str,
               body: dict[str, Any] | None, now: datetime,
               call_key: str | None = None) -> int | None:
    """A call to a partner (`edge.store.calls`), sent once committed, in order per order;
    None when `call_key` was queued before (a change applied again calls once)."""
    text = None if body is None else json.dumps(body, ensure_ascii=False,
                                                 separators=(",", ":"))
    call_id = calls.add(tx.conn, destination=destination, order_id=order_id,
                        method=method.upper(), path=path, body=text, at=rfc3339_ms(now),
                        call_key=call_key)
    if call_id is not None:
        tx.emit(RecordQueued(destination, order_id))
    return call_id


def confirmation_if_first(tx: Tx, order_id: str, job_key: str, now: datetime,
                          order: OrderRow | None = None) -> None:
    """The customer-notification request, once per order, with its first kitchen job.
    `order`, when the caller has the row: only fields fixed at creation are read from it."""
    if order is None:
        order = orders.get(tx.conn, order_id)
    if order is None:
        return
    add_record(
        tx,
        kind="confirmation",
        record_id=f"confirmation:{order_id}",
        order_id=order_id,
        body={
            "order_id": order_id,
            "channel": order.channel,
            "display_id": order.display_id,
            "fulfillment": order.fulfillment,
            "scheduled_for": order.scheduled_for,
            "first_job_key": job_key,
            "status": "Confirmation recorded",
        },
        created_at=now,
    )


def sync_records(tx: Tx, order_id: str, now: datetime, *,
                 timeline: bool = True) -> dict[str, Any] | None:
    """Outbox records for whatever changed about the order since the last call. Returns the
    timeline when it changed (also emitted as `TimelineChanged`), else None."""
    stamp = rfc3339_ms(now)
    reported: list[str] = []
    for job in jobs.unreported(tx.conn, order_id):
        if job.state in _PASSING:
            # Reported by the state it settles in (printed, unconfirmed, queued again...);
            # left unreported here, so that state is a change to report.
            continue
        add_record(
            tx,
            kind="print_job",
            record_id=f"print_job:{job.job_key}:{job.state}:{stamp}",
            order_id=order_id,
            body={
                "job_key": job.job_key, "station_id": job.station_id, "kind": job.kind,
                "state": job.state, "printer_id": job.printer_id,
                "backup_from": job.backup_from, "may_be_duplicate": job.may_be_duplicate,
                "reprint_of": job.reprint_of, "reason": job.reason,
                "created_at": job.created_at, "printed_at": job.printed_at,
            },
            created_at=now,
            # A job never reported has no record to supersede.
            supersede=job.reported_state is not None,
        )
        reported.append(job.job_key)
    if reported:
        jobs.mark_reported(tx.conn, reported)
    if not timeline:
        return None
    # One read of the order for both the timeline and its last digest: nothing above
    # writes the order's row.
    order = orders.get(tx.conn, order_id)
    if order is None:
        return None
    current = timeline_of(tx.conn, order)
    text = _DIGEST_JSON.encode(current)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    if order.timeline_digest == digest:
        return None
    orders.set_timeline_digest(tx.conn, order_id, digest)
    # The order's first status (no digest yet) has no earlier one to supersede.
    add_record(tx, kind="status", record_id=f"status:{order_id}:{digest}", order_id=order_id,
               body=current, created_at=now, supersede=order.timeline_digest is not None)
    tx.emit(TimelineChanged(order_id, current))
    return current


__all__ = [
    "UPSTREAM", "add_activity", "add_record", "confirmation_if_first", "queue_call",
    "sync_records",
]
