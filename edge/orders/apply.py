"""Applying one order event inside the writer transaction.

Everything an event causes (the order's new state, its lines, its activity entry, its print
jobs, its outbox records) is written in the caller's transaction, so it is committed with
the event or not at all. A refused event raises `Rejected`; the caller rolls back to its
savepoint and dead-letters the message.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from edge.clock import rfc3339_ms
from edge.config.models import StationConfig
from edge.ingest.events import (
    Accepted,
    Cancelled,
    CourseFired,
    Event,
    Item,
    ItemsAdded,
    ItemsComplimented,
    ItemsVoided,
    OrderCreated,
    PaymentAdded,
    Refunded,
    Rejected,
    RejectedByRestaurant,
)
from edge.orders import kitchen, status
from edge.orders.records import add_activity, confirmation_if_first
from edge.printing.routing import job_key, line_set_ref, route


@dataclass(frozen=True)
class Plan:
    """The part of the station config that decides where tickets go."""

    stations: tuple[StationConfig, ...]
    default_station: str | None

    def lead(self, station_id: str) -> timedelta:
        for station in self.stations:
            if station.id == station_id:
                return timedelta(minutes=station.lead_minutes)
        return timedelta(minutes=20)


@dataclass
class Applied:
    order_id: str
    effect: str                       # "applied" or "repeat" (a change the order already has)
    # Jobs this event made printable: created queued, or released from a hold or a course
    # wait. The caller wakes the spooler for them; without it a FIRE waits for its poll.
    new_jobs: list[str] = field(default_factory=list)


@dataclass
class _Order:
    order_id: str
    channel: str
    status: str
    held_from: str | None
    stage: str
    fulfillment: str | None
    hold_count: int
    fired_course: int | None
    paid_cents: int
    refunded_cents: int
    scheduled_for: str | None


def _load(conn: sqlite3.Connection, order_id: str) -> _Order | None:
    row = conn.execute(
        "SELECT order_id, channel, status, held_from, kitchen_stage, fulfillment, hold_count, "
        "fired_course, paid_cents, refunded_cents, scheduled_for FROM orders WHERE order_id=?",
        (order_id,),
    ).fetchone()
    return _Order(*row) if row else None


def _refuse(current: str, target: str, why: str | None = None) -> Rejected:
    return status.TransitionRefused(current, target, why)


class Applier:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan

    def apply(self, conn: sqlite3.Connection, event: Event, now: datetime) -> Applied:
        order = _load(conn, event.order_id)
        if event.type == "order.created":
            return self._created(conn, event, order, now)
        if order is None:
            raise Rejected(f"order '{event.order_id}' is unknown: no order.created was applied")
        handler = getattr(self, "_" + event.type.removeprefix("order."))
        result: Applied = handler(conn, event, order, now)
        return result

    # -- helpers -----------------------------------------------------------------------

    def _set(self, conn: sqlite3.Connection, order_id: str, now: datetime, **cols: Any) -> None:
        assigns = ", ".join(f"{k}=?" for k in cols)
        conn.execute(f"UPDATE orders SET {assigns}, updated_at=? WHERE order_id=?",
                     (*cols.values(), rfc3339_ms(now), order_id))

    def _new_job(self, conn: sqlite3.Connection, event: Event, result: Applied, now: datetime,
                 **kw: Any) -> None:
        if kitchen.insert_job(conn, order_id=event.order_id, now=now, **kw):
            result.new_jobs.append(kw["job_key"])
            confirmation_if_first(conn, event.order_id, kw["job_key"], now)

    def _lines(self, conn: sqlite3.Connection, order_id: str, batch_ref: str,
               items: Sequence[Item]) -> None:
        conn.executemany(
            "INSERT INTO order_lines (order_id, line_id, batch_ref, name, qty, category, "
            "modifiers, note, allergens, course) VALUES (?,?,?,?,?,?,?,?,?,?)",
            [
                (order_id, i.line_id, batch_ref, i.name, i.qty, i.category,
                 json.dumps(i.modifiers, ensure_ascii=False), i.note,
                 json.dumps(i.allergens, ensure_ascii=False), i.course)
                for i in items
            ],
        )

    def _food_jobs(self, conn: sqlite3.Connection, event: Event, result: Applied,
                   order: _Order, items: Sequence[Item], kind: str, change: str,
                   now: datetime, scheduled_for: datetime | None = None) -> None:
        """Route items to stations; later courses and held or scheduled orders wait."""
        first_course = order.fired_course
        by_line = {i.line_id: i for i in items}
        for station_id, line_ids in route(items, self.plan.stations,
                                          self.plan.default_station).items():
            groups: dict[int | None, list[str]] = {}
            for line_id in line_ids:
                course = by_line[line_id].course
                waits = course is not None and first_course is not None and course > first_course
                groups.setdefault(course if waits else None, []).append(line_id)
            for course, lines in groups.items():
                wait: str | None = None
                not_before: datetime | None = None
                if course is not None:
                    wait, ref, job_kind = "course", f"{change}-course-{course}", "FIRE"
                else:
                    ref, job_kind = change, kind
                if scheduled_for is not None:
                    not_before = scheduled_for - self.plan.lead(station_id)
                    if wait is None and not_before > now:
                        wait = "scheduled"
                # A later course waits for its course even while held: resume releases
                # only what the hold stopped, and course_fired re-holds it if need be.
                if order.status == "held" and wait != "course":
                    wait = "held"
                self._new_job(conn, event, result, now,
                              job_key=job_key(event.order_id, ref, station_id),
                              station_id=station_id, kind=job_kind, change_ref=ref,
                              line_ids=lines, wait_reason=wait, not_before=not_before,
                              due_at=scheduled_for)

    def _notice_jobs(self, conn: sqlite3.Connection, event: Event, result: Applied,
                     kind: str, change: str, now: datetime,
                     lines_by_station: dict[str, list[str]], note: str | None = None) -> None:
        """HOLD / FIRE / CANCELLED / VOID tickets, only where food tickets already printed."""
        for station_id, lines in lines_by_station.items():
            self._new_job(conn, event, result, now,
                          job_key=job_key(event.order_id, change, station_id),
                          station_id=station_id, kind=kind, change_ref=change, line_ids=lines,
                          note=note)

    def _call_off(self, conn: sqlite3.Connection, event: Event, order: _Order,
                  result: Applied, now: datetime, why: str) -> str:
        """Cancel or void by the evidence: did any ticket of the order reach a printer?"""
        jobs = kitchen.order_jobs(conn, order.order_id)
        target = "cancelled" if kitchen.any_reached(jobs) else "void"
        current = order.status
        if current not in status.WORKING:
            raise _refuse(current, target)
        status.check(current, target)
        for job in jobs:
            if job.state in kitchen.OPEN:
                kitchen.withdraw(conn, job.job_key, f"order {target}: {why}")
        if target == "cancelled":
            reached = kitchen.reached_lines_by_station(jobs)
            active = _active_lines(conn, order.order_id, include_voided=False)
            self._notice_jobs(conn, event, result, "CANCELLED", "cancel", now,
                              {s: [x for x in ls if x in active] for s, ls in reached.items()},
                              note=why)
        self._set(conn, order.order_id, now, status=target, held_from=None)
        add_activity(conn, event, f"Order {'cancelled' if target == 'cancelled' else 'voided'}",
                     now, {"reason": why, "status": target})
        return target

    # -- handlers ----------------------------------------------------------------------

    def _created(self, conn: sqlite3.Connection, event: Event, order: _Order | None,
                 now: datetime) -> Applied:
        result = Applied(event.order_id, "applied")
        if order is not None:
            # A platform repeating the order under a new event_id: the kitchen already has it.
            return _repeat(conn, event, result, "Order created", now)
        data: OrderCreated = event.data
        env = event.envelope
        courses = [i.course for i in data.items if i.course is not None]
        first_course = min(courses) if courses else None
        conn.execute(
            "INSERT INTO orders (order_id, channel, device, display_id, fulfillment, table_label,"
            " courier, note, status, kitchen_stage, scheduled_for, fired_course, created_at,"
            " updated_at, intake_event_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                event.order_id, env.source.channel, env.source.device, data.display_id,
                data.fulfillment.type, data.fulfillment.table, data.fulfillment.courier,
                data.note, "created", "received",
                rfc3339_ms(data.scheduled_for) if data.scheduled_for else None,
                first_course, rfc3339_ms(now), rfc3339_ms(now), event.event_id,
            ),
        )
        self._lines(conn, event.order_id, "initial", data.items)
        add_activity(conn, event, "Order created", now, {"items": len(data.items)})
        created = _load(conn, event.order_id)
        assert created is not None
        self._food_jobs(conn, event, result, created, data.items, "NEW", "new", now,
                        data.scheduled_for)
        return result

    def _items_added(self, conn: sqlite3.Connection, event: Event, order: _Order,
                     now: datetime) -> Applied:
        data: ItemsAdded = event.data
        result = Applied(order.order_id, "applied")
        batch_ref = f"batch:{data.batch_id}"
        if conn.execute("SELECT 1 FROM order_lines WHERE order_id=? AND batch_ref=? LIMIT 1",
                        (order.order_id, batch_ref)).fetchone():
            return _repeat(conn, event, result, f"Items batch {data.batch_id}", now)
        if order.status not in status.WORKING:
            raise _refuse(order.status, "partially_sent", "items cannot be added to a "
                          f"{order.status} order")
        clash = conn.execute(
            f"SELECT line_id FROM order_lines WHERE order_id=? AND line_id IN "
            f"({','.join('?' * len(data.items))})",
            (order.order_id, *[i.line_id for i in data.items]),
        ).fetchone()
        if clash:
            raise Rejected(f"data.items: line_id '{clash[0]}' is already on the order")
        self._lines(conn, order.order_id, batch_ref, data.items)
        add_activity(conn, event, "Items added", now,
                     {"batch_id": data.batch_id, "items": len(data.items)})
        sched = _when(order.scheduled_for)
        self._food_jobs(conn, event, result, order, data.items, "ADDED",
                        f"add-{data.batch_id}", now, sched if sched and sched > now else None)
        refresh_progress(conn, order.order_id, now)
        return result

    def _items_voided(self, conn: sqlite3.Connection, event: Event, order: _Order,
                      now: datetime) -> Applied:
        data: ItemsVoided = event.data
        result = Applied(order.order_id, "applied")
        states = _line_states(conn, order.order_id)
        unknown = [x for x in data.line_ids if x not in states]
        if unknown:
            raise Rejected(f"data.line_ids: unknown line_id '{unknown[0]}' on this order")
        fresh = [x for x in dict.fromkeys(data.line_ids) if states[x] != "voided"]
        if not fresh:
            return _repeat(conn, event, result, "Items voided", now)
        if order.status not in status.WORKING:
            raise _refuse(order.status, "void", "its items can no longer be voided")
        conn.executemany("UPDATE order_lines SET state='voided' WHERE order_id=? AND line_id=?",
                         [(order.order_id, x) for x in fresh])
        jobs = kitchen.order_jobs(conn, order.order_id)
        reached = kitchen.reached_lines_by_station(jobs)
        gone = set(fresh)
        # Lines not yet on paper are simply taken off the waiting job.
        for job in kitchen.food_jobs(jobs):
            if job.state in kitchen.OPEN and gone & set(job.line_ids):
                left = [x for x in job.line_ids if x not in gone]
                if left:
                    kitchen.set_lines(conn, job.job_key, left)
                else:
                    kitchen.withdraw(conn, job.job_key, "all its lines were voided")
        change = line_set_ref("void", fresh)
        self._notice_jobs(conn, event, result, "VOID", change, now,
                          {s: [x for x in ls if x in gone] for s, ls in reached.items()
                           if gone & set(ls)}, note=data.reason)
        add_activity(conn, event, "Items voided", now,
                     {"line_ids": fresh, "reason": data.reason})
        if not _active_lines(conn, order.order_id, include_voided=False):
            # Every line called off one by one: the order itself is called off (seed 003).
            fresh_order = _load(conn, order.order_id)
            assert fresh_order is not None
            self._call_off(conn, event, fresh_order, result, now, "every item was voided")
        else:
            refresh_progress(conn, order.order_id, now)
        return result

    def _held(self, conn: sqlite3.Connection, event: Event, order: _Order,
              now: datetime) -> Applied:
        result = Applied(order.order_id, "applied")
        if order.status == "held":
            return _repeat(conn, event, result, "Order held", now)
        status.check(order.status, "held")
        count = order.hold_count + 1
        jobs = kitchen.order_jobs(conn, order.order_id)
        for job in jobs:
            if job.state in kitchen.OPEN and job.wait_reason != "course" \
                    and job.reprint_of is None and kitchen.cooks(job.kind, job.change_ref):
                kitchen.set_wait(conn, job.job_key, "held", now)
        self._set(conn, order.order_id, now, status="held", held_from=order.status,
                  hold_count=count)
        self._notice_jobs(conn, event, result, "HOLD", f"hold-{count}", now,
                          kitchen.reached_lines_by_station(jobs))
        add_activity(conn, event, "Order held", now, {"returns_to": order.status})
        return result

    def _resumed(self, conn: sqlite3.Connection, event: Event, order: _Order,
                 now: datetime) -> Applied:
        result = Applied(order.order_id, "applied")
        if order.status != "held":
            if order.hold_count > 0 and order.status in status.WORKING:
                return _repeat(conn, event, result, "Order resumed", now)
            raise _refuse(order.status, order.status, "the order is not held")
        back = order.held_from or "created"
        status.check("held", back)
        jobs = kitchen.order_jobs(conn, order.order_id)
        for job in jobs:
            if job.state == "waiting" and job.wait_reason == "held":
                due = _when(job.not_before)
                later = due is not None and due > now
                kitchen.set_wait(conn, job.job_key, "scheduled" if later else None, now)
                if not later:
                    result.new_jobs.append(job.job_key)
        self._set(conn, order.order_id, now, status=back, held_from=None)
        # Every station told to hold is told to go on, even one whose ticket was given back
        # unprinted after the HOLD went out (its food ticket then follows the FIRE).
        go_on = kitchen.reached_lines_by_station(jobs)
        for job in jobs:
            if job.kind == "HOLD" and job.change_ref == f"hold-{order.hold_count}" \
                    and job.state != "withdrawn":
                go_on.setdefault(job.station_id, job.line_ids)
        self._notice_jobs(conn, event, result, "FIRE", f"fire-{order.hold_count}", now, go_on)
        add_activity(conn, event, "Order resumed", now, {"status": back})
        refresh_progress(conn, order.order_id, now)
        return result

    def _cancelled(self, conn: sqlite3.Connection, event: Event, order: _Order,
                   now: datetime) -> Applied:
        data: Cancelled = event.data
        return self._called_off(conn, event, order, now, "cancelled",
                                data.reason_code + (f": {data.reason}" if data.reason else ""))

    def _rejected(self, conn: sqlite3.Connection, event: Event, order: _Order,
                  now: datetime) -> Applied:
        data: RejectedByRestaurant = event.data
        if order.stage not in ("received", "rejected") and order.status in status.WORKING:
            raise _refuse(order.stage, "rejected", "an accepted order is cancelled, not rejected")
        return self._called_off(conn, event, order, now, "rejected", data.reason)

    def _called_off(self, conn: sqlite3.Connection, event: Event, order: _Order,
                    now: datetime, stage: str, why: str) -> Applied:
        result = Applied(order.order_id, "applied")
        if order.status in ("cancelled", "void"):
            return _repeat(conn, event, result, f"Order {stage}", now)
        self._call_off(conn, event, order, result, now, why)
        self._set(conn, order.order_id, now, kitchen_stage=stage)
        return result

    def _stage(self, conn: sqlite3.Connection, event: Event, order: _Order, now: datetime,
               target: str, label: str, **extra: Any) -> Applied:
        result = Applied(order.order_id, "applied")
        if order.stage == target:
            return _repeat(conn, event, result, label, now)
        if order.status in ("cancelled", "void"):
            raise _refuse(order.status, target)
        status.check_stage(order.stage, target)
        self._set(conn, order.order_id, now, kitchen_stage=target, **extra)
        add_activity(conn, event, label, now, extra)
        return result

    def _accepted(self, conn: sqlite3.Connection, event: Event, order: _Order,
                  now: datetime) -> Applied:
        data: Accepted = event.data
        return self._stage(conn, event, order, now, "accepted", "Order accepted",
                           prep_minutes=data.prep_minutes)

    def _ready(self, conn: sqlite3.Connection, event: Event, order: _Order,
               now: datetime) -> Applied:
        return self._stage(conn, event, order, now, "ready", "Order ready")

    def _out_for_delivery(self, conn: sqlite3.Connection, event: Event, order: _Order,
                          now: datetime) -> Applied:
        if order.fulfillment != "delivery" and order.stage != "out_for_delivery":
            raise _refuse(order.stage, "out_for_delivery",
                          f"a {order.fulfillment} order is not delivered")
        return self._stage(conn, event, order, now, "out_for_delivery", "Order out for delivery")

    def _completed(self, conn: sqlite3.Connection, event: Event, order: _Order,
                   now: datetime) -> Applied:
        moves_status = order.stage != "completed" and order.status in status.WORKING
        if moves_status:
            status.check(order.status, "completed")
        result = self._stage(conn, event, order, now, "completed", "Order completed")
        if result.effect == "applied" and moves_status:
            self._set(conn, order.order_id, now, status="completed")
        return result

    def _course_fired(self, conn: sqlite3.Connection, event: Event, order: _Order,
                      now: datetime) -> Applied:
        data: CourseFired = event.data
        result = Applied(order.order_id, "applied")
        if order.fired_course is not None and data.course <= order.fired_course:
            return _repeat(conn, event, result, f"Course {data.course} fired", now)
        if order.status not in status.WORKING:
            raise _refuse(order.status, order.status, "a called-off order has no courses to fire")
        for job in kitchen.order_jobs(conn, order.order_id):
            course = _course_of(job.change_ref)
            if job.state == "waiting" and job.wait_reason == "course" and course is not None \
                    and course <= data.course:
                kitchen.set_wait(conn, job.job_key, "held" if order.status == "held" else None,
                                 now)
                if order.status != "held":
                    result.new_jobs.append(job.job_key)
        self._set(conn, order.order_id, now, fired_course=data.course)
        add_activity(conn, event, f"Course {data.course} fired", now, {})
        return result

    def _payment_added(self, conn: sqlite3.Connection, event: Event, order: _Order,
                       now: datetime) -> Applied:
        data: PaymentAdded = event.data
        result = Applied(order.order_id, "applied")
        if _seen(conn, order.order_id, "payment_id", data.payment_id):
            return _repeat(conn, event, result, "Payment added", now)
        target = "completed" if data.completes else order.status
        if order.status not in ("sent_to_kitchen", "partially_sent"):
            raise _refuse(order.status, "completed", "payment is taken once the order reached "
                          "the kitchen and before it is final")
        if not _active_lines(conn, order.order_id, include_voided=False):
            raise _refuse(order.status, "completed", "cancelled items can't be paid")
        self._set(conn, order.order_id, now, paid_cents=order.paid_cents + data.amount_cents,
                  status=target)
        add_activity(conn, event, "Payment added", now,
                     {"payment_id": data.payment_id, "amount_cents": data.amount_cents,
                      "method": data.method})
        if data.completes:
            add_activity(conn, event, "Order completed / Payment Confirmed", now, {})
        return result

    def _refunded(self, conn: sqlite3.Connection, event: Event, order: _Order,
                  now: datetime) -> Applied:
        data: Refunded = event.data
        result = Applied(order.order_id, "applied")
        if _seen(conn, order.order_id, "refund_id", data.refund_id):
            return _repeat(conn, event, result, "Refund", now)
        total = order.refunded_cents + data.amount_cents
        target = "refunded" if total >= order.paid_cents else "partially_refunded"
        if order.status not in ("completed", "partially_refunded"):
            raise _refuse(order.status, target)
        if total > order.paid_cents:
            raise _refuse(order.status, "refunded",
                          f"refunds never exceed what was paid (paid {order.paid_cents}, "
                          f"refunded {order.refunded_cents}, asked {data.amount_cents})")
        status.check(order.status, target)
        self._set(conn, order.order_id, now, refunded_cents=total, status=target)
        add_activity(conn, event, "Refund", now,
                     {"refund_id": data.refund_id, "amount_cents": data.amount_cents,
                      "method": data.method, "reason": data.reason})
        return result

    def _items_complimented(self, conn: sqlite3.Connection, event: Event, order: _Order,
                            now: datetime) -> Applied:
        data: ItemsComplimented = event.data
        result = Applied(order.order_id, "applied")
        states = _line_states(conn, order.order_id)
        for line in data.line_ids:
            if line not in states:
                raise Rejected(f"data.line_ids: unknown line_id '{line}' on this order")
            if states[line] == "voided":
                raise Rejected(f"data.line_ids: line '{line}' was voided; cancelled items "
                               "can't be complimented or paid")
        if order.status not in (*status.WORKING, "completed"):
            raise _refuse(order.status, order.status, "items of a final order can't be changed")
        fresh = [x for x in data.line_ids if states[x] != "comped"]
        if not fresh:
            result.effect = "repeat"
            return result
        conn.executemany("UPDATE order_lines SET state='comped' WHERE order_id=? AND line_id=?",
                         [(order.order_id, x) for x in fresh])
        add_activity(conn, event, "Items complimented", now,
                     {"line_ids": fresh, "reason": data.reason})
        return result


def _repeat(conn: sqlite3.Connection, event: Event, result: Applied, what: str,
            now: datetime) -> Applied:
    """The order already has this change (a platform repeating itself, a retry under a new
    event_id): log it in the order's activities and change nothing."""
    result.effect = "repeat"
    add_activity(conn, event, f"{what} again (repeat ignored)", now, {})
    return result


def _line_states(conn: sqlite3.Connection, order_id: str) -> dict[str, str]:
    return dict(conn.execute(
        "SELECT line_id, state FROM order_lines WHERE order_id=?", (order_id,)).fetchall())


def _active_lines(conn: sqlite3.Connection, order_id: str, *, include_voided: bool) -> set[str]:
    sql = "SELECT line_id FROM order_lines WHERE order_id=?"
    if not include_voided:
        sql += " AND state != 'voided'"
    return {r[0] for r in conn.execute(sql, (order_id,))}


def _seen(conn: sqlite3.Connection, order_id: str, key: str, value: str) -> bool:
    return conn.execute(
        "SELECT 1 FROM activities WHERE order_id=? AND json_extract(detail, ?) = ? LIMIT 1",
        (order_id, f"$.{key}", value),
    ).fetchone() is not None


def _when(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _course_of(change_ref: str) -> int | None:
    _, sep, tail = change_ref.rpartition("-course-")
    return int(tail) if sep and tail.isdigit() else None


def refresh_progress(conn: sqlite3.Connection, order_id: str, now: datetime) -> None:
    """Move Created / Sent to Kitchen / Partially Sent to match what reached a printer."""
    row = conn.execute("SELECT status FROM orders WHERE order_id=?", (order_id,)).fetchone()
    if row is None:
        return
    active = _active_lines(conn, order_id, include_voided=False)
    reached: set[str] = set()
    for lines in kitchen.reached_lines_by_station(kitchen.order_jobs(conn, order_id)).values():
        reached.update(lines)
    target = status.progress_status(len(active), len(reached & active), row[0])
    if target != row[0]:
        status.check(row[0], target)
        conn.execute("UPDATE orders SET status=?, updated_at=? WHERE order_id=?",
                     (target, rfc3339_ms(now), order_id))
        if target == "sent_to_kitchen" or (row[0] == "created" and target == "partially_sent"):
            conn.execute(
                "INSERT INTO activities (order_id, event_id, what, channel, device, at, detail) "
                "VALUES (?, NULL, 'Order sentToKitchen', 'kitchen', NULL, ?, '{}')",
                (order_id, rfc3339_ms(now)),
            )
