"""Advertise a raw printer port over mDNS, as a network printer does.

Used by the virtual printer (`--advertise NAME`) so a demo configured with `mdns://NAME` finds
it, and by tests. Also runnable on its own, to make any listening port look like a printer:

    python -m edge.discovery.advertise "Kitchen Test Printer" 9100 --host 127.0.0.1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import re
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from edge.discovery.mdns import RAW_TYPE

__all__ = ["DEFAULT_TXT", "advertise", "main"]

log = structlog.get_logger(__name__)

# The TXT keys real ESC/POS network printers publish (Bonjour Printing Specification).
DEFAULT_TXT: dict[str, str] = {
    "txtvers": "1",
    "qtotal": "1",
    "ty": "kitchen-edge virtual printer",
    "product": "(kitchen-edge virtual printer)",
    "usb_MFG": "kitchen-edge",
    "usb_MDL": "virtual printer",
}


def _host_label(name: str) -> str:
    label = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:63]
    return label or "printer"


@asynccontextmanager
async def advertise(
    name: str,
    port: int,
    *,
    host: str = "127.0.0.1",
    service_type: str = RAW_TYPE,
    txt: dict[str, str] | None = None,
    interfaces: list[str] | None = None,
) -> AsyncIterator[None]:
    """Announce `name` at host:port while the block runs; say goodbye when it ends.

    Announcements go out on the interface that carries `host` unless `interfaces` says
    otherwise: a printer on 127.0.0.1 announced on the LAN would send people nowhere.
    Raises zeroconf's NonUniqueNameException when another responder already holds the name.
    """
    packed = ipaddress.ip_address(host).packed
    if not service_type.endswith("."):
        service_type += "."
    info = AsyncServiceInfo(
        service_type,
        f"{name}.{service_type}",
        addresses=[packed],
        port=port,
        properties=dict(DEFAULT_TXT if txt is None else txt),
        server=f"{_host_label(name)}.local.",
    )
    zc = AsyncZeroconf(interfaces=interfaces if interfaces is not None else [host])
    try:
        # The first await is the probe for a unique name (about a second); the task it returns
        # repeats the announcement in the background.
        announcing = asyncio.ensure_future(await zc.async_register_service(info))
        log.info("mdns_advertised", service=name, host=host, port=port, type=service_type)
        try:
            yield
        finally:
            announcing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await announcing
            # Awaiting the returned task is what waits for the goodbye packets to leave.
            await (await zc.async_unregister_service(info))
            log.info("mdns_withdrawn", service=name, host=host, port=port)
    finally:
        await zc.async_close()


async def _advertise_until_signalled(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with advertise(args.name, args.port, host=args.host, service_type=args.type):
        print(f"advertising {args.name!r} at {args.host}:{args.port}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edge.discovery.advertise",
        description="Advertise HOST:PORT over mDNS as a raw (port 9100 style) printer.",
    )
    parser.add_argument("name", help="service instance name, e.g. 'Kitchen Test Printer'")
    parser.add_argument("port", type=int)
    parser.add_argument("--host", default="127.0.0.1", help="address the printer listens on")
    parser.add_argument("--type", default=RAW_TYPE, help=f"service type (default {RAW_TYPE})")
    args = parser.parse_args(argv)
    asyncio.run(_advertise_until_signalled(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
