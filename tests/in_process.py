"""The daemon run in this process on a ManualClock (the one seam through which it reads the
time), with a real broker, database and virtual printers: "an hour later" is a method call,
not a sleep. For tests/test_scheduled.py and tests/test_clock_steps.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from edge.clock import ManualClock
from edge.config import load_config
from edge.daemon import Daemon
from tests.broker import Broker
from tests.daemon import Publisher, write_config
from tests.printing_env import job_key_of
from tests.vprinter import VPrinterProc


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class InProcessKitchen:
    daemon: Daemon
    pos: Publisher
    clock: ManualClock
    printers: dict[str, VPrinterProc]

    async def send(self, body: dict[str, Any], occurred_at: datetime | None = None) -> None:
        if occurred_at is not None:
            body = {**body, "occurred_at": stamp(occurred_at)}
        await asyncio.to_thread(self.pos.order, body)

    async def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        return await self.daemon.store.read(
            lambda c: [tuple(r) for r in c.execute(sql, args).fetchall()])

    async def state(self, job_key: str) -> str | None:
        found = await self.rows("SELECT state FROM print_jobs WHERE job_key=?", job_key)
        return str(found[0][0]) if found else None

    async def states(self, order_id: str) -> dict[str, str]:
        """Each print job of the order, by job key, in its state."""
        return {str(k): str(s) for k, s in await self.rows(
            "SELECT job_key, state FROM print_jobs WHERE order_id=?", order_id)}

    async def until_state(self, job_key: str, want: str) -> None:
        """Poll the database (a committed fact has no event to wait on) for up to 10 s."""
        for _ in range(500):
            if await self.state(job_key) == want:
                return
            await asyncio.sleep(0.02)
        raise TimeoutError(f"{job_key}: {await self.state(job_key)} never became {want}")

    async def until(self, order_id: str, want: dict[str, str]) -> None:
        """`until_state` for every job of an order at once."""
        for _ in range(500):
            if (await self.states(order_id)) == want:
                return
            await asyncio.sleep(0.02)
        raise TimeoutError(f"{order_id}: {await self.states(order_id)} never became {want}")

    async def ticks(self, n: int = 3) -> None:
        """Let the scheduler run a few rounds on the clock as it stands (a second of
        monotonic time each: nothing due in the next few seconds fires wrongly)."""
        for _ in range(n):
            self.clock.advance(1)
            await asyncio.sleep(0.1)

    async def printed(self, printer: str = "hot") -> list[str | None]:
        return [job_key_of(j) for j in await self.printers[printer].ajobs()]


@asynccontextmanager
async def in_process_kitchen(tmp_path: Path, broker: Broker, clock: ManualClock, *,
                             printers: tuple[str, ...] = ("hot", "bar"),
                             stations: list[dict[str, Any]] | None = None,
                             down: tuple[str, ...] = (),
                             **config: Any) -> AsyncIterator[InProcessKitchen]:
    """The daemon on `clock`, ready, with virtual `printers` (those in `down` named in the
    config at an address where nothing listens) and a POS publisher; stopped after, within
    25 s or the test fails (with the stuck tasks' stacks in its output)."""
    started: dict[str, VPrinterProc] = {}
    pos: Publisher | None = None
    task: asyncio.Task[int] | None = None
    daemon: Daemon | None = None
    try:
        for name in printers:
            started[name] = await asyncio.to_thread(
                VPrinterProc(tmp_path / f"printer-{name}").start)
        addresses = {n: "tcp://127.0.0.1:9" if n in down else p.address
                     for n, p in started.items()}
        cfg = load_config(write_config(
            tmp_path / "station.yaml", broker_port=broker.port,
            printers=[{"id": n, "connection": a} for n, a in addresses.items()],
            stations=stations or [
                {"id": "grill", "printer": "hot", "categories": ["grill"]},    # lead 20
                {"id": "cold", "printer": "hot", "categories": ["cold"], "lead_minutes": 5}],
            **config))
        daemon = Daemon(cfg, clock=clock)
        task = asyncio.create_task(daemon.run())
        async with asyncio.timeout(20):
            await daemon.ready.wait()
        pos = await asyncio.to_thread(Publisher, broker.port)
        yield InProcessKitchen(daemon, pos, clock, started)
    finally:
        if pos is not None:
            pos.close()
        stopped = True
        if daemon is not None and task is not None:
            daemon.request_stop("test over")
            done, _ = await asyncio.wait({task}, timeout=25)
            if not done:
                stopped = False
                for t in asyncio.all_tasks():      # where shutdown is stuck, for the log
                    t.print_stack(limit=8)
                task.cancel()
        for printer in started.values():
            await asyncio.to_thread(printer.stop)
        assert stopped, "the daemon did not stop within 25 s of request_stop"
