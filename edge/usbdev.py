"""USB printer descriptors and errors, shared by printing (the USB transport) and discovery
(the USB scan): which interface of a device to print on, string descriptors, and the
operator's words for pyusb errors. One place, so the two never disagree about what counts as
a printer interface.

Everything here reads descriptors or wraps pyusb; nothing claims a device.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Any

import usb.core
import usb.util

UDEV_RULES = "/etc/udev/rules.d/60-kitchen-edge-printers.rules"
ACCESS_DENIED = (
    f"access denied to the USB printer: install {UDEV_RULES} (from systemd/ in the "
    "kitchen-edge source), add the daemon's user to the 'lp' group, then replug the printer"
)

PRINTER_CLASS = 7
VENDOR_CLASS = 0xFF

# libusb error codes, for backends that set no errno.
LIBUSB_ACCESS = -3
LIBUSB_NO_DEVICE = -4
LIBUSB_BUSY = -6
LIBUSB_TIMEOUT = -7
LIBUSB_PIPE = -9


class UsbUnavailable(RuntimeError):
    """No way to use USB here (libusb is missing)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def default_backend() -> Any:
    """pyusb's libusb-1.0 backend; UsbUnavailable when libusb is not installed."""
    import usb.backend.libusb1

    backend = usb.backend.libusb1.get_backend()
    if backend is None:
        raise UsbUnavailable("libusb-1.0 not found (install the libusb-1.0-0 package)")
    return backend


def is_unplugged(exc: usb.core.USBError) -> bool:
    return (
        exc.errno == errno.ENODEV
        or exc.backend_error_code == LIBUSB_NO_DEVICE
        or "No such device" in str(exc)
    )


def usb_error_reason(exc: usb.core.USBError) -> str:
    """The operator's words for a pyusb error."""
    code = exc.backend_error_code
    if exc.errno == errno.EACCES or code == LIBUSB_ACCESS:
        return ACCESS_DENIED
    if is_unplugged(exc):
        return "unplugged"
    if isinstance(exc, usb.core.USBTimeoutError) or exc.errno == errno.ETIMEDOUT:
        return "timed out"
    if exc.errno == errno.EBUSY or code == LIBUSB_BUSY:
        return "busy: another program has claimed the printer interface (CUPS?)"
    if exc.errno == errno.EPIPE or code == LIBUSB_PIPE:
        return "endpoint stalled"
    return f"usb error: {exc}"


def read_string(device: Any, index: int) -> str | None:
    """A string descriptor, None when the device has none.

    Access denied and unplugged are raised: pyusb's own `Device.serial_number` turns them
    into "no langid", which would make a printer we may not open look absent.
    """
    if not index:
        return None
    try:
        langids = usb.util.get_langids(device)
        if not langids:
            return None
        return str(usb.util.get_string(device, index, langids[0]))
    except usb.core.USBError as exc:
        if exc.errno == errno.EACCES or exc.backend_error_code == LIBUSB_ACCESS:
            raise
        if is_unplugged(exc):
            raise
        return None  # a device that stalls string requests has no strings to offer


def bulk_endpoint(interface: Any, direction: int) -> Any:
    return usb.util.find_descriptor(
        interface,
        custom_match=lambda ep: (
            usb.util.endpoint_type(ep.bmAttributes) == usb.util.ENDPOINT_TYPE_BULK
            and usb.util.endpoint_direction(ep.bEndpointAddress) == direction
        ),
    )


@dataclass(frozen=True)
class PrinterInterface:
    """The interface to print on, its endpoints, and how good a choice it is (lower first)."""

    interface: Any
    ep_out: Any
    ep_in: Any                 # None: no status can be read back
    rank: tuple[int, int]


def printer_interface(config: Any, *, vendor_class: bool = True) -> PrinterInterface | None:
    """The interface of one configuration to print on, from the descriptors alone.

    Printer class first (the bidirectional protocols 2 and 3 preferred, so status can be
    read), then, when `vendor_class`, a vendor-specific interface (common on cheap ESC/POS
    printers). It needs a bulk OUT endpoint.
    """
    ranked: list[tuple[tuple[int, int], Any]] = []
    for interface in config:
        cls = int(interface.bInterfaceClass)
        if cls == PRINTER_CLASS:
            rank = (0, 0 if int(interface.bInterfaceProtocol) in (2, 3) else 1)
        elif cls == VENDOR_CLASS and vendor_class:
            rank = (1, 0)
        else:
            continue
        ranked.append((rank, interface))
    ranked.sort(key=lambda pair: pair[0])
    for rank, interface in ranked:
        ep_out = bulk_endpoint(interface, usb.util.ENDPOINT_OUT)
        if ep_out is not None:
            return PrinterInterface(interface, ep_out,
                                    bulk_endpoint(interface, usb.util.ENDPOINT_IN), rank)
    return None


__all__ = [
    "ACCESS_DENIED",
    "PRINTER_CLASS",
    "UDEV_RULES",
    "VENDOR_CLASS",
    "PrinterInterface",
    "UsbUnavailable",
    "bulk_endpoint",
    "default_backend",
    "is_unplugged",
    "printer_interface",
    "read_string",
    "usb_error_reason",
]
