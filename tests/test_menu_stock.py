"""The menu in the kitchen (CONTRACT section 8), through the real pipeline on a real SQLite
file: items naming a product take its category and price, portions are taken in the
transaction that puts the item on an order and never below 0, lines called off before the
kitchen had them give their portions back, the stock command, and a reload of the menu file
that keeps the running counts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge.config.menu import Menu, Product
from edge.orders import availability
from edge.orders import menu as menu_rules
from edge.store import Tx
from tests.tables_env import MENU, Floor, floor_at, line


@pytest.fixture
def floor(tmp_path: Path) -> Iterator[Floor]:
    f = floor_at(tmp_path)
    try:
        yield f
    finally:
        f.conn.close()


def check_line(f: Floor, order_id: str, line_id: str) -> tuple[object, ...]:
    row = f.conn.execute(
        "SELECT l.category, c.product_id, c.unit_price, c.added_by, c.stock_taken "
        "FROM order_lines l JOIN check_lines c USING (order_id, line_id) "
        "WHERE order_id=? AND line_id=?", (order_id, line_id)).fetchone()
    assert row is not None
    return tuple(row)


def test_an_item_naming_a_product_takes_its_category_price_and_portions(floor: Floor) -> None:
    floor.open_table("t1", "4", [line("1", "adana", 2), line("2", "ayran", 3),
                                 line("3", "adana", 1, category="mains", unit_price=40000)])
    # Category (so the station) and price from the menu; given ones are kept.
    assert check_line(floor, "t1", "1") == ("grill", "adana", 42000, "pos", 2)
    assert check_line(floor, "t1", "2") == ("drinks", "ayran", 6000, "pos", 0)
    assert check_line(floor, "t1", "3") == ("mains", "adana", 40000, "pos", 1)
    assert floor.jobs("t1") == ["t1/new/grill", "t1/new/drinks"]
    assert floor.stock("adana") == 0 and floor.stock("ayran") is None
    doc = availability.document(floor.conn, floor.now)
    assert doc["products"] == {
        "adana": {"stock": 0, "listed": True}, "ayran": {"stock": None, "listed": True},
        "baklava": {"stock": None, "listed": False},
        "cay": {"stock": 0, "listed": True}, "kunefe": {"stock": 1, "listed": True}}


def test_a_pos_order_beyond_the_stock_is_taken_to_zero_and_noted(floor: Floor) -> None:
    floor.open_table("t1", "4", [line("1", "adana", 5)])
    assert floor.stock("adana") == 0
    assert check_line(floor, "t1", "1")[4] == 3
    assert "Stock short" in floor.activities("t1")
    # The waiter's order is the kitchen's order: it prints.
    assert floor.jobs("t1") == ["t1/new/grill"]
    floor.ok("t1", "order.items_added", {"batch_id": "b2", "items": [line("2", "adana", 1)]})
    assert floor.stock("adana") == 0 and check_line(floor, "t1", "2")[4] == 0


def test_a_repeated_order_takes_no_portions_twice(floor: Floor) -> None:
    created = {"fulfillment": {"type": "dine_in", "table": "4"}, "items": [line("1", "adana")]}
    floor.ok("t1", "order.created", created)
    floor.ok("t1", "order.created", created, effect="repeat")   # a new event_id, same order
    batch = {"batch_id": "b2", "items": [line("2", "adana")]}
    floor.ok("t1", "order.items_added", batch)
    floor.ok("t1", "order.items_added", batch, effect="repeat")
    assert floor.stock("adana") == 1


def test_lines_called_off_before_the_kitchen_had_them_give_their_portions_back(
        floor: Floor) -> None:
    floor.open_table("t1", "4", [line("1", "adana", 1), line("2", "kunefe", 1)])
    floor.print_queued()
    floor.ok("t1", "order.items_added", {"batch_id": "b2", "items": [line("3", "adana", 1)]})
    assert floor.stock("adana") == 1 and floor.stock("kunefe") == 0
    # Line 3 never reached a printer: its portion comes back. Line 1 was cooked: it does not.
    floor.ok("t1", "order.items_voided", {"line_ids": ["3", "1"]})
    assert floor.stock("adana") == 2
    # Voiding it again changes nothing (a repeat).
    floor.ok("t1", "order.items_voided", {"line_ids": ["3"]}, effect="repeat")
    assert floor.stock("adana") == 2
    # A whole order called off before anything printed (Void) gives everything back.
    floor.open_table("t2", "5", [line("1", "adana", 2)])
    assert floor.stock("adana") == 0
    floor.ok("t2", "order.cancelled", {"reason_code": "customer"})
    assert floor.stock("adana") == 2
    # Cancelled after printing: the cooked lines stay taken.
    floor.open_table("t3", "6", [line("1", "adana", 1)])
    floor.print_queued()
    floor.ok("t3", "order.cancelled", {"reason_code": "customer"})
    assert floor.stock("adana") == 1


def command(f: Floor, body: dict[str, object]) -> tuple[str, str | None]:
    from edge.ingest.pipeline import Incoming

    outcome = f.run([Incoming("kitchen/test-site/commands/stock", json.dumps(body).encode())])[0]
    return outcome.result, outcome.reason


def test_the_stock_command_counts_lists_and_86s(floor: Floor) -> None:
    assert command(floor, {"command_id": "c1", "product_id": "ayran", "stock": 10}) == \
        ("command", None)
    assert floor.stock("ayran") == 10
    assert command(floor, {"command_id": "c2", "product_id": "ayran", "stock": None}) == \
        ("command", None)
    assert floor.stock("ayran") is None
    assert command(floor, {"command_id": "c3", "product_id": "baklava", "listed": True}) == \
        ("command", None)
    levels = menu_rules.stock_levels(floor.conn)
    assert levels["baklava"].listed and not levels["adana"].marked_out
    # 86: stock 0, marked out by the kitchen (OpenApp hears OUT_OF_STOCK, not "sold out").
    assert command(floor, {"command_id": "c4", "product_id": "adana", "stock": 0})[0] == "command"
    assert menu_rules.stock_levels(floor.conn)["adana"].marked_out
    # The same command id again changes nothing.
    assert command(floor, {"command_id": "c1", "product_id": "ayran", "stock": 10})[0] == \
        "duplicate"
    assert floor.stock("ayran") is None
    # Bad input names the field.
    result, reason = command(floor, {"command_id": "c5", "product_id": "pizza", "stock": 1})
    assert result == "dead" and reason == "product_id: 'pizza' is not on the menu"
    result, reason = command(floor, {"command_id": "c6", "product_id": "ayran", "stock": -1})
    assert result == "dead" and reason is not None and reason.startswith("schema: stock:")
    result, reason = command(floor, {"command_id": "c7", "product_id": "ayran"})
    assert result == "dead" and reason is not None and "stock, listed, or both" in reason
    result, reason = command(floor, {"command_id": "c8", "product_id": "ayran", "listed": "no"})
    assert result == "dead" and reason is not None and reason.startswith("schema: listed:")


def test_a_reload_keeps_the_running_counts_unless_the_file_changed(floor: Floor) -> None:
    floor.open_table("t1", "4", [line("1", "adana", 2)])
    assert floor.stock("adana") == 1

    def reload(menu: Menu) -> bool:
        floor.conn.execute("BEGIN IMMEDIATE")
        changed = menu_rules.sync(Tx(floor.conn), menu, datetime(2026, 11, 21, 19, tzinfo=UTC))
        floor.conn.execute("COMMIT")
        return changed

    assert reload(MENU) is False
    assert floor.stock("adana") == 1          # the file still says 3: the count stays
    products = [p for p in MENU.products if p.id not in ("adana", "cay")]
    restocked = Menu(currency="TRY", products=[
        *products, Product(id="adana", name="Adana kebap", category="grill", price=42000,
                           stock=10)])
    assert reload(restocked) is True
    assert floor.stock("adana") == 10         # the operator edited the figure: it wins
    shown = availability.document(floor.conn, floor.now)["products"]
    assert "cay" not in shown                 # no longer on the menu
    assert command(floor, {"command_id": "c1", "product_id": "cay", "stock": 4})[0] == "dead"
    assert reload(MENU) is True               # cay is back with the count it had
    assert floor.stock("cay") == 0 and floor.stock("adana") == 3


def test_a_product_id_the_menu_does_not_know_is_kept_and_not_counted(floor: Floor) -> None:
    floor.open_table("t1", "4", [line("1", "adana 2 (döner)", 1, category="grill"),
                                 line("2", "pizza", 1)])
    assert check_line(floor, "t1", "1") == ("grill", "adana 2 (döner)", None, "pos", 0)
    assert check_line(floor, "t1", "2") == (None, "pizza", None, "pos", 0)
    assert floor.stock("adana") == 3
