"""The change feed: changes reach subscribers only after COMMIT, never from a rolled-back
transaction or savepoint; subscribers are typed and one failing does not starve the others.
On a real SQLite file, through the real pipeline."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from edge.config.models import StationConfig
from edge.feed import (
    Change,
    DeadLettered,
    EventApplied,
    Feed,
    JobCreated,
    JobQueued,
    OrderStatusChanged,
    RecordQueued,
    TimelineChanged,
)
from edge.ingest.pipeline import Incoming, Pipeline
from edge.orders.apply import Applier, Plan
from edge.orders.events import Rejected, RejectKind
from edge.store import Store, Tx

ROOT = "kitchen/s"
STATIONS = (StationConfig(id="grill", printer="hot", categories=["grill"]),)


def message(order_id: str, kind: str, data: dict[str, Any], n: str = "") -> Incoming:
    body = {"event_id": f"{order_id}-{kind}{n}", "type": kind, "order_id": order_id,
            "occurred_at": "2026-11-21T18:02:11Z", "source": {"channel": "pos"}, "data": data}
    return Incoming(f"{ROOT}/orders/{order_id}/events", json.dumps(body).encode())


CREATED = {"fulfillment": {"type": "pickup"},
           "items": [{"line_id": "a", "name": "Adana", "qty": 1, "category": "grill"}]}


async def test_changes_are_published_after_commit_and_never_on_rollback(store: Store) -> None:
    seen: list[Change] = []
    store.feed.subscribe(Change, seen.append)

    def unit(tx: Tx) -> None:
        tx.emit(RecordQueued("upstream", "o1"))
        assert seen == []                 # not while the transaction is open

    await store.transact(unit)
    assert seen == [RecordQueued("upstream", "o1")]

    def fails(tx: Tx) -> None:
        tx.emit(RecordQueued("upstream", "o2"))
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        await store.transact(fails)
    assert seen == [RecordQueued("upstream", "o1")]


async def test_a_rolled_back_savepoint_drops_its_changes(store: Store) -> None:
    seen: list[Change] = []
    store.feed.subscribe(Change, seen.append)

    def unit(tx: Tx) -> None:
        tx.emit(RecordQueued("upstream", "kept"))
        with pytest.raises(ValueError), tx.savepoint("message"):
            tx.emit(RecordQueued("upstream", "dropped"))
            raise ValueError("refused")
        tx.emit(RecordQueued("upstream", "after"))

    await store.transact(unit)
    assert [c.order_id for c in seen if isinstance(c, RecordQueued)] == ["kept", "after"]


async def test_a_refused_event_publishes_its_dead_letter_only(store: Store) -> None:
    pipeline = Pipeline(ROOT, Applier(Plan(STATIONS, "grill")))
    seen: list[Change] = []
    store.feed.subscribe(Change, seen.append)
    now = datetime.now(UTC)
    await store.transact(lambda tx: pipeline.apply_batch(
        tx, [message("o1", "order.created", CREATED)], now))
    kinds = [type(c).__name__ for c in seen]
    assert {"EventAccepted", "EventApplied", "JobCreated", "JobQueued", "OrderStatusChanged",
            "RecordQueued", "TimelineChanged"} <= set(kinds)
    assert JobQueued("o1/new/grill", "o1", "grill") in seen
    assert JobCreated("o1/new/grill", "o1", "grill", "NEW", "queued") in seen
    assert OrderStatusChanged("o1", "created", None) in seen
    timeline = next(c for c in seen if isinstance(c, TimelineChanged))
    assert [s["key"] for s in timeline.timeline["steps"]][:3] == [
        "order_accepted", "routed_to_core", "kitchen_ticket_created"]

    # Items added with a line id the order already has: refused after the handler began.
    seen.clear()
    await store.transact(lambda tx: pipeline.apply_batch(tx, [message(
        "o1", "order.items_added", {"batch_id": "b1", "items": [
            {"line_id": "a", "name": "Again", "qty": 1, "category": "grill"}]})], now))
    assert [type(c).__name__ for c in seen] == ["EventAccepted", "DeadLettered"]
    dead = seen[-1]
    assert isinstance(dead, DeadLettered) and dead.kind == "other"
    assert "line_id 'a' is already on the order" in dead.reason


async def test_subscribers_are_typed_and_isolated() -> None:
    feed = Feed()
    applied: list[EventApplied] = []
    everything: list[Change] = []

    def broken(_: Change) -> None:
        raise RuntimeError("a subscriber's bug")

    feed.subscribe(Change, broken)
    feed.subscribe(EventApplied, applied.append)
    unsubscribe = feed.subscribe(Change, everything.append)
    feed.publish([EventApplied("e1", "o1", "order.created", "applied"),
                  RecordQueued("upstream", "o1")])
    assert applied == [EventApplied("e1", "o1", "order.created", "applied")]
    assert len(everything) == 2
    unsubscribe()
    feed.publish([RecordQueued("upstream", "o2")])
    assert len(everything) == 2


async def test_changes_made_before_a_refusal_are_dropped_with_its_writes(store: Store) -> None:
    class RefusesLate(Applier):
        """Applies the event in full, then refuses it, as a transition check at the end of
        a handler does."""

        def apply(self, tx: Tx, event: Any, now: datetime) -> Any:
            super().apply(tx, event, now)
            raise Rejected("refused after writing", RejectKind.TRANSITION)

    pipeline = Pipeline(ROOT, RefusesLate(Plan(STATIONS, "grill")))
    seen: list[Change] = []
    store.feed.subscribe(Change, seen.append)
    await store.transact(lambda tx: pipeline.apply_batch(
        tx, [message("o9", "order.created", CREATED)], datetime.now(UTC)))
    assert [type(c).__name__ for c in seen] == ["EventAccepted", "DeadLettered"]
    assert await store.read(lambda c: c.execute(
        "SELECT COUNT(*) FROM print_jobs").fetchone()[0]) == 0
