"""The kitchen's answers to the platform (seed 004 webhooks), queued in the transaction of the
change they report: a transactional reaction on `OrderStageChanged` writes the call into
the partner-call outbox (destination `aggregator`), so it exists exactly when the change
does, and the `CallSender` delivers it, per order in the order written, retried with
backoff, a 4xx parked for the operator.

| the kitchen | the webhook (`PATCH {webhook_url}...`) |
|---|---|
| accepted | `/orders/{id}` `success`, `prep_time` = now + prep minutes (1) |
| rejected (the operator, or a paused store on arrival) | `/orders/{id}` `fail` (2) |
| ready | `/orders/{id}/events/order_ready_for_pickup` |
| cancelled before it was accepted | `/orders/{id}` `fail`: nothing confirmed to take back |
| cancelled after | `/orders/{id}/cancellation`, the seed's reason code for the kitchen's |
| cancelled because the platform asked (reason code `platform`) | nothing |
| out for delivery, completed | nothing: the platform told us |

(1) the order.accepted's prep minutes, else `aggregator.prep_minutes` plus a busy store's
extra minutes. (2) `failure_reason`: the kitchen's words, else the seed's for its code.

Only orders the platform sent through the API (a `platform_orders` row) are answered: an
`ot-` order published on MQTT by anyone else never makes the kitchen call the platform.
"""

from __future__ import annotations

from edge.clock import Clock
from edge.config.models import AggregatorConfig
from edge.connectors.aggregator import mapping
from edge.feed import OrderStageChanged
from edge.orders import opening
from edge.orders.records import queue_call
from edge.store import Tx, platform_orders

DESTINATION = "aggregator"


class Webhooks:
    def __init__(self, cfg: AggregatorConfig, clock: Clock) -> None:
        self.cfg = cfg
        self.clock = clock

    def react(self, tx: Tx, change: OrderStageChanged) -> None:
        """The transactional reaction: runs inside the writer transaction."""
        if change.channel != mapping.CHANNEL:
            return
        platform_id = mapping.platform_order_id(change.order_id)
        if platform_id is None or platform_orders.get(tx.conn, platform_id) is None:
            return
        now = self.clock.now()
        hook = self.webhook_for(tx, change, platform_id)
        if hook is None:
            return
        # One call per stage of an order: a stage is reached once, and the key makes sure.
        queue_call(tx, DESTINATION, order_id=change.order_id, method=hook.method,
                   path=hook.path, body=hook.body, now=now,
                   call_key=f"{DESTINATION}:{change.order_id}:{change.stage}")

    def webhook_for(self, tx: Tx, change: OrderStageChanged,
                    platform_id: str) -> mapping.Webhook | None:
        stage = change.stage
        if stage == "accepted":
            now = self.clock.now()
            prep = change.prep_minutes
            if prep is None:
                prep = self.cfg.prep_minutes + \
                    opening.current(tx.conn).extra_prep_minutes(now)
            return mapping.accepted_webhook(platform_id, mapping.prep_time(now, prep))
        if stage == "rejected":
            return mapping.rejected_webhook(
                platform_id, mapping.reason_words(change.reason_code, change.reason))
        if stage == "ready":
            return mapping.ready_webhook(platform_id)
        if stage == "cancelled":
            if change.reason_code == mapping.PLATFORM_CANCEL_CODE:
                return None
            if change.previous == "received":
                return mapping.rejected_webhook(
                    platform_id, mapping.reason_words(change.reason_code, change.reason))
            return mapping.cancellation_webhook(platform_id, change.reason_code or "",
                                                change.reason)
        return None


__all__ = ["DESTINATION", "Webhooks"]
