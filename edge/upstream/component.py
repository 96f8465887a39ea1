"""Upstream sync as a component: the outbox sender, woken by `RecordQueued("upstream")`, its
WAN judgement published to the feed (`WanChanged`: the broker presence says it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edge.clock import rfc3339
from edge.component import BaseComponent, Context
from edge.config.models import UpstreamConfig
from edge.feed import RecordQueued, WanChanged
from edge.store import outbox
from edge.upstream.sender import Sender

UPSTREAM = "upstream"


class Upstream(BaseComponent):
    name = "upstream"

    def __init__(self, ctx: Context, cfg: UpstreamConfig) -> None:
        self.ctx = ctx
        self.sender = Sender(ctx.store, cfg, ctx.cfg.site, clock=ctx.clock,
                             on_wan_change=lambda up: ctx.feed.publish([WanChanged(up)]))
        self._unsubscribe: Callable[[], None] | None = None
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
        def queued(change: RecordQueued) -> None:
            if change.destination == UPSTREAM:
                self.sender.kick()

        self._unsubscribe = self.ctx.feed.subscribe(RecordQueued, queued)

    async def run(self) -> None:
        await self.sender.run()

    async def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()


__all__ = ["Upstream"]
