"""A pyusb backend of our own: USB devices with real descriptors, no hardware needed.

`FakeBackend` implements the `usb.backend.IBackend` methods that `usb.core` and `usb.util`
call (enumerate, descriptors, open/close, configuration, claim/release, bulk transfers,
control transfers, kernel driver), and fails the way pyusb's libusb1 backend does: a
`usb.core.USBError(strerror, libusb_code, errno)`, `USBTimeoutError` for timeouts,
`IndexError` past the last interface or alternate setting.

A `FakeDevice` is the physical thing (descriptors, paper, what was printed); plugging it in
creates an attachment at a bus/address. Pulling it out kills every handle opened on that
attachment (ENODEV), and plugging it back gives a new address, as on real hardware.
"""

from __future__ import annotations

import array
import errno
import itertools
import threading
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import usb.backend
import usb.core

LIBUSB_ERROR_ACCESS = -3
LIBUSB_ERROR_NO_DEVICE = -4
LIBUSB_ERROR_NOT_FOUND = -5
LIBUSB_ERROR_BUSY = -6
LIBUSB_ERROR_TIMEOUT = -7
LIBUSB_ERROR_PIPE = -9

BULK = 0x02
INTERRUPT = 0x03


def _error(code: int) -> usb.core.USBError:
    text, number = {
        LIBUSB_ERROR_ACCESS: ("Access denied (insufficient permissions)", errno.EACCES),
        LIBUSB_ERROR_NO_DEVICE: (
            "No such device (it may have been disconnected)",
            errno.ENODEV,
        ),
        LIBUSB_ERROR_NOT_FOUND: ("Entity not found", errno.ENOENT),
        LIBUSB_ERROR_BUSY: ("Resource busy", errno.EBUSY),
        LIBUSB_ERROR_PIPE: ("Pipe error", errno.EPIPE),
    }[code]
    return usb.core.USBError(text, code, number)


def _timeout() -> usb.core.USBTimeoutError:
    return usb.core.USBTimeoutError("Operation timed out", LIBUSB_ERROR_TIMEOUT, errno.ETIMEDOUT)


@dataclass
class Endpoint:
    address: int
    attributes: int = BULK
    max_packet: int = 64
    interval: int = 0


@dataclass
class Interface:
    number: int
    cls: int
    endpoints: list[Endpoint]
    subclass: int = 0
    protocol: int = 0
    alt: int = 0


@dataclass
class FakeDevice:
    vendor_id: int
    product_id: int
    interfaces: list[Interface]
    manufacturer: str | None = None
    product: str | None = None
    serial: str | None = None
    device_id: str | None = None  # IEEE 1284 id answered to GET_DEVICE_ID
    device_class: int = 0
    config_value: int = 1
    # What the test switches.
    access_denied: bool = False
    answers_status: bool = True
    stall_writes: bool = False
    write_delay: float = 0.0  # seconds each bulk OUT transfer takes (a slow printer)
    unplug_after: int | None = None  # bulk OUT bytes accepted before the cable comes out
    kernel_driver: set[int] = field(default_factory=set)  # interfaces usblp holds
    status: dict[int, int] = field(default_factory=lambda: {1: 0x12, 2: 0x12, 3: 0x12, 4: 0x12})
    # What the test reads.
    written: bytearray = field(default_factory=bytearray)
    transfers: list[tuple[int, int]] = field(default_factory=list)  # (endpoint, bytes)
    detached: list[int] = field(default_factory=list)
    reattached: list[int] = field(default_factory=list)
    # Inside.
    inbox: bytearray = field(default_factory=bytearray)  # what bulk IN will return
    _tail: bytes = b""  # end of the OUT stream, for a DLE EOT split across transfers
    _backend: FakeBackend | None = None

    def queue_in(self, data: bytes) -> None:
        """Bytes the printer sends unasked (Automatic Status Back, a late reply)."""
        self.inbox += data

    def unplug(self) -> None:
        assert self._backend is not None
        self._backend.unplug(self)

    def _accept(self, data: bytes) -> None:
        self.written += data
        stream = self._tail + data
        if self.answers_status:
            for i in range(len(stream) - 2):
                # The tail is two bytes, so every match here has a new byte in it.
                if stream[i] == 0x10 and stream[i + 1] == 0x04 and stream[i + 2] in self.status:
                    self.inbox.append(self.status[stream[i + 2]])
        self._tail = stream[-2:]


@dataclass(eq=False)
class Attachment:
    """A device plugged into a port: what `enumerate_devices` yields."""

    device: FakeDevice
    bus: int
    address: int
    port_numbers: tuple[int, ...]
    alive: bool = True
    configuration: int = 0  # set on first use to the device's value (the kernel configures)
    claims: dict[int, Handle] = field(default_factory=dict)


@dataclass(eq=False)
class Handle:
    attachment: Attachment
    open: bool = True


class FakeBackend(usb.backend.IBackend):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.RLock()
        self._attached: list[Attachment] = []
        self._addresses = itertools.count(2)

    # --- what tests call ---------------------------------------------------------------

    def plug(
        self,
        device: FakeDevice,
        *,
        bus: int = 1,
        address: int | None = None,
        port_numbers: tuple[int, ...] = (1,),
    ) -> Attachment:
        with self._lock:
            if self.attachment(device) is not None:
                raise AssertionError("already plugged in")
            device._backend = self
            device._tail = b""
            device.inbox.clear()
            att = Attachment(
                device,
                bus,
                address if address is not None else next(self._addresses),
                port_numbers,
                configuration=device.config_value,
            )
            self._attached.append(att)
            return att

    def unplug(self, device: FakeDevice) -> None:
        with self._lock:
            att = self.attachment(device)
            if att is not None:
                att.alive = False
                att.claims.clear()
                self._attached.remove(att)

    def attachment(self, device: FakeDevice) -> Attachment | None:
        with self._lock:
            return next((a for a in self._attached if a.device is device), None)

    # --- descriptors -------------------------------------------------------------------

    def enumerate_devices(self) -> list[Attachment]:
        with self._lock:
            return list(self._attached)

    def get_parent(self, dev: Attachment) -> None:
        return None

    def get_device_descriptor(self, dev: Attachment) -> Any:
        d = dev.device
        strings = _string_indexes(d)
        return SimpleNamespace(
            bLength=18,
            bDescriptorType=1,
            bcdUSB=0x0200,
            bDeviceClass=d.device_class,
            bDeviceSubClass=0,
            bDeviceProtocol=0,
            bMaxPacketSize0=64,
            idVendor=d.vendor_id,
            idProduct=d.product_id,
            bcdDevice=0x0100,
            iManufacturer=strings.get("manufacturer", 0),
            iProduct=strings.get("product", 0),
            iSerialNumber=strings.get("serial", 0),
            bNumConfigurations=1,
            bus=dev.bus,
            address=dev.address,
            port_number=dev.port_numbers[-1] if dev.port_numbers else None,
            port_numbers=dev.port_numbers,
            speed=3,  # high speed
        )

    def get_configuration_descriptor(self, dev: Attachment, config: int) -> Any:
        if config != 0:
            raise _error(LIBUSB_ERROR_NOT_FOUND)
        groups = _groups(dev.device)
        total = 9 + sum(9 + 7 * len(i.endpoints) for i in dev.device.interfaces)
        return SimpleNamespace(
            bLength=9,
            bDescriptorType=2,
            wTotalLength=total,
            bNumInterfaces=len(groups),
            bConfigurationValue=dev.device.config_value,
            iConfiguration=0,
            bmAttributes=0xC0,
            bMaxPower=50,
            extra_descriptors=[],
        )

    def get_interface_descriptor(self, dev: Attachment, intf: int, alt: int, config: int) -> Any:
        i = self._interface(dev, intf, alt, config)
        return SimpleNamespace(
            bLength=9,
            bDescriptorType=4,
            bInterfaceNumber=i.number,
            bAlternateSetting=i.alt,
            bNumEndpoints=len(i.endpoints),
            bInterfaceClass=i.cls,
            bInterfaceSubClass=i.subclass,
            bInterfaceProtocol=i.protocol,
            iInterface=0,
            extra_descriptors=[],
        )

    def get_endpoint_descriptor(
        self, dev: Attachment, ep: int, intf: int, alt: int, config: int
    ) -> Any:
        i = self._interface(dev, intf, alt, config)
        if ep >= len(i.endpoints):
            raise IndexError(f"Invalid endpoint index {ep}")
        e = i.endpoints[ep]
        return SimpleNamespace(
            bLength=7,
            bDescriptorType=5,
            bEndpointAddress=e.address,
            bmAttributes=e.attributes,
            wMaxPacketSize=e.max_packet,
            bInterval=e.interval,
            bRefresh=0,
            bSynchAddress=0,
            extra_descriptors=[],
        )

    # --- handles -----------------------------------------------------------------------

    def open_device(self, dev: Attachment) -> Handle:
        with self._lock:
            if not dev.alive:
                raise _error(LIBUSB_ERROR_NO_DEVICE)
            if dev.device.access_denied:
                raise _error(LIBUSB_ERROR_ACCESS)
            return Handle(dev)

    def close_device(self, dev_handle: Handle) -> None:
        with self._lock:
            dev_handle.open = False
            att = dev_handle.attachment
            for number in [n for n, h in att.claims.items() if h is dev_handle]:
                del att.claims[number]

    def set_configuration(self, dev_handle: Handle, config_value: int) -> None:
        with self._lock:
            att = self._live(dev_handle)
            # Linux refuses while any interface is held, by us or by a kernel driver.
            if att.claims or att.device.kernel_driver:
                raise _error(LIBUSB_ERROR_BUSY)
            if config_value not in (0, att.device.config_value):
                raise _error(LIBUSB_ERROR_NOT_FOUND)
            att.configuration = config_value

    def get_configuration(self, dev_handle: Handle) -> int:
        return self._live(dev_handle).configuration

    def set_interface_altsetting(self, dev_handle: Handle, intf: int, altsetting: int) -> None:
        att = self._live(dev_handle)
        if not any(i.number == intf and i.alt == altsetting for i in att.device.interfaces):
            raise _error(LIBUSB_ERROR_NOT_FOUND)

    def claim_interface(self, dev_handle: Handle, intf: int) -> None:
        with self._lock:
            att = self._live(dev_handle)
            if not any(i.number == intf for i in att.device.interfaces):
                raise _error(LIBUSB_ERROR_NOT_FOUND)
            holder = att.claims.get(intf)
            if intf in att.device.kernel_driver or (
                holder is not None and holder is not dev_handle
            ):
                raise _error(LIBUSB_ERROR_BUSY)
            att.claims[intf] = dev_handle

    def release_interface(self, dev_handle: Handle, intf: int) -> None:
        with self._lock:
            att = self._live(dev_handle)
            if att.claims.get(intf) is dev_handle:
                del att.claims[intf]
            else:
                raise _error(LIBUSB_ERROR_NOT_FOUND)

    # --- transfers ---------------------------------------------------------------------

    def bulk_write(
        self, dev_handle: Handle, ep: int, intf: int, data: array.array[int], timeout: int
    ) -> int:
        with self._lock:
            att = self._endpoint(dev_handle, ep, intf, out=True)
            device = att.device
            if device.stall_writes:
                raise _timeout()
            if device.write_delay:
                time.sleep(device.write_delay)
            payload = data.tobytes()
            if device.unplug_after is not None:
                room = device.unplug_after - len(device.written)
                if len(payload) >= room:
                    device._accept(payload[: max(room, 0)])
                    device.transfers.append((ep, max(room, 0)))
                    self.unplug(device)
                    raise _error(LIBUSB_ERROR_NO_DEVICE)
            device._accept(payload)
            device.transfers.append((ep, len(payload)))
            return len(payload)

    def bulk_read(
        self, dev_handle: Handle, ep: int, intf: int, buff: array.array[int], timeout: int
    ) -> int:
        with self._lock:
            att = self._endpoint(dev_handle, ep, intf, out=False)
            inbox = att.device.inbox
            if not inbox:
                raise _timeout()
            count = min(len(buff), len(inbox))
            buff[:count] = array.array("B", inbox[:count])
            del inbox[:count]
            return count

    # Parameter names as in usb.backend.IBackend.
    def ctrl_transfer(
        self,
        dev_handle: Handle,
        bmRequestType: int,
        bRequest: int,
        wValue: int,
        wIndex: int,
        data: array.array[int],
        timeout: int,
    ) -> int:
        with self._lock:
            att = self._live(dev_handle)
            device = att.device
            if bmRequestType == 0x80 and bRequest == 0x06 and wValue >> 8 == 3:
                reply = _string_descriptor(device, wValue & 0xFF)
            elif bmRequestType == 0xA1 and bRequest == 0x00:
                number = wIndex >> 8
                printer = any(i.number == number and i.cls == 7 for i in device.interfaces)
                if not printer or device.device_id is None or wValue != 0:
                    raise _error(LIBUSB_ERROR_PIPE)
                if att.claims.get(number) is not dev_handle:
                    # usbfs claims on our behalf, which fails while usblp holds it.
                    raise _error(LIBUSB_ERROR_BUSY)
                body = device.device_id.encode("ascii")
                reply = (len(body) + 2).to_bytes(2, "big") + body
            else:
                raise _error(LIBUSB_ERROR_PIPE)
            count = min(len(data), len(reply))
            data[:count] = array.array("B", reply[:count])
            return count

    def clear_halt(self, dev_handle: Handle, ep: int) -> None:
        self._live(dev_handle)

    def reset_device(self, dev_handle: Handle) -> None:
        self._live(dev_handle)

    def is_kernel_driver_active(self, dev_handle: Handle, intf: int) -> bool:
        return intf in self._live(dev_handle).device.kernel_driver

    def detach_kernel_driver(self, dev_handle: Handle, intf: int) -> None:
        with self._lock:
            device = self._live(dev_handle).device
            if intf not in device.kernel_driver:
                raise _error(LIBUSB_ERROR_NOT_FOUND)
            device.kernel_driver.discard(intf)
            device.detached.append(intf)

    def attach_kernel_driver(self, dev_handle: Handle, intf: int) -> None:
        with self._lock:
            att = self._live(dev_handle)
            if intf in att.claims:
                raise _error(LIBUSB_ERROR_BUSY)
            att.device.kernel_driver.add(intf)
            att.device.reattached.append(intf)

    # --- inside ------------------------------------------------------------------------

    def _live(self, dev_handle: Handle) -> Attachment:
        att = dev_handle.attachment
        if not att.alive or not dev_handle.open:
            raise _error(LIBUSB_ERROR_NO_DEVICE)
        return att

    def _interface(self, dev: Attachment, intf: int, alt: int, config: int) -> Interface:
        if config != 0:
            raise _error(LIBUSB_ERROR_NOT_FOUND)
        groups = _groups(dev.device)
        if intf >= len(groups):
            raise IndexError(f"Invalid interface index {intf}")
        if alt >= len(groups[intf]):
            raise IndexError(f"Invalid alternate setting index {alt}")
        return groups[intf][alt]

    def _endpoint(self, dev_handle: Handle, ep: int, intf: int, *, out: bool) -> Attachment:
        att = self._live(dev_handle)
        if att.claims.get(intf) is not dev_handle:
            raise _error(LIBUSB_ERROR_BUSY)
        match = [
            e
            for i in att.device.interfaces
            if i.number == intf
            for e in i.endpoints
            if e.address == ep
        ]
        if not match or bool(ep & 0x80) == out or match[0].attributes != BULK:
            raise _error(LIBUSB_ERROR_PIPE)
        return att


def _groups(device: FakeDevice) -> list[list[Interface]]:
    numbers = sorted({i.number for i in device.interfaces})
    return [
        sorted((i for i in device.interfaces if i.number == n), key=lambda i: i.alt)
        for n in numbers
    ]


def _string_indexes(device: FakeDevice) -> dict[str, int]:
    indexes: dict[str, int] = {}
    for index, name in enumerate(("manufacturer", "product", "serial"), start=1):
        if getattr(device, name) is not None:
            indexes[name] = index
    return indexes


def _string_descriptor(device: FakeDevice, index: int) -> bytes:
    if index == 0:
        return bytes([4, 3, 0x09, 0x04])  # one language: en-US
    for name, i in _string_indexes(device).items():
        if i == index:
            body = str(getattr(device, name)).encode("utf-16-le")
            return bytes([len(body) + 2, 3]) + body
    raise _error(LIBUSB_ERROR_PIPE)


# --- the devices the tests plug in ---------------------------------------------------------


def epson_tm_t88(
    serial: str = "TM88-0001",
    *,
    ep_out: int = 0x01,
    ep_in: int = 0x82,
    max_packet: int = 64,
    interface_number: int = 0,
) -> FakeDevice:
    """A TM-T88V on its UB-U05 USB interface: printer class, bidirectional."""
    return FakeDevice(
        vendor_id=0x04B8,
        product_id=0x0202,
        manufacturer="EPSON",
        product="TM-T88V",
        serial=serial,
        device_id="MFG:EPSON;CMD:ESC/POS;MDL:TM-T88V;CLS:PRINTER;",
        interfaces=[
            Interface(
                number=interface_number,
                cls=7,
                subclass=1,
                protocol=2,
                endpoints=[
                    Endpoint(ep_out, max_packet=max_packet),
                    Endpoint(ep_in, max_packet=max_packet),
                ],
            )
        ],
    )


def hid_keyboard() -> FakeDevice:
    return FakeDevice(
        vendor_id=0x046D,
        product_id=0xC31C,
        manufacturer="Logitech",
        product="USB Keyboard",
        interfaces=[
            Interface(
                number=0,
                cls=3,
                subclass=1,
                protocol=1,
                endpoints=[Endpoint(0x81, attributes=INTERRUPT, max_packet=8, interval=10)],
            )
        ],
    )


def pos58_vendor_class() -> FakeDevice:
    """A cheap 58 mm ESC/POS printer: vendor-specific interface, no serial, no device id."""
    return FakeDevice(
        vendor_id=0x0416,
        product_id=0x5011,
        manufacturer="Printer",
        product="POS58 USB Printer",
        interfaces=[
            Interface(
                number=0,
                cls=0xFF,
                endpoints=[Endpoint(0x03), Endpoint(0x81)],
            )
        ],
    )
