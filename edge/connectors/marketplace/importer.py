"""What one listed order becomes in the kitchen, and what is kept about it.

`read_facts` (a read, before the import) says what the kitchen already has of the order:
its `order.created`, the statuses its own calls made, its status, whether an acknowledgement
is already on its way. `plan_events` turns the order and those facts into kitchen events,
adding to the mapping (`edge.connectors.marketplace.mapping.events_for`) what depends on the
restaurant's settings and state:

- a new order (status 1) waits for acceptance (`requires_acceptance`) unless `auto_accept`,
  which accepts it at once with `prep_minutes` (plus the busy store's extra minutes); a
  paused store refuses it (`order.rejected`, reason code `store_paused`: the marketplace is
  told reason 3, too busy);
- a scheduled order carries the marketplace's `lead_minutes`;
- status 5 (delivered) for an order none of whose tickets reached the kitchen (status created
  or held, which seed 003 forbids completing) calls it off instead (`order.cancelled`, reason
  code `marketplace_delivered`): nothing cooks for food already delivered. For an order the
  kitchen already called off it is nothing.

`keep` runs inside the transaction that stores those events (`Intake.submit(also=...)`): the
order as listed, with its problem if it has one; calls of the kitchen that the marketplace's
new status makes pointless (accepting an order it cancelled) settled unsent; and the
acknowledgement (`PUT /orders/success/{payment_key}`) queued in the durable outbox, so it
is sent strictly after the import is on disk and strictly before any call the kitchen's
reaction to these events queues for the same order (success before accept).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import structlog

from edge.clock import rfc3339_ms
from edge.component import IntakeOutcome
from edge.connectors.marketplace.mapping import Marketplace, event_id, events_for
from edge.connectors.marketplace.schema import (
    CANCELLED,
    DELIVERED,
    ON_THE_WAY,
    PREPARING,
    RECEIVED,
    MarketplaceOrder,
)
from edge.orders import opening
from edge.orders.opening import StoreState
from edge.orders.records import queue_call
from edge.store import Tx, calls, events, orders
from edge.store import marketplace as kept
from edge.store.marketplace import MarketOrder

log = structlog.get_logger(__name__)

STORE_PAUSED: Final = "store_paused"
DELIVERED_UNCOOKED: Final = "marketplace_delivered"
_MAX_EVENT_ID = 128
_CONTACT_KEYS = frozenset({"phone", "phone_number", "gsm", "mobile", "email", "e_mail", "mail"})

# The kitchen's calls, and the marketplace statuses at which each has nothing left to do.
ACTIONS: Final = ("accept", "ontheway", "complete", "cancel")
MOOT_AT: Final[dict[str, frozenset[int]]] = {
    "accept": frozenset({PREPARING, ON_THE_WAY, DELIVERED, CANCELLED}),
    "ontheway": frozenset({ON_THE_WAY, DELIVERED, CANCELLED}),
    "complete": frozenset({DELIVERED, CANCELLED}),
    "cancel": frozenset({DELIVERED, CANCELLED}),
}
# The status each of the kitchen's calls moves an order to.
MOVES_TO: Final[dict[str, int]] = {"accept": PREPARING, "ontheway": ON_THE_WAY,
                                   "complete": DELIVERED, "cancel": CANCELLED}


def success_path(payment_key: str) -> str:
    return f"/orders/success/{payment_key}"


def route(path: str) -> tuple[str, str] | None:
    """(action, payment_key) of a call path `/orders/{action}/{payment_key}`."""
    parts = path.strip("/").split("/")
    if len(parts) == 3 and parts[0] == "orders":
        return parts[1], parts[2]
    return None


@dataclass(frozen=True)
class Settings:
    market: Marketplace
    destination: str             # the calls outbox's name for this marketplace
    auto_accept: bool
    prep_minutes: int
    lead_minutes: int | None


@dataclass(frozen=True)
class Facts:
    """What the kitchen has of one marketplace order before this import."""

    row: MarketOrder | None
    known: bool                        # its order.created is stored
    kitchen_moves: frozenset[int]      # statuses the kitchen's own calls made
    kitchen_status: str | None         # the kitchen order's status (seed 003), if any
    ack_pending: bool                  # an acknowledgement is queued, not yet answered
    store: StoreState


def read_facts(conn: Any, settings: Settings, order: MarketplaceOrder,
               kitchen_id: str) -> Facts:
    market = settings.market.id
    moves: set[int] = set()
    for call in calls.of_order(conn, settings.destination, kitchen_id):
        where = route(call.path)
        if where is not None and where[0] in MOVES_TO:
            moves.add(MOVES_TO[where[0]])
    kitchen = orders.get(conn, kitchen_id)
    return Facts(
        row=kept.get(conn, market, order.payment_key),
        known=events.seen(conn, event_id(market, order.payment_key, RECEIVED))
        or kitchen is not None,
        kitchen_moves=frozenset(moves),
        kitchen_status=None if kitchen is None else kitchen.status,
        ack_pending=bool(calls.open_to(conn, settings.destination,
                                       success_path(order.payment_key))),
        store=opening.current(conn),
    )


def _extra_id(base: str, suffix: str) -> str:
    if len(base) + len(suffix) <= _MAX_EVENT_ID:
        return base + suffix
    return "mkt:" + hashlib.sha256(base.encode()).hexdigest()[:40] + suffix


def plan_events(order: MarketplaceOrder, settings: Settings, facts: Facts,
                now: datetime) -> list[dict[str, Any]]:
    """The kitchen events for the order at its current status (see the module doc)."""
    planned = events_for(order, settings.market, observed_at=now, known=facts.known,
                         kitchen_moves=facts.kitchen_moves)
    out: list[dict[str, Any]] = []
    for event in planned:
        if event["type"] == "order.created":
            event["data"]["requires_acceptance"] = not settings.auto_accept
            if settings.lead_minutes is not None and "scheduled_for" in event["data"]:
                event["data"]["lead_minutes"] = settings.lead_minutes
        elif event["type"] == "order.completed" and order.status_id == DELIVERED:
            if facts.kitchen_status in ("cancelled", "void"):
                continue             # called off here already: nothing to complete
            if facts.kitchen_status in ("created", "held"):
                # Seed 003 never completes an order that did not reach the kitchen; the
                # food is delivered, so its tickets must not print now.
                event["type"] = "order.cancelled"
                event["data"] = {"reason_code": DELIVERED_UNCOOKED,
                                 "reason": "the marketplace delivered it before any ticket "
                                           "reached the kitchen"}
        out.append(event)
    if order.status_id == RECEIVED and not facts.known:
        base = event_id(settings.market.id, order.payment_key, RECEIVED)
        envelope = {k: v for k, v in out[0].items() if k not in ("event_id", "type", "data")}
        if not facts.store.takes_orders(now):
            out.append({**envelope, "event_id": _extra_id(base, ":paused"),
                        "type": "order.rejected",
                        "data": {"reason": opening.CLOSED_REASON, "reason_code": STORE_PAUSED}})
        elif settings.auto_accept:
            prep = settings.prep_minutes + facts.store.extra_prep_minutes(now)
            out.append({**envelope, "event_id": _extra_id(base, ":auto-accept"),
                        "type": "order.accepted", "data": {"prep_minutes": prep}})
    return out


def scrub(document: Any) -> Any:
    """The order as listed, without the customer's phone or e-mail (kept for the operator,
    who never needs them: the marketplace has them)."""
    if isinstance(document, dict):
        return {k: ("[removed]" if str(k).lower() in _CONTACT_KEYS and v not in (None, "")
                    else scrub(v)) for k, v in document.items()}
    if isinstance(document, list):
        return [scrub(v) for v in document]
    return document


def raw_text(document: Any) -> str:
    return json.dumps(scrub(document), ensure_ascii=False, sort_keys=True, default=str)


def unkeyed(document: Any) -> str:
    """A stable key for an order without a usable payment_key: kept once, however often it
    repeats."""
    return "unkeyed:" + hashlib.sha256(raw_text(document).encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Keep:
    """What `keep` records about one listed order."""

    payment_key: str
    market_order_id: int | None
    order_id: str | None
    status: int | None
    courier: str | None
    raw: str
    problem: str | None
    acknowledge: bool          # queue `success` (unless one is on its way already)
    imports: bool              # a valid order: its events stand for `status`


def keep(tx: Tx, settings: Settings, what: Keep, outcomes: Sequence[IntakeOutcome],
         now: datetime) -> None:
    """Inside the import's transaction: see the module doc."""
    at = rfc3339_ms(now)
    dead = [o.reason or "refused" for o in outcomes if o.result == "dead"]
    problem = "; ".join(p for p in [what.problem, *dead] if p) or None
    imported = what.status if what.imports and not dead else None
    kept.keep(tx.conn, marketplace=settings.market.id, payment_key=what.payment_key,
              market_order_id=what.market_order_id, order_id=what.order_id,
              status=what.status, imported=imported, courier=what.courier, raw=what.raw,
              problem=problem, at=at)
    if what.order_id is not None and what.status is not None:
        settle_moot(tx, settings.destination, what.order_id, what.status, at)
    if what.acknowledge and not calls.open_to(tx.conn, settings.destination,
                                             success_path(what.payment_key)):
        queue_call(tx, settings.destination, order_id=what.order_id, method="PUT",
                   path=success_path(what.payment_key), body=None, now=now)


def settle_moot(tx: Tx, destination: str, order_id: str, status: int, at: str) -> None:
    """The marketplace has the order at `status`: the kitchen's calls still waiting that
    would move it where it is, or where it can no longer go, are settled unsent (a parked
    accept of an order the customer cancelled must not hold back its acknowledgement)."""
    for call in calls.of_order(tx.conn, destination, order_id):
        where = route(call.path)
        if call.state == "done" or where is None or where[0] not in MOOT_AT:
            continue
        if status in MOOT_AT[where[0]]:
            calls.settle_unsent(tx.conn, call.id,
                                f"not sent: the marketplace has the order at status {status}",
                                at)
            log.info("marketplace_call_moot", order_id=order_id, call_id=call.id,
                     path=call.path, status=status)


__all__ = ["ACTIONS", "DELIVERED_UNCOOKED", "MOOT_AT", "MOVES_TO", "STORE_PAUSED", "Facts",
           "Keep", "Settings", "keep", "plan_events", "raw_text", "read_facts", "route",
           "scrub", "settle_moot", "success_path", "unkeyed"]
