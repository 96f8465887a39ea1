"""mDNS discovery over real multicast DNS on this machine's loopback interface.

zeroconf always listens on UDP 5353 (a module constant: its sockets cannot take another
port), so "a test port" is not possible; instead every Zeroconf here is bound to 127.0.0.1
only. Linux delivers multicast over `lo` between processes even though `lo` lacks the
MULTICAST flag, so nothing on the machine is changed and nothing leaves it. Each test uses
service names with a random token, so runs side by side (or other tests advertising on lo)
cannot collide.
"""

from __future__ import annotations

import asyncio
import errno
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

import pytest
import structlog
from ruamel.yaml import YAML
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from edge.config.models import MdnsConnection, PrinterConfig
from edge.discovery.advertise import advertise
from edge.discovery.mdns import RAW_TYPE, MdnsBrowser, ServiceRecord
from edge.discovery.report import discover, format_table
from edge.store import registry
from edge.store.db import Store

LO = ["127.0.0.1"]
REPO = Path(__file__).resolve().parent.parent


def _loopback_multicast_problem() -> str | None:
    """Why multicast over lo does not work here, or None when it does (it does on Linux)."""
    group = "224.0.0.251"
    try:
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx,
        ):
            rx.bind(("", 0))
            rx.setsockopt(
                socket.IPPROTO_IP,
                socket.IP_ADD_MEMBERSHIP,
                socket.inet_aton(group) + socket.inet_aton("127.0.0.1"),
            )
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
            tx.sendto(b"probe", (group, rx.getsockname()[1]))
            rx.settimeout(2.0)
            rx.recv(16)
    except OSError as exc:
        return f"multicast over the loopback interface does not work here: {exc}"
    return None


@pytest.fixture(scope="module", autouse=True)
def _needs_loopback_multicast() -> None:
    problem = _loopback_multicast_problem()
    if problem:
        pytest.skip(problem)


def _token() -> str:
    return secrets.token_hex(3)


class Printer:
    """A real TCP printer port: every connection's bytes, in order."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self, host: str = "127.0.0.1") -> Printer:
        self._server = await asyncio.start_server(self._take, host, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def _take(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.received.put_nowait(await reader.read())
        writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def send_ticket(endpoint: tuple[str, int], payload: bytes) -> None:
    _, writer = await asyncio.open_connection(*endpoint)
    writer.write(payload)
    await writer.drain()
    writer.close()
    await writer.wait_closed()


class Changes:
    """The browser's on_change for one service name, and a way to wait on what it reports."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.seen: list[ServiceRecord | None] = []
        self.at: list[float] = []  # monotonic time of each change
        self._changed = asyncio.Event()

    def __call__(self, name: str, record: ServiceRecord | None) -> None:
        if name == self.name:
            self.seen.append(record)
            self.at.append(time.monotonic())
            self._changed.set()

    async def until(self, condition: Callable[[], bool], within: float = 10.0) -> float:
        """Wait for the condition to hold after a change; returns the seconds it took."""
        started = time.monotonic()
        async with asyncio.timeout(within):
            while not condition():
                self._changed.clear()
                await self._changed.wait()
        return time.monotonic() - started


def start_advertiser(name: str, port: int, log_path: Path) -> subprocess.Popen[bytes]:
    """`python -m edge.discovery.advertise` in its own process, as a printer on the LAN is."""
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "edge.discovery.advertise", name, str(port)],
            stdout=log,
            stderr=log,
            cwd=REPO,
        )


async def registry_row(store: Store, name: str) -> dict[str, Any] | None:
    rows = await store.read(lambda conn: registry.list_registry(conn, "mdns"))
    return next((row for row in rows if row["name"] == name), None)


async def wait_registry(
    store: Store, name: str, condition: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    # The registry is written by the browser's own task; a read is cheap, so poll it briefly.
    async with asyncio.timeout(5.0):
        while True:
            row = await registry_row(store, name)
            if row is not None and condition(row):
                return row
            await asyncio.sleep(0.05)


@pytest.fixture
async def store(tmp_path: Path) -> Any:
    db = Store(tmp_path / "state" / "kitchen-edge.db")
    await db.open()
    try:
        yield db
    finally:
        await db.close()


async def test_printer_found_by_name_printed_to_readvertised_and_withdrawn(store: Store) -> None:
    name = f"Kitchen Test Printer {_token()}"
    first, second = await Printer().start(), await Printer().start()
    changes = Changes(name)
    browser = MdnsBrowser(
        interfaces=LO, on_change=changes, store=store, refresh_interval=1.0, answer_timeout=0.5
    )
    txt = {
        "ty": "EPSON TM-T88V",
        "product": "(TM-T88V)",
        "usb_MFG": "EPSON",
        "usb_MDL": "TM-T88V",
        "note": "Hot line",
    }
    waiting: asyncio.Task[None] | None = None
    await browser.start()
    try:
        started = time.monotonic()
        async with advertise(name, first.port, txt=txt, interfaces=LO):
            await changes.until(lambda: browser.lookup(name) is not None)
            found = changes.at[-1] - started
            endpoint = browser.lookup(name)
            assert endpoint == ("127.0.0.1", first.port)
            record = changes.seen[-1]
            assert record is not None
            assert record.service_type == RAW_TYPE
            assert record.txt["usb_MDL"] == "TM-T88V" and record.txt["note"] == "Hot line"
            assert record.host.endswith(".local.")

            await send_ticket(endpoint, b"ticket 1")
            assert await asyncio.wait_for(first.received.get(), 5) == b"ticket 1"
            seen_first = await wait_registry(store, name, lambda r: r["present"])
            assert seen_first["port"] == first.port
            withdrawing = time.monotonic()

        await changes.until(lambda: browser.lookup(name) is None)
        gone = changes.at[-1] - withdrawing
        assert changes.seen[-1] is None
        await wait_registry(store, name, lambda r: not r["present"])

        # A ticket for the printer waits while it is away, then goes where it comes back.
        async def print_when_there(payload: bytes) -> None:
            await changes.until(lambda: browser.lookup(name) is not None, within=15)
            target = browser.lookup(name)
            assert target is not None
            await send_ticket(target, payload)

        waiting = asyncio.create_task(print_when_there(b"ticket 2"))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        started = time.monotonic()
        async with advertise(name, second.port, txt=txt, interfaces=LO):
            await asyncio.wait_for(waiting, 10)
            moved = time.monotonic() - started
            assert browser.lookup(name) == ("127.0.0.1", second.port)
            assert await asyncio.wait_for(second.received.get(), 5) == b"ticket 2"
            assert first.received.empty()
            await wait_registry(store, name, lambda r: r["present"] and r["port"] == second.port)

        await changes.until(lambda: browser.lookup(name) is None)
        assert [r.port if r else None for r in changes.seen] == [
            first.port,
            None,
            second.port,
            None,
        ]
    finally:
        if waiting is not None:
            waiting.cancel()
        await browser.stop()
        await first.close()
        await second.close()

    row = await registry_row(store, name)
    assert row is not None
    assert row["present"] is False
    assert (row["address"], row["port"]) == ("127.0.0.1", second.port)
    assert row["first_seen"] == seen_first["first_seen"]
    assert row["first_seen"] <= row["last_seen"]
    assert row["details"]["type"] == "_pdl-datastream._tcp"
    assert row["details"]["txt"]["usb_MFG"] == "EPSON"
    print(
        f"\nmdns timings: advertised (with its 1 s name probe) and found in {found:.2f}s, "
        f"withdrawal seen in {gone:.2f}s, re-advertised on a new port and printed in {moved:.2f}s"
    )


async def test_address_and_port_change_without_goodbye_is_followed_while_online() -> None:
    name = f"Kitchen Moving Printer {_token()}"
    first, second = await Printer().start(), await Printer().start()
    # All of 127.0.0.0/8 is on lo: a second address for the printer without touching the host.
    third = await Printer().start(host="127.0.0.2")
    changes = Changes(name)
    browser = MdnsBrowser(interfaces=LO, on_change=changes)

    def info(port: int, address: str = "127.0.0.1") -> AsyncServiceInfo:
        return AsyncServiceInfo(
            RAW_TYPE,
            f"{name}.{RAW_TYPE}",
            addresses=[socket.inet_aton(address)],
            port=port,
            properties={"ty": "moving printer"},
            server=f"moving-{name[-6:]}.local.",
        )

    responder = AsyncZeroconf(interfaces=LO)
    try:
        await responder.async_register_service(info(first.port))
        await browser.start()
        await changes.until(lambda: browser.lookup(name) == ("127.0.0.1", first.port))

        # The printer's port changes in place (a new SRV with the cache-flush bit), as a
        # printer re-announcing after a settings change does: no goodbye in between.
        updating = time.monotonic()
        await responder.async_update_service(info(second.port))
        await changes.until(lambda: browser.lookup(name) == ("127.0.0.1", second.port))
        moved = changes.at[-1] - updating
        endpoint = browser.lookup(name)
        assert endpoint is not None
        await send_ticket(endpoint, b"next ticket")
        assert await asyncio.wait_for(second.received.get(), 5) == b"next ticket"
        assert first.received.empty()

        # Then its address changes (a new A record for the same host name, as after DHCP).
        updating = time.monotonic()
        await responder.async_update_service(info(third.port, "127.0.0.2"))
        await changes.until(lambda: browser.lookup(name) == ("127.0.0.2", third.port))
        readdressed = changes.at[-1] - updating
        endpoint = browser.lookup(name)
        assert endpoint is not None
        await send_ticket(endpoint, b"ticket after the move")
        assert await asyncio.wait_for(third.received.get(), 5) == b"ticket after the move"

        assert None not in changes.seen  # never offline while moving
        assert moved < 3.0 and readdressed < 3.0
        print(
            f"\nmdns timings: in-place port change followed in {moved:.2f}s, "
            f"address change in {readdressed:.2f}s"
        )
    finally:
        await browser.stop()
        await responder.async_close()
        for printer in (first, second, third):
            await printer.close()


async def test_silent_printer_turns_offline_and_comes_back(store: Store, tmp_path: Path) -> None:
    """A responder that stops answering (frozen with SIGSTOP: no goodbye) is offline in
    seconds; tickets to other printers flow meanwhile; thawed, it is found again."""
    name = f"Kitchen Silent Printer {_token()}"
    printer, other = await Printer().start(), await Printer().start()
    changes = Changes(name)
    browser = MdnsBrowser(
        interfaces=LO,
        on_change=changes,
        store=store,
        refresh_interval=0.5,
        answer_timeout=0.5,
        missed_answers=2,
    )
    child = start_advertiser(name, printer.port, tmp_path / "advertiser.log")
    await browser.start()
    try:
        await changes.until(lambda: browser.lookup(name) is not None, within=15)
        assert browser.lookup(name) == ("127.0.0.1", printer.port)

        os.kill(child.pid, signal.SIGSTOP)
        frozen = time.monotonic()
        latencies: list[float] = []
        for n in range(10):
            sent = time.monotonic()
            await send_ticket(("127.0.0.1", other.port), b"ticket %d" % n)
            assert await asyncio.wait_for(other.received.get(), 2) == b"ticket %d" % n
            latencies.append(time.monotonic() - sent)
            await asyncio.sleep(0.1)
        await changes.until(lambda: browser.lookup(name) is None, within=10)
        silent = changes.at[-1] - frozen
        assert changes.seen[-1] is None
        await wait_registry(store, name, lambda r: not r["present"])
        assert max(latencies) < 0.5

        os.kill(child.pid, signal.SIGCONT)
        thawed = time.monotonic()
        await changes.until(lambda: browser.lookup(name) is not None, within=10)
        back = changes.at[-1] - thawed
        assert browser.lookup(name) == ("127.0.0.1", printer.port)
        await wait_registry(store, name, lambda r: r["present"])
        print(f"\nmdns timings: silent printer offline after {silent:.2f}s, back in {back:.2f}s")
    finally:
        await browser.stop()
        if child.poll() is None:
            os.kill(child.pid, signal.SIGCONT)
            child.terminate()
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        await printer.close()
        await other.close()


async def test_broken_zeroconf_never_blocks_and_is_retried() -> None:
    attempts = 0
    retried = asyncio.Event()

    def no_network(interfaces: list[str] | None) -> AsyncZeroconf:
        nonlocal attempts
        attempts += 1
        if attempts >= 3:
            retried.set()
        raise OSError(errno.ENODEV, "No such device")

    printer = await Printer().start()
    with structlog.testing.capture_logs() as logs:
        browser = MdnsBrowser(zeroconf_factory=no_network, retry_max=0.2)
        started = time.monotonic()
        await browser.start()
        assert time.monotonic() - started < 0.1
        try:
            # Tickets flow while discovery fails over and over.
            for n in range(20):
                sent = time.monotonic()
                await send_ticket(("127.0.0.1", printer.port), b"ticket %d" % n)
                assert await asyncio.wait_for(printer.received.get(), 2) == b"ticket %d" % n
                assert time.monotonic() - sent < 0.5
                await asyncio.sleep(0.02)
            await asyncio.wait_for(retried.wait(), 5)
            assert browser.lookup("Kitchen Test Printer") is None
            assert browser.records() == []
            assert not browser.browsing
        finally:
            await browser.stop()
            await printer.close()
    failures = [e for e in logs if e["event"] == "mdns_unavailable"]
    assert len(failures) >= 3
    assert failures[0]["log_level"] == "error" and "No such device" in failures[0]["error"]


async def test_interface_address_that_does_not_exist_is_logged_not_raised() -> None:
    # 198.51.100.0/24 is a documentation range: no interface here has it, nothing is sent.
    logged = asyncio.Event()

    def notice(_: object, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        if event["event"] == "mdns_unavailable":
            logged.set()
        return event

    with structlog.testing.capture_logs(processors=[notice]) as logs:
        browser = MdnsBrowser(interfaces=["198.51.100.7"], retry_max=0.2)
        started = time.monotonic()
        await browser.start()
        assert time.monotonic() - started < 0.1
        try:
            await asyncio.wait_for(logged.wait(), 5)
            assert browser.lookup("anything") is None
        finally:
            await browser.stop()
    assert any(
        e["event"] == "mdns_unavailable" and e["interfaces"] == ["198.51.100.7"] for e in logs
    )


async def test_discover_lists_printers_and_config_lines_that_load() -> None:
    token = _token()
    raw_name = f"Kitchen Test Printer {token}"
    ipp_name = f"Office Laser {token}"
    raw, ipp = await Printer().start(), await Printer().start()
    txt = {
        "ty": "EPSON TM-T88V",
        "product": "(TM-T88V)",
        "usb_MFG": "EPSON",
        "usb_MDL": "TM-T88V",
        "note": "Hot line",
    }
    try:
        async with (
            advertise(raw_name, raw.port, txt=txt, interfaces=LO),
            advertise(
                ipp_name,
                ipp.port,
                service_type="_ipp._tcp.local.",
                txt={"ty": "Office Laser"},
                interfaces=LO,
            ),
        ):
            found = await asyncio.to_thread(discover, 1.5, interfaces=LO)
    finally:
        await raw.close()
        await ipp.close()

    mine = {entry["name"]: entry for entry in found if token in entry["name"]}
    assert set(mine) == {raw_name, ipp_name}
    entry = mine[raw_name]
    assert entry["how"] == "mdns" and entry["state"] == "online"
    assert (entry["address"], entry["port"]) == ("127.0.0.1", raw.port)
    assert entry["model"] == "EPSON TM-T88V" and entry["note"] == "Hot line"
    assert entry["connection"] == "mdns://" + raw_name.replace(" ", "%20")
    assert mine[ipp_name]["state"] == "not raw" and mine[ipp_name]["connection"] is None

    table = format_table(found)
    assert raw_name in table and f"127.0.0.1:{raw.port}" in table and "EPSON TM-T88V" in table
    pasted = YAML(typ="safe").load(table[table.index("\nprinters:\n") :])
    configs = [PrinterConfig(**p) for p in pasted["printers"]]
    by_id = {c.id: c for c in configs}
    assert by_id[entry["id"]].target == MdnsConnection(raw_name)
    assert ipp_name not in {getattr(c.target, "service_name", None) for c in configs}
    assert f"tcp://127.0.0.1:{ipp.port}" not in table  # only the raw-port guess is offered
    assert "tcp://127.0.0.1:9100" in table


def test_format_table_shows_usb_printers_and_an_empty_result() -> None:
    usb_entry = {
        "how": "usb",
        "name": "EPSON TM-T20II",
        "id": "epson-tm-t20ii",
        "address": "usb bus 1 device 4",
        "port": None,
        "model": "TM-T20II",
        "state": "online",
        "connection": "usb://04b8:0e15/X4LF012345",
    }
    other = {
        "how": "usb",
        "name": "Label Maker",
        "id": "label-maker",
        "address": "usb bus 1 device 5",
        "port": None,
        "model": "LM-1",
        "state": "not ESC/POS",
        "connection": None,
    }
    table = format_table([usb_entry, other])
    assert "usb bus 1 device 4" in table and "TM-T20II" in table
    pasted = YAML(typ="safe").load(table[table.index("\nprinters:\n") :])
    assert [PrinterConfig(**p).connection for p in pasted["printers"]] == [
        "usb://04b8:0e15/X4LF012345"
    ]
    assert "# Label Maker: not ESC/POS" in table
    assert format_table([]).startswith("No printers found.")
