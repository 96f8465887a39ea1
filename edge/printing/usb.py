"""USB printers through pyusb: `usb://VID:PID[/SERIAL]`.

Written on pyusb directly rather than python-escpos's `escpos.printer.Usb`, which defaults to
fixed endpoint addresses (0x01/0x82) and interface 0, resets the device on open, matches the
first VID:PID only (no serial), and logs USB errors instead of raising them; the spooler needs
every failure as an exception and the endpoints the printer really declares.

pyusb blocks, so every device call runs in a worker thread; a threading lock keeps a call
that outlived its cancelled caller from overlapping the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import threading
import time
from dataclasses import dataclass
from typing import Any

import structlog
import usb.core
import usb.util

from edge import usbdev
from edge.printing.status import (
    ASSUMED_READY,
    OFFLINE_BIT,
    QUERY_ERROR_CAUSE,
    QUERY_OFFLINE_CAUSE,
    QUERY_PAPER,
    QUERY_PRINTER,
    PrinterStatus,
    is_status_reply,
    parse_status,
)
from edge.printing.transport import Delivery, NotReady, Outcome, PrinterUnavailable
from edge.usbdev import (
    ACCESS_DENIED,
    LIBUSB_TIMEOUT,
    PRINTER_CLASS,
    UDEV_RULES,
    VENDOR_CLASS,
    UsbUnavailable,
    is_unplugged,
    printer_interface,
    read_string,
    usb_error_reason,
)

log = structlog.get_logger(__name__)

# Bulk OUT writes go in chunks of this many max-size packets.
_PACKETS_PER_CHUNK = 64


def default_backend() -> Any:
    """pyusb's libusb-1.0 backend; PrinterUnavailable when libusb is not installed."""
    try:
        return usbdev.default_backend()
    except UsbUnavailable as exc:
        raise PrinterUnavailable(exc.reason) from None


@dataclass
class _Claimed:
    """An open device with its printer interface claimed."""

    device: Any
    interface: int
    ep_out: int
    out_packet: int
    ep_in: int | None
    in_packet: int
    detached: bool


class UsbTransport:
    """ESC/POS over USB bulk endpoints, DLE EOT status over bulk IN."""

    def __init__(
        self,
        vendor_id: int,
        product_id: int,
        serial: str | None = None,
        *,
        name: str,
        backend: object | None = None,
        timeout_ms: int = 5000,
        status_timeout_ms: int = 1500,
    ) -> None:
        self.name = name
        self._vid = vendor_id
        self._pid = product_id
        self._serial = serial
        self._backend = backend
        self._timeout_ms = timeout_ms
        self._status_timeout_ms = status_timeout_ms
        self._lock = asyncio.Lock()
        self._io_lock = threading.Lock()
        self._claimed: _Claimed | None = None
        self._pending = bytearray()  # IN bytes read but not yet consumed
        self._generation = 0         # +1 at every opening of the device

    @property
    def target(self) -> str:
        tail = f"/{self._serial}" if self._serial else ""
        return f"usb://{self._vid:04x}:{self._pid:04x}{tail}"

    async def status(self) -> PrinterStatus:
        async with self._lock:
            return await asyncio.to_thread(self._status_sync)

    @property
    def generation(self) -> int:
        return self._generation

    async def send(self, data: bytes) -> Delivery:
        async with self._lock:
            return await asyncio.to_thread(self._send_sync, data)

    async def watch(self, within: float) -> PrinterStatus | None:
        # Status Back over the bulk IN pipe is not read here: the spooler polls instead.
        return None

    async def close(self) -> None:
        async with self._lock:
            await asyncio.to_thread(self._close_sync)

    # --- worker-thread side -------------------------------------------------------------

    def _status_sync(self) -> PrinterStatus:
        with self._io_lock:
            return self._status_of(self._open())

    def _status_of(self, claimed: _Claimed) -> PrinterStatus:
        if claimed.ep_in is None:
            return ASSUMED_READY
        try:
            deadline = time.monotonic() + self._status_timeout_ms / 1000
            eot1 = self._ask(claimed, QUERY_PRINTER, deadline)
            eot2 = self._ask(claimed, QUERY_OFFLINE_CAUSE, deadline)
            eot4 = self._ask(claimed, QUERY_PAPER, deadline)
            eot3 = self._ask(claimed, QUERY_ERROR_CAUSE, deadline) if eot2 & 0x40 else None
        except usb.core.USBError as exc:
            raise self._fail(exc, "status") from None
        return parse_status(eot1, eot2, eot4, eot3)

    def _send_sync(self, data: bytes) -> Delivery:
        with self._io_lock:
            claimed = self._open()
            status = self._status_of(claimed)
            if not status.ready:
                raise NotReady(status)
            generation = self._generation
            chunk = claimed.out_packet * _PACKETS_PER_CHUNK
            sent = 0
            # From the first write on, the ticket may be in the printer: no more raising.
            try:
                while sent < len(data):
                    piece = data[sent : sent + chunk]
                    written = int(claimed.device.write(claimed.ep_out, piece, self._timeout_ms))
                    if written <= 0:
                        raise usb.core.USBTimeoutError(
                            "printer accepted no data", LIBUSB_TIMEOUT, errno.ETIMEDOUT
                        )
                    # A short count means the transfer timed out part-way; the next chunk
                    # then times out too and the loop ends in an error.
                    sent += written
                if claimed.ep_in is None:
                    # A one-way printer cannot confirm: taking every byte is all it can say.
                    return Delivery(Outcome.CONFIRMED, generation)
                deadline = time.monotonic() + self._status_timeout_ms / 1000
                confirmation = self._ask(claimed, QUERY_PRINTER, deadline)
            except usb.core.USBError as exc:
                failure = self._fail(exc, "send")
                return Delivery(Outcome.LOST, generation, failure.reason)
            if confirmation & OFFLINE_BIT:
                try:
                    held = self._status_of(claimed)
                except PrinterUnavailable as exc:
                    return Delivery(Outcome.HELD, generation, exc.reason)
                return Delivery(Outcome.HELD, generation,
                                f"printer went {held.state} under the ticket", held)
            return Delivery(Outcome.CONFIRMED, generation)

    def _close_sync(self) -> None:
        with self._io_lock:
            claimed, self._claimed = self._claimed, None
            if claimed is None:
                return
            try:
                usb.util.release_interface(claimed.device, claimed.interface)
                if claimed.detached:
                    # Give /dev/usb/lpN back to the system when we stop.
                    claimed.device.attach_kernel_driver(claimed.interface)
            except (usb.core.USBError, NotImplementedError):
                pass
            finally:
                _dispose(claimed.device)
            log.info("usb_printer_closed", printer=self.name)

    def _ask(self, claimed: _Claimed, query: bytes, deadline: float) -> int:
        assert claimed.ep_in is not None
        claimed.device.write(claimed.ep_out, query, self._timeout_ms)
        while True:
            while self._pending:
                byte = self._pending.pop(0)
                # ASB bytes and XON/XOFF can sit in the IN pipe too; skip them.
                if is_status_reply(byte):
                    return byte
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0:
                raise usb.core.USBTimeoutError("no status reply", LIBUSB_TIMEOUT, errno.ETIMEDOUT)
            self._pending += bytes(claimed.device.read(claimed.ep_in, claimed.in_packet, left_ms))

    def _fail(self, exc: usb.core.USBError, during: str) -> PrinterUnavailable:
        """Drop the device after an error; the next call finds it again, wherever it is."""
        reason = usb_error_reason(exc)
        if during == "status" and reason == "timed out":
            reason = f"no status reply within {self._status_timeout_ms} ms"
        self._drop()
        # Debug: a printer left unplugged is retried for hours; its state change is what
        # the spooler logs.
        log.debug(
            "usb_printer_unavailable",
            printer=self.name,
            during=during,
            reason=reason,
            error=str(exc),
        )
        return PrinterUnavailable(reason)

    def _drop(self) -> None:
        claimed, self._claimed = self._claimed, None
        self._pending.clear()
        if claimed is not None:
            _dispose(claimed.device)

    def _open(self) -> _Claimed:
        if self._claimed is not None:
            if self._still_there(self._claimed):
                return self._claimed
            # Pulled out since the last call: find it again (maybe on another port) before
            # a byte is written, so a ticket is not failed for a printer that is back.
            log.info("usb_printer_gone", printer=self.name, target=self.target)
            self._drop()
        backend = self._backend if self._backend is not None else default_backend()
        device = None
        try:
            device = self._find(backend)
            self._claimed = self._claim(device)
            self._generation += 1
        except (usb.core.USBError, PrinterUnavailable) as exc:
            if device is not None:
                _dispose(device)
            if isinstance(exc, PrinterUnavailable):
                raise
            raise self._fail(exc, "open") from None
        return self._claimed

    def _still_there(self, claimed: _Claimed) -> bool:
        try:
            # An ioctl on the open handle: answered from the kernel, fails once unplugged.
            claimed.device.is_kernel_driver_active(claimed.interface)
        except NotImplementedError:
            pass
        except usb.core.USBError as exc:
            if is_unplugged(exc):
                return False
        return True

    def _find(self, backend: Any) -> Any:
        devices = list(
            usb.core.find(find_all=True, backend=backend, idVendor=self._vid, idProduct=self._pid)
        )
        if self._serial is not None:
            devices = [d for d in devices if _serial_of(d) == self._serial]
        if not devices:
            raise PrinterUnavailable(f"not connected: no USB device {self.target}")
        if len(devices) > 1:
            log.warning(
                "usb_printer_ambiguous",
                printer=self.name,
                target=self.target,
                count=len(devices),
                hint="add the serial number: usb://VID:PID/SERIAL",
            )
        return devices[0]

    def _claim(self, device: Any) -> _Claimed:
        try:
            config = device.get_active_configuration()
        except usb.core.USBError as exc:
            if is_unplugged(exc) or exc.errno == errno.EACCES:
                raise
            # Unconfigured (no driver ever set it up): choose the first configuration.
            device.set_configuration()
            config = device.get_active_configuration()
        interface, ep_out, ep_in = _printer_interface(config)
        number = int(interface.bInterfaceNumber)
        detached = False
        try:
            if device.is_kernel_driver_active(number):
                device.detach_kernel_driver(number)
                detached = True
                log.info(
                    "usb_kernel_driver_detached",
                    printer=self.name,
                    target=self.target,
                    interface=number,
                    note="usblp released the printer; /dev/usb/lp* is gone while we hold it",
                )
        except NotImplementedError:
            pass  # not Linux: there is no kernel driver to detach
        usb.util.claim_interface(device, number)
        if _alt_count(config, number) > 1:
            device.set_interface_altsetting(number, int(interface.bAlternateSetting))
        claimed = _Claimed(
            device=device,
            interface=number,
            ep_out=int(ep_out.bEndpointAddress),
            out_packet=max(1, int(ep_out.wMaxPacketSize) & 0x7FF),
            ep_in=int(ep_in.bEndpointAddress) if ep_in is not None else None,
            in_packet=max(1, int(ep_in.wMaxPacketSize) & 0x7FF) if ep_in is not None else 64,
            detached=detached,
        )
        self._pending.clear()
        self._discard_stale_input(claimed)
        log.info(
            "usb_printer_opened",
            printer=self.name,
            target=self.target,
            bus=device.bus,
            address=device.address,
            interface=number,
            ep_out=hex(claimed.ep_out),
            ep_in=hex(claimed.ep_in) if claimed.ep_in is not None else None,
            max_packet=claimed.out_packet,
        )
        return claimed

    @staticmethod
    def _discard_stale_input(claimed: _Claimed) -> None:
        # Replies to questions asked before we opened would answer ours.
        if claimed.ep_in is None:
            return
        for _ in range(8):
            try:
                if not len(claimed.device.read(claimed.ep_in, claimed.in_packet, 10)):
                    return
            except usb.core.USBTimeoutError:
                return


def _serial_of(device: Any) -> str | None:
    return read_string(device, int(device.iSerialNumber))


def _dispose(device: Any) -> None:
    with contextlib.suppress(usb.core.USBError):
        usb.util.dispose_resources(device)


def _printer_interface(config: Any) -> tuple[Any, Any, Any]:
    """The interface to print on and its bulk OUT and IN endpoints (`edge.usbdev`)."""
    choice = printer_interface(config)
    if choice is None:
        raise PrinterUnavailable("no printer interface with a bulk OUT endpoint on this device")
    return choice.interface, choice.ep_out, choice.ep_in


def _alt_count(config: Any, number: int) -> int:
    return sum(1 for i in config if int(i.bInterfaceNumber) == number)


# Re-exported: the operator's words and classes belong to edge.usbdev, shared with discovery.
__all__ = ["ACCESS_DENIED", "PRINTER_CLASS", "UDEV_RULES", "VENDOR_CLASS", "UsbTransport",
           "default_backend", "is_unplugged", "read_string", "usb_error_reason"]
