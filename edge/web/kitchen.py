"""The kitchen display over the store: its cards (a `CardSource`), and bump and recall.

Bumping a card and recalling one are each one store transaction. When a bump leaves an
order with no open card at any station, the order is ready: `on_ready` is called (the daemon
submits an `order.ready` event through the in-process intake, so the timeline and the
partners' calls follow as for any other ready).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import timedelta

from edge.clock import Clock, rfc3339_ms
from edge.store import Store, kds
from edge.store.kds import Bumped
from edge.web.cards import Card, build_card
from edge.web.live import CardHub

# A card never bumped (a kitchen that works from paper) leaves the screens after this long.
CARD_WINDOW = timedelta(hours=24)

Ready = Callable[[str], Awaitable[None]]


def load_cards(conn: sqlite3.Connection, stations: Sequence[str] | None, since: str,
               order_ids: Iterable[str] | None = None) -> list[Card]:
    rows = kds.open_tickets(conn, stations, since=since, order_ids=order_ids)
    lines = kds.lines_of(conn, {r.order_id for r in rows})
    return [build_card(row, lines) for row in rows]


class StoreCards:
    """The open cards, read from the store in one read transaction each time."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    def _since(self) -> str:
        return rfc3339_ms(self.clock.now() - CARD_WINDOW)

    async def snapshot(self, stations: Sequence[str] | None) -> list[Card]:
        since = self._since()
        return await self.store.read(lambda c: load_cards(c, stations, since))

    async def cards_of(self, stations: Sequence[str] | None,
                       order_ids: Iterable[str]) -> list[Card]:
        since, wanted = self._since(), list(order_ids)
        return await self.store.read(lambda c: load_cards(c, stations, since, wanted))

    def now(self) -> str:
        return rfc3339_ms(self.clock.now())


class StoreKitchen:
    """Bump and recall as store transactions; tells the hub, and says when an order is
    ready."""

    def __init__(self, store: Store, clock: Clock, hub: CardHub,
                 on_ready: Ready | None = None) -> None:
        self.store = store
        self.clock = clock
        self.hub = hub
        self.on_ready = on_ready

    async def bump(self, card_id: str, stations: Sequence[str] | None) -> Bumped | None:
        at = rfc3339_ms(self.clock.now())

        def write(conn: sqlite3.Connection) -> tuple[Bumped | None, bool]:
            done = kds.bump(conn, card_id, stations, at)
            return done, done is not None and kds.ready_to_call(conn, done.order_id)

        done, ready = await self.store.transact(write)
        if done is not None:
            self.hub.touch([done.order_id])
            if ready and self.on_ready is not None:
                await self.on_ready(done.order_id)
        return done

    async def recall(self, stations: Sequence[str] | None) -> Bumped | None:
        at = rfc3339_ms(self.clock.now())
        done = await self.store.transact(lambda conn: kds.recall_last(conn, stations, at))
        if done is not None:
            self.hub.touch([done.order_id])
        return done


__all__ = ["CARD_WINDOW", "StoreCards", "StoreKitchen", "load_cards"]
