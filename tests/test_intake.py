"""The intake API for in-process order sources (`Ingest.submit`): the same durable accept
path as broker messages, on a real SQLite file.

What a connector relies on: when `submit` returns, what it accepted is on disk (another
connection sees it), the invalid are dead-lettered with a reason naming the field, a
repeated event_id is a duplicate, the applier then applies what was accepted and the feed
says so; and once the daemon is stopping nothing is stored and the connector is told.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from edge.clock import SystemClock
from edge.config.models import StationConfig
from edge.feed import DeadLettered, EventAccepted, EventApplied, Feed, JobQueued
from edge.ingest.consumer import Ingest, IntakeClosed
from edge.ingest.pipeline import Pipeline
from edge.orders.apply import Applier, Plan
from edge.store import Store

ROOT = "kitchen/s"
STATIONS = (StationConfig(id="grill", printer="hot", categories=["grill"]),)


def order(order_id: str, event_id: str | None = None, **data: Any) -> bytes:
    return json.dumps({
        "event_id": event_id or f"mkt-{order_id}", "type": "order.created",
        "order_id": order_id, "occurred_at": "2026-11-21T18:02:11Z",
        "source": {"channel": "marketplace", "device": "yemek"},
        "data": {"fulfillment": {"type": "delivery", "courier": "platform"},
                 "items": [{"line_id": "p1", "name": "Adana dürüm", "qty": 2,
                            "category": "grill"}], **data}}).encode()


@pytest.fixture
async def kitchen(tmp_path: Path) -> AsyncIterator[tuple[Ingest, Feed, Path]]:
    feed = Feed()
    store = Store(tmp_path / "k.db", feed)
    await store.open()
    ingest = Ingest(store, Pipeline(ROOT, Applier(Plan(STATIONS, "grill"))), SystemClock(),
                    max_batch=100)
    try:
        yield ingest, feed, tmp_path / "k.db"
    finally:
        await store.close()


async def test_submit_returns_once_durable_with_one_outcome_per_payload(
        kitchen: tuple[Ingest, Feed, Path]) -> None:
    ingest, feed, db = kitchen
    seen: list[Any] = []
    for kind in (EventAccepted, DeadLettered, EventApplied, JobQueued):
        feed.subscribe(kind, seen.append)
    outcomes = await ingest.submit("yemek", [
        order("yemek-1031"),
        order("yemek-1032", items=[]),                       # invalid: no items
        b"{not json",
        order("yemek-1031"),                                 # the same event again
    ])
    assert [o.result for o in outcomes] == ["accepted", "dead", "dead", "duplicate"]
    assert outcomes[1].reason == "schema: data.items: List should have at least 1 item " \
        "after validation, not 0"
    assert outcomes[2].reason is not None and outcomes[2].reason.startswith(
        "payload is not valid JSON")
    # Durable: a separate connection sees the event and both dead letters.
    other = sqlite3.connect(db)
    try:
        stored = other.execute("SELECT event_id, topic, applied FROM events").fetchall()
        dead = other.execute("SELECT topic, reason FROM dead_letters ORDER BY id").fetchall()
    finally:
        other.close()
    assert stored == [("mkt-yemek-1031", f"{ROOT}/connectors/yemek/events", 0)]
    assert [d[0] for d in dead] == [f"{ROOT}/connectors/yemek/events"] * 2
    assert [type(c).__name__ for c in seen] == ["EventAccepted", "DeadLettered", "DeadLettered"]

    # The applier applies it like any broker event: the order, its ticket, on the feed.
    applier = asyncio.create_task(ingest.run_applier())
    try:
        for _ in range(200):
            if any(isinstance(c, EventApplied) for c in seen):
                break
            await asyncio.sleep(0.02)
    finally:
        applier.cancel()
        with pytest.raises(asyncio.CancelledError):
            await applier
    assert JobQueued("yemek-1031/new/grill", "yemek-1031", "grill") in seen
    assert EventApplied("mkt-yemek-1031", "yemek-1031", "order.created", "applied") in seen


async def test_a_stored_connector_event_is_applied_after_a_restart(
        kitchen: tuple[Ingest, Feed, Path]) -> None:
    ingest, _, _ = kitchen
    await ingest.submit("yemek", [order("yemek-7")])
    # A new process: the cache of parsed events is gone, the stored payload is parsed again.
    fresh = Ingest(ingest.store, Pipeline(ROOT, Applier(Plan(STATIONS, "grill"))),
                   SystemClock(), max_batch=100)
    result = await ingest.store.transact(
        lambda tx: fresh.pipeline.apply_pending(tx, SystemClock().now(), limit=10))
    assert [(o.result, o.order_id) for o in result.outcomes] == [("applied", "yemek-7")]


async def test_a_stopping_kitchen_refuses_and_stores_nothing(
        kitchen: tuple[Ingest, Feed, Path]) -> None:
    ingest, _, _ = kitchen
    ingest.stop()
    with pytest.raises(IntakeClosed):
        await ingest.submit("yemek", [order("yemek-9")])
    assert await ingest.store.read(
        lambda c: c.execute("SELECT COUNT(*) FROM events").fetchone()[0]) == 0


async def test_a_source_name_cannot_pose_as_a_topic(kitchen: tuple[Ingest, Feed, Path]) -> None:
    ingest, _, _ = kitchen
    with pytest.raises(ValueError, match="source"):
        await ingest.submit("../orders/x", [order("x")])


async def test_an_operator_command_from_inside_the_daemon(
        kitchen: tuple[Ingest, Feed, Path]) -> None:
    ingest, _, _ = kitchen
    await ingest.submit("yemek", [order("yemek-5")])
    await ingest.store.transact(
        lambda tx: ingest.pipeline.apply_pending(tx, SystemClock().now(), limit=10))
    reprint = json.dumps({"command_id": "kds-1", "job_key": "yemek-5/new/grill"}).encode()
    done = await ingest.command("reprint", reprint)
    assert (done.result, done.order_id) == ("command", "yemek-5")
    assert done.new_jobs == ["yemek-5/new%7Ereprint-kds-1/grill"]
    assert (await ingest.command("reprint", reprint)).result == "duplicate"
    unknown = await ingest.command("reprint", json.dumps(
        {"command_id": "kds-2", "job_key": "nope/new/grill"}).encode())
    assert (unknown.result, unknown.reason) == ("dead", "job_key 'nope/new/grill' is unknown")
    with pytest.raises(ValueError, match="unknown command"):
        await ingest.command("format-disk", b"{}")
