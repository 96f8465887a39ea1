"""A stand-in for the restaurant core's record endpoint (CONTRACT section 7), with faults.

Used by the tests, the demo and the drain benchmark. It listens on 127.0.0.1 and keeps
everything it received in memory. Faults:

- `none`: answer 200 with every record id of the batch listed as accepted;
- `down`: stop listening and cut open connections (connection refused);
- `500` / `429`: answer that status (with Retry-After if asked);
- `slow`: take the records at once, answer 200 only after `delay` seconds;
- `blackhole`: take the request and never answer, never close (a silently cut link);
- `reject`: 400 for any batch holding one of `reject_ids`, 200 for the others;
- `partial`: accept only the first `accept_max` records of each batch;
- `drip`: answer 200 headers, then one byte of body every `delay` seconds, never finishing
  (each read is quick, the answer never completes: only an overall deadline catches it).

`python -m edge.upstream.fake --port N --token-file F` runs it for the demo; a second,
always-up control port takes `POST /fault {"mode": ...}`, `GET /state` and `GET /records`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast, get_args

from aiohttp import web

FaultMode = Literal[
    "none", "down", "500", "429", "slow", "blackhole", "reject", "partial", "drip"
]
_FIELDS = ("record_id", "kind", "order_id", "seq", "created_at", "body")


@dataclass(frozen=True, slots=True)
class RequestLog:
    at: float                 # time.monotonic() when the request arrived
    status: int
    record_ids: tuple[str, ...]


@dataclass(slots=True)
class _Fault:
    mode: FaultMode = "none"
    retry_after: float | None = None
    delay: float = 0.0
    reject_ids: frozenset[str] = frozenset()
    accept_max: int = 0


@dataclass
class FakeUpstream:
    token: str = "test-token"
    port: int = 0
    host: str = "127.0.0.1"
    received: list[dict[str, Any]] = field(default_factory=list)
    accepted: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[RequestLog] = field(default_factory=list)
    # First-time acceptances that came after a higher seq of the same order.
    order_violations: list[tuple[str, int, int]] = field(default_factory=list)
    # The most record requests it was handling at once (a pipelining client's mark).
    most_at_once: int = 0

    def __post_init__(self) -> None:
        self._at_once = 0
        self._fault = _Fault()
        self._server: asyncio.Server | None = None
        self._web: web.Server | None = None
        self._held: set[asyncio.Future[None]] = set()
        self._last_seq: dict[str, int] = {}
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def mode(self) -> FaultMode:
        return self._fault.mode

    async def start(self) -> FakeUpstream:
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
        reject_ids: set[str] | frozenset[str] = frozenset(),
        accept_max: int = 0,
    ) -> None:
        """Change how the fake behaves from the next request on."""
        if mode not in get_args(FaultMode):
            raise ValueError(f"unknown fault mode {mode!r}")
        self._fault = _Fault(mode, retry_after, delay, frozenset(reject_ids), accept_max)
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

    async def wait_accepted(self, count: int, within: float = 10.0) -> None:
        """Wait until `count` distinct record ids have been accepted."""
        await self.wait_for(lambda: len(self.accepted) >= count, within)

    async def wait_requests(self, count: int, within: float = 10.0) -> None:
        await self.wait_for(lambda: len(self.requests) >= count, within)

    def state(self) -> dict[str, Any]:
        return {
            "mode": self._fault.mode, "port": self.port, "received": len(self.received),
            "accepted": len(self.accepted), "requests": len(self.requests),
            "order_violations": len(self.order_violations), "most_at_once": self.most_at_once,
        }

    def _log(self, status: int, ids: Sequence[str]) -> None:
        self.requests.append(RequestLog(time.monotonic(), status, tuple(ids)))
        for predicate, waiter in list(self._waiters):
            if not waiter.done() and predicate():
                waiter.set_result(None)

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        self._at_once += 1
        self.most_at_once = max(self.most_at_once, self._at_once)
        try:
            return await self._answer(request)
        finally:
            self._at_once -= 1

    async def _answer(self, request: web.BaseRequest) -> web.StreamResponse:
        fault = self._fault
        parts = request.path.strip("/").split("/")
        if (request.method != "POST" or len(parts) != 4 or parts[0] != "v1"
                or parts[1] != "sites" or parts[3] != "records"):
            return web.json_response({"error": "not found"}, status=404)
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            self._log(401, ())
            return web.json_response({"error": "bad token"}, status=401)
        if fault.mode == "blackhole":
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._held.add(waiter)
            self._log(0, ())
            try:
                await waiter  # only ever ends by cancellation
            finally:
                self._held.discard(waiter)
        try:
            records = _records(await request.read())
        except ValueError as exc:
            self._log(400, ())
            return web.json_response({"error": str(exc)}, status=400)
        ids = [str(r["record_id"]) for r in records]
        if fault.mode == "drip":
            self._log(200, ids)
            response = web.StreamResponse(status=200)
            response.content_type = "application/json"
            await response.prepare(request)
            while True:
                await response.write(b" ")
                await asyncio.sleep(fault.delay)
        if fault.mode in ("500", "429"):
            status = int(fault.mode)
            headers = {}
            if fault.retry_after is not None:
                headers["Retry-After"] = _seconds(fault.retry_after)
            self._log(status, ids)
            return web.json_response({"error": "try later"}, status=status, headers=headers)
        if fault.mode == "reject" and fault.reject_ids.intersection(ids):
            self._log(400, ids)
            bad = sorted(fault.reject_ids.intersection(ids))
            return web.json_response({"error": "invalid records", "record_ids": bad}, status=400)
        take = records[: fault.accept_max] if fault.mode == "partial" else records
        self.received.extend(records)
        for record in take:
            self._accept(record)
        # Logged after accepting: a waiter woken by this request sees its acceptances.
        self._log(200, ids)
        if fault.mode == "slow":
            # The records are taken, the answer is late: a client that gives up (or dies)
            # now must send them again, and they are accepted again without double counting.
            await asyncio.sleep(fault.delay)
        return web.json_response({"accepted": [str(r["record_id"]) for r in take]})

    def _accept(self, record: dict[str, Any]) -> None:
        record_id = str(record["record_id"])
        if record_id in self.accepted:
            return
        self.accepted[record_id] = record
        order_id, seq = record.get("order_id"), int(record["seq"])
        if isinstance(order_id, str):
            last = self._last_seq.get(order_id, -1)
            if seq < last:
                self.order_violations.append((order_id, last, seq))
            self._last_seq[order_id] = max(last, seq)


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _records(raw: bytes) -> list[dict[str, Any]]:
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"body is not JSON: {exc}") from exc
    records = data.get("records") if isinstance(data, dict) else None
    if not isinstance(records, list):
        raise ValueError("body has no records list")
    for record in records:
        if not isinstance(record, dict) or any(k not in record for k in _FIELDS):
            raise ValueError(f"record lacks one of {', '.join(_FIELDS)}")
        if not isinstance(record["record_id"], str) or not isinstance(record["seq"], int):
            raise ValueError("record_id must be a string and seq an integer")
    return cast(list[dict[str, Any]], records)


# -- the demo process ---------------------------------------------------------------------


async def _control_app(fake: FakeUpstream) -> web.Application:
    async def fault(request: web.Request) -> web.Response:
        data = await request.json()
        await fake.set_fault(
            data.get("mode", "none"),
            retry_after=data.get("retry_after"),
            delay=float(data.get("delay", 0.0)),
            reject_ids=set(data.get("reject_ids", [])),
            accept_max=int(data.get("accept_max", 0)),
        )
        return web.json_response(fake.state())

    async def state(request: web.Request) -> web.Response:
        body = fake.state()
        if request.query.get("ids"):
            body["accepted_ids"] = list(fake.accepted)
        return web.json_response(body)

    async def records(request: web.Request) -> web.Response:
        """Every record accepted, as sent: what the upstream knows (privacy checks)."""
        return web.json_response({"records": list(fake.accepted.values())})

    app = web.Application()
    app.router.add_post("/fault", fault)
    app.router.add_get("/state", state)
    app.router.add_get("/records", records)
    return app


async def _serve(port: int, control_port: int, token: str) -> None:
    fake = await FakeUpstream(token=token, port=port).start()
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
    parser = argparse.ArgumentParser(prog="python -m edge.upstream.fake",
                                     description="A fake upstream for kitchen-edge.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--control-port", type=int, default=0)
    parser.add_argument("--token-file", type=Path, required=True)
    args = parser.parse_args(argv)
    token = args.token_file.read_text(encoding="utf-8").strip()
    asyncio.run(_serve(args.port, args.control_port, token))
    return 0


if __name__ == "__main__":
    sys.exit(main())
