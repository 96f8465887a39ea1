"""The kitchen display over the store: its cards (a `CardSource`), what makes a ticket a
card (a transactional reaction to a job becoming printable), and bump and recall.

Bumping a card and recalling one are each one store transaction. When a bump leaves an
order with no open card at any station, the order is ready: `on_ready` is called (the web
server submits an `order.ready` event through the daemon's intake, so the timeline and the
partners' calls follow as for any other ready).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta

from edge.clock import Clock, parse_rfc3339, rfc3339_ms
from edge.feed import JobQueued, OrderStageChanged, OrderStatusChanged
from edge.store import Store, Tx, kds
from edge.store.kds import Bumped
from edge.web.cards import Card, build_card
from edge.web.live import CardHub

# A card never bumped (a kitchen that works from paper) leaves the screens after this long.
CARD_WINDOW = timedelta(hours=24)

# An order that reached one of these has left the kitchen: its cards leave the screens.
GONE_STAGES = frozenset({"out_for_delivery", "completed"})
GONE_STATUSES = frozenset({"completed", "refunded", "partially_refunded"})


@dataclass(frozen=True)
class ReadyOrder:
    order_id: str
    channel: str
    station_id: str           # the station whose bump made it ready


Ready = Callable[[ReadyOrder], Awaitable[None]]


def register_reactions(store: Store, clock: Clock) -> None:
    """Inside the transaction that makes a cooking ticket printable, it becomes a card (its
    timer starts there, whatever the printers do); inside the one that sends an order out or
    completes it, its cards close."""

    def shown(tx: Tx, change: JobQueued) -> None:
        kds.show_jobs(tx.conn, [change.job_key], rfc3339_ms(clock.now()))

    def stage(tx: Tx, change: OrderStageChanged) -> None:
        if change.stage in GONE_STAGES:
            kds.close_order(tx.conn, change.order_id, rfc3339_ms(clock.now()))

    def status(tx: Tx, change: OrderStatusChanged) -> None:
        if change.status in GONE_STATUSES:
            kds.close_order(tx.conn, change.order_id, rfc3339_ms(clock.now()))

    store.react(JobQueued, shown)
    store.react(OrderStageChanged, stage)
    store.react(OrderStatusChanged, status)


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
        # unstamp: a step of the clock (NTP syncing) does not take open cards off screens.
        return rfc3339_ms(self.clock.unstamp(self.clock.now() - CARD_WINDOW))

    async def snapshot(self, stations: Sequence[str] | None) -> list[Card]:
        since = self._since()
        return self._restamped(await self.store.read(lambda c: load_cards(c, stations, since)))

    async def cards_of(self, stations: Sequence[str] | None,
                       order_ids: Iterable[str]) -> list[Card]:
        since, wanted = self._since(), list(order_ids)
        return self._restamped(
            await self.store.read(lambda c: load_cards(c, stations, since, wanted)))

    def _restamped(self, cards: list[Card]) -> list[Card]:
        """A card's timer counts from a stamp of ours: carried over the clock's steps (NTP
        syncing), so a card's age does not jump by years."""
        out = []
        for card in cards:
            started = parse_rfc3339(card.started_at)
            moved = self.clock.restamp(started)
            out.append(card if moved == started else
                       replace(card, started_at=rfc3339_ms(moved)))
        return out

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

        def write(tx: Tx) -> tuple[Bumped | None, str | None]:
            done = kds.bump(tx.conn, card_id, stations, at)
            return done, None if done is None else kds.ready_channel(tx.conn, done.order_id)

        done, channel = await self.store.transact(write)
        if done is not None:
            self.hub.touch([done.order_id])
            if channel is not None and self.on_ready is not None:
                await self.on_ready(ReadyOrder(done.order_id, channel, done.station_id))
        return done

    async def recall(self, stations: Sequence[str] | None) -> Bumped | None:
        at = rfc3339_ms(self.clock.now())
        done = await self.store.transact(lambda tx: kds.recall_last(tx.conn, stations, at))
        if done is not None:
            self.hub.touch([done.order_id])
        return done


__all__ = ["CARD_WINDOW", "GONE_STAGES", "GONE_STATUSES", "ReadyOrder", "StoreCards",
           "StoreKitchen", "load_cards", "register_reactions"]
