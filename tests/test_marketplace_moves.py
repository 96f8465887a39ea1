"""Marketplace orders that move at the worst moment, with the daemon and the fake marketplace
in this process (so the test can act between the marketplace answering a poll and the
connector reading that answer): the broker, the database, the HTTP sockets and the printer
are real.

- An acknowledgement names no status: the marketplace acknowledges whatever the order has
  when it arrives. A customer who cancels right after the poll listed the order at 1 has
  that cancel acknowledged by the acknowledgement of 1; the kitchen takes the status the
  answer says it acknowledged, and cancels.
- A known order listed again with a field that breaks the schema, at a new status: the
  status still counts (here a cancel), taken on the order as last readable.
- An acknowledgement held up (refused with 503s, retried) goes, each time, only after a poll
  newer than its last attempt: a cancel made meanwhile is imported first.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.config import load_config
from edge.connectors.marketplace.fake import FakeMarketplace
from edge.daemon import Daemon
from tests.broker import Broker
from tests.daemon import write_config
from tests.printing_env import job_key_of
from tests.vprinter import VPrinterProc

TOKEN = "moves-token"


@dataclass
class Rig:
    daemon: Daemon
    fake: FakeMarketplace
    printer: VPrinterProc

    async def row(self, sql: str, *args: Any) -> Any:
        return await self.daemon.store.read(lambda c: c.execute(sql, args).fetchone())

    async def until(self, check: Callable[[], Any], what: str, within: float = 15.0) -> None:
        """Poll the database (a committed fact has no event to wait on)."""
        for _ in range(int(within / 0.05)):
            if await check():
                return
            await asyncio.sleep(0.05)
        raise TimeoutError(f"{what}: not within {within}s")

    async def order_status(self, order_id: str) -> tuple[str, str] | None:
        row = await self.row("SELECT status, kitchen_stage FROM orders WHERE order_id=?",
                             order_id)
        return None if row is None else (str(row[0]), str(row[1]))


@asynccontextmanager
async def rig(tmp_path: Path, broker: Broker, fake: FakeMarketplace,
              **market: Any) -> AsyncIterator[Rig]:
    token = tmp_path / "market.token"
    token.write_text(TOKEN)
    os.chmod(token, 0o600)
    printer = await asyncio.to_thread(VPrinterProc(tmp_path / "printer").start)
    daemon: Daemon | None = None
    task: asyncio.Task[int] | None = None
    try:
        cfg = load_config(write_config(
            tmp_path / "station.yaml", broker_port=broker.port,
            printers=[{"id": "hot", "connection": printer.address}],
            stations=[{"id": "grill", "printer": "hot", "categories": ["grill"]}],
            marketplaces=[{"id": "yemek", "url": fake.url, "token_file": str(token),
                           "timeout": 2, "backoff_max": 2, **market}]))
        daemon = Daemon(cfg, handle_signals=False)
        task = asyncio.create_task(daemon.run())
        async with asyncio.timeout(20):
            await daemon.ready.wait()
        yield Rig(daemon, fake, printer)
    finally:
        if daemon is not None and task is not None:
            daemon.request_stop("test over")
            done, _ = await asyncio.wait({task}, timeout=25)
            if not done:
                task.cancel()
            assert done, "the daemon did not stop within 25 s"
        await asyncio.to_thread(printer.stop)


@asynccontextmanager
async def marketplace(**options: Any) -> AsyncIterator[FakeMarketplace]:
    fake = await FakeMarketplace(token=TOKEN, **options).start()
    try:
        yield fake
    finally:
        await fake.stop()


def listed_at(fake: FakeMarketplace, key: str, status: int) -> Callable[[], bool]:
    """The marketplace just answered a poll listing the order at `status`."""
    def check() -> bool:
        return any(r.path == "/orders/get-current" for r in fake.requests[-1:]) \
            and any(o["payment_key"] == key and o["status_id"] == status
                    for o in fake.current())
    return check


async def test_a_cancel_acknowledged_unseen_is_taken_from_the_acknowledgements_answer(
        tmp_path: Path, broker: Broker) -> None:
    async with marketplace() as fake:
        order = fake.new_order(products=[{"name": "Beyti", "quantity": 1,
                                          "category": "grill"}])
        key = order["payment_key"]

        async def cancel_once_listed() -> None:
            # The first poll lists it at 1; the customer cancels right after the marketplace
            # answered it, before the kitchen has even read the answer.
            await fake.wait_for(listed_at(fake, key, 1), within=20)
            fake.set_status(key, 6, reason_id=4)

        mover = asyncio.create_task(cancel_once_listed())
        async with rig(tmp_path, broker, fake, poll_seconds=30) as r:
            await mover
            kitchen_id = f"yemek-{order['id']}"
            await r.until(lambda: _eq(r.order_status(kitchen_id), ("void", "cancelled")),
                          "the kitchen cancelled the order")
            assert fake.acknowledged(key) == 6
            successes = fake.calls("PUT", "/orders/success/")
            assert len(successes) == 1 and successes[0].status == 200
            # One poll at start; nothing else could have told the kitchen.
            assert len(fake.calls("GET", "/orders/get-current")) == 1
            acked = await r.row("SELECT imported, acked FROM marketplace_orders "
                                "WHERE payment_key=?", key)
            assert tuple(acked) == (6, 6)
            assert tuple(await r.row("SELECT COUNT(*) FROM dead_letters")) == (0,)


async def test_a_known_order_listed_broken_at_a_new_status_still_moves(
        tmp_path: Path, broker: Broker) -> None:
    async with marketplace() as fake, rig(tmp_path, broker, fake, poll_seconds=0.3,
                                          auto_accept=True) as r:
        order = fake.new_order(products=[{"name": "Beyti", "quantity": 1,
                                          "category": "grill"}])
        key, kitchen_id = order["payment_key"], f"yemek-{order['id']}"
        await asyncio.to_thread(r.printer.wait_jobs, 1)
        await fake.wait_for(lambda: fake.acknowledged(key) == 2, within=15)
        fake.edit_order(key, {"products": [{"name": "Beyti", "quantity": "one"}]})
        fake.set_status(key, 6, reason_id=4)
        await r.until(lambda: _eq(r.order_status(kitchen_id), ("cancelled", "cancelled")),
                      "cancelled in the kitchen")
        jobs = await asyncio.to_thread(r.printer.wait_jobs, 2)
        assert job_key_of(jobs[1]) == f"{kitchen_id}/cancel/grill"
        await fake.wait_for(lambda: fake.acknowledged(key) == 6, within=15)
        problem = await r.row("SELECT problem FROM marketplace_orders WHERE payment_key=?",
                              key)
        assert "products[0].quantity" in problem[0]


async def test_an_acknowledgement_retried_goes_only_after_a_poll_newer_than_its_last_try(
        tmp_path: Path, broker: Broker) -> None:
    # This marketplace's acknowledgement does not say which status it acknowledged.
    async with marketplace(success_names_status=False) as fake:
        order = fake.new_order(products=[{"name": "Beyti", "quantity": 1,
                                          "category": "grill"}])
        key, kitchen_id = order["payment_key"], f"yemek-{order['id']}"
        await fake.set_fault("reject", path_prefix="/orders/success", status=503)

        async def cancel_after_the_first_try() -> float:
            # The acknowledgement is refused once, right after the poll that imported the
            # order; the customer cancels at that moment, and the marketplace recovers. The
            # retry comes well within FRESH of that poll.
            await fake.wait_for(lambda: any(r.status == 503 for r in fake.requests),
                                within=20)
            fake.set_status(key, 6, reason_id=4)
            await fake.set_fault("none")
            return fake.history(key)[-1].at

        mover = asyncio.create_task(cancel_after_the_first_try())
        async with rig(tmp_path, broker, fake, poll_seconds=60) as r:
            cancelled_at = await mover
            await r.until(lambda: _eq(r.order_status(kitchen_id), ("void", "cancelled")),
                          "the kitchen cancelled the order")
            await fake.wait_for(lambda: fake.acknowledged(key) == 6, within=15)
            done = [c for c in fake.calls("PUT", "/orders/success/") if c.status == 200]
            polls = fake.calls("GET", "/orders/get-current")
            # The retry rested on a poll of its own, which saw the cancel; polls every 60 s
            # alone would not have come yet.
            assert any(cancelled_at < p.at < done[0].at for p in polls)
            assert polls[-1].at - polls[0].at < 30


async def _eq(value: Any, expected: Any) -> bool:
    return bool(await value == expected)
