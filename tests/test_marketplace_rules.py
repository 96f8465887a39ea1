"""The marketplace connector's rules as pure functions: which kitchen events a listed order
becomes (given what the kitchen has of it and the store's state), which calls each stage
change makes (given where the marketplace has the order), and which reason id goes back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from edge.connectors.marketplace.fake import build_order
from edge.connectors.marketplace.importer import Facts, Settings, plan_events, scrub
from edge.connectors.marketplace.mapping import Marketplace
from edge.connectors.marketplace.replies import Call, calls_for, reason_id
from edge.connectors.marketplace.schema import parse_order
from edge.feed import OrderStageChanged
from edge.orders.opening import Opening, StoreState
from edge.store.marketplace import MarketOrder

NOW = datetime(2026, 11, 21, 18, 0, tzinfo=UTC)
KEY = "8c2d-key"
MARKET = Marketplace("yemek", ZoneInfo("Europe/Istanbul"))


def settings(auto_accept: bool = False, lead: int | None = None) -> Settings:
    return Settings(MARKET, "marketplace:yemek", auto_accept, 25, lead)


def facts(*, known: bool = False, moves: frozenset[int] = frozenset(),
          kitchen_status: str | None = None, store: StoreState | None = None) -> Facts:
    return Facts(None, known, moves, kitchen_status, False, store or StoreState())


def order(status: int = 1, **options: Any) -> Any:
    return parse_order(build_order(1031, payment_key=KEY, status_id=status, **options))


def kinds(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["type"], e["event_id"].removeprefix(f"mkt:yemek:{KEY}:")) for e in events]


def test_a_new_order_waits_for_acceptance_or_is_accepted_at_once() -> None:
    waiting = plan_events(order(), settings(), facts(), NOW)
    assert kinds(waiting) == [("order.created", "1")]
    assert waiting[0]["data"]["requires_acceptance"] is True
    auto = plan_events(order(), settings(auto_accept=True), facts(), NOW)
    assert kinds(auto) == [("order.created", "1"), ("order.accepted", "1:auto-accept")]
    assert auto[0]["data"]["requires_acceptance"] is False
    assert auto[1]["data"] == {"prep_minutes": 25}
    assert auto[1]["order_id"] == "yemek-1031" and auto[1]["source"]["device"] == "yemek"
    busy = StoreState(Opening.BUSY, busy_minutes=15)
    assert plan_events(order(), settings(auto_accept=True), facts(store=busy), NOW)[1][
        "data"] == {"prep_minutes": 40}
    # Seen again (the kitchen has it): the same event, nothing added.
    assert kinds(plan_events(order(), settings(auto_accept=True), facts(known=True),
                             NOW)) == [("order.created", "1")]


def test_a_paused_store_refuses_a_new_order_until_the_pause_ends() -> None:
    paused = StoreState(Opening.PAUSED, until="2026-11-21T19:00:00Z")
    refused = plan_events(order(), settings(auto_accept=True), facts(store=paused), NOW)
    assert kinds(refused) == [("order.created", "1"), ("order.rejected", "1:paused")]
    assert refused[1]["data"] == {"reason": "Store is currently closed",
                                  "reason_code": "store_paused"}
    later = NOW + timedelta(hours=2)
    assert kinds(plan_events(order(), settings(auto_accept=True), facts(store=paused),
                             later))[1] == ("order.accepted", "1:auto-accept")


def test_a_scheduled_order_carries_the_marketplaces_lead() -> None:
    events = plan_events(order(scheduled_date="2026-11-21 21:30:00"), settings(lead=30),
                         facts(), NOW)
    assert events[0]["data"]["scheduled_for"] == "2026-11-21T18:30:00Z"
    assert events[0]["data"]["lead_minutes"] == 30
    assert "lead_minutes" not in plan_events(order(), settings(lead=30), facts(), NOW)[0][
        "data"]


@pytest.mark.parametrize(("kitchen_status", "expected"), [
    ("sent_to_kitchen", [("order.completed", "5")]),
    ("partially_sent", [("order.completed", "5")]),
    ("created", [("order.cancelled", "5")]),
    ("held", [("order.cancelled", "5")]),
    ("void", []),
    ("cancelled", []),
])
def test_delivered_completes_what_reached_the_kitchen_and_calls_off_what_did_not(
        kitchen_status: str, expected: list[tuple[str, str]]) -> None:
    events = plan_events(order(5, courier_type="platform"), settings(),
                         facts(known=True, kitchen_status=kitchen_status), NOW)
    assert kinds(events) == expected
    if expected and expected[0][0] == "order.cancelled":
        assert events[0]["data"]["reason_code"] == "marketplace_delivered"


def test_the_kitchens_own_moves_come_back_as_nothing() -> None:
    assert plan_events(order(2), settings(), facts(known=True, moves=frozenset({2})),
                       NOW) == []
    assert kinds(plan_events(order(2), settings(), facts(known=True), NOW)) == [
        ("order.accepted", "2")]


def row(status: int | None = 1, courier: str = "restaurant") -> MarketOrder:
    return MarketOrder("yemek", KEY, 1031, "yemek-1031", status, status, None, courier, "{}",
                       None, "t", "t")


def stage(target: str, previous: str = "received", **kw: Any) -> OrderStageChanged:
    return OrderStageChanged("yemek-1031", "marketplace", target, previous, **kw)


def calls(change: OrderStageChanged, at: MarketOrder, busy: int = 0) -> list[Call]:
    return calls_for(change, at, prep_minutes=25, busy_minutes=busy,
                     cancel_reasons={"out_of_stock": 1, "gone": 99},
                     listed_reasons={i: str(i) for i in range(1, 9)})


def test_the_calls_each_stage_makes() -> None:
    assert calls(stage("accepted", prep_minutes=35), row()) == [
        Call("accept", {"preparing_time": 35})]
    assert calls(stage("accepted"), row(), busy=10) == [
        Call("accept", {"preparing_time": 35})]
    assert calls(stage("accepted", prep_minutes=0), row()) == [
        Call("accept", {"preparing_time": 1})]
    assert calls(stage("accepted", prep_minutes=600), row()) == [
        Call("accept", {"preparing_time": 240})]
    # The marketplace has it accepted already (its tablet, or its own status 2).
    assert calls(stage("accepted"), row(2)) == []
    assert calls(stage("ready", "accepted"), row(2)) == []
    assert calls(stage("out_for_delivery", "ready"), row(2)) == [Call("ontheway")]
    assert calls(stage("completed", "out_for_delivery"), row(16)) == [Call("complete")]
    # Completed without going out first: the marketplace needs the step in between.
    assert calls(stage("completed", "ready"), row(2)) == [Call("ontheway"), Call("complete")]
    for target in ("out_for_delivery", "completed"):
        assert calls(stage(target, "accepted"), row(2, courier="platform")) == []
    assert calls(stage("cancelled", "accepted", reason_code="out_of_stock"), row(2)) == [
        Call("cancel", {"reason_id": 1})]
    assert calls(stage("rejected", reason_code="store_paused"), row()) == [
        Call("cancel", {"reason_id": 3})]
    assert calls(stage("cancelled", "accepted", reason_code="marketplace"), row(6)) == []
    assert calls(stage("completed", "accepted"), row(5)) == []


def test_reason_ids_fall_back_to_other() -> None:
    listed = {i: str(i) for i in range(1, 9)}
    assert reason_id("out_of_stock", {"out_of_stock": 1}, listed) == (1, True)
    assert reason_id("no_driver", {"out_of_stock": 1}, listed) == (8, False)
    assert reason_id(None, {}, listed) == (8, False)
    # Mapped to an id the marketplace does not list: Other, too.
    assert reason_id("gone", {"gone": 99}, listed) == (8, False)
    assert reason_id("gone", {"gone": 99}, None) == (99, True)


def test_what_is_kept_of_an_order_has_no_way_to_reach_the_customer() -> None:
    kept = scrub(build_order(1031, customer={"name": "Ayşe Kaya", "phone": "+90 532",
                                             "contact": {"Email": "a@b.c", "gsm": "0532"}}))
    assert kept["customer"] == {"name": "Ayşe Kaya", "phone": "[removed]",
                                "contact": {"Email": "[removed]", "gsm": "[removed]"}}
