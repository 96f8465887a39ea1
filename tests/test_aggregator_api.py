"""The aggregator API's own edges, in-process on a real SQLite file and real sockets: the
daemon stopping (503, nothing stored), the token file read for each request (rotation, a
missing file), a body that trickles in (408), and the webhooks' reaction answering only
orders the platform sent through the API."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from edge.clock import SystemClock
from edge.config.models import AggregatorConfig, StationConfig
from edge.connectors.aggregator import api as api_module
from edge.connectors.aggregator.api import AggregatorApi, bearer
from edge.connectors.aggregator.fake_platform import build_order
from edge.connectors.aggregator.webhooks import Webhooks
from edge.feed import Feed, OrderStageChanged
from edge.ingest.consumer import Ingest
from edge.ingest.pipeline import Incoming, Pipeline
from edge.orders.apply import Applier, Plan
from edge.store import Store

ROOT = "kitchen/s"
TOKEN = "api-token"


@dataclass
class Rig:
    ingest: Ingest
    api: AggregatorApi
    url: str
    token_file: Path
    client: httpx.AsyncClient

    async def post(self, path: str, body: object, token: str = TOKEN) -> httpx.Response:
        return await self.client.post(self.url + path, json=body,
                                      headers={"Authorization": f"Bearer {token}"})

    async def count(self, table: str) -> int:
        return int(await self.ingest.store.read(
            lambda c: c.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]))


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    token_file = tmp_path / "aggregator.token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    cfg = AggregatorConfig(listen="127.0.0.1:0", token_file=token_file,
                           webhook_url="http://127.0.0.1:9/hooks", auto_accept=True)
    store = Store(tmp_path / "k.db", Feed())
    await store.open()
    store.react(OrderStageChanged, Webhooks(cfg, SystemClock()).react)
    ingest = Ingest(store, Pipeline(ROOT, Applier(Plan(
        (StationConfig(id="grill", printer="hot"),), "grill"))), SystemClock(), max_batch=64)
    api = AggregatorApi(cfg, ingest, SystemClock())
    runner = web.AppRunner(api.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            yield Rig(ingest, api, f"http://{host}:{port}", token_file, client)
    finally:
        await runner.cleanup()
        await store.close()


async def test_a_stopping_kitchen_answers_503_and_stores_nothing(rig: Rig) -> None:
    rig.ingest.stop()
    reply = await rig.post("/orders", build_order("p-1"))
    assert reply.status_code == 503 and reply.headers["Retry-After"] == "5"
    assert reply.json() == {"error": "the kitchen is shutting down; nothing was stored"}
    assert await rig.count("events") == 0 and await rig.count("platform_orders") == 0


async def test_the_token_file_is_read_for_each_request(rig: Rig) -> None:
    assert (await rig.post("/orders", build_order("p-1"))).status_code == 202
    rig.token_file.write_text("rotated\n")
    assert (await rig.post("/orders", build_order("p-2"))).status_code == 401
    assert (await rig.post("/orders", build_order("p-2"), token="rotated")).status_code == 202
    rig.token_file.unlink()
    gone = await rig.post("/orders", build_order("p-3"), token="rotated")
    assert gone.status_code == 503
    assert gone.json() == {"error": "the kitchen has no API token configured"}
    assert rig.api.figures.answers == {202: 2, 401: 1, 503: 1}
    assert rig.api.figures.last_refusal is not None
    assert rig.api.figures.last_refusal["status"] == 503


def test_the_bearer_header() -> None:
    assert bearer("Bearer abc") == "abc"
    assert bearer("bearer  abc ") == "abc"
    assert bearer("Basic abc") is None and bearer("Bearer ") is None and bearer(None) is None


async def test_a_body_that_trickles_in_is_408(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api_module, "BODY_DEADLINE", 0.3)
    host, port = rig.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
                     b"Content-Length: 100\r\n\r\n{\"id\":")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 408")
    finally:
        writer.close()
    assert await rig.count("events") == 0


async def test_webhooks_answer_only_orders_the_platform_sent(rig: Rig) -> None:
    """An `ot-` order published on MQTT by anyone is a kitchen order like any other; the
    platform never hears of it. One taken through the API is answered."""
    assert (await rig.post("/orders", build_order("p-api"))).status_code == 202
    now = datetime.now(UTC)
    for order_id in ("ot-p-mqtt",):
        for kind, data in (("order.created", {"fulfillment": {"type": "pickup"},
                                              "items": [{"line_id": "1", "name": "Tea",
                                                         "qty": 1}]}),
                           ("order.accepted", {"prep_minutes": 5})):
            body = {"event_id": f"{order_id}-{kind}", "type": kind, "order_id": order_id,
                    "occurred_at": "2026-11-21T18:00:00Z",
                    "source": {"channel": "onetablet", "device": "someone"}, "data": data}
            message = Incoming(f"{ROOT}/orders/{order_id}/events", json.dumps(body).encode())
            await rig.ingest.store.transact(
                lambda tx, m=message: rig.ingest.pipeline.apply_batch(tx, [m], now))
    await rig.ingest.store.transact(
        lambda tx: rig.ingest.pipeline.apply_pending(tx, now, limit=100))
    calls = await rig.ingest.store.read(lambda c: c.execute(
        "SELECT order_id, method, path FROM calls").fetchall())
    assert [tuple(row) for row in calls] == [("ot-p-api", "PATCH", "/orders/p-api")]
