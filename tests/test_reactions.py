"""Transactional reactions: a component's synchronous function that runs inside the writer
transaction, over the changes that survived, just before COMMIT, and may write in it. The
outbox pattern for partner calls rests on it: the call row exists exactly when the kitchen
change it reports committed. On a real SQLite file, through the real pipeline."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from edge.config.models import StationConfig
from edge.feed import Change, Feed, OrderStageChanged, RecordQueued
from edge.ingest.pipeline import Incoming, Pipeline
from edge.orders.apply import Applier, Plan
from edge.orders.events import Rejected, RejectKind
from edge.orders.records import queue_call
from edge.store import Store, Tx, calls

ROOT = "kitchen/s"
STATIONS = (StationConfig(id="grill", printer="hot", categories=["grill"]),)
CREATED = {"fulfillment": {"type": "delivery", "courier": "restaurant"},
           "items": [{"line_id": "a", "name": "Adana", "qty": 1, "category": "grill"}]}


def message(order_id: str, kind: str, data: dict[str, Any], n: str = "") -> Incoming:
    body = {"event_id": f"{order_id}-{kind}{n}", "type": kind, "order_id": order_id,
            "occurred_at": "2026-11-21T18:02:11Z", "source": {"channel": "marketplace"},
            "data": data}
    return Incoming(f"{ROOT}/orders/{order_id}/events", json.dumps(body).encode())


def tell_the_marketplace(tx: Tx, change: OrderStageChanged) -> None:
    """What the marketplace connector will do: an accept call for an accepted order."""
    if change.stage == "accepted":
        queue_call(tx, "yemek", order_id=change.order_id, method="PUT",
                   path=f"/orders/accept/{change.order_id}",
                   body={"preparing_time": change.prep_minutes}, now=datetime.now(UTC),
                   call_key=f"accept:{change.order_id}")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = Store(tmp_path / "k.db", Feed())
    s.react(OrderStageChanged, tell_the_marketplace)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


async def apply(store: Store, pipeline: Pipeline, *batch: Incoming) -> Any:
    return await store.transact(lambda tx: pipeline.apply_batch(tx, list(batch),
                                                                datetime.now(UTC)))


async def rows(store: Store) -> list[tuple[str, str | None, str | None]]:
    return [(c.path, c.order_id, c.body) for c in
            await store.read(lambda conn: calls.listing(conn))]


async def test_a_stage_change_and_its_call_commit_together(store: Store) -> None:
    published: list[Change] = []
    store.feed.subscribe(Change, published.append)
    pipeline = Pipeline(ROOT, Applier(Plan(STATIONS, "grill")))
    await apply(store, pipeline, message("m1", "order.created", CREATED),
                message("m1", "order.accepted", {"prep_minutes": 25}))
    assert await rows(store) == [("/orders/accept/m1", "m1", '{"preparing_time":25}')]
    stage = [c for c in published if isinstance(c, OrderStageChanged)]
    assert stage == [OrderStageChanged("m1", "marketplace", "accepted", "received",
                                       prep_minutes=25)]
    # The reaction's own change reached the feed after COMMIT too: the call sender wakes.
    assert RecordQueued("yemek", "m1") in published
    # The same change applied again (a repeat) queues nothing more.
    await apply(store, pipeline, message("m1", "order.accepted", {"prep_minutes": 25}, "b"))
    assert len(await rows(store)) == 1


async def test_no_call_for_a_change_that_did_not_commit(store: Store) -> None:
    pipeline = Pipeline(ROOT, Applier(Plan(STATIONS, "grill")))
    await apply(store, pipeline, message("m2", "order.created", CREATED))

    # Refused after the handler ran: the savepoint is rolled back, with its stage change.
    class RefusesLate(Applier):
        def apply(self, tx: Tx, event: Any, now: datetime) -> Any:
            super().apply(tx, event, now)
            raise Rejected("refused after writing", RejectKind.TRANSITION)

    refusing = Pipeline(ROOT, RefusesLate(Plan(STATIONS, "grill")))
    await apply(store, refusing, message("m2", "order.accepted", {"prep_minutes": 5}))
    assert await rows(store) == []

    # The whole transaction fails after the change: nothing of it, call included, is kept.
    def fails(tx: Tx) -> None:
        pipeline.apply_batch(tx, [message("m2", "order.accepted", {"prep_minutes": 5}, "c")],
                             datetime.now(UTC))
        raise OSError("disk full")

    with pytest.raises(OSError):
        await store.transact(fails)
    assert await rows(store) == []
    stage = await store.read(lambda c: c.execute(
        "SELECT kitchen_stage FROM orders WHERE order_id='m2'").fetchone()[0])
    assert stage == "received"


async def test_a_failing_reaction_dead_letters_its_event_with_the_change(store: Store) -> None:
    def broken(tx: Tx, change: OrderStageChanged) -> None:
        raise RuntimeError("a reaction's bug")

    store.react(OrderStageChanged, broken)
    pipeline = Pipeline(ROOT, Applier(Plan(STATIONS, "grill")))
    await apply(store, pipeline, message("m3", "order.created", CREATED))
    result = await apply(store, pipeline, message("m3", "order.accepted", {}),
                         message("m4", "order.created", CREATED))
    # The event whose change the reaction failed on is refused, alone: the rest applies.
    assert [(o.result, o.order_id) for o in result.outcomes] == [("dead", "m3"),
                                                                  ("applied", "m4")]
    assert "a reaction's bug" in (result.outcomes[0].reason or "")
    assert await rows(store) == []
    assert await store.read(lambda c: c.execute(
        "SELECT kitchen_stage FROM orders WHERE order_id='m3'").fetchone()[0]) == "received"


async def test_a_reaction_outside_any_savepoint_fails_the_whole_transaction(
        store: Store) -> None:
    seen: list[Change] = []
    store.feed.subscribe(Change, seen.append)

    def broken(tx: Tx, change: RecordQueued) -> None:
        raise RuntimeError("a reaction's bug")

    store.react(RecordQueued, broken)

    def unit(tx: Tx) -> None:
        queue_call(tx, "yemek", order_id="m5", method="PUT", path="/orders/success/m5",
                   body=None, now=datetime.now(UTC))

    with pytest.raises(RuntimeError, match="reaction"):
        await store.transact(unit)
    assert await rows(store) == [] and seen == []
