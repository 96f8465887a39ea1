"""Printing as a component: the spooler, woken by the feed, its results handed to the feed.

Until issue 10's rework of the spooler lands, the spooler still reports through its two
callbacks (a printer's state, a ticket printed); this module turns them into feed changes.
Phase B of the house has the spooler record them on its transactions instead.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from edge.component import BaseComponent, Context
from edge.feed import (
    Change,
    JobPrinted,
    JobQueued,
    PrinterSeen,
    PrinterStateChanged,
    RecordQueued,
    TimelineChanged,
)
from edge.printing.jobs import Claimed
from edge.printing.spooler import AddressLookup, Spooler
from edge.printing.transport import Transport
from edge.store.legacy import ConnStore

SHUTDOWN_GRACE = 10.0


class Printing(BaseComponent):
    name = "spooler"

    def __init__(self, ctx: Context, *, mdns_lookup: AddressLookup | None = None,
                 transports: dict[str, Transport] | None = None) -> None:
        self.ctx = ctx
        self.spooler = Spooler(ctx.cfg, ConnStore(ctx.store), ctx.clock, self._state,
                               mdns_lookup=mdns_lookup, transports=transports)
        self.spooler.on_printed = self._printed
        self._task: asyncio.Task[Any] | None = None
        self._unsubscribe: list[Callable[[], None]] = []

    async def start(self) -> None:
        await self.spooler.recover()
        feed = self.ctx.feed
        self._unsubscribe = [
            feed.subscribe(JobQueued, lambda _: self.spooler.kick()),
            # A printer plugged in or found again takes its queue at once.
            feed.subscribe(PrinterSeen, lambda _: self.spooler.kick()),
        ]

    async def run(self) -> None:
        self._task = asyncio.current_task()
        await self.spooler.run()

    async def stop(self) -> None:
        # Let a ticket that is on its way finish (it would otherwise print again, marked
        # MAY BE DUPLICATE, after restart), then claim nothing more.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SHUTDOWN_GRACE):
                await self.spooler.wait_idle()
        if self._task is not None:
            self._task.cancel()

    async def close(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        await self.spooler.close()

    # -- the spooler's callbacks, as feed changes ----------------------------------------

    def _state(self, printer_id: str, body: dict[str, object]) -> None:
        detail = body.get("detail")
        unconfirmed = body.get("unconfirmed")
        self.ctx.feed.publish([PrinterStateChanged(
            printer_id, str(body["state"]), str(body["since"]), int(str(body["queued"])),
            tuple(str(k) for k in unconfirmed) if isinstance(unconfirmed, list) else (),
            None if detail is None else str(detail))])

    def _printed(self, claimed: Claimed, timeline: dict[str, Any] | None) -> None:
        changes: list[Change] = [
            JobPrinted(claimed.job_key, claimed.order_id, claimed.station_id,
                       claimed.printer_id, claimed.ticket.kind, claimed.created_at,
                       self.ctx.clock.now()),
            # The printed mark wrote a print_job record (and maybe a status one).
            RecordQueued("upstream", claimed.order_id),
        ]
        if timeline is not None:
            changes.append(TimelineChanged(claimed.order_id, timeline))
        self.ctx.feed.publish(changes)


__all__ = ["Printing"]
