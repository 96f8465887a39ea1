"""Upstream sync as a component: the outbox sender, woken by `RecordQueued("upstream")`, its
WAN judgement published to the feed (`WanChanged`: the broker presence says it)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from edge.clock import rfc3339
from edge.component import BaseComponent, Context
from edge.config.models import UpstreamConfig
from edge.feed import RecordQueued, WanChanged
from edge.store import outbox
from edge.upstream.sender import Sender

UPSTREAM = "upstream"
# New records wake the sender this long after the first of them, not at once: an order's
# records come from several commits within milliseconds (intake, each ticket's claim and
# print), and waking per commit made a POST, and a durable write before it, per commit, on
# the same writer and CPU the kitchen's tickets need (issue 17). The cloud hears a tenth of
# a second later.
SEND_LINGER = 0.1


class Upstream(BaseComponent):
    name = "upstream"

    def __init__(self, ctx: Context, cfg: UpstreamConfig) -> None:
        self.ctx = ctx
        self.sender = Sender(ctx.store, cfg, ctx.cfg.site, clock=ctx.clock,
                             on_wan_change=lambda up: ctx.feed.publish([WanChanged(up)]))
        self._unsubscribe: Callable[[], None] | None = None
        self._kick_due: asyncio.TimerHandle | None = None
        ctx.board.add("upstream", self.status)

    async def status(self) -> dict[str, Any]:
        """The outbox and the sender, for the operator."""
        now = self.ctx.clock.now()
        stats = await self.ctx.store.read(lambda c: outbox.stats(c, now))
        sender = self.sender
        return {
            **stats.as_dict(),
            "wan": None if sender.wan_up is None else ("up" if sender.wan_up else "down"),
            "last_accepted_at": rfc3339(sender.last_success_at)
            if sender.last_success_at else None,
            "last_error": sender.last_error,
            "consecutive_failures": sender.consecutive_failures,
            "records_accepted": sender.records_accepted,
        }

    async def start(self) -> None:
        def kick() -> None:
            self._kick_due = None
            self.sender.kick()

        def queued(change: RecordQueued) -> None:
            if change.destination == UPSTREAM and self._kick_due is None:
                self._kick_due = asyncio.get_running_loop().call_later(SEND_LINGER, kick)

        self._unsubscribe = self.ctx.feed.subscribe(RecordQueued, queued)

    async def run(self) -> None:
        await self.sender.run()

    async def close(self) -> None:
        if self._kick_due is not None:
            self._kick_due.cancel()
        if self._unsubscribe is not None:
            self._unsubscribe()


__all__ = ["Upstream"]
