"""OpenApp's requests in the kitchen's transactions (CONTRACT section 11), through the real
pipeline on a real SQLite file: snapshots and the table stream, submissions with every
rejection reason, the same submission twice, the last portion asked for twice in one batch,
the POS-side changes pushed to a streamed table, and invalid messages dead-lettered with the
field named. The daemon-level story (broker, printers, crash) is tests/test_openapp_e2e.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.ingest.pipeline import Incoming
from edge.orders.openapp import round_ref
from tests.tables_env import ROOT, Floor, floor_at, line


@pytest.fixture
def floor(tmp_path: Path) -> Iterator[Floor]:
    f = floor_at(tmp_path, tables=("4", "12"))
    try:
        yield f
    finally:
        f.conn.close()


def item(product_id: str, qty: int, unit_price: int, **more: Any) -> dict[str, Any]:
    return {"product_id": product_id, "qty": qty, "unit_price": unit_price, **more}


def test_a_snapshot_of_an_unknown_table_an_empty_table_and_a_check(floor: Floor) -> None:
    answer = floor.snapshot("99", "m1")
    assert answer["message_type"] == "TableOrderSnapshotResolutionResult"
    assert (answer["resolution"], answer["rejection_reason"]) == ("REJECTED", "TABLE_NOT_FOUND")
    assert answer["table_id"] == "99" and answer["correlation_id"] == "m1"
    assert floor.conn.execute("SELECT COUNT(*) FROM table_streams").fetchone()[0] == 0

    answer = floor.snapshot("12", "m2")
    assert (answer["resolution"], answer["order"]) == ("RESOLVED", None)
    assert floor.conn.execute("SELECT active FROM table_streams WHERE table_id='12'"
                              ).fetchone()[0] == 1

    floor.open_table("t12", "12", [line("1", "adana", 2)])
    answer = floor.snapshot("12", "m3")
    assert answer["order"]["order_id"] == "t12" and answer["order"]["total"] == 84000
    # Every message has the envelope of CONTRACT section 11.
    assert set(answer) >= {"message_type", "message_id", "table_id", "sent_at",
                           "correlation_id"}
    # The same request again (a redelivery) is answered once.
    assert floor.request({"message_type": "TableOrderSnapshotRequested", "message_id": "m3",
                          "table_id": "12", "sent_at": "2026-11-21T18:00:00Z"}).result == \
        "duplicate"
    assert len([m for m in floor.out() if m.get("correlation_id") == "m3"]) == 1


def test_a_submission_opens_a_check_then_joins_it(floor: Floor) -> None:
    answer = floor.submit("4", "s1", [item("adana", 2, 42000, note="no onion"),
                                      item("ayran", 2, 6000, modifiers=["cold"])])
    order_id = answer["order_id"]
    assert order_id.startswith("oa-4-")
    assert answer["accepted"] == [
        {"product_id": "adana", "qty": 2, "line_id": "s1-1"},
        {"product_id": "ayran", "qty": 2, "line_id": "s1-2"}]
    assert answer["rejected"] == []
    row = floor.conn.execute("SELECT channel, fulfillment, table_label FROM orders "
                             "WHERE order_id=?", (order_id,)).fetchone()
    assert tuple(row) == ("openapp", "dine_in", "4")
    assert floor.jobs(order_id) == [f"{order_id}/new/grill", f"{order_id}/new/drinks"]
    assert floor.stock("adana") == 1
    # The next round joins the open check as one ADDED round.
    answer = floor.submit("4", "s2", [item("adana", 1, 42000)])
    assert answer["order_id"] == order_id
    assert floor.jobs(order_id)[-1] == f"{order_id}/add-{round_ref('s2')}/grill"
    assert round_ref("s2").startswith("oa-") and len(round_ref("s2")) == 13
    doc = floor.snapshot("4")["order"]
    assert [(x["line_id"], x["added_by"], x["name"]) for x in doc["lines"]] == [
        ("s1-1", "openapp", "Adana kebap"), ("s1-2", "openapp", "Ayran"),
        ("s2-1", "openapp", "Adana kebap")]
    assert doc["total"] == 3 * 42000 + 2 * 6000


def test_every_rejection_reason(floor: Floor) -> None:
    floor.open_table("t4", "4", [line("1", "ayran")])
    answer = floor.submit("4", "s1", [
        item("cay", 1, 2000),                 # 86'd by the kitchen
        item("adana", 4, 42000),              # 3 left
        item("baklava", 1, 15000),            # listed: false
        item("pizza", 1, 1000),               # not on the menu
        item("kunefe", 1, 17000),             # the price went up
        item("ayran", 1, 6000),
    ])
    assert answer["accepted"] == [{"product_id": "ayran", "qty": 1, "line_id": "s1-6"}]
    assert answer["rejected"] == [
        {"product_id": "cay", "qty": 1, "reason": "OUT_OF_STOCK", "available_qty": 0},
        {"product_id": "adana", "qty": 4, "reason": "INSUFFICIENT_STOCK", "available_qty": 3},
        {"product_id": "baklava", "qty": 1, "reason": "DELISTED"},
        {"product_id": "pizza", "qty": 1, "reason": "DELISTED"},
        {"product_id": "kunefe", "qty": 1, "reason": "PRICE_CHANGED", "current_price": 18000},
    ]
    assert answer["order_id"] == "t4"
    # Nothing rejected took stock.
    assert (floor.stock("adana"), floor.stock("kunefe"), floor.stock("cay")) == (3, 1, 0)
    # The session's check closed (paid): what the guest sends next is refused, not a new check.
    floor.print_queued()
    floor.ok("t4", "order.payment_added", {"payment_id": "p", "amount_cents": 1, "method": "x"})
    answer = floor.submit("4", "s2", [item("ayran", 1, 6000)], order_id="t4")
    assert answer["accepted"] == [] and answer["rejected"] == [
        {"product_id": "ayran", "qty": 1, "reason": "ORDER_CLOSED"}]
    # An unknown table: every item refused, and why.
    answer = floor.submit("99", "s3", [item("ayran", 1, 6000)])
    assert answer["rejection_reason"] == "TABLE_NOT_FOUND"
    assert answer["rejected"][0]["reason"] == "ORDER_CLOSED"
    # Two of the same product in one submission count together.
    answer = floor.submit("12", "s4", [item("adana", 2, 42000), item("adana", 2, 42000)])
    assert [x["qty"] for x in answer["accepted"]] == [2]
    assert answer["rejected"] == [{"product_id": "adana", "qty": 2,
                                   "reason": "INSUFFICIENT_STOCK", "available_qty": 1}]


def test_a_paused_store_opens_no_check_but_serves_a_seated_table(floor: Floor) -> None:
    floor.open_table("t4", "4", [line("1", "ayran")])
    paused = {"command_id": "p1", "state": "paused"}
    floor.run([Incoming(f"{ROOT}/commands/store", json.dumps(paused).encode())])
    answer = floor.submit("12", "s1", [item("ayran", 1, 6000)])
    assert answer["rejection_reason"] == "STORE_CLOSED" and answer["accepted"] == []
    assert floor.submit("4", "s2", [item("ayran", 1, 6000)])["accepted"] != []


def test_the_same_submission_twice_gets_the_same_answer_and_prints_nothing(
        floor: Floor) -> None:
    first = floor.submit("4", "s1", [item("adana", 1, 42000), item("cay", 1, 2000)])
    jobs = floor.jobs(first["order_id"])
    again = floor.submit("4", "s1", [item("adana", 1, 42000), item("cay", 1, 2000)])
    strip = ("message_id", "correlation_id", "sent_at")
    assert {k: v for k, v in again.items() if k not in strip} == \
        {k: v for k, v in first.items() if k not in strip}
    assert again["correlation_id"] != first["correlation_id"]
    assert floor.jobs(first["order_id"]) == jobs and floor.stock("adana") == 2


def test_the_last_portion_asked_for_twice_in_one_batch(floor: Floor) -> None:
    one = floor.submission("4", "s1", [item("kunefe", 1, 18000)])
    two = floor.submission("12", "s2", [item("kunefe", 1, 18000)])
    outcomes = floor.run([Incoming(f"{ROOT}/openapp/in", json.dumps(b).encode())
                          for b in (one, two)])
    assert [o.result for o in outcomes] == ["applied", "applied"]
    first, second = floor.answer(one["message_id"]), floor.answer(two["message_id"])
    assert len(first["accepted"]) == 1 and first["rejected"] == []
    assert second["accepted"] == [] and second["rejected"] == [
        {"product_id": "kunefe", "qty": 1, "reason": "INSUFFICIENT_STOCK", "available_qty": 0}]
    assert floor.stock("kunefe") == 0


def test_pos_side_changes_are_pushed_to_a_streamed_table_until_it_closes(
        floor: Floor) -> None:
    floor.open_table("t12", "12", [line("1", "adana", 1)])
    floor.ok("t12", "order.items_added", {"batch_id": "b1", "items": [line("2", "ayran")]})
    assert floor.changes() == []                       # nobody follows the table yet
    first = floor.snapshot("12")
    assert [x["line_id"] for x in first["order"]["lines"]] == ["1", "2"]
    assert [x["added_by"] for x in first["order"]["lines"]] == ["pos", "pos"]

    floor.ok("t12", "order.items_added", {"batch_id": "b2", "items": [line("3", "ayran")]})
    floor.submit("12", "s1", [item("kunefe", 1, 18000)])          # the guest's own round
    floor.print_queued()
    floor.ok("t12", "order.held")                                 # not a check change
    floor.ok("t12", "order.resumed")
    floor.ok("t12", "order.items_voided", {"line_ids": ["1"]})      # after the grill had it
    floor.ok("t12", "order.items_added", {"batch_id": "b3", "items": [line("4", "ayran")]})
    floor.ok("t12", "order.items_voided", {"line_ids": ["4"]})      # before any printer did
    floor.ok("t12", "order.items_delivered", {"line_ids": ["2"]})
    floor.ok("t12", "order.discount_applied", {"discount_id": "d1", "amount": 1000})
    floor.ok("t12", "order.items_complimented", {"line_ids": ["3"], "reason": "regular"})
    floor.ok("t12", "order.payment_added", {"payment_id": "p1", "amount_cents": 1000,
                                            "method": "card", "completes": False})
    floor.ok("t12", "order.payment_added", {"payment_id": "p2", "amount_cents": 1000,
                                            "method": "card"})
    pushed = floor.changes()
    assert [m["change_type"] for m in pushed] == [
        "ITEMS_ADDED", "ITEMS_CANCELLED", "ITEMS_ADDED", "LINES_REMOVED", "ITEMS_DELIVERED",
        "DISCOUNT_APPLIED", "DISCOUNT_APPLIED", "ORDER_CLOSED"]
    assert all(m["table_id"] == "12" and m["order"]["order_id"] == "t12" for m in pushed)
    assert [x["line_id"] for x in pushed[0]["order"]["lines"]] == ["1", "2", "3"]
    closed = pushed[-1]["order"]
    assert {x["line_id"]: x["status"] for x in closed["lines"]} == {
        "1": "CANCELLED", "2": "DELIVERED", "3": "COMPLIMENTARY", "s1-1": "IN_KITCHEN"}
    assert closed["total"] == 6000 + 18000 - 1000
    assert floor.conn.execute("SELECT active FROM table_streams WHERE table_id='12'"
                              ).fetchone()[0] == 0
    # Stream over: a new check on the table is not pushed until OpenApp asks again.
    floor.open_table("t12b", "12", [line("1", "ayran")])
    assert len(floor.changes()) == 8
    assert floor.snapshot("12")["order"]["order_id"] == "t12b"
    floor.ok("t12b", "order.cancelled", {"reason_code": "customer"})
    assert [m["change_type"] for m in floor.changes()][8:] == ["ORDER_CLOSED"]


@pytest.mark.parametrize(("body", "reason"), [
    (b"{not json", "payload is not valid JSON"),
    (b"[1]", "payload must be a JSON object"),
    ({"message_type": "TablePaid", "message_id": "m", "table_id": "4", "sent_at": "x"},
     "schema: message_type: must be one of TableOrderSnapshotRequested, "
     "OrderSubmissionRequested (got 'TablePaid')"),
    ({"message_type": "TableOrderSnapshotRequested", "message_id": "m",
      "sent_at": "2026-11-21T18:00:00Z"}, "schema: table_id: required field is missing"),
    ({"message_type": "TableOrderSnapshotRequested", "message_id": "m 1", "table_id": "4",
      "sent_at": "2026-11-21T18:00:00Z"}, "schema: message_id: String should match pattern"),
    ({"message_type": "OrderSubmissionRequested", "message_id": "m", "table_id": "4",
      "sent_at": "2026-11-21T18:00:00Z", "submission_id": "s",
      "items": [{"product_id": "adana", "qty": 0, "unit_price": 1}]},
     "schema: items[0].qty: Input should be greater than or equal to 1"),
    ({"message_type": "OrderSubmissionRequested", "message_id": "m", "table_id": "4",
      "sent_at": "2026-11-21T18:00:00Z", "submission_id": "s", "items": [
          {"product_id": "adana", "qty": 1, "unit_price": "42000"}]},
     "schema: items[0].unit_price: Input should be a valid integer"),
    ({"message_type": "OrderSubmissionRequested", "message_id": "m", "table_id": "4",
      "sent_at": "2026-11-21T18:00:00Z", "items": []},
     "schema: submission_id: required field is missing; items: List should have at least 1"),
])
def test_invalid_messages_are_dead_lettered_with_the_field_named(
        floor: Floor, body: dict[str, Any] | bytes, reason: str) -> None:
    outcome = floor.request(body)
    assert outcome.result == "dead"
    assert (outcome.reason or "").startswith(reason), outcome.reason
    assert floor.dead() == [outcome.reason]
    assert floor.conn.execute(
        "SELECT topic FROM dead_letters").fetchone()[0] == f"{ROOT}/openapp/in"
    assert floor.out() == []


def test_a_sent_at_without_an_offset_is_read_in_the_local_time_zone(tmp_path: Path) -> None:
    from edge.orders.openapp import parse_request

    zone = __import__("zoneinfo").ZoneInfo("Europe/Istanbul")
    request = parse_request({"message_type": "TableOrderSnapshotRequested", "message_id": "m",
                             "table_id": "4", "sent_at": "2026-11-21T21:00:00"}, zone)
    assert request.sent_at.utcoffset() is not None
    assert request.sent_at.isoformat() == "2026-11-21T21:00:00+03:00"


def test_sent_messages_and_applied_requests_are_forgotten_after_a_while(floor: Floor) -> None:
    from edge.store import openapp as messages

    floor.snapshot("4", "m-old")
    floor.submit("4", "s-old", [item("ayran", 1, 6000)])
    ids = [r[0] for r in floor.conn.execute("SELECT id FROM openapp_out")]
    floor.conn.execute("BEGIN IMMEDIATE")
    messages.mark_sent(floor.conn, ids[:1], "2026-11-21T18:00:05.000Z")
    # Not sent yet: kept whatever its age. Sent before the line: gone, with the requests.
    assert messages.prune(floor.conn, "2026-11-25T00:00:00.000Z") == 1 + 2
    floor.conn.execute("COMMIT")
    assert [r[0] for r in floor.conn.execute("SELECT id FROM openapp_out")] == ids[1:]
    # The submission's answer stays: the same submission_id later is still answered the same.
    again = floor.submit("4", "s-old", [item("ayran", 1, 6000)])
    assert again["accepted"][0]["line_id"] == "s-old-1"


def test_a_product_id_no_menu_could_have_is_delisted_not_dead_lettered(floor: Floor) -> None:
    answer = floor.submit("4", "s1", [item("pizza margherita/large", 1, 9000)])
    assert answer["rejected"] == [{"product_id": "pizza margherita/large", "qty": 1,
                                   "reason": "DELISTED"}]
    assert floor.dead() == []
