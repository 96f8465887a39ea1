"""The local read-only HTTP server: health, order timelines and activities, metrics.

Every handler only reads. It binds where `http.listen` says (loopback by default): the
timeline holds no personal data, but nothing here is meant for the open internet.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import structlog
from aiohttp import web

from edge.clock import rfc3339, rfc3339_ms
from edge.component import BaseComponent, Board, Context, Health
from edge.config.models import HttpConfig
from edge.feed import (
    Change,
    EventApplied,
    JobQueued,
    JobWithdrawn,
    OrderStageChanged,
    OrderStatusChanged,
)
from edge.orders import views
from edge.orders.events import ORDER_ID
from edge.orders.timeline import build_timeline
from edge.store import Store, kds
from edge.web.kitchen import (
    CARD_WINDOW,
    ReadyOrder,
    StoreCards,
    StoreKitchen,
    register_reactions,
)
from edge.web.live import CardHub
from edge.web.operator import (
    AcceptancePanel,
    DeadLettersPanel,
    JobsPanel,
    StorePanel,
    UnconfirmedPanel,
    board_panels,
)
from edge.web.panels import Panel
from edge.web.screens import Screens, TicketImage, add_screens
from edge.web.security import Guard, OperatorToken

log = structlog.get_logger(__name__)


def _order_id(request: web.Request) -> str:
    order_id = request.match_info["order_id"]
    if not ORDER_ID.match(order_id):
        raise web.HTTPBadRequest(text="invalid order_id\n")
    return order_id


def make_app(store: Store, health: Health, board: Board | None = None) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        connected = health.broker_connected()
        body: dict[str, Any] = {
            "status": "ok" if connected else "degraded",
            "mqtt": "connected" if connected else "disconnected",
            "summary": health.status_line(),
        }
        return web.json_response(body, status=200)

    async def timeline(request: web.Request) -> web.Response:
        order_id = _order_id(request)
        found = await store.read(lambda c: build_timeline(c, order_id))
        if found is None:
            raise web.HTTPNotFound(text=f"no order {order_id}\n")
        return web.json_response(found)

    async def activities(request: web.Request) -> web.Response:
        order_id = _order_id(request)
        rows = await store.read(lambda c: views.activities(c, order_id))
        exists = await store.read(lambda c: views.order_exists(c, order_id))
        if not exists:
            raise web.HTTPNotFound(text=f"no order {order_id}\n")
        return web.json_response({"order_id": order_id, "activities": rows})

    async def status(_: web.Request) -> web.Response:
        """Every section the components registered on the board, by name."""
        sections = board.sections() if board is not None else {}
        return web.json_response({name: await section() for name, section in sections.items()})

    async def metrics(_: web.Request) -> web.Response:
        body, content_type = await health.metrics()
        return web.Response(body=body, headers={"Content-Type": content_type})

    app = web.Application()
    app.add_routes([
        web.get("/healthz", healthz),
        web.get("/orders/{order_id}/timeline", timeline),
        web.get("/orders/{order_id}/activities", activities),
        web.get("/metrics", metrics),
        web.get("/status", status),
    ])
    return app


class WebServer(BaseComponent):
    """The one HTTP server of the daemon: the read-only JSON routes above, and the screens
    (the kitchen display and the operator page, `edge.web.screens`).

    At build time it registers the screens' transactional reactions (a printable cooking
    ticket becomes a card in its own transaction; an order that leaves the kitchen closes
    its cards). Once started it tells the open displays about every committed change that
    may alter a card, and makes an order ready, through the intake, when its last card is
    bumped."""

    name = "http"

    def __init__(self, ctx: Context, cfg: HttpConfig, *,
                 ticket_image: TicketImage | None = None) -> None:
        self.ctx = ctx
        self.store = ctx.store
        self.health = ctx.health
        self.cfg = cfg
        self.hub = CardHub()
        register_reactions(ctx.store, ctx.clock)
        self.kitchen = StoreKitchen(ctx.store, ctx.clock, self.hub, on_ready=self._ready)
        self.own_panels: list[Panel] = [
            AcceptancePanel(ctx.store, ctx.intake, ctx.clock),
            UnconfirmedPanel(ctx.store, ctx.intake),
            JobsPanel(ctx.store, ctx.intake, previews=ticket_image is not None),
            DeadLettersPanel(ctx.store),
            StorePanel(ctx.store, ctx.intake, ctx.clock),
        ]
        self.screens = Screens(
            site=ctx.cfg.site, stations=[s.id for s in ctx.cfg.stations],
            warn_minutes=ctx.cfg.kds.warn_minutes, late_minutes=ctx.cfg.kds.late_minutes,
            source=StoreCards(ctx.store, ctx.clock), hub=self.hub, kitchen=self.kitchen,
            guard=Guard(OperatorToken(cfg.operator_token_file)), panels=self.panels,
            ticket_image=ticket_image)
        self._unsubscribe: list[Callable[[], None]] = []

    def panels(self) -> list[Panel]:
        """The board's sections come and go with the components that put them there."""
        board = board_panels(self.ctx.board, self.store, self.ctx.clock)
        by_key = {p.key: p for p in board}
        first = [by_key.pop(k) for k in ("printers",) if k in by_key]
        return [*first, *self.own_panels, *by_key.values()]

    async def start(self) -> None:
        def touch(change: Any) -> None:
            order_id = getattr(change, "order_id", None)
            if order_id:
                self.hub.touch([order_id])

        for kind in CARD_CHANGES:
            self._unsubscribe.append(self.ctx.feed.subscribe(kind, touch))
        await self._catch_up()

    async def run(self) -> None:
        app = make_app(self.store, self.health, self.ctx.board)
        add_screens(app, self.screens)
        # An open display's stream ends when `stop` closes the hub: the runner is never
        # kept waiting for one.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, self.cfg.host, self.cfg.port)
        try:
            await site.start()
            log.info("http_listening", listen=self.cfg.listen)
            await asyncio.Event().wait()
        finally:
            self.hub.close()
            await runner.cleanup()

    async def stop(self) -> None:
        self.hub.close()

    async def close(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()

    async def _ready(self, order: ReadyOrder) -> None:
        """Every station bumped the order: `order.ready`, as if the POS had said it."""
        at = self.ctx.clock.now()
        payload = ready_event(order, at)
        try:
            [outcome] = await self.ctx.intake.submit(KDS_SOURCE, [payload])
        except Exception as exc:  # shutting down: `_catch_up` submits it at the next start
            log.warning("kds_ready_not_submitted", order_id=order.order_id, error=str(exc))
            return
        log.info("kds_order_ready", order_id=order.order_id, station=order.station_id,
                 result=outcome.result, reason=outcome.reason)

    async def _catch_up(self) -> None:
        """Orders whose last card was bumped while the daemon was going down (the bump
        committed, the ready did not): submitted now. Their event id makes it once."""
        since = rfc3339_ms(self.ctx.clock.now() - CARD_WINDOW)
        for order_id, channel, station in await self.store.read(
                lambda c: kds.bumped_not_ready(c, since)):
            await self._ready(ReadyOrder(order_id, channel, station))


# Changes after which an open card may look different: its job became printable or was
# called off, its order moved, or an event changed its lines.
CARD_CHANGES: tuple[type[Change], ...] = (JobQueued, JobWithdrawn, OrderStatusChanged,
                                          OrderStageChanged, EventApplied)
KDS_SOURCE = "kds"


def ready_event(order: ReadyOrder, at: datetime) -> bytes:
    event_id = f"kds-ready:{order.order_id}"
    if len(event_id) > 128:
        event_id = "kds-ready:" + hashlib.sha256(order.order_id.encode()).hexdigest()[:40]
    return json.dumps({
        "event_id": event_id, "type": "order.ready", "order_id": order.order_id,
        "occurred_at": rfc3339(at), "source": {"channel": order.channel, "device": "kds"},
        "data": {}}).encode()


__all__ = ["CARD_CHANGES", "KDS_SOURCE", "WebServer", "make_app", "ready_event"]
