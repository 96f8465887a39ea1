"""Orders waiting for the restaurant's answer, through the running daemon: nothing prints
before it, the operator answers with `kitchen-edge orders accept|reject`, an unanswered order
gets one ATTENTION ticket, and `kitchen-edge store` opens, slows down and pauses the store
on the retained availability topic."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.broker import Broker
from tests.daemon import ROOT, Listener, created
from tests.printing_env import has_line, job_key_of, kitchen
from tests.test_operator_cli import edge, edge_json

ITEMS = [{"line_id": "l1", "name": "Adana dürüm", "qty": 2, "category": "grill"}]
GRILL = [{"id": "grill", "printer": "hot", "categories": ["grill"]}]


def offered(order_id: str) -> dict[str, Any]:
    body = created(order_id, ITEMS, channel="marketplace", display_id=f"Y-{order_id}",
                   fulfillment={"type": "delivery", "courier": "restaurant"},
                   requires_acceptance=True)
    body["source"]["device"] = "yemek"
    return body


def test_an_order_waits_for_the_operators_accept_and_a_reject_prints_nothing(
        tmp_path: Path, broker: Broker) -> None:
    with kitchen(tmp_path, broker, printers=("hot",), stations=GRILL) as k:
        k.pos.order(offered("a-1"))
        k.pos.order(offered("a-2"))
        k.daemon.wait_until(lambda: k.daemon.scalar(
            "SELECT COUNT(*) FROM print_jobs WHERE wait_reason='acceptance'") == 2)
        waiting = edge_json(k.daemon, "orders", "waiting")
        assert [(w["order_id"], w["display_id"], w["source"]) for w in waiting] == [
            ("a-1", "Y-a-1", "yemek"), ("a-2", "Y-a-2", "yemek")]
        time.sleep(0.5)
        assert k.tickets("hot") == []

        out = edge(k.daemon, "orders", "accept", "a-1", "--prep", "25")
        assert "a-1 accepted" in out.stdout
        ticket = k.wait_tickets("hot", 1)[0]
        assert job_key_of(ticket) == "a-1/new/grill"
        assert k.daemon.scalar("SELECT prep_minutes FROM orders WHERE order_id='a-1'") == 25

        out = edge(k.daemon, "orders", "reject", "a-2", "--reason", "out_of_stock")
        assert "a-2 rejected" in out.stdout
        assert k.daemon.scalar("SELECT status FROM orders WHERE order_id='a-2'") == "void"
        # Answering an order twice: the status machine says why not, and the CLI says so.
        again = edge(k.daemon, "orders", "accept", "a-2", code=1)
        assert "Cannot transition" in again.stderr
        assert edge_json(k.daemon, "orders", "waiting") == []
        time.sleep(0.5)
        assert [job_key_of(t) for t in k.tickets("hot")] == ["a-1/new/grill"]
        # The timeline shows the kitchen's answer as a lifecycle step.
        steps = [s["key"] for s in edge_json(k.daemon, "orders", "show", "a-1")["timeline"]
                 ["steps"]]
        assert "order_confirmed" in steps


def test_an_unanswered_order_gets_one_attention_ticket(tmp_path: Path,
                                                       broker: Broker) -> None:
    with kitchen(tmp_path, broker, printers=("hot",), stations=GRILL,
                 acceptance={"attention_after": 1}) as k:
        k.pos.order(offered("a-3"))
        ticket = k.wait_tickets("hot", 1, timeout=10)[0]
        assert job_key_of(ticket) == "a-3/attention/grill"
        text = [line.strip() for line in ticket["text"] if line.strip()]
        assert text[0] == "ATTENTION"
        assert has_line(ticket, "Accept or reject order Y-a-3")
        time.sleep(2.5)
        assert len(k.tickets("hot")) == 1          # once
        edge(k.daemon, "orders", "accept", "a-3")
        assert job_key_of(k.wait_tickets("hot", 2)[1]) == "a-3/new/grill"


def test_store_state_commands_and_the_retained_availability(tmp_path: Path,
                                                            broker: Broker) -> None:
    with kitchen(tmp_path, broker, printers=("hot",), stations=GRILL) as k:
        seen = Listener(broker.port, f"{ROOT}/menu/availability")
        try:
            first = seen.wait_for(lambda _t, b: True)
            assert first == {"store": {"state": "open", "busy_minutes": None, "until": None},
                             "products": {}}
            edge(k.daemon, "store", "busy", "20")
            assert seen.wait_for(lambda _t, b: b["store"]["state"] == "busy")["store"][
                "busy_minutes"] == 20
            until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 8))
            edge(k.daemon, "store", "pause", "--until", until)
            assert seen.wait_for(lambda _t, b: b["store"]["state"] == "paused")["store"][
                "until"] == until
            shown = edge_json(k.daemon, "store", "show")
            assert shown["state"] == "paused"
            # Nobody reopens it: the spell ends by itself, and the topic says so.
            seen.wait_for(lambda _t, b: b["store"]["state"] == "open", timeout=15)
            bad = edge(k.daemon, "store", "busy", "0", code=2)
            assert "busy_minutes" in bad.stderr
        finally:
            seen.close()
