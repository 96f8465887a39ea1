"""The partner-call outbox and its sender, against a real HTTP receiver that goes down, 429s
with Retry-After, 500s and refuses with a 4xx; on a real SQLite file.

What must hold: a call is done only after a 2xx (a refused or lost one is sent again), the
calls of one order reach the partner in the order they were written (a retried or parked one
holds the later ones back; other orders carry on), other 4xx are parked until the operator
retries them, and a committed call wakes the sender through the feed at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from edge.clock import SystemClock
from edge.component import Board, Context
from edge.config.models import Config
from edge.connectors.calls import (
    SEND,
    WAIT,
    CallSender,
    Destination,
    Verdict,
    retry_after_seconds,
)
from edge.feed import Feed, RecordQueued
from edge.orders.records import queue_call
from edge.store import Store, calls
from edge.store.calls import Call
from tests.broker import free_port


@dataclass
class Partner:
    """A partner's API: answers by a script (per path: a list of statuses to give in turn,
    then 200), records every request, and can go down (its port closed) and come back."""

    port: int
    script: dict[str, list[int | tuple[int, dict[str, str]]]] = field(default_factory=dict)
    seen: list[tuple[float, str, str, str, dict[str, str]]] = field(default_factory=list)
    runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.text()
        self.seen.append((time.monotonic(), request.method, request.path, body,
                          dict(request.headers)))
        queue = self.script.get(request.path, [])
        answer = queue.pop(0) if queue else 200
        status, headers = answer if isinstance(answer, tuple) else (answer, {})
        return web.json_response({"status": status}, status=status, headers=headers)

    async def up(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def down(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    def paths(self, method: str | None = None) -> list[str]:
        return [s[2] for s in self.seen if method is None or s[1] == method]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"


class _Health:
    def status_line(self) -> str:
        return "test"

    def broker_connected(self) -> bool:
        return True

    async def metrics(self) -> tuple[bytes, str]:
        return b"", "text/plain"


@dataclass
class Rig:
    store: Store
    feed: Feed
    partner: Partner
    ctx: Context
    tmp: Path
    sender: CallSender | None = None
    task: asyncio.Task[None] | None = None

    def start(self, **kw: Any) -> CallSender:
        token = self.tmp / "partner.token"
        token.write_text("s3cret\n")
        token.chmod(0o600)
        dest = Destination("yemek", self.partner.url, token_file=token, timeout=1.0,
                           backoff_base=kw.pop("backoff_base", 0.05),
                           backoff_max=kw.pop("backoff_max", 0.5),
                           poll_interval=kw.pop("poll_interval", 30.0))
        # A fresh board, as a restarted daemon has.
        self.ctx = dataclasses.replace(self.ctx, board=Board())
        self.sender = CallSender(self.ctx, dest, rng=random.Random(3),
                                 gate=kw.pop("gate", None))
        self.task = asyncio.create_task(self._run(self.sender))
        return self.sender

    @staticmethod
    async def _run(sender: CallSender) -> None:
        await sender.start()
        await sender.run()

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None
        if self.sender is not None:
            await self.sender.close()

    async def queue(self, *items: tuple[str | None, str, str], key: str | None = None) -> None:
        """One kitchen transaction queueing (order_id, method, path) calls."""
        now = datetime.now(UTC)

        def unit(tx: Any) -> None:
            for order_id, method, path in items:
                queue_call(tx, "yemek", order_id=order_id, method=method, path=path,
                           body={"path": path}, now=now, call_key=key)

        await self.store.transact(unit)

    async def states(self) -> dict[str, str]:
        return {c.path: c.state for c in await self.store.read(lambda c: calls.listing(c))}


async def until(check: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    feed = Feed()
    store = Store(tmp_path / "k.db", feed)
    await store.open()
    partner = Partner(free_port())
    await partner.up()
    cfg = Config(site="t", state_dir=tmp_path)

    def publish(*_: Any, **__: Any) -> None:
        return None

    ctx = Context(cfg=cfg, store=store, feed=feed, clock=SystemClock(), publish=publish,
                  intake=None, health=_Health())  # type: ignore[arg-type]
    r = Rig(store, feed, partner, ctx, tmp_path)
    try:
        yield r
    finally:
        await r.stop()
        await partner.down()
        await store.close()


async def test_a_committed_call_wakes_the_sender_at_once_and_is_done_after_a_2xx(
        rig: Rig) -> None:
    woken: list[RecordQueued] = []
    rig.feed.subscribe(RecordQueued, woken.append)
    rig.start(poll_interval=600.0)
    await asyncio.sleep(0.1)          # idle: nothing due, waiting up to 600 s
    started = time.monotonic()
    await rig.queue(("o1", "put", "/orders/success/k1"))
    assert woken == [RecordQueued("yemek", "o1")]
    await until(lambda: _true(rig.partner.paths() == ["/api/orders/success/k1"]), within=2.0)
    assert time.monotonic() - started < 1.0
    _, method, _, body, headers = rig.partner.seen[0]
    assert method == "PUT" and body == '{"path":"/orders/success/k1"}'
    assert headers["Authorization"] == "Bearer s3cret"
    assert headers["Content-Type"] == "application/json"
    assert headers["Idempotency-Key"].startswith("call-")
    await until(lambda: _eq(rig.states(), {"/orders/success/k1": "done"}))


async def test_one_orders_calls_keep_their_order_through_500s_and_429s(rig: Rig) -> None:
    rig.partner.script["/api/orders/success/k1"] = [500, (429, {"Retry-After": "0.4"}), 503]
    await rig.queue(("o1", "PUT", "/orders/success/k1"), ("o1", "PUT", "/orders/accept/k1"),
                    ("o1", "PUT", "/orders/ontheway/k1"))
    rig.start()
    await until(lambda: _eq(rig.states(), dict.fromkeys(
        ["/orders/success/k1", "/orders/accept/k1", "/orders/ontheway/k1"], "done")))
    assert rig.partner.paths() == ["/api/orders/success/k1"] * 4 + [
        "/api/orders/accept/k1", "/api/orders/ontheway/k1"]
    # The 429's Retry-After was honoured: no request within 0.4 s of it.
    times = [s[0] for s in rig.partner.seen]
    assert times[2] - times[1] >= 0.4 - 0.02
    success = (await rig.store.read(lambda c: calls.listing(c)))[0]
    assert (success.attempts, success.status_code, success.last_error) == (4, 200, None)


async def test_a_refused_call_is_parked_and_holds_back_only_its_own_order(rig: Rig) -> None:
    rig.partner.script["/api/orders/accept/k1"] = [422]
    await rig.queue(("o1", "PUT", "/orders/accept/k1"), ("o1", "PUT", "/orders/complete/k1"),
                    ("o2", "PUT", "/orders/accept/k2"))
    sender = rig.start()
    await until(lambda: _eq(rig.states(), {"/orders/accept/k1": "parked",
                                           "/orders/complete/k1": "pending",
                                           "/orders/accept/k2": "done"}))
    await asyncio.sleep(0.3)
    assert "/api/orders/complete/k1" not in rig.partner.paths()
    parked = await rig.store.read(lambda c: calls.listing(c, state="parked"))
    assert parked[0].status_code == 422 and "HTTP 422" in (parked[0].last_error or "")
    assert sender.last_error is not None and "422" in sender.last_error
    # What the operator's status page shows for this partner.
    board = await rig.ctx.board.sections()["calls-yemek"]()
    assert board["calls"] == {"parked": 1, "pending": 1, "done": 1}
    assert [(c["path"], c["status_code"]) for c in board["parked"]] == [
        ("/orders/accept/k1", 422)]
    # The operator's retry sends it again, then the held-back call follows.
    at = datetime.now(UTC).isoformat()
    assert await rig.store.transact(lambda tx: calls.retry_parked(tx.conn, "yemek", at)) == 1
    sender.kick()
    await until(lambda: _eq(rig.states(), dict.fromkeys(
        ["/orders/accept/k1", "/orders/complete/k1", "/orders/accept/k2"], "done")))
    assert rig.partner.paths()[-2:] == ["/api/orders/accept/k1", "/api/orders/complete/k1"]


async def test_a_partner_that_goes_down_gets_everything_once_it_is_back(rig: Rig) -> None:
    await rig.partner.down()
    rig.start(backoff_max=0.3)
    await rig.queue(("o1", "PUT", "/orders/success/k1"), ("o2", "PUT", "/orders/success/k2"))
    await until(lambda: _attempted(rig, 3))
    assert rig.partner.seen == []
    pending = await rig.store.read(lambda c: calls.listing(c))
    assert all(c.state == "pending" for c in pending)
    assert "ConnectError" in (pending[0].last_error or "")
    await rig.partner.up()
    await until(lambda: _eq(rig.states(), {"/orders/success/k1": "done",
                                           "/orders/success/k2": "done"}))
    assert sorted(rig.partner.paths()) == ["/api/orders/success/k1", "/api/orders/success/k2"]


async def test_calls_survive_a_restart_and_a_call_key_queues_once(rig: Rig) -> None:
    await rig.partner.down()
    await rig.queue(("o1", "PUT", "/orders/success/k1"), key="success:k1")
    await rig.queue(("o1", "PUT", "/orders/success/k1"), key="success:k1")   # applied again
    assert len(await rig.store.read(lambda c: calls.listing(c))) == 1
    rig.start(backoff_max=0.2)
    await until(lambda: _attempted(rig, 1))
    await rig.stop()                              # the daemon stops with the call unsent
    await rig.partner.up()
    rig.start()
    await until(lambda: _eq(rig.states(), {"/orders/success/k1": "done"}))
    await asyncio.sleep(0.2)
    assert rig.partner.paths() == ["/api/orders/success/k1"]


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert retry_after_seconds("2.5", 0.0) == 2.5
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", 1445412470.0) == 10.0
    assert retry_after_seconds("soon", 0.0) is None
    assert retry_after_seconds(None, 0.0) is None


async def _attempted(rig: Rig, n: int) -> bool:
    rows = await rig.store.read(lambda c: calls.listing(c))
    return bool(rows) and rows[0].attempts >= n


async def _eq(value: Awaitable[Any], expected: Any) -> bool:
    return bool(await value == expected)


async def _true(value: bool) -> bool:
    return value


@dataclass
class ScriptedGate:
    """A partner's own rule: paths it holds back, paths it drops, and every 2xx it is told."""

    hold: set[str] = field(default_factory=set)
    drop: set[str] = field(default_factory=set)
    asked: list[str] = field(default_factory=list)
    answers: list[tuple[str, int, bytes]] = field(default_factory=list)

    async def before(self, call: Call) -> Verdict:
        self.asked.append(call.path)
        if call.path in self.drop:
            return Verdict("drop", "the partner has it already")
        return WAIT if call.path in self.hold else SEND

    async def answered(self, call: Call, status: int, body: bytes) -> None:
        self.answers.append((call.path, status, body))


async def test_a_gate_holds_back_an_order_drops_what_is_moot_and_hears_each_answer(
        rig: Rig) -> None:
    gate = ScriptedGate(hold={"/o1/first"}, drop={"/o2/first"})
    sender = rig.start(gate=gate)
    await rig.queue(("o1", "PUT", "/o1/first"), ("o1", "PUT", "/o1/second"),
                    ("o2", "PUT", "/o2/first"), ("o2", "PUT", "/o2/second"))
    await until(lambda: _eq(rig.states(), {"/o1/first": "pending", "/o1/second": "pending",
                                           "/o2/first": "done", "/o2/second": "done"}))
    # Held: neither it nor its order's later call went; dropped: never sent, done.
    assert rig.partner.paths() == ["/api/o2/second"]
    dropped = await rig.store.read(lambda c: next(x for x in calls.listing(c)
                                                  if x.path == "/o2/first"))
    assert dropped.status_code is None and dropped.last_error == "the partner has it already"
    assert [(p, st) for p, st, _ in gate.answers] == [("/o2/second", 200)]
    assert b'"status": 200' in gate.answers[0][2]
    # Asked again without a kick (not in a busy loop), and sent once the rule allows it.
    asked = gate.asked.count("/o1/first")
    await asyncio.sleep(1.5)
    assert 1 <= gate.asked.count("/o1/first") - asked <= 3
    gate.hold.clear()
    sender.kick()
    await until(lambda: _eq(rig.states(), {"/o1/first": "done", "/o1/second": "done",
                                           "/o2/first": "done", "/o2/second": "done"}))
    assert rig.partner.paths() == ["/api/o2/second", "/api/o1/first", "/api/o1/second"]
