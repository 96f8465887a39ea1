"""The screens' HTTP server on its own, for the tests of its protocol and its security: a real
SQLite store, real order events applied by the real domain code, a real aiohttp server on a
free port, in a thread with its own event loop (so a synchronous browser or HTTP client can
talk to it from the test).

The daemon's own wiring (the change feed telling the hub, the intake making orders ready) is
tested through the daemon process in test_screens_browser.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from edge.clock import SystemClock, rfc3339_ms
from edge.config.models import Config
from edge.ingest.pipeline import Incoming, Outcome, Pipeline
from edge.orders.apply import Applier, Plan
from edge.store import Store, kds
from edge.web.kitchen import StoreCards, StoreKitchen
from edge.web.live import CardHub
from edge.web.operator import DeadLettersPanel, JobsPanel, PrintersPanel
from edge.web.panels import Panels
from edge.web.screens import Screens, add_screens
from edge.web.security import Guard, OperatorToken
from tests.broker import free_port

TOKEN = "kitchen-operator-token-0123456789"
ROOT = "kitchen/test-site"
T = TypeVar("T")


def write_token(path: Path, token: str = TOKEN, mode: int = 0o600) -> Path:
    path.write_text(token + "\n")
    os.chmod(path, mode)
    return path


class ScreensServer:
    def __init__(self, tmp: Path, *, stations: Sequence[str] = ("grill", "bar"),
                 token_file: Path | None = None, warn_minutes: float = 8.0,
                 late_minutes: float = 15.0, tick: float | None = None) -> None:
        self.tmp = tmp
        self.stations = list(stations)
        self.token_file = token_file
        self.warn_minutes, self.late_minutes = warn_minutes, late_minutes
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.ready_orders: list[str] = []
        self.cfg = Config.model_validate({
            "site": "test-site", "state_dir": str(tmp),
            "printers": [{"id": f"{s}-printer", "connection": "tcp://127.0.0.1:9"}
                         for s in self.stations],
            "stations": [{"id": s, "printer": f"{s}-printer", "categories": [s]}
                         for s in self.stations],
            "routing": {"default_station": self.stations[0]}})
        self.pipeline = Pipeline(ROOT, Applier(Plan(tuple(self.cfg.stations),
                                                    self.stations[0])))
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.store = Store(tmp / "kitchen-edge.db")
        self.hub = CardHub()
        self._tick = tick

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
        clock = SystemClock()

        async def ready(order_id: str) -> None:
            self.ready_orders.append(order_id)

        panels = Panels()
        for panel in (PrintersPanel(self.store, self.cfg, self.submit),
                      JobsPanel(self.store, self.cfg, self.submit),
                      DeadLettersPanel(self.store)):
            panels.add(panel)
        screens = Screens(
            site="test-site", stations=self.stations, warn_minutes=self.warn_minutes,
            late_minutes=self.late_minutes, source=StoreCards(self.store, clock), hub=self.hub,
            kitchen=StoreKitchen(self.store, clock, self.hub, on_ready=ready),
            guard=Guard(OperatorToken(self.token_file)), tick=self._tick or 15.0,
            panels=panels)
        app = web.Application()
        add_screens(app, screens)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def stop(self) -> None:
        async def stop() -> None:
            self.hub.close()
            if self._runner is not None:
                await self._runner.cleanup()
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

    async def submit(self, topic: str, payloads: Sequence[bytes]) -> list[Outcome]:
        """Messages taken and applied as the daemon does (the CLI's path: one transaction);
        printable cooking tickets become cards, as the daemon's reaction to new jobs does,
        and the hub is told."""
        now = datetime.now(UTC)

        def write(conn: Any) -> list[Outcome]:
            result = self.pipeline.apply_batch(
                conn, [Incoming(topic, p) for p in payloads], now)
            kds.show_jobs(conn, [k for o in result.outcomes for k in o.new_jobs],
                          rfc3339_ms(now))
            return result.outcomes

        outcomes = await self.store.transact(write)
        self.hub.touch({o.order_id for o in outcomes if o.order_id})
        return outcomes

    def apply(self, event: dict[str, Any]) -> list[str]:
        """Apply one order event; returns the new job keys."""
        topic = f"{ROOT}/orders/{event['order_id']}/events"
        [outcome] = self.run(lambda: self.submit(topic, [json.dumps(event).encode()]))
        assert outcome.result in ("applied", "repeat"), outcome
        return outcome.new_jobs

    def send(self, topic: str, payload: bytes) -> Outcome:
        [outcome] = self.run(lambda: self.submit(topic, [payload]))
        return outcome


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
