"""A table session of seed 002 (postpaid table ordering), end to end: the table orders three
rounds, one dish is voided after it reached the grill, and the bill is paid. The kitchen's
tickets are read back from the virtual printers and compared, line by line, with what a
waiter expects each station to have been told."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.broker import Broker
from tests.daemon import created, event
from tests.printing_env import job_key_of, kitchen

ITEM = re.compile(r"^\s*(\d+)x (.+?)\s*$")
ORDER = "tbl-12-s1"


def dish(line_id: str, qty: int, name: str, category: str, **more: Any) -> dict[str, Any]:
    return {"line_id": line_id, "qty": qty, "name": name, "category": category, **more}


def read(job: dict[str, Any]) -> dict[str, Any]:
    """A ticket as a waiter reads it: kind, station, table, the items (each with what is
    printed under it), and the job key."""
    text = [x.rstrip() for x in job["text"] if x.strip()]
    items: list[list[str]] = []
    for line in text:
        if m := ITEM.match(line):
            items.append([f"{m.group(1)}x {m.group(2)}"])
        elif items and line.startswith(" ") and not line.strip().startswith("---"):
            items[-1].append(line.strip())
        elif items and line.strip().startswith("---"):
            break
    return {
        "kind": text[0].strip(),
        "station": next(x.split(":", 1)[1].strip() for x in text if x.startswith("Station:")),
        "table": "TABLE 12" in text,
        "items": items,
        "job": job_key_of(job),
    }


def test_three_rounds_a_void_and_the_bill(tmp_path: Path, broker: Broker) -> None:
    with kitchen(tmp_path, broker) as k:
        # Round 1: the QR session opens the check.
        k.pos.order(created(ORDER, [
            dish("r1-1", 2, "Adana kebap", "grill", modifiers=["acılı"]),
            dish("r1-2", 1, "Lahmacun", "grill"),
            dish("r1-3", 2, "Ayran", "drinks"),
        ], channel="openapp", fulfillment={"type": "dine_in", "table": "12"},
            event_id="openapp-sub-1"))
        k.wait_tickets("hot", 1)
        k.wait_tickets("bar", 1)
        # Rounds 2 and 3 arrive as item batches, the second before the first has printed.
        k.pos.order(event(ORDER, "order.items_added", {"batch_id": "sub-2", "items": [
            dish("r2-1", 1, "Kuzu şiş", "grill", note="well done"),
            dish("r2-2", 2, "Çay", "drinks"),
        ]}, event_id="openapp-sub-2", channel="openapp"))
        k.pos.order(event(ORDER, "order.items_added", {"batch_id": "sub-3", "items": [
            dish("r3-1", 1, "Künefe", "grill", note="two spoons"),
            dish("r3-2", 1, "Türk kahvesi", "drinks", modifiers=["orta şekerli"]),
        ]}, event_id="openapp-sub-3", channel="openapp"))
        k.wait_tickets("hot", 3)
        k.wait_tickets("bar", 3)
        # The waiter takes the şiş off the check: it is already on the grill's paper.
        k.pos.order(event(ORDER, "order.items_voided",
                          {"line_ids": ["r2-1"], "reason": "guest changed mind"},
                          event_id="pos-void-1"))
        hot = k.wait_tickets("hot", 4)
        # The bill is paid: the order closes; the kitchen hears nothing more.
        k.pos.order(event(ORDER, "order.payment_added", {
            "payment_id": "pay-1", "amount_cents": 128_000, "method": "card"},
            event_id="pos-pay-1"))
        k.daemon.wait_until(lambda: k.daemon.scalar(
            "SELECT status FROM orders WHERE order_id=?", (ORDER,)) == "completed")

        bar = k.tickets("bar")
        assert [read(t) for t in hot] == [
            {"kind": "NEW", "station": "grill", "table": True, "job": f"{ORDER}/new/grill",
             "items": [["2x Adana kebap", "+ acılı"], ["1x Lahmacun"]]},
            {"kind": "ADDED", "station": "grill", "table": True,
             "job": f"{ORDER}/add-sub-2/grill", "items": [["1x Kuzu şiş", "! well done"]]},
            {"kind": "ADDED", "station": "grill", "table": True,
             "job": f"{ORDER}/add-sub-3/grill", "items": [["1x Künefe", "! two spoons"]]},
            {"kind": "VOID", "station": "grill", "table": True, "job": job_key_of(hot[3]),
             "items": [["1x Kuzu şiş", "! well done"]]},
        ]
        assert re.fullmatch(rf"{ORDER}/void-[0-9a-f]{{12}}/grill", job_key_of(hot[3]) or "")
        assert any("guest changed mind" in x for x in hot[3]["text"])
        assert [read(t) for t in bar] == [
            {"kind": "NEW", "station": "drinks", "table": True, "job": f"{ORDER}/new/drinks",
             "items": [["2x Ayran"]]},
            {"kind": "ADDED", "station": "drinks", "table": True,
             "job": f"{ORDER}/add-sub-2/drinks", "items": [["2x Çay"]]},
            {"kind": "ADDED", "station": "drinks", "table": True,
             "job": f"{ORDER}/add-sub-3/drinks", "items": [["1x Türk kahvesi", "+ orta şekerli"]]},
        ]
        # Paying printed nothing anywhere, and nothing else is waiting to print.
        assert len(k.tickets("hot")) == 4 and len(k.tickets("bar")) == 3
        assert k.daemon.query(
            "SELECT job_key, state FROM print_jobs WHERE order_id=? AND state != 'printed'",
            (ORDER,)) == []
        lines = dict(k.daemon.query(
            "SELECT line_id, state FROM order_lines WHERE order_id=?", (ORDER,)))
        assert lines == {"r1-1": "active", "r1-2": "active", "r1-3": "active",
                         "r2-1": "voided", "r2-2": "active", "r3-1": "active",
                         "r3-2": "active"}
        log = [r[0] for r in k.daemon.query(
            "SELECT what FROM activities WHERE order_id=? AND event_id IS NOT NULL ORDER BY id",
            (ORDER,))]
        assert log == ["Order created", "Items added", "Items added", "Items voided",
                       "Payment added", "Order completed / Payment Confirmed"]
