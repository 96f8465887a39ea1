"""Which transport prints to a configured printer, by the scheme of its connection URL.

`tcp://HOST:PORT` and `mdns://Service Name` print over raw TCP (an mDNS name resolved through
the lookup the daemon passes in: printing does not import discovery), `usb://VID:PID[/SERIAL]`
over USB bulk endpoints. A new kind of printer connection is one more entry in `TRANSPORTS`.
"""

from __future__ import annotations

from collections.abc import Callable

from edge.config.models import (
    Config,
    MdnsConnection,
    PrinterConfig,
    TcpConnection,
    UsbConnection,
)
from edge.printing.transport import TcpTransport, Transport

AddressLookup = Callable[[str], tuple[str, int] | None]
Maker = Callable[[PrinterConfig, Config, AddressLookup | None], Transport]


def _tcp(printer: PrinterConfig, cfg: Config, _: AddressLookup | None) -> Transport:
    target = printer.target
    assert isinstance(target, TcpConnection)
    host, port = target.host, target.port

    def fixed() -> tuple[str, int] | None:
        return host, port

    timing = cfg.printing
    return TcpTransport(fixed, name=printer.id, connect_timeout=timing.connect_timeout,
                        write_timeout=timing.write_timeout,
                        status_timeout=timing.status_timeout,
                        status_back=printer.pushes_status)


def _mdns(printer: PrinterConfig, cfg: Config, lookup: AddressLookup | None) -> Transport:
    target = printer.target
    assert isinstance(target, MdnsConnection)
    service = target.service_name

    def resolved() -> tuple[str, int] | None:
        return lookup(service) if lookup else None

    timing = cfg.printing
    return TcpTransport(resolved, name=printer.id, connect_timeout=timing.connect_timeout,
                        write_timeout=timing.write_timeout,
                        status_timeout=timing.status_timeout,
                        status_back=printer.pushes_status)


def _usb(printer: PrinterConfig, cfg: Config, _: AddressLookup | None) -> Transport:
    # Imported here: pyusb is only needed where a USB printer is configured.
    from edge.printing.usb import UsbTransport

    target = printer.target
    assert isinstance(target, UsbConnection)
    timing = cfg.printing
    return UsbTransport(target.vendor_id, target.product_id, target.serial, name=printer.id,
                        timeout_ms=int(timing.write_timeout * 1000),
                        status_timeout_ms=int(timing.status_timeout * 1000))


TRANSPORTS: dict[str, Maker] = {"tcp": _tcp, "mdns": _mdns, "usb": _usb}


def make_transport(printer: PrinterConfig, cfg: Config,
                   mdns_lookup: AddressLookup | None = None) -> Transport:
    scheme = printer.connection.split("://", 1)[0]
    maker = TRANSPORTS.get(scheme)
    if maker is None:
        raise ValueError(f"printer {printer.id}: no transport for '{scheme}://'")
    return maker(printer, cfg, mdns_lookup)


__all__ = ["TRANSPORTS", "AddressLookup", "make_transport"]
