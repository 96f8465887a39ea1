"""The spooler printing to a USB printer through pyusb, on a pyusb backend of our own that
presents a TM-T88-like device: printed once, unplugged mid-ticket, found again on another
port, and the interrupted ticket reprinted marked."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge.clock import SystemClock
from edge.config.models import Config
from edge.daemon import plan_of
from edge.ingest.pipeline import Incoming, Pipeline
from edge.orders.apply import Applier
from edge.printing.spooler import Spooler
from edge.printing.usb import UsbTransport
from edge.store import Store
from edge.store.legacy import ConnStore
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


async def test_usb_printer_unplugged_mid_ticket_then_replugged_elsewhere(tmp_path: Path) -> None:
    cfg = Config.model_validate({
        "site": "usb-site", "state_dir": str(tmp_path),
        "printers": [{"id": "bar", "connection": "usb://04b8:0202/TM88-0001"}],
        "stations": [{"id": "grill", "printer": "bar", "categories": ["grill"]}],
        "routing": {"default_station": "grill"},
        "printing": {"retry_max": 0.2},
    })
    backend = FakeBackend()
    epson = epson_tm_t88()
    backend.plug(epson, bus=1, address=4)
    store = Store(tmp_path / "k.db")
    await store.open()
    states: list[dict[str, object]] = []
    transport = UsbTransport(0x04B8, 0x0202, "TM88-0001", name="bar", backend=backend)
    spooler = Spooler(cfg, ConnStore(store), SystemClock(), lambda _p, body: states.append(body),
                      transports={"bar": transport})
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
        await publish("u-1")
        await wait_for(lambda: _is(state_of("u-1/new/grill"), ("printed", 0)))
        assert b"job u-1/new/grill" in epson.written

        # Pulled out half-way through the next ticket.
        epson.unplug_after = len(epson.written) + 40
        await publish("u-2")
        await wait_for(lambda: _is(state_of("u-2/new/grill"), ("queued", 1)))
        await wait_for(lambda: _true(any(s["state"] == "offline" for s in states)))

        # Plugged into another port: found by VID:PID and serial, the ticket prints again.
        epson.unplug_after = None
        backend.plug(epson, bus=2, address=9)
        await wait_for(lambda: _is(state_of("u-2/new/grill"), ("printed", 1)))
        tail = epson.written[epson.written.rindex(b"\x1b@"):]
        assert b"MAY BE DUPLICATE" in tail and b"job u-2/new/grill" in tail
        assert states[-1]["state"] == "online"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await spooler.close()
        await store.close()


async def _is(row: Any, expected: tuple[str, int]) -> bool:
    got = await row
    return got is not None and tuple(got) == expected


async def _true(value: bool) -> bool:
    return value
