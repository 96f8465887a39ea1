"""The order status machine of seed 003, driven through the real ingest pipeline on a real
SQLite file: every (from, to) pair of the nine statuses is accounted for.

An allowed move is reached by an event sequence and asserted. A forbidden move that some
event can ask for is asked for, dead-lettered with `Cannot transition from "X" to "Y"`, and
leaves the order as it was. The few forbidden pairs no event can ask for (the evidence or the
amounts decide the target, not the publisher) are listed with the reason, and the machine's
own check refuses them too.

"Reached a printer" evidence is made by the spooler's own bookkeeping (`printjobs.claim` then
`printjobs.printed`), without a printer: the unit under test is the status machine.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from edge.config.models import StationConfig
from edge.ingest.pipeline import Incoming, Outcome, Pipeline
from edge.orders import printjobs as jobs
from edge.orders import status
from edge.orders.apply import Applier, Plan
from edge.store import Tx
from edge.store import jobs as job_rows
from edge.store.db import connect_sync

ROOT = "kitchen/test-site"
STATUSES = ("created", "sent_to_kitchen", "partially_sent", "held", "completed",
            "cancelled", "void", "refunded", "partially_refunded")
STATIONS = (
    StationConfig(id="grill", printer="hot", categories=["grill"]),
    StationConfig(id="drinks", printer="bar", categories=["drinks"]),
)
KEBAP = {"line_id": "l1", "name": "Adana kebap", "qty": 2, "category": "grill"}
AYRAN = {"line_id": "l2", "name": "Ayran", "qty": 1, "category": "drinks"}


@dataclass
class Till:
    """The pipeline on one database file, and a POS that sends it events."""

    conn: sqlite3.Connection
    pipeline: Pipeline
    now: datetime = datetime(2026, 11, 21, 18, 0, tzinfo=UTC)
    counter: Iterator[int] = field(default_factory=itertools.count)

    def send(self, order_id: str, kind: str, data: dict[str, Any], *,
             event_id: str | None = None) -> Outcome:
        body = {
            "event_id": event_id or f"e{next(self.counter)}",
            "type": kind, "order_id": order_id, "occurred_at": "2026-11-21T18:00:00Z",
            "source": {"channel": "pos", "device": "till-2"}, "data": data,
        }
        message = Incoming(f"{ROOT}/orders/{order_id}/events", json.dumps(body).encode())
        self.now += timedelta(seconds=1)
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            result = self.pipeline.apply_batch(self.conn, [message], self.now)
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")
        return result.outcomes[0]

    def ok(self, order_id: str, kind: str, data: dict[str, Any] | None = None,
           effect: str = "applied", **kw: Any) -> Outcome:
        outcome = self.send(order_id, kind, data or {}, **kw)
        assert outcome.result == effect, (kind, outcome.reason)
        return outcome

    def create(self, order_id: str, items: list[dict[str, Any]] | None = None,
               **data: Any) -> None:
        self.ok(order_id, "order.created", {
            "fulfillment": {"type": "dine_in", "table": "4"},
            "items": items or [KEBAP, AYRAN], **data})

    def print_queued(self, stations: tuple[str, ...] = ("grill", "drinks")) -> list[str]:
        """What the spooler does for each queued job: claim (sending), then printed."""
        done: list[str] = []
        while True:
            self.conn.execute("BEGIN IMMEDIATE")
            claimed = jobs.claim(Tx(self.conn), list(stations), "hot", {}, self.now, 0.0)
            if claimed is not None:
                jobs.printed(Tx(self.conn), claimed, self.now)
            self.conn.execute("COMMIT")
            if claimed is None:
                return done
            done.append(claimed.job_key)

    def claim_only(self, station: str) -> str:
        """Bytes on their way to the printer: the job is `sending`, not yet printed."""
        self.conn.execute("BEGIN IMMEDIATE")
        claimed = jobs.claim(Tx(self.conn), [station], "hot", {}, self.now, 0.0)
        self.conn.execute("COMMIT")
        assert claimed is not None
        return claimed.job_key

    def status(self, order_id: str) -> str:
        return str(self.order(order_id)["status"])

    def order(self, order_id: str) -> dict[str, Any]:
        row = self.conn.execute("SELECT * FROM orders WHERE order_id=?", (order_id,)).fetchone()
        assert row is not None
        return dict(row)

    def jobs(self, order_id: str) -> dict[str, tuple[str, str, list[str]]]:
        """job_key -> (kind, state, line_ids)."""
        return {r[0]: (r[1], r[2], json.loads(r[3])) for r in self.conn.execute(
            "SELECT job_key, kind, state, line_ids FROM print_jobs WHERE order_id=? "
            "ORDER BY rowid", (order_id,))}

    def activities(self, order_id: str) -> list[str]:
        return [r[0] for r in self.conn.execute(
            "SELECT what FROM activities WHERE order_id=? ORDER BY id", (order_id,))]


@pytest.fixture
def till(tmp_path: Path) -> Iterator[Till]:
    conn = connect_sync(tmp_path / "kitchen-edge.db")
    try:
        yield Till(conn, Pipeline(ROOT, Applier(Plan(STATIONS, "grill"))))
    finally:
        conn.close()


# -- bringing an order to each status ---------------------------------------------------

def to_created(t: Till, o: str) -> None:
    t.create(o)


def to_sent(t: Till, o: str, *, paid: int = 0) -> None:
    t.create(o)
    t.print_queued()
    if paid:
        # A split payment's first part: taken, but the order is not closed by it.
        t.ok(o, "order.payment_added", {"payment_id": f"{o}-p0", "amount_cents": paid,
                                        "method": "cash", "completes": False})
    assert t.status(o) == "sent_to_kitchen"


def to_partial(t: Till, o: str, *, paid: int = 0) -> None:
    t.create(o)
    t.print_queued(("grill",))
    if paid:
        t.ok(o, "order.payment_added", {"payment_id": f"{o}-p0", "amount_cents": paid,
                                        "method": "cash", "completes": False})
    assert t.status(o) == "partially_sent"


def to_held(t: Till, o: str, *, paid: int = 0) -> None:
    to_sent(t, o, paid=paid)
    t.ok(o, "order.held")
    assert t.status(o) == "held"


def to_completed(t: Till, o: str) -> None:
    to_sent(t, o)
    t.ok(o, "order.payment_added", {"payment_id": f"{o}-p1", "amount_cents": 1000,
                                    "method": "card"})
    assert t.status(o) == "completed"


def to_cancelled(t: Till, o: str, *, paid: int = 0) -> None:
    to_sent(t, o, paid=paid)
    t.ok(o, "order.cancelled", {"reason_code": "customer"})
    assert t.status(o) == "cancelled"


def to_void(t: Till, o: str) -> None:
    t.create(o)
    t.ok(o, "order.cancelled", {"reason_code": "customer"})
    assert t.status(o) == "void"


def to_refunded(t: Till, o: str) -> None:
    to_completed(t, o)
    t.ok(o, "order.refunded", {"refund_id": f"{o}-r1", "amount_cents": 1000,
                               "method": "card", "reason": "cold food"})
    assert t.status(o) == "refunded"


def to_part_refunded(t: Till, o: str) -> None:
    to_completed(t, o)
    t.ok(o, "order.refunded", {"refund_id": f"{o}-r1", "amount_cents": 300,
                               "method": "card", "reason": "one dish cold"})
    assert t.status(o) == "partially_refunded"


REACH: dict[str, Callable[[Till, str], None]] = {
    "created": to_created, "sent_to_kitchen": to_sent, "partially_sent": to_partial,
    "held": to_held, "completed": to_completed, "cancelled": to_cancelled, "void": to_void,
    "refunded": to_refunded, "partially_refunded": to_part_refunded,
}


def test_every_status_is_reachable(till: Till) -> None:
    for name, reach in REACH.items():
        reach(till, f"o-{name}")
        assert till.status(f"o-{name}") == name


# -- allowed moves ------------------------------------------------------------------------

Step = Callable[[Till, str], None]


def printing(*stations: str) -> Step:
    def step(t: Till, o: str) -> None:
        assert t.print_queued(stations)
    return step


def event_step(kind: str, data: dict[str, Any] | None = None) -> Step:
    def step(t: Till, o: str) -> None:
        t.ok(o, kind, data)
    return step


def add_round(t: Till, o: str) -> None:
    t.ok(o, "order.items_added", {"batch_id": "r2", "items": [
        {"line_id": "l3", "name": "Çay", "qty": 2, "category": "drinks"}]})


def claimed_grill(t: Till, o: str) -> None:
    # The grill ticket's bytes are on their way: the kitchen may be cooking, so a call-off
    # is Cancelled (and the grill gets a CANCELLED ticket) though the status is Created.
    t.create(o)
    t.claim_only("grill")


def held_from(start: str) -> Step:
    def setup(t: Till, o: str) -> None:
        REACH[start](t, o)
        t.ok(o, "order.held")
    return setup


def refund_step(amount: int) -> Step:
    return event_step("order.refunded", {"refund_id": "rx", "amount_cents": amount,
                                         "method": "card", "reason": "late"})


CANCEL_STEP = event_step("order.cancelled", {"reason_code": "kitchen", "reason": "no lamb"})
PAY_STEP = event_step("order.payment_added", {"payment_id": "p", "amount_cents": 900,
                                              "method": "card"})

# (from, to) -> (setup that leaves the order in `from`, the one step that makes the move)
ALLOWED_MOVES: dict[tuple[str, str], tuple[Step, Step]] = {
    ("created", "sent_to_kitchen"): (to_created, printing("grill", "drinks")),
    ("created", "partially_sent"): (to_created, printing("grill")),
    ("partially_sent", "sent_to_kitchen"): (to_partial, printing("drinks")),
    ("sent_to_kitchen", "partially_sent"): (to_sent, add_round),
    ("created", "held"): (to_created, event_step("order.held")),
    ("sent_to_kitchen", "held"): (to_sent, event_step("order.held")),
    ("partially_sent", "held"): (to_partial, event_step("order.held")),
    ("held", "created"): (held_from("created"), event_step("order.resumed")),
    ("held", "sent_to_kitchen"): (held_from("sent_to_kitchen"), event_step("order.resumed")),
    ("held", "partially_sent"): (held_from("partially_sent"), event_step("order.resumed")),
    ("created", "void"): (to_created, CANCEL_STEP),
    ("held", "void"): (held_from("created"), CANCEL_STEP),
    ("created", "cancelled"): (claimed_grill, CANCEL_STEP),
    ("sent_to_kitchen", "cancelled"): (to_sent, CANCEL_STEP),
    ("partially_sent", "cancelled"): (to_partial, CANCEL_STEP),
    ("held", "cancelled"): (held_from("sent_to_kitchen"), CANCEL_STEP),
    ("sent_to_kitchen", "completed"): (to_sent, PAY_STEP),
    ("partially_sent", "completed"): (to_partial, event_step("order.completed")),
    ("completed", "refunded"): (to_completed, refund_step(1000)),
    ("completed", "partially_refunded"): (to_completed, refund_step(999)),
    ("partially_refunded", "refunded"): (to_part_refunded, refund_step(700)),
    ("partially_refunded", "partially_refunded"): (to_part_refunded, refund_step(100)),
}


def test_the_allowed_moves_are_exactly_the_seeds() -> None:
    assert set(ALLOWED_MOVES) == status.ALLOWED
    for current, target in status.ALLOWED:
        status.check(current, target)


@pytest.mark.parametrize(("current", "target"), sorted(ALLOWED_MOVES),
                         ids=[f"{a}->{b}" for a, b in sorted(ALLOWED_MOVES)])
def test_allowed_move(till: Till, current: str, target: str) -> None:
    setup, step = ALLOWED_MOVES[(current, target)]
    setup(till, "o")
    assert till.status("o") == current
    step(till, "o")
    assert till.status("o") == target
    if target == "void":
        # Never reached a printer: every job is withdrawn, nothing will print.
        assert {s for _, s, _ in till.jobs("o").values()} == {"withdrawn"}
        assert till.print_queued() == []
    if target == "cancelled":
        cancels = {k: v for k, v in till.jobs("o").items() if v[0] == "CANCELLED"}
        printed_at = {k.rsplit("/", 1)[1] for k, v in till.jobs("o").items()
                      if v[0] == "NEW" and v[1] in ("printed", "sending")}
        assert {k.rsplit("/", 1)[1] for k in cancels} == printed_at
        assert all(v[1] in ("printed", "sending", "withdrawn", "queued")
                   for v in till.jobs("o").values())
        assert not [k for k, v in till.jobs("o").items() if v[0] == "NEW" and v[1] == "queued"]


# -- forbidden moves ----------------------------------------------------------------------

def pay(complete: bool = True, amount: int = 500) -> Callable[[Till, str], Outcome]:
    return lambda t, o: t.send(o, "order.payment_added", {
        "payment_id": f"late-{next(t.counter)}", "amount_cents": amount, "method": "cash",
        "completes": complete})


def refund(amount: int) -> Callable[[Till, str], Outcome]:
    return lambda t, o: t.send(o, "order.refunded", {
        "refund_id": f"rf-{next(t.counter)}", "amount_cents": amount, "method": "cash",
        "reason": "goodwill"})


def plain(kind: str, data: dict[str, Any] | None = None) -> Callable[[Till, str], Outcome]:
    return lambda t, o: t.send(o, kind, data or {})


ADD = plain("order.items_added", {"batch_id": "late", "items": [
    {"line_id": "l9", "name": "Künefe", "qty": 1, "category": "grill"}]})
VOID_LINE = plain("order.items_voided", {"line_ids": ["l1"], "reason": "mistake"})
HOLD = plain("order.held")
RESUME = plain("order.resumed")
CANCEL = plain("order.cancelled", {"reason_code": "customer"})
COMPLETE = plain("order.completed")
FIRE_2 = plain("order.course_fired", {"course": 2})

Ask = Callable[[Till, str], Outcome]
Setup = Callable[[Till, str], None]


def reach(name: str, **kw: Any) -> Setup:
    return lambda t, o: REACH[name](t, o, **kw)


# (from, to) -> every (setup, event) we know that asks for that move.
ASKED: dict[tuple[str, str], list[tuple[Setup, Ask]]] = {
    ("created", "created"): [(reach("created"), RESUME)],
    ("created", "completed"): [(reach("created"), pay()), (reach("created"), COMPLETE)],
    ("created", "refunded"): [(reach("created"), refund(100))],
    ("sent_to_kitchen", "sent_to_kitchen"): [(reach("sent_to_kitchen"), RESUME)],
    ("sent_to_kitchen", "refunded"): [(reach("sent_to_kitchen"), refund(100)),
                                      (reach("sent_to_kitchen", paid=500), refund(500))],
    ("sent_to_kitchen", "partially_refunded"): [(reach("sent_to_kitchen", paid=500),
                                                 refund(200))],
    ("partially_sent", "partially_sent"): [(reach("partially_sent"), RESUME)],
    ("partially_sent", "refunded"): [(reach("partially_sent"), refund(100))],
    ("partially_sent", "partially_refunded"): [(reach("partially_sent", paid=500),
                                                refund(200))],
    ("held", "completed"): [(reach("held"), pay()), (reach("held"), COMPLETE)],
    ("held", "refunded"): [(reach("held"), refund(100))],
    ("held", "partially_refunded"): [(reach("held", paid=500), refund(200))],
    ("completed", "partially_sent"): [(reach("completed"), ADD)],
    ("completed", "held"): [(reach("completed"), HOLD)],
    ("completed", "completed"): [(reach("completed"), pay()), (reach("completed"), RESUME),
                                 (reach("completed"), FIRE_2)],
    ("completed", "cancelled"): [(reach("completed"), CANCEL),
                                 (reach("completed"),
                                  plain("order.rejected", {"reason": "too busy"}))],
    ("completed", "void"): [(reach("completed"), VOID_LINE)],
    ("cancelled", "partially_sent"): [(reach("cancelled"), ADD)],
    ("cancelled", "held"): [(reach("cancelled"), HOLD)],
    ("cancelled", "completed"): [(reach("cancelled"), pay()), (reach("cancelled"), COMPLETE)],
    ("cancelled", "cancelled"): [(reach("cancelled"), RESUME), (reach("cancelled"), FIRE_2)],
    ("cancelled", "void"): [(reach("cancelled"), VOID_LINE)],
    ("cancelled", "refunded"): [(reach("cancelled"), refund(100)),
                                (reach("cancelled", paid=500), refund(500))],
    ("cancelled", "partially_refunded"): [(reach("cancelled", paid=500), refund(200))],
    ("void", "partially_sent"): [(reach("void"), ADD)],
    ("void", "held"): [(reach("void"), HOLD)],
    ("void", "completed"): [(reach("void"), pay()), (reach("void"), COMPLETE)],
    ("void", "void"): [(reach("void"), VOID_LINE), (reach("void"), RESUME)],
    ("void", "refunded"): [(reach("void"), refund(100))],
    ("refunded", "partially_sent"): [(reach("refunded"), ADD)],
    ("refunded", "held"): [(reach("refunded"), HOLD)],
    ("refunded", "completed"): [(reach("refunded"), pay())],
    ("refunded", "cancelled"): [(reach("refunded"), CANCEL)],
    ("refunded", "void"): [(reach("refunded"), VOID_LINE)],
    ("refunded", "refunded"): [(reach("refunded"), refund(1)), (reach("refunded"), RESUME)],
    ("partially_refunded", "partially_sent"): [(reach("partially_refunded"), ADD)],
    ("partially_refunded", "held"): [(reach("partially_refunded"), HOLD)],
    ("partially_refunded", "completed"): [(reach("partially_refunded"), pay())],
    ("partially_refunded", "cancelled"): [(reach("partially_refunded"), CANCEL)],
    ("partially_refunded", "void"): [(reach("partially_refunded"), VOID_LINE)],
}

# Forbidden pairs no event can ask for, and why. The machine refuses them all the same.
UNASKABLE: dict[tuple[str, str], str] = {
    **{(s, "created"): "kitchen progress never goes back to Created once a line printed"
       for s in ("sent_to_kitchen", "partially_sent", "completed", "cancelled", "void",
                 "refunded", "partially_refunded")},
    **{(s, "sent_to_kitchen"): "only a printed ticket or a resume moves to Sent to Kitchen"
       for s in ("completed", "cancelled", "void", "refunded", "partially_refunded")},
    ("sent_to_kitchen", "void"): "a call-off after a ticket printed is Cancelled, by evidence",
    ("partially_sent", "void"): "a call-off after a ticket printed is Cancelled, by evidence",
    ("void", "cancelled"): "calling off a called-off order is a repeat, not a move",
    ("created", "partially_refunded"): "nothing can be paid before the kitchen has it",
    ("void", "partially_refunded"): "a Void order never reached the kitchen, so was never paid",
    ("refunded", "partially_refunded"): "everything paid is refunded: a further refund "
                                        "exceeds what was paid and asks for Refunded",
}

# A change the order already has: applied once, the repeat is acknowledged, not refused.
REPEATS: dict[tuple[str, str], tuple[Setup, Ask]] = {
    ("held", "held"): (reach("held"), HOLD),
}


def test_every_pair_of_statuses_is_accounted_for() -> None:
    pairs = set(itertools.product(STATUSES, STATUSES))
    forbidden = pairs - status.ALLOWED
    assert len(pairs) == 81 and len(status.ALLOWED) == 22
    assert not set(ASKED) & set(UNASKABLE)
    assert not (set(ASKED) | set(UNASKABLE)) & set(REPEATS)
    assert set(ASKED) | set(UNASKABLE) | set(REPEATS) == forbidden


@pytest.mark.parametrize(("current", "target"), sorted(UNASKABLE),
                         ids=[f"{a}->{b}" for a, b in sorted(UNASKABLE)])
def test_unaskable_forbidden_move_is_refused_by_the_machine(current: str, target: str) -> None:
    with pytest.raises(status.TransitionRefused) as caught:
        status.check(current, target)
    assert caught.value.reason == f'Cannot transition from "{current}" to "{target}"'


FORBIDDEN_CASES = [(pair, i) for pair in sorted(ASKED) for i in range(len(ASKED[pair]))]


@pytest.mark.parametrize(("pair", "i"), FORBIDDEN_CASES,
                         ids=[f"{a}->{b}#{i}" for (a, b), i in FORBIDDEN_CASES])
def test_forbidden_move_is_dead_lettered(till: Till, pair: tuple[str, str], i: int) -> None:
    current, target = pair
    setup, ask = ASKED[pair][i]
    setup(till, "o")
    assert till.status("o") == current
    before_order = till.order("o")
    before_jobs = till.jobs("o")
    before_log = till.activities("o")
    outcome = ask(till, "o")
    assert outcome.result == "dead"
    assert outcome.reason is not None
    text = f'Cannot transition from "{current}" to "{target}"'
    assert outcome.reason == text or outcome.reason.startswith(text + ": "), outcome.reason
    kept = till.conn.execute("SELECT reason FROM dead_letters WHERE id=?",
                             (outcome.dead_letter_id,)).fetchone()
    assert kept[0] == outcome.reason
    # Nothing of the refused event stayed: not the order, its jobs, its log, its event row.
    after = till.order("o")
    assert {k: v for k, v in after.items() if k != "timeline_digest"} == \
        {k: v for k, v in before_order.items() if k != "timeline_digest"}
    assert till.jobs("o") == before_jobs
    assert till.activities("o") == before_log
    assert till.conn.execute("SELECT COUNT(*) FROM events WHERE event_id=?",
                             (outcome.event_id,)).fetchone()[0] == 0


@pytest.mark.parametrize("pair", sorted(REPEATS), ids=[f"{a}->{b}" for a, b in REPEATS])
def test_repeating_the_same_change_is_a_repeat(till: Till, pair: tuple[str, str]) -> None:
    setup, ask = REPEATS[pair]
    setup(till, "o")
    jobs_before = till.jobs("o")
    outcome = ask(till, "o")
    assert outcome.result == "repeat"
    assert till.status("o") == pair[1]
    assert till.jobs("o") == jobs_before          # no second HOLD ticket


# -- held returns to the status it had ------------------------------------------------------

@pytest.mark.parametrize("start", ["created", "sent_to_kitchen", "partially_sent"])
def test_held_returns_to_the_status_it_had(till: Till, start: str) -> None:
    REACH[start](till, "o")
    till.ok("o", "order.held")
    assert till.order("o")["held_from"] == start
    till.ok("o", "order.held", effect="repeat")
    till.ok("o", "order.resumed")
    assert till.status("o") == start
    assert till.order("o")["held_from"] is None
    till.ok("o", "order.resumed", effect="repeat")       # a second resume changes nothing
    till.ok("o", "order.held")                          # and it can be held again
    till.ok("o", "order.resumed")
    assert till.status("o") == start
    assert [w for w in till.activities("o") if w.startswith("Order held")] == [
        "Order held", "Order held again (repeat ignored)", "Order held"]


def test_held_unprinted_jobs_wait_and_go_back_to_the_queue_on_resume(till: Till) -> None:
    to_partial(till, "o")                                   # drinks not printed yet
    till.ok("o", "order.held")
    assert till.jobs("o")["o/new/drinks"][1] == "waiting"
    assert till.jobs("o")["o/hold-1/grill"][:2] == ("HOLD", "queued")   # only where printed
    assert "o/hold-1/drinks" not in till.jobs("o")
    assert till.print_queued() == ["o/hold-1/grill"]       # the drinks job does not print
    till.ok("o", "order.items_added", {"batch_id": "r2", "items": [
        {"line_id": "l3", "name": "Çay", "qty": 1, "category": "drinks"}]})
    assert till.jobs("o")["o/add-r2/drinks"][1] == "waiting"
    assert till.print_queued() == []
    till.ok("o", "order.resumed")
    assert till.status("o") == "partially_sent"
    assert till.print_queued() == ["o/new/drinks", "o/add-r2/drinks", "o/fire-1/grill"]
    assert till.status("o") == "sent_to_kitchen"


def test_lines_that_print_while_held_count_on_resume(till: Till) -> None:
    # Held from Created while the grill ticket was already on its way: it lands, and on
    # resume the order returns to Created and moves on at once to what reached the kitchen.
    till.create("o")
    till.claim_only("grill")
    till.ok("o", "order.held")
    assert till.jobs("o")["o/hold-1/grill"][0] == "HOLD"   # sending counts as reached
    till.conn.execute("UPDATE print_jobs SET state='printed' WHERE job_key='o/new/grill'")
    till.ok("o", "order.resumed")
    assert till.status("o") == "partially_sent"


def test_items_added_while_held_return_to_partially_sent(till: Till) -> None:
    to_sent(till, "o")
    till.ok("o", "order.held")
    till.ok("o", "order.items_added", {"batch_id": "r2", "items": [
        {"line_id": "l3", "name": "Pide", "qty": 1, "category": "grill"}]})
    assert till.status("o") == "held"
    till.ok("o", "order.resumed")
    assert till.status("o") == "partially_sent"


def test_a_later_course_added_while_held_still_waits_for_its_course(till: Till) -> None:
    till.create("o", [{**KEBAP, "course": 1}, {**AYRAN, "course": 1}])
    till.print_queued()
    till.ok("o", "order.held")
    till.ok("o", "order.items_added", {"batch_id": "dessert", "items": [
        {"line_id": "l5", "name": "Baklava", "qty": 1, "category": "grill", "course": 2}]})
    till.ok("o", "order.resumed")
    till.print_queued()
    assert till.jobs("o")["o/add-dessert-course-2/grill"][1] == "waiting"
    till.ok("o", "order.course_fired", {"course": 2})
    assert till.print_queued() == ["o/add-dessert-course-2/grill"]


# -- void versus cancelled ------------------------------------------------------------------

def test_voiding_every_line_before_print_voids_the_order(till: Till) -> None:
    till.create("o")
    till.ok("o", "order.items_voided", {"line_ids": ["l1"]})
    assert till.status("o") == "created"
    assert till.jobs("o")["o/new/grill"][1] == "withdrawn"
    till.ok("o", "order.items_voided", {"line_ids": ["l2"]})
    assert till.status("o") == "void"
    assert till.print_queued() == []
    assert till.activities("o") == ["Order created", "Items voided", "Items voided",
                                    "Order voided"]


def test_voiding_every_line_after_print_cancels_the_order(till: Till) -> None:
    to_sent(till, "o")
    till.ok("o", "order.items_voided", {"line_ids": ["l1", "l2"], "reason": "wrong table"})
    assert till.status("o") == "cancelled"
    kinds = {k: v[0] for k, v in till.jobs("o").items() if v[1] == "queued"}
    assert kinds == {"o/cancel/grill": "CANCELLED", "o/cancel/drinks": "CANCELLED"}
    log = till.activities("o")
    assert log.index("Order sentToKitchen") < log.index("Order cancelled")


def test_cancel_after_a_partial_send_tells_only_the_station_that_printed(till: Till) -> None:
    to_partial(till, "o")
    till.ok("o", "order.cancelled", {"reason_code": "customer", "reason": "left"})
    jobs_now = till.jobs("o")
    assert jobs_now["o/new/drinks"][1] == "withdrawn"
    assert jobs_now["o/cancel/grill"] == ("CANCELLED", "queued", ["l1"])
    assert "o/cancel/drinks" not in jobs_now
    till.ok("o", "order.cancelled", {"reason_code": "customer"}, effect="repeat")
    till.ok("o", "order.rejected", {"reason": "busy"}, effect="repeat")


def test_void_line_before_print_is_taken_off_the_waiting_job(till: Till) -> None:
    till.create("o", [KEBAP, {**KEBAP, "line_id": "l3", "name": "Pide", "qty": 1}, AYRAN])
    till.ok("o", "order.items_voided", {"line_ids": ["l3"]})
    assert till.jobs("o")["o/new/grill"] == ("NEW", "queued", ["l1"])
    assert not [k for k in till.jobs("o") if "/void-" in k]
    till.print_queued()
    assert till.status("o") == "sent_to_kitchen"          # every line still on the order
    till.ok("o", "order.items_voided", {"line_ids": ["l1"]})
    void_jobs = {k: v for k, v in till.jobs("o").items() if v[0] == "VOID"}
    assert list(void_jobs.values()) == [("VOID", "queued", ["l1"])]
    assert next(iter(void_jobs)).endswith("/grill")
    till.ok("o", "order.items_voided", {"line_ids": ["l1"]}, effect="repeat")


# -- payments, refunds, compliments -----------------------------------------------------------

def test_split_payment_completes_with_each_payment_in_the_log(till: Till) -> None:
    to_sent(till, "o")
    till.ok("o", "order.payment_added", {"payment_id": "cash-1", "amount_cents": 600,
                                         "method": "cash", "completes": False})
    assert till.status("o") == "sent_to_kitchen"
    till.ok("o", "order.payment_added", {"payment_id": "card-1", "amount_cents": 400,
                                         "method": "card"})
    till.ok("o", "order.payment_added", {"payment_id": "card-1", "amount_cents": 400,
                                         "method": "card"}, effect="repeat")
    assert till.status("o") == "completed"
    assert till.order("o")["paid_cents"] == 1000
    log = till.activities("o")
    assert log[-4:] == ["Payment added", "Payment added", "Order completed / Payment Confirmed",
                        "Payment added again (repeat ignored)"]


def test_refunds_never_exceed_what_was_paid(till: Till) -> None:
    to_completed(till, "o")                                   # paid 1000
    till.ok("o", "order.refunded", {"refund_id": "r1", "amount_cents": 400, "method": "card",
                                    "reason": "cold"})
    assert till.status("o") == "partially_refunded"
    too_much = till.send("o", "order.refunded", {"refund_id": "r2", "amount_cents": 601,
                                                 "method": "card", "reason": "x"})
    assert too_much.result == "dead"
    assert too_much.reason is not None and too_much.reason.startswith(
        'Cannot transition from "partially_refunded" to "refunded": refunds never exceed')
    assert till.order("o")["refunded_cents"] == 400
    till.ok("o", "order.refunded", {"refund_id": "r1", "amount_cents": 400, "method": "card",
                                    "reason": "cold"}, effect="repeat")
    till.ok("o", "order.refunded", {"refund_id": "r3", "amount_cents": 600, "method": "cash",
                                    "reason": "rest"})
    assert till.status("o") == "refunded"
    assert till.order("o")["refunded_cents"] == 1000
    over = till.send("o", "order.refunded", {"refund_id": "r4", "amount_cents": 1,
                                             "method": "card", "reason": "x"})
    assert over.result == "dead"


def test_a_refund_larger_than_the_payment_is_refused_on_a_completed_order(till: Till) -> None:
    to_completed(till, "o")
    out = till.send("o", "order.refunded", {"refund_id": "r", "amount_cents": 1001,
                                            "method": "card", "reason": "x"})
    assert out.result == "dead" and out.reason is not None
    assert out.reason.startswith('Cannot transition from "completed" to "refunded"')
    assert till.status("o") == "completed"


def test_cancelled_items_cannot_be_paid_or_complimented(till: Till) -> None:
    to_sent(till, "o")
    till.ok("o", "order.items_voided", {"line_ids": ["l2"]})
    comp = till.send("o", "order.items_complimented", {"line_ids": ["l2"], "reason": "x"})
    assert comp.result == "dead" and comp.reason is not None and "voided" in comp.reason
    till.ok("o", "order.items_voided", {"line_ids": ["l1"]})      # every item off: Cancelled
    out = till.send("o", "order.payment_added", {"payment_id": "p", "amount_cents": 100,
                                                 "method": "cash"})
    assert out.result == "dead"
    assert out.reason is not None
    assert out.reason.startswith('Cannot transition from "cancelled" to "completed"')


def test_a_complimented_item_stays_payable(till: Till) -> None:
    to_sent(till, "o")
    till.ok("o", "order.items_complimented", {"line_ids": ["l2"], "reason": "birthday"})
    till.ok("o", "order.items_complimented", {"line_ids": ["l2"], "reason": "birthday"},
            effect="repeat")
    state = till.conn.execute("SELECT state FROM order_lines WHERE line_id='l2'").fetchone()[0]
    assert state == "comped"
    till.ok("o", "order.payment_added", {"payment_id": "p", "amount_cents": 700,
                                         "method": "card"})
    assert till.status("o") == "completed"
    assert "Items complimented" in till.activities("o")
    final = till.send("o", "order.items_complimented", {"line_ids": ["l1"], "reason": "x"})
    assert final.result == "applied"           # still possible on a completed order
    to_cancelled(till, "c")
    late = till.send("c", "order.items_complimented", {"line_ids": ["l1"], "reason": "x"})
    assert late.result == "dead"


# -- the activity log -------------------------------------------------------------------------

def test_every_event_is_an_activity_with_channel_device_and_time(till: Till) -> None:
    to_sent(till, "o")
    till.ok("o", "order.held")
    till.ok("o", "order.resumed")
    till.ok("o", "order.payment_added", {"payment_id": "p", "amount_cents": 500,
                                         "method": "card"})
    events = [r[0] for r in till.conn.execute(
        "SELECT event_id FROM events WHERE order_id='o' ORDER BY rowid")]
    rows = till.conn.execute(
        "SELECT event_id, what, channel, device, at FROM activities WHERE order_id='o' "
        "AND event_id IS NOT NULL ORDER BY id").fetchall()
    assert {r[0] for r in rows} == set(events)
    for row in rows:
        assert row[2] == "pos" and row[3] == "till-2" and row[4].endswith("Z")
    kitchen_rows = till.conn.execute(
        "SELECT what, channel FROM activities WHERE order_id='o' AND event_id IS NULL "
        "ORDER BY id").fetchall()
    assert ("Order sentToKitchen", "kitchen") in [tuple(r) for r in kitchen_rows]
    assert till.activities("o")[0] == "Order created"


# -- the kitchen is never left cooking what was called off -----------------------------------

def test_a_void_notice_is_not_held_back_by_a_hold(till: Till) -> None:
    to_sent(till, "o")
    till.ok("o", "order.items_voided", {"line_ids": ["l1"], "reason": "allergy"})
    till.ok("o", "order.held")
    waiting = {k: v[0] for k, v in till.jobs("o").items() if v[1] == "waiting"}
    assert waiting == {}
    printed = till.print_queued()
    assert [k.split("/")[1].split("-")[0] for k in printed] == ["void", "hold", "hold"]


def claim_one(till: Till, station: str = "grill") -> jobs.Claimed:
    till.conn.execute("BEGIN IMMEDIATE")
    claimed = jobs.claim(Tx(till.conn), [station], "hot", {}, till.now, 0.0)
    till.conn.execute("COMMIT")
    assert claimed is not None
    return claimed


def in_tx(till: Till, fn: Any) -> Any:
    till.conn.execute("BEGIN IMMEDIATE")
    result = fn(Tx(till.conn))
    till.conn.execute("COMMIT")
    return result


def test_a_ticket_not_sent_while_the_order_was_held_waits_and_takes_back_its_hold(
        till: Till) -> None:
    till.create("o", [KEBAP])
    claimed = claim_one(till)
    till.ok("o", "order.held")          # counted the claimed ticket as maybe on paper
    in_tx(till, lambda c: jobs.unclaim(c, claimed, "connection refused"))
    # Not a byte left: the station never saw the order, so it gets no HOLD and no FIRE.
    assert till.print_queued() == []
    assert till.jobs("o")["o/new/grill"][1] == "waiting"
    assert till.jobs("o")["o/hold-1/grill"][1] == "withdrawn"
    till.ok("o", "order.resumed")
    assert till.print_queued() == ["o/new/grill"]


def test_a_ticket_not_sent_after_a_cancel_never_prints_and_neither_does_its_cancel(
        till: Till) -> None:
    till.create("o", [KEBAP])
    claimed = claim_one(till)
    till.ok("o", "order.cancelled", {"reason_code": "customer"})
    assert till.status("o") == "cancelled"              # the bytes might have been on paper
    in_tx(till, lambda c: jobs.unclaim(c, claimed, "printer not ready: paper_out"))
    assert till.print_queued() == []
    assert till.jobs("o")["o/new/grill"][1] == "withdrawn"
    assert till.jobs("o")["o/cancel/grill"][1] == "withdrawn"


def test_an_unconfirmed_ticket_of_a_cancelled_order_gets_its_cancel_and_no_copy(
        till: Till) -> None:
    till.create("o", [KEBAP])
    claimed = claim_one(till)
    till.ok("o", "order.cancelled", {"reason_code": "customer"})
    in_tx(till, lambda c: jobs.unconfirmed(c, claimed, "printer went paper_out", till.now))
    assert till.jobs("o")["o/new/grill"][1] == "unconfirmed"
    assert in_tx(till, lambda c: jobs.release_copy(c, "o/new/grill", ["hot", "bar"],
                                                   till.now)) is None
    assert till.print_queued() == ["o/cancel/grill"]
    assert till.jobs("o")["o/new/grill"][1] == "unconfirmed"


def test_an_unconfirmed_ticket_whose_lines_were_all_voided_gets_no_copy(till: Till) -> None:
    till.create("o", [KEBAP, AYRAN])
    claimed = claim_one(till)
    till.ok("o", "order.items_voided", {"line_ids": ["l1"]})
    in_tx(till, lambda c: jobs.unconfirmed(c, claimed, "connection lost", till.now))
    assert in_tx(till, lambda c: jobs.release_copy(c, "o/new/grill", ["hot", "bar"],
                                                   till.now)) is None
    printed = till.print_queued()
    assert "o/new/grill" not in printed
    assert [k.split("/")[1].split("-")[0] for k in printed] == ["new", "void"]  # drinks, VOID


def test_an_unconfirmed_ticket_copies_once_marked_and_never_to_the_printer_holding_it(
        till: Till) -> None:
    till.create("o", [KEBAP])
    claimed = claim_one(till)
    in_tx(till, lambda c: jobs.unconfirmed(c, claimed, "connection lost", till.now))
    # Only the holding printer in the station: no copy.
    assert in_tx(till, lambda c: jobs.release_copy(c, "o/new/grill", ["hot"], till.now)) is None
    assert in_tx(till, lambda c: job_rows.next_queued(c.conn, "hot", ["grill"], ["grill"])) is None
    # With a backup: queued again, marked, for the backup only.
    assert in_tx(till, lambda c: jobs.release_copy(
        c, "o/new/grill", ["hot", "bar"], till.now)) == "queued"
    assert in_tx(till, lambda c: job_rows.next_queued(c.conn, "hot", ["grill"], ["grill"])) is None
    assert in_tx(till, lambda c: job_rows.next_queued(
        c.conn, "bar", [], ["grill"])) == "o/new/grill"
    row = till.conn.execute("SELECT may_be_duplicate, delivered_to FROM print_jobs "
                            "WHERE job_key='o/new/grill'").fetchone()
    assert (row[0], row[1]) == (1, '["hot"]')


def test_a_held_ticket_confirmed_by_its_printer_needs_no_copy(till: Till) -> None:
    till.create("o", [KEBAP])
    claimed = claim_one(till)
    in_tx(till, lambda c: jobs.unconfirmed(c, claimed, "paper out under the ticket", till.now))
    assert in_tx(till, lambda c: jobs.confirm(c, ["o/new/grill"], "bar", till.now)) == []
    confirmed = in_tx(till, lambda c: jobs.confirm(c, ["o/new/grill"], "hot", till.now))
    assert [(key, order) for key, order, _ in confirmed] == [("o/new/grill", "o")]
    assert till.jobs("o")["o/new/grill"][1] == "printed"
    assert till.status("o") == "sent_to_kitchen"


def test_a_crash_mid_send_of_a_called_off_order_does_not_print_it_again(till: Till) -> None:
    till.create("h", [KEBAP])
    till.create("c", [KEBAP])
    till.create("k", [KEBAP])
    for _ in range(3):
        till.conn.execute("BEGIN IMMEDIATE")
        assert jobs.claim(Tx(till.conn), ["grill"], "hot", {}, till.now, 0.0) is not None
        till.conn.execute("COMMIT")
    till.ok("h", "order.held")
    till.ok("c", "order.cancelled", {"reason_code": "customer"})
    till.conn.execute("BEGIN IMMEDIATE")
    requeued = jobs.recover_after_crash(Tx(till.conn))
    till.conn.execute("COMMIT")
    assert sorted(requeued) == ["c/new/grill", "h/new/grill", "k/new/grill"]
    assert till.print_queued() == ["k/new/grill", "h/hold-1/grill", "c/cancel/grill"]
    assert till.jobs("h")["h/new/grill"][1] == "waiting"
    assert till.jobs("c")["c/new/grill"][1] == "withdrawn"


# -- scheduled orders meet holds, rounds and call-offs ------------------------------------

def release(t: Till, at: datetime) -> list[str]:
    t.conn.execute("BEGIN IMMEDIATE")
    keys = jobs.release_due(Tx(t.conn), at)
    t.conn.execute("COMMIT")
    return keys


def test_a_scheduled_order_held_past_its_time_fires_on_resume(till: Till) -> None:
    due = till.now + timedelta(hours=1)
    till.create("s", [KEBAP], scheduled_for=due.strftime("%Y-%m-%dT%H:%M:%SZ"))
    till.create("r", [KEBAP], scheduled_for=due.strftime("%Y-%m-%dT%H:%M:%SZ"))
    till.ok("s", "order.held")
    till.ok("r", "order.held")
    till.ok("r", "order.resumed")                    # resumed before its time: waits on
    assert till.jobs("r")["r/new/grill"][1] == "waiting"
    assert release(till, due - timedelta(minutes=21)) == []
    assert release(till, due - timedelta(minutes=20)) == ["r/new/grill"]   # held: not s
    till.now = due - timedelta(minutes=10)
    till.ok("s", "order.resumed")                    # resumed after its time: goes at once
    assert till.jobs("s")["s/new/grill"][1] == "queued"
    assert till.print_queued() == ["s/new/grill", "r/new/grill"]   # FIFO: s came first


def test_a_round_added_to_a_scheduled_order_waits_for_the_same_time(till: Till) -> None:
    due = till.now + timedelta(hours=2)
    till.create("s", [KEBAP], scheduled_for=due.strftime("%Y-%m-%dT%H:%M:%SZ"))
    till.ok("s", "order.items_added", {"batch_id": "b2", "items": [
        {"line_id": "l7", "name": "Pilav", "qty": 1, "category": "grill"}]})
    rows = till.conn.execute("SELECT job_key, state, not_before, due_at FROM print_jobs "
                             "WHERE order_id='s' ORDER BY rowid").fetchall()
    assert [(r[0], r[1]) for r in rows] == [("s/new/grill", "waiting"),
                                            ("s/add-b2/grill", "waiting")]
    assert rows[0][2] == rows[1][2] and rows[0][3] == rows[1][3] is not None
    assert release(till, due - timedelta(minutes=20)) == ["s/new/grill", "s/add-b2/grill"]
    assert release(till, due) == []                          # released once


def test_a_scheduled_order_cancelled_before_its_time_is_void_and_never_fires(
        till: Till) -> None:
    due = till.now + timedelta(hours=1)
    till.create("s", [KEBAP, AYRAN], scheduled_for=due.strftime("%Y-%m-%dT%H:%M:%SZ"))
    till.ok("s", "order.cancelled", {"reason_code": "customer"})
    assert till.status("s") == "void"
    assert release(till, due) == []
    assert till.print_queued() == []


def test_a_course_fired_while_held_waits_for_the_resume(till: Till) -> None:
    till.create("o", [{**KEBAP, "course": 1}, {**KEBAP, "line_id": "l3", "name": "Sütlaç",
                                                "course": 2}])
    till.print_queued()
    till.ok("o", "order.held")
    till.ok("o", "order.course_fired", {"course": 2})
    assert till.print_queued() == ["o/hold-1/grill"]
    till.ok("o", "order.resumed")
    assert till.print_queued() == ["o/new-course-2/grill", "o/fire-1/grill"]
    till.ok("o", "order.course_fired", {"course": 2}, effect="repeat")


def test_released_jobs_are_reported_so_the_spooler_is_woken(till: Till) -> None:
    # The daemon wakes the printers for the jobs an event reports; a job released from a
    # wait that went unreported would sit until the next idle poll.
    till.create("o", [{**KEBAP, "course": 1}, {**KEBAP, "line_id": "l3", "name": "Sütlaç",
                                                "course": 2}])
    assert till.send("o", "order.held", {}).new_jobs == []
    resumed = till.send("o", "order.resumed", {})
    assert resumed.new_jobs == ["o/new/grill"]                 # no station had printed
    fired = till.send("o", "order.course_fired", {"course": 2})
    assert fired.new_jobs == ["o/new-course-2/grill"]
