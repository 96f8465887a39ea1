"""USB transport and discovery through pyusb, on the descriptors of tests/fakeusb.py."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import structlog
import usb.core
import usb.util

from edge.discovery.usb import (
    UsbPrinterInfo,
    UsbWatcher,
    decode_device_id,
    parse_device_id,
    scan,
)
from edge.printing.status import QUERY_PRINTER, STATUS_QUERIES
from edge.printing.transport import Outcome, PrinterUnavailable
from edge.printing.usb import UDEV_RULES, UsbTransport
from tests.fakeusb import (
    Endpoint,
    FakeBackend,
    FakeDevice,
    Interface,
    epson_tm_t88,
    hid_keyboard,
    pos58_vendor_class,
)

EPSON = (0x04B8, 0x0202)


def transport(backend: FakeBackend, serial: str | None = "TM88-0001", **kw: int) -> UsbTransport:
    return UsbTransport(*EPSON, serial, name="hot-line", backend=backend, **kw)


# --- discovery --------------------------------------------------------------------------


def test_scan_finds_the_printers_and_not_the_keyboard() -> None:
    backend = FakeBackend()
    backend.plug(hid_keyboard(), bus=1, address=3)
    backend.plug(epson_tm_t88(), bus=1, address=4)
    backend.plug(pos58_vendor_class(), bus=2, address=7)

    found = {(i.vendor_id, i.product_id): i for i in scan(backend)}

    assert set(found) == {EPSON, (0x0416, 0x5011)}
    epson = found[EPSON]
    assert (epson.manufacturer, epson.model, epson.command_set) == ("EPSON", "TM-T88V", "ESC/POS")
    assert epson.escpos is True
    assert epson.interface_class == 7
    assert epson.serial == "TM88-0001"
    assert (epson.bus, epson.address) == (1, 4)
    assert epson.connection == "usb://04b8:0202/TM88-0001"
    assert epson.device_id == "MFG:EPSON;CMD:ESC/POS;MDL:TM-T88V;CLS:PRINTER;"

    pos58 = found[(0x0416, 0x5011)]
    assert pos58.interface_class == 0xFF
    assert pos58.command_set is None  # vendor class has no GET_DEVICE_ID
    assert pos58.model == "POS58 USB Printer"
    assert pos58.escpos is True  # generic ESC/POS printer chip vendor
    assert pos58.serial is None
    assert pos58.connection == "usb://0416:5011"
    assert (pos58.bus, pos58.address) == (2, 7)


def test_scan_tells_a_star_printer_does_not_speak_escpos() -> None:
    backend = FakeBackend()
    star = epson_tm_t88(serial="STAR1")
    star.vendor_id, star.product_id = 0x0519, 0x0003
    star.device_id = "MANUFACTURER:STAR;COMMAND SET:STAR;MODEL:TSP143;"
    backend.plug(star)
    (info,) = scan(backend)
    assert (info.manufacturer, info.model, info.command_set) == ("STAR", "TSP143", "STAR")
    assert info.escpos is False


def test_scan_reads_the_usblp_device_id_from_sysfs_without_detaching(tmp_path: Path) -> None:
    backend = FakeBackend()
    epson = epson_tm_t88()
    epson.kernel_driver.add(0)  # usblp holds it: GET_DEVICE_ID would need a claim
    backend.plug(epson, bus=1, address=5, port_numbers=(1, 4))
    sysfs = tmp_path / "devices" / "1-1.4:1.0"
    sysfs.mkdir(parents=True)
    (sysfs / "ieee1284_id").write_text("MFG:EPSON;CMD:ESC/POS;MDL:TM-T88VI;CLS:PRINTER;\n")

    (info,) = scan(backend, sysfs_root=tmp_path / "devices")

    assert info.model == "TM-T88VI"
    assert info.kernel_driver is True
    assert epson.detached == [] and epson.kernel_driver == {0}


def test_scan_of_a_printer_we_may_not_open_says_how_to_fix_it() -> None:
    backend = FakeBackend()
    epson = epson_tm_t88()
    epson.access_denied = True
    backend.plug(epson)
    (info,) = scan(backend)
    assert info.problem is not None and UDEV_RULES in info.problem
    assert info.serial is None
    assert info.connection == "usb://04b8:0202"
    assert info.manufacturer == "Seiko Epson"  # from the vendor id alone


def test_device_id_parsing() -> None:
    body = b"MFG:EPSON;CMD:ESC/POS;MDL:TM-T20;"
    assert decode_device_id((len(body) + 2).to_bytes(2, "big") + body) == body.decode()
    # Some printers send the length little-endian.
    assert decode_device_id((len(body) + 2).to_bytes(2, "little") + body) == body.decode()
    assert parse_device_id("manufacturer:Acme; MDL: X1 ;CMD:ESC/POS,PCL;") == {
        "MFG": "Acme",
        "MDL": "X1",
        "CMD": "ESC/POS,PCL",
    }


async def test_watcher_reports_plug_and_unplug() -> None:
    backend = FakeBackend()
    epson = epson_tm_t88()
    backend.plug(epson)
    changes: asyncio.Queue[tuple[list[UsbPrinterInfo], list[UsbPrinterInfo]]] = asyncio.Queue()

    async def on_change(added: list[UsbPrinterInfo], removed: list[UsbPrinterInfo]) -> None:
        await changes.put((added, removed))

    watcher = UsbWatcher(backend)
    task = asyncio.create_task(watcher.run(on_change, interval=0.01))
    try:
        async with asyncio.timeout(5):
            added, removed = await changes.get()
            assert [i.connection for i in added] == ["usb://04b8:0202/TM88-0001"] and not removed

            pos58 = pos58_vendor_class()
            backend.plug(pos58)
            added, removed = await changes.get()
            assert [i.connection for i in added] == ["usb://0416:5011"] and not removed

            epson.unplug()
            added, removed = await changes.get()
            assert not added and [i.connection for i in removed] == ["usb://04b8:0202/TM88-0001"]
            assert [i.connection for i in watcher.printers] == ["usb://0416:5011"]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_rescans_leave_a_printing_printer_alone() -> None:
    backend = FakeBackend()
    epson = epson_tm_t88()
    backend.plug(epson)
    t = transport(backend)
    await t.status()  # our transport now holds the interface
    first = scan(backend)
    again = scan(backend, known={i.key: i for i in first})
    assert again == first
    assert (await t.send(b"still mine")).outcome is Outcome.CONFIRMED
    assert epson.written.endswith(b"still mine" + QUERY_PRINTER)
    await t.close()


# --- transport --------------------------------------------------------------------------


async def test_send_and_status_on_the_epson() -> None:
    backend = FakeBackend()
    epson = epson_tm_t88()
    backend.plug(epson)
    t = transport(backend)

    status = await t.status()
    assert status.ready and status.state == "online" and status.reported
    assert (await t.send(b"\x1b@hello\n\x1dV\x00")).outcome is Outcome.CONFIRMED

    # Asked before the ticket (no byte of it unless ready), confirmed behind it.
    assert bytes(epson.written) == (STATUS_QUERIES + STATUS_QUERIES + b"\x1b@hello\n\x1dV\x00"
                                    + QUERY_PRINTER)
    assert {ep for ep, _ in epson.transfers} == {0x01}
    await t.close()


async def test_status_states_over_usb() -> None:
    backend = FakeBackend()
    epson = epson_tm_t88()
    backend.plug(epson)
    t = transport(backend)
    epson.status.update({1: 0x1A, 2: 0x32, 4: 0x7E})
    assert (await t.status()).state == "paper_out"
    epson.status.update({2: 0x16, 4: 0x12})
    assert (await t.status()).state == "cover_open"
    # Bytes the printer sent unasked (an ASB header, XOFF) are not taken for replies.
    epson.status.update({1: 0x12, 2: 0x12})
    epson.queue_in(b"\x10\x13")
    assert (await t.status()).state == "online"
    await t.close()


async def test_a_printer_that_does_not_answer_is_unavailable() -> None:
    backend = FakeBackend()
    epson = epson_tm_t88()
    epson.answers_status = False
    backend.plug(epson)
    t = transport(backend, status_timeout_ms=200)
    with pytest.raises(PrinterUnavailable) as caught:
        await t.status()
    assert "no status reply" in caught.value.reason


async def test_the_right_printer_is_found_after_it_moved_to_another_port() -> None:
    backend = FakeBackend()
    other = epson_tm_t88(serial="TM88-0002")
    mine = epson_tm_t88()
    backend.plug(other, bus=1, address=2)
    backend.plug(mine, bus=1, address=5, port_numbers=(1,))
    t = transport(backend)
    await t.send(b"one")

    mine.unplug()
    backend.plug(mine, bus=3, address=9, port_numbers=(2, 1))
    await t.send(b"two")

    assert mine.written.endswith(b"two" + QUERY_PRINTER) and b"one" in mine.written
    assert other.written == b""
    await t.close()


async def test_endpoints_and_packet_size_come_from_the_descriptors() -> None:
    backend = FakeBackend()
    device = epson_tm_t88(ep_out=0x03, ep_in=0x84, max_packet=512, interface_number=1)
    # A vendor-specific interface 0 with its own bulk OUT: the printer class one must win.
    device.interfaces.insert(0, Interface(number=0, cls=0xFF, endpoints=[Endpoint(0x01)]))
    backend.plug(device)
    t = transport(backend)

    ticket = bytes(100_000)
    await t.send(ticket)

    assert {ep for ep, _ in device.transfers} == {0x03}
    # Three DLE EOT questions before the ticket, one behind it.
    ticket_sizes = [n for _, n in device.transfers][3:-1]
    assert sum(ticket_sizes) == len(ticket)
    assert all(n % 512 == 0 for n in ticket_sizes[:-1])
    await t.close()


async def test_kernel_driver_is_detached_with_a_log_line_and_given_back_on_close() -> None:
    backend = FakeBackend()
    epson = epson_tm_t88()
    epson.kernel_driver.add(0)
    backend.plug(epson)
    t = transport(backend)
    with structlog.testing.capture_logs() as logs:
        await t.send(b"ticket")
    assert epson.detached == [0]
    detached = [e for e in logs if e["event"] == "usb_kernel_driver_detached"]
    assert detached and detached[0]["interface"] == 0 and detached[0]["printer"] == "hot-line"
    await t.close()
    assert epson.reattached == [0]


async def test_access_denied_names_the_udev_rule_and_the_lp_group() -> None:
    backend = FakeBackend()
    epson = epson_tm_t88()
    epson.access_denied = True
    backend.plug(epson)
    t = transport(backend)
    for call in (t.status(), t.send(b"ticket")):
        with pytest.raises(PrinterUnavailable) as caught:
            await call
        assert UDEV_RULES in caught.value.reason
        assert "'lp' group" in caught.value.reason
    assert b"ticket" not in epson.written


async def test_busy_when_another_program_holds_the_printer() -> None:
    backend = FakeBackend()
    backend.plug(epson_tm_t88())
    other = usb.core.find(backend=backend, idVendor=EPSON[0], idProduct=EPSON[1])
    usb.util.claim_interface(other, 0)
    try:
        with pytest.raises(PrinterUnavailable) as caught:
            await transport(backend).status()
        assert caught.value.reason.startswith("busy")
    finally:
        usb.util.dispose_resources(other)


async def test_unplug_mid_ticket_then_replug() -> None:
    backend = FakeBackend()
    epson = epson_tm_t88()
    backend.plug(epson, bus=1, address=4)
    t = transport(backend)
    assert (await t.status()).ready

    epson.unplug_after = len(epson.written) + 1000
    delivery = await t.send(b"A" * 10_000)
    # Bytes went in before it vanished: lost, not "unavailable" (never resent there).
    assert delivery.outcome is Outcome.LOST and delivery.reason == "unplugged"
    generation = t.generation
    with pytest.raises(PrinterUnavailable) as caught:
        await t.status()
    assert caught.value.reason.startswith("not connected")

    epson.unplug_after = None
    backend.plug(epson, bus=1, address=11)
    assert (await t.send(b"another ticket")).outcome is Outcome.CONFIRMED
    assert epson.written.endswith(b"another ticket" + QUERY_PRINTER)
    assert t.generation == generation + 1
    await t.close()


async def test_usb_io_does_not_block_the_event_loop() -> None:
    backend = FakeBackend()
    epson = epson_tm_t88()
    epson.write_delay = 0.05  # each transfer takes 50 ms
    backend.plug(epson)
    t = transport(backend)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    task = asyncio.create_task(ticker())
    started = time.monotonic()
    await t.send(bytes(64 * 64 * 4))  # four chunks: about 200 ms of blocking I/O
    elapsed = time.monotonic() - started
    task.cancel()
    assert elapsed >= 0.2
    assert ticks >= 10  # the loop kept running meanwhile
    await t.close()


def test_a_device_without_a_printer_interface_is_not_a_printer() -> None:
    backend = FakeBackend()
    odd = FakeDevice(
        vendor_id=0x04B8,
        product_id=0x0999,
        interfaces=[Interface(number=0, cls=0xFF, endpoints=[Endpoint(0x81)])],  # IN only
    )
    backend.plug(odd)
    assert scan(backend) == []
