"""A stand-in for a delivery platform talking to the kitchen's aggregator API (CONTRACT
section 10, seed 004), with faults. Both sides of the platform:

The webhook receiver (`FakePlatform`) takes the PATCHes the kitchen sends to its
`webhook_url`: `/orders/{id}` (accepted or rejected), `/orders/{id}/events/
order_ready_for_pickup` and `/orders/{id}/cancellation`. It checks `Authorization: Bearer
{token}` (401), validates each body against the seed (400 naming the field; the
`merchant_supplied_id` must be `ot-{id}`), and records every request it gets, answered or
not, as a `Hook`. It notes lifecycle violations (a ready before the accept, anything after a
rejection...) without refusing them, so tests can assert there are none. Faults:

- `none`: answer 200 `{}`;
- `down`: stop listening and cut open connections (connection refused);
- `slow`: take the webhook at once, answer 200 only after `delay` seconds;
- `429` / `500`: answer that status (429 with `Retry-After` if asked);
- `blackhole`: take the request and never answer, never close;
- `reject`: answer `status` (default 400) to requests whose method is `method` (any if
  unset) and whose path starts with `path_prefix`; the others as `none`.

The driver (`PlatformDriver`, with `build_order`) plays the platform's calls against a
kitchen's aggregator API with httpx: POST an order, each dasher status, a cancel.

`python -m edge.connectors.aggregator.fake_platform serve --port N --token-file F` runs the
receiver for the demo, printing one JSON line `{"port", "url", "control_port"}` once
listening; its always-up control port takes `POST /fault {"mode", ...}`, `GET /state` and
`GET /requests[?since=N]`. The `order`, `dasher` and `cancel` subcommands drive a kitchen.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import hashlib
import json
import re
import signal
import socket
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, get_args

import httpx
from aiohttp import web
from pydantic import BaseModel

from edge.clock import rfc3339, rfc3339_ms
from edge.connectors.aggregator.schema import (
    PLATFORM_ID_PATTERN,
    DasherStatus,
    FulfillmentType,
    InvalidBody,
    OrderAccepted,
    OrderCancellation,
    OrderReady,
    OrderRejected,
    parse_body,
)

FaultMode = Literal["none", "down", "slow", "429", "500", "blackhole", "reject"]
HookKind = Literal["accepted", "rejected", "ready", "cancellation"]
_PLATFORM_ID = re.compile(PLATFORM_ID_PATTERN)


@dataclass(frozen=True, slots=True)
class Hook:
    """One request the receiver got. `status` 0: blackholed, never answered."""

    at: float                   # time.monotonic() when it arrived
    received_at: str            # the same moment, RFC 3339 UTC
    method: str
    path: str
    status: int
    order_id: str | None = None  # the platform's order id in the path
    kind: HookKind | None = None
    body: Any = None            # the parsed JSON, else the text, else None
    error: str | None = None    # what a 4xx said

    def as_json(self) -> dict[str, Any]:
        return {
            "at": self.at, "received_at": self.received_at, "method": self.method,
            "path": self.path, "status": self.status, "order_id": self.order_id,
            "kind": self.kind, "body": self.body, "error": self.error,
        }


@dataclass(slots=True)
class _Fault:
    mode: FaultMode = "none"
    retry_after: float | None = None
    delay: float = 0.0
    status: int = 400
    method: str | None = None
    path_prefix: str = "/"

    def rejects(self, method: str, path: str) -> bool:
        return self.mode == "reject" and path.startswith(self.path_prefix) and \
            (self.method is None or self.method == method)


class _Refused(Exception):
    def __init__(self, status: int, error: str) -> None:
        super().__init__(error)
        self.status = status
        self.error = error


@dataclass
class FakePlatform:
    token: str = "platform-token"
    port: int = 0
    host: str = "127.0.0.1"
    base_path: str = ""          # e.g. "/hooks": the webhook_url is then {url} with it
    requests: list[Hook] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.base_path = "/" + self.base_path.strip("/") if self.base_path.strip("/") else ""
        self._fault = _Fault()
        self._server: asyncio.Server | None = None
        self._web: web.Server | None = None
        self._held: set[asyncio.Future[None]] = set()
        self._seen: dict[str, list[HookKind]] = {}
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []

    @property
    def url(self) -> str:
        """What the kitchen's `aggregator.webhook_url` should be."""
        return f"http://{self.host}:{self.port}{self.base_path}"

    @property
    def mode(self) -> FaultMode:
        return self._fault.mode

    async def start(self) -> FakePlatform:
        await self._listen()
        return self

    async def stop(self) -> None:
        await self._close()
        for waiter in list(self._held):
            waiter.cancel()

    async def _listen(self) -> None:
        if self._server is not None:
            return
        loop = asyncio.get_running_loop()
        self._web = web.Server(self._handle, handler_cancellation=True)
        self._server = await loop.create_server(
            self._web, self.host, self.port, reuse_address=True
        )
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _close(self) -> None:
        server, self._server = self._server, None
        handlers, self._web = self._web, None
        if server is not None:
            server.close()
        if handlers is not None:
            await handlers.shutdown(0.05)
        if server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)

    async def set_fault(
        self,
        mode: FaultMode,
        *,
        retry_after: float | None = None,
        delay: float = 0.0,
        status: int = 400,
        method: str | None = None,
        path_prefix: str = "/",
    ) -> None:
        """Change how the receiver behaves from the next request on."""
        if mode not in get_args(FaultMode):
            raise ValueError(f"unknown fault mode {mode!r}")
        if not 100 <= status <= 599:
            raise ValueError(f"status {status} is not an HTTP status")
        self._fault = _Fault(mode, retry_after, delay, status,
                             method.upper() if method else None, path_prefix)
        if mode == "down":
            await self._close()
        else:
            await self._listen()
        if mode != "blackhole":
            # A real blackhole loses the requests; the held ones were timed out long ago.
            for waiter in list(self._held):
                waiter.cancel()

    async def wait_for(self, predicate: Callable[[], bool], within: float = 10.0) -> None:
        """Wait, without polling, until `predicate` holds after some request."""
        if predicate():
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (predicate, waiter)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(within):
                await waiter
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(entry)

    async def wait_requests(self, count: int, within: float = 10.0) -> None:
        await self.wait_for(lambda: len(self.requests) >= count, within)

    def hooks(self, order_id: str | None = None, kind: HookKind | None = None,
              status: int | None = 200) -> list[Hook]:
        """The recorded requests for `order_id` / of `kind` answered `status` (None: any)."""
        return [
            h for h in self.requests
            if (order_id is None or h.order_id == order_id)
            and (kind is None or h.kind == kind)
            and (status is None or h.status == status)
        ]

    def state(self) -> dict[str, Any]:
        return {
            "mode": self._fault.mode, "port": self.port, "url": self.url,
            "requests": len(self.requests), "taken": len(self.hooks()),
            "violations": list(self.violations),
        }

    def _log(self, hook: Hook) -> None:
        self.requests.append(hook)
        for predicate, waiter in list(self._waiters):
            if not waiter.done() and predicate():
                waiter.set_result(None)

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        arrived = time.monotonic()
        received_at = rfc3339_ms(datetime.now(UTC))
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raw, too_large = b"", True
        else:
            too_large = False

        def log(status: int, order_id: str | None = None, kind: HookKind | None = None,
                error: str | None = None) -> None:
            self._log(Hook(arrived, received_at, request.method, request.path, status,
                           order_id, kind, _loggable(raw), error))

        def refuse(status: int, error: str, order_id: str | None = None,
                   **headers: str) -> web.Response:
            log(status, order_id, error=error)
            return web.json_response({"error": error}, status=status, headers=headers)

        if too_large:
            return refuse(413, "body over the server's 1 MiB limit")
        fault = self._fault
        route = self._route(request.path)
        if route is None:
            return refuse(404, "not found")
        if request.method != "PATCH":
            return refuse(405, f"{request.method} not allowed; webhooks are PATCH")
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return refuse(401, "bad token")
        order_id, path_kind = route
        if fault.mode == "blackhole":
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._held.add(waiter)
            log(0, order_id)
            try:
                await waiter  # only ever ends by cancellation
            finally:
                self._held.discard(waiter)
        if fault.mode in ("500", "429"):
            headers = {}
            if fault.retry_after is not None:
                headers["Retry-After"] = _seconds(fault.retry_after)
            return refuse(int(fault.mode), "try later", order_id, **headers)
        if fault.rejects(request.method, request.path):
            return refuse(fault.status, "rejected by the fault in place", order_id)
        try:
            kind = _validate(order_id, path_kind, raw)
        except _Refused as exc:
            log(exc.status, order_id, None, exc.error)
            return web.json_response({"error": exc.error}, status=exc.status)
        self._note(order_id, kind)
        # Logged after noting: a waiter woken by this request sees its violations too.
        log(200, order_id, kind)
        if fault.mode == "slow":
            # The webhook is taken, the answer is late: a sender that gives up now must
            # send it again, and the platform sees it twice (the seed: "handle duplicates").
            await asyncio.sleep(fault.delay)
        return web.json_response({})

    def _route(self, path: str) -> tuple[str, str] | None:
        if self.base_path:
            if not path.startswith(self.base_path + "/"):
                return None
            path = path[len(self.base_path):]
        parts = path.strip("/").split("/")
        if len(parts) < 2 or parts[0] != "orders" or not _PLATFORM_ID.match(parts[1]):
            return None
        rest = "/".join(parts[2:])
        if rest in ("", "events/order_ready_for_pickup", "cancellation"):
            return parts[1], rest
        return None

    def _note(self, order_id: str, kind: HookKind) -> None:
        seen = self._seen.setdefault(order_id, [])
        problem = _violation(seen, kind)
        if problem is not None:
            self.violations.append(f"order {order_id}: {problem}")
        seen.append(kind)


def _validate(order_id: str, path_kind: str, raw: bytes) -> HookKind:
    model: type[BaseModel]
    kind: HookKind
    if path_kind == "events/order_ready_for_pickup":
        model, kind = OrderReady, "ready"
    elif path_kind == "cancellation":
        model, kind = OrderCancellation, "cancellation"
    else:
        status = _peek(raw, "order_status")
        if status == "success":
            model, kind = OrderAccepted, "accepted"
        elif status == "fail":
            model, kind = OrderRejected, "rejected"
        else:
            raise _Refused(400, "order_status: must be 'success' or 'fail'")
    try:
        body = parse_body(model, raw)
    except InvalidBody as exc:
        raise _Refused(exc.status, exc.error) from None
    merchant_id = getattr(body, "merchant_supplied_id", None)
    if merchant_id is not None and merchant_id != f"ot-{order_id}":
        raise _Refused(400, f"merchant_supplied_id: '{merchant_id[:64]}' is not this order's "
                            f"('ot-{order_id}')")
    return kind


def _violation(seen: list[HookKind], kind: HookKind) -> str | None:
    """What is wrong with `kind` coming after `seen` for one order, or None. A repeat of
    the last one is fine: webhooks are delivered at least once."""
    if seen and seen[-1] == kind:
        return None
    if "rejected" in seen:
        return f"{kind} after rejected"
    if "cancellation" in seen:
        return f"{kind} after cancellation"
    if kind in ("accepted", "rejected") and seen:
        return f"{kind} after {seen[-1]}"
    if kind == "ready" and "accepted" not in seen:
        return "ready before accepted"
    return None


def _peek(raw: bytes, key: str) -> Any:
    with contextlib.suppress(ValueError, RecursionError):
        document = json.loads(raw)
        if isinstance(document, dict):
            return document.get(key)
    return None


def _loggable(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return raw.decode("utf-8", "replace")[:4096]


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


# -- the driver: the platform's calls to the kitchen -----------------------------------------

_MENU: list[tuple[str, list[dict[str, Any]]]] = [
    ("Burgers", [
        {"id": "burger-classic", "name": "Classic Burger", "quantity": 2, "price": 1099,
         "extras": [{"name": "Cheddar"}, {"name": "Bacon"}],
         "special_instructions": "No pickles on one, please"},
        {"id": "burger-veg", "name": "Veggie Burger", "quantity": 1, "price": 999},
    ]),
    ("Sides & Drinks", [
        {"id": "fries-large", "name": "Large Fries", "quantity": 1, "price": 449,
         "extras": [{"name": "Cajun seasoning"}]},
        {"id": "lemonade", "name": "Lemonade", "quantity": 2, "price": 299,
         "special_instructions": "Light ice"},
    ]),
]


def build_order(
    platform_id: str | None = None,
    *,
    fulfillment: FulfillmentType = "dx_delivery",
    with_type: bool = True,
    store_id: str = "store-123",
    categories: list[dict[str, Any]] | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """A realistic `POST /orders` body, as a platform sends it: a consumer with e-mail and
    phone, items in two categories with extras and special instructions. `with_type=False`
    leaves `fulfillment_type` out (the kitchen reads `is_pickup`; not possible for
    `mx_fleet_delivery`). `categories` replaces the items."""
    if not with_type and fulfillment == "mx_fleet_delivery":
        raise ValueError("mx_fleet_delivery cannot be said by is_pickup alone")
    platform_id = platform_id or str(uuid.uuid4())
    moment = now or datetime.now(UTC)
    if categories is None:
        # Deep: a caller changing its order's extras must not change the next order's.
        categories = [{"name": name, "items": copy.deepcopy(items)} for name, items in _MENU]
    subtotal = sum(
        item["quantity"] * item["price"]
        for category in categories for item in category.get("items", [])
        if isinstance(item.get("quantity"), int) and isinstance(item.get("price"), int)
    )
    code = hashlib.sha256(platform_id.encode()).hexdigest()[:6].upper()
    body: dict[str, Any] = {
        "id": platform_id,
        "store_order_cart_id": f"cart-{platform_id}",
        "delivery_short_code": code,
        "store": {
            "merchant_supplied_id": store_id,
            "provider_type": "fake_platform",
            "timezone": "America/New_York",
            "store_business": {"auto_release_enabled": True},
        },
        "consumer": {
            "id": 12345,
            "first_name": "John",
            "last_name": "Doe",
            "email": "john.doe@example.com",
            "phone": "+15551234567",
        },
        "subtotal": subtotal,
        "tax": round(subtotal * 0.08875),
        "is_pickup": fulfillment == "pickup",
        "estimated_pickup_time": rfc3339(moment + timedelta(minutes=20)),
        "categories": categories,
    }
    if with_type:
        body["fulfillment_type"] = fulfillment
    return body


@dataclass(frozen=True, slots=True)
class Reply:
    method: str
    path: str
    status: int
    body: Any               # the parsed JSON answer, else its text

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def as_json(self) -> dict[str, Any]:
        return {"method": self.method, "path": self.path, "status": self.status,
                "body": self.body}


class PlatformDriver:
    """The platform's side of seed 004 against a kitchen's aggregator API at `api_url`
    (`http://host:port`, the kitchen's `aggregator.listen`). Network errors are raised as
    httpx exceptions; every answer, whatever its status, comes back as a `Reply` and is
    kept in `replies`."""

    def __init__(self, api_url: str, token: str, *, timeout: float = 10.0) -> None:
        self.api_url = api_url.rstrip("/")
        self.token = token
        self.replies: list[Reply] = []
        self._client = httpx.AsyncClient(timeout=timeout)

    async def __aenter__(self) -> PlatformDriver:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def request(self, method: str, path: str, body: Any = None, *,
                      content: bytes | None = None, token: str | None = None,
                      headers: dict[str, str] | None = None) -> Reply:
        """Any call: `body` sent as JSON, or `content` as the raw bytes (a broken body);
        `token` replaces the driver's (`""`: no Authorization header at all)."""
        sent = dict(headers or {})
        token = self.token if token is None else token
        if token:
            sent["Authorization"] = f"Bearer {token}"
        if content is None and body is not None:
            content = json.dumps(body).encode()
        if content is not None:
            sent.setdefault("Content-Type", "application/json")
        response = await self._client.request(method, self.api_url + path, content=content,
                                              headers=sent)
        try:
            answer: Any = response.json()
        except ValueError:
            answer = response.text
        reply = Reply(method, path, response.status_code, answer)
        self.replies.append(reply)
        return reply

    async def post_order(self, order: dict[str, Any]) -> Reply:
        """`POST /orders` with `order` (`build_order()`, or any dict, broken ones too)."""
        return await self.request("POST", "/orders", order)

    async def send_dasher_status(
        self, platform_id: str, status: DasherStatus | str, *,
        dasher: dict[str, Any] | None = None, client_order_id: str | None = None,
    ) -> Reply:
        """`POST /orders/{id}/delivery-status`; the dasher is a realistic one by default."""
        body = {
            "client_order_id": client_order_id or f"ot-{platform_id}",
            "dasher_status": str(status),
            "dasher": dasher if dasher is not None else {
                "first_name": "Mike", "last_name": "Courier", "phone_number": "+15559876543",
            },
        }
        return await self.request("POST", f"/orders/{platform_id}/delivery-status", body)

    async def deliver(self, platform_id: str,
                      statuses: Sequence[DasherStatus | str] = tuple(DasherStatus)) -> list[Reply]:
        """Each status in turn (the whole seed flow by default), stopping at the first one
        not answered 2xx."""
        replies = []
        for status in statuses:
            reply = await self.send_dasher_status(platform_id, status)
            replies.append(reply)
            if not reply.ok:
                break
        return replies

    async def cancel(self, platform_id: str, *,
                     reason: str = "Customer requested cancellation",
                     store_id: str = "store-123",
                     client_order_id: str | None = None) -> Reply:
        """`POST /orders/{id}/cancel`."""
        body = {
            "store": {"merchant_supplied_id": store_id},
            "client_order_id": client_order_id or f"ot-{platform_id}",
            "reason": reason,
        }
        return await self.request("POST", f"/orders/{platform_id}/cancel", body)


# -- the demo process ---------------------------------------------------------------------


async def _control_app(fake: FakePlatform) -> web.Application:
    async def fault(request: web.Request) -> web.Response:
        try:
            data = await request.json()
            retry_after = data.get("retry_after")
            await fake.set_fault(
                data.get("mode", "none"),
                retry_after=None if retry_after is None else float(retry_after),
                delay=float(data.get("delay", 0.0)),
                status=int(data.get("status", 400)),
                method=data.get("method"),
                path_prefix=str(data.get("path_prefix", "/")),
            )
        except (ValueError, TypeError, AttributeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(fake.state())

    async def state(request: web.Request) -> web.Response:
        return web.json_response(fake.state())

    async def requests(request: web.Request) -> web.Response:
        try:
            since = max(0, int(request.query.get("since", "0")))
        except ValueError:
            return web.json_response({"error": "since: must be an integer"}, status=400)
        return web.json_response(
            {"requests": [hook.as_json() for hook in fake.requests[since:]],
             "next": len(fake.requests)})

    app = web.Application()
    app.router.add_post("/fault", fault)
    app.router.add_get("/state", state)
    app.router.add_get("/requests", requests)
    return app


async def _serve(port: int, control_port: int, token: str, base_path: str) -> None:
    fake = await FakePlatform(token=token, port=port, base_path=base_path).start()
    runner = web.AppRunner(await _control_app(fake), access_log=None)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", control_port))
    await web.SockSite(runner, sock).start()
    actual_control = int(sock.getsockname()[1])
    print(json.dumps({"port": fake.port, "url": fake.url, "control_port": actual_control}),
          flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await fake.stop()


async def _drive(args: argparse.Namespace, token: str) -> list[Reply]:
    async with PlatformDriver(args.api, token, timeout=args.timeout) as driver:
        if args.command == "order":
            order = build_order(args.id, fulfillment=args.fulfillment, store_id=args.store_id)
            return [await driver.post_order(order)]
        if args.command == "dasher":
            return await driver.deliver(args.id, args.statuses or tuple(DasherStatus))
        return [await driver.cancel(args.id, reason=args.reason, store_id=args.store_id)]


def _dasher_status(text: str) -> DasherStatus:
    try:
        return DasherStatus(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"'{text}' is not one of {', '.join(DasherStatus)}") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edge.connectors.aggregator.fake_platform",
        description="A fake delivery platform for the kitchen's aggregator API (seed 004).")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="receive the kitchen's webhooks")
    serve.add_argument("--port", type=int, default=0)
    serve.add_argument("--control-port", type=int, default=0)
    serve.add_argument("--token-file", type=Path, required=True,
                       help="the token the kitchen must send (its webhook_token_file)")
    serve.add_argument("--base-path", default="", help="e.g. /hooks")
    order = commands.add_parser("order", help="POST an order to the kitchen")
    dasher = commands.add_parser("dasher", help="send dasher statuses, in the order given")
    cancel = commands.add_parser("cancel", help="ask the kitchen to cancel an order")
    for sub in (order, dasher, cancel):
        sub.add_argument("--api", required=True, help="the kitchen's aggregator API base URL")
        sub.add_argument("--token-file", type=Path, required=True,
                         help="the token the kitchen expects (its aggregator token_file)")
        sub.add_argument("--timeout", type=float, default=10.0)
    order.add_argument("--id", default=None, help="the platform's order id; default a UUID")
    order.add_argument("--fulfillment", choices=get_args(FulfillmentType), default="dx_delivery")
    dasher.add_argument("--id", required=True)
    # Not `choices`: argparse would check the empty default against them and refuse it.
    dasher.add_argument("statuses", nargs="*", type=_dasher_status, metavar="STATUS",
                        help=f"one of {', '.join(DasherStatus)}; default: the whole flow")
    cancel.add_argument("--id", required=True)
    cancel.add_argument("--reason", default="Customer requested cancellation")
    for sub in (order, cancel):
        sub.add_argument("--store-id", default="store-123")
    args = parser.parse_args(argv)
    token = args.token_file.read_text(encoding="utf-8").strip()
    if args.command == "serve":
        asyncio.run(_serve(args.port, args.control_port, token, args.base_path))
        return 0
    try:
        replies = asyncio.run(_drive(args, token))
    except httpx.HTTPError as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 1
    for reply in replies:
        print(json.dumps(reply.as_json()), flush=True)
    return 0 if all(reply.ok for reply in replies) else 1


if __name__ == "__main__":
    sys.exit(main())
