"""The kitchen's answers to a marketplace (CONTRACT section 9): which call each change of an
order's stage makes, queued in the durable outbox by a transactional reaction, so a call
exists exactly when its change does, and in the order the changes happened.

- accepted: `PUT /orders/accept/{key}` `{"preparing_time": n}`, if the marketplace has
  it at 1;
- out_for_delivery: `PUT /orders/ontheway/{key}`, restaurant courier only, if not on its way
  there already;
- completed: `PUT /orders/complete/{key}`, restaurant courier only (after an `ontheway` if
  it never went out);
- cancelled or rejected: `PUT /orders/cancel/{key}` `{"reason_id": n}`, unless cancelled or
  delivered there already.

The marketplace is told only what it does not know: an order the marketplace itself moved
(status 2 from its own tablet, 6 from the customer, 5 from its courier) gives the kitchen
the event, and no call goes back. `preparing_time`: the kitchen's `prep_minutes` when it
said one (the operator's `--prep`, auto-accept's, which includes a busy store's minutes),
else the configured `prep_minutes` plus a busy store's `busy_minutes`; within 1..240.
`reason_id`: `store_paused` is 3 (too busy, CONTRACT section 8); any other reason code
through `cancel_reasons`; a code not mapped there, or mapped to an id the marketplace does
not list, is 8 (Other), and logged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import structlog

from edge.connectors.marketplace.importer import STORE_PAUSED
from edge.connectors.marketplace.mapping import CHANNEL, cancel_reason_id
from edge.connectors.marketplace.schema import (
    CANCELLED,
    DELIVERED,
    ON_THE_WAY,
    OTHER_REASON_ID,
    RECEIVED,
)
from edge.feed import OrderStageChanged
from edge.orders import opening
from edge.orders.records import queue_call
from edge.store import Tx
from edge.store import marketplace as kept

log = structlog.get_logger(__name__)

MIN_PREPARING: Final = 1
MAX_PREPARING: Final = 240
PAUSED_REASON_ID: Final = 3


@dataclass(frozen=True)
class Call:
    action: str
    body: dict[str, Any] | None = None


def preparing_time(asked: int | None, configured: int, busy_minutes: int) -> int:
    minutes = asked if asked is not None else configured + busy_minutes
    return max(MIN_PREPARING, min(MAX_PREPARING, minutes))


def reason_id(reason_code: str | None, configured: Mapping[str, int],
              listed: Mapping[int, str] | None) -> tuple[int, bool]:
    """The marketplace's reason id, and whether it is the one the kitchen meant (False: it
    fell back to 8, Other)."""
    if reason_code == STORE_PAUSED:
        return PAUSED_REASON_ID, True
    rid = cancel_reason_id(reason_code, configured)
    if rid != OTHER_REASON_ID and listed is not None and rid not in listed:
        return OTHER_REASON_ID, False
    return rid, reason_code is not None and reason_code in configured


def calls_for(change: OrderStageChanged, row: kept.MarketOrder, *, prep_minutes: int,
              busy_minutes: int, cancel_reasons: Mapping[str, int],
              listed_reasons: Mapping[int, str] | None) -> list[Call]:
    """The calls a stage change makes, given where the marketplace has the order."""
    there = row.status if row.status is not None else RECEIVED
    restaurant = row.courier == "restaurant"
    if change.stage == "accepted":
        if there != RECEIVED:
            return []
        return [Call("accept", {"preparing_time": preparing_time(
            change.prep_minutes, prep_minutes, busy_minutes)})]
    if change.stage == "out_for_delivery":
        if not restaurant or there in (ON_THE_WAY, DELIVERED, CANCELLED):
            return []
        return [Call("ontheway")]
    if change.stage == "completed":
        if not restaurant or there in (DELIVERED, CANCELLED):
            return []
        first = [] if there == ON_THE_WAY or change.previous == "out_for_delivery" \
            else [Call("ontheway")]
        return [*first, Call("complete")]
    if change.stage in ("cancelled", "rejected"):
        if there in (DELIVERED, CANCELLED):
            return []
        rid, meant = reason_id(change.reason_code, cancel_reasons, listed_reasons)
        if not meant:
            log.warning("marketplace_cancel_reason_unmapped", order_id=change.order_id,
                        reason_code=change.reason_code, reason_id=rid,
                        hint="map it in the marketplace's cancel_reasons")
        return [Call("cancel", {"reason_id": rid})]
    return []


class Replies:
    """The transactional reaction of one marketplace: registered with `Store.react`."""

    def __init__(self, marketplace_id: str, destination: str, *, prep_minutes: int,
                 cancel_reasons: Mapping[str, int], now: Callable[[], datetime],
                 listed_reasons: Callable[[], Mapping[int, str] | None]) -> None:
        self.marketplace_id = marketplace_id
        self.destination = destination
        self.prep_minutes = prep_minutes
        self.cancel_reasons = dict(cancel_reasons)
        self._now = now
        self._listed = listed_reasons

    def __call__(self, tx: Tx, change: OrderStageChanged) -> None:
        if change.channel != CHANNEL:
            return
        row = kept.by_order(tx.conn, change.order_id)
        if row is None or row.marketplace != self.marketplace_id:
            return
        now = self._now()
        busy = opening.current(tx.conn).extra_prep_minutes(now)
        for call in calls_for(change, row, prep_minutes=self.prep_minutes, busy_minutes=busy,
                              cancel_reasons=self.cancel_reasons,
                              listed_reasons=self._listed()):
            queue_call(tx, self.destination, order_id=change.order_id, method="PUT",
                       path=f"/orders/{call.action}/{row.payment_key}", body=call.body,
                       now=now,
                       call_key=f"mkt:{self.marketplace_id}:{row.payment_key}:{call.action}")


__all__ = ["MAX_PREPARING", "PAUSED_REASON_ID", "Call", "Replies", "calls_for",
           "preparing_time", "reason_id"]
