"""Applying one order event inside the writer transaction, and the one registry of event
types (`EVENTS`: each type's data model and its handler).

Everything an event causes (the order's new state, its lines, its activity entry, its print
jobs, its outbox records) is written in the caller's transaction, so it is committed with
the event or not at all, and recorded as changes on the `Tx` (job created / queued /
withdrawn, order status changed, records queued, timeline changed) for the feed. A refused
event raises `Rejected`; the caller rolls back to its savepoint and dead-letters the message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Generic

from edge.clock import rfc3339_ms
from edge.config.menu import Menu
from edge.config.models import StationConfig
from edge.feed import OrderStageChanged, OrderStatusChanged
from edge.orders import acceptance, checks, kitchen, menu, status
from edge.orders.events import (
    COURIER_FLOW,
    Accepted,
    Cancelled,
    CourierStatus,
    CourseFired,
    D,
    DiscountApplied,
    Empty,
    Envelope,
    Event,
    EventData,
    EventType,
    Item,
    ItemsAdded,
    ItemsComplimented,
    ItemsDelivered,
    ItemsVoided,
    OrderCreated,
    PaymentAdded,
    Refunded,
    Rejected,
    RejectedByRestaurant,
    RejectKind,
    parse_data,
)
from edge.orders.progress import refresh_progress, set_order
from edge.orders.records import add_activity, confirmation_if_first
from edge.orders.routing import job_key, line_set_ref, route
from edge.store import Tx, orders
from edge.store import checks as check_table
from edge.store.orders import OrderRow


@dataclass(frozen=True)
class Plan:
    """The part of the station config the kitchen's decisions need: where tickets go, the
    menu (prices, categories, stock), the POS's tables and the local time zone."""

    stations: tuple[StationConfig, ...]
    default_station: str | None
    menu: Menu | None = None
    tables: tuple[str, ...] | None = None     # None: any table id
    timezone: str = "UTC"

    def lead(self, station_id: str) -> timedelta:
        for station in self.stations:
            if station.id == station_id:
                return timedelta(minutes=station.lead_minutes)
        return timedelta(minutes=20)


class Effect(StrEnum):
    APPLIED = "applied"
    REPEAT = "repeat"                 # a change the order already has: logged, nothing else


@dataclass
class Applied:
    order_id: str
    effect: Effect
    # Jobs this event made printable: created queued, or released from a hold or a course
    # wait. The caller wakes the spooler for them; without it a FIRE waits for its poll.
    new_jobs: list[str] = field(default_factory=list)
    # The order's confirmation is known to exist (written or found with a job created here).
    confirmed: bool = field(default=False, repr=False)


def _load(tx: Tx, order_id: str) -> OrderRow | None:
    return orders.get(tx.conn, order_id)


def _refuse(current: str, target: str, why: str | None = None) -> Rejected:
    return status.TransitionRefused(current, target, why)


class Applier:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan

    def apply(self, tx: Tx, event: Event[Any], now: datetime) -> Applied:
        on = EVENTS[event.type]
        if not on.needs_order:
            # order.created finds out itself whether the order exists (its insert does).
            return on.handler(self, tx, event, None, now)
        order = _load(tx, event.order_id)
        if order is None:
            raise Rejected(f"order '{event.order_id}' is unknown: no order.created was applied")
        return on.handler(self, tx, event, order, now)

    # -- helpers -----------------------------------------------------------------------

    def _set(self, tx: Tx, order_id: str, now: datetime, **cols: Any) -> None:
        set_order(tx, order_id, now, **cols)

    def _new_job(self, tx: Tx, event: Event[Any], result: Applied, now: datetime,
                 order: OrderRow | None = None, **kw: Any) -> None:
        if kitchen.insert_job(tx, order_id=event.order_id, now=now, **kw):
            result.new_jobs.append(kw["job_key"])
            # Only an event's first new job can be its order's first: after it, the
            # confirmation exists, so the later ones need not look.
            if not result.confirmed:
                result.confirmed = True
                confirmation_if_first(tx, event.order_id, kw["job_key"], now, order)

    def _release(self, tx: Tx, event: Event[Any], result: Applied, job: kitchen.JobRow,
                 now: datetime, wait: str | None) -> None:
        """Move a waiting job on: queued now (wait None), or waiting for something else."""
        kitchen.set_wait(tx, event.order_id, job, wait, now)
        if wait is None:
            result.new_jobs.append(job.job_key)

    def _withdraw(self, tx: Tx, order_id: str, job_key: str, reason: str) -> None:
        kitchen.withdraw(tx, order_id, job_key, reason)

    def _lines(self, tx: Tx, order_id: str, batch_ref: str, items: Sequence[Item]) -> None:
        orders.add_lines(tx.conn, order_id, batch_ref, items)

    def _food_jobs(self, tx: Tx, event: Event[Any], result: Applied,
                   order: OrderRow, items: Sequence[Item], kind: str, change: str,
                   now: datetime, scheduled_for: datetime | None = None,
                   lead: timedelta | None = None) -> None:
        """Route items to stations; later courses and held or scheduled orders wait. A
        scheduled order's tickets print `lead` before its time (else each station's lead)."""
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
                    not_before = scheduled_for - (lead if lead is not None
                                                  else self.plan.lead(station_id))
                    if wait is None and not_before > now:
                        wait = "scheduled"
                # Nothing cooks before the restaurant said yes; acceptance then lets each
                # ticket go on to what it would wait for otherwise (its time, a hold).
                if order.awaits_acceptance and wait != "course":
                    wait = "acceptance"
                # A later course waits for its course even while held: resume releases
                # only what the hold stopped, and course_fired re-holds it if need be.
                if order.status == "held" and wait not in ("course", "acceptance"):
                    wait = "held"
                self._new_job(tx, event, result, now, order,
                              job_key=job_key(event.order_id, ref, station_id),
                              station_id=station_id, kind=job_kind, change_ref=ref,
                              line_ids=lines, wait_reason=wait, not_before=not_before,
                              due_at=scheduled_for)

    def _notice_jobs(self, tx: Tx, event: Event[Any], result: Applied,
                     kind: str, change: str, now: datetime,
                     lines_by_station: dict[str, list[str]], note: str | None = None) -> None:
        """HOLD / FIRE / CANCELLED / VOID tickets, only where food tickets already printed."""
        for station_id, lines in lines_by_station.items():
            self._new_job(tx, event, result, now,
                          job_key=job_key(event.order_id, change, station_id),
                          station_id=station_id, kind=kind, change_ref=change, line_ids=lines,
                          note=note)

    def _call_off(self, tx: Tx, event: Event[Any], order: OrderRow,
                  result: Applied, now: datetime, why: str) -> str:
        """Cancel or void by the evidence: did any ticket of the order reach a printer?"""
        jobs = kitchen.order_jobs(tx, order.order_id)
        target = "cancelled" if kitchen.any_reached(jobs) else "void"
        current = order.status
        if current not in status.WORKING:
            raise _refuse(current, target)
        status.check(current, target)
        for job in jobs:
            if job.state in kitchen.OPEN:
                self._withdraw(tx, order.order_id, job.job_key, f"order {target}: {why}")
        in_kitchen = {x for lines in kitchen.reached_lines_by_station(jobs).values()
                      for x in lines}
        menu.give_back(tx, order.order_id,
                       _active_lines(tx, order.order_id, include_voided=False) - in_kitchen, now)
        if target == "cancelled":
            reached = kitchen.reached_lines_by_station(jobs)
            active = _active_lines(tx, order.order_id, include_voided=False)
            self._notice_jobs(tx, event, result, "CANCELLED", "cancel", now,
                              {s: [x for x in ls if x in active] for s, ls in reached.items()},
                              note=why)
        self._set(tx, order.order_id, now, status=target, held_from=None)
        add_activity(tx, event, f"Order {'cancelled' if target == 'cancelled' else 'voided'}",
                     now, {"reason": why, "status": target})
        return target

    # -- handlers ----------------------------------------------------------------------

    def _created(self, tx: Tx, event: Event[OrderCreated], _order: None,
                 now: datetime) -> Applied:
        result = Applied(event.order_id, Effect.APPLIED)
        data = event.data
        env = event.envelope
        courses = [i.course for i in data.items if i.course is not None]
        first_course = min(courses) if courses else None
        created = orders.add(
            tx.conn, order_id=event.order_id, channel=env.source.channel,
            device=env.source.device, display_id=data.display_id,
            fulfillment=data.fulfillment.type, table_label=data.fulfillment.table,
            courier=data.fulfillment.courier, note=data.note, status=status.Status.CREATED,
            stage=status.Stage.RECEIVED,
            scheduled_for=rfc3339_ms(data.scheduled_for) if data.scheduled_for else None,
            fired_course=first_course, at=rfc3339_ms(now), intake_event_id=event.event_id,
            requires_acceptance=data.requires_acceptance, service=data.fulfillment.service)
        if created is None:
            # A platform repeating the order under a new event_id: the kitchen already has it.
            return _repeat(tx, event, result, "Order created", now)
        tx.emit(OrderStatusChanged(event.order_id, status.Status.CREATED, None))
        items = menu.priced(self.plan.menu, data.items)
        self._lines(tx, event.order_id, "initial", items)
        add_activity(tx, event, "Order created", now, {"items": len(items)})
        menu.take_for_lines(tx, event, event.order_id, items, now)
        self._food_jobs(tx, event, result, created, items, "NEW", "new", now,
                        data.scheduled_for, None if data.lead_minutes is None
                        else timedelta(minutes=data.lead_minutes))
        return result

    def _items_added(self, tx: Tx, event: Event[ItemsAdded], order: OrderRow,
                     now: datetime) -> Applied:
        data = event.data
        result = Applied(order.order_id, Effect.APPLIED)
        batch_ref = f"batch:{data.batch_id}"
        if orders.has_batch(tx.conn, order.order_id, batch_ref):
            return _repeat(tx, event, result, f"Items batch {data.batch_id}", now)
        if order.status not in status.WORKING:
            raise _refuse(order.status, "partially_sent", "items cannot be added to a "
                          f"{order.status} order")
        clash = orders.first_existing(tx.conn, order.order_id, [i.line_id for i in data.items])
        if clash is not None:
            raise Rejected(f"data.items: line_id '{clash}' is already on the order")
        items = menu.priced(self.plan.menu, data.items)
        self._lines(tx, order.order_id, batch_ref, items)
        add_activity(tx, event, "Items added", now,
                     {"batch_id": data.batch_id, "items": len(items)})
        menu.take_for_lines(tx, event, order.order_id, items, now)
        sched = _when(order.scheduled_for)
        self._food_jobs(tx, event, result, order, items, "ADDED",
                        f"add-{data.batch_id}", now, sched if sched and sched > now else None)
        refresh_progress(tx, order.order_id, now)
        return result

    def _items_voided(self, tx: Tx, event: Event[ItemsVoided], order: OrderRow,
                      now: datetime) -> Applied:
        data = event.data
        result = Applied(order.order_id, Effect.APPLIED)
        states = _line_states(tx, order.order_id)
        unknown = [x for x in data.line_ids if x not in states]
        if unknown:
            raise Rejected(f"data.line_ids: unknown line_id '{unknown[0]}' on this order")
        fresh = [x for x in dict.fromkeys(data.line_ids) if states[x] != "voided"]
        if not fresh:
            return _repeat(tx, event, result, "Items voided", now)
        if order.status not in status.WORKING:
            raise _refuse(order.status, "void", "its items can no longer be voided")
        orders.set_line_state(tx.conn, order.order_id, fresh, "voided")
        jobs = kitchen.order_jobs(tx, order.order_id)
        reached = kitchen.reached_lines_by_station(jobs)
        gone = set(fresh)
        # Called off before the kitchen had them: their portions go back to the stock.
        menu.give_back(tx, order.order_id,
                       gone - {x for lines in reached.values() for x in lines}, now)
        # Lines not yet on paper are simply taken off the waiting job.
        for job in kitchen.food_jobs(jobs):
            if job.state in kitchen.OPEN and gone & set(job.line_ids):
                left = [x for x in job.line_ids if x not in gone]
                if left:
                    kitchen.set_lines(tx, job.job_key, left)
                else:
                    self._withdraw(tx, order.order_id, job.job_key, "all its lines were voided")
        change = line_set_ref("void", fresh)
        self._notice_jobs(tx, event, result, "VOID", change, now,
                          {s: [x for x in ls if x in gone] for s, ls in reached.items()
                           if gone & set(ls)}, note=data.reason)
        add_activity(tx, event, "Items voided", now,
                     {"line_ids": fresh, "reason": data.reason})
        if not _active_lines(tx, order.order_id, include_voided=False):
            # Every line called off one by one: the order itself is called off (seed 003).
            fresh_order = _load(tx, order.order_id)
            assert fresh_order is not None
            self._call_off(tx, event, fresh_order, result, now, "every item was voided")
        else:
            refresh_progress(tx, order.order_id, now)
        return result

    def _held(self, tx: Tx, event: Event[Any], order: OrderRow,
              now: datetime) -> Applied:
        result = Applied(order.order_id, Effect.APPLIED)
        if order.status == "held":
            return _repeat(tx, event, result, "Order held", now)
        status.check(order.status, "held")
        count = order.hold_count + 1
        jobs = kitchen.order_jobs(tx, order.order_id)
        for job in jobs:
            if job.state in kitchen.OPEN and job.wait_reason not in ("course", "acceptance") \
                    and job.reprint_of is None and kitchen.cooks(job.kind, job.change_ref):
                kitchen.set_wait(tx, order.order_id, job, "held", now)
        self._set(tx, order.order_id, now, status="held", held_from=order.status,
                  hold_count=count)
        self._notice_jobs(tx, event, result, "HOLD", f"hold-{count}", now,
                          kitchen.reached_lines_by_station(jobs))
        add_activity(tx, event, "Order held", now, {"returns_to": order.status})
        return result

    def _resumed(self, tx: Tx, event: Event[Any], order: OrderRow,
                 now: datetime) -> Applied:
        result = Applied(order.order_id, Effect.APPLIED)
        if order.status != "held":
            if order.hold_count > 0 and order.status in status.WORKING:
                return _repeat(tx, event, result, "Order resumed", now)
            raise _refuse(order.status, order.status, "the order is not held")
        back = order.held_from or "created"
        status.check("held", back)
        jobs = kitchen.order_jobs(tx, order.order_id)
        for job in jobs:
            if job.state == "waiting" and job.wait_reason == "held":
                due = _when(job.not_before)
                later = due is not None and due > now
                self._release(tx, event, result, job, now, "scheduled" if later else None)
        self._set(tx, order.order_id, now, status=back, held_from=None)
        # Every station told to hold is told to go on, even one whose ticket was given back
        # unprinted after the HOLD went out (its food ticket then follows the FIRE).
        go_on = kitchen.reached_lines_by_station(jobs)
        for job in jobs:
            if job.kind == "HOLD" and job.change_ref == f"hold-{order.hold_count}" \
                    and job.state != "withdrawn":
                go_on.setdefault(job.station_id, job.line_ids)
        self._notice_jobs(tx, event, result, "FIRE", f"fire-{order.hold_count}", now, go_on)
        add_activity(tx, event, "Order resumed", now, {"status": back})
        refresh_progress(tx, order.order_id, now)
        return result

    def _cancelled(self, tx: Tx, event: Event[Cancelled], order: OrderRow,
                   now: datetime) -> Applied:
        data = event.data
        return self._called_off(tx, event, order, now, "cancelled",
                                data.reason_code + (f": {data.reason}" if data.reason else ""),
                                reason_code=data.reason_code, reason=data.reason)

    def _rejected(self, tx: Tx, event: Event[RejectedByRestaurant], order: OrderRow,
                  now: datetime) -> Applied:
        data = event.data
        if order.stage not in ("received", "rejected") and order.status in status.WORKING:
            raise _refuse(order.stage, "rejected", "an accepted order is cancelled, not rejected")
        return self._called_off(tx, event, order, now, "rejected", data.reason,
                                reason_code=data.reason_code, reason=data.reason)

    def _called_off(self, tx: Tx, event: Event[Any], order: OrderRow,
                    now: datetime, stage: str, why: str, *, reason_code: str | None = None,
                    reason: str | None = None) -> Applied:
        result = Applied(order.order_id, Effect.APPLIED)
        if order.status in ("cancelled", "void"):
            return _repeat(tx, event, result, f"Order {stage}", now)
        self._call_off(tx, event, order, result, now, why)
        self._set(tx, order.order_id, now, kitchen_stage=stage)
        tx.emit(OrderStageChanged(order.order_id, order.channel, stage, order.stage,
                                  reason_code=reason_code, reason=reason))
        return result

    def _stage(self, tx: Tx, event: Event[Any], order: OrderRow, now: datetime,
               target: str, label: str, **extra: Any) -> Applied:
        result = Applied(order.order_id, Effect.APPLIED)
        if order.stage == target:
            return _repeat(tx, event, result, label, now)
        if order.status in ("cancelled", "void"):
            raise _refuse(order.status, target)
        status.check_stage(order.stage, target)
        self._set(tx, order.order_id, now, kitchen_stage=target, **extra)
        tx.emit(OrderStageChanged(order.order_id, order.channel, target, order.stage,
                                  prep_minutes=extra.get("prep_minutes")))
        add_activity(tx, event, label, now, extra)
        return result

    def _accepted(self, tx: Tx, event: Event[Accepted], order: OrderRow,
                  now: datetime) -> Applied:
        data = event.data
        result = self._stage(tx, event, order, now, "accepted", "Order accepted",
                             prep_minutes=data.prep_minutes)
        if result.effect is Effect.APPLIED and order.requires_acceptance:
            acceptance.withdraw_reminders(tx, order.order_id)
            # The tickets that waited for this yes go on to whatever else they wait for.
            for job in kitchen.order_jobs(tx, order.order_id):
                if job.state == "waiting" and job.wait_reason == "acceptance":
                    due = _when(job.not_before)
                    wait = "held" if order.status == "held" else (
                        "scheduled" if due is not None and due > now else None)
                    self._release(tx, event, result, job, now, wait)
        return result

    def _ready(self, tx: Tx, event: Event[Any], order: OrderRow,
               now: datetime) -> Applied:
        return self._stage(tx, event, order, now, "ready", "Order ready")

    def _out_for_delivery(self, tx: Tx, event: Event[Any], order: OrderRow,
                          now: datetime) -> Applied:
        if order.fulfillment != "delivery" and order.stage != "out_for_delivery":
            raise _refuse(order.stage, "out_for_delivery",
                          f"a {order.fulfillment} order is not delivered")
        return self._stage(tx, event, order, now, "out_for_delivery", "Order out for delivery")

    def _completed(self, tx: Tx, event: Event[Any], order: OrderRow,
                   now: datetime) -> Applied:
        moves_status = order.stage != "completed" and order.status in status.WORKING
        if moves_status:
            status.check(order.status, "completed")
        result = self._stage(tx, event, order, now, "completed", "Order completed")
        if result.effect is Effect.APPLIED and moves_status:
            self._set(tx, order.order_id, now, status="completed")
        return result

    def _courier_status(self, tx: Tx, event: Event[CourierStatus], order: OrderRow,
                        now: datetime) -> Applied:
        """The courier's progress before pick-up (seed 004): a timeline step, no ticket, no
        move of the order's status or stage. The courier only goes forward."""
        new = event.data.status
        result = Applied(order.order_id, Effect.APPLIED)
        if order.courier_status == new:
            return _repeat(tx, event, result, f"Courier {new}", now)
        if order.fulfillment != "delivery":
            raise _refuse(order.stage, new, f"a {order.fulfillment} order has no courier")
        if order.status in ("cancelled", "void"):
            raise _refuse(order.status, new)
        current = order.courier_status
        if order.stage in ("out_for_delivery", "completed"):
            raise _refuse(order.stage, new, "the courier has already picked the order up")
        if current in COURIER_FLOW and COURIER_FLOW.index(current) > COURIER_FLOW.index(new):
            raise _refuse(current, new, "the courier does not go back")
        self._set(tx, order.order_id, now, courier_status=new)
        add_activity(tx, event, f"Courier {new}", now, {"courier_status": new})
        return result

    def _course_fired(self, tx: Tx, event: Event[CourseFired], order: OrderRow,
                      now: datetime) -> Applied:
        data = event.data
        result = Applied(order.order_id, Effect.APPLIED)
        if order.fired_course is not None and data.course <= order.fired_course:
            return _repeat(tx, event, result, f"Course {data.course} fired", now)
        if order.status not in status.WORKING:
            raise _refuse(order.status, order.status, "a called-off order has no courses to fire")
        for job in kitchen.order_jobs(tx, order.order_id):
            course = _course_of(job.change_ref)
            if job.state == "waiting" and job.wait_reason == "course" and course is not None \
                    and course <= data.course:
                wait = "acceptance" if order.awaits_acceptance else (
                    "held" if order.status == "held" else None)
                self._release(tx, event, result, job, now, wait)
        self._set(tx, order.order_id, now, fired_course=data.course)
        add_activity(tx, event, f"Course {data.course} fired", now, {})
        return result

    def _payment_added(self, tx: Tx, event: Event[PaymentAdded], order: OrderRow,
                       now: datetime) -> Applied:
        data = event.data
        result = Applied(order.order_id, Effect.APPLIED)
        if _seen(tx, order.order_id, "payment_id", data.payment_id):
            return _repeat(tx, event, result, "Payment added", now)
        target = "completed" if data.completes else order.status
        if order.status not in ("sent_to_kitchen", "partially_sent"):
            raise _refuse(order.status, "completed", "payment is taken once the order reached "
                          "the kitchen and before it is final")
        if not _active_lines(tx, order.order_id, include_voided=False):
            raise _refuse(order.status, "completed", "cancelled items can't be paid")
        self._set(tx, order.order_id, now, paid_cents=order.paid_cents + data.amount_cents,
                  status=target)
        add_activity(tx, event, "Payment added", now,
                     {"payment_id": data.payment_id, "amount_cents": data.amount_cents,
                      "method": data.method})
        if data.completes:
            add_activity(tx, event, "Order completed / Payment Confirmed", now, {})
        return result

    def _refunded(self, tx: Tx, event: Event[Refunded], order: OrderRow,
                  now: datetime) -> Applied:
        data = event.data
        result = Applied(order.order_id, Effect.APPLIED)
        if _seen(tx, order.order_id, "refund_id", data.refund_id):
            return _repeat(tx, event, result, "Refund", now)
        total = order.refunded_cents + data.amount_cents
        target = "refunded" if total >= order.paid_cents else "partially_refunded"
        if order.status not in ("completed", "partially_refunded"):
            raise _refuse(order.status, target)
        if total > order.paid_cents:
            raise _refuse(order.status, "refunded",
                          f"refunds never exceed what was paid (paid {order.paid_cents}, "
                          f"refunded {order.refunded_cents}, asked {data.amount_cents})")
        status.check(order.status, target)
        self._set(tx, order.order_id, now, refunded_cents=total, status=target)
        add_activity(tx, event, "Refund", now,
                     {"refund_id": data.refund_id, "amount_cents": data.amount_cents,
                      "method": data.method, "reason": data.reason})
        return result

    def _items_complimented(self, tx: Tx, event: Event[ItemsComplimented], order: OrderRow,
                            now: datetime) -> Applied:
        data = event.data
        result = Applied(order.order_id, Effect.APPLIED)
        states = _line_states(tx, order.order_id)
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
            result.effect = Effect.REPEAT
            return result
        orders.set_line_state(tx.conn, order.order_id, fresh, "comped")
        add_activity(tx, event, "Items complimented", now,
                     {"line_ids": fresh, "reason": data.reason})
        return result


    def _items_delivered(self, tx: Tx, event: Event[ItemsDelivered], order: OrderRow,
                         now: datetime) -> Applied:
        """Lines brought to the table (seed 002's "delivered items"): no ticket; the check
        shows them DELIVERED. A voided line was never served."""
        data = event.data
        result = Applied(order.order_id, Effect.APPLIED)
        states = _line_states(tx, order.order_id)
        for line in data.line_ids:
            if line not in states:
                raise Rejected(f"data.line_ids: unknown line_id '{line}' on this order")
            if states[line] == "voided":
                raise Rejected(f"data.line_ids: line '{line}' was voided; a cancelled item "
                               "is not delivered")
        if order.status not in (*status.WORKING, "completed"):
            raise _refuse(order.status, order.status, "items of a final order can't be changed")
        done = check_table.lines(tx.conn, order.order_id)
        fresh = [x for x in dict.fromkeys(data.line_ids)
                 if x not in done or done[x].delivered_at is None]
        if not fresh:
            return _repeat(tx, event, result, "Items delivered", now)
        check_table.mark_delivered(tx.conn, order.order_id, fresh, rfc3339_ms(now))
        add_activity(tx, event, "Items delivered", now, {"line_ids": fresh})
        return result

    def _discount_applied(self, tx: Tx, event: Event[DiscountApplied], order: OrderRow,
                          now: datetime) -> Applied:
        """A discount on the check, before it is paid; never more than the check is worth
        (a paid order is refunded instead, seed 003)."""
        data = event.data
        result = Applied(order.order_id, Effect.APPLIED)
        if check_table.has_discount(tx.conn, order.order_id, data.discount_id):
            return _repeat(tx, event, result, "Discount applied", now)
        if order.status not in status.WORKING:
            raise _refuse(order.status, order.status, "a discount is given before the check "
                          "is paid; a paid order is refunded")
        room = checks.left_to_discount(tx.conn, order.order_id)
        if data.amount > room:
            raise Rejected(f"data.amount: {data.amount} is more than the check has left to "
                           f"discount ({max(0, room)})")
        check_table.add_discount(tx.conn, order.order_id, check_table.Discount(
            data.discount_id, data.amount, data.reason), rfc3339_ms(now))
        add_activity(tx, event, "Discount applied", now,
                     {"discount_id": data.discount_id, "amount": data.amount,
                      "reason": data.reason})
        return result


def _repeat(tx: Tx, event: Event[Any], result: Applied, what: str,
            now: datetime) -> Applied:
    """The order already has this change (a platform repeating itself, a retry under a new
    event_id): log it in the order's activities and change nothing."""
    result.effect = Effect.REPEAT
    add_activity(tx, event, f"{what} again (repeat ignored)", now, {})
    return result


def _line_states(tx: Tx, order_id: str) -> dict[str, str]:
    return orders.line_states(tx.conn, order_id)


def _active_lines(tx: Tx, order_id: str, *, include_voided: bool) -> set[str]:
    return orders.line_ids(tx.conn, order_id, include_voided=include_voided)


def _seen(tx: Tx, order_id: str, key: str, value: str) -> bool:
    return orders.has_activity_with(tx.conn, order_id, key, value)


def _when(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _course_of(change_ref: str) -> int | None:
    _, sep, tail = change_ref.rpartition("-course-")
    return int(tail) if sep and tail.isdigit() else None


# -- the one registry of event types ------------------------------------------------------

Handler = Callable[["Applier", Tx, Event[D], Any, datetime], Applied]


@dataclass(frozen=True)
class On(Generic[D]):
    """How one event type is read (`model`, its `data`) and applied (`handler`). Every type
    but order.created needs the order to exist (`needs_order`)."""

    model: type[D]
    handler: Handler[D]
    needs_order: bool = True


EVENTS: Mapping[EventType, On[Any]] = {
    EventType.CREATED: On(OrderCreated, Applier._created, needs_order=False),
    EventType.ITEMS_ADDED: On(ItemsAdded, Applier._items_added),
    EventType.ITEMS_VOIDED: On(ItemsVoided, Applier._items_voided),
    EventType.HELD: On(Empty, Applier._held),
    EventType.RESUMED: On(Empty, Applier._resumed),
    EventType.CANCELLED: On(Cancelled, Applier._cancelled),
    EventType.ACCEPTED: On(Accepted, Applier._accepted),
    EventType.REJECTED: On(RejectedByRestaurant, Applier._rejected),
    EventType.READY: On(Empty, Applier._ready),
    EventType.OUT_FOR_DELIVERY: On(Empty, Applier._out_for_delivery),
    EventType.COMPLETED: On(Empty, Applier._completed),
    EventType.COURSE_FIRED: On(CourseFired, Applier._course_fired),
    EventType.PAYMENT_ADDED: On(PaymentAdded, Applier._payment_added),
    EventType.REFUNDED: On(Refunded, Applier._refunded),
    EventType.ITEMS_COMPLIMENTED: On(ItemsComplimented, Applier._items_complimented),
    EventType.COURIER_STATUS: On(CourierStatus, Applier._courier_status),
    EventType.ITEMS_DELIVERED: On(ItemsDelivered, Applier._items_delivered),
    EventType.DISCOUNT_APPLIED: On(DiscountApplied, Applier._discount_applied),
}


def decode(envelope: Envelope, raw: str) -> Event[EventData]:
    """The typed event of a valid envelope: its type known, its data valid for that type."""
    try:
        kind = EventType(envelope.type)
    except ValueError:
        raise Rejected(f"unknown event type '{envelope.type}'", RejectKind.UNKNOWN_TYPE) from None
    return Event(envelope, kind, parse_data(EVENTS[kind].model, envelope), raw)


__all__ = ["EVENTS", "Applied", "Applier", "Effect", "On", "Plan", "decode"]
