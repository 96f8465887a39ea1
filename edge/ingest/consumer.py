"""The ingest loop: take what the broker has sent, commit it, then acknowledge it.

Messages are taken in batches (whatever is already queued, up to `max_batch`), applied in
one transaction and acknowledged in arrival order after COMMIT. A crash anywhere before the
commit leaves every message of the batch unacknowledged, so the broker sends it again; a
crash after the commit and before the PUBACKs makes the broker resend messages that are
already in the database, and `event_id` deduplication absorbs them.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable

import aiomqtt
import structlog

from edge import crashpoints
from edge.clock import Clock
from edge.ingest.link import ack
from edge.ingest.pipeline import BatchResult, Incoming, Pipeline
from edge.store import Store

log = structlog.get_logger(__name__)


class Ingest:
    def __init__(self, store: Store, pipeline: Pipeline, clock: Clock, *, max_batch: int,
                 on_batch: Callable[[BatchResult], None]) -> None:
        self.store = store
        self.pipeline = pipeline
        self.clock = clock
        self.max_batch = max_batch
        self.on_batch = on_batch
        self.committed = 0
        # Tests and shutdown wait on this to know nothing is half-applied.
        self.idle = asyncio.Event()
        self.idle.set()

    async def consume(self, client: aiomqtt.Client) -> None:
        messages = client.messages
        queue: asyncio.Queue[aiomqtt.Message] = client._queue
        async for first in messages:
            self.idle.clear()
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    batch.append(queue.get_nowait())
                except asyncio.QueueEmpty:
                    break
            incoming = [Incoming(str(m.topic), _bytes(m.payload)) for m in batch]
            now = self.clock.now()
            result = await self.store.transact(
                functools.partial(self.pipeline.apply_batch, batch=incoming, now=now))
            crashpoints.reached("after_commit_before_ack")
            # Committed: only now may the broker forget these messages.
            for message in batch:
                ack(client, message)
            self.committed += len(batch)
            self.idle.set()
            self._log(result)
            self.on_batch(result)

    @staticmethod
    def _log(result: BatchResult) -> None:
        for o in result.outcomes:
            if o.result == "dead":
                log.warning("event_dead_lettered", topic=o.topic, reason=o.reason,
                            order_id=o.order_id, event_id=o.event_id, type=o.event_type)
            elif o.result == "duplicate":
                log.info("event_duplicate", order_id=o.order_id, event_id=o.event_id)
            else:
                log.info("event_applied", order_id=o.order_id, event_id=o.event_id,
                         type=o.event_type, effect=o.result, jobs=o.new_jobs or None)


def _bytes(payload: object) -> bytes:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    if isinstance(payload, str):
        return payload.encode()
    return b"" if payload is None else str(payload).encode()
