"""From seed 004's words to the kitchen's and back: pure functions, no I/O, no clock.

In: a platform order becomes an `order.created` event (CONTRACT section 4 envelope dict) for
kitchen order `ot-{id}`, channel `onetablet`. Event ids are derived from the platform's order
id and what happened, so the platform sending the same thing again yields the same event id
and the kitchen applies it once.

Fulfillment (the addition `fulfillment.service`, docs/contract-additions.md):

| seed `fulfillment_type` | `type` | `courier` | `service` | ticket line |
|---|---|---|---|---|
| `pickup` | pickup | - | - | PICKUP |
| `dx_delivery` | delivery | platform | `platform_delivery` | PLATFORM DELIVERY |
| `mx_fleet_delivery` | delivery | platform | `fleet_delivery` | FLEET DELIVERY |

Privacy: the customer is shown as first name and last initial at most; e-mail and phone,
and the courier's name and phone, are never copied. As a guard, the consumer's own e-mail
and phone, and anything shaped like an e-mail address or a phone number, are cut out of
every free text that does go out (names, extras, special instructions).

Out: the webhooks the kitchen sends back, as `Webhook(method, path, body)`; `path` is
relative to the configured `webhook_url` (`{webhook_url}{path}`).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, NamedTuple

from edge.clock import rfc3339
from edge.connectors.aggregator.schema import (
    CancelReason,
    DasherStatus,
    FulfillmentType,
    Item,
    PlatformCancel,
    PlatformOrder,
)

CHANNEL = "onetablet"
ORDER_PREFIX = "ot-"
STORE_CLOSED_REASON = "Store is currently closed"   # CONTRACT section 8: a paused store
STORE_CLOSED_CODE = "store_closed"
PLATFORM_CANCEL_CODE = "platform"   # reason_code of a cancel the platform asked for
REMOVED = "[removed]"

_SERVICE: dict[FulfillmentType, dict[str, str]] = {
    "pickup": {"type": "pickup"},
    "dx_delivery": {"type": "delivery", "courier": "platform", "service": "platform_delivery"},
    "mx_fleet_delivery": {"type": "delivery", "courier": "platform", "service": "fleet_delivery"},
}

# The seed's cancellation reason codes, from the kitchen's reason_code.
_CANCEL_REASONS: dict[str, CancelReason] = {
    "out_of_stock": "ITEM_OUT_OF_STOCK",
    "store_closed": "STORE_CLOSED",
    "busy": "KITCHEN_BUSY",
}
# The seed's description of each, said when the kitchen gave a code and no words.
_REASON_WORDS: dict[CancelReason, str] = {
    "ITEM_OUT_OF_STOCK": "Required item is unavailable",
    "STORE_CLOSED": "Store is no longer accepting orders",
    "KITCHEN_BUSY": "Kitchen capacity exceeded",
    "OTHER": "Cancelled by the restaurant",
}

# Starting only where a run of address characters starts keeps a long run without an @
# from being rescanned from each of its characters (quadratic on a 1000-character note).
_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# Seven or more digits, with the punctuation people write phone numbers with.
_PHONE = re.compile(r"\+?\(?\d(?:[\s().-]{0,3}\d){6,}")
_PRODUCT_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def kitchen_order_id(platform_id: str) -> str:
    """The kitchen's order id for a platform order: also its `merchant_supplied_id`."""
    return f"{ORDER_PREFIX}{platform_id}"


def platform_order_id(order_id: str) -> str | None:
    """The platform's id in a kitchen order id `ot-{id}`, or None if it is not one."""
    return order_id[len(ORDER_PREFIX):] if order_id.startswith(ORDER_PREFIX) else None


# -- events in ------------------------------------------------------------------------------


def _event(platform_id: str, change: str, kind: str, at: datetime,
           data: dict[str, Any], device: str | None = None) -> dict[str, Any]:
    source: dict[str, Any] = {"channel": CHANNEL}
    if device is not None:
        source["device"] = device
    order_id = kitchen_order_id(platform_id)
    return {
        "event_id": f"{order_id}:{change}",
        "type": kind,
        "order_id": order_id,
        "occurred_at": rfc3339(at),
        "source": source,
        "data": data,
    }


def order_created(order: PlatformOrder, received_at: datetime, *,
                  requires_acceptance: bool = False) -> dict[str, Any]:
    """The `order.created` event for a POSTed order, stamped with when the kitchen got it.

    `display_id` is the delivery short code; lines are numbered in the order's own order
    (`1`, `2`, ...), each item id goes in as `product_id` (the menu then gives its category
    and station) and its price as `unit_price`. `source.device` names the platform
    (`store.provider_type`). `requires_acceptance`: its tickets wait for the restaurant's
    yes (`aggregator.auto_accept` false).
    """
    guard = _Guard(order.consumer.email, order.consumer.phone)
    data: dict[str, Any] = {
        "display_id": guard.clean(order.delivery_short_code),
        "fulfillment": dict(_SERVICE[order.fulfillment]),
        "items": [_item(n, item, guard) for n, item in enumerate(order.items, start=1)],
    }
    name = shown_name(order.consumer.first_name, order.consumer.last_name)
    if name:
        data["customer"] = {"name": guard.clean(name)}
    if requires_acceptance:
        data["requires_acceptance"] = True
    return _event(order.id, "created", "order.created", received_at, data,
                  device=guard.clean(order.store.provider_type)[:64])


def _item(number: int, item: Item, guard: _Guard) -> dict[str, Any]:
    line: dict[str, Any] = {
        "line_id": str(number),
        "name": guard.clean(item.name),
        "qty": item.quantity,
        "unit_price": item.price,
    }
    if _PRODUCT_ID.match(item.id):
        line["product_id"] = item.id
    modifiers = [guard.clean(extra.name) for extra in item.extras or ()]
    if modifiers:
        line["modifiers"] = modifiers
    note = guard.clean(item.special_instructions or "").strip()
    if note:
        line["note"] = note
    return line


def shown_name(first_name: str, last_name: str | None) -> str:
    """First name and last initial: `John D.`; what a ticket may show of the customer."""
    first = " ".join(first_name.split())[:32]
    last = (last_name or "").strip()
    return f"{first} {last[0]}." if first and last and last[0].isalpha() else first


def accepted(platform_id: str, occurred_at: datetime, prep_minutes: int) -> dict[str, Any]:
    """`order.accepted` for the kitchen accepting at once (`aggregator.auto_accept`)."""
    return _event(platform_id, "accepted", "order.accepted", occurred_at,
                  {"prep_minutes": prep_minutes})


def rejected(platform_id: str, occurred_at: datetime, reason: str = STORE_CLOSED_REASON,
             reason_code: str | None = STORE_CLOSED_CODE) -> dict[str, Any]:
    """`order.rejected` for an order the kitchen refuses on arrival (a paused store)."""
    data: dict[str, Any] = {"reason": reason}
    if reason_code is not None:
        data["reason_code"] = reason_code
    return _event(platform_id, "rejected", "order.rejected", occurred_at, data)


def platform_cancelled(platform_id: str, cancel: PlatformCancel,
                       occurred_at: datetime) -> dict[str, Any]:
    """`order.cancelled` for `POST /orders/{id}/cancel`. Its reason_code `platform` marks it
    as the platform's own: no cancellation webhook goes back for it."""
    data: dict[str, Any] = {"reason_code": PLATFORM_CANCEL_CODE}
    reason = _Guard(None, None).clean(cancel.reason).strip()
    if reason:
        data["reason"] = reason
    return _event(platform_id, "cancelled", "order.cancelled", occurred_at, data)


def dasher_event(platform_id: str, status: DasherStatus,
                 occurred_at: datetime) -> dict[str, Any]:
    """The kitchen event for a courier status; nothing about the courier goes in.

    `dasher_out_for_delivery` is `order.out_for_delivery`, `dropoff` is `order.completed`;
    the three before are `order.courier_status` `{"status": ...}` (an addition,
    docs/contract-additions.md: each a timeline step, no ticket).
    """
    change = f"courier:{status.value}"
    if status is DasherStatus.DASHER_OUT_FOR_DELIVERY:
        return _event(platform_id, change, "order.out_for_delivery", occurred_at, {})
    if status is DasherStatus.DROPOFF:
        return _event(platform_id, change, "order.completed", occurred_at, {})
    return _event(platform_id, change, "order.courier_status", occurred_at,
                  {"status": status.value})


# -- the courier's flow ---------------------------------------------------------------------


class Move(Enum):
    FORWARD = "forward"      # apply it (skipping statuses is allowed: the platform may)
    REPEAT = "repeat"        # the same status again: answer as before, change nothing
    BACKWARD = "backward"    # refused: 409, nothing changes


_RANK = {status: rank for rank, status in enumerate(DasherStatus)}


def dasher_move(current: DasherStatus | None, new: DasherStatus) -> Move:
    """How `new` relates to the last status the order had (`None`: none yet)."""
    if current is None or _RANK[new] > _RANK[current]:
        return Move.FORWARD
    return Move.REPEAT if new is current else Move.BACKWARD


# -- webhooks out ---------------------------------------------------------------------------


class Webhook(NamedTuple):
    method: str
    path: str                 # relative to aggregator.webhook_url
    body: dict[str, Any]


def cancel_reason(reason_code: str) -> CancelReason:
    """The seed's cancellation reason for the kitchen's `reason_code`."""
    return _CANCEL_REASONS.get(reason_code, "OTHER")


def prep_time(accepted_at: datetime, prep_minutes: int) -> datetime:
    """When the order will be ready: what `prep_time` in the accepted webhook carries."""
    return accepted_at + timedelta(minutes=prep_minutes)


def accepted_webhook(platform_id: str, ready_at: datetime) -> Webhook:
    return Webhook("PATCH", f"/orders/{platform_id}", {
        "merchant_supplied_id": kitchen_order_id(platform_id),
        "order_status": "success",
        "prep_time": rfc3339(ready_at),
    })


def rejected_webhook(platform_id: str, failure_reason: str) -> Webhook:
    return Webhook("PATCH", f"/orders/{platform_id}", {
        "merchant_supplied_id": kitchen_order_id(platform_id),
        "order_status": "fail",
        "failure_reason": failure_reason[:512] or "Rejected by the restaurant",
    })


def ready_webhook(platform_id: str) -> Webhook:
    return Webhook("PATCH", f"/orders/{platform_id}/events/order_ready_for_pickup",
                   {"merchant_supplied_id": kitchen_order_id(platform_id)})


def reason_words(reason_code: str | None, reason: str | None) -> str:
    """What the kitchen said, in words: its own, else the seed's for its code."""
    words = " ".join((reason or "").split())
    if words and words != reason_code:
        return words
    return _REASON_WORDS[cancel_reason(reason_code or "")]


def cancellation_webhook(platform_id: str, reason_code: str, details: str | None) -> Webhook:
    """The restaurant cancelled. Not for a cancel the platform asked for (reason_code
    `platform`): the caller sends nothing then. Without words, the seed's description of
    the reason goes as `cancel_details`."""
    return Webhook("PATCH", f"/orders/{platform_id}/cancellation", {
        "cancel_reason": cancel_reason(reason_code),
        "cancel_details": reason_words(reason_code, details)[:1000],
    })


# -- the privacy guard ----------------------------------------------------------------------


class _Guard:
    """Cuts contact details out of free text: the consumer's own, and anything shaped like
    one (a customer writing "call +1 555 123 4567" in special instructions)."""

    def __init__(self, email: str | None, phone: str | None) -> None:
        self._known = [re.compile(re.escape(v.strip()), re.IGNORECASE)
                       for v in (email, phone) if v and len(v.strip()) >= 5]

    def clean(self, text: str) -> str:
        for known in self._known:
            text = known.sub(REMOVED, text)
        return _PHONE.sub(REMOVED, _EMAIL.sub(REMOVED, text))
