"""Upstream sync end to end (issue 5): the daemon as its own process, a real broker, a virtual
printer, and the fake upstream on real HTTP.

The fake runs in this test process on an event loop of its own thread (the daemon is another
process, so the link between them is a real TCP connection): the tests read everything it
received, bodies included, which its separate-process form does not expose.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from edge.upstream.fake import FakeUpstream, RequestLog
from tests.broker import Broker
from tests.daemon import ROOT, DaemonProc, Listener, Publisher, created
from tests.printing_env import Kitchen, has_line, job_key_of, kitchen

TOKEN = "e2e-token"
T = TypeVar("T")
GRILL = [{"line_id": "l1", "name": "Adana kebap", "qty": 1, "category": "grill"}]
ONE_STATION = [{"id": "grill", "printer": "hot", "categories": ["grill"]}]
REPO = Path(__file__).resolve().parent.parent


class Upstream:
    """A FakeUpstream served from its own thread; snapshots are taken on that thread."""

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.token_file = workdir / "upstream.token"
        self.token_file.write_text(TOKEN + "\n")
        self.token_file.chmod(0o600)     # a secret: the daemon refuses one others can read
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fake-upstream",
                                       daemon=True)
        self.thread.start()
        self.fake = FakeUpstream(token=TOKEN)
        self._call(self.fake.start())

    def _call(self, coro: Any, timeout: float = 15.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def on_loop(self, fn: Callable[[], T]) -> T:
        done: Future[T] = Future()

        def run() -> None:
            try:
                done.set_result(fn())
            except BaseException as exc:  # handed back to the caller
                done.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return done.result(10)

    @property
    def url(self) -> str:
        return self.fake.url

    def config(self, **extra: Any) -> dict[str, Any]:
        return {"url": self.url, "token_file": str(self.token_file), **extra}

    def set_fault(self, mode: str, **options: Any) -> None:
        self._call(self.fake.set_fault(mode, **options))  # type: ignore[arg-type]

    def requests(self) -> list[RequestLog]:
        return self.on_loop(lambda: list(self.fake.requests))

    def received(self) -> list[dict[str, Any]]:
        return self.on_loop(lambda: [dict(r) for r in self.fake.received])

    def accepted(self) -> dict[str, dict[str, Any]]:
        return self.on_loop(lambda: dict(self.fake.accepted))

    def violations(self) -> list[tuple[str, int, int]]:
        return self.on_loop(lambda: list(self.fake.order_violations))

    def wait(self, predicate: Callable[[FakeUpstream], bool], within: float = 10.0) -> None:
        self._call(self.fake.wait_for(lambda: predicate(self.fake), within), within + 5)

    def stop(self) -> None:
        self._call(self.fake.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[Upstream]:
    up = Upstream(tmp_path / "upstream")
    try:
        yield up
    finally:
        up.stop()


@dataclass
class Outbox:
    seq: int
    record_id: str
    kind: str
    order_id: str | None
    state: str
    attempts: int


def outbox(d: DaemonProc) -> list[Outbox]:
    return [Outbox(int(r[0]), str(r[1]), str(r[2]), r[3], str(r[4]), int(r[5]))
            for r in d.query("SELECT seq, record_id, kind, order_id, state, attempts"
                             " FROM outbox ORDER BY seq")]


def drained(d: DaemonProc) -> bool:
    """Every ticket printed (a ticket is on paper a moment before its `printed` records are
    written) and every record accepted."""
    busy = d.scalar("SELECT COUNT(*) FROM print_jobs WHERE state IN ('waiting', 'queued',"
                    " 'sending')")
    unsent = d.scalar("SELECT COUNT(*) FROM outbox WHERE state IN ('pending', 'parked')")
    return int(busy) == 0 and int(unsent) == 0


def close_client(client: Listener | Publisher) -> None:
    # Disconnect first: paho's loop thread then ends at once, not at its next select timeout.
    client.client.disconnect()
    client.client.loop_stop()


def retained(broker: Broker, topic: str) -> dict[str, Any]:
    """What a newcomer subscribing now gets first: the retained message of `topic`."""
    listener = Listener(broker.port, topic)
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            for t, body, kept in list(listener.messages):
                if t == topic:
                    assert kept and isinstance(body, dict), (body, kept)
                    return body
            time.sleep(0.02)
        raise TimeoutError(f"nothing retained on {topic}")
    finally:
        close_client(listener)


@pytest.fixture
def listeners() -> Iterator[list[Listener]]:
    opened: list[Listener] = []
    try:
        yield opened
    finally:
        for listener in opened:
            close_client(listener)


def wan_state(broker: Broker, listeners: list[Listener]) -> Listener:
    listener = Listener(broker.port, f"{ROOT}/edge/state")
    listeners.append(listener)
    return listener


def wait_wan(states: Listener, value: str, since: int = 0, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for _, body, _ in states.messages[since:]:
            if isinstance(body, dict) and body.get("wan") == value:
                assert body["state"] == "online"
                return
        time.sleep(0.02)
    raise TimeoutError(f"edge/state never said wan={value}: {states.messages[since:]}")


def stream(k: Kitchen, orders: list[str], printer: str = "hot") -> list[float]:
    """Publish orders one by one; each ticket's publish-to-paper time."""
    latencies: list[float] = []
    have = len(k.tickets(printer))
    for order_id in orders:
        sent = time.monotonic()
        k.pos.order(created(order_id, GRILL))
        jobs = k.wait_tickets(printer, have + 1, timeout=5)
        latencies.append(time.monotonic() - sent)
        assert job_key_of(jobs[have]) == f"{order_id}/new/grill"
        have += 1
    return latencies


def assert_normal_speed(latencies: list[float]) -> None:
    """Each ticket on paper within 1 s of its order; the first after a daemon start may take
    up to 3 s (imports and first connections, nothing to do with the upstream)."""
    assert latencies[0] < 3.0 and max(latencies[1:], default=0.0) < 1.0, latencies


def assert_delivered(d: DaemonProc, up: Upstream, orders: list[str], *,
                     lost_answers: bool = False) -> dict[str, Any]:
    """Every record arrived, per order in seq order, each accepted once, confirmations once."""
    rows = outbox(d)
    by_id = {r.record_id: r for r in rows}
    accepted, received, requests = up.accepted(), up.received(), up.requests()
    assert [r for r in rows if r.state not in ("accepted", "superseded")] == []
    mine = {r.record_id for r in rows if r.state == "accepted"}
    # Marked accepted here only after the upstream listed it in a 200.
    assert mine <= set(accepted)
    # What the upstream holds and we do not call accepted was superseded by a newer status
    # of its order, or a newer record of its print job, after a lost answer (then it is
    # moot); never anything else.
    extra = set(accepted) - mine
    assert all(by_id[r].state == "superseded" and by_id[r].kind in ("status", "print_job")
               for r in extra)
    if not lost_answers:
        assert extra == set()
    # The wire form is the database row.
    for record in received:
        row = by_id[record["record_id"]]
        assert (record["seq"], record["kind"], record["order_id"]) == (
            row.seq, row.kind, row.order_id)
        assert record["created_at"].endswith("Z")
    # Per order, records go in seq order, and none before every earlier one of its order
    # that was ever sent had a 200.
    assert up.violations() == []
    ok: set[str] = set()
    for request in requests:
        batch_orders = [by_id[r].order_id for r in request.record_ids]
        assert len(batch_orders) == len(set(batch_orders)), "two records of one order at once"
        for record_id in request.record_ids:
            row = by_id[record_id]
            earlier = [r for r in rows if r.order_id == row.order_id and r.seq < row.seq
                       and (r.state != "superseded" or r.record_id in accepted)]
            assert all(e.record_id in ok for e in earlier), (record_id, earlier)
        if request.status == 200:
            ok |= set(request.record_ids)
    # One confirmation per order, by record id, whatever was sent twice.
    confirmations = [r for r in accepted.values() if r["kind"] == "confirmation"]
    assert Counter(r["order_id"] for r in confirmations) == Counter(orders)
    assert {r["record_id"] for r in confirmations} == {f"confirmation:{o}" for o in orders}
    assert {r["order_id"] for r in accepted.values()} == set(orders)
    return accepted


# -- down for a whole stream --------------------------------------------------------------


def test_upstream_down_for_a_whole_stream_then_back(tmp_path: Path, broker: Broker,
                                                    upstream: Upstream,
                                                    listeners: list[Listener]) -> None:
    upstream.set_fault("down")
    cfg = {"upstream": upstream.config(timeout=1.0, backoff_max=1.0)}
    with kitchen(tmp_path, broker, printers=("hot",), stations=ONE_STATION, **cfg) as k:
        wan = wan_state(broker, listeners)
        orders = [f"qr-{7000 + i}" for i in range(20)]
        latencies = stream(k, orders)
        assert_normal_speed(latencies)
        wait_wan(wan, "down")
        assert retained(broker, f"{ROOT}/edge/state")["wan"] == "down"
        k.daemon.wait_until(lambda: k.daemon.scalar(
            "SELECT COUNT(*) FROM print_jobs WHERE state='printed'") == len(orders),
            what="all printed")
        rows = outbox(k.daemon)
        assert {r.state for r in rows} <= {"pending", "superseded"}
        assert any(r.attempts > 0 for r in rows)  # it did try, and nothing was lost
        assert upstream.requests() == []

        mark = len(wan.messages)
        back = time.monotonic()
        upstream.set_fault("none")
        k.daemon.wait_until(lambda: drained(k.daemon), timeout=15, what="outbox drained")
        drain = time.monotonic() - back
        wait_wan(wan, "up", since=mark)
        assert retained(broker, f"{ROOT}/edge/state")["wan"] == "up"
        accepted = assert_delivered(k.daemon, upstream, orders)
        kinds = Counter(r["kind"] for r in accepted.values())
        assert kinds["confirmation"] == len(orders)
        # Each job's unsent queued and sending records were superseded by its printed one
        # while the upstream was away: only the newest state of a job goes.
        jobs_sent = [r["body"] for r in accepted.values() if r["kind"] == "print_job"]
        assert sorted(b["job_key"] for b in jobs_sent) == sorted(
            f"{o}/new/grill" for o in orders)
        assert {b["state"] for b in jobs_sent} == {"printed"}
        assert kinds["status"] >= len(orders)
    print(f"\nupstream down: {len(orders)} tickets, max {max(latencies) * 1000:.0f} ms, median "
          f"{sorted(latencies)[len(latencies) // 2] * 1000:.0f} ms; back: {len(accepted)} "
          f"records in {drain:.2f}s")


# -- 429 with Retry-After -------------------------------------------------------------------


def test_429_retry_after_is_honoured_and_kicks_do_not_cut_it_short(
        tmp_path: Path, broker: Broker, upstream: Upstream, listeners: list[Listener]) -> None:
    upstream.set_fault("429", retry_after=2)
    cfg = {"upstream": upstream.config(timeout=2.0, backoff_max=3.0)}
    with kitchen(tmp_path, broker, printers=("hot",), stations=ONE_STATION, **cfg) as k:
        wan = wan_state(broker, listeners)
        latencies = stream(k, ["r-1"])
        upstream.wait(lambda f: len(f.requests) >= 1)
        # New records during the wait kick the sender; Retry-After still holds.
        latencies += stream(k, ["r-2", "r-3"])
        upstream.wait(lambda f: len(f.requests) >= 2, within=6)
        upstream.set_fault("none")
        upstream.wait(lambda f: len(f.requests) >= 3, within=6)
        k.daemon.wait_until(lambda: drained(k.daemon), timeout=15, what="outbox drained")
        # A 429 is an answer: the link is up all along.
        wait_wan(wan, "up")
        assert all(body.get("wan") != "down" for _, body, _ in wan.messages
                   if isinstance(body, dict))
        requests = upstream.requests()
        assert [r.status for r in requests[:3]] == [429, 429, 200]
        gaps = [b.at - a.at for a, b in itertools.pairwise(requests[:3])]
        assert all(2.0 <= gap <= 3.5 for gap in gaps), gaps
        assert_normal_speed(latencies)
        assert_delivered(k.daemon, upstream, ["r-1", "r-2", "r-3"])
    print(f"\n429 Retry-After 2: retries after {', '.join(f'{g:.2f}s' for g in gaps)}")


# -- blackhole --------------------------------------------------------------------------------


def test_blackholed_upstream_times_out_wan_down_kitchen_unaffected_then_catches_up(
        tmp_path: Path, broker: Broker, upstream: Upstream, listeners: list[Listener]) -> None:
    upstream.set_fault("blackhole")
    cfg = {"upstream": upstream.config(timeout=0.5, backoff_max=1.0)}
    with kitchen(tmp_path, broker, printers=("hot",), stations=ONE_STATION, **cfg) as k:
        wan = wan_state(broker, listeners)
        orders = [f"b-{i}" for i in range(6)]
        latencies = stream(k, orders[:3])
        wait_wan(wan, "down", timeout=10)
        latencies += stream(k, orders[3:])      # while requests hang unanswered
        assert_normal_speed(latencies)
        held = upstream.requests()
        assert held and all(r.status == 0 for r in held)   # taken, never answered
        rows = outbox(k.daemon)
        assert {r.state for r in rows} <= {"pending", "superseded"}
        errors = {e[0] for e in k.daemon.query("SELECT last_error FROM outbox WHERE attempts>0")}
        assert errors and all("Timeout" in str(e) or "deadline" in str(e) for e in errors), errors

        mark = len(wan.messages)
        upstream.set_fault("none")
        k.daemon.wait_until(lambda: drained(k.daemon), timeout=15, what="outbox drained")
        wait_wan(wan, "up", since=mark)
        assert_delivered(k.daemon, upstream, orders)


# -- parked records ---------------------------------------------------------------------------


def test_refused_record_is_parked_its_order_waits_others_flow_and_retry_sends_it(
        tmp_path: Path, broker: Broker, upstream: Upstream) -> None:
    orders = ["p-1", "p-2", "p-3"]
    upstream.set_fault("reject", reject_ids={"confirmation:p-2"})
    cfg = {"upstream": upstream.config(timeout=2.0, backoff_max=1.0)}
    with kitchen(tmp_path, broker, printers=("hot",), stations=ONE_STATION, **cfg) as k:
        d = k.daemon
        latencies = stream(k, orders)
        assert_normal_speed(latencies)

        def settled() -> bool:
            rows = outbox(d)
            parked = [r.record_id for r in rows if r.state == "parked"]
            others = [r for r in rows if r.order_id != "p-2" and r.state == "pending"]
            return parked == ["confirmation:p-2"] and not others and d.scalar(
                "SELECT COUNT(*) FROM print_jobs WHERE state='printed'") == 3

        d.wait_until(settled, timeout=15, what="p-2's confirmation parked, the rest accepted")
        rows = outbox(d)
        held_back = [r for r in rows if r.order_id == "p-2" and r.state == "pending"]
        assert held_back, "p-2's later records wait behind its parked confirmation"
        accepted = upstream.accepted()
        assert not any(r["order_id"] == "p-2" for r in accepted.values())
        assert {r["order_id"] for r in accepted.values()} == {"p-1", "p-3"}

        # Visible to the operator, with why.
        shown = subprocess.run(
            [sys.executable, "-m", "edge", "outbox", "status", "--config", str(d.config),
             "--json"], capture_output=True, text=True, cwd=REPO, timeout=30, check=True)
        status = json.loads(shown.stdout)
        assert status["parked"] == 1 and status["blocked"] == len(held_back)
        parked = status["parked_records"]
        assert [p["record_id"] for p in parked] == ["confirmation:p-2"]
        assert "400" in parked[0]["last_error"]

        # The upstream is fixed; the operator sends the parked record again.
        upstream.set_fault("none")
        retried = subprocess.run(
            [sys.executable, "-m", "edge", "outbox", "retry-parked", "--config", str(d.config)],
            capture_output=True, text=True, cwd=REPO, timeout=30, check=True)
        assert retried.stdout.startswith("1 parked record(s) queued again")
        d.wait_until(lambda: drained(d), timeout=15, what="outbox drained after retry")
        assert_delivered(d, upstream, orders)
        p2 = sorted((r["seq"], r["kind"]) for r in upstream.accepted().values()
                    if r["order_id"] == "p-2")
        assert p2[0][1] == "confirmation"


# -- SIGKILL during a sync ------------------------------------------------------------------


def test_sigkill_while_a_batch_is_in_flight_loses_nothing(tmp_path: Path, broker: Broker,
                                                          upstream: Upstream) -> None:
    upstream.set_fault("down")
    cfg = {"upstream": upstream.config(timeout=5.0, backoff_max=1.0)}
    first, later = [f"k-{i}" for i in range(5)], [f"k-{i}" for i in range(5, 8)]
    with kitchen(tmp_path, broker, printers=("hot",), stations=ONE_STATION, **cfg) as k:
        d = k.daemon
        stream(k, first)
        # Slow: the upstream takes the records at once and answers 3 s later, so the batch
        # (the head record of each order) is in flight, received but unanswered, when the
        # daemon dies.
        upstream.set_fault("slow", delay=3.0)
        upstream.wait(lambda f: len(f.requests) >= 1)
        in_flight = upstream.requests()[0].record_ids
        assert len(in_flight) == len(first)
        d.kill()
        killed_at = time.monotonic()
        # The upstream has them; nothing here says so, since no 200 ever reached us.
        assert set(in_flight) <= set(upstream.accepted())
        states = {r.record_id: r.state for r in outbox(d)}
        assert all(states[r] in ("pending", "superseded") for r in in_flight)
        assert "accepted" not in states.values()

        # Orders keep coming while the daemon is down: the broker holds them.
        for order_id in later:
            k.pos.order(created(order_id, GRILL))
        upstream.set_fault("none")
        d.start()
        k.wait_tickets("hot", len(first) + len(later), timeout=15)
        d.wait_until(lambda: drained(d), timeout=15, what="outbox drained after restart")
        recovered = time.monotonic() - killed_at
        accepted = assert_delivered(d, upstream, first + later, lost_answers=True)
        received = Counter(r["record_id"] for r in upstream.received())
        resent = [r for r in in_flight if received[r] >= 2]
        assert resent, "the unanswered batch must go again"
        assert len(accepted) == len(set(accepted))
        # Each ticket printed once, unless marked as a possible duplicate.
        keys = Counter(job_key_of(j) for j in k.tickets("hot"))
        assert set(keys) == {f"{o}/new/grill" for o in first + later}
        for job in k.tickets("hot"):
            if keys[job_key_of(job)] > 1:
                assert has_line(job, "MAY BE DUPLICATE")
    print(f"\nSIGKILL mid-sync: {len(in_flight)} records in flight, {len(resent)} sent again, "
          f"{len(accepted)} distinct accepted, recovered in {recovered:.2f}s")


def test_sigkill_mid_drain_loses_nothing_and_resends_only_unaccepted_records(
        tmp_path: Path, broker: Broker, upstream: Upstream) -> None:
    """Issue 17: a backlog drains in pipelined batches (several requests out, small batches
    here so there are many); SIGKILL while it drains. Afterwards every record is delivered,
    per order in seq order, and what the database had marked accepted never goes again."""
    upstream.set_fault("down")
    cfg = {"upstream": upstream.config(timeout=5.0, backoff_max=1.0, batch_records=3)}
    orders = [f"d-{i}" for i in range(12)]
    with kitchen(tmp_path, broker, printers=("hot",), stations=ONE_STATION, **cfg) as k:
        d = k.daemon
        stream(k, orders)
        d.wait_until(lambda: d.scalar(
            "SELECT COUNT(*) FROM print_jobs WHERE state='printed'") == len(orders),
            what="all printed")
        waiting = d.scalar("SELECT COUNT(*) FROM outbox WHERE state = 'pending'")
        assert waiting >= 2 * len(orders)
        # Each request is taken at once and answered 0.3 s later: with several out at once,
        # some batches are marked accepted and others are in flight at any moment.
        upstream.set_fault("slow", delay=0.3)
        d.wait_until(lambda: d.scalar(
            "SELECT COUNT(*) FROM outbox WHERE state = 'accepted'") >= 6,
            timeout=20, what="part of the backlog accepted")
        d.kill()
        marked = {r.record_id for r in outbox(d) if r.state == "accepted"}
        pending = {r.record_id for r in outbox(d) if r.state == "pending"}
        assert marked and pending, "killed mid-drain"
        before_restart = len(upstream.received())
        # Requests overlapped: the drain was pipelined.
        assert upstream.on_loop(lambda: upstream.fake.most_at_once) >= 2

        upstream.set_fault("none")
        d.start()
        d.wait_until(lambda: drained(d), timeout=20, what="outbox drained after restart")
        assert_delivered(d, upstream, orders, lost_answers=True)
        again = [r["record_id"] for r in upstream.received()[before_restart:]]
        assert again, "the rest went after the restart"
        assert not set(again) & marked, "a record marked accepted went again"


# -- timelines ----------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def test_timeline_five_steps_for_qr_and_website_orders(tmp_path: Path, broker: Broker,
                                                      upstream: Upstream,
                                                      listeners: list[Listener]) -> None:
    phone = "+994 50 123 45 67"
    qr = created("qr-7001", GRILL, event_id="public_intake_qr_table_7", channel="qr_menu",
                 display_id="A-17")
    web = created("web-8102", GRILL, event_id="public_intake_website_delivery",
                  channel="website", fulfillment={"type": "delivery", "courier": "restaurant"},
                  customer={"name": "Aysel", "phone": phone})
    cfg = {"upstream": upstream.config(timeout=2.0, backoff_max=1.0)}
    with kitchen(tmp_path, broker, printers=("hot",), stations=ONE_STATION, **cfg) as k:
        wan = wan_state(broker, listeners)
        for body in (qr, web):
            body["occurred_at"] = _now()
            k.pos.order(body)
        k.wait_tickets("hot", 2)
        d = k.daemon
        d.wait_until(lambda: d.scalar(
            "SELECT COUNT(*) FROM print_jobs WHERE state='printed'") == 2, what="printed")
        d.wait_until(lambda: drained(d), timeout=15, what="outbox drained")
        wait_wan(wan, "up")
        accepted = assert_delivered(d, upstream, ["qr-7001", "web-8102"])
        statuses = Listener(broker.port, f"{ROOT}/orders/+/status")
        listeners.append(statuses)

        expect = {"qr-7001": ("qr_menu", "public_intake_qr_table_7", "qr-7001/new/grill"),
                  "web-8102": ("website", "public_intake_website_delivery",
                               "web-8102/new/grill")}
        for order_id, (channel, intake, job_key) in expect.items():
            # The newest status record the upstream got for the order...
            synced = max((r for r in accepted.values()
                          if r["order_id"] == order_id and r["kind"] == "status"),
                         key=lambda r: r["seq"])["body"]
            # ...is the retained timeline on the broker.
            topic = f"{ROOT}/orders/{order_id}/status"
            deadline = time.monotonic() + 5
            published: Any = None
            kept_flag = False
            while time.monotonic() < deadline:
                mine = [(b, kept) for t, b, kept in statuses.messages if t == topic]
                if mine and mine[-1][0] == synced:
                    published, kept_flag = mine[-1]
                    break
                time.sleep(0.02)
            assert published == synced, (published, synced)
            assert kept_flag, "subscribed after the fact: it must be the retained message"
            timeline = synced
            assert timeline["order_id"] == order_id and timeline["channel"] == channel
            assert timeline["read_only"] is True and timeline["external_mutation"] is False
            steps = timeline["steps"]
            assert [(s["sequence"], s["key"]) for s in steps] == [
                (1, "order_accepted"), (2, "routed_to_core"), (3, "kitchen_ticket_created"),
                (4, "printer_job_created"), (5, "confirmation_outboxed")]
            assert [s["label"] for s in steps] == [
                "Order accepted", "Sent to restaurant", "Kitchen received",
                "Ticket printed or queued", "Confirmation recorded"]
            assert [s["evidence"] for s in steps] == [
                intake, f"ingest_{intake}", f"ingest_{intake}", job_key,
                f"confirmation:{order_id}"]
            assert all(s["customer_visible"] for s in steps)
            # Evidence ids are real rows: the job that printed, the record the upstream has.
            assert d.scalar("SELECT state FROM print_jobs WHERE job_key=?", (job_key,)) == (
                "printed")
            assert f"confirmation:{order_id}" in accepted
            stamps = [s["at"] for s in steps]
            assert stamps[:4] == sorted(stamps[:4]) and stamps[2] <= stamps[4], stamps
            printed_at = d.scalar("SELECT printed_at FROM print_jobs WHERE job_key=?",
                                  (job_key,))
            assert stamps[3] == printed_at[:19] + "Z"
            assert timeline["last_status"] == "Confirmation recorded"
            assert timeline["checks"] == {
                "core_routed": True, "printer_stage": True, "confirmation_stage": True,
                "evidence_linked": True, "read_only": True, "no_lan_block": True}
            text = json.dumps(timeline)
            assert "123 45 67" not in text and "994" not in text and "Aysel" not in text
            # Every status record of the order the upstream got, in seq order, grows the
            # same timeline: steps are only ever added, never rewritten out of order.
            history = sorted((r for r in accepted.values()
                              if r["order_id"] == order_id and r["kind"] == "status"),
                             key=lambda r: r["seq"])
            for record in history:
                keys = [s["key"] for s in record["body"]["steps"]]
                assert keys == [s["key"] for s in steps if s["key"] in keys]
                assert keys[0] == "order_accepted"
