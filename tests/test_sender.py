"""The outbox sender against the fake upstream: real HTTP on loopback, a real SQLite file."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest

from edge.clock import SystemClock
from edge.config.models import UpstreamConfig
from edge.store import outbox
from edge.store.db import Store
from edge.upstream import cli
from edge.upstream.fake import FakeUpstream
from edge.upstream.sender import DEADLINE_FACTOR, Sender, parse_retry_after
from tests.fake_upstream import FakeUpstreamProcess

TOKEN = "s3cret-token"


@dataclass
class Rig:
    tmp: Path
    store: Store
    fake: FakeUpstream
    token_file: Path
    wan: list[bool] = field(default_factory=list)
    sender: Sender | None = None
    task: asyncio.Task[None] | None = None

    def config(self, **overrides: Any) -> UpstreamConfig:
        values: dict[str, Any] = {
            "url": self.fake.url, "token_file": self.token_file, "timeout": 0.5,
            "backoff_max": 0.2,
        }
        values.update(overrides)
        return UpstreamConfig(**values)

    def start(self, cfg: UpstreamConfig | None = None, **kw: Any) -> Sender:
        kw.setdefault("backoff_base", 0.02)
        kw.setdefault("poll_interval", 0.05)
        self.sender = Sender(self.store, cfg or self.config(), "ist-kadikoy-01",
                             clock=SystemClock(), on_wan_change=self.wan.append, **kw)
        self.task = asyncio.create_task(self.sender.run())
        return self.sender

    async def stop_sender(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            assert self.task.exception() is None if not self.task.cancelled() else True
            self.task = None

    async def write(self, records: Sequence[tuple[str, str, str | None]], **body: Any) -> None:
        """One kitchen transaction writing (record_id, kind, order_id) records, then a kick."""
        now = datetime.now(UTC)

        def unit(conn: sqlite3.Connection) -> None:
            for record_id, kind, order_id in records:
                outbox.add_record(conn, kind=kind, record_id=record_id, order_id=order_id,
                                  body={"record": record_id, **body}, created_at=now)

        await self.store.transact(lambda tx: unit(tx.conn))
        if self.sender is not None:
            self.sender.kick()

    async def states(self) -> dict[str, str]:
        return await self.store.read(
            lambda c: {r[0]: r[1] for r in c.execute("SELECT record_id, state FROM outbox")})


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    token_file = tmp_path / "upstream.token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    store = Store(tmp_path / "kitchen-edge.db")
    await store.open()
    fake = await FakeUpstream(token=TOKEN).start()
    r = Rig(tmp_path, store, fake, token_file)
    try:
        yield r
    finally:
        await r.stop_sender()
        await fake.stop()
        await store.close()


async def eventually(check: Callable[[], Any], within: float = 10.0) -> None:
    """Poll a database condition (the sender marks records shortly after the upstream)."""
    async with asyncio.timeout(within):
        while True:
            if await check():
                return
            await asyncio.sleep(0.01)


async def wan_is(rig: Rig, up: bool, within: float = 5.0) -> None:
    async def check() -> bool:
        return bool(rig.wan) and rig.wan[-1] is up
    await eventually(check, within)


def order_stream(orders: int) -> list[list[tuple[str, str, str | None]]]:
    """Transactions as a busy kitchen writes them: orders interleaved."""
    txs: list[list[tuple[str, str, str | None]]] = []
    for step in ("created", "queued", "printed", "status_a", "status_b"):
        for o in range(orders):
            oid = f"qr-{7000 + o}"
            if step == "created":
                txs.append([(f"confirmation:{oid}", "confirmation", oid),
                            (f"print_job:{oid}:queued", "print_job", oid)])
            elif step == "queued":
                continue
            elif step == "printed":
                txs.append([(f"print_job:{oid}:printed", "print_job", oid)])
            else:
                txs.append([(f"status:{oid}:{step[-1]}", "status", oid)])
    return txs


def assert_per_order_sequence(fake: FakeUpstream) -> None:
    """No batch carries two records of one order, and each order's records arrive by seq,
    each only once the one before it was accepted."""
    assert fake.order_violations == []
    first_seen: dict[str, int] = {}
    for index, request in enumerate(fake.requests):
        for record_id in request.record_ids:
            first_seen.setdefault(record_id, index)
    by_order: dict[str, list[tuple[int, str]]] = {}
    for record_id, record in fake.accepted.items():
        by_order.setdefault(record["order_id"], []).append((record["seq"], record_id))
    for order_id, records in by_order.items():
        records.sort()
        arrivals = [first_seen[rid] for _, rid in records]
        assert arrivals == sorted(arrivals) and len(set(arrivals)) == len(arrivals), order_id
    for request in fake.requests:
        orders = [fake.accepted[r]["order_id"] for r in request.record_ids if r in fake.accepted]
        assert len(orders) == len(set(orders)), "two records of one order in one batch"


async def test_down_for_a_whole_stream_then_back(rig: Rig) -> None:
    await rig.fake.set_fault("down")
    rig.start()
    txs = order_stream(30)
    await rig.write(txs[0])
    await wan_is(rig, False)
    for tx in txs[1:]:
        await rig.write(tx)

    await rig.fake.set_fault("none")
    expected = 30 * 4  # confirmation, two print jobs, the last status
    await rig.fake.wait_accepted(expected)
    await eventually(lambda: _all_done(rig))

    accepted = rig.fake.accepted
    assert len(accepted) == expected
    confirmations = [r for r in accepted if r.startswith("confirmation:")]
    assert sorted(confirmations) == sorted(f"confirmation:qr-{7000 + o}" for o in range(30))
    # Superseded statuses never left the building.
    assert not [r for r in rig.fake.received if r["record_id"].endswith(":a")]
    assert_per_order_sequence(rig.fake)
    assert rig.wan == [False, True]
    assert rig.sender is not None and rig.sender.consecutive_failures == 0
    assert rig.sender.last_success_at is not None
    # The records arrived whole, in the contract's shape.
    sample = accepted["confirmation:qr-7003"]
    assert set(sample) == {"record_id", "kind", "order_id", "seq", "created_at", "body"}
    assert sample["kind"] == "confirmation" and sample["body"] == {
        "record": "confirmation:qr-7003"}


async def _all_done(rig: Rig) -> bool:
    states = await rig.states()
    return all(s in ("accepted", "superseded") for s in states.values())


async def test_partial_accept_sends_the_rest_again_and_marks_only_what_was_accepted(
    rig: Rig,
) -> None:
    await rig.fake.set_fault("partial", accept_max=3)
    db = sqlite3.connect(str(rig.tmp / "kitchen-edge.db"))
    violations: list[set[str]] = []

    async def watch() -> None:
        # The crash-safety invariant, sampled all along: the database never calls a record
        # accepted that the upstream has not accepted.
        while True:
            marked = {r[0] for r in db.execute(
                "SELECT record_id FROM outbox WHERE state = 'accepted'")}
            extra = marked - set(rig.fake.accepted)
            if extra:
                violations.append(extra)
            await asyncio.sleep(0.003)

    watcher = asyncio.create_task(watch())
    try:
        await rig.write([(f"print_job:o{i}", "print_job", f"o{i}") for i in range(40)])
        rig.start()
        await rig.fake.wait_accepted(40)
        await eventually(lambda: _all_done(rig))
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        db.close()
    assert violations == []
    assert len(rig.fake.requests) >= 14
    assert len(rig.fake.received) > 40  # the unaccepted ones went again
    assert all(len(r.record_ids) <= 40 for r in rig.fake.requests)


async def test_retry_after_is_honoured(rig: Rig) -> None:
    await rig.fake.set_fault("429", retry_after=1)
    rig.start(rig.config(backoff_max=5.0), backoff_base=0.01)
    await rig.write([("confirmation:o1", "confirmation", "o1")])
    await rig.fake.wait_requests(1)
    await rig.fake.set_fault("none")
    # New records during the wait do not cut a server-mandated pause short.
    await asyncio.sleep(0.3)
    await rig.write([("confirmation:o2", "confirmation", "o2")])
    await rig.fake.wait_accepted(2)
    first, second = rig.fake.requests[0], rig.fake.requests[1]
    assert first.status == 429 and second.status == 200
    gap = second.at - first.at
    assert 1.0 <= gap < 1.5, gap
    assert rig.wan == [True]  # a 429 is an answer: the link is up


def test_retry_after_forms() -> None:
    now = datetime(2026, 11, 21, 18, 0, 0, tzinfo=UTC)
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after(" 1.5 ", now) == 1.5
    later = format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(later, now) == 90.0
    earlier = format_datetime(now - timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(earlier, now) == 0.0
    assert parse_retry_after("-5", now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


async def test_server_errors_back_off_exponentially_with_full_jitter(rig: Rig) -> None:
    await rig.fake.set_fault("500")
    base, cap = 0.04, 0.32
    sender = rig.start(rig.config(backoff_max=cap), backoff_base=base, rng=random.Random(7))
    await rig.write([("print_job:o1", "print_job", "o1")])
    await rig.fake.wait_requests(10)
    gaps = [b.at - a.at for a, b in zip(rig.fake.requests, rig.fake.requests[1:], strict=False)]
    ceilings = [min(cap, base * 2 ** (n - 1)) for n in range(1, 10)]
    for n, (gap, ceiling) in enumerate(zip(gaps[:9], ceilings, strict=True), start=1):
        assert gap <= ceiling + 0.15, (n, gap, ceiling)
    assert sum(gaps[:9]) <= sum(ceilings) + 0.3
    # Full jitter: delays are spread below the ceiling, not pinned to it.
    late = gaps[3:9]
    assert min(late) < 0.6 * cap and max(late) - min(late) > 0.02, late
    assert rig.wan == [True]
    assert sender.consecutive_failures >= 9
    attempts = await rig.store.read(
        lambda c: c.execute("SELECT attempts, last_error FROM outbox").fetchone())
    assert attempts[0] >= 9 and attempts[1] == "HTTP 500"

    await rig.fake.set_fault("none")
    await rig.fake.wait_accepted(1)
    await eventually(lambda: _all_done(rig))
    assert sender.consecutive_failures == 0


async def test_a_silent_network_cut_is_caught_and_the_kitchen_never_waits(rig: Rig) -> None:
    timeout = 1.0
    rig.start(rig.config(timeout=timeout))
    await rig.write([("confirmation:o1", "confirmation", "o1")])
    await rig.fake.wait_accepted(1)
    await wan_is(rig, True)

    await rig.fake.set_fault("blackhole")
    started = time.monotonic()
    await rig.write([("confirmation:o2", "confirmation", "o2")])
    await rig.fake.wait_requests(2)

    # The sender is stuck in a request that will never be answered; the kitchen is not.
    t0 = time.monotonic()
    await rig.write([("print_job:o3", "print_job", "o3")])
    assert time.monotonic() - t0 < 0.5

    await wan_is(rig, False, within=timeout * DEADLINE_FACTOR + 1.0)
    assert time.monotonic() - started <= timeout * DEADLINE_FACTOR + 0.5
    states = await rig.states()
    assert states["confirmation:o2"] == "pending"  # no 200, not accepted

    await rig.fake.set_fault("none")
    await rig.fake.wait_accepted(3)
    await eventually(lambda: _all_done(rig))
    assert rig.wan == [True, False, True]


async def test_an_answer_that_never_finishes_hits_the_overall_deadline(rig: Rig) -> None:
    # A byte every 0.15 s keeps every read inside its 0.4 s timeout; only the per-request
    # deadline (timeout x DEADLINE_FACTOR) ends the request.
    timeout = 0.4
    await rig.fake.set_fault("drip", delay=0.15)
    sender = rig.start(rig.config(timeout=timeout))
    await rig.write([("confirmation:o1", "confirmation", "o1")])
    await rig.fake.wait_requests(1)
    started = time.monotonic()
    await wan_is(rig, False, within=timeout * DEADLINE_FACTOR + 1.0)
    elapsed = time.monotonic() - started
    # The upper bound leaves room for a loaded 2-core CI machine; the lower one is the point.
    assert timeout * DEADLINE_FACTOR - 0.2 <= elapsed <= timeout * DEADLINE_FACTOR + 2.0
    assert sender.last_error == "overall deadline exceeded"
    assert (await rig.states())["confirmation:o1"] == "pending"
    await rig.fake.set_fault("none")
    await rig.fake.wait_accepted(1)


async def test_refused_records_are_parked_the_rest_delivered_and_retry_resends(
    rig: Rig,
) -> None:
    bad = {"confirmation:o3", "confirmation:o7"}
    await rig.fake.set_fault("reject", reject_ids=bad)
    txs = [[(f"confirmation:o{i}", "confirmation", f"o{i}"),
            (f"print_job:o{i}", "print_job", f"o{i}")] for i in range(12)]
    for tx in txs:
        await rig.write(tx)
    rig.start()
    await rig.fake.wait_accepted(20)

    async def parked() -> bool:
        states = await rig.states()
        return sum(s == "parked" for s in states.values()) == 2
    await eventually(parked)
    states = await rig.states()
    assert {r for r, s in states.items() if s == "parked"} == bad
    # Their orders wait behind them; everyone else is through.
    assert states["print_job:o3"] == "pending" and states["print_job:o7"] == "pending"
    assert set(rig.fake.accepted) == {r for tx in txs for r, _, _ in tx} - bad - {
        "print_job:o3", "print_job:o7"}
    assert len(rig.fake.requests) <= 16  # bisection, not one request per record
    assert rig.wan == [True]
    # Parked records are not retried by themselves.
    requests_before = len(rig.fake.requests)
    await asyncio.sleep(0.3)
    assert len(rig.fake.requests) == requests_before

    await rig.fake.set_fault("none")
    assert cli.retry_parked(rig.tmp / "kitchen-edge.db") == 2
    await rig.fake.wait_accepted(24)
    await eventually(lambda: _all_done(rig))
    assert_per_order_sequence(rig.fake)


async def test_a_wrong_token_parks_nothing_and_a_new_token_is_picked_up(rig: Rig) -> None:
    rig.token_file.write_text("not-the-token\n")
    sender = rig.start()
    await rig.write([(f"print_job:o{i}", "print_job", f"o{i}") for i in range(5)])
    await rig.fake.wait_requests(4)
    assert all(r.status == 401 for r in rig.fake.requests)
    assert set((await rig.states()).values()) == {"pending"}
    assert rig.wan == [True] and sender.consecutive_failures >= 3

    rig.token_file.write_text(TOKEN + "\n")
    await rig.fake.wait_accepted(5)
    await eventually(lambda: _all_done(rig))


async def test_a_lost_answer_means_the_records_go_again_and_count_once(rig: Rig) -> None:
    # The upstream takes the batch but the 200 never reaches us (we die, or the link does):
    # the records stay pending, and sending them again is harmless.
    await rig.fake.set_fault("slow", delay=30)
    rig.start(rig.config(timeout=5.0))
    await rig.write([(f"confirmation:o{i}", "confirmation", f"o{i}") for i in range(5)])
    await rig.fake.wait_accepted(5)
    await rig.stop_sender()  # the process is gone before the answer
    assert set((await rig.states()).values()) == {"pending"}

    await rig.fake.set_fault("none")
    rig.start()
    await eventually(lambda: _all_done(rig))
    assert len(rig.fake.accepted) == 5
    assert len(rig.fake.received) == 10


async def test_housekeeping_compacts_after_retention(rig: Rig) -> None:
    rig.start(rig.config(retention_hours=0), housekeeping_interval=0.0)
    await rig.write([("confirmation:o1", "confirmation", "o1"),
                     ("print_job:o1", "print_job", "o1"),
                     ("status:o1:a", "status", "o1")], to="+994 50 123 45 67")

    async def compacted() -> bool:
        rows = await rig.store.read(
            lambda c: c.execute("SELECT record_id, state, body FROM outbox").fetchall())
        return [tuple(r) for r in rows] == [("confirmation:o1", "accepted", "{}")]
    await eventually(compacted)
    assert len(rig.fake.accepted) == 3


async def test_housekeeping_holds_the_disk_budget_without_stopping_the_kitchen(
    rig: Rig,
) -> None:
    # Retention is days away: only the budget policy can remove anything here.
    rig.start(rig.config(retention_hours=72, disk_budget_mb=0.002), housekeeping_interval=0.0)
    await rig.write([("confirmation:o1", "confirmation", "o1"),
                     ("print_job:o1", "print_job", "o1")])
    await rig.fake.wait_accepted(2)
    await eventually(lambda: _all_done(rig))

    # Upstream down and the budget blown: the kitchen still writes, nothing it needs is lost.
    await rig.fake.set_fault("down")
    await rig.write([("status:o2:a", "status", "o2")], blob="y" * 600)
    await rig.write([("status:o2:b", "status", "o2")], blob="y" * 600)  # supersedes a
    for i in range(2, 8):
        await rig.write([(f"confirmation:o{i}", "confirmation", f"o{i}")], blob="x" * 600)
    await wan_is(rig, False)

    async def policy_applied() -> bool:
        states = await rig.states()
        return "status:o2:a" not in states and "print_job:o1" not in states
    await eventually(policy_applied)
    states = await rig.states()
    assert all(states[f"confirmation:o{i}"] == "pending" for i in range(2, 8))
    assert states["status:o2:b"] == "pending" and states["confirmation:o1"] == "accepted"


async def test_the_fake_runs_as_its_own_process(tmp_path: Path) -> None:
    fake = await asyncio.to_thread(FakeUpstreamProcess(tmp_path / "fake", token=TOKEN).start)
    store = Store(tmp_path / "kitchen-edge.db")
    await store.open()
    wan: list[bool] = []
    cfg = UpstreamConfig(url=fake.url, token_file=fake.token_file, timeout=0.5,
                         backoff_max=0.2)
    sender = Sender(store, cfg, "ist-kadikoy-01", on_wan_change=wan.append,
                    backoff_base=0.02, poll_interval=0.05)
    task = asyncio.create_task(sender.run())
    try:
        await asyncio.to_thread(fake.set_fault, "down")
        await store.transact(lambda tx: outbox.add_record(
            tx.conn, kind="confirmation", record_id="confirmation:o1", order_id="o1", body={},
            created_at=datetime.now(UTC)))
        sender.kick()
        await eventually(lambda: _true(wan == [False]))
        await asyncio.to_thread(fake.set_fault, "none")
        await eventually(lambda: _true(sender.records_accepted == 1))
        state = await asyncio.to_thread(fake.state, ids=True)
        assert state["accepted_ids"] == ["confirmation:o1"] and wan == [False, True]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await store.close()
        await asyncio.to_thread(fake.stop)


async def _true(value: bool) -> bool:
    return value


async def test_a_kick_wakes_an_idle_sender_at_once(rig: Rig) -> None:
    sender = rig.start(poll_interval=600.0)
    await rig.write([("confirmation:o1", "confirmation", "o1")])
    await rig.fake.wait_accepted(1, within=2.0)
    await eventually(lambda: _all_done(rig), within=2.0)
    await asyncio.sleep(0.1)  # the sender has found nothing more and gone idle
    # Records written by someone who cannot kick (the operator's tools) wait for the poll.
    await rig.store.transact(lambda tx: outbox.add_record(
        tx.conn, kind="confirmation", record_id="confirmation:o2", order_id="o2", body={},
        created_at=datetime.now(UTC)))
    await asyncio.sleep(0.3)
    assert "confirmation:o2" not in rig.fake.accepted
    await asyncio.to_thread(sender.kick)  # from another thread, as a database worker would
    await rig.fake.wait_accepted(2, within=2.0)


async def test_a_missing_token_file_sends_nothing_until_it_appears(rig: Rig) -> None:
    rig.token_file.unlink()
    sender = rig.start()
    await rig.write([("confirmation:o1", "confirmation", "o1")])
    await eventually(lambda: _true(sender.consecutive_failures >= 3))
    assert rig.fake.requests == [] and rig.wan == []
    assert sender.last_error is not None and "upstream.token" in sender.last_error
    rig.token_file.write_text(TOKEN)
    rig.token_file.chmod(0o600)
    await rig.fake.wait_accepted(1)


async def test_while_the_upstream_keeps_up_a_ticket_s_states_meet_and_only_the_newest_goes(
    rig: Rig,
) -> None:
    """Issue 12: a batch that emptied the outbox is followed by the next no sooner than
    `linger` later, so a ticket's queued, sending and printed records, written a few
    milliseconds apart, meet in the outbox and only printed leaves."""
    rig.start(linger=1.0)
    await rig.write([("confirmation:o1", "confirmation", "o1")])
    await rig.fake.wait_accepted(1, within=2.0)
    started = time.monotonic()
    for state in ("queued", "sending", "printed"):
        await rig.write([(f"print_job:o1/new/grill:{state}", "print_job", "o1")],
                        job_key="o1/new/grill")
    await rig.fake.wait_accepted(2, within=5.0)
    await eventually(lambda: _all_done(rig))
    assert [r["record_id"] for r in rig.fake.received] == [
        "confirmation:o1", "print_job:o1/new/grill:printed"]
    assert len(rig.fake.requests) == 2
    assert time.monotonic() - started > 0.5   # it did wait
    states = await rig.states()
    assert states["print_job:o1/new/grill:queued"] == "superseded"
    assert states["print_job:o1/new/grill:sending"] == "superseded"


async def test_the_linger_holds_a_batch_after_one_that_emptied_the_outbox_never_a_backlog(
    rig: Rig,
) -> None:
    rig.start(linger=30.0, poll_interval=600.0)
    await rig.write([("confirmation:o1", "confirmation", "o1")])
    await rig.fake.wait_accepted(1, within=2.0)
    # Until the sender has taken the answer in, its request is still out and a record
    # written meanwhile goes in a batch of its own at once (two may be out).
    for _ in range(100):
        if (await rig.states())["confirmation:o1"] == "accepted":
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)
    # The second is held by the linger (the first batch emptied the outbox)...
    await rig.write([("confirmation:o2", "confirmation", "o2")])
    await asyncio.sleep(0.5)
    assert "confirmation:o2" not in rig.fake.accepted
    # ...but a backlog (a batch that did not empty the outbox) is never held.
    await rig.stop_sender()
    rig.start(linger=30.0, poll_interval=600.0, cfg=rig.config(batch_records=1))
    await rig.write([("confirmation:o3", "confirmation", "o3")])
    await rig.fake.wait_accepted(3, within=3.0)
