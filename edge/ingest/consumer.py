"""The ingest loop: take what the broker has sent, make it durable, acknowledge it, apply it.

Messages are taken in batches (whatever is already queued, up to `max_batch`) and stored in
one transaction; the PUBACKs go out, in arrival order, only once it is on disk
(`Store.synced`, usually by the fsync of the ticket's claim that follows). A crash
before the commit leaves every message of the batch unacknowledged, so the broker sends it
again; a crash after the commit and before the PUBACKs makes the broker resend messages that
are already stored, and `event_id` deduplication absorbs them.

A second task applies the stored events (see `edge.ingest.pipeline`). While a backlog is
arriving it lets the intake run ahead, but never waits longer than `APPLY_MAX_LAG` before
applying a chunk, so tickets start printing while the broker's queue is still draining.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from typing import TypeVar

import structlog

from edge import crashpoints
from edge.clock import Clock
from edge.component import IntakeClosed
from edge.ingest.mqtt_compat import Session
from edge.ingest.parse import connector_topic
from edge.ingest.pipeline import BatchResult, Incoming, Outcome, Pipeline, Result
from edge.orders.commands import COMMANDS
from edge.store import Priority, Store, Tx
from edge.store.trouble import StorageTrouble

log = structlog.get_logger(__name__)

T = TypeVar("T")
# What `Ingest.submit_with` hands its function: take these payloads in, in this transaction.
Accept = Callable[[Sequence[bytes]], list[Outcome]]

APPLY_MAX_LAG = 1.0
# Events applied per transaction: a short hold on the single writer, so the intake and the
# spooler's claims get their turn during a backlog.
APPLY_CHUNK = 64


class Ingest:
    def __init__(self, store: Store, pipeline: Pipeline, clock: Clock, *,
                 max_batch: int) -> None:
        self.store = store
        self.pipeline = pipeline
        self.clock = clock
        self.max_batch = max_batch
        self.committed = 0
        self.applied = 0
        # Shutdown waits on this: set while no batch is half-way between COMMIT and PUBACK.
        self.idle = asyncio.Event()
        self.idle.set()
        # Set while the applier is not in the middle of a pass (its results not yet handed on).
        self.applier_idle = asyncio.Event()
        self.applier_idle.set()
        self.stopping = False
        self._stopped = asyncio.Event()
        self._pending = asyncio.Event()
        self._backlog = 0          # messages waiting in the client's queue at the last look

    async def submit(self, source: str, payloads: Sequence[bytes]) -> list[Outcome]:
        """The intake of in-process order sources (connectors): the same durable accept path
        as broker messages (validate, dedupe by event_id, dead-letter the invalid, one
        durable transaction), returning once COMMIT is on disk, one outcome per payload:
        `accepted` (durable, applied shortly), `duplicate`, or `dead` with the reason. Only
        then may the connector acknowledge its partner. Raises `IntakeClosed` once the
        daemon is stopping: nothing was stored, the partner must not be told otherwise."""
        if not payloads:
            return []
        return await self.submit_with(source, lambda tx, accept: accept(payloads))

    async def submit_with(self, source: str, fn: Callable[[Tx, Accept], T]) -> T:
        """`submit` for a connector that keeps a record of its own beside the events:
        `fn(tx, accept)` runs in one durable transaction of the writer, where
        `accept(payloads)` takes payloads in as `submit` does (their outcomes) and `fn` may
        read and write the connector's rows (through their table owner) in the same
        transaction, deciding from what is already there what to take in. Whatever it
        writes commits exactly with the events; if it raises, neither does. Returns fn's
        result once COMMIT is on disk. It runs on the database thread: only the `Tx`."""
        if self.stopping:
            raise IntakeClosed("the kitchen is shutting down; nothing was stored")
        topic = connector_topic(self.pipeline.root, source)
        now = self.clock.now()
        results: list[BatchResult] = []

        def unit(tx: Tx) -> T:
            def accept(payloads: Sequence[bytes]) -> list[Outcome]:
                result = self.pipeline.accept_batch(
                    tx, [Incoming(topic, p) for p in payloads], now)
                results.append(result)
                return result.outcomes

            return fn(tx, accept)

        value = await self.store.transact(unit, priority=Priority.INTAKE)
        taken = sum(len(r.outcomes) for r in results)
        if taken:
            self.committed += taken
            self._pending.set()
        for result in results:
            self._hint(result)
            self._log(result)
        return value

    async def command(self, name: str, payload: bytes) -> Outcome:
        """An operator command from inside the daemon (the screens' reprint button): the same
        path as one on `{root}/commands/{name}`, in one durable transaction; its outcome
        (`command`, `duplicate`, or `dead` with the reason)."""
        if self.stopping:
            raise IntakeClosed("the kitchen is shutting down; nothing was stored")
        if name not in COMMANDS:
            raise ValueError(f"unknown command {name!r}")
        incoming = [Incoming(self.pipeline.command_topic(name), payload)]
        now = self.clock.now()
        result = await self.store.transact(
            functools.partial(self.pipeline.accept_batch, batch=incoming, now=now),
            priority=Priority.INTAKE)
        self._pending.set()       # an order answer is an event for the applier
        self._log(result)
        return result.outcomes[0]

    def stop(self) -> None:
        """Take and apply nothing more. What arrives from now on stays unacknowledged, so
        the broker sends it again on this session's next connection; what is stored and not
        yet applied is applied at the next start."""
        self.stopping = True
        self._stopped.set()
        self._pending.set()

    async def consume(self, session: Session) -> None:
        async for first in session.messages:
            if self.stopping:
                continue
            self.idle.clear()
            batch = [first]
            while len(batch) < self.max_batch:
                more = session.take_nowait()
                if more is None:
                    break
                batch.append(more)
            incoming = [Incoming(str(m.topic), _bytes(m.payload)) for m in batch]
            try:
                result = await self._store_batch(incoming)
                if result is None:
                    continue    # stopping while the disk was full: none of it acknowledged
                # Committed, not yet on disk. The applier goes first: the claim of the
                # ticket it makes is a durable commit whose fsync also puts this batch on
                # disk (one fsync before the first ticket byte, not two). It is woken after
                # the hint: the batch's occurred_at may set an unsynchronised clock forward
                # before the applier takes its `now` for these tickets.
                self._hint(result)
                self._pending.set()
                self._log(result)
                # More already waiting is a backlog being taken in: the applier holds back
                # meanwhile, so no claim's fsync is coming to share.
                if not await self._on_disk(incoming, linger=session.backlog() == 0):
                    continue    # stopping while the disk refused: none of it acknowledged
                crashpoints.reached("after_commit_before_ack")
                # On disk: only now may the broker forget these messages.
                for message in batch:
                    session.ack(message)
                self.committed += len(batch)
                self._backlog = session.backlog()
            except BaseException:
                # Cancelled mid-batch (the connection dropped): the commit may still land,
                # unacknowledged, and the resend is deduplicated. The old client's queue
                # is gone with it, so it is no backlog to wait for.
                self._backlog = 0
                raise
            finally:
                self.idle.set()

    def _hint(self, result: BatchResult) -> None:
        """Publishers' clocks tell an unsynchronised box that it is behind (edge.clock);
        before the applier takes its `now` for these events' tickets."""
        stamps = [o.occurred_at for o in result.outcomes
                  if o.occurred_at is not None and o.result is Result.ACCEPTED]
        if stamps:
            self.clock.hint(max(stamps))

    async def _store_batch(self, incoming: list[Incoming]) -> BatchResult | None:
        """The batch in one transaction, committed without waiting for the disk (see
        `_on_disk`). While the disk refuses it, nothing is acknowledged and nothing more is
        taken (the broker keeps the rest; what it already sent waits unacknowledged in the
        client's queue): the same batch is tried again once the disk takes writes. None
        when the daemon stops meanwhile: the broker sends the batch again on the next
        connection."""
        while True:
            now = self.clock.now()
            try:
                return await self.store.transact(
                    functools.partial(self.pipeline.accept_batch, batch=incoming, now=now),
                    durable=False, priority=Priority.INTAKE)
            except StorageTrouble as exc:
                log.error("events_not_stored", events=len(incoming), storage=exc.kind,
                          error=exc.detail, hint="not acknowledged: the broker keeps them")
            if not await self._disk_back():
                return None
            self._pending.set()    # the applier's pass behind the retried batch, as above

    async def _on_disk(self, incoming: list[Incoming], *, linger: bool) -> bool:
        """Wait until the committed batch is on disk (`Store.synced`: the next durable
        commit, usually a ticket's claim, or an fsync of the WAL). While the disk refuses
        the fsync nothing is acknowledged; once it takes writes again the batch is stored
        again in a durable transaction (its events are duplicates by then, or stored anew
        if the first commit did not hold) and then waited for afresh. False when the daemon
        stops meanwhile: the broker sends the batch again on the next connection."""
        while True:
            try:
                await self.store.synced(linger=linger)
                return True
            except StorageTrouble as exc:
                log.error("events_not_synced", events=len(incoming), storage=exc.kind,
                          error=exc.detail, hint="not acknowledged: the broker keeps them")
            if not await self._disk_back():
                return False
            try:
                await self.store.transact(
                    functools.partial(self.pipeline.accept_batch, batch=incoming,
                                      now=self.clock.now()),
                    priority=Priority.INTAKE)
            except StorageTrouble:
                continue

    async def _disk_back(self) -> bool:
        """Wait for the disk to take writes again; False when the daemon stops meanwhile.
        Nothing is acknowledged while this waits, so shutdown need not wait for it."""
        self.idle.set()
        try:
            await self._until_storage_or_stop()
        finally:
            self.idle.clear()
        return not self.stopping

    async def _until_storage_or_stop(self) -> None:
        async with asyncio.TaskGroup() as group:
            back = group.create_task(self.store.disk.wait_ok())
            stop = group.create_task(self._stopped.wait())
            await asyncio.wait({back, stop}, return_when=asyncio.FIRST_COMPLETED)
            back.cancel()
            stop.cancel()

    async def run_applier(self) -> None:
        """Apply stored events until cancelled; first whatever a crash left unapplied.

        While passes come back full (a backlog of stored events), the next pass is queued on
        the writer before this one's results are logged: the writer works on it while the
        event loop logs and sends out what this one changed, rather than after. Its `now` is
        taken then, after this pass, as it would be for a pass started afterwards."""
        self._pending.set()
        waited_since: float | None = None
        ahead: asyncio.Future[BatchResult] | None = None
        while True:
            if ahead is None:
                await self._pending.wait()
                if self.stopping:
                    await asyncio.Event().wait()      # until cancelled
                # A backlog is arriving: let the intake take it off the broker first, up to
                # a lag.
                if self._backlog > 0:
                    now = self.clock.monotonic()
                    waited_since = waited_since if waited_since is not None else now
                    if now - waited_since < APPLY_MAX_LAG:
                        await asyncio.sleep(0.01)
                        continue
                waited_since = None
                self._pending.clear()
                self.applier_idle.clear()
                ahead = self._apply_pass()
            current, ahead = ahead, None
            self.applier_idle.clear()
            try:
                try:
                    result = await current
                except StorageTrouble as exc:
                    # The events are stored; they are applied once the disk takes writes.
                    log.error("events_not_applied", storage=exc.kind, error=exc.detail)
                    self.applier_idle.set()
                    await self.store.disk.wait_ok()
                    self._pending.set()
                    continue
                if len(result.outcomes) >= APPLY_CHUNK:
                    if self._backlog > 0 or self.stopping:
                        self._pending.set()    # more to do, once the intake lets us
                    else:
                        ahead = self._apply_pass()     # more to do: queued at once
                        await asyncio.sleep(0)         # the writer takes it up
                if result.outcomes:
                    self.applied += sum(1 for o in result.outcomes if o.result != "dead")
                    self._log(result)
            finally:
                if ahead is None:
                    self.applier_idle.set()

    def _apply_pass(self) -> asyncio.Future[BatchResult]:
        """One pass of the applier (up to APPLY_CHUNK stored events) queued on the writer."""
        return self.store.submit(
            functools.partial(self.pipeline.apply_pending, now=self.clock.now(),
                              limit=APPLY_CHUNK),
            durable=False, priority=Priority.APPLY)

    @staticmethod
    def _log(result: BatchResult) -> None:
        for o in result.outcomes:
            if o.result == "dead":
                log.warning("event_dead_lettered", topic=o.topic, reason=o.reason,
                            order_id=o.order_id, event_id=o.event_id, type=o.event_type)
            elif o.result == "duplicate":
                log.info("event_duplicate", order_id=o.order_id, event_id=o.event_id)
            elif o.result != "accepted":
                log.info("event_applied", order_id=o.order_id, event_id=o.event_id,
                         type=o.event_type, effect=o.result, jobs=o.new_jobs or None)


def _bytes(payload: object) -> bytes:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    if isinstance(payload, str):
        return payload.encode()
    return b"" if payload is None else str(payload).encode()
