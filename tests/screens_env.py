"""The daemon's web component on its own, for the tests of the screens' protocol and security:
the real `WebServer` with a real SQLite store, the change feed, the intake and its applier,
order events applied by the real domain code, and a real aiohttp server on a free port, all
in a thread with its own event loop (so a synchronous browser or HTTP client can talk to it
from the test). No broker and no printer: the whole daemon is in test_screens_browser.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from edge.clock import SystemClock
from edge.component import Board, Context
from edge.config.models import Config
from edge.feed import Feed
from edge.ingest.consumer import Ingest
from edge.ingest.pipeline import Incoming, Outcome, Pipeline
from edge.orders.apply import Applier, Plan
from edge.store import Store
from edge.web.server import WebServer
from tests.broker import free_port

TOKEN = "kitchen-operator-token-0123456789"
ROOT = "kitchen/test-site"
T = TypeVar("T")


def write_token(path: Path, token: str = TOKEN, mode: int = 0o600) -> Path:
    path.write_text(token + "\n")
    os.chmod(path, mode)
    return path


class _Health:
    def status_line(self) -> str:
        return "screens test"

    def broker_connected(self) -> bool:
        return False

    async def metrics(self) -> tuple[bytes, str]:
        return b"", "text/plain"


def _no_publish(topic: str, body: Any, *, retain: bool = False, on_sent: Any = None) -> None:
    return None


class ScreensServer:
    def __init__(self, tmp: Path, *, stations: Sequence[str] = ("grill", "bar"),
                 token_file: Path | None = None, warn_minutes: float = 8.0,
                 late_minutes: float = 15.0, tick: float | None = None,
                 port: int | None = None) -> None:
        self.tmp = tmp
        self.stations = list(stations)
        self.token_file = token_file
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        http: dict[str, Any] = {"listen": f"127.0.0.1:{self.port}"}
        if token_file is not None:
            http["operator_token_file"] = str(token_file)
        self.cfg = Config.model_validate({
            "site": "test-site", "state_dir": str(tmp),
            "printers": [{"id": f"{s}-printer", "connection": "tcp://127.0.0.1:9"}
                         for s in self.stations],
            "stations": [{"id": s, "printer": f"{s}-printer", "categories": [s]}
                         for s in self.stations],
            "routing": {"default_station": self.stations[0]},
            "http": http, "kds": {"warn_minutes": warn_minutes, "late_minutes": late_minutes}})
        self.clock = SystemClock()
        self.feed = Feed()
        self.store = Store(tmp / "kitchen-edge.db", self.feed)
        self.pipeline = Pipeline(ROOT, Applier(Plan(tuple(self.cfg.stations),
                                                    self.stations[0])))
        self.ingest = Ingest(self.store, self.pipeline, self.clock, max_batch=64)
        self.board = Board()
        self.ctx = Context(cfg=self.cfg, store=self.store, feed=self.feed, clock=self.clock,
                           publish=_no_publish, intake=self.ingest, health=_Health(),
                           board=self.board)
        self._tick = tick
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._tasks: list[asyncio.Task[Any]] = []
        self.web: WebServer | None = None

    def run(self, make: Callable[[], Awaitable[T]], timeout: float = 15.0) -> T:
        async def wrapped() -> T:
            return await make()

        fut: Future[T] = asyncio.run_coroutine_threadsafe(wrapped(), self._loop)
        return fut.result(timeout)

    def start(self) -> ScreensServer:
        self._thread.start()
        self.run(self._start)
        return self

    async def _start(self) -> None:
        await self.store.open()
        self.web = WebServer(self.ctx, self.cfg.http)  # type: ignore[arg-type]
        if self._tick is not None:
            self.web.screens.tick = self._tick
        await self.web.start()
        self._tasks = [asyncio.create_task(self.web.run()),
                       asyncio.create_task(self.ingest.run_applier())]
        for _ in range(200):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.02)
                continue
            writer.close()
            return
        raise AssertionError("the web server did not listen")

    @property
    def ready_orders(self) -> list[str]:
        """Orders the screens made ready: their `order.ready`, taken by the intake."""
        rows = self.run(lambda: self.store.read(lambda c: c.execute(
            "SELECT order_id FROM events WHERE event_id LIKE 'kds-ready:%' "
            "ORDER BY rowid").fetchall()))
        return [r[0] for r in rows]

    @property
    def hub(self) -> Any:
        assert self.web is not None
        return self.web.hub

    def stage(self, order_id: str) -> str | None:
        rows = self.run(lambda: self.store.read(lambda c: c.execute(
            "SELECT kitchen_stage FROM orders WHERE order_id=?", (order_id,)).fetchall()))
        return rows[0][0] if rows else None

    def stop(self) -> None:
        async def stop() -> None:
            assert self.web is not None
            self.ingest.stop()
            await self.web.stop()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self.web.close()
            await self.store.close()

        try:
            self.run(stop)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    def __enter__(self) -> ScreensServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- the kitchen's side -----------------------------------------------------------

    def send(self, topic: str, payload: bytes) -> Outcome:
        """One message taken and applied as `kitchen-edge jobs reprint` does: both steps in
        one transaction, the changes published on the feed after COMMIT."""
        now = self.clock.now()

        async def go() -> Outcome:
            result = await self.store.transact(
                lambda tx: self.pipeline.apply_batch(tx, [Incoming(topic, payload)], now))
            return result.outcomes[0]

        return self.run(go)

    def apply(self, event: dict[str, Any]) -> list[str]:
        """Apply one order event; returns the new job keys."""
        outcome = self.send(f"{ROOT}/orders/{event['order_id']}/events",
                            json.dumps(event).encode())
        assert outcome.result in ("applied", "repeat"), outcome
        return outcome.new_jobs


def order(order_id: str, items: list[dict[str, Any]], **data: Any) -> dict[str, Any]:
    return event(order_id, "order.created", {
        "display_id": data.pop("display_id", order_id.upper()),
        "fulfillment": data.pop("fulfillment", {"type": "dine_in", "table": "7"}),
        "items": items, **data})


def event(order_id: str, kind: str, data: dict[str, Any], event_id: str | None = None,
          ) -> dict[str, Any]:
    return {"event_id": event_id or f"evt-{order_id}-{kind}", "type": kind,
            "order_id": order_id, "occurred_at": "2026-11-21T18:02:11Z",
            "source": {"channel": "pos", "device": "test-pos"}, "data": data}


def item(line_id: str, name: str, qty: int = 1, category: str = "grill",
         **extra: Any) -> dict[str, Any]:
    return {"line_id": line_id, "name": name, "qty": qty, "category": category, **extra}


__all__ = ["ROOT", "TOKEN", "ScreensServer", "event", "item", "order", "write_token"]
