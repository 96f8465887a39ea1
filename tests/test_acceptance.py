"""Orders sent for the restaurant to accept or reject (seeds 001 and 004), the operator's
answers and the store's state, on one database through the real pipeline."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from edge.ingest.pipeline import Incoming, Outcome, Pipeline
from edge.orders import acceptance, availability, opening
from edge.orders.apply import Applier, Plan
from edge.store import Tx
from edge.store.db import connect_sync
from tests.test_status_machine import AYRAN, KEBAP, ROOT, STATIONS, Till


@pytest.fixture
def till(tmp_path: Path) -> Iterator[Till]:
    conn = connect_sync(tmp_path / "kitchen-edge.db")
    try:
        yield Till(conn, Pipeline(ROOT, Applier(Plan(STATIONS, "grill"))))
    finally:
        conn.close()


def offered(t: Till, order_id: str, **data: Any) -> None:
    """A channel's order, waiting for the restaurant's answer."""
    t.ok(order_id, "order.created", {"fulfillment": {"type": "delivery", "courier": "platform"},
                                     "items": [KEBAP, AYRAN], "requires_acceptance": True,
                                     **data})


def command(t: Till, name: str, body: dict[str, Any]) -> Outcome:
    message = Incoming(f"{ROOT}/commands/{name}", json.dumps(body).encode())
    t.now += timedelta(seconds=1)
    t.conn.execute("BEGIN IMMEDIATE")
    result = t.pipeline.apply_batch(t.conn, [message], t.now)
    t.conn.execute("COMMIT")
    return result.outcomes[0]


def states(t: Till, order_id: str) -> set[tuple[str, str]]:
    return {(kind, state) for kind, state, _ in t.jobs(order_id).values()}


def test_nothing_prints_before_the_answer_and_everything_after_accept(till: Till) -> None:
    offered(till, "m-1")
    assert till.print_queued() == []
    assert states(till, "m-1") == {("NEW", "waiting")}
    till.ok("m-1", "order.accepted", {"prep_minutes": 25})
    assert sorted(till.print_queued()) == ["m-1/new/drinks", "m-1/new/grill"]
    assert till.order("m-1")["kitchen_stage"] == "accepted"


def test_rejected_before_anything_printed_is_void_and_prints_nothing(till: Till) -> None:
    offered(till, "m-2")
    till.ok("m-2", "order.rejected", {"reason": "out of adana", "reason_code": "out_of_stock"})
    assert till.status("m-2") == "void"
    assert states(till, "m-2") == {("NEW", "withdrawn")}
    assert till.print_queued() == []


def test_a_hold_while_waiting_does_not_let_the_tickets_out_on_resume(till: Till) -> None:
    offered(till, "m-3")
    till.ok("m-3", "order.held")
    till.ok("m-3", "order.resumed")
    assert till.print_queued() == []
    till.ok("m-3", "order.accepted")
    assert len(till.print_queued()) == 2


def test_accepted_while_held_waits_for_the_resume(till: Till) -> None:
    offered(till, "m-4")
    till.ok("m-4", "order.held")
    till.ok("m-4", "order.accepted")
    assert till.print_queued() == []
    till.ok("m-4", "order.resumed")
    assert len(till.print_queued()) == 2


def test_a_scheduled_order_accepted_early_still_waits_for_its_time(till: Till) -> None:
    due = till.now + timedelta(hours=2)
    offered(till, "m-5", scheduled_for=due.isoformat())
    till.ok("m-5", "order.accepted")
    assert till.print_queued() == []
    rows = till.conn.execute("SELECT wait_reason FROM print_jobs WHERE order_id='m-5'")
    assert {r[0] for r in rows} == {"scheduled"}


def test_items_added_before_the_answer_wait_too(till: Till) -> None:
    offered(till, "m-6")
    till.ok("m-6", "order.items_added", {"batch_id": "b2", "items": [
        {"line_id": "l3", "name": "Lahmacun", "qty": 1, "category": "grill"}]})
    assert till.print_queued() == []
    till.ok("m-6", "order.accepted")
    assert len(till.print_queued()) == 3


def test_pos_orders_never_wait(till: Till) -> None:
    till.create("p-1")
    assert len(till.print_queued()) == 2


def test_one_attention_ticket_at_the_default_station_for_an_unanswered_order(
        till: Till) -> None:
    offered(till, "m-7", display_id="Y-1031")

    def remind(after_s: float) -> list[str]:
        till.conn.execute("BEGIN IMMEDIATE")
        made = acceptance.remind(Tx(till.conn), till.now, timedelta(seconds=after_s), "grill")
        till.conn.execute("COMMIT")
        return made

    assert remind(120) == []                      # not waiting long enough yet
    till.now += timedelta(minutes=2)
    assert remind(120) == ["m-7/attention/grill"]
    till.now += timedelta(minutes=5)
    assert remind(120) == []                      # once
    waiting = acceptance.waiting(till.conn, till.now)
    assert [(w.order_id, w.reminded) for w in waiting] == [("m-7", True)]
    assert waiting[0].waited_s >= 7 * 60
    assert till.print_queued() == ["m-7/attention/grill"]
    row = till.conn.execute("SELECT kind, note FROM print_jobs "
                            "WHERE job_key='m-7/attention/grill'").fetchone()
    assert row[0] == "ATTENTION" and "Accept or reject order Y-1031" in row[1]
    till.ok("m-7", "order.accepted")
    assert acceptance.waiting(till.conn, till.now) == []


def test_an_answer_withdraws_an_attention_ticket_not_printed_yet(till: Till) -> None:
    offered(till, "m-8")
    till.now += timedelta(minutes=3)
    till.conn.execute("BEGIN IMMEDIATE")
    acceptance.remind(Tx(till.conn), till.now, timedelta(minutes=2), "grill")
    till.conn.execute("COMMIT")
    till.ok("m-8", "order.accepted")
    assert till.jobs("m-8")["m-8/attention/grill"][1] == "withdrawn"


# -- the operator's answers --------------------------------------------------------------

def test_an_accept_command_becomes_the_order_event(till: Till) -> None:
    offered(till, "m-9")
    outcome = command(till, "order", {"command_id": "c-1", "order_id": "m-9",
                                      "action": "accept", "prep_minutes": 20})
    assert outcome.result == "command"
    assert till.order("m-9")["kitchen_stage"] == "accepted"
    assert till.order("m-9")["prep_minutes"] == 20
    row = till.conn.execute("SELECT type, channel, device, applied FROM events "
                            "WHERE event_id='cmd:c-1'").fetchone()
    assert tuple(row) == ("order.accepted", "pos", "kitchen", 1)
    assert len(till.print_queued()) == 2
    again = command(till, "order", {"command_id": "c-1", "order_id": "m-9",
                                    "action": "accept"})
    assert again.result == "duplicate"


def test_a_reject_command_carries_its_reason_code(till: Till) -> None:
    offered(till, "m-10")
    command(till, "order", {"command_id": "c-2", "order_id": "m-10", "action": "reject",
                            "reason_code": "busy"})
    order = till.order("m-10")
    assert (order["status"], order["kitchen_stage"]) == ("void", "rejected")
    payload = json.loads(till.conn.execute(
        "SELECT payload FROM events WHERE event_id='cmd:c-2'").fetchone()[0])
    assert payload["data"] == {"reason": "busy", "reason_code": "busy"}


@pytest.mark.parametrize(("body", "reason"), [
    ({"command_id": "c-3", "order_id": "nope", "action": "accept"}, "order 'nope' is unknown"),
    ({"command_id": "c-4", "order_id": "m-11", "action": "maybe"}, "action: must be"),
    ({"command_id": "c 5", "order_id": "m-11", "action": "accept"}, "command_id"),
    ({"command_id": "c-6", "order_id": "m-11", "action": "accept", "prep_minutes": "20"},
     "prep_minutes"),
])
def test_bad_answers_are_dead_lettered_naming_the_field(till: Till, body: dict[str, Any],
                                                       reason: str) -> None:
    offered(till, "m-11")
    outcome = command(till, "order", body)
    assert outcome.result == "dead" and reason in (outcome.reason or "")


def test_accepting_a_cancelled_order_is_refused_by_the_status_machine(till: Till) -> None:
    offered(till, "m-12")
    till.ok("m-12", "order.cancelled", {"reason_code": "marketplace"})
    # The command is taken; the event it becomes is refused, and dead-lettered with the
    # status machine's reason (what `kitchen-edge orders accept` then prints).
    assert command(till, "order", {"command_id": "c-7", "order_id": "m-12",
                                   "action": "accept"}).result == "command"
    from edge.store import events
    assert events.event_applied(till.conn, "cmd:c-7") is None
    reason = events.dead_letter_mentioning(till.conn, "c-7")
    assert reason is not None and "Cannot transition" in reason


def test_an_unknown_command_is_dead_lettered(till: Till) -> None:
    outcome = command(till, "launch", {"command_id": "x"})
    assert outcome.result == "dead"
    assert "unknown command 'launch'" in (outcome.reason or "")


# -- the store's state ---------------------------------------------------------------------

def test_store_state_is_kept_and_published_with_its_spell(till: Till) -> None:
    assert availability.document(till.conn, till.now)["store"] == {
        "state": "open", "busy_minutes": None, "until": None}
    until = (till.now + timedelta(minutes=30)).isoformat()
    assert command(till, "store", {"command_id": "s-1", "state": "paused",
                                   "until": until}).result == "command"
    state = opening.current(till.conn)
    assert not state.takes_orders(till.now)
    assert availability.document(till.conn, till.now)["store"]["state"] == "paused"
    later = till.now + timedelta(minutes=31)
    assert state.takes_orders(later)
    assert availability.document(till.conn, later)["store"]["state"] == "open"
    command(till, "store", {"command_id": "s-2", "state": "busy", "busy_minutes": 15})
    busy = opening.current(till.conn)
    assert busy.takes_orders(till.now) and busy.extra_prep_minutes(till.now) == 15


@pytest.mark.parametrize(("body", "field"), [
    ({"command_id": "s-3", "state": "closed"}, "state"),
    ({"command_id": "s-4", "state": "busy"}, "busy_minutes"),
    ({"command_id": "s-5", "state": "paused", "until": "tomorrow"}, "until"),
    ({"command_id": "s-6", "state": "paused", "until": "2026-11-21T20:00:00"}, "until"),
])
def test_bad_store_commands_name_the_field(till: Till, body: dict[str, Any],
                                           field: str) -> None:
    outcome = command(till, "store", body)
    assert outcome.result == "dead" and f"{field}:" in (outcome.reason or "")
    assert opening.current(till.conn).state is opening.Opening.OPEN
