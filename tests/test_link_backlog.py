"""The broker link coming back to a large backlog on a slow event loop (a loaded box).

Mosquitto 2.0 sends a resumed session's queue past our Receive Maximum once PUBACKs flow,
and resends everything in flight on the next connection, all of it ahead of any SUBACK or
PUBACK in the same TCP stream. paho decodes it one packet per event-loop turn, so on a busy
loop an acknowledgement can be many seconds behind. The link must not take that for a dead
connection: reconnecting makes the broker resend the same backlog, in a loop that never gets
out. Real mosquitto, the real `BrokerLink`; the event loop is slowed by a task that blocks
it a few milliseconds per turn (as the daemon's own work does on a loaded box).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
import structlog.testing

from edge.config import load_config
from edge.ingest.link import BrokerLink, Consumer
from edge.ingest.mqtt_compat import Session
from tests.broker import Broker
from tests.daemon import ROOT, Publisher, write_config

EVENTS = 2000
# Per loop turn; with one packet decoded per turn, the backlog takes about EVENTS * STALL
# to read through: well past aiomqtt's 10 s default acknowledgement timeout.
STALL = 0.007


async def _stall_the_loop() -> None:
    while True:
        time.sleep(STALL)  # noqa: ASYNC251 - the point: a busy event loop
        await asyncio.sleep(0)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path / "broker").start()
    yield b
    b.stop()


async def test_a_resent_backlog_on_a_slow_loop_is_taken_in_one_connection(
        tmp_path: Path, broker: Broker) -> None:
    cfg = load_config(write_config(tmp_path / "station.yaml", broker_port=broker.port))

    def run_link(consume: Consumer) -> asyncio.Task[None]:
        return asyncio.create_task(BrokerLink(cfg).run(consume))

    async def connect_until(consume: Consumer, reached: asyncio.Event, within: float) -> None:
        """One connection of the link, dropped once `reached` is set."""
        task = run_link(consume)
        await asyncio.wait_for(reached.wait(), within)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    # The daemon's session and subscriptions exist; then it is away while orders queue up.
    subscribed = asyncio.Event()

    async def first(session: Session) -> None:
        subscribed.set()
        await asyncio.Event().wait()

    await connect_until(first, subscribed, 10)

    def publish_backlog() -> None:
        pos = Publisher(broker.port)
        try:
            infos = [pos.send(f"{ROOT}/orders/o-{n}/events", f'{{"n":{n}}}', wait=False)
                     for n in range(EVENTS)]
            for info in infos:
                info.wait_for_publish(timeout=30)
        finally:
            pos.close()

    await asyncio.to_thread(publish_backlog)

    # A connection that takes a hundred messages and is gone: the broker has sent the rest after
    # that PUBACK, so all of it is in flight, to be resent on the next connection.
    flooded = asyncio.Event()

    async def one_then_away(session: Session) -> None:
        taken = 0
        async for message in session.messages:
            session.ack(message)
            taken += 1
            if taken >= 100:
                break
        for _ in range(500):
            if session.backlog() > 1000:
                flooded.set()
                break
            await asyncio.sleep(0.02)
        await asyncio.Event().wait()

    await connect_until(one_then_away, flooded, 15)

    # Back, on a slow loop: everything is taken in on the first connection, none dropped.
    seen: set[bytes] = set()
    connections = 0
    done = asyncio.Event()

    async def take_all(session: Session) -> None:
        nonlocal connections
        connections += 1
        async for first in session.messages:
            batch = [first]
            while (more := session.take_nowait()) is not None:
                batch.append(more)
            for message in batch:
                seen.add(bytes(message.payload))  # type: ignore[arg-type, unused-ignore]
                session.ack(message)
            if len(seen) >= EVENTS - 100:
                done.set()

    stall = asyncio.create_task(_stall_the_loop())
    with structlog.testing.capture_logs() as logs:
        task = run_link(take_all)
        try:
            deadline = time.monotonic() + 120
            while not done.is_set():
                dropped = [e for e in logs if e["event"] == "mqtt_disconnected"]
                assert not dropped, f"the link dropped its connection: {dropped[0]}"
                assert time.monotonic() < deadline, f"took {len(seen)} of {EVENTS - 100}"
                await asyncio.sleep(0.2)
            assert connections == 1
        finally:
            stall.cancel()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
