"""Discovery as components: mDNS browsing (`MdnsDiscovery`) and USB rescanning
(`UsbDiscovery`). Each keeps its own rows of the printer registry (`edge.store.registry`),
and tells the feed when a printer appears, moves or goes (`PrinterSeen`), so the spooler
wakes without either knowing the other.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from edge.clock import rfc3339_ms
from edge.component import BaseComponent, Context
from edge.discovery.usb import UsbPrinterInfo, UsbWatcher
from edge.feed import PrinterSeen
from edge.store import Tx, registry

if TYPE_CHECKING:
    from edge.discovery.mdns import ServiceRecord


class MdnsDiscovery(BaseComponent):
    name = "mdns"

    def __init__(self, ctx: Context) -> None:
        # zeroconf (about 3 MB of RSS) only when a printer is found by mDNS (issue 12).
        from edge.discovery.mdns import MdnsBrowser

        self.ctx = ctx
        self.browser = MdnsBrowser(interfaces=ctx.cfg.discovery.interfaces,
                                   on_change=self._changed, store=ctx.store, clock=ctx.clock)

    def lookup(self, service_name: str) -> tuple[str, int] | None:
        """Where the printer of this service name answers now (memory only, never waits)."""
        return self.browser.lookup(service_name)

    async def start(self) -> None:
        await self.browser.start()

    async def run(self) -> None:
        await asyncio.Event().wait()   # the browser runs its own background tasks

    async def close(self) -> None:
        await self.browser.stop()

    def _changed(self, name: str, record: ServiceRecord | None) -> None:
        self.ctx.feed.publish([PrinterSeen("mdns", name, record is not None)])


class UsbDiscovery(BaseComponent):
    """Plugging and unplugging, noticed by rescanning: kept in the registry, and the spooler
    woken so a replugged printer takes its queue at once. (Printing never waits for this: a
    USB transport finds its device itself, on whatever port it now is.)"""

    name = "usb-watch"

    def __init__(self, ctx: Context, watcher: UsbWatcher | None = None) -> None:
        self.ctx = ctx
        self.watcher = watcher or UsbWatcher()

    async def run(self) -> None:
        await self.watcher.run(self._changed, self.ctx.cfg.discovery.usb_rescan)

    async def _changed(self, added: list[UsbPrinterInfo], removed: list[UsbPrinterInfo]) -> None:
        stamp = rfc3339_ms(self.ctx.clock.now())

        def record(tx: Tx) -> None:
            for info in added:
                registry.upsert_seen(tx.conn, source="usb", name=info.connection,
                                     address=f"bus {info.bus} device {info.address}", port=None,
                                     details={"manufacturer": info.manufacturer,
                                              "model": info.model,
                                              "command_set": info.command_set,
                                              "escpos": info.escpos},
                                     seen_at=stamp)
                tx.emit(PrinterSeen("usb", info.connection, True))
            for info in removed:
                registry.mark_gone(tx.conn, source="usb", name=info.connection)
                tx.emit(PrinterSeen("usb", info.connection, False))

        await self.ctx.store.transact(record)


__all__ = ["MdnsDiscovery", "UsbDiscovery"]
