"""The aggregator connector as a component (CONTRACT section 10): the order API on
`aggregator.listen` (HTTPS with `tls_cert_file` / `tls_key_file`), the webhooks' reaction
and their sender, and a section on the operator's board.

The kitchen comes first: an API that cannot listen (the port is taken, the certificate does
not load) logs why, shows it on the board and tries again with backoff, while the rest of
the daemon prints as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
from typing import Any

import structlog
from aiohttp import web

from edge.backoff import Backoff
from edge.component import BaseComponent, Context
from edge.config.models import AggregatorConfig
from edge.connectors.aggregator import mapping
from edge.connectors.aggregator.api import AggregatorApi
from edge.connectors.aggregator.webhooks import DESTINATION, Webhooks
from edge.connectors.calls import CallSender, Destination
from edge.feed import OrderStageChanged
from edge.orders import acceptance
from edge.store import calls, platform_orders

log = structlog.get_logger(__name__)

# A stopping daemon lets requests in hand finish (they are one transaction each).
GRACE = 5.0


def tls_context(cfg: AggregatorConfig) -> ssl.SSLContext | None:
    """The server's TLS context, or None for plain HTTP. Raises what the files do."""
    if cfg.tls_cert_file is None or cfg.tls_key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cfg.tls_cert_file), str(cfg.tls_key_file))
    return context


class Aggregator(BaseComponent):
    name = "aggregator"

    def __init__(self, ctx: Context, cfg: AggregatorConfig) -> None:
        self.ctx = ctx
        self.cfg = cfg
        self.api = AggregatorApi(cfg, ctx.intake, ctx.clock)
        self.sender = CallSender(ctx, Destination(
            DESTINATION, cfg.webhook_url, cfg.webhook_token_file,
            timeout=cfg.webhook_timeout, backoff_max=cfg.webhook_retry_max,
            # Idle, it looks again this often: `kitchen-edge aggregator retry-parked` (another
            # process) cannot wake it.
            poll_interval=2.0))
        ctx.store.react(OrderStageChanged, Webhooks(cfg, ctx.clock).react)
        self.listening = False
        self.listen_error: str | None = None
        self._runner: web.AppRunner | None = None
        ctx.board.add("aggregator", self.status)

    async def status(self) -> dict[str, Any]:
        """The API for the operator: where it listens, what it answered, what waits."""
        now = self.ctx.clock.now()
        counts, recent, waiting = await self.ctx.store.read(lambda c: (
            platform_orders.counts(c), platform_orders.recent(c, 10),
            [w for w in acceptance.waiting(c, now) if w.channel == mapping.CHANNEL]))
        webhooks = await self.ctx.store.read(lambda c: calls.counts(c, DESTINATION))
        figures = self.api.figures
        return {
            "listen": self.cfg.listen, "tls": self.cfg.tls, "listening": self.listening,
            "listen_error": self.listen_error, "auto_accept": self.cfg.auto_accept,
            "prep_minutes": self.cfg.prep_minutes, "webhook_url": self.cfg.webhook_url,
            "answers": {str(k): v for k, v in sorted(figures.answers.items())},
            "last_refusal": figures.last_refusal,
            "order_answer_ms": {"last": figures.last_ms, "slowest": figures.slowest_ms},
            "orders": counts,
            "waiting_for_acceptance": [
                {"order_id": w.order_id, "display_id": w.display_id,
                 "waiting_s": round(w.waited_s), "reminded": w.reminded} for w in waiting],
            "webhooks": webhooks,
            "recent": [{"platform_id": o.platform_id, "order_id": o.order_id,
                        "fulfillment": o.fulfillment, "answer": o.answer,
                        "dasher_status": o.dasher_status, "received_at": o.received_at,
                        "cancelled": o.cancelled_at is not None} for o in recent],
        }

    async def start(self) -> None:
        await self.sender.start()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self.sender.run(), name="aggregator-webhooks")
            group.create_task(self._serve(), name="aggregator-api")

    async def _serve(self) -> None:
        backoff = Backoff(1.0, 30.0, floor=0.5, rng=random.Random())
        while True:
            try:
                await self._listen()
            except (OSError, ssl.SSLError, ValueError) as exc:
                self.listen_error = f"{type(exc).__name__}: {exc}"
                delay = backoff.failed()
                log.error("aggregator_listen_failed", listen=self.cfg.listen,
                          error=self.listen_error, retry_in=round(delay, 1))
                await self._release()
                await asyncio.sleep(delay)
                continue
            self.listen_error = None
            await asyncio.Event().wait()    # until cancelled

    async def _listen(self) -> None:
        context = tls_context(self.cfg)
        runner = web.AppRunner(self.api.app(), access_log=None, handle_signals=False,
                               shutdown_timeout=GRACE)
        self._runner = runner
        await runner.setup()
        site = web.TCPSite(runner, self.cfg.host, self.cfg.port, ssl_context=context,
                           reuse_address=True)
        await site.start()
        self.listening = True
        log.info("aggregator_listening", listen=self.cfg.listen,
                 scheme="https" if context else "http")

    async def _release(self) -> None:
        runner, self._runner = self._runner, None
        self.listening = False
        if runner is not None:
            with contextlib.suppress(Exception):
                await runner.cleanup()

    async def stop(self) -> None:
        # The intake already refuses (503) once the daemon stops; stop listening, let what
        # is in hand finish.
        await self._release()

    async def close(self) -> None:
        await self._release()
        await self.sender.close()


__all__ = ["Aggregator", "tls_context"]
