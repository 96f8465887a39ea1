"""Seed 001 orders to kitchen events (CONTRACT sections 4 and 9): pure functions, no I/O.

`events_for(order, market, observed_at=..., known=..., kitchen_moves=...)` gives the event
payloads (envelope dicts, ready to publish) for the order at its current `status_id`.
Statuses the kitchen's own calls made (`kitchen_moves`) give nothing; otherwise:

- 1 received: `order.created` (seen again: the same event id, a repeat).
- 2 preparing: `order.accepted`; for an order the kitchen does not have yet
  (`known=False`), `order.created` first.
- 16 on the way: `order.accepted` (if the kitchen did not accept it), then
  `order.out_for_delivery`; nothing for an unknown order.
- 5 delivered: `order.completed`; nothing for an unknown order.
- 6 cancelled: `order.cancelled` with reason_code `marketplace`; nothing for an unknown order.

Why: in seed 001 statuses 2, 16 and 5 (restaurant courier) are what the restaurant's own
calls (`accept`, `ontheway`, `complete`) make, so when the kitchen made the call its echo maps
to nothing. But "the restaurant" is not always this kitchen: staff may accept on the
marketplace's own tablet or panel. Then the kitchen must hear of it, or an order waiting for
acceptance never prints. `kitchen_moves` is the set of statuses the kitchen's own calls made
for this order (the connector knows them from its outbox). An order first seen after the food
left (16, 5 or 6) gives no events: a ticket then would have the kitchen cook it again.

Event ids are `mkt:{marketplace id}:{payment_key}:{status_id}` (hashed when that exceeds 128
characters), so the same status seen again, after a crash or a lost acknowledgement, carries
the same id and the daemon applies it once. The events of one status are applied in list
order; an `order.accepted` for status 2 carries the id of status 2 whichever status showed it.

What reaches tickets and timelines from the customer: the name as first name and last
initial ("Ayşe K."), nothing else. The phone and address are never copied; phone-shaped
numbers (7 or more digits), e-mail addresses and the customer's address are blanked out of
notes, options, names and categories (`[phone]`, `[email]`, `[address]`), because customers do
type them into the note. A date with 7+ digits in a note is blanked too; that is the price.

Payment: a restaurant courier collects cash at the door, so the kitchen must hand the order
over knowing it. For a restaurant-courier order paid `CASH` (or `NAKIT`) the order note starts
with `CASH: collect 360.00 TRY` (`total`, read as minor units like every price in the
contract, with the configured currency when there is one). Card payments are already paid
(seed) and add nothing. Any other or missing method on a restaurant-courier order starts the
note with `PAYMENT {method or UNKNOWN}: check before delivery, total 360.00` rather than
guessing. Platform couriers collect for themselves: no payment line.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final
from zoneinfo import ZoneInfo

from edge.clock import rfc3339
from edge.connectors.marketplace.schema import (
    CANCELLED,
    DELIVERED,
    ON_THE_WAY,
    OTHER_REASON_ID,
    PREPARING,
    RECEIVED,
    MarketplaceOrder,
    Product,
)

CHANNEL: Final = "marketplace"
MARKETPLACE_REASON_CODE: Final = "marketplace"
# CONTRACT section 8: a paused store refuses marketplace orders with reason 3 (too busy).
STORE_PAUSED_REASON_ID: Final = 3
MARKETPLACE_ID_PATTERN: Final = r"^[a-z0-9-]{1,64}$"

_MARKETPLACE_ID = re.compile(MARKETPLACE_ID_PATTERN)
_EVENT_ID_MAX = 128
_PAID_METHODS = frozenset({"CREDIT_CARD", "DEBIT_CARD"})
_CASH_METHODS = frozenset({"CASH", "NAKIT"})
# Phone punctuation between digits; seven digits are enough to reach someone.
_DIGIT_RUN = re.compile(r"\+?\(?\d(?:[\s().\-/]*\d)*\)?")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_MIN_ADDRESS = 6


@dataclass(frozen=True, slots=True)
class Marketplace:
    """What the mapping needs of one configured marketplace."""

    id: str                          # [a-z0-9-]{1,64}
    timezone: ZoneInfo               # scheduled_date is local time here
    currency: str | None = None      # shown on the cash line of the ticket

    def __post_init__(self) -> None:
        if not _MARKETPLACE_ID.match(self.id):
            raise ValueError(f"marketplace id '{self.id}' must match {MARKETPLACE_ID_PATTERN}")


def kitchen_order_id(marketplace_id: str, order_id: int) -> str:
    return f"{marketplace_id}-{order_id}"


def event_id(marketplace_id: str, payment_key: str, status_id: int) -> str:
    plain = f"mkt:{marketplace_id}:{payment_key}:{status_id}"
    if len(plain) <= _EVENT_ID_MAX:
        return plain
    digest = hashlib.sha256(f"{marketplace_id}\n{payment_key}".encode()).hexdigest()[:40]
    return f"mkt:{digest}:{status_id}"


def scheduled_for(local: datetime | None, timezone: ZoneInfo) -> datetime | None:
    """The UTC instant of a `scheduled_date` read as wall time in `timezone`.

    A wall time that a DST change skips (spring forward) or repeats (fall back) has two
    readings; the earlier one is taken, so the food is early rather than late."""
    if local is None:
        return None
    if local.tzinfo is not None:
        return local.astimezone(UTC)
    readings = (local.replace(tzinfo=timezone, fold=fold).astimezone(UTC) for fold in (0, 1))
    return min(readings)


def customer_name(name: str | None) -> str | None:
    """First name and last initial; nothing if the name holds what looks like contact data."""
    if not name or any(c.isdigit() for c in name) or "@" in name:
        return None
    words = name.split()
    if not words:
        return None
    if len(words) == 1:
        return words[0][:64]
    return f"{words[0][:60]} {words[-1][0]}."


def minor_units(amount: int) -> str:
    return f"{amount // 100}.{amount % 100:02d}"


def payment_note(order: MarketplaceOrder, currency: str | None = None) -> str | None:
    """The line the kitchen needs about payment, or None when it needs none."""
    if order.courier_type != "restaurant":
        return None
    method = order.payment_method
    if method in _PAID_METHODS:
        return None
    total = order.total if order.total is not None else _products_total(order.products)
    amount = "amount unknown" if total is None else minor_units(total)
    if total is not None and currency:
        amount += f" {currency}"
    if method in _CASH_METHODS:
        return f"CASH: collect {amount}"
    return f"PAYMENT {method or 'UNKNOWN'}: check before delivery, total {amount}"


def _products_total(products: Iterable[Product]) -> int | None:
    total = 0
    for product in products:
        if product.price is None:
            return None
        total += product.price * product.quantity
    return total


class _Redactor:
    """Blanks the customer's contact data out of text that reaches tickets."""

    def __init__(self, order: MarketplaceOrder) -> None:
        address = order.customer.address if order.customer else None
        parts: list[str] = []
        if isinstance(address, str):
            parts.append(address)
        elif isinstance(address, dict):
            parts.extend(v for v in address.values() if isinstance(v, str))
        self._addresses = [
            re.compile(r"\s+".join(map(re.escape, p.split())), re.IGNORECASE)
            for p in parts if len(p.strip()) >= _MIN_ADDRESS
        ]

    def __call__(self, text: str | None) -> str | None:
        if text is None:
            return None
        for address in self._addresses:
            text = address.sub("[address]", text)
        text = _EMAIL.sub("[email]", text)
        text = _DIGIT_RUN.sub(_phone_or_keep, text)
        return " ".join(text.split()) or None


def _phone_or_keep(match: re.Match[str]) -> str:
    chunk = match.group(0)
    return "[phone]" if sum(c.isdigit() for c in chunk) >= 7 else chunk


def _item(index: int, product: Product, clean: _Redactor) -> dict[str, Any]:
    item: dict[str, Any] = {
        "line_id": str(index + 1),
        "name": clean(product.name) or product.name,
        "qty": product.quantity,
    }
    if product.category:
        item["category"] = clean(product.category)
    modifiers = [m for m in (clean(o) for o in product.options) if m]
    if modifiers:
        item["modifiers"] = modifiers
    if product.note:
        item["note"] = clean(product.note)
    if product.price is not None:
        # No product_id: the marketplace's product ids are not the kitchen menu's.
        item["unit_price"] = product.price
    return item


def _envelope(market: Marketplace, order: MarketplaceOrder, status_id: int, kind: str,
              data: dict[str, Any], observed_at: datetime) -> dict[str, Any]:
    return {
        "event_id": event_id(market.id, order.payment_key, status_id),
        "type": kind,
        "order_id": kitchen_order_id(market.id, order.id),
        "occurred_at": rfc3339(observed_at),
        "source": {"channel": CHANNEL, "device": market.id},
        "data": data,
    }


def created_event(order: MarketplaceOrder, market: Marketplace,
                  observed_at: datetime) -> dict[str, Any]:
    """`order.created` for the order, with the event id of status 1."""
    clean = _Redactor(order)
    data: dict[str, Any] = {
        "display_id": str(order.id),
        "fulfillment": {"type": "delivery", "courier": order.courier_type},
        "items": [_item(i, p, clean) for i, p in enumerate(order.products)],
    }
    name = customer_name(order.customer.name if order.customer else None)
    if name:
        data["customer"] = {"name": name}
    due = scheduled_for(order.scheduled_date, market.timezone)
    if due is not None:
        data["scheduled_for"] = rfc3339(due)
    notes = [n for n in (payment_note(order, market.currency), clean(order.note)) if n]
    if notes:
        data["note"] = "; ".join(notes)
    return _envelope(market, order, RECEIVED, "order.created", data, observed_at)


def events_for(order: MarketplaceOrder, market: Marketplace, *, observed_at: datetime,
               known: bool, kitchen_moves: frozenset[int] = frozenset()) -> list[dict[str, Any]]:
    """The kitchen events for `order` at its `status_id` (see the table in the module doc).

    `known`: the kitchen already has this order (its `order.created` was made durable).
    `kitchen_moves`: the statuses the kitchen's own calls made for this order (2 after
    `accept`, 16 after `ontheway`, 5 after `complete`, 6 after `cancel`)."""
    if observed_at.tzinfo is None:
        raise ValueError("observed_at must be timezone-aware")
    status = order.status_id
    events: list[dict[str, Any]] = []

    def add(status_id: int, kind: str, data: dict[str, Any]) -> None:
        if status_id not in kitchen_moves:
            events.append(_envelope(market, order, status_id, kind, data, observed_at))

    if status == RECEIVED or (status == PREPARING and not known):
        events.append(created_event(order, market, observed_at))
    if not known and status != PREPARING:
        return events
    if status in (PREPARING, ON_THE_WAY):
        accepted = {} if order.preparing_time is None else {"prep_minutes": order.preparing_time}
        add(PREPARING, "order.accepted", accepted)
    if status == ON_THE_WAY:
        add(ON_THE_WAY, "order.out_for_delivery", {})
    elif status == DELIVERED:
        add(DELIVERED, "order.completed", {})
    elif status == CANCELLED:
        add(CANCELLED, "order.cancelled", {"reason_code": MARKETPLACE_REASON_CODE})
    return events


def cancel_reason_id(reason_code: str | None, configured: Mapping[str, int]) -> int:
    """The marketplace's reason id for a kitchen reason_code (config `cancel_reasons`),
    8 (Other) when the code is not mapped."""
    if reason_code is None:
        return OTHER_REASON_ID
    return configured.get(reason_code, OTHER_REASON_ID)
