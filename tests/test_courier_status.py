"""Seed 004's additions to the domain, through the real ingest pipeline on a real SQLite
file: `fulfillment.service` on tickets and the timeline, and `order.courier_status`, the
courier's progress before pick-up (forward only, a timeline step each, no ticket)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.orders import printjobs
from edge.orders.apply import Applier, Plan
from edge.orders.timeline import build_timeline
from edge.store import Tx
from edge.store.db import connect_sync
from tests.test_status_machine import KEBAP, ROOT, STATIONS, Till


@pytest.fixture
def till(tmp_path: Path) -> Iterator[Till]:
    from edge.ingest.pipeline import Pipeline

    conn = connect_sync(tmp_path / "kitchen-edge.db")
    try:
        yield Till(conn, Pipeline(ROOT, Applier(Plan(STATIONS, "grill"))))
    finally:
        conn.close()


def delivery(t: Till, order_id: str, **fulfillment: Any) -> None:
    t.ok(order_id, "order.created", {"fulfillment": {"type": "delivery", **fulfillment},
                                     "items": [KEBAP]})


def service_line(t: Till) -> str:
    t.conn.execute("BEGIN IMMEDIATE")
    claimed = printjobs.claim(Tx(t.conn), ["grill"], "hot", {}, t.now, 0.0)
    t.conn.execute("ROLLBACK")
    assert claimed is not None
    return claimed.ticket.service


@pytest.mark.parametrize(("fulfillment", "line"), [
    ({"type": "delivery", "courier": "platform", "service": "platform_delivery"},
     "PLATFORM DELIVERY"),
    ({"type": "delivery", "courier": "platform", "service": "fleet_delivery"},
     "FLEET DELIVERY"),
    ({"type": "delivery", "courier": "platform"}, "DELIVERY (platform courier)"),
    ({"type": "pickup"}, "PICKUP"),
])
def test_the_ticket_says_who_brings_it(till: Till, fulfillment: dict[str, Any],
                                       line: str) -> None:
    till.ok("o-1", "order.created", {"fulfillment": fulfillment, "items": [KEBAP]})
    assert service_line(till) == line
    first = build_timeline(till.conn, "o-1")
    assert first is not None
    step = first["steps"][0]
    assert step.get("service") == fulfillment.get("service")


def test_a_service_is_only_for_a_delivery(till: Till) -> None:
    outcome = till.send("o-1", "order.created", {
        "fulfillment": {"type": "pickup", "service": "fleet_delivery"}, "items": [KEBAP]})
    assert outcome.result == "dead"
    assert outcome.reason == ("schema: data.fulfillment.service: 'fleet_delivery' is only "
                              "for a delivery")
    outcome = till.send("o-2", "order.created", {
        "fulfillment": {"type": "delivery", "service": "drone"}, "items": [KEBAP]})
    assert outcome.result == "dead" and "data.fulfillment.service" in (outcome.reason or "")


def test_the_courier_goes_forward_a_step_each(till: Till) -> None:
    delivery(till, "o-1", courier="platform", service="platform_delivery")
    till.print_queued()
    before = till.order("o-1")
    till.ok("o-1", "order.courier_status", {"status": "dasher_confirmed"})
    till.ok("o-1", "order.courier_status", {"status": "dasher_confirmed"}, effect="repeat")
    till.ok("o-1", "order.courier_status", {"status": "arrived_at_store"})   # a skip
    back = till.send("o-1", "order.courier_status", {"status": "arriving_at_store"})
    assert back.result == "dead"
    assert back.reason == ('Cannot transition from "arrived_at_store" to "arriving_at_store": '
                           "the courier does not go back")
    after = till.order("o-1")
    # No move of the order's status or stage; only its courier.
    assert (after["status"], after["kitchen_stage"]) == (before["status"],
                                                         before["kitchen_stage"])
    assert after["courier_status"] == "arrived_at_store"
    till.ok("o-1", "order.accepted", {"prep_minutes": 10})
    till.ok("o-1", "order.out_for_delivery")
    late = till.send("o-1", "order.courier_status", {"status": "arrived_at_store"})
    assert late.result == "repeat"          # the same status as the last one taken
    late = till.send("o-1", "order.courier_status", {"status": "dasher_confirmed"})
    assert late.result == "dead" and "already picked the order up" in (late.reason or "")
    till.ok("o-1", "order.completed")

    timeline = build_timeline(till.conn, "o-1")
    assert timeline is not None
    steps = [(s["key"], s["label"]) for s in timeline["steps"]][5:]
    assert steps == [("courier_assigned", "Courier assigned"),
                     ("courier_arrived", "Courier at the restaurant"),
                     ("order_confirmed", "Order confirmed"),
                     ("out_for_delivery", "Out for delivery"),
                     ("order_completed", "Order completed")]
    assert [t for t in till.jobs("o-1")] == ["o-1/new/grill"]   # no ticket for a courier
    assert "Courier dasher_confirmed" in till.activities("o-1")


def test_no_courier_for_a_pickup_or_a_called_off_order(till: Till) -> None:
    till.ok("o-1", "order.created", {"fulfillment": {"type": "pickup"}, "items": [KEBAP]})
    refused = till.send("o-1", "order.courier_status", {"status": "dasher_confirmed"})
    assert refused.result == "dead" and "a pickup order has no courier" in (refused.reason or "")
    delivery(till, "o-2")
    till.ok("o-2", "order.cancelled", {"reason_code": "customer"})
    refused = till.send("o-2", "order.courier_status", {"status": "dasher_confirmed"})
    assert refused.result == "dead" and refused.reason == (
        'Cannot transition from "void" to "dasher_confirmed"')
    bad = till.send("o-2", "order.courier_status", {"status": "dropoff"})
    assert bad.result == "dead" and "data.status" in (bad.reason or "")


def test_the_kitchen_display_says_who_brings_it_too() -> None:
    from edge.web.cards import where_of

    assert where_of("delivery", None, "platform_delivery") == "Platform delivery"
    assert where_of("delivery", None, "fleet_delivery") == "Fleet delivery"
    assert where_of("delivery", None) == "Delivery"
    assert where_of("pickup", None) == "Pickup"
