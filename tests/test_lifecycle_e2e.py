"""Orders that change after they reached the kitchen, end to end: events on a real broker,
the daemon as a process, tickets checked by content at virtual printers (issue 6)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.broker import Broker, free_port
from tests.daemon import ROOT, Listener, created, event
from tests.printing_env import Kitchen, has_line, job_key_of, kitchen

ITEM = re.compile(r"^\s*(\d+)x (.+?)\s*$")


def kind_of(job: dict[str, Any]) -> str:
    return str(next(line for line in job["text"] if line.strip())).strip()


def items_of(job: dict[str, Any]) -> list[str]:
    """The ticket's item lines, `2x Name`, in printed order."""
    return [f"{m.group(1)}x {m.group(2)}" for line in job["text"]
            if (m := ITEM.match(line))]


def summary(jobs: list[dict[str, Any]]) -> list[tuple[str, str | None, list[str]]]:
    return [(kind_of(j), job_key_of(j), items_of(j)) for j in jobs]


def line(line_id: str, name: str, category: str, qty: int = 1, **more: Any) -> dict[str, Any]:
    return {"line_id": line_id, "name": name, "qty": qty, "category": category, **more}


def job_state(k: Kitchen, job_key: str) -> str | None:
    rows = k.daemon.query("SELECT state FROM print_jobs WHERE job_key=?", (job_key,))
    return str(rows[0][0]) if rows else None


def wait_job_state(k: Kitchen, job_key: str, state: str) -> None:
    k.daemon.wait_until(lambda: job_state(k, job_key) == state,
                        what=f"{job_key} {state}", timeout=10)


def status_of(k: Kitchen, order_id: str) -> str:
    return str(k.daemon.scalar("SELECT status FROM orders WHERE order_id=?", (order_id,)))


def test_added_void_hold_fire_and_the_activity_log(tmp_path: Path, broker: Broker) -> None:
    http_port = free_port()
    with kitchen(tmp_path, broker, http={"listen": f"127.0.0.1:{http_port}"}) as k:
        k.pos.order(created("t-12", [line("l1", "Adana kebap", "grill", 2),
                                     line("l2", "Lahmacun", "grill"),
                                     line("l3", "Ayran", "drinks", 3)], display_id="T12"))
        k.wait_tickets("hot", 1)
        k.wait_tickets("bar", 1)

        # ADDED: only the new lines, at each station concerned.
        k.pos.order(event("t-12", "order.items_added", {"batch_id": "round-2", "items": [
            line("l4", "Kuzu şiş", "grill"), line("l5", "Çay", "drinks", 2)]}))
        k.wait_tickets("hot", 2)
        k.wait_tickets("bar", 2)

        # VOID after print: a VOID ticket only where the line printed.
        k.pos.order(event("t-12", "order.items_voided",
                          {"line_ids": ["l2"], "reason": "customer changed mind"}))
        void = k.wait_tickets("hot", 3)[2]
        assert has_line(void, "customer changed mind")

        # HOLD where tickets printed; what has not printed waits while held.
        k.pos.order(event("t-12", "order.held", {}))
        k.wait_tickets("hot", 4)
        k.wait_tickets("bar", 3)
        k.pos.order(event("t-12", "order.items_added", {"batch_id": "round-3", "items": [
            line("l6", "Pide", "grill")]}, event_id="t-12-round-3"))
        wait_job_state(k, "t-12/add-round-3/grill", "waiting")
        assert status_of(k, "t-12") == "held"

        # FIRE: the hold ends; the waiting ticket goes out with it.
        k.pos.order(event("t-12", "order.resumed", {}))
        hot = k.wait_tickets("hot", 6)
        bar = k.wait_tickets("bar", 4)
        assert summary(hot) == [
            ("NEW", "t-12/new/grill", ["2x Adana kebap", "1x Lahmacun"]),
            ("ADDED", "t-12/add-round-2/grill", ["1x Kuzu şiş"]),
            ("VOID", void_key(hot[2]), ["1x Lahmacun"]),
            ("HOLD", "t-12/hold-1/grill", ["2x Adana kebap", "1x Kuzu şiş"]),
            ("ADDED", "t-12/add-round-3/grill", ["1x Pide"]),
            ("FIRE", "t-12/fire-1/grill", ["2x Adana kebap", "1x Kuzu şiş"]),
        ]
        assert summary(bar) == [
            ("NEW", "t-12/new/drinks", ["3x Ayran"]),
            ("ADDED", "t-12/add-round-2/drinks", ["2x Çay"]),
            ("HOLD", "t-12/hold-1/drinks", ["3x Ayran", "2x Çay"]),
            ("FIRE", "t-12/fire-1/drinks", ["3x Ayran", "2x Çay"]),
        ]
        k.daemon.wait_until(lambda: k.daemon.query(
            "SELECT DISTINCT state FROM print_jobs WHERE order_id='t-12'") == [("printed",)])
        assert status_of(k, "t-12") == "sent_to_kitchen"

        # The activity log: every event with its channel, device and time, and the
        # kitchen's own entries, from the CLI and from the local HTTP server alike.
        shown = subprocess.run(
            [sys.executable, "-m", "edge", "orders", "show", "t-12", "--json",
             "--config", str(k.daemon.config)],
            capture_output=True, text=True, timeout=30, check=True)
        order = json.loads(shown.stdout)
        assert order["status"] == "sent_to_kitchen"
        from_events = [a for a in order["activities"] if a["event_id"]]
        assert [a["what"] for a in from_events] == [
            "Order created", "Items added", "Items voided", "Order held", "Items added",
            "Order resumed"]
        for entry in from_events:
            assert entry["channel"] == "pos" and entry["device"] == "test-pos"
            assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", entry["at"])
        whats = [a["what"] for a in order["activities"]]
        assert whats.index("Order created") < whats.index("Order sentToKitchen") \
            < whats.index("Order held")
        assert "VOID ticket printed at hot" in whats
        served = httpx.get(f"http://127.0.0.1:{http_port}/orders/t-12/activities", timeout=10)
        assert served.status_code == 200
        body = served.json()
        assert body["order_id"] == "t-12"
        assert [a["what"] for a in body["activities"]] == whats
        missing = httpx.get(f"http://127.0.0.1:{http_port}/orders/nope/activities", timeout=10)
        assert missing.status_code == 404


def void_key(job: dict[str, Any]) -> str | None:
    key = job_key_of(job)
    assert key is not None and re.fullmatch(r"t-12/void-[0-9a-f]{12}/grill", key), key
    return key


def test_void_before_print_and_cancel_only_where_the_order_printed(tmp_path: Path,
                                                                   broker: Broker) -> None:
    with kitchen(tmp_path, broker) as k:
        # The bar is out of paper: its tickets stay queued, the grill's print.
        k.printers["bar"].set_state("paper_out")
        k.daemon.wait_until(lambda: k.daemon.query(
            "SELECT state FROM printer_states WHERE printer_id='bar'") == [("paper_out",)],
            what="bar paper_out", timeout=10)

        # Void before print: the line is just taken off the waiting ticket.
        k.pos.order(created("b-1", [line("l1", "Adana kebap", "grill", 2),
                                    line("l2", "Ayran", "drinks"),
                                    line("l3", "Çay", "drinks", 2)]))
        k.wait_tickets("hot", 1)
        k.pos.order(event("b-1", "order.items_voided", {"line_ids": ["l2"]}))
        k.daemon.wait_until(lambda: k.daemon.scalar(
            "SELECT line_ids FROM print_jobs WHERE job_key='b-1/new/drinks'") == '["l3"]')

        # Cancel after a partial print: CANCELLED only at the grill, the bar never hears.
        k.pos.order(created("c-1", [line("l1", "Kuzu şiş", "grill"),
                                    line("l2", "Şalgam", "drinks")]))
        k.wait_tickets("hot", 2)
        k.pos.order(event("c-1", "order.cancelled",
                          {"reason_code": "customer", "reason": "left the table"}))
        cancelled = k.wait_tickets("hot", 3)[2]
        assert has_line(cancelled, "left the table")

        # Called off before any ticket reached a printer: Void, and nothing ever prints.
        k.pos.order(created("d-1", [line("l1", "Limonata", "drinks")]))
        wait_job_state(k, "d-1/new/drinks", "queued")
        k.pos.order(event("d-1", "order.cancelled", {"reason_code": "customer"}))
        wait_job_state(k, "d-1/new/drinks", "withdrawn")
        assert status_of(k, "d-1") == "void"
        assert status_of(k, "c-1") == "cancelled"

        # A void order cannot be paid: the refused move is dead-lettered, the order stays.
        dead = Listener(broker.port, f"{ROOT}/dead-letter")
        try:
            body = None
            for _ in range(5):      # the listener's subscription may not be up yet: resend
                k.pos.order(event("d-1", "order.payment_added", {
                    "payment_id": "p1", "amount_cents": 500, "method": "cash"}))
                try:
                    body = dead.wait_for(
                        lambda _t, b: isinstance(b, dict) and "d-1" in b["payload"], timeout=2)
                    break
                except TimeoutError:
                    continue
        finally:
            dead.close()
        assert body is not None
        assert body["reason"].startswith('Cannot transition from "void" to "completed"')
        assert body["topic"] == f"{ROOT}/orders/d-1/events"
        assert status_of(k, "d-1") == "void"
        assert job_state(k, "c-1/new/drinks") == "withdrawn"

        # Paper back in; a later order proves the queue was drained in order behind them.
        k.printers["bar"].set_state("online")
        k.pos.order(created("e-1", [line("l1", "Su", "drinks")]))
        bar = k.wait_tickets("bar", 2)
        assert summary(bar) == [("NEW", "b-1/new/drinks", ["2x Çay"]),
                                ("NEW", "e-1/new/drinks", ["1x Su"])]
        assert summary(k.tickets("hot")) == [
            ("NEW", "b-1/new/grill", ["2x Adana kebap"]),
            ("NEW", "c-1/new/grill", ["1x Kuzu şiş"]),
            ("CANCELLED", "c-1/cancel/grill", ["1x Kuzu şiş"]),
        ]
        assert not [j for j in bar + k.tickets("hot") if kind_of(j) == "VOID"]
        whats = [r[0] for r in k.daemon.query(
            "SELECT what FROM activities WHERE order_id='d-1' ORDER BY id")]
        assert whats == ["Order created", "Order voided"]
        whats = [r[0] for r in k.daemon.query(
            "SELECT what FROM activities WHERE order_id='c-1' ORDER BY id")]
        assert whats.index("Order sentToKitchen") < whats.index("Order cancelled")


def test_later_courses_wait_for_course_fired(tmp_path: Path, broker: Broker) -> None:
    with kitchen(tmp_path, broker) as k:
        k.pos.order(created("k-1", [line("l1", "Mercimek çorbası", "grill", 2, course=1),
                                    line("l2", "Ayran", "drinks", 2, course=1),
                                    line("l3", "İskender", "grill", 2, course=2),
                                    line("l4", "Künefe", "grill", 1, course=3)]))
        k.wait_tickets("bar", 1)
        k.wait_tickets("hot", 1)
        wait_job_state(k, "k-1/new-course-2/grill", "waiting")
        # Another table's order goes out at once: FIFO would have printed course 2 first.
        k.pos.order(created("k-2", [line("l1", "Pide", "grill")]))
        k.wait_tickets("hot", 2)
        assert status_of(k, "k-1") == "partially_sent"
        k.pos.order(event("k-1", "order.course_fired", {"course": 2}))
        k.wait_tickets("hot", 3)
        k.pos.order(event("k-1", "order.course_fired", {"course": 2}, event_id="fire-2-again"))
        k.pos.order(event("k-1", "order.course_fired", {"course": 3}, event_id="fire-3"))
        hot = k.wait_tickets("hot", 4)
        assert summary(hot) == [
            ("NEW", "k-1/new/grill", ["2x Mercimek çorbası"]),
            ("NEW", "k-2/new/grill", ["1x Pide"]),
            ("FIRE", "k-1/new-course-2/grill", ["2x İskender"]),
            ("FIRE", "k-1/new-course-3/grill", ["1x Künefe"]),
        ]
        assert summary(k.tickets("bar")) == [("NEW", "k-1/new/drinks", ["2x Ayran"])]
        k.daemon.wait_until(lambda: status_of(k, "k-1") == "sent_to_kitchen")
