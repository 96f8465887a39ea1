"""The marketplace connector (seed 001, CONTRACT section 9): one `MarketplaceConnector` per
configured marketplace, all run by the `Marketplaces` component.

Each polls `GET /orders/get-current` every `poll_seconds` while the marketplace answers, and
backs off (capped, jittered, Retry-After honoured) while it does not, with the reason as its
state. Every order listed is validated (`schema.parse_order`); each new (payment_key,
status) becomes kitchen events (`importer.plan_events`) taken in through the durable intake,
in one transaction with the order as listed and its acknowledgement call
(`importer.keep`). Repeats change nothing: the event ids are the (payment_key, status), and
an acknowledgement already on its way is not queued again. An order that breaks the schema is
kept with the field at fault, shown to the operator and acknowledged (only once kept); it
never stops the poll or the other orders in it.

The calls back go through the durable outbox (`CallSender`, destination
`marketplace:{id}`), per order in the order they were queued: the acknowledgement first (it
is queued with the import), then what the kitchen's reaction (`replies.Replies`) queues.
This connector is the sender's `Gate` for one rule the outbox cannot know: an
acknowledgement names no status, the marketplace acknowledges whatever the order has *now*,
so one must never go out unless the connector has seen and imported the order's current
status. It goes only within FRESH seconds of a complete poll that listed the order at the
status imported, and each retry only after a poll newer than the attempt before (else a
poll is asked for first); an order no longer listed needs none. What is left is the time
between that poll's answer and the acknowledgement's arrival, milliseconds.
When the answer says the status it acknowledged and that is not the one imported (it moved
in between), that status is imported from the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Final

import httpx
import structlog

from edge import crashpoints
from edge.backoff import Backoff
from edge.clock import rfc3339_ms
from edge.component import Accept, BaseComponent, Context, IntakeClosed, IntakeOutcome
from edge.config.models import MarketplaceConfig
from edge.connectors.calls import SEND, WAIT, CallSender, Destination, Verdict
from edge.connectors.marketplace import views
from edge.connectors.marketplace.client import MarketplaceClient, Unavailable
from edge.connectors.marketplace.importer import (
    Keep,
    Settings,
    keep,
    plan_events,
    raw_text,
    read_facts,
    route,
    success_path,
    unkeyed,
)
from edge.connectors.marketplace.mapping import Marketplace, kitchen_order_id
from edge.connectors.marketplace.replies import Replies
from edge.connectors.marketplace.schema import (
    STATUSES,
    BadOrder,
    MarketplaceOrder,
    parse_order,
)
from edge.feed import OrderStageChanged
from edge.store import Tx, calls
from edge.store import marketplace as kept
from edge.store.calls import Call
from edge.store.trouble import log_failure

log = structlog.get_logger(__name__)

# How recent the poll an acknowledgement rests on must be (seconds since its answer).
FRESH: Final = 1.0
# Cancel reasons are read at start, and again at most this often until they are.
REASONS_RETRY: Final = 60.0
STOP_GRACE: Final = 5.0


class MarketplaceConnector:
    def __init__(self, ctx: Context, cfg: MarketplaceConfig, *,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.ctx = ctx
        self.cfg = cfg
        self.id = cfg.id
        self.source = f"marketplace-{cfg.id}"
        self.destination = views.destination(cfg.id)
        self.settings = Settings(Marketplace(cfg.id, ctx.cfg.zone, cfg.currency),
                                 self.destination, cfg.auto_accept, cfg.prep_minutes,
                                 cfg.lead_minutes)
        self.client = MarketplaceClient(cfg.url, cfg.token_file, timeout=cfg.timeout,
                                        transport=transport)
        self.sender = CallSender(ctx, Destination(
            self.destination, cfg.url, cfg.token_file, timeout=cfg.timeout,
            backoff_max=cfg.backoff_max, poll_interval=cfg.poll_seconds),
            transport=transport, gate=self)
        # Never faster than a healthy marketplace is polled: from poll_seconds, doubling.
        self.backoff = Backoff(cfg.poll_seconds, max(cfg.poll_seconds, cfg.backoff_max),
                               floor=0.5)
        # The marketplace's cancel reasons (id -> text), once read.
        self.reasons: dict[int, str] | None = None
        self._reasons_read = False
        self._reasons_tried: float | None = None
        # The last complete poll: what it listed (payment_key -> status) and when it answered.
        self.listing: dict[str, int | None] = {}
        self.polled_at: float | None = None
        self.polling = False
        # Acknowledgements sent and not yet answered with a 2xx: call id -> when.
        self._acks_tried: dict[int, float] = {}
        self.state = "starting"
        self.last_error: str | None = None
        self.imported = 0
        self._soon = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = False
        ctx.store.react(OrderStageChanged, Replies(
            cfg.id, self.destination, prep_minutes=cfg.prep_minutes,
            cancel_reasons=cfg.cancel_reasons, now=ctx.clock.now,
            listed_reasons=lambda: self.reasons))
        ctx.board.add(f"marketplace:{cfg.id}", self.board)

    # -- life ----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.sender.start()
        known = await self.ctx.store.read(lambda c: kept.state(c, self.id))
        if known is not None and known.cancel_reasons:
            self.reasons = known.cancel_reasons

    async def run(self) -> None:
        log.info("marketplace_started", marketplace=self.id, url=self.cfg.url,
                 poll_seconds=self.cfg.poll_seconds, auto_accept=self.cfg.auto_accept)
        async with asyncio.TaskGroup() as group:
            group.create_task(self.sender.run(), name=f"calls-{self.id}")
            group.create_task(self._poll_loop(), name=f"poll-{self.id}")

    async def stop(self) -> None:
        # No new poll; the one in hand finishes (its orders are imported and acknowledged
        # or left to repeat, never half-done).
        self._stopping = True
        self._soon.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_GRACE):
                await self._idle.wait()

    async def close(self) -> None:
        await self.sender.close()
        await self.client.close()

    def poll_soon(self) -> None:
        """Poll now rather than at the next tick (not while backing off)."""
        if self.backoff.failures == 0:
            self._soon.set()

    # -- polling -------------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        while not self._stopping:
            try:
                delay = await self._round()
            except IntakeClosed:
                return           # the daemon is stopping: what was not stored repeats
            except Exception as exc:  # a database hiccup must not end the polling
                log_failure(log, "marketplace_poll_failed", exc, marketplace=self.id)
                self.last_error = repr(exc)
                delay = self.backoff.failed()
            if self._stopping:
                return
            self._soon.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._soon.wait()

    async def _round(self) -> float:
        """One poll; the seconds until the next."""
        self.polling = True
        self._idle.clear()
        try:
            await self._read_reasons()
            try:
                documents = await self.client.current()
            except Unavailable as exc:
                return await self._unavailable(exc)
            answered = self.ctx.clock.monotonic()
            now = self.ctx.clock.now()
            listing: dict[str, int | None] = {}
            for document in documents:
                await self._take(document, listing, now)
            self.listing, self.polled_at = listing, answered
            await self._record("ok", None)
            return self.cfg.poll_seconds
        finally:
            self.polling = False
            self._idle.set()
            self.sender.kick()      # acknowledgements kept back may go now

    async def _unavailable(self, exc: Unavailable) -> float:
        delay = self.backoff.failed(exc.retry_after)
        changed = exc.state != self.state
        self.last_error = exc.message
        await self._record(exc.state, exc.message)
        (log.warning if changed else log.info)(
            "marketplace_unavailable", marketplace=self.id, state=exc.state,
            error=exc.message, retry_in=round(delay, 2), failures=self.backoff.failures)
        return delay

    async def _record(self, state: str, error: str | None) -> None:
        if state == "ok":
            if self.state != "ok":
                log.info("marketplace_answering", marketplace=self.id, previous=self.state)
            self.backoff.succeeded()
        self.state = state
        at = rfc3339_ms(self.ctx.clock.now())
        failures = self.backoff.failures
        await self.ctx.store.transact(lambda tx: kept.record_poll(
            tx.conn, self.id, state=state, at=at, error=error, failures=failures),
            durable=False)

    async def _read_reasons(self) -> None:
        now = self.ctx.clock.monotonic()
        if self._reasons_read or (self._reasons_tried is not None
                                  and now - self._reasons_tried < REASONS_RETRY):
            return
        self._reasons_tried = now
        try:
            reasons = await self.client.cancel_reasons()
        except Unavailable as exc:
            log.warning("marketplace_cancel_reasons_unread", marketplace=self.id,
                        error=exc.message, using="the last list read" if self.reasons
                        else "the configured ids as they are")
            return
        self.reasons, self._reasons_read = reasons, True
        at = rfc3339_ms(self.ctx.clock.now())
        await self.ctx.store.transact(
            lambda tx: kept.record_reasons(tx.conn, self.id, reasons, at), durable=False)
        unknown = {code: rid for code, rid in self.cfg.cancel_reasons.items()
                   if rid not in reasons}
        log.info("marketplace_cancel_reasons", marketplace=self.id, reasons=len(reasons))
        if unknown:
            log.warning("marketplace_cancel_reasons_unknown_ids", marketplace=self.id,
                        configured=unknown, listed=sorted(reasons),
                        effect="those reason codes are sent as 8 (Other)")

    async def _take(self, document: Any, listing: dict[str, int | None],
                    now: datetime) -> None:
        """One listed order; whatever goes wrong with it stays with it."""
        try:
            order = parse_order(document)
        except BadOrder as bad:
            await self._guarded(self._take_bad(document, bad, listing, now),
                                payment_key=bad.payment_key)
            return
        listing[order.payment_key] = order.status_id
        await self._guarded(self._import(order, document, now, acknowledge=True),
                            payment_key=order.payment_key,
                            order_id=kitchen_order_id(self.id, order.id))

    async def _guarded(self, work: Any, **context: Any) -> None:
        with structlog.contextvars.bound_contextvars(marketplace=self.id, **context):
            try:
                await work
            except (IntakeClosed, asyncio.CancelledError):
                raise
            except Exception as exc:  # a bug of ours must not lose the other orders of the poll
                log_failure(log, "marketplace_order_failed", exc)

    async def _import(self, order: MarketplaceOrder, document: Any, now: datetime, *,
                      acknowledge: bool, problem: str | None = None) -> None:
        kitchen_id = kitchen_order_id(self.id, order.id)
        facts = await self.ctx.store.read(
            lambda c: read_facts(c, self.settings, order, kitchen_id))
        raw = raw_text(document)
        row = facts.row
        if row is not None and row.status == order.status_id and row.raw == raw \
                and (facts.ack_pending or not acknowledge):
            return          # a repeat while its acknowledgement is on its way
        events = plan_events(order, self.settings, facts, now)
        what = Keep(order.payment_key, order.id, kitchen_id, order.status_id,
                    order.courier_type, raw, problem, acknowledge, imports=True)
        payloads = [json.dumps(e, ensure_ascii=False).encode() for e in events]

        def import_and_keep(tx: Tx, accept: Accept) -> Sequence[IntakeOutcome]:
            taken = accept(payloads) if payloads else []
            keep(tx, self.settings, what, taken, now)
            return taken

        outcomes = await self.ctx.intake.submit_with(self.source, import_and_keep)
        crashpoints.reached("marketplace_after_import")
        new = [(e["type"], o.result) for e, o in zip(events, outcomes, strict=True)]
        if any(result != "duplicate" for _, result in new) or (row and row.status !=
                                                               order.status_id):
            self.imported += 1
            log.info("marketplace_order_imported", status=order.status_id,
                     events=[f"{kind}:{result}" for kind, result in new],
                     acknowledge=acknowledge)
        for outcome in outcomes:
            if outcome.result == "dead":
                log.error("marketplace_event_refused", reason=outcome.reason,
                          event_id=outcome.event_id)

    async def _take_bad(self, document: Any, bad: BadOrder,
                        listing: dict[str, int | None], now: datetime) -> None:
        key = bad.payment_key or unkeyed(document)
        status = document.get("status_id") if isinstance(document, dict) else None
        status = status if type(status) is int else None
        listing[key] = status
        dest = self.destination

        def facts(c: Any) -> tuple[kept.MarketOrder | None, bool]:
            return kept.get(c, self.id, key), bool(calls.open_to(c, dest, success_path(key)))

        row, ack_pending = await self.ctx.store.read(facts)
        if row is not None and row.imported is not None and status in STATUSES \
                and status != row.imported:
            # A known order listed again with a broken field: its new status (a cancel, a
            # delivery) still counts, taken on the order as it was last readable.
            try:
                rebuilt = {**json.loads(row.raw), "status_id": status}
                order = parse_order(rebuilt)
            except (ValueError, BadOrder):
                order = None
            if order is not None:
                log.warning("marketplace_order_unreadable_status_taken", status=status,
                            reason=bad.reason)
                await self._import(order, rebuilt, now, acknowledge=True,
                                   problem=f"listed with {bad.reason}")
                return
        problem = bad.reason
        if row is not None and row.status == status and row.problem is not None \
                and problem in row.problem and (ack_pending or bad.payment_key is None):
            return          # kept already; its acknowledgement is on its way (or impossible)
        order_id = None if bad.order_id is None else kitchen_order_id(self.id, bad.order_id)
        what = Keep(key, bad.order_id, order_id, status, None, raw_text(document), problem,
                    acknowledge=bad.payment_key is not None, imports=False)
        await self.ctx.store.transact(lambda tx: keep(tx, self.settings, what, [], now))
        log.warning("marketplace_order_kept_unimported", payment_key=key,
                    market_order_id=bad.order_id, reason=problem,
                    acknowledged=bad.payment_key is not None)

    # -- the sender's gate ---------------------------------------------------------------

    async def before(self, call: Call) -> Verdict:
        where = route(call.path)
        if where is None or where[0] != "success":
            return SEND
        if self.polling:
            return WAIT
        now = self.ctx.clock.monotonic()
        tried = self._acks_tried.get(call.id)
        if self.polled_at is None or now - self.polled_at > FRESH or \
                (tried is not None and self.polled_at <= tried):
            # Each attempt rests on a poll of its own: a retry on the poll the last attempt
            # rested on would acknowledge whatever happened since, unseen.
            self.poll_soon()
            return WAIT
        key = where[1]
        if key not in self.listing:
            self._acks_tried.pop(call.id, None)
            return Verdict("drop", "the marketplace no longer lists the order: it is "
                                   "acknowledged already")
        row = await self.ctx.store.read(lambda c: kept.get(c, self.id, key))
        if row is not None and row.status != self.listing[key]:
            return WAIT     # its new status is being imported
        self._acks_tried[call.id] = self.ctx.clock.monotonic()
        return SEND

    async def answered(self, call: Call, status: int, body: bytes) -> None:
        where = route(call.path)
        if where is None or where[0] != "success":
            return
        key = where[1]
        self._acks_tried.pop(call.id, None)
        said = _answered_status(body)
        row = await self.ctx.store.read(lambda c: kept.get(c, self.id, key))
        if row is None:
            return
        acked = said if said is not None else row.status
        await self.ctx.store.transact(
            lambda tx: kept.set_acked(tx.conn, self.id, key, acked), durable=False)
        if said is None or said == row.status or said not in STATUSES or row.imported is None:
            return
        # It moved between the poll and this acknowledgement, which acknowledged the new
        # status: the order will not be listed at it, so take it from here.
        with structlog.contextvars.bound_contextvars(marketplace=self.id, payment_key=key,
                                                     order_id=row.order_id):
            log.warning("marketplace_moved_while_acknowledged", imported=row.status,
                        acknowledged=said)
            try:
                document = {**json.loads(row.raw), "status_id": said}
                order = parse_order(document)
            except (ValueError, BadOrder) as exc:
                log.error("marketplace_moved_order_unreadable", error=str(exc))
                return
            await self._guarded(self._import(order, document, self.ctx.clock.now(),
                                             acknowledge=False))

    # -- the operator ----------------------------------------------------------------------

    async def board(self) -> dict[str, Any]:
        now = self.ctx.clock.now()
        view = await self.ctx.store.read(lambda c: views.overview(c, self.cfg, now))
        view.update({"polling_state": self.state, "listed_now": len(self.listing),
                     "imported_since_start": self.imported})
        return view


def _answered_status(body: bytes) -> int | None:
    try:
        document = json.loads(body)
    except ValueError:
        return None
    data = document.get("data") if isinstance(document, dict) else None
    status = data.get("status_id") if isinstance(data, dict) else None
    return status if type(status) is int else None


class Marketplaces(BaseComponent):
    """Every configured marketplace, as one component of the daemon."""

    name = "marketplaces"

    def __init__(self, ctx: Context, *,
                 transport: Callable[[MarketplaceConfig], httpx.AsyncBaseTransport | None]
                 = lambda _: None) -> None:
        self.connectors = [MarketplaceConnector(ctx, m, transport=transport(m))
                           for m in ctx.cfg.marketplaces]

    async def start(self) -> None:
        for connector in self.connectors:
            await connector.start()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for connector in self.connectors:
                group.create_task(connector.run(), name=f"marketplace-{connector.id}")

    async def stop(self) -> None:
        await asyncio.gather(*(c.stop() for c in self.connectors))

    async def close(self) -> None:
        for connector in self.connectors:
            try:
                await connector.close()
            except Exception:
                log.exception("marketplace_close_failed", marketplace=connector.id)


__all__ = ["FRESH", "MarketplaceConnector", "Marketplaces"]
