"""`kitchen-edge printers test ID`: ask the printer how it is, print a test ticket.

It talks to the printer directly, not through the daemon's queue, so it works while the
daemon is stopped; with the daemon running, a printer that takes one connection at a time
may refuse us until the daemon's connection idles, which the result says.
"""

from __future__ import annotations

from typing import Any

from edge.config import Config
from edge.printing.render import render_test_ticket
from edge.printing.transport import PrinterUnavailable
from edge.printing.transports import AddressLookup, make_transport


async def test_print(cfg: Config, printer_id: str, *,
                     mdns_lookup: AddressLookup | None = None) -> dict[str, Any]:
    """`mdns_lookup` resolves an mdns:// printer (the caller browses: printing does not
    import discovery)."""
    try:
        printer = cfg.printer(printer_id)
    except KeyError:
        known = ", ".join(p.id for p in cfg.printers)
        return {"printer_id": printer_id, "printed": False,
                "error": f"no printer '{printer_id}' in the config (known: {known})"}
    transport = make_transport(printer, cfg, mdns_lookup)
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
    return result
