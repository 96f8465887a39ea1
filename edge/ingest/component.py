"""The broker side as components: taking order events in (`BrokerIntake`), and publishing
what the kitchen changed (`BrokerOut`: order timelines, dead letters, printer states, the
edge's presence and config state), both on the daemon's one MQTT connection (`BrokerLink`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from edge.clock import Clock, parse_rfc3339, rfc3339_ms
from edge.component import BaseComponent
from edge.feed import (
    AvailabilityChanged,
    DeadLettered,
    Feed,
    PrinterStateChanged,
    TimelineChanged,
    WanChanged,
)
from edge.ingest.consumer import Ingest
from edge.ingest.link import BrokerLink
from edge.ingest.pipeline import cut_payload
from edge.orders import availability, opening
from edge.store import Store, events
from edge.store.trouble import StorageTrouble

log = structlog.get_logger(__name__)

SHUTDOWN_GRACE = 10.0
FLUSH_GRACE = 2.0


class BrokerIntake(BaseComponent):
    """The MQTT connection, the batch intake on it, and the applier."""

    name = "ingest"

    def __init__(self, link: BrokerLink, ingest: Ingest) -> None:
        self.link = link
        self.ingest = ingest

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self.link.run(self.ingest.consume), name="mqtt")
            # What it has not applied when cancelled is stored, and applied at next start.
            group.create_task(self.ingest.run_applier(), name="applier")

    async def stop(self) -> None:
        # Stop taking messages once the batch in hand is committed and acknowledged, and
        # let an apply pass in hand hand on its changes.
        self.ingest.stop()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SHUTDOWN_GRACE):
                await self.ingest.idle.wait()
                await self.ingest.applier_idle.wait()


class BrokerOut(BaseComponent):
    """Publishes the feed's changes the broker's subscribers follow, and says goodbye."""

    name = "mqtt-out"

    def __init__(self, link: BrokerLink, store: Store, feed: Feed, clock: Clock, *,
                 leaving: Callable[[], bool]) -> None:
        self.link = link
        self.store = store
        self.feed = feed
        self.clock = clock
        self.root = link.cfg.root
        # Asked at the last moment: a SIGTERM may land while a reload shuts down.
        self.leaving = leaving
        self.said_goodbye = False
        self._background: set[asyncio.Task[None]] = set()
        self._unsubscribe: list[Callable[[], None]] = []
        self._store_reopens: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        self._unsubscribe = [
            self.feed.subscribe(TimelineChanged, self._timeline),
            self.feed.subscribe(DeadLettered, lambda c: self._dead_letter(c.dead_letter_id)),
            self.feed.subscribe(PrinterStateChanged, self._printer_state),
            self.feed.subscribe(WanChanged, self._wan),
            self.feed.subscribe(AvailabilityChanged, lambda _c: self._availability()),
        ]
        self._availability()
        for row_id in await self.store.read(events.unpublished_dead_letters):
            self._dead_letter(row_id)
        # The config in force, retained: replaces a refusal an earlier reload left there.
        self.link.publish(f"{self.root}/edge/config", {
            "state": "applied", "problems": [], "at": rfc3339_ms(self.clock.now())},
            retain=True)

    async def run(self) -> None:
        await asyncio.Event().wait()

    async def stop(self) -> None:
        # Publish what the stopped pieces changed (an order's retained status is published
        # only when it changes: one dropped here stays stale for good), then tell everyone
        # we are going, while the connection is still up.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(FLUSH_GRACE):
                await self.link.flush()
        if self.leaving():
            await self.link.say_goodbye()
            self.said_goodbye = True

    async def close(self) -> None:
        if self._store_reopens is not None:
            self._store_reopens.cancel()
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        for task in list(self._background):
            task.cancel()

    # -- what goes out -------------------------------------------------------------------

    def _timeline(self, change: TimelineChanged) -> None:
        """The timeline a transaction just wrote, retained; the link keeps only the newest
        per topic if it cannot send at once."""
        self.link.publish(f"{self.root}/orders/{change.order_id}/status", dict(change.timeline),
                          retain=True)

    def _printer_state(self, change: PrinterStateChanged) -> None:
        self.link.publish(f"{self.root}/printers/{change.printer_id}/state", change.body(),
                          retain=True)

    def _wan(self, change: WanChanged) -> None:
        log.info("wan_state", up=change.up)
        self.link.update_presence(wan="up" if change.up else "down")

    def _availability(self) -> None:
        """What the restaurant offers now, retained; again when a busy or paused spell's
        `until` comes, since nothing else changes then."""
        async def publish() -> None:
            now = self.clock.now()
            doc, state = await self.store.read(
                lambda c: (availability.document(c, now), opening.current(c)))
            self.link.publish(f"{self.root}/menu/availability", doc, retain=True)
            if self._store_reopens is not None:
                self._store_reopens.cancel()
                self._store_reopens = None
            current = state.now(now)
            if current.until is not None and current.state is not opening.Opening.OPEN:
                left = (parse_rfc3339(current.until) - now).total_seconds()
                self._store_reopens = asyncio.get_running_loop().call_later(
                    max(0.0, left) + 0.01, self._availability)

        self._spawn(publish())

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _dead_letter(self, row_id: int) -> None:
        async def publish() -> None:
            row = await self.store.read(lambda c: events.dead_letter(c, row_id))
            if row is None:
                return

            async def sent() -> None:
                try:
                    await self.store.transact(
                        lambda tx: events.mark_dead_letter_published(tx.conn, row_id))
                except StorageTrouble:
                    # Not marked: published again at the next start, which is allowed (at
                    # least once); stopping the broker link over it is not.
                    log.warning("dead_letter_mark_not_stored", dead_letter_id=row_id)

            self.link.publish(f"{self.root}/dead-letter", {
                "topic": row.topic, "reason": row.reason, "received_at": row.received_at,
                "payload": cut_payload(row.payload)}, on_sent=sent)

        self._spawn(publish())


__all__ = ["FLUSH_GRACE", "SHUTDOWN_GRACE", "BrokerIntake", "BrokerOut"]
