"""The table's check (seed 002) and the two event types it adds, through the real pipeline:
`order.items_delivered` and `order.discount_applied` with the status machine's rules
(seed 003: a final order is not changed; cancelled items are not served), each line's
status, and the total."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.orders import checks
from tests.tables_env import Floor, floor_at, line


@pytest.fixture
def floor(tmp_path: Path) -> Iterator[Floor]:
    f = floor_at(tmp_path)
    try:
        yield f
    finally:
        f.conn.close()


def check(f: Floor, order_id: str) -> dict[str, object]:
    return checks.document(f.conn, order_id, "TRY")


def statuses(f: Floor, order_id: str) -> dict[str, str]:
    return {x["line_id"]: x["status"] for x in checks.lines(f.conn, order_id)}


def test_each_line_status_and_the_total(floor: Floor) -> None:
    floor.open_table("t1", "4", [line("1", "adana", 2), line("2", "ayran", 2),
                                 line("3", "kunefe", 1)])
    assert statuses(floor, "t1") == {"1": "ORDERED", "2": "ORDERED", "3": "ORDERED"}
    floor.print_queued()
    floor.ok("t1", "order.items_added", {"batch_id": "b2", "items": [
        line("4", "ayran", 1), {"line_id": "5", "name": "Ekmek", "qty": 1}]})
    assert statuses(floor, "t1") == {"1": "IN_KITCHEN", "2": "IN_KITCHEN", "3": "IN_KITCHEN",
                                     "4": "ORDERED", "5": "ORDERED"}
    floor.ok("t1", "order.items_delivered", {"line_ids": ["2"]})
    floor.ok("t1", "order.items_complimented", {"line_ids": ["3"], "reason": "birthday"})
    floor.ok("t1", "order.items_voided", {"line_ids": ["1", "4"], "reason": "changed mind"})
    # 1 reached the grill: cancelled. 4 never reached a printer: removed from the check.
    assert statuses(floor, "t1") == {"1": "CANCELLED", "2": "DELIVERED", "3": "COMPLIMENTARY",
                                     "5": "ORDERED"}
    doc = check(floor, "t1")
    assert doc["currency"] == "TRY"
    # Only the two delivered ayran are charged; the bread has no price, the künefe is free.
    assert doc["total"] == 2 * 6000
    lines = {x["line_id"]: x for x in doc["lines"]}  # type: ignore[attr-defined]
    assert lines["5"] == {"line_id": "5", "product_id": None, "name": "Ekmek", "qty": 1,
                          "unit_price": None, "status": "ORDERED", "added_by": "pos"}
    assert lines["2"]["unit_price"] == 6000 and lines["2"]["product_id"] == "ayran"


def test_delivered_items(floor: Floor) -> None:
    floor.open_table("t1", "4", [line("1", "adana"), line("2", "ayran")])
    floor.ok("t1", "order.items_delivered", {"line_ids": ["1"]})
    floor.ok("t1", "order.items_delivered", {"line_ids": ["1"]}, effect="repeat")
    assert "Items delivered" in floor.activities("t1")
    bad = floor.pos("t1", "order.items_delivered", {"line_ids": ["9"]})
    assert bad.result == "dead" and bad.reason == "data.line_ids: unknown line_id '9' on this order"
    floor.ok("t1", "order.items_voided", {"line_ids": ["2"]})
    bad = floor.pos("t1", "order.items_delivered", {"line_ids": ["2"]})
    assert bad.result == "dead" and "was voided" in (bad.reason or "")
    bad = floor.pos("t1", "order.items_delivered", {"line_ids": []})
    assert bad.result == "dead" and (bad.reason or "").startswith("schema: data.line_ids")
    # A called-off order's lines are not served.
    floor.open_table("t2", "5", [line("1", "adana")])
    floor.ok("t2", "order.cancelled", {"reason_code": "customer"})
    bad = floor.pos("t2", "order.items_delivered", {"line_ids": ["1"]})
    assert bad.result == "dead" and (bad.reason or "").startswith(
        'Cannot transition from "void" to "void"')
    # No ticket for a delivery.
    assert floor.jobs("t1") == ["t1/new/grill", "t1/new/drinks"]


def test_discounts(floor: Floor) -> None:
    floor.open_table("t1", "4", [line("1", "adana", 1), line("2", "ayran", 1)])
    floor.ok("t1", "order.discount_applied",
             {"discount_id": "d1", "amount": 8000, "reason": "happy hour"})
    floor.ok("t1", "order.discount_applied",
             {"discount_id": "d1", "amount": 8000, "reason": "happy hour"}, effect="repeat")
    doc = check(floor, "t1")
    assert doc["total"] == 42000 + 6000 - 8000
    assert doc["discounts"] == [{"discount_id": "d1", "amount": 8000, "reason": "happy hour"}]
    bad = floor.pos("t1", "order.discount_applied", {"discount_id": "d2", "amount": 40001})
    assert bad.result == "dead" and bad.reason == (
        "data.amount: 40001 is more than the check has left to discount (40000)")
    bad = floor.pos("t1", "order.discount_applied", {"discount_id": "d3", "amount": 0})
    assert bad.result == "dead" and (bad.reason or "").startswith("schema: data.amount")
    floor.print_queued()
    floor.ok("t1", "order.payment_added",
             {"payment_id": "p1", "amount_cents": 40000, "method": "card"})
    bad = floor.pos("t1", "order.discount_applied", {"discount_id": "d4", "amount": 100})
    assert bad.result == "dead" and (bad.reason or "").startswith(
        'Cannot transition from "completed" to "completed": a discount is given before')


def test_the_open_check_of_a_table(floor: Floor) -> None:
    assert checks.open_check(floor.conn, "4") is None
    floor.open_table("t1", "4", [line("1", "ayran")])
    floor.ok("t0", "order.created", {"fulfillment": {"type": "pickup", "table": "4"},
                                     "items": [line("1", "ayran")]})
    found = checks.open_check(floor.conn, "4")
    assert found is not None and found.order_id == "t1"
    floor.ok("t1", "order.cancelled", {"reason_code": "customer"})
    assert checks.open_check(floor.conn, "4") is None
