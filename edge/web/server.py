"""The local read-only HTTP server: health, order timelines and activities, metrics.

Every handler only reads. It binds where `http.listen` says (loopback by default): the
timeline holds no personal data, but nothing here is meant for the open internet.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from aiohttp import web

from edge.component import BaseComponent, Board, Context, Health
from edge.config.models import HttpConfig
from edge.orders import views
from edge.orders.events import ORDER_ID
from edge.orders.timeline import build_timeline
from edge.store import Store

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
    name = "http"

    def __init__(self, ctx: Context, cfg: HttpConfig) -> None:
        self.ctx = ctx
        self.store = ctx.store
        self.health = ctx.health
        self.cfg = cfg

    async def run(self) -> None:
        runner = web.AppRunner(make_app(self.store, self.health, self.ctx.board),
                               access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.cfg.host, self.cfg.port)
        try:
            await site.start()
            log.info("http_listening", listen=self.cfg.listen)
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()


__all__ = ["WebServer", "make_app"]
