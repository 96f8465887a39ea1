"""The local read-only HTTP server: health, order timelines and activities, metrics.

Every handler only reads. It binds where `http.listen` says (loopback by default): the
timeline holds no personal data, but nothing here is meant for the open internet.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from edge import ops
from edge.ingest.events import ORDER_ID
from edge.timeline import build_timeline

if TYPE_CHECKING:
    from edge.daemon import Daemon

log = structlog.get_logger(__name__)


def _order_id(request: web.Request) -> str:
    order_id = request.match_info["order_id"]
    if not ORDER_ID.match(order_id):
        raise web.HTTPBadRequest(text="invalid order_id\n")
    return order_id


def make_app(daemon: Daemon) -> web.Application:
    store = daemon.store

    async def healthz(_: web.Request) -> web.Response:
        body: dict[str, Any] = {
            "status": "ok" if daemon.link.connected.is_set() else "degraded",
            "mqtt": "connected" if daemon.link.connected.is_set() else "disconnected",
            "summary": daemon.status_line(),
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
        rows = await store.read(lambda c: ops.activities(c, order_id))
        exists = await store.read(lambda c: c.execute(
            "SELECT 1 FROM orders WHERE order_id=?", (order_id,)).fetchone())
        if not exists:
            raise web.HTTPNotFound(text=f"no order {order_id}\n")
        return web.json_response({"order_id": order_id, "activities": rows})

    async def metrics(_: web.Request) -> web.Response:
        from edge.service.metrics import render_latest

        await daemon.refresh_metrics()
        body, content_type = render_latest()
        return web.Response(body=body, headers={"Content-Type": content_type})

    app = web.Application()
    app.add_routes([
        web.get("/healthz", healthz),
        web.get("/orders/{order_id}/timeline", timeline),
        web.get("/orders/{order_id}/activities", activities),
        web.get("/metrics", metrics),
    ])
    return app


async def serve(daemon: Daemon) -> None:
    assert daemon.cfg.http is not None
    runner = web.AppRunner(make_app(daemon), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, daemon.cfg.http.host, daemon.cfg.http.port)
    try:
        await site.start()
        log.info("http_listening", listen=daemon.cfg.http.listen)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
