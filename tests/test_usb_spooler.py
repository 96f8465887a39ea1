"""The spooler printing to a USB printer through pyusb, on a pyusb backend of our own that
presents a TM-T88-like device: printed once; unplugged mid-ticket, the ticket is delivered,
not confirmed, and never written into that printer again: its one marked copy goes to the
station's backup, and without a backup it waits for the operator; found again on another
port, the printer takes the next tickets."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge.clock import SystemClock
from edge.config.models import Config
from edge.daemon import plan_of
from edge.feed import Feed, PrinterStateChanged
from edge.ingest.pipeline import Incoming, Pipeline
from edge.orders.apply import Applier
from edge.printing.spooler import Spooler
from edge.printing.usb import UsbTransport
from edge.store import Store
from tests.fakeusb import FakeBackend, epson_tm_t88

ROOT = "kitchen/usb-site"


def order(order_id: str) -> Incoming:
    body = {"event_id": f"e-{order_id}", "type": "order.created", "order_id": order_id,
            "occurred_at": "2026-11-21T18:02:11Z", "source": {"channel": "pos"},
            "data": {"fulfillment": {"type": "pickup"},
                     "items": [{"line_id": "1", "name": "Lahmacun", "qty": 2,
                                "category": "grill"}]}}
    return Incoming(f"{ROOT}/orders/{order_id}/events", json.dumps(body).encode())


async def wait_for(check: Any) -> None:
    """Poll a database condition: the spooler changes it from its own task."""
    async with asyncio.timeout(10):
        while not await check():  # noqa: ASYNC110 - the state lives in SQLite, not an Event
            await asyncio.sleep(0.02)


def usb_config(tmp_path: Path, backup: bool) -> Config:
    printers = [{"id": "bar", "connection": "usb://04b8:0202/TM88-0001"}]
    station: dict[str, Any] = {"id": "grill", "printer": "bar", "categories": ["grill"]}
    if backup:
        printers.append({"id": "spare", "connection": "usb://04b8:0202/TM88-0002"})
        station["backup"] = "spare"
    return Config.model_validate({
        "site": "usb-site", "state_dir": str(tmp_path), "printers": printers,
        "stations": [station], "routing": {"default_station": "grill"},
        "printing": {"retry_max": 0.2, "failover_after": 30,
                     "unconfirmed_failover_after": 0.5},
    })


async def run_kitchen(tmp_path: Path, cfg: Config, backend: FakeBackend,
                      scenario: Any) -> list[dict[str, object]]:
    store = Store(tmp_path / "k.db")
    await store.open()
    states: list[dict[str, object]] = []
    transports: dict[str, Any] = {
        p.id: UsbTransport(0x04B8, 0x0202, p.connection.rsplit("/", 1)[1], name=p.id,
                           backend=backend) for p in cfg.printers}
    feed = Feed()
    feed.subscribe(PrinterStateChanged, lambda change: states.append(change.body()))
    spooler = Spooler(cfg, store, SystemClock(), feed,
                      transports=transports)
    pipeline = Pipeline(ROOT, Applier(plan_of(cfg)))

    async def publish(order_id: str) -> None:
        now = datetime.now(UTC)
        await store.transact(lambda tx: pipeline.apply_batch(tx, [order(order_id)], now))
        spooler.kick()

    async def state_of(key: str) -> Any:
        return await store.read(lambda c: c.execute(
            "SELECT state, may_be_duplicate FROM print_jobs WHERE job_key=?", (key,)).fetchone())

    task = asyncio.create_task(spooler.run())
    try:
        await scenario(publish, state_of, states)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await spooler.close()
        await store.close()
    return states


async def test_usb_printer_unplugged_mid_ticket_copy_goes_to_the_backup_once(
        tmp_path: Path) -> None:
    backend = FakeBackend()
    epson, spare = epson_tm_t88(), epson_tm_t88(serial="TM88-0002")
    backend.plug(epson, bus=1, address=4)
    backend.plug(spare, bus=1, address=5)

    async def scenario(publish: Any, state_of: Any, states: list[dict[str, object]]) -> None:
        await publish("u-1")
        await wait_for(lambda: _is(state_of("u-1/new/grill"), ("printed", 0)))
        assert b"job u-1/new/grill" in epson.written

        # Pulled out half-way through the next ticket: delivered, not confirmed.
        epson.unplug_after = len(epson.written) + 150   # past any status query: in the ticket
        await publish("u-2")
        await wait_for(lambda: _is(state_of("u-2/new/grill"), ("unconfirmed", 0)))
        await wait_for(lambda: _true(any(s["state"] == "offline" and
                                         s["unconfirmed"] == ["u-2/new/grill"] for s in states)))

        # Plugged into another port at once: found by VID:PID and serial. The interrupted
        # ticket is not written into it again; its marked copy goes to the backup.
        epson.unplug_after = None
        backend.plug(epson, bus=2, address=9)
        await wait_for(lambda: _is(state_of("u-2/new/grill"), ("printed", 1)))
        copy = spare.written[spare.written.rindex(b"\x1b@"):]
        assert b"MAY BE DUPLICATE" in copy and b"BACKUP FROM bar" in copy
        assert b"job u-2/new/grill" in copy
        await publish("u-3")
        await wait_for(lambda: _is(state_of("u-3/new/grill"), ("printed", 0)))
        assert b"job u-3/new/grill" in epson.written
        assert epson.written.count(b"job u-2/new/grill") <= 1   # cut off, or once: never twice

    await run_kitchen(tmp_path, usb_config(tmp_path, backup=True), backend, scenario)


async def test_usb_printer_unplugged_mid_ticket_without_a_backup_waits_for_the_operator(
        tmp_path: Path) -> None:
    backend = FakeBackend()
    epson = epson_tm_t88()
    backend.plug(epson, bus=1, address=4)

    async def scenario(publish: Any, state_of: Any, states: list[dict[str, object]]) -> None:
        epson.unplug_after = len(epson.written) + 150
        await publish("w-1")
        await wait_for(lambda: _is(state_of("w-1/new/grill"), ("unconfirmed", 0)))
        epson.unplug_after = None
        backend.plug(epson, bus=3, address=2)
        await publish("w-2")
        await wait_for(lambda: _is(state_of("w-2/new/grill"), ("printed", 0)))
        await asyncio.sleep(1.0)      # past unconfirmed_failover_after: still no copy here
        assert tuple(await state_of("w-1/new/grill")) == ("unconfirmed", 0)
        assert epson.written.count(b"job w-1/new/grill") <= 1
        await wait_for(lambda: _true(states[-1]["state"] == "online"
                                     and states[-1]["unconfirmed"] == ["w-1/new/grill"]))

    await run_kitchen(tmp_path, usb_config(tmp_path, backup=False), backend, scenario)


async def _is(row: Any, expected: tuple[str, int]) -> bool:
    got = await row
    return got is not None and tuple(got) == expected


async def _true(value: bool) -> bool:
    return value
