"""Seed 001 orders to kitchen events: every field, the status table, time zones (DST edges in
an Istanbul-like zone and New York), bad shapes named by field, and no contact data out."""

from __future__ import annotations

import copy
import json
import re
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from edge.connectors.marketplace.fake import build_order
from edge.connectors.marketplace.mapping import (
    Marketplace,
    cancel_reason_id,
    customer_name,
    event_id,
    events_for,
    kitchen_order_id,
    scheduled_for,
)
from edge.connectors.marketplace.schema import BadOrder, MarketplaceOrder, parse_order
from edge.ingest.parse import parse_event
from edge.orders.events import EVENT_ID_PATTERN

KEY = "8c2d6f1e-5b7a-4c1d-9e0f-2a3b4c5d6e7f"
PHONE = "+90 532 765 43 21"
ADDRESS = "Moda Caddesi No:12 D:3 Kadıköy"
SEEN = datetime(2026, 1, 15, 14, 2, 11, tzinfo=UTC)
ISTANBUL = Marketplace("yemek", ZoneInfo("Europe/Istanbul"), "TRY")
ROOT = "kitchen/ist-kadikoy-01"


def raw_order(**changes: Any) -> dict[str, Any]:
    order: dict[str, Any] = {
        "id": 1031, "payment_key": KEY, "status_id": 1, "courier_type": "restaurant",
        "courier_fee": 0, "payment_method": "CASH", "scheduled_date": "", "note": "no bell",
        "customer": {"name": "Ayşe Kaya", "phone": PHONE, "address": ADDRESS},
        "products": [
            {"id": 55, "name": "Adana dürüm", "quantity": 2, "price": 18000,
             "category": "grill", "options": ["hot", "no onion"], "note": None},
            {"id": 70, "name": "Ayran", "quantity": 1, "price": 4000, "category": "drinks",
             "options": [{"name": "large", "price": 500}], "note": "cold please"},
        ],
        "total": 40000,
        "restaurant_id": 9,            # a field we do not use
    }
    order.update(changes)
    return order


def order(**changes: Any) -> MarketplaceOrder:
    return parse_order(raw_order(**changes))


def created_data(**changes: Any) -> dict[str, Any]:
    (event,) = events_for(order(**changes), ISTANBUL, observed_at=SEEN, known=False)
    assert event["type"] == "order.created"
    data: dict[str, Any] = event["data"]
    return data


def assert_valid(event: dict[str, Any]) -> None:
    """The daemon's own parser takes it: the mapping never makes a dead letter."""
    topic = f"{ROOT}/orders/{event['order_id']}/events"
    parsed = parse_event(topic, json.dumps(event).encode(), ROOT)
    assert parsed.event_id == event["event_id"]


# -- order.created, every field ----------------------------------------------------------


def test_created_event_carries_every_field() -> None:
    (event,) = events_for(order(), ISTANBUL, observed_at=SEEN, known=False)
    assert event == {
        "event_id": f"mkt:yemek:{KEY}:1",
        "type": "order.created",
        "order_id": "yemek-1031",
        "occurred_at": "2026-01-15T14:02:11Z",
        "source": {"channel": "marketplace", "device": "yemek"},
        "data": {
            "display_id": "1031",
            "fulfillment": {"type": "delivery", "courier": "restaurant"},
            "customer": {"name": "Ayşe K."},
            "note": "CASH: collect 400.00 TRY; no bell",
            "items": [
                {"line_id": "1", "name": "Adana dürüm", "qty": 2, "category": "grill",
                 "modifiers": ["hot", "no onion"], "unit_price": 18000},
                {"line_id": "2", "name": "Ayran", "qty": 1, "category": "drinks",
                 "modifiers": ["large"], "note": "cold please", "unit_price": 4000},
            ],
        },
    }
    assert_valid(event)


def test_lenient_where_the_seed_is_vague() -> None:
    data = created_data(
        courier_type=" Platform ", payment_method=None, note="   ", customer=None,
        scheduled_date=None, total=None, courier_fee=None,
        products=[{"name": " Lahmacun ", "quantity": 3, "options": None, "category": None}],
    )
    assert data == {
        "display_id": "1031",
        "fulfillment": {"type": "delivery", "courier": "platform"},
        "items": [{"line_id": "1", "name": "Lahmacun", "qty": 3}],
    }
    raw = raw_order()
    del raw["scheduled_date"], raw["note"], raw["customer"], raw["total"]
    assert parse_order(raw).scheduled_date is None
    # Fields we never use cannot lose the order, whatever their shape.
    odd = created_data(courier_fee="free", customer={"name": "Ayşe Kaya", "phone": 905327654321,
                                                     "address": ["Moda", 12]},
                       products=[{"id": {"sku": 1}, "name": "Pide", "quantity": 1}],
                       preparing_time="30")
    assert odd["customer"] == {"name": "Ayşe K."}
    assert "905327654321" not in json.dumps(odd)
    assert order(status_id=2, preparing_time="30").preparing_time is None
    assert order(status_id=2, preparing_time=-5).preparing_time is None


def test_same_status_gives_the_same_event_id_and_others_differ() -> None:
    first = events_for(order(), ISTANBUL, observed_at=SEEN, known=False)
    later = events_for(order(note="changed"), ISTANBUL, observed_at=datetime.now(UTC),
                       known=True)
    assert first[0]["event_id"] == later[0]["event_id"] == event_id("yemek", KEY, 1)
    ids = {event_id(m, k, s) for m in ("yemek", "getir") for k in (KEY, KEY[:-1] + "0")
           for s in (1, 2, 16, 5, 6)}
    assert len(ids) == 20
    long_id = event_id("m" * 64, "k" * 64, 16)
    assert len(long_id) <= 128 and long_id == event_id("m" * 64, "k" * 64, 16)
    assert long_id != event_id("m" * 64, "k" * 63 + "j", 16)
    assert all(re.match(EVENT_ID_PATTERN, i) for i in [*ids, long_id])
    assert kitchen_order_id("yemek", 1031) == "yemek-1031"


# -- the status table ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "known", "moves", "expected"),
    [
        (1, False, set(), [("order.created", 1)]),
        (1, True, set(), [("order.created", 1)]),
        (2, True, {2}, []),                                          # the kitchen's own accept
        (2, True, set(), [("order.accepted", 2)]),                   # accepted on their panel
        (2, False, set(), [("order.created", 1), ("order.accepted", 2)]),
        (16, True, {2, 16}, []),
        (16, True, {2}, [("order.out_for_delivery", 16)]),
        (16, True, set(), [("order.accepted", 2), ("order.out_for_delivery", 16)]),
        (16, False, set(), []),                                      # the food already left
        (5, True, {2, 16, 5}, []),
        (5, True, {2}, [("order.completed", 5)]),                    # platform courier delivered
        (5, False, set(), []),
        (6, True, {6}, []),                                          # the kitchen cancelled
        (6, True, {2}, [("order.cancelled", 6)]),                    # the marketplace cancelled
        (6, False, set(), []),
    ],
)
def test_status_table(status: int, known: bool, moves: set[int],
                      expected: list[tuple[str, int]]) -> None:
    events = events_for(order(status_id=status), ISTANBUL, observed_at=SEEN, known=known,
                        kitchen_moves=frozenset(moves))
    assert [(e["type"], e["event_id"]) for e in events] == [
        (kind, f"mkt:yemek:{KEY}:{s}") for kind, s in expected
    ]
    for event in events:
        assert event["order_id"] == "yemek-1031"
        assert_valid(event)
    by_type = {e["type"]: e["data"] for e in events}
    if "order.cancelled" in by_type:
        assert by_type["order.cancelled"] == {"reason_code": "marketplace"}
    for kind in ("order.completed", "order.out_for_delivery"):
        if kind in by_type:
            assert by_type[kind] == {}


def test_accepted_elsewhere_carries_the_preparing_time_when_the_order_has_one() -> None:
    (accepted,) = events_for(order(status_id=2, preparing_time=35), ISTANBUL,
                             observed_at=SEEN, known=True)
    assert accepted["data"] == {"prep_minutes": 35}
    (bare,) = events_for(order(status_id=2), ISTANBUL, observed_at=SEEN, known=True)
    assert bare["data"] == {}


def test_observed_at_must_be_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        events_for(order(), ISTANBUL, observed_at=datetime(2026, 1, 15, 14, 0), known=False)


# -- scheduled_date: local time in an IANA zone ------------------------------------------


@pytest.mark.parametrize(
    ("zone", "local", "utc"),
    [
        ("Europe/Istanbul", "2026-01-15 18:30:00", "2026-01-15T15:30:00Z"),
        ("Europe/Istanbul", "2026-07-01 20:00:00", "2026-07-01T17:00:00Z"),    # +03 all year now
        ("Europe/Istanbul", "2026-01-15 18:30", "2026-01-15T15:30:00Z"),       # no seconds
        ("Europe/Istanbul", "2026-01-15T18:30:00", "2026-01-15T15:30:00Z"),
        # Istanbul still had DST in 2015: 03:30 was skipped on 29 March and lived twice on
        # 8 November; the earlier reading is taken (the food is early, never late).
        ("Europe/Istanbul", "2015-03-29 02:59:00", "2015-03-29T00:59:00Z"),
        ("Europe/Istanbul", "2015-03-29 03:30:00", "2015-03-29T00:30:00Z"),
        ("Europe/Istanbul", "2015-03-29 04:30:00", "2015-03-29T01:30:00Z"),
        ("Europe/Istanbul", "2015-11-08 03:30:00", "2015-11-08T00:30:00Z"),
        # Athens keeps the same rules today: EET/EEST.
        ("Europe/Athens", "2026-03-29 03:30:00", "2026-03-29T00:30:00Z"),
        ("Europe/Athens", "2026-10-25 03:30:00", "2026-10-25T00:30:00Z"),
        ("Europe/Athens", "2026-10-25 04:30:00", "2026-10-25T02:30:00Z"),
        ("America/New_York", "2026-01-15 18:30:00", "2026-01-15T23:30:00Z"),
        ("America/New_York", "2026-07-01 20:00:00", "2026-07-02T00:00:00Z"),   # next UTC day
        ("America/New_York", "2026-03-08 01:59:00", "2026-03-08T06:59:00Z"),
        ("America/New_York", "2026-03-08 02:30:00", "2026-03-08T06:30:00Z"),   # skipped hour
        ("America/New_York", "2026-03-08 03:30:00", "2026-03-08T07:30:00Z"),
        ("America/New_York", "2026-11-01 01:30:00", "2026-11-01T05:30:00Z"),   # lived twice
        ("America/New_York", "2026-11-01 02:30:00", "2026-11-01T07:30:00Z"),
        # An explicit offset is honoured whatever the zone.
        ("America/New_York", "2026-01-15T18:30:00+03:00", "2026-01-15T15:30:00Z"),
    ],
)
def test_scheduled_date_is_local_time_in_the_configured_zone(zone: str, local: str,
                                                             utc: str) -> None:
    market = Marketplace("yemek", ZoneInfo(zone))
    (event,) = events_for(order(scheduled_date=local), market, observed_at=SEEN, known=False)
    assert event["data"]["scheduled_for"] == utc
    assert_valid(event)


def test_empty_scheduled_date_is_immediate() -> None:
    assert "scheduled_for" not in created_data(scheduled_date="")
    assert scheduled_for(None, ZoneInfo("UTC")) is None


# -- payment on the ticket ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "note"),
    [
        ({}, "CASH: collect 400.00 TRY; no bell"),
        ({"payment_method": "nakit", "note": None}, "CASH: collect 400.00 TRY"),
        ({"total": 36050}, "CASH: collect 360.50 TRY; no bell"),
        ({"total": None}, "CASH: collect 400.00 TRY; no bell"),     # from the products
        ({"total": None, "products": [{"name": "Pide", "quantity": 1}]},
         "CASH: collect amount unknown; no bell"),
        ({"payment_method": "CREDIT_CARD"}, "no bell"),             # already paid (seed)
        ({"payment_method": "Debit Card", "note": ""}, None),
        ({"payment_method": "CASH", "courier_type": "platform"}, "no bell"),
        ({"payment_method": None}, "PAYMENT UNKNOWN: check before delivery, total 400.00 TRY; "
                                   "no bell"),
        ({"payment_method": "VOUCHER"}, "PAYMENT VOUCHER: check before delivery, total "
                                        "400.00 TRY; no bell"),
    ],
)
def test_payment_line_only_where_the_kitchen_must_act(changes: dict[str, Any],
                                                      note: str | None) -> None:
    assert created_data(**changes).get("note") == note


def test_cash_line_without_a_currency() -> None:
    market = Marketplace("yemek", ZoneInfo("Europe/Istanbul"))
    (event,) = events_for(order(), market, observed_at=SEEN, known=False)
    assert event["data"]["note"] == "CASH: collect 400.00; no bell"


# -- the customer's privacy ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "shown"),
    [("Ayşe Kaya", "Ayşe K."), ("Ayşe Nur  Kaya", "Ayşe K."), ("Ayşe K.", "Ayşe K."),
     ("Ayşe", "Ayşe"), ("  ", None), (None, None), ("0532 765 43 21", None),
     ("ayse@example.com", None), ("Ayşe 2", None)],
)
def test_customer_name_is_first_name_and_last_initial(name: str | None,
                                                      shown: str | None) -> None:
    assert customer_name(name) == shown
    data = created_data(customer={"name": name, "phone": PHONE})
    assert data.get("customer") == ({"name": shown} if shown else None)


def test_no_phone_or_address_in_any_event() -> None:
    leaky = raw_order(
        note=f"Call me at {PHONE} or 05327654321, I live at {ADDRESS.upper()}",
        customer={"name": "Ayşe Kaya", "phone": PHONE,
                  "address": {"line": ADDRESS, "district": "Kadıköy", "floor": "3"}},
        products=[
            {"name": "Adana dürüm", "quantity": 1, "note": "mail me: ayse@example.com",
             "options": [f"ring {PHONE}"]},
            {"name": "Ayran", "quantity": 1, "note": f"leave at {ADDRESS}"},
        ],
    )
    texts: list[str] = []
    for status in (1, 2, 16, 5, 6):
        for known in (False, True):
            events = events_for(parse_order({**leaky, "status_id": status}), ISTANBUL,
                                observed_at=SEEN, known=known)
            texts.extend(json.dumps(e, ensure_ascii=False) for e in events)
            for event in events:
                assert_valid(event)
    everything = "\n".join(texts)
    assert "order.created" in everything
    digits = "".join(c for c in everything if c.isdigit() or c == "\n")
    for secret in ("5327654321", "05327654321"):
        assert secret not in digits
    for secret in ("Moda", "MODA", "Kadıköy", "ayse@example.com", "Kaya", '"phone"',
                   '"address"'):
        assert secret not in everything
    created = json.loads(texts[0])["data"]
    assert created["note"] == "CASH: collect 400.00 TRY; Call me at [phone] or [phone], " \
                              "I live at [address]"
    assert created["items"][0]["note"] == "mail me: [email]"
    assert created["items"][0]["modifiers"] == ["ring [phone]"]
    assert created["items"][1]["note"] == "leave at [address]"


def test_short_numbers_in_notes_survive() -> None:
    data = created_data(note="2 forks, floor 3, gate code 4512")
    assert data["note"] == "CASH: collect 400.00 TRY; 2 forks, floor 3, gate code 4512"


# -- bad shapes, named by field -----------------------------------------------------------


def _bad(document: Any) -> BadOrder:
    with pytest.raises(BadOrder) as caught:
        parse_order(document)
    return caught.value


def _with_product(index: int, **changes: Any) -> dict[str, Any]:
    raw = raw_order()
    raw["products"] = copy.deepcopy(raw["products"])
    raw["products"][index].update(changes)
    return raw


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (_with_product(1, quantity=0), "products[1].quantity: Input should be greater than or "
                                       "equal to 1"),
        (_with_product(1, quantity="2"), "products[1].quantity: Input should be a valid integer"),
        (_with_product(1, quantity=2.5), "products[1].quantity: Input should be a valid integer"),
        (_with_product(1, quantity=True), "products[1].quantity: Input should be a valid "
                                          "integer"),
        (_with_product(0, name="  "), "products[0].name: String should have at least 1"),
        (_with_product(0, price=-1), "products[0].price: Input should be greater than or equal"),
        (_with_product(0, options="hot"), "products[0].options: Input should be a valid list"),
        (_with_product(1, options=["big", {"price": 1}]),
         "products[1].options[1]: an option object needs a string 'name'"),
        (raw_order(products=[]), "products: List should have at least 1 item"),
        (raw_order(products=None), "products: Input should be a valid list"),
        (raw_order(id="1031"), "id: Input should be a valid integer"),
        (raw_order(id=0), "id: Input should be greater than or equal to 1"),
        (raw_order(status_id=3), "status_id: unknown status 3; the seed knows 1, 2, 16, 5, 6"),
        (raw_order(status_id=True), "status_id: Input should be a valid integer"),
        (raw_order(courier_type="drone"), "courier_type: must be 'restaurant' or 'platform'"),
        (raw_order(payment_key="../../admin"), "payment_key: String should match pattern"),
        (raw_order(payment_key=1031), "payment_key: Input should be a valid string"),
        (raw_order(scheduled_date="15/01/2026 18:30"),
         "scheduled_date: '15/01/2026 18:30' is not empty or 'YYYY-MM-DD HH:MM:SS'"),
        (raw_order(scheduled_date="2026-02-30 18:30:00"), "scheduled_date: '2026-02-30 18:30:00'"
                                                          " is not empty"),
        (raw_order(scheduled_date="1999-12-31 23:00:00"), "scheduled_date: '1999-12-31 23:00:00'"
                                                          " is not a time between"),
        (raw_order(scheduled_date=1767000000), "scheduled_date: must be a string"),
        (raw_order(customer="Ayşe"), "customer: Input should be a valid dictionary"),
        (raw_order(total="400"), "total: Input should be a valid integer"),
        ([raw_order()], "order: must be a JSON object, not list"),
    ],
)
def test_bad_shapes_are_named_by_field(document: Any, reason: str) -> None:
    assert _bad(document).reason.startswith(reason)


def test_every_fault_is_listed_and_the_order_can_still_be_acknowledged() -> None:
    document = _with_product(1, quantity=0)
    del document["courier_type"]
    document["products"][0]["name"] = ""
    error = _bad(document)
    assert "courier_type: required field is missing" in error.reason
    assert "products[0].name:" in error.reason
    assert "products[1].quantity:" in error.reason
    assert (error.payment_key, error.order_id) == (KEY, 1031)
    assert _bad(raw_order(payment_key="a/b", id="x")).payment_key is None


# -- the fake marketplace's orders are read as the connector will read them ---------------


@pytest.mark.parametrize("courier", ["restaurant", "platform"])
@pytest.mark.parametrize("method", ["CASH", "CREDIT_CARD"])
@pytest.mark.parametrize("scheduled", ["", "2026-01-15 18:30:00"])
def test_the_fake_marketplaces_orders_map_cleanly(courier: str, method: str,
                                                  scheduled: str) -> None:
    raw = build_order(1031, payment_key=KEY, courier_type=courier, payment_method=method,
                      scheduled_date=scheduled)
    (event,) = events_for(parse_order(raw), ISTANBUL, observed_at=SEEN, known=False)
    assert_valid(event)
    data = event["data"]
    assert data["fulfillment"] == {"type": "delivery", "courier": courier}
    assert data.get("scheduled_for") == ("2026-01-15T15:30:00Z" if scheduled else None)
    assert [(i["name"], i["qty"]) for i in data["items"]] == [
        (p["name"], p["quantity"]) for p in raw["products"]]
    cash = courier == "restaurant" and method == "CASH"
    assert data["note"].startswith(f"CASH: collect {raw['total'] // 100}.00 TRY") == cash
    text = json.dumps(event, ensure_ascii=False)
    assert raw["customer"]["phone"] not in text and "Moda" not in text


# -- the kitchen's reasons to the marketplace's ids ---------------------------------------


def test_cancel_reason_id_from_the_configured_map_else_other() -> None:
    configured = {"out_of_stock": 1, "address": 2, "busy": 3, "customer": 4, "technical": 5}
    assert cancel_reason_id("out_of_stock", configured) == 1
    assert cancel_reason_id("busy", configured) == 3
    assert cancel_reason_id("broken_oven", configured) == 8
    assert cancel_reason_id(None, configured) == 8
    assert cancel_reason_id("busy", {}) == 8


def test_marketplace_id_is_checked() -> None:
    with pytest.raises(ValueError, match="must match"):
        Marketplace("Yemek Sepeti", ZoneInfo("UTC"))
