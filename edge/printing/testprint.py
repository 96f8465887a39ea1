"""`kitchen-edge printers test ID`: ask the printer how it is, print a test ticket.

It talks to the printer directly, not through the daemon's queue, so it works while the
daemon is stopped; with the daemon running, a printer that takes one connection at a time
may refuse us until the daemon's connection idles, which the result says.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from edge.config import Config, MdnsConnection
from edge.printing.render import render_test_ticket
from edge.printing.spooler import make_transport
from edge.printing.transport import PrinterUnavailable

MDNS_WAIT = 5.0


async def test_print(cfg: Config, printer_id: str) -> dict[str, Any]:
    try:
        printer = cfg.printer(printer_id)
    except KeyError:
        known = ", ".join(p.id for p in cfg.printers)
        return {"printer_id": printer_id, "printed": False,
                "error": f"no printer '{printer_id}' in the config (known: {known})"}
    browser = None
    target = printer.target
    if isinstance(target, MdnsConnection):
        from edge.discovery.mdns import MdnsBrowser

        found = asyncio.Event()
        name = target.service_name
        browser = MdnsBrowser(interfaces=cfg.discovery.interfaces,
                              on_change=lambda n, rec: found.set() if n == name and rec else None)
        await browser.start()
        if browser.lookup(name) is None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(MDNS_WAIT):
                    await found.wait()
    transport = make_transport(printer, cfg, browser.lookup if browser else None)
    result: dict[str, Any] = {"printer_id": printer_id, "connection": printer.connection}
    try:
        status = await transport.status()
        result["state"] = status.state
        if not status.ready:
            result["printed"] = False
            result["error"] = f"printer is {status.state}"
            return result
        await transport.send(render_test_ticket(printer_id, columns=printer.columns,
                                                profile=printer.profile,
                                                codepage=printer.codepage))
        result["printed"] = True
        result["state"] = (await transport.status()).state
    except PrinterUnavailable as exc:
        result.update(printed=False, state="offline", error=exc.reason)
    finally:
        await transport.close()
        if browser is not None:
            await browser.stop()
    return result
