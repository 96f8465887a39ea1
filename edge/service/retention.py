"""Retention as a component (issue 12, docs/retention.md): a periodic, low-priority pass
that compacts final orders past the retention period (and orders abandoned before becoming
final, past a longer one), caps dead letters and the activity
log, and hands the freed pages back to the file system.

Every step is a short transaction of about `chunk_rows` rows (or `vacuum_pages` pages) on
the kitchen's one writer, with a pause between them, so a ticket waiting to be claimed never
waits behind retention for more than one small step. Retention's commits are not durable
(`durable=False`): a power cut may take back the last step, which the next pass redoes; a
step is one transaction, so it is never half done.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog

from edge.clock import rfc3339_ms
from edge.component import BaseComponent, Context
from edge.config.models import RetentionConfig
from edge.store import retention

log = structlog.get_logger(__name__)

# Let the morning's recovery (queued tickets, the outbox) go first.
FIRST_PASS_AFTER = 60.0
# Between two steps: the writer is free for the kitchen.
PAUSE = 0.05


@dataclass
class PassReport:
    started_at: str
    orders: int = 0
    rows: int = 0
    dead_letters: int = 0
    activities: int = 0
    tombstones: int = 0
    pages: int = 0
    steps: int = 0


class Retention(BaseComponent):
    name = "retention"

    def __init__(self, ctx: Context, cfg: RetentionConfig) -> None:
        self.ctx = ctx
        self.cfg = cfg
        self.last: PassReport | None = None
        self.passes = 0
        ctx.board.add("retention", self.status)

    async def status(self) -> dict[str, Any]:
        return {"days": self.cfg.days, "passes": self.passes,
                "last_pass": None if self.last is None else asdict(self.last)}

    async def run(self) -> None:
        clock = self.ctx.clock
        await clock.sleep(min(FIRST_PASS_AFTER, self.cfg.every_minutes * 60))
        while True:
            try:
                await self.run_pass()
            except Exception:   # a full disk, say: the next pass tries again
                log.exception("retention_pass_failed")
            await clock.sleep(self.cfg.every_minutes * 60)

    async def _step(self, fn: Any) -> Any:
        result = await self.ctx.store.transact(lambda tx: fn(tx.conn), durable=False)
        await asyncio.sleep(PAUSE)
        return result

    async def run_pass(self, now: datetime | None = None) -> PassReport:
        now = now or self.ctx.clock.now()
        cfg = self.cfg
        at = rfc3339_ms(now)
        before = rfc3339_ms(now - timedelta(days=cfg.days))
        upstream = self.ctx.cfg.upstream is not None
        report = PassReport(started_at=at)
        kinds = [(True, before)]
        if cfg.open_days is not None:
            kinds.append((False, rfc3339_ms(now - timedelta(days=cfg.open_days))))
        for final, cutoff in kinds:
            cursor = retention.START
            while True:
                done: retention.Compacted = await self._step(
                    lambda c, after=cursor, final=final, cutoff=cutoff: retention.compact_due(
                        c, before=cutoff, upstream=upstream, now=at,
                        max_rows=cfg.chunk_rows, after=after, final=final))
                cursor = done.cursor
                report.orders += done.orders
                report.rows += done.rows
                report.steps += 1
                if done.orders == 0:
                    break
        for table, keep, field in (("dead_letters", cfg.max_dead_letters, "dead_letters"),
                                   ("activities", cfg.max_activities, "activities")):
            while True:
                gone: int = await self._step(
                    lambda c, t=table, k=keep: retention.cap_newest(c, t, keep=k,
                                                                  limit=cfg.chunk_rows))
                setattr(report, field, getattr(report, field) + gone)
                report.steps += 1
                if gone < cfg.chunk_rows:
                    break
        if cfg.tombstone_days is not None:
            expired_before = rfc3339_ms(now - timedelta(days=cfg.tombstone_days))
            while True:
                expired: int = await self._step(
                    lambda c: retention.expire_tombstones(c, before=expired_before,
                                                          limit=cfg.chunk_rows))
                report.tombstones += expired
                report.steps += 1
                if expired < cfg.chunk_rows:
                    break
        while True:
            released: int = await self._step(
                lambda c: retention.release_pages(c, cfg.vacuum_pages))
            report.pages += released
            report.steps += 1
            if released < cfg.vacuum_pages:
                break
        self.last = report
        self.passes += 1
        if report.orders or report.dead_letters or report.activities or report.pages \
                or report.tombstones:
            log.info("retention_pass", **asdict(report))
        return report


__all__ = ["PassReport", "Retention"]
