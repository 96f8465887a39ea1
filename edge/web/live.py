"""The kitchen display's live protocol: server-sent events, a snapshot first, then deltas.

One stream per open screen (`GET /kds/{station}/events`):

    event: snapshot   data: {"epoch", "seq": 0, "now", "cards": [card, ...]}
    event: upsert     data: {"epoch", "seq": n, "card": card}       (new or changed card)
    event: remove     data: {"epoch", "seq": n, "card_id": str}     (bumped, closed)
    event: tick       data: {"epoch", "seq": n, "now"}              (every 15 s: still here)

Every message carries the SSE `id` `{epoch}.{seq}`; `seq` counts the messages of this one
stream from 0. On every (re)connect the server starts with a snapshot of the open cards, so
the browser replaces its state whole, and catches up after a dropped connection or a daemon
restart without a gap. The stream watches for changes BEFORE it reads the snapshot, so a
change committed while the snapshot is read is never missed; deltas are the cards as they
are now, re-read after the change and sent only when they differ from what this stream
sent, so applying one twice changes nothing. A browser that sees a `seq` jump reconnects.

What a card is and where the changes come from is not this module's business: it depends on
a `CardSource` (reads) and on `CardHub.touch(order_ids)` being called after each commit that
may change cards (the change feed does that).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol

import structlog
from aiohttp import web

from edge.web.cards import Card

log = structlog.get_logger(__name__)

TICK_SECONDS = 15.0
# What the browser waits before it reconnects after the stream broke (the SSE `retry`).
RETRY_MS = 1000


class CardSource(Protocol):
    """The reads the stream needs: the open cards of some stations (None: every station)."""

    async def snapshot(self, stations: Sequence[str] | None) -> Sequence[Card]: ...

    async def cards_of(self, stations: Sequence[str] | None,
                       order_ids: Iterable[str]) -> Sequence[Card]: ...

    def now(self) -> str:
        """The server's time, RFC 3339: the browser's timers count from it, not from its own
        clock, which may be minutes off on a kitchen tablet."""
        ...


class Watch:
    """One stream's view of the hub: the orders touched since it last looked, coalesced, so a
    slow browser never makes a queue grow."""

    def __init__(self) -> None:
        self._orders: set[str] = set()
        self._everything = False
        self._closed = False
        self._ready = asyncio.Event()

    def _touch(self, order_ids: Iterable[str] | None) -> None:
        if order_ids is None:
            self._everything = True
        else:
            self._orders.update(order_ids)
        self._ready.set()

    def _close(self) -> None:
        self._closed = True
        self._ready.set()

    @property
    def closed(self) -> bool:
        return self._closed

    async def next(self, wait: float) -> set[str] | None:
        """The order ids touched since the last call (an empty set after `wait` seconds with
        nothing new); None when everything must be read again."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), wait)
        self._ready.clear()
        if self._everything:
            self._everything, self._orders = False, set()
            return None
        touched, self._orders = self._orders, set()
        return touched


class CardHub:
    """Fans "these orders' cards may have changed" out to every open stream."""

    def __init__(self) -> None:
        self.epoch = secrets.token_hex(4)   # tells the browser the daemon restarted
        self._watches: set[Watch] = set()
        self._closed = False

    @contextlib.contextmanager
    def watch(self) -> Iterator[Watch]:
        w = Watch()
        if self._closed:
            w._close()
        self._watches.add(w)
        try:
            yield w
        finally:
            self._watches.discard(w)

    def touch(self, order_ids: Iterable[str] | None) -> None:
        """Cheap, on the event loop (a feed subscriber): None means "read everything"."""
        ids = None if order_ids is None else frozenset(order_ids)
        for w in self._watches:
            w._touch(ids)

    def close(self) -> None:
        """Shutdown: every stream ends, so the HTTP server is not kept waiting by them."""
        self._closed = True
        for w in list(self._watches):
            w._close()

    @property
    def streams(self) -> int:
        return len(self._watches)


def _message(name: str, epoch: str, seq: int, body: dict[str, Any]) -> bytes:
    data = json.dumps({"epoch": epoch, "seq": seq, **body}, ensure_ascii=False,
                      separators=(",", ":"))
    return f"id: {epoch}.{seq}\nevent: {name}\ndata: {data}\n\n".encode()


async def stream_cards(request: web.Request, source: CardSource, hub: CardHub,
                       stations: Sequence[str] | None, *,
                       tick: float = TICK_SECONDS) -> web.StreamResponse:
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream; charset=utf-8",
        "Cache-Control": "no-store",
        "X-Accel-Buffering": "no",
    })
    await response.prepare(request)
    epoch = hub.epoch
    seq = 0
    with hub.watch() as watch:
        sent: dict[str, Card] = {}

        async def snapshot() -> bytes:
            nonlocal sent
            cards = await source.snapshot(stations)
            sent = {c.card_id: c for c in cards}
            return _message("snapshot", epoch, seq, {
                "now": source.now(), "cards": [c.wire() for c in cards]})

        try:
            await response.write(f"retry: {RETRY_MS}\n\n".encode() + await snapshot())
            while not watch.closed:
                touched = await watch.next(tick)
                if watch.closed:
                    break
                if touched is None:
                    seq += 1
                    await response.write(await snapshot())
                    continue
                if not touched:
                    seq += 1
                    await response.write(_message("tick", epoch, seq, {"now": source.now()}))
                    continue
                out = bytearray()
                fresh = {c.card_id: c for c in await source.cards_of(stations, touched)}
                for card_id in [k for k, c in sent.items()
                                if c.order_id in touched and k not in fresh]:
                    del sent[card_id]
                    seq += 1
                    out += _message("remove", epoch, seq, {"card_id": card_id})
                for card_id, card in fresh.items():
                    if sent.get(card_id) != card:
                        sent[card_id] = card
                        seq += 1
                        out += _message("upsert", epoch, seq, {"card": card.wire()})
                if out:
                    await response.write(bytes(out))
        except ConnectionResetError:
            # The browser went away: nothing to clean up but the watch, which `with` drops.
            pass
    return response


__all__ = ["RETRY_MS", "TICK_SECONDS", "CardHub", "CardSource", "Watch", "stream_cards"]
