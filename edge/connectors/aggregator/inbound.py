"""What the platform sends, taken in: each call is decided and recorded in one durable
writer transaction (`Intake.submit_with`), together with the kitchen events it becomes.

- `POST /orders`: a platform order id seen before is answered 200 from its durable record
  (`edge.store.platform_orders`) and changes nothing. A new one becomes `order.created`
  (waiting for the restaurant's yes unless `auto_accept`, then with `order.accepted` at
  `prep_minutes`, plus the busy store's extra minutes); in a paused store it becomes
  `order.created` and `order.rejected` "Store is currently closed", and the platform hears
  `fail` through the webhook, as the seed does. 202 once all of it is on disk.
- `POST /orders/{id}/delivery-status`: the courier only goes forward. A status before the
  last one taken is 409 and changes nothing; the same again is 200 and changes nothing.
  Pickup orders have no courier (409), nor have orders called off (409). Pick-up and
  drop-off need the restaurant's yes first (409 while the order waits for it).
- `POST /orders/{id}/cancel`: `order.cancelled` with reason code `platform` (no webhook
  goes back for it); again: 200, nothing new; after the drop-off: 409.

Each function returns the function `submit_with` runs; it reads and writes only through
the `Tx` (it runs on the database thread) and answers with an `Answer`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from edge.clock import rfc3339_ms
from edge.component import Accept, IntakeOutcome
from edge.config.models import AggregatorConfig
from edge.connectors.aggregator import mapping
from edge.connectors.aggregator.schema import (
    DasherStatus,
    DeliveryStatus,
    PlatformCancel,
    PlatformOrder,
)
from edge.orders import opening
from edge.store import Tx, orders, platform_orders

SOURCE = "aggregator"          # the intake's name for this connector (its topic, its logs)

# What the kitchen said when the order arrived (platform_orders.answer).
WAITING = "waiting"
ACCEPTED = "accepted"
STORE_CLOSED = "store_closed"

_CALLED_OFF = ("cancelled", "void")
_NEEDS_YES = (DasherStatus.DASHER_OUT_FOR_DELIVERY, DasherStatus.DROPOFF)


@dataclass(frozen=True)
class Answer:
    """The HTTP answer to the platform, and what the log line says about it."""

    status: int
    body: dict[str, Any]
    event: str                          # the log line's name
    order_id: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def refused(status: int, error: str, event: str = "aggregator_refused",
            order_id: str | None = None) -> Answer:
    return Answer(status, {"error": error}, event, order_id, {"error": error})


def _taken(outcomes: Sequence[IntakeOutcome]) -> str | None:
    """None if every payload was stored (or was already), else why one was not."""
    for outcome in outcomes:
        if outcome.result == "dead":
            return outcome.reason or "refused by the kitchen"
    return None


def _payloads(events: Sequence[dict[str, Any]]) -> list[bytes]:
    return [json.dumps(e, ensure_ascii=False).encode() for e in events]


TakeIn = Callable[[Tx, Accept], Answer]


def receive_order(order: PlatformOrder, cfg: AggregatorConfig, now: datetime) -> TakeIn:
    """`POST /orders`."""
    platform_id = order.id
    order_id = mapping.kitchen_order_id(platform_id)

    def take(tx: Tx, accept: Accept) -> Answer:
        known = platform_orders.get(tx.conn, platform_id)
        if known is not None:
            platform_orders.count_repeat(tx.conn, platform_id)
            return Answer(200, {"id": platform_id, "status": "submitted", "duplicate": True},
                          "aggregator_order_repeat", order_id, {"answer": known.answer})
        store = opening.current(tx.conn).now(now)
        if not store.takes_orders(now):
            answer = STORE_CLOSED
            events = [mapping.order_created(order, now, requires_acceptance=True),
                      mapping.rejected(platform_id, now)]
        elif cfg.auto_accept:
            answer = ACCEPTED
            prep = cfg.prep_minutes + store.extra_prep_minutes(now)
            events = [mapping.order_created(order, now),
                      mapping.accepted(platform_id, now, prep)]
        else:
            answer = WAITING
            events = [mapping.order_created(order, now, requires_acceptance=True)]
        problem = _taken(accept(_payloads(events)))
        if problem is not None:
            # Kept as a dead letter for the operator; the platform is told why, and may
            # send it again once corrected (the id is not taken).
            return refused(400, problem, order_id=order_id)
        platform_orders.add(tx.conn, platform_id=platform_id, order_id=order_id,
                            store_id=order.store.merchant_supplied_id,
                            provider=order.store.provider_type[:64],
                            fulfillment=order.fulfillment, answer=answer,
                            at=rfc3339_ms(now))
        return Answer(202, {"id": platform_id, "status": "submitted"}, "aggregator_order_taken",
                      order_id, {"answer": answer, "fulfillment": order.fulfillment})

    return take


def _client_order_id(platform_id: str, given: str) -> str | None:
    expected = mapping.kitchen_order_id(platform_id)
    if given == expected:
        return None
    return f"client_order_id: '{given[:64]}' is not this order's ('{expected}')"


def delivery_status(platform_id: str, update: DeliveryStatus, now: datetime) -> TakeIn:
    """`POST /orders/{id}/delivery-status`."""
    order_id = mapping.kitchen_order_id(platform_id)
    new = update.dasher_status

    def take(tx: Tx, accept: Accept) -> Answer:
        known = platform_orders.get(tx.conn, platform_id)
        if known is None:
            return refused(404, f"order '{platform_id}' is unknown", order_id=order_id)
        wrong = _client_order_id(platform_id, update.client_order_id)
        if wrong is not None:
            return refused(400, wrong, order_id=order_id)
        current = DasherStatus(known.dasher_status) if known.dasher_status else None
        move = mapping.dasher_move(current, new)
        if move is mapping.Move.REPEAT:
            return Answer(200, {"id": platform_id, "dasher_status": new.value,
                                "status": "repeat"}, "aggregator_dasher_repeat", order_id,
                          {"dasher_status": new.value})
        if move is mapping.Move.BACKWARD:
            assert current is not None
            return refused(409, f"dasher_status: '{new.value}' goes back from "
                                f"'{current.value}'; the courier only goes forward",
                           order_id=order_id)
        if known.fulfillment == "pickup":
            return refused(409, f"dasher_status: order '{platform_id}' is a pickup order; "
                                "it has no courier", order_id=order_id)
        kitchen = orders.get(tx.conn, order_id)
        if known.cancelled_at is not None or known.answer == STORE_CLOSED or (
                kitchen is not None and kitchen.status in _CALLED_OFF):
            return refused(409, f"dasher_status: order '{platform_id}' was called off",
                           order_id=order_id)
        if new in _NEEDS_YES and kitchen is not None and kitchen.awaits_acceptance:
            return refused(409, f"dasher_status: order '{platform_id}' waits for the "
                                "restaurant to accept it", order_id=order_id)
        problem = _taken(accept(_payloads([mapping.dasher_event(platform_id, new, now)])))
        if problem is not None:
            return refused(400, problem, order_id=order_id)
        platform_orders.set_dasher(tx.conn, platform_id, new.value, rfc3339_ms(now))
        return Answer(200, {"id": platform_id, "dasher_status": new.value,
                            "status": "applied"}, "aggregator_dasher_taken", order_id,
                      {"dasher_status": new.value,
                       "previous": current.value if current else None})

    return take


def cancel(platform_id: str, request: PlatformCancel, now: datetime) -> TakeIn:
    """`POST /orders/{id}/cancel`."""
    order_id = mapping.kitchen_order_id(platform_id)

    def take(tx: Tx, accept: Accept) -> Answer:
        known = platform_orders.get(tx.conn, platform_id)
        if known is None:
            return refused(404, f"order '{platform_id}' is unknown", order_id=order_id)
        wrong = _client_order_id(platform_id, request.client_order_id)
        if wrong is not None:
            return refused(400, wrong, order_id=order_id)
        store_id = request.store.merchant_supplied_id
        if store_id != known.store_id:
            return refused(400, f"store.merchant_supplied_id: '{store_id[:64]}' is not the "
                                f"order's store ('{known.store_id}')", order_id=order_id)
        if known.cancelled_at is not None:
            return Answer(200, {"id": platform_id, "status": "cancelled", "duplicate": True},
                          "aggregator_cancel_repeat", order_id)
        if known.dasher_status == DasherStatus.DROPOFF:
            return refused(409, f"order '{platform_id}' was delivered; it cannot be "
                                "cancelled", order_id=order_id)
        problem = _taken(accept(_payloads([mapping.platform_cancelled(platform_id, request,
                                                                       now)])))
        if problem is not None:
            return refused(400, problem, order_id=order_id)
        platform_orders.set_cancelled(tx.conn, platform_id, rfc3339_ms(now))
        return Answer(200, {"id": platform_id, "status": "cancelled"},
                      "aggregator_cancel_taken", order_id)

    return take


__all__ = ["ACCEPTED", "SOURCE", "STORE_CLOSED", "WAITING", "Answer", "TakeIn", "cancel",
           "delivery_status", "receive_order", "refused"]
