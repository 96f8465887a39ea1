"""Seed 002 through the running daemon, a real Mosquitto and the virtual printers: a waiter
opens table 12's check, a guest scans the QR code and sees the waiter's lines, orders from
the phone (an ADDED ticket), the waiter's changes are pushed to the phone, and paying closes
the stream. Then every rejection reason, the same submission twice, four guests after the
last portion at once, invalid messages, and a SIGKILL between accepting a submission and
publishing its answer. OpenApp is `kitchen-edge simulate openapp`'s `OpenAppSim`."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edge.connectors.openapp.simulator import NoAnswer, OpenAppSim
from edge.orders.openapp import round_ref
from tests.broker import Broker, free_port
from tests.daemon import ROOT, Listener, created, event
from tests.printing_env import Kitchen, job_key_of, kitchen
from tests.test_table_session import read

MENU = """\
currency: TRY
products:
  - {id: adana, name: Adana kebap, category: grill, price: 42000, stock: 3}
  - {id: ayran, name: Ayran, category: drinks, price: 6000}
  - {id: baklava, name: Baklava, category: drinks, price: 15000, listed: false}
  - {id: kunefe, name: Künefe, category: grill, price: 18000, stock: 1}
  - {id: cay, name: Çay, category: drinks, price: 2000, stock: 0}
"""
TABLES = ["4", "5", "6", "7", "12"]


@contextmanager
def dining_room(tmp_path: Path, broker: Broker, menu: str = MENU,
                daemon_env: dict[str, str] | None = None,
                **config: Any) -> Iterator[tuple[Kitchen, OpenAppSim]]:
    (tmp_path / "menu.yaml").write_text(menu)
    with kitchen(tmp_path, broker, menu="menu.yaml", tables=TABLES,
                 daemon_env=daemon_env, **config) as k:
        sim = OpenAppSim("127.0.0.1", broker.port, ROOT)
        try:
            yield k, sim
        finally:
            sim.close()


def dish(line_id: str, qty: int, name: str, **more: Any) -> dict[str, Any]:
    return {"line_id": line_id, "qty": qty, "name": name, **more}


def item(product_id: str, qty: int, unit_price: int, **more: Any) -> dict[str, Any]:
    return {"product_id": product_id, "qty": qty, "unit_price": unit_price, **more}


def stock(k: Kitchen, product_id: str) -> int | None:
    value = k.daemon.scalar("SELECT stock FROM menu_stock WHERE product_id=?", (product_id,))
    return None if value is None else int(value)


def test_a_table_session_from_the_waiter_to_the_phone_and_back(tmp_path: Path,
                                                               broker: Broker) -> None:
    http_port = free_port()
    with dining_room(tmp_path, broker, http={"listen": f"127.0.0.1:{http_port}"}) as (k, sim):
        # The waiter opens table 12's check before anyone scans.
        k.pos.order(created("t12", [dish("w1", 1, "Adana kebap", product_id="adana"),
                                    dish("w2", 2, "Ekmek", category="grill")],
                            fulfillment={"type": "dine_in", "table": "12"}))
        k.wait_tickets("hot", 1)
        first = sim.scan("12")
        assert first["resolution"] == "RESOLVED"
        check = first["order"]
        assert (check["order_id"], check["currency"], check["total"]) == ("t12", "TRY", 42000)
        assert [(x["line_id"], x["name"], x["qty"], x["unit_price"], x["status"], x["added_by"])
                for x in check["lines"]] == [
            ("w1", "Adana kebap", 1, 42000, "IN_KITCHEN", "pos"),
            ("w2", "Ekmek", 2, None, "IN_KITCHEN", "pos")]

        # The guest orders from the phone: one round, an ADDED ticket per station.
        result = sim.submit("12", [item("ayran", 2, 6000), item("kunefe", 1, 18000,
                                                                note="two spoons")],
                            submission_id="phone-1")
        assert result["order_id"] == "t12" and result["rejected"] == []
        assert [(x["product_id"], x["line_id"]) for x in result["accepted"]] == [
            ("ayran", "phone-1-1"), ("kunefe", "phone-1-2")]
        hot = k.wait_tickets("hot", 2)
        bar = k.wait_tickets("bar", 1)
        ref = round_ref("phone-1")
        assert read(hot[1]) == {"kind": "ADDED", "station": "grill", "table": True,
                                "job": f"t12/add-{ref}/grill",
                                "items": [["1x Künefe", "! two spoons"]]}
        assert read(bar[0]) == {"kind": "ADDED", "station": "drinks", "table": True,
                                "job": f"t12/add-{ref}/drinks", "items": [["2x Ayran"]]}
        assert stock(k, "kunefe") == 0

        # The waiter's own changes reach the phone; the guest's round did not come back as one.
        k.pos.order(event("t12", "order.items_added", {"batch_id": "w-2", "items": [
            dish("w3", 1, "Çay", product_id="cay")]}, event_id="w-2"))
        added = sim.wait_change("12", "ITEMS_ADDED")
        assert [x["line_id"] for x in added["order"]["lines"]] == [
            "w1", "w2", "phone-1-1", "phone-1-2", "w3"]
        k.pos.order(event("t12", "order.items_voided", {"line_ids": ["w1"],
                                                        "reason": "guest changed mind"},
                          event_id="w-void"))
        voided = sim.wait_change("12", "ITEMS_CANCELLED")
        assert {x["line_id"]: x["status"] for x in voided["order"]["lines"]}["w1"] == "CANCELLED"
        assert read(k.wait_tickets("hot", 3)[2])["kind"] == "VOID"
        k.pos.order(event("t12", "order.items_delivered", {"line_ids": ["phone-1-1"]},
                          event_id="w-served"))
        served = sim.wait_change("12", "ITEMS_DELIVERED")
        assert {x["line_id"]: x["status"] for x in served["order"]["lines"]}["phone-1-1"] == \
            "DELIVERED"
        k.pos.order(event("t12", "order.discount_applied",
                          {"discount_id": "d1", "amount": 2000, "reason": "regulars"},
                          event_id="w-disc"))
        assert sim.wait_change("12", "DISCOUNT_APPLIED")["order"]["total"] == \
            2 * 6000 + 18000 + 2000 - 2000
        k.pos.order(event("t12", "order.payment_added", {
            "payment_id": "pay-1", "amount_cents": 30000, "method": "card"}, event_id="w-pay"))
        closed = sim.wait_change("12", "ORDER_CLOSED")
        assert closed["order"]["order_id"] == "t12"
        assert [c["change_type"] for c in sim.changes("12")] == [
            "ITEMS_ADDED", "ITEMS_CANCELLED", "ITEMS_DELIVERED", "DISCOUNT_APPLIED",
            "ORDER_CLOSED"]
        # The operator's status page: nothing followed now, and (once the broker's PUBACKs
        # are in) nothing left unsent.
        def openapp_section() -> dict[str, Any]:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/status", timeout=5) as r:
                return dict(json.load(r)["openapp"])

        k.daemon.wait_until(lambda: openapp_section()["unsent"] == 0, timeout=10)
        section = openapp_section()
        assert (section["streamed_tables"], section["sent"]) == ([], 7)

        # The stream is over: the next guests' check is not pushed until they scan.
        k.pos.order(created("t12-b", [dish("x1", 1, "Ayran", product_id="ayran")],
                            fulfillment={"type": "dine_in", "table": "12"}))
        k.daemon.wait_until(lambda: k.daemon.scalar(
            "SELECT COUNT(*) FROM orders WHERE order_id='t12-b'") == 1)
        again = sim.scan("12")      # answered after anything the new check could have pushed
        assert again["order"]["order_id"] == "t12-b"
        assert len(sim.changes("12")) == 5
        # Nobody printed anything twice.
        assert len({job_key_of(t) for t in k.tickets("hot")}) == len(k.tickets("hot"))


def test_every_rejection_reason_and_the_same_submission_twice(tmp_path: Path,
                                                              broker: Broker) -> None:
    with dining_room(tmp_path, broker) as (k, sim):
        assert sim.scan("99")["rejection_reason"] == "TABLE_NOT_FOUND"
        result = sim.submit("4", [item("cay", 1, 2000), item("adana", 4, 42000),
                                  item("baklava", 1, 15000), item("pizza", 1, 9000),
                                  item("kunefe", 1, 17000), item("ayran", 1, 6000)],
                            submission_id="s-1")
        assert result["rejected"] == [
            {"product_id": "cay", "qty": 1, "reason": "OUT_OF_STOCK", "available_qty": 0},
            {"product_id": "adana", "qty": 4, "reason": "INSUFFICIENT_STOCK",
             "available_qty": 3},
            {"product_id": "baklava", "qty": 1, "reason": "DELISTED"},
            {"product_id": "pizza", "qty": 1, "reason": "DELISTED"},
            {"product_id": "kunefe", "qty": 1, "reason": "PRICE_CHANGED",
             "current_price": 18000}]
        assert result["accepted"] == [{"product_id": "ayran", "qty": 1, "line_id": "s-1-6"}]
        order_id = result["order_id"]
        assert k.daemon.scalar("SELECT channel FROM orders WHERE order_id=?",
                               (order_id,)) == "openapp"
        ticket = k.wait_tickets("bar", 1)[0]
        assert read(ticket)["kind"] == "NEW" and read(ticket)["items"] == [["1x Ayran"]]

        # The same submission again (OpenApp retrying after a lost answer): the same answer,
        # no second ticket.
        again = sim.submit("4", [item("ayran", 1, 6000)], submission_id="s-1")
        assert again["accepted"] == result["accepted"] and again["rejected"] == \
            result["rejected"] and again["order_id"] == order_id
        # Close the check; a late submission for it is ORDER_CLOSED, not a new check.
        k.pos.order(event(order_id, "order.payment_added", {
            "payment_id": "p", "amount_cents": 6000, "method": "cash"}, event_id="pay-s1"))
        k.daemon.wait_until(lambda: k.daemon.scalar(
            "SELECT status FROM orders WHERE order_id=?", (order_id,)) == "completed")
        late = sim.submit("4", [item("ayran", 1, 6000)], order_id=order_id)
        assert late["accepted"] == [] and late["rejected"][0]["reason"] == "ORDER_CLOSED"
        assert sim.submit("99", [item("ayran", 1, 6000)])["rejection_reason"] == \
            "TABLE_NOT_FOUND"
        time.sleep(0.5)
        assert len(k.tickets("bar")) == 1


def test_four_guests_after_the_last_portion_at_once(tmp_path: Path, broker: Broker) -> None:
    with dining_room(tmp_path, broker) as (k, _sim):
        guests = [OpenAppSim("127.0.0.1", broker.port, ROOT) for _ in range(4)]
        try:
            requests = [g.submission(t, [item("kunefe", 1, 18000)])
                        for g, t in zip(guests, ("4", "5", "6", "7"), strict=True)]
            go = threading.Barrier(len(guests))

            def send(n: int) -> None:
                go.wait()
                guests[n].send(requests[n])

            threads = [threading.Thread(target=send, args=(n,)) for n in range(len(guests))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            answers = [g.answer(r["message_id"]) for g, r in zip(guests, requests, strict=True)]
        finally:
            for g in guests:
                g.close()
        won = [a for a in answers if a["accepted"]]
        lost = [a for a in answers if not a["accepted"]]
        assert len(won) == 1 and len(lost) == 3
        assert all(a["rejected"] == [{"product_id": "kunefe", "qty": 1,
                                      "reason": "INSUFFICIENT_STOCK", "available_qty": 0}]
                   for a in lost)
        assert stock(k, "kunefe") == 0
        tickets = k.wait_tickets("hot", 1)
        time.sleep(0.5)
        assert [read(t)["items"] for t in k.tickets("hot")] == [[["1x Künefe"]]]
        assert job_key_of(tickets[0]) == f"{won[0]['order_id']}/new/grill"


def test_invalid_messages_are_dead_lettered_with_the_field_named(tmp_path: Path,
                                                                 broker: Broker) -> None:
    with dining_room(tmp_path, broker) as (_k, sim):
        dead = Listener(broker.port, f"{ROOT}/dead-letter")
        try:
            sim.send(b"{not json")
            bad = sim.submission("4", [item("adana", 0, 42000)])
            sim.send(bad)
            no_table = sim.envelope("TableOrderSnapshotRequested", "4")
            del no_table["table_id"]
            sim.send(no_table)
            reasons = [dead.wait_for(lambda _t, b, w=w: w in b["reason"])["reason"]
                       for w in ("not valid JSON", "items[0].qty", "table_id")]
            assert reasons[1] == "schema: items[0].qty: Input should be greater than or " \
                                 "equal to 1"
            assert reasons[2] == "schema: table_id: required field is missing"
            assert {t for t, _b, _r in dead.messages} == {f"{ROOT}/dead-letter"}
            assert all(b["topic"] == f"{ROOT}/openapp/in" for _t, b, _r in dead.messages)
            # The daemon carries on, and no answer went to the broken ones.
            assert sim.scan("4")["resolution"] == "RESOLVED"
            assert sim.answers(bad["message_id"]) == []
        finally:
            dead.close()


def test_sigkill_between_accepting_a_submission_and_publishing_its_answer(
        tmp_path: Path, broker: Broker) -> None:
    crash = {"KITCHEN_EDGE_CRASHPOINT": "openapp_before_publish"}
    with dining_room(tmp_path, broker) as (k, sim):
        # Table 4 is followed, and the daemon restarts (its stream is a table row).
        k.pos.order(created("t4", [dish("w1", 1, "Ayran", product_id="ayran")],
                            fulfillment={"type": "dine_in", "table": "4"}))
        assert sim.scan("4")["order"]["order_id"] == "t4"
        assert k.daemon.stop() == 0
        k.daemon.env = crash
        k.daemon.start()
        request = sim.submission("4", [item("adana", 2, 42000)], submission_id="s-crash")
        sim.send(request)
        # The daemon kills itself once the answer is committed, before it is published.
        assert k.daemon.proc is not None
        k.daemon.proc.wait(timeout=20)
        assert k.daemon.proc.returncode == -9
        try:
            sim.answer(request["message_id"], timeout=0.5)
            raise AssertionError("an answer left before the crash")
        except NoAnswer:
            pass
        k.daemon.proc = None
        k.daemon.env = {}
        k.daemon.start()
        answer = sim.answer(request["message_id"], timeout=15)
        assert [x["line_id"] for x in answer["accepted"]] == ["s-crash-1"]
        assert answer["order_id"] == "t4"
        # Anything queued after it is published after it: once this arrives, a second
        # copy of the answer would have too.
        sim.scan("5")
        assert len(sim.answers(request["message_id"])) == 1
        assert stock(k, "adana") == 1
        tickets = k.wait_tickets("hot", 1)
        time.sleep(0.5)
        assert [job_key_of(t) for t in k.tickets("hot")] == [job_key_of(tickets[0])]
        assert k.daemon.scalar("SELECT COUNT(*) FROM openapp_out WHERE sent_at IS NULL") == 0
        # Two restarts later the table is still followed: the waiter's change is pushed.
        k.pos.order(event("t4", "order.items_added", {"batch_id": "w2", "items": [
            dish("w2", 1, "Çay", product_id="cay")]}, event_id="t4-w2"))
        pushed = sim.wait_change("4", "ITEMS_ADDED")
        assert [x["line_id"] for x in pushed["order"]["lines"]] == ["w1", "s-crash-1", "w2"]
