"""Printing as a component: the spooler, woken by the feed (`JobQueued`, `PrinterSeen`).
What the spooler changes reaches the feed with its own transactions (jobs) or directly
(printer states)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from edge.component import BaseComponent, Context
from edge.feed import JobQueued, PrinterSeen
from edge.printing.spooler import Spooler
from edge.printing.transport import Transport
from edge.printing.transports import AddressLookup

SHUTDOWN_GRACE = 10.0


class Printing(BaseComponent):
    name = "spooler"

    def __init__(self, ctx: Context, *, mdns_lookup: AddressLookup | None = None,
                 transports: dict[str, Transport] | None = None) -> None:
        self.ctx = ctx
        self.spooler = Spooler(ctx.cfg, ctx.store, ctx.clock, ctx.feed,
                               mdns_lookup=mdns_lookup, transports=transports)
        self._task: asyncio.Task[Any] | None = None
        self._unsubscribe: list[Callable[[], None]] = []
        ctx.board.add("printers", self.status)

    async def status(self) -> dict[str, Any]:
        """Each printer as its state topic last said it, with the stations it serves."""
        printers = []
        for printer_id, worker in self.spooler.workers.items():
            said = worker.last_published or {"printer_id": printer_id,
                                             "state": worker.health.state}
            printers.append({**said, "stations": list(worker.primary_for),
                             "backup_for": list(worker.backup_for)})
        return {"printers": printers, "printed": self.spooler.printed}

    async def start(self) -> None:
        await self.spooler.recover()
        feed = self.ctx.feed
        self._unsubscribe = [
            feed.subscribe(JobQueued, lambda c: self.spooler.kick(c.station_id)),
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


__all__ = ["Printing"]
