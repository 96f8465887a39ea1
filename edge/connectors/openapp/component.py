"""OpenApp's side of the broker: what the kitchen answers and pushes, from its outbox.

Every answer and every pushed change is a row of `openapp_out`, written in the transaction
that decided it (`edge.orders.openapp`). This component publishes the rows on
`{root}/openapp/out` in the order they were written, after one durable write (so an answer
from a transaction that committed without waiting for the disk is on disk before it leaves
the box), and marks each sent once the broker has taken it. A crash before that leaves the
row unsent, and it is published at the next start: every answer arrives at least once, and
exactly once unless the daemon dies between the broker's PUBACK and the mark (then twice,
with the same `message_id`).

It also registers the transactional reaction that turns POS-side changes of a streamed
table's check into `TableOrderSnapshotChanged` messages, and the `openapp` section of the
operator's status page.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import structlog

from edge import crashpoints
from edge.clock import rfc3339_ms
from edge.component import BaseComponent, Context
from edge.feed import EventApplied
from edge.orders import openapp
from edge.store import Tx
from edge.store import checks as check_table
from edge.store import openapp as messages

log = structlog.get_logger(__name__)

BATCH = 200
# Sent messages and applied requests are kept this long (for the operator, and to
# recognise a late redelivery), then forgotten; looked at once an hour.
RETENTION = timedelta(hours=72)
PRUNE_EVERY = 3600.0


class OpenApp(BaseComponent):
    name = "openapp"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.topic = f"{ctx.cfg.root}/openapp/out"
        menu = ctx.cfg.menu_data
        self._currency = menu.currency if menu is not None else None
        self._wake = asyncio.Event()
        self._cursor = 0                      # rows up to this id are with the broker link
        self._unsubscribe: Callable[[], None] | None = None
        self.published = 0
        ctx.store.react(EventApplied, self._react)
        ctx.board.add("openapp", self.status)

    def _react(self, tx: Tx, change: EventApplied) -> None:
        openapp.on_applied(tx, change, root=self.ctx.cfg.root, currency=self._currency,
                           now=self.ctx.clock.now())

    async def status(self) -> dict[str, Any]:
        stats, streams = await self.ctx.store.read(
            lambda c: (messages.stats(c), check_table.active_streams(c)))
        return {"topic": self.topic, "streamed_tables": [s.table_id for s in streams],
                "unsent": stats.unsent, "oldest_unsent_at": stats.oldest_unsent_at,
                "sent": stats.sent, "published_since_start": self.published}

    async def start(self) -> None:
        self._unsubscribe = self.ctx.feed.subscribe(openapp.TableMessageQueued,
                                                    lambda _c: self._wake.set())
        self._wake.set()          # what a crash left unsent goes first

    async def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._prune_loop(), name="openapp-prune")
            while True:
                await self._wake.wait()
                self._wake.clear()
                try:
                    await self._hand_over()
                except asyncio.CancelledError:
                    raise
                except Exception:  # a database hiccup must not end the answering
                    log.exception("openapp_publish_error")
                    await asyncio.sleep(1.0)
                    self._wake.set()

    async def _prune_loop(self) -> None:
        while True:
            before = rfc3339_ms(self.ctx.clock.now() - RETENTION)
            try:
                gone = await self.ctx.store.transact(
                    functools.partial(_prune, before=before), durable=False)
            except asyncio.CancelledError:
                raise
            except Exception:  # tried again in an hour; answering goes on meanwhile
                log.exception("openapp_prune_failed")
            else:
                if gone:
                    log.info("openapp_pruned", rows=gone, before=before)
            await asyncio.sleep(PRUNE_EVERY)

    async def _hand_over(self) -> None:
        at = rfc3339_ms(self.ctx.clock.now())
        # A durable write: answers applied without waiting for the disk are made durable
        # before anything about them leaves the box.
        rows = await self.ctx.store.transact(
            lambda tx: messages.hand_unsent(tx.conn, at, BATCH, after=self._cursor))
        for row in rows:
            crashpoints.reached("openapp_before_publish")
            self.ctx.publish(self.topic, row.body.encode(),
                             on_sent=functools.partial(self._sent, row.id, row.message_id))
            self._cursor = max(self._cursor, row.id)
        if len(rows) == BATCH:
            self._wake.set()

    async def _sent(self, row_id: int, message_id: str) -> None:
        at = rfc3339_ms(self.ctx.clock.now())
        # Lost to a power cut, the message is simply published again (same message_id).
        await self.ctx.store.transact(lambda tx: messages.mark_sent(tx.conn, [row_id], at),
                                      durable=False)
        self.published += 1
        log.info("openapp_message_sent", message_id=message_id)


def _prune(tx: Tx, *, before: str) -> int:
    return messages.prune(tx.conn, before)


__all__ = ["OpenApp"]
