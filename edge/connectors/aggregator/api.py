"""The aggregator order API over HTTP (CONTRACT section 10): what a delivery platform calls.

    POST /orders                          202 {"id", "status": "submitted"} once durable
    POST /orders/{id}/delivery-status     200; 409 for a status that goes backwards
    POST /orders/{id}/cancel              200

Every request needs `Authorization: Bearer {token}` (the token file is read for each
request, so a new token takes effect at once; compared in constant time); without it: 401,
before anything of the body is read. A body over 256 KiB is 413, a body that is not what
the seed says is 400 `{"error": "..."}` naming the field, an unknown order 404, a path or
method the API does not have 404 / 405, all as JSON. A body that trickles in slower than
`BODY_DEADLINE` is 408. While the daemon shuts down: 503 with Retry-After, nothing stored.

An answer is given once what the call changed is on disk (`inbound`, one durable
transaction each); nothing waits for the kitchen to apply it or for a printer. Nothing of a
body is logged: log lines carry the platform's order id, the kitchen's, the answer and why.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog
from aiohttp import web
from pydantic import BaseModel

from edge import crashpoints
from edge.clock import Clock, rfc3339_ms
from edge.component import Intake, IntakeClosed
from edge.config.models import AggregatorConfig
from edge.config.secrets import SecretProblem, read_token_file
from edge.connectors.aggregator import inbound
from edge.connectors.aggregator.inbound import Answer, TakeIn
from edge.connectors.aggregator.schema import (
    MAX_BODY,
    PLATFORM_ID_PATTERN,
    DeliveryStatus,
    InvalidBody,
    PlatformCancel,
    PlatformOrder,
    parse_body,
)

log = structlog.get_logger(__name__)

BODY_DEADLINE = 10.0          # seconds a client may take to send its body
SLOW_ANSWER_MS = 1000.0
_PLATFORM_ID = re.compile(PLATFORM_ID_PATTERN)
M = TypeVar("M", bound=BaseModel)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(status: int, body: dict[str, Any], **headers: str) -> web.Response:
    return web.json_response(body, status=status, headers=headers or None)


def _error(status: int, error: str, **headers: str) -> web.Response:
    return _json(status, {"error": error}, **headers)


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


@dataclass
class Figures:
    """What the operator's board shows of the API since the daemon started."""

    answers: Counter[int] = field(default_factory=Counter)
    last_refusal: dict[str, Any] | None = None
    slowest_ms: float = 0.0
    last_ms: float | None = None


class AggregatorApi:
    def __init__(self, cfg: AggregatorConfig, intake: Intake, clock: Clock) -> None:
        self.cfg = cfg
        self.intake = intake
        self.clock = clock
        self.figures = Figures()

    # -- the app ---------------------------------------------------------------------------

    def app(self) -> web.Application:
        # The limit makes aiohttp refuse a longer body itself (we answer 413); our own
        # check of Content-Length answers before a byte of it is read.
        app = web.Application(client_max_size=MAX_BODY,
                              middlewares=[self._answers, self._authorised])
        app.add_routes([
            web.post("/orders", self._post_order),
            web.post("/orders/{id}/delivery-status", self._post_delivery_status),
            web.post("/orders/{id}/cancel", self._post_cancel),
        ])
        return app

    @web.middleware
    async def _answers(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Every answer as JSON, and counted for the operator's board."""
        started = time.monotonic()
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            # Routing's own refusals (404, 405) and aiohttp's (413): JSON like ours.
            headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
            response = _error(exc.status, _reason(exc), **headers)
        except Exception:  # a bug of ours: the platform hears it as such, the kitchen goes on
            log.exception("aggregator_failed", method=request.method, path=request.path)
            response = _error(500, "internal error; send it again (what was taken is "
                                   "answered as a repeat)")
        status = response.status
        self.figures.answers[status] += 1
        if status >= 400:
            error = getattr(response, "text", None)
            self.figures.last_refusal = {"at": rfc3339_ms(self.clock.now()), "status": status,
                                         "method": request.method, "path": request.path,
                                         "error": _error_of(error)}
        if request.path == "/orders" and status in (200, 202):
            ms = (time.monotonic() - started) * 1000
            self.figures.last_ms = round(ms, 1)
            self.figures.slowest_ms = round(max(self.figures.slowest_ms, ms), 1)
            if ms > SLOW_ANSWER_MS:
                # CONTRACT section 10 promises an answer within 1 s of the order being durable.
                log.warning("aggregator_slow_answer", ms=round(ms), status=status)
        return response

    @web.middleware
    async def _authorised(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        # Read for each request: replacing the file changes the token at once.
        try:
            expected = read_token_file(self.cfg.token_file)
        except SecretProblem as exc:
            log.error("aggregator_token_unreadable", path=str(self.cfg.token_file),
                      problem=str(exc))
            return _error(503, "the kitchen has no API token configured", **{"Retry-After": "60"})
        given = bearer(request.headers.get("Authorization"))
        if given is None or not hmac.compare_digest(given.encode(), expected.encode()):
            log.warning("aggregator_refused", status=401, method=request.method,
                        path=request.path, peer=request.remote,
                        error="no bearer token" if given is None else "wrong token")
            return _error(401, "missing or wrong bearer token",
                          **{"WWW-Authenticate": 'Bearer realm="kitchen-edge"'})
        return await handler(request)

    # -- the three calls -----------------------------------------------------------------

    async def _post_order(self, request: web.Request) -> web.StreamResponse:
        order = await self._body(request, PlatformOrder)
        if isinstance(order, web.Response):
            return order
        now = self.clock.now()
        return await self._take(inbound.receive_order(order, self.cfg, now),
                                platform_id=order.id)

    async def _post_delivery_status(self, request: web.Request) -> web.StreamResponse:
        platform_id = self._platform_id(request)
        if isinstance(platform_id, web.Response):
            return platform_id
        update = await self._body(request, DeliveryStatus)
        if isinstance(update, web.Response):
            return update
        return await self._take(inbound.delivery_status(platform_id, update,
                                                        self.clock.now()),
                                platform_id=platform_id)

    async def _post_cancel(self, request: web.Request) -> web.StreamResponse:
        platform_id = self._platform_id(request)
        if isinstance(platform_id, web.Response):
            return platform_id
        asked = await self._body(request, PlatformCancel)
        if isinstance(asked, web.Response):
            return asked
        return await self._take(inbound.cancel(platform_id, asked, self.clock.now()),
                                platform_id=platform_id)

    # -- shared steps --------------------------------------------------------------------

    def _platform_id(self, request: web.Request) -> str | web.Response:
        platform_id = request.match_info["id"]
        if not _PLATFORM_ID.match(platform_id):
            return self._refuse(request, 400, "id: must be 1 to 64 characters of "
                                              "A-Z a-z 0-9 . _ -")
        return platform_id

    async def _body(self, request: web.Request, model: type[M]) -> M | web.Response:
        length = request.content_length
        if length is not None and length > MAX_BODY:
            return self._refuse(request, 413, f"body is {length} bytes; the limit is "
                                              f"{MAX_BODY} (256 KiB)")
        try:
            async with asyncio.timeout(BODY_DEADLINE):
                raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._refuse(request, 413, f"body is over the limit of {MAX_BODY} bytes "
                                              "(256 KiB)")
        except TimeoutError:
            return self._refuse(request, 408, f"body not received within {BODY_DEADLINE:g} s")
        try:
            return parse_body(model, raw)
        except InvalidBody as exc:
            return self._refuse(request, exc.status, exc.error)

    def _refuse(self, request: web.Request, status: int, error: str) -> web.Response:
        log.warning("aggregator_refused", status=status, method=request.method,
                    path=request.path, error=error)
        return _error(status, error)

    async def _take(self, take: TakeIn, *, platform_id: str) -> web.Response:
        try:
            answer = await self.intake.submit_with(inbound.SOURCE, take)
        except IntakeClosed:
            log.warning("aggregator_refused", status=503, platform_id=platform_id,
                        error="shutting down")
            return _error(503, "the kitchen is shutting down; nothing was stored",
                          **{"Retry-After": "5"})
        except Exception:  # the database refusing (disk full...): nothing was stored
            log.exception("aggregator_failed", platform_id=platform_id)
            return _error(500, "the kitchen could not store this; nothing was stored")
        crashpoints.reached("aggregator_after_commit")
        _log(answer, platform_id)
        return _json(answer.status, answer.body)


def _log(answer: Answer, platform_id: str) -> None:
    fields = {"platform_id": platform_id, "order_id": answer.order_id,
              "status": answer.status, **answer.detail}
    if answer.status >= 400:
        log.warning(answer.event, **fields)
    else:
        log.info(answer.event, **fields)


def _reason(exc: web.HTTPException) -> str:
    if exc.status == 404:
        return "no such path; the API has POST /orders, /orders/{id}/delivery-status, " \
               "/orders/{id}/cancel"
    if exc.status == 405:
        return "method not allowed; the API takes POST"
    if exc.status == 413:
        return f"body is over the limit of {MAX_BODY} bytes (256 KiB)"
    return exc.reason


def _error_of(text: str | None) -> str | None:
    if not text:
        return None
    try:
        body = json.loads(text)
    except ValueError:
        return text[:200]
    return str(body.get("error"))[:200] if isinstance(body, dict) else None


__all__ = ["BODY_DEADLINE", "AggregatorApi", "bearer"]
