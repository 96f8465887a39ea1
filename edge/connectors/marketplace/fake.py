"""A stand-in for the delivery marketplace of seed 001, with faults; shipped like the fake
upstream, for the tests and the demo.

It listens on 127.0.0.1 and keeps its orders in memory. The API, behind `Authorization:
Bearer {token}` (401 otherwise, `{"error": ...}`):

- `GET /orders/get-current` -> `{"data": [order, ...]}`: every order whose current status has
  not been acknowledged, in the order they arrived. An order repeats until
  `PUT /orders/success/{payment_key}` acknowledges the status it has *now* (the call names no
  status: an order that moved between the poll and the acknowledgement has its new status
  acknowledged, as with the real thing). Any later status change lists it again.
- `PUT /orders/accept/{payment_key}` `{"preparing_time": 1..240}`: 1 -> 2.
- `PUT /orders/ontheway/{payment_key}`: 2 -> 16; `PUT /orders/complete/{payment_key}`:
  16 -> 5. Both only for `courier_type` "restaurant": 403 otherwise.
- `PUT /orders/cancel/{payment_key}` `{"reason_id": 1..8}`: 1, 2 or 16 -> 6.
- `GET /orders/cancel-reasons` -> `{"data": [{"id": 1, "reason": "Ürün tükendi"}, ...]}`.

Answers: 200 `{"success": true, "data": {"payment_key", "status_id"}}` (`success` answers
a bare `{"success": true}` with `success_names_status=False`). Repeating a call for
the status the order already has (accept an accepted order, cancel a cancelled one, success
again) is 200 and changes nothing: a client retrying after a lost answer must not be punished
for it. A body that is not what the call needs is 400; a call that does not fit the order's
status (accept a cancelled order, complete one not on its way, cancel a delivered one) is 409;
a call on a malformed order added with `add_raw_order` is 409 (only `success` works on it); an
unknown payment_key (the integer id included, seed's troubleshooting) is 404; an unknown path
404; a known path with the wrong method 405. Errors are `{"error": "..."}`.

The marketplace's own moves (in-process methods; the demo's control port): add an order
(`add_order` a full seed-shaped body, or `new_order` which builds a realistic one), move it to
any status (`set_status`: a customer cancels, a platform courier delivers), change its other
fields (`edit_order`), add a malformed order (`add_raw_order`), cancel orders still at
status 1 after N seconds (`set_auto_cancel`).

Faults (`set_fault`), from the next request on:

- `none`; `down`: stop listening and cut open connections (connection refused);
- `slow`: do the work at once, answer after `delay` seconds (a client that gives up must
  find the change made when it retries);
- `429` (Retry-After `retry_after`, 1 s by default) and `500`, before authentication, like a
  load balancer; `html`: 200 with an HTML maintenance page (a captive portal does this);
- `blackhole`: take the request and never answer, never close; the change is not made;
- `reject`: answer `status` (400 by default) to the calls matching every given one of
  `method`, `path_prefix` and `payment_key`, and serve the others; the change is not made.

Every request is recorded (`requests`: method, path, body, status answered, monotonic
arrival; 0 for never answered), and every order keeps its status history.

`python -m edge.connectors.marketplace.fake --port N --token-file F --control-port M` runs it
for the demo and prints one JSON line `{"port", "url", "control_port"}` once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import itertools
import json
import signal
import socket
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from aiohttp import web

from edge.connectors.marketplace.schema import (
    CANCEL_REASONS,
    CANCELLED,
    DELIVERED,
    ON_THE_WAY,
    OTHER_REASON_ID,
    PREPARING,
    RECEIVED,
    STATUSES,
)

FaultMode = Literal["none", "down", "slow", "429", "500", "html", "blackhole", "reject"]
Mover = Literal["marketplace", "restaurant"]

MAX_PREPARING_TIME = 240
MAINTENANCE_PAGE = (
    "<!DOCTYPE html><html><head><title>Bakım</title></head>"
    "<body><h1>Sistem bakımda</h1><p>Lütfen daha sonra tekrar deneyin.</p></body></html>"
)


@dataclass(frozen=True, slots=True)
class RequestLog:
    at: float                 # time.monotonic() when the request arrived
    method: str
    path: str
    body: Any                 # the JSON sent, the text when it was not JSON, None when empty
    status: int               # 0: taken and never answered (blackhole)


@dataclass(frozen=True, slots=True)
class StatusChange:
    status_id: int
    at: float                 # time.monotonic()
    by: Mover
    reason_id: int | None = None
    preparing_time: int | None = None


@dataclass(frozen=True, slots=True)
class _Fault:
    mode: FaultMode = "none"
    delay: float = 0.0
    retry_after: float | None = None
    status: int = 400
    method: str | None = None
    path_prefix: str | None = None
    payment_key: str | None = None

    def rejects(self, method: str, path: str) -> bool:
        return (
            self.mode == "reject"
            and (self.method is None or self.method == method)
            and (self.path_prefix is None or path.startswith(self.path_prefix))
            and (self.payment_key is None or self.payment_key in path.split("/"))
        )


_UNSEEN = object()


@dataclass(slots=True)
class _Order:
    body: dict[str, Any]
    raw: bool                           # added as-is by add_raw_order: listed, never moved
    created_at: float
    seq: int
    history: list[StatusChange] = field(default_factory=list)
    acked: object = _UNSEEN             # the status_id last acknowledged
    timer: asyncio.TimerHandle | None = None

    @property
    def status(self) -> object:
        return self.body.get("status_id")

    @property
    def listed(self) -> bool:
        return self.acked != self.status


@dataclass(frozen=True, slots=True)
class _Move:
    to: int
    from_: frozenset[int]
    restaurant_courier_only: bool = False


_MOVES: dict[str, _Move] = {
    "accept": _Move(PREPARING, frozenset({RECEIVED})),
    "ontheway": _Move(ON_THE_WAY, frozenset({PREPARING}), restaurant_courier_only=True),
    "complete": _Move(DELIVERED, frozenset({ON_THE_WAY}), restaurant_courier_only=True),
    "cancel": _Move(CANCELLED, frozenset({RECEIVED, PREPARING, ON_THE_WAY})),
}


class _Answer(Exception):
    """An error answer from deep inside a handler."""

    def __init__(self, status: int, error: str) -> None:
        super().__init__(error)
        self.status, self.error = status, error


_SAMPLE_PRODUCTS: tuple[dict[str, Any], ...] = (
    {"id": 55, "name": "Adana dürüm", "quantity": 2, "price": 18000, "category": "grill",
     "options": ["acılı", "soğansız"], "note": "lavaş az pişmiş"},
    {"id": 61, "name": "Mercimek çorbası", "quantity": 1, "price": 9000, "category": "soup",
     "options": [], "note": None},
    {"id": 70, "name": "Ayran", "quantity": 2, "price": 4000, "category": "drinks",
     "options": [{"name": "büyük", "price": 1000}], "note": None},
)


def build_order(
    order_id: int,
    *,
    payment_key: str | None = None,
    status_id: int = RECEIVED,
    courier_type: str = "restaurant",
    payment_method: str = "CASH",
    scheduled_date: str = "",
    note: str | None = "Zili çalmayın, kapıya bırakın",
    customer: dict[str, Any] | None = None,
    products: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A realistic seed 001 order: a customer with phone and address, products with options
    and notes, the total in minor units from the products plus the courier fee."""
    items = copy.deepcopy(list(_SAMPLE_PRODUCTS) if products is None else products)
    courier_fee = 0 if courier_type == "restaurant" else 1500
    total = courier_fee + sum(int(p.get("price", 0)) * int(p.get("quantity", 1)) for p in items)
    return {
        "id": order_id,
        "payment_key": payment_key or str(uuid.uuid4()),
        "status_id": status_id,
        "courier_type": courier_type,
        "courier_fee": courier_fee,
        "payment_method": payment_method,
        "scheduled_date": scheduled_date,
        "note": note,
        "customer": customer if customer is not None else {
            "name": "Ayşe Kaya", "phone": "+90 532 765 43 21",
            "address": "Caferağa Mah. Moda Cad. No:12 D:3 Kadıköy/İstanbul",
        },
        "products": items,
        "total": total,
    }


@dataclass
class FakeMarketplace:
    token: str = "test-token"
    port: int = 0
    host: str = "127.0.0.1"
    requests: list[RequestLog] = field(default_factory=list)
    # The seed does not say what `success` answers; False: a bare {"success": true}, which
    # does not tell the client which status it acknowledged.
    success_names_status: bool = True

    def __post_init__(self) -> None:
        self._fault = _Fault()
        self._orders: dict[str, _Order] = {}
        self._unkeyed: list[_Order] = []     # raw orders without a usable payment_key
        self._server: asyncio.Server | None = None
        self._web: web.Server | None = None
        self._held: set[asyncio.Future[None]] = set()
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []
        self._auto_cancel: tuple[float, int] | None = None
        self._ids = itertools.count(1031)
        self._seq = itertools.count()

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def mode(self) -> FaultMode:
        return self._fault.mode

    async def start(self) -> FakeMarketplace:
        await self._listen()
        return self

    async def stop(self) -> None:
        await self._close()
        for waiter in list(self._held):
            waiter.cancel()
        for order in self._all():
            if order.timer is not None:
                order.timer.cancel()

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
        delay: float = 0.0,
        retry_after: float | None = None,
        status: int = 400,
        method: str | None = None,
        path_prefix: str | None = None,
        payment_key: str | None = None,
    ) -> None:
        """Change how the fake answers from the next request on."""
        if mode not in get_args(FaultMode):
            raise ValueError(f"unknown fault mode {mode!r}")
        if mode == "reject" and not (method or path_prefix or payment_key):
            raise ValueError("reject needs a method, a path_prefix or a payment_key")
        if not 100 <= status <= 599:
            raise ValueError(f"status {status} is not an HTTP status")
        if mode == "429" and retry_after is None:
            retry_after = 1.0
        self._fault = _Fault(mode, delay, retry_after, status,
                             method.upper() if method else None, path_prefix, payment_key)
        if mode == "down":
            await self._close()
        else:
            await self._listen()
        if mode != "blackhole":
            # A real blackhole loses the requests; the held ones were timed out long ago.
            for waiter in list(self._held):
                waiter.cancel()

    # -- the marketplace's own moves -----------------------------------------------------

    def add_order(self, body: dict[str, Any]) -> dict[str, Any]:
        """Add a seed-shaped order (any status; 1 when absent); returns a copy of it."""
        body = copy.deepcopy(body)
        body.setdefault("status_id", RECEIVED)
        key = body.get("payment_key")
        if not isinstance(key, str) or not key:
            raise ValueError("payment_key must be a non-empty string")
        if type(body.get("id")) is not int:
            raise ValueError("id must be an integer")
        if type(body["status_id"]) is not int or body["status_id"] not in STATUSES:
            raise ValueError(f"status_id must be one of {', '.join(map(str, STATUSES))}")
        if body.get("courier_type") not in ("restaurant", "platform"):
            raise ValueError("courier_type must be 'restaurant' or 'platform'")
        if key in self._orders:
            raise ValueError(f"payment_key {key} is already used")
        if any(o.body.get("id") == body["id"] for o in self._orders.values() if not o.raw):
            raise ValueError(f"id {body['id']} is already used")
        order = _Order(body, raw=False, created_at=time.monotonic(), seq=next(self._seq))
        order.history.append(StatusChange(body["status_id"], order.created_at, "marketplace"))
        self._orders[key] = order
        self._arm_auto_cancel(order)
        self._changed()
        return copy.deepcopy(body)

    def new_order(self, **options: Any) -> dict[str, Any]:
        """Build a realistic order (see `build_order` for the options) and add it."""
        order_id = options.pop("order_id", None)
        while order_id is None or any(o.body.get("id") == order_id for o in self._all()):
            order_id = next(self._ids)
        return self.add_order(build_order(order_id, **options))

    def add_raw_order(self, body: dict[str, Any]) -> None:
        """Keep any JSON object in the list as it is, for bad-input tests. With a string
        payment_key, `success` acknowledges it; every other call on it answers 409."""
        if not isinstance(body, dict):
            raise ValueError("a raw order is still a JSON object")
        order = _Order(copy.deepcopy(body), raw=True, created_at=time.monotonic(),
                       seq=next(self._seq))
        key = body.get("payment_key")
        if isinstance(key, str) and key and key not in self._orders:
            self._orders[key] = order
        else:
            self._unkeyed.append(order)
        self._changed()

    def set_status(self, payment_key: str, status_id: int, *,
                   reason_id: int | None = None) -> None:
        """The marketplace moves an order itself; any seed status, no questions asked."""
        if type(status_id) is not int or status_id not in STATUSES:
            raise ValueError(f"status_id must be one of {', '.join(map(str, STATUSES))}")
        order = self._orders.get(payment_key)
        if order is None or order.raw:
            raise KeyError(payment_key)
        if order.status != status_id:
            self._move(order, status_id, "marketplace", reason_id=reason_id)

    def edit_order(self, payment_key: str, changes: dict[str, Any]) -> None:
        """The marketplace changes fields of an order as it lists it (its status only through
        `set_status`): a later listing may break the schema an earlier one kept."""
        order = self._orders.get(payment_key)
        if order is None or order.raw:
            raise KeyError(payment_key)
        if "status_id" in changes or "payment_key" in changes:
            raise ValueError("status_id and payment_key change through set_status only")
        order.body.update(copy.deepcopy(changes))
        self._changed()

    def set_auto_cancel(self, seconds: float | None, *,
                        reason_id: int = OTHER_REASON_ID) -> None:
        """Cancel (status 6, `reason_id`) each order still at status 1 `seconds` after it
        arrived, as marketplaces do with unanswered orders; None turns it off."""
        if type(reason_id) is not int or reason_id not in CANCEL_REASONS:
            raise ValueError(f"unknown reason_id {reason_id}")
        self._auto_cancel = None if seconds is None else (max(0.0, seconds), reason_id)
        for order in self._orders.values():
            self._arm_auto_cancel(order)

    def _arm_auto_cancel(self, order: _Order) -> None:
        if order.timer is not None:
            order.timer.cancel()
            order.timer = None
        if self._auto_cancel is None or order.raw or order.status != RECEIVED:
            return
        seconds, reason_id = self._auto_cancel
        left = max(0.0, order.created_at + seconds - time.monotonic())
        order.timer = asyncio.get_running_loop().call_later(
            left, self._auto_cancel_due, order, reason_id)

    def _auto_cancel_due(self, order: _Order, reason_id: int) -> None:
        order.timer = None
        if order.status == RECEIVED:
            self._move(order, CANCELLED, "marketplace", reason_id=reason_id)

    # -- what tests read -------------------------------------------------------------------

    def order(self, payment_key: str) -> dict[str, Any]:
        """The order as the marketplace holds it now."""
        return copy.deepcopy(self._orders[payment_key].body)

    def status_of(self, payment_key: str) -> int:
        status = self._orders[payment_key].status
        assert isinstance(status, int)
        return status

    def history(self, payment_key: str) -> list[StatusChange]:
        return list(self._orders[payment_key].history)

    def acknowledged(self, payment_key: str) -> int | None:
        """The status last acknowledged, None if never."""
        acked = self._orders[payment_key].acked
        return acked if isinstance(acked, int) else None

    def current(self) -> list[dict[str, Any]]:
        """What `get-current` would answer now."""
        return [copy.deepcopy(o.body) for o in self._all() if o.listed]

    def calls(self, method: str | None = None, path_prefix: str = "") -> list[RequestLog]:
        return [r for r in self.requests
                if (method is None or r.method == method) and r.path.startswith(path_prefix)]

    def state(self) -> dict[str, Any]:
        return {
            "mode": self._fault.mode, "port": self.port, "orders": len(self._all()),
            "listed": sum(1 for o in self._all() if o.listed), "requests": len(self.requests),
        }

    def describe(self) -> list[dict[str, Any]]:
        """Every order with its acknowledged status and history, for the control port."""
        return [
            {"order": copy.deepcopy(o.body), "raw": o.raw, "listed": o.listed,
             "acknowledged": None if o.acked is _UNSEEN else o.acked,
             "history": [{"status_id": h.status_id, "at": h.at, "by": h.by,
                          "reason_id": h.reason_id, "preparing_time": h.preparing_time}
                         for h in o.history]}
            for o in self._all()
        ]

    async def wait_for(self, predicate: Callable[[], bool], within: float = 10.0) -> None:
        """Wait, without polling, until `predicate` holds after some request or move."""
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

    # -- internals -----------------------------------------------------------------------

    def _all(self) -> list[_Order]:
        return sorted([*self._orders.values(), *self._unkeyed], key=lambda o: o.seq)

    def _changed(self) -> None:
        for predicate, waiter in list(self._waiters):
            if not waiter.done() and predicate():
                waiter.set_result(None)

    def _move(self, order: _Order, status_id: int, by: Mover, *,
              reason_id: int | None = None, preparing_time: int | None = None) -> None:
        order.body["status_id"] = status_id
        if preparing_time is not None:
            order.body["preparing_time"] = preparing_time
        order.history.append(
            StatusChange(status_id, time.monotonic(), by, reason_id, preparing_time))
        self._arm_auto_cancel(order)
        self._changed()

    def _log(self, at: float, request: web.BaseRequest, body: Any, status: int) -> None:
        self.requests.append(RequestLog(at, request.method, request.path, body, status))
        self._changed()

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        at = time.monotonic()
        fault = self._fault
        raw = await request.read()
        body = _body(raw)
        if fault.mode == "blackhole":
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._held.add(waiter)
            self._log(at, request, body, 0)
            try:
                await waiter  # only ever ends by cancellation
            finally:
                self._held.discard(waiter)
        response = self._answer(request, body, fault)
        self._log(at, request, body, response.status)
        if fault.mode == "slow":
            # The work is done, the answer is late: a client that gives up retries into it.
            await asyncio.sleep(fault.delay)
        return response

    def _answer(self, request: web.BaseRequest, body: Any, fault: _Fault) -> web.Response:
        if fault.mode == "html":
            return web.Response(text=MAINTENANCE_PAGE, content_type="text/html")
        if fault.mode in ("429", "500"):
            headers = {}
            if fault.retry_after is not None:
                headers["Retry-After"] = _seconds(fault.retry_after)
            return web.json_response({"error": "try again later"}, status=int(fault.mode),
                                     headers=headers)
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response({"error": "unauthorized"}, status=401)
        try:
            route = _route(request.method, request.path)
            if fault.rejects(request.method, request.path):
                headers = {}
                if fault.retry_after is not None:
                    headers["Retry-After"] = _seconds(fault.retry_after)
                return web.json_response({"error": "rejected"}, status=fault.status,
                                         headers=headers)
            return web.json_response(self._serve(route, body))
        except _Answer as answer:
            return web.json_response({"error": answer.error}, status=answer.status)

    def _serve(self, route: tuple[str, str | None], body: Any) -> dict[str, Any]:
        action, key = route
        if action == "get-current":
            return {"data": self.current()}
        if action == "cancel-reasons":
            return {"data": [{"id": i, "reason": r} for i, r in CANCEL_REASONS.items()]}
        assert key is not None
        order = self._orders.get(key)
        if order is None:
            raise _Answer(404, "order not found")
        if action == "success":
            order.acked = order.status
            self._changed()
            if not self.success_names_status:
                return {"success": True}
            return {"success": True, "data": {"payment_key": key, "status_id": order.status}}
        move = _MOVES[action]
        preparing_time = reason_id = None
        if action == "accept":
            preparing_time = _whole(body, "preparing_time", 1, MAX_PREPARING_TIME)
        elif action == "cancel":
            reason_id = _whole(body, "reason_id", min(CANCEL_REASONS), max(CANCEL_REASONS))
        if order.raw:
            raise _Answer(409, "order cannot be changed")
        if move.restaurant_courier_only and order.body.get("courier_type") != "restaurant":
            raise _Answer(403, f"{action} is only for orders with courier_type 'restaurant'")
        if order.status != move.to:
            if order.status not in move.from_:
                wanted = " or ".join(map(str, sorted(move.from_)))
                raise _Answer(409, f"order is in status {order.status}; {action} needs "
                                   f"status {wanted}")
            self._move(order, move.to, "restaurant", reason_id=reason_id,
                       preparing_time=preparing_time)
        return {"success": True, "data": {"payment_key": key, "status_id": order.status}}


def _route(method: str, path: str) -> tuple[str, str | None]:
    parts = path.strip("/").split("/")
    if parts[:1] != ["orders"] or len(parts) not in (2, 3):
        raise _Answer(404, "not found")
    if len(parts) == 2:
        if parts[1] not in ("get-current", "cancel-reasons"):
            raise _Answer(404, "not found")
        if method != "GET":
            raise _Answer(405, "method not allowed")
        return parts[1], None
    action, key = parts[1], parts[2]
    if action != "success" and action not in _MOVES:
        raise _Answer(404, "not found")
    if method != "PUT":
        raise _Answer(405, "method not allowed")
    return action, key


def _body(raw: bytes) -> Any:
    if not raw:
        return None
    text = raw.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


def _whole(body: Any, name: str, low: int, high: int) -> int:
    value = body.get(name) if isinstance(body, dict) else None
    if type(value) is not int or not low <= value <= high:
        raise _Answer(400, f"{name} must be an integer from {low} to {high}")
    return value


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


# -- the demo process ---------------------------------------------------------------------


async def _control_app(fake: FakeMarketplace) -> web.Application:
    async def read(request: web.Request) -> dict[str, Any]:
        try:
            data = await request.json() if request.can_read_body else {}
        except ValueError:
            raise _Answer(400, "body is not JSON") from None
        if not isinstance(data, dict):
            raise _Answer(400, "body must be a JSON object")
        return data

    def answer(call: Callable[[], Any], status: int = 200) -> web.Response:
        try:
            return web.json_response(call(), status=status)
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        except KeyError as exc:
            return web.json_response({"error": f"no order {exc}"}, status=404)

    async def fault(request: web.Request) -> web.Response:
        data = await read(request)
        try:
            await fake.set_fault(
                data.get("mode", "none"), delay=float(data.get("delay", 0.0)),
                retry_after=data.get("retry_after"), status=int(data.get("status", 400)),
                method=data.get("method"), path_prefix=data.get("path_prefix"),
                payment_key=data.get("payment_key"),
            )
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(fake.state())

    async def add(request: web.Request) -> web.Response:
        data = await read(request)
        return answer(lambda: fake.add_order(data), 201)

    async def build(request: web.Request) -> web.Response:
        data = await read(request)
        return answer(lambda: fake.new_order(**data), 201)

    async def raw(request: web.Request) -> web.Response:
        data = await read(request)

        def add_raw() -> dict[str, Any]:
            fake.add_raw_order(data)
            return {"added": True}

        return answer(add_raw, 201)

    async def status(request: web.Request) -> web.Response:
        data, key = await read(request), request.match_info["payment_key"]

        def move() -> dict[str, Any]:
            status_id = data.get("status_id")
            if not isinstance(status_id, int):
                raise ValueError("status_id must be an integer")
            fake.set_status(key, status_id, reason_id=data.get("reason_id"))
            return fake.order(key)

        return answer(move)

    async def auto_cancel(request: web.Request) -> web.Response:
        data = await read(request)

        def arm() -> dict[str, Any]:
            seconds = data.get("seconds")
            fake.set_auto_cancel(None if seconds is None else float(seconds),
                                 reason_id=int(data.get("reason_id", OTHER_REASON_ID)))
            return fake.state()

        return answer(arm)

    async def state(request: web.Request) -> web.Response:
        return web.json_response(fake.state())

    async def orders(request: web.Request) -> web.Response:
        return web.json_response({"data": fake.describe()})

    async def requests(request: web.Request) -> web.Response:
        return web.json_response({"data": [
            {"at": r.at, "method": r.method, "path": r.path, "body": r.body, "status": r.status}
            for r in fake.requests
        ]})

    @web.middleware
    async def bad_body(request: web.Request,
                       handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
            return response
        except _Answer as exc:
            return web.json_response({"error": exc.error}, status=exc.status)

    app = web.Application(middlewares=[bad_body])
    app.router.add_post("/fault", fault)
    app.router.add_post("/orders", add)
    app.router.add_post("/orders/build", build)
    app.router.add_post("/orders/raw", raw)
    app.router.add_post("/orders/{payment_key}/status", status)
    app.router.add_post("/auto-cancel", auto_cancel)
    app.router.add_get("/state", state)
    app.router.add_get("/orders", orders)
    app.router.add_get("/requests", requests)
    return app


async def _serve(port: int, control_port: int, token: str) -> None:
    fake = await FakeMarketplace(token=token, port=port).start()
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge.connectors.marketplace.fake",
                                     description="A fake seed 001 delivery marketplace.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--control-port", type=int, default=0)
    parser.add_argument("--token-file", type=Path, required=True)
    args = parser.parse_args(argv)
    token = args.token_file.read_text(encoding="utf-8").strip()
    asyncio.run(_serve(args.port, args.control_port, token))
    return 0


if __name__ == "__main__":
    sys.exit(main())
