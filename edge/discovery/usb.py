"""Which USB printers are plugged in, and the `usb://` line to paste in the config for each.

A device is listed when one of its interfaces is printer class (7), or vendor specific (0xFF)
on a device from a maker of receipt printers or a chip maker whose USB parts cheap ESC/POS
printers are built on. Both need a bulk OUT endpoint to be printable.

Maker, model and command set come from the IEEE 1284 device id (printer class
GET_DEVICE_ID), else from the USB string descriptors. While the usblp kernel driver owns
the interface the request cannot be made (the interface cannot be claimed), so the id that
usblp itself read is taken from sysfs instead: a scan never detaches a driver.

The chip-maker ids (Winbond, STMicro, ICS Advent, NXP, GigaDevice) are also used by gadgets
that are not printers; such a device is listed and the operator tells by its model.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import structlog
import usb.core
import usb.util

from edge.usbdev import (
    ACCESS_DENIED,
    PRINTER_CLASS,
    UsbUnavailable,
    default_backend,
    is_unplugged,
    printer_interface,
    read_string,
    usb_error_reason,
)

log = structlog.get_logger(__name__)

SYSFS_USB_DEVICES = Path("/sys/bus/usb/devices")

# Vendor id -> (maker, speaks ESC/POS when the device does not say).
# Checked against the usb.ids database (hwdata).
RECEIPT_VENDORS: Mapping[int, tuple[str, bool]] = {
    0x04B8: ("Seiko Epson", True),
    0x0519: ("Star Micronics", False),  # StarPRNT / Star Line unless set to ESC/POS emulation
    0x1D90: ("Citizen", True),
    0x2730: ("Citizen", True),
    0x1504: ("Bixolon", True),
    0x154F: ("SNBC", True),
    0x0DD4: ("Custom Engineering", True),
    # Chip makers whose parts generic ESC/POS printers (Xprinter, POS-58/80...) are built on.
    0x0416: ("Winbond (generic printer)", True),
    0x0483: ("STMicroelectronics (generic printer)", True),
    0x0FE6: ("ICS Advent (generic printer)", True),
    0x1FC9: ("NXP (generic printer)", True),
    0x28E9: ("GigaDevice (generic printer)", True),
}

GET_DEVICE_ID = 0
_DEVICE_ID_REQUEST_TYPE = 0xA1  # device to host | class | interface
_DEVICE_ID_MAX = 1024

DeviceKey = tuple[int, int, int, int]  # vendor, product, bus, address


@dataclass(frozen=True)
class UsbPrinterInfo:
    vendor_id: int
    product_id: int
    serial: str | None
    manufacturer: str | None
    model: str | None
    command_set: str | None  # the IEEE 1284 CMD field as the printer sends it
    bus: int | None
    address: int | None
    interface_class: int  # 7 printer, 0xFF vendor specific
    escpos: bool  # from CMD when the printer sends one, else the vendor's usual language
    connection: str  # usb://VID:PID[/SERIAL], for the config file
    # Additions.
    interface: int = 0
    device_id: str | None = None  # the whole IEEE 1284 device id
    kernel_driver: bool = False  # usblp holds the interface now
    problem: str | None = None  # why the device could not be read fully (access denied)

    @property
    def key(self) -> DeviceKey:
        return (self.vendor_id, self.product_id, self.bus or 0, self.address or 0)


class UsbScanUnavailable(RuntimeError):
    """No way to scan USB here (libusb is missing)."""


def connection_for(vendor_id: int, product_id: int, serial: str | None) -> str:
    tail = f"/{quote(serial, safe='')}" if serial else ""
    return f"usb://{vendor_id:04x}:{product_id:04x}{tail}"


def parse_device_id(text: str) -> dict[str, str]:
    """IEEE 1284 `KEY:value;` pairs, keys upper-cased, long key names folded to short."""
    aliases = {"MANUFACTURER": "MFG", "MODEL": "MDL", "COMMAND SET": "CMD", "CLASS": "CLS"}
    fields: dict[str, str] = {}
    for part in text.split(";"):
        key, sep, value = part.partition(":")
        if not sep:
            continue
        key = key.strip().upper()
        fields.setdefault(aliases.get(key, key), value.strip())
    return fields


def speaks_escpos(command_set: str) -> bool:
    normalized = command_set.upper().replace("/", "").replace(" ", "").replace("-", "")
    return "ESCPOS" in normalized


def scan(
    backend: object | None = None,
    *,
    sysfs_root: Path = SYSFS_USB_DEVICES,
    known: Mapping[DeviceKey, UsbPrinterInfo] | None = None,
) -> list[UsbPrinterInfo]:
    """Every USB printer plugged in now. Blocking: call it in a worker thread.

    `known` holds earlier results by key; those devices are not opened again (so a rescan
    cannot disturb a printer that is printing), unless they had a problem last time.
    """
    if backend is None:
        try:
            backend = default_backend()
        except UsbUnavailable as exc:
            raise UsbScanUnavailable(exc.reason) from None
    found: list[UsbPrinterInfo] = []
    for device in usb.core.find(find_all=True, backend=backend):
        key = (int(device.idVendor), int(device.idProduct), device.bus or 0, device.address or 0)
        earlier = known.get(key) if known else None
        if earlier is not None and earlier.problem is None:
            found.append(earlier)
            continue
        try:
            info = _inspect(device, sysfs_root)
        except usb.core.USBError as exc:
            if not is_unplugged(exc):  # one that left mid-scan is simply not there
                log.warning("usb_scan_device_failed", key=_fmt_key(key), error=str(exc))
            continue
        finally:
            with contextlib.suppress(usb.core.USBError):
                usb.util.dispose_resources(device)
        if info is not None:
            found.append(info)
    return found


def _inspect(device: Any, sysfs_root: Path) -> UsbPrinterInfo | None:
    vid, pid = int(device.idVendor), int(device.idProduct)
    choice = _printer_interface(device, vid)
    if choice is None:
        return None
    config_index, config_value, interface = choice
    number = int(interface.bInterfaceNumber)
    cls = int(interface.bInterfaceClass)
    maker, vendor_escpos = RECEIPT_VENDORS.get(vid, (None, False))

    problem: str | None = None
    serial = manufacturer = product = device_id = None
    driver = False
    try:
        serial = read_string(device, int(device.iSerialNumber))
        manufacturer = read_string(device, int(device.iManufacturer))
        product = read_string(device, int(device.iProduct))
        driver = _kernel_driver_active(device, number)
        if cls == PRINTER_CLASS:
            if driver:
                device_id = _sysfs_device_id(device, config_value, number, sysfs_root)
            else:
                device_id = _get_device_id(device, config_index, interface)
    except usb.core.USBError as exc:
        if is_unplugged(exc):
            raise
        problem = usb_error_reason(exc)
        log.debug(
            "usb_scan_device_unreadable", vendor=f"{vid:04x}", product=f"{pid:04x}", problem=problem
        )

    fields = parse_device_id(device_id) if device_id else {}
    command_set = fields.get("CMD")
    escpos = speaks_escpos(command_set) if command_set else vendor_escpos
    return UsbPrinterInfo(
        vendor_id=vid,
        product_id=pid,
        serial=serial,
        manufacturer=fields.get("MFG") or manufacturer or maker,
        model=fields.get("MDL") or product,
        command_set=command_set,
        bus=device.bus,
        address=device.address,
        interface_class=cls,
        escpos=escpos,
        connection=connection_for(vid, pid, serial),
        interface=number,
        device_id=device_id,
        kernel_driver=driver,
        problem=problem,
    )


def _printer_interface(device: Any, vid: int) -> tuple[int, int, Any] | None:
    """(configuration index, configuration value, interface) to print on, or None: the best
    choice of `edge.usbdev.printer_interface` over every configuration. A vendor-specific
    interface counts only on a device from a known receipt-printer or chip maker.

    Reads only descriptors, which needs no access to the device itself.
    """
    best: tuple[tuple[int, int], int, int, Any] | None = None
    for config in device:
        choice = printer_interface(config, vendor_class=vid in RECEIPT_VENDORS)
        if choice is not None and (best is None or choice.rank < best[0]):
            best = (choice.rank, int(config.index), int(config.bConfigurationValue),
                    choice.interface)
    return None if best is None else best[1:]


def _kernel_driver_active(device: Any, number: int) -> bool:
    try:
        return bool(device.is_kernel_driver_active(number))
    except NotImplementedError:
        return False


def _get_device_id(device: Any, config_index: int, interface: Any) -> str | None:
    """GET_DEVICE_ID on a printer interface nobody holds; None when the printer refuses."""
    number = int(interface.bInterfaceNumber)
    alt = int(interface.bAlternateSetting)
    try:
        usb.util.claim_interface(device, number)
        raw = bytes(
            device.ctrl_transfer(
                _DEVICE_ID_REQUEST_TYPE,
                GET_DEVICE_ID,
                config_index,
                (number << 8) | alt,
                _DEVICE_ID_MAX,
                1000,
            )
        )
    except usb.core.USBError as exc:
        if is_unplugged(exc) or usb_error_reason(exc) == ACCESS_DENIED:
            raise
        return None  # stalled (unsupported) or busy (claimed by a running transport)
    finally:
        with contextlib.suppress(usb.core.USBError):
            usb.util.release_interface(device, number)
    return decode_device_id(raw)


def decode_device_id(raw: bytes) -> str | None:
    """The text of a GET_DEVICE_ID reply: a 2-byte big-endian length (itself included).

    Some printers send the length little-endian; like CUPS, fall back to that when the
    big-endian reading cannot be right.
    """
    if len(raw) < 2:
        return None
    length = int.from_bytes(raw[:2], "big")
    if length > len(raw) or length < 2:
        length = int.from_bytes(raw[:2], "little")
    length = min(max(length, 2), len(raw))
    text = raw[2:length].decode("ascii", errors="replace").strip("\x00 ")
    return text or None


def _sysfs_device_id(device: Any, config_value: int, number: int, root: Path) -> str | None:
    """The device id usblp read at bind time (`.../<bus>-<ports>:<cfg>.<intf>/ieee1284_id`)."""
    ports = device.port_numbers
    if not device.bus or not ports:
        return None
    name = f"{device.bus}-{'.'.join(str(p) for p in ports)}:{config_value}.{number}"
    try:
        text = (root / name / "ieee1284_id").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    return text.strip() or None


def _fmt_key(key: DeviceKey) -> str:
    return f"{key[0]:04x}:{key[1]:04x}@{key[2]}/{key[3]}"


OnChange = Callable[[list[UsbPrinterInfo], list[UsbPrinterInfo]], Awaitable[None] | None]


class UsbWatcher:
    """Notices printers being plugged in and pulled out by rescanning every `interval`."""

    def __init__(self, backend: object | None = None, *, sysfs_root: Path = SYSFS_USB_DEVICES):
        self._backend = backend
        self._sysfs_root = sysfs_root
        self._known: dict[DeviceKey, UsbPrinterInfo] = {}

    @property
    def printers(self) -> list[UsbPrinterInfo]:
        """What the last scan found."""
        return list(self._known.values())

    async def run(self, on_change: OnChange, interval: float) -> None:
        """Scan until cancelled; `on_change(added, removed)` after each scan that differs.

        The first scan reports everything present as added.
        """
        unavailable_logged = False
        while True:
            try:
                found = await asyncio.to_thread(
                    scan, self._backend, sysfs_root=self._sysfs_root, known=self._known
                )
            except UsbScanUnavailable as exc:
                if not unavailable_logged:
                    log.warning("usb_scan_unavailable", reason=str(exc))
                    unavailable_logged = True
                found = None
            if found is not None:
                await self._apply(found, on_change)
            await asyncio.sleep(interval)

    async def _apply(self, found: list[UsbPrinterInfo], on_change: OnChange) -> None:
        now = {info.key: info for info in found}
        added = [info for key, info in now.items() if key not in self._known]
        removed = [info for key, info in self._known.items() if key not in now]
        self._known = now
        for info in added:
            log.info(
                "usb_printer_plugged",
                connection=info.connection,
                model=info.model,
                bus=info.bus,
                address=info.address,
                problem=info.problem,
            )
        for info in removed:
            log.info(
                "usb_printer_unplugged",
                connection=info.connection,
                model=info.model,
                bus=info.bus,
                address=info.address,
            )
        if added or removed:
            result = on_change(added, removed)
            if inspect.isawaitable(result):
                await result


__all__ = [
    "RECEIPT_VENDORS",
    "UsbPrinterInfo",
    "UsbScanUnavailable",
    "UsbWatcher",
    "connection_for",
    "decode_device_id",
    "parse_device_id",
    "scan",
]
