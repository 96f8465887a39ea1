"""The service's own components: the systemd watchdog, and the metrics the feed drives."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from edge.component import BaseComponent, Context
from edge.feed import DeadLettered, EventApplied, EventDuplicate, JobPrinted
from edge.service import metrics
from edge.service.sdnotify import Notifier


class Watchdog(BaseComponent):
    """Pings systemd's watchdog with the status line while the loop is alive."""

    name = "watchdog"

    def __init__(self, ctx: Context, notifier: Notifier) -> None:
        self.ctx = ctx
        self.notifier = notifier

    async def run(self) -> None:
        if not self.notifier.enabled:
            await asyncio.Event().wait()
        await self.notifier.run_watchdog(self.ctx.health.status_line)


class Metrics(BaseComponent):
    """Counters and the event-to-print histogram, from the feed. Gauges that are facts of
    the database are read when scraped (`Health.refresh_metrics`)."""

    name = "metrics"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._unsubscribe: list[Callable[[], None]] = []

    async def start(self) -> None:
        feed = self.ctx.feed
        self._unsubscribe = [
            feed.subscribe(EventApplied,
                           lambda c: metrics.events_ingested.labels(c.event_type).inc()),
            feed.subscribe(EventDuplicate, lambda _: metrics.events_duplicate.inc()),
            feed.subscribe(DeadLettered,
                           lambda c: metrics.events_dead_lettered.labels(c.kind).inc()),
            feed.subscribe(JobPrinted, self._printed),
        ]

    async def run(self) -> None:
        await asyncio.Event().wait()

    async def close(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()

    @staticmethod
    def _printed(change: JobPrinted) -> None:
        waited = (change.printed_at - change.created_at).total_seconds()
        metrics.event_to_print_seconds.observe(max(0.0, waited))


__all__ = ["Metrics", "Watchdog"]
