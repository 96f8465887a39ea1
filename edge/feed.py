"""The change feed: what a committed transaction changed, as typed records, in-process.

Writers collect changes while their transaction runs (`Tx.emit`, see `edge.store.tx`); the
store publishes them here after COMMIT, never on rollback, and a savepoint rolled back drops
the changes recorded since it. Whoever needs to react to the kitchen's changes subscribes by
change class: the MQTT publisher (timelines, dead letters, printer states), the metrics, the
upstream sender and the partner-call sender (woken by `RecordQueued`), the spooler (woken by
`JobQueued`), and later the screens and connectors. Nothing needs a callback slot of its own.

Subscribers run on the event loop, right after the commit, one after the other: they must
be cheap (set an event, queue a publish, schedule a task) and never block. One that raises is
logged and the others still run.

Changes that come from no transaction (a printer's state, the WAN going down) are published
directly with `Feed.publish`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import structlog

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Change:
    """Base of every change record."""


# -- ingest -----------------------------------------------------------------------------


@dataclass(frozen=True)
class EventAccepted(Change):
    """An event is stored as received (durable); it is applied later."""

    event_id: str
    order_id: str
    event_type: str


@dataclass(frozen=True)
class EventApplied(Change):
    """An event (or an operator command) changed the kitchen, or was a repeat of a change
    the order already had (`effect` "repeat")."""

    event_id: str
    order_id: str | None
    event_type: str            # "order.created" ...; "command" for an operator command
    effect: str                # applied | repeat | command


@dataclass(frozen=True)
class EventDuplicate(Change):
    """A message under an event_id (or command_id) already stored; not applied again."""

    event_id: str | None
    order_id: str | None


@dataclass(frozen=True)
class DeadLettered(Change):
    """A message was refused: kept in dead_letters, to be published on the dead-letter topic."""

    dead_letter_id: int
    topic: str
    reason: str
    kind: str                  # RejectKind value: invalid_json, schema, transition, ...


# -- orders -----------------------------------------------------------------------------


@dataclass(frozen=True)
class OrderStatusChanged(Change):
    order_id: str
    status: str
    previous: str | None       # None for a new order


@dataclass(frozen=True)
class OrderStageChanged(Change):
    """Where the food is moved on (seeds 001 and 004): `stage` accepted, ready,
    out_for_delivery, completed, cancelled or rejected; with the kitchen's prep time when it
    accepted, the reason code and reason when it called the order off. What a partner is told
    (through a transactional reaction, see `edge.store.tx`) and what the screens show."""

    order_id: str
    channel: str
    stage: str
    previous: str
    prep_minutes: int | None = None
    reason_code: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class TimelineChanged(Change):
    """The order's public timeline (CONTRACT section 6) changed; the new document."""

    order_id: str
    timeline: Mapping[str, Any] = field(hash=False)


@dataclass(frozen=True)
class RecordQueued(Change):
    """A durable record waits for a sender: `destination` "upstream" is the outbox
    (CONTRACT section 7); any other is a partner's name in the calls outbox."""

    destination: str
    order_id: str | None


# -- print jobs -------------------------------------------------------------------------


@dataclass(frozen=True)
class JobCreated(Change):
    job_key: str
    order_id: str
    station_id: str
    kind: str
    state: str                 # queued, or waiting (held, a later course, scheduled)


@dataclass(frozen=True)
class JobQueued(Change):
    """A job is printable now: created queued, or released from a wait."""

    job_key: str
    order_id: str
    station_id: str | None = None


@dataclass(frozen=True)
class JobWithdrawn(Change):
    job_key: str
    order_id: str
    reason: str


@dataclass(frozen=True)
class JobClaimed(Change):
    job_key: str
    order_id: str
    station_id: str
    printer_id: str


@dataclass(frozen=True)
class JobPrinted(Change):
    job_key: str
    order_id: str
    station_id: str
    printer_id: str
    kind: str
    created_at: datetime       # when the change reached the kitchen
    printed_at: datetime


@dataclass(frozen=True)
class JobReturned(Change):
    """A claimed job went back before any byte of it left (the printer was not ready or not
    reachable): `state` queued, waiting (held meanwhile) or withdrawn (called off)."""

    job_key: str
    order_id: str
    state: str
    reason: str


@dataclass(frozen=True)
class JobUnconfirmed(Change):
    """Delivered, not confirmed: bytes of the ticket may be in `printer_id`, which did not
    confirm them. Never sent to that printer again; it counts as on paper."""

    job_key: str
    order_id: str
    station_id: str
    printer_id: str
    reason: str


@dataclass(frozen=True)
class JobConfirmed(Change):
    """An unconfirmed ticket printed after all: the printer that held it said ready on the
    connection that carried it."""

    job_key: str
    order_id: str
    printer_id: str


@dataclass(frozen=True)
class JobCopyReleased(Change):
    """An unconfirmed ticket waited too long: one copy marked MAY BE DUPLICATE may print on
    another printer of its station (`state` queued, or waiting while the order is held)."""

    job_key: str
    order_id: str
    state: str
    not_on: tuple[str, ...]


@dataclass(frozen=True)
class JobFailed(Change):
    job_key: str
    order_id: str
    reason: str


# -- printers and links -----------------------------------------------------------------


@dataclass(frozen=True)
class PrinterStateChanged(Change):
    """What `{root}/printers/{id}/state` says (published retained): the printer's state,
    since when, its queue, the jobs delivered to it and not confirmed, and why it cannot
    print while it cannot."""

    printer_id: str
    state: str
    since: str
    queued: int
    unconfirmed: tuple[str, ...] = ()
    detail: str | None = None

    def body(self) -> dict[str, object]:
        body: dict[str, object] = {"printer_id": self.printer_id, "state": self.state,
                                   "since": self.since, "queued": self.queued,
                                   "unconfirmed": list(self.unconfirmed)}
        if self.detail:
            body["detail"] = self.detail
        return body


@dataclass(frozen=True)
class PrinterSeen(Change):
    """Discovery saw a printer appear, move or go (USB plug, mDNS answer or silence)."""

    source: str                # usb | mdns
    name: str
    present: bool


@dataclass(frozen=True)
class AvailabilityChanged(Change):
    """What the restaurant offers changed: the store's state (open, busy, paused), or a
    product's stock or listing. `{root}/menu/availability` is published again."""


@dataclass(frozen=True)
class WanChanged(Change):
    up: bool


C = TypeVar("C", bound=Change)
Subscriber = Callable[[Any], None]


class Feed:
    """Typed publish/subscribe for changes, in-process, on the event loop."""

    def __init__(self) -> None:
        self._subscribers: dict[type[Change], list[Subscriber]] = {}
        self.published = 0

    def subscribe(self, kind: type[C], fn: Callable[[C], None]) -> Callable[[], None]:
        """Call `fn` with every published change of class `kind` (or a subclass of it).
        Returns the call that unsubscribes."""
        listeners = self._subscribers.setdefault(kind, [])
        listeners.append(fn)

        def unsubscribe() -> None:
            if fn in listeners:
                listeners.remove(fn)

        return unsubscribe

    def publish(self, changes: Iterable[Change]) -> None:
        for change in changes:
            self.published += 1
            for cls in type(change).__mro__:
                for fn in list(self._subscribers.get(cls, ())):
                    try:
                        fn(change)
                    except Exception:  # one consumer's bug must not starve the others
                        log.exception("feed_subscriber_failed", change=type(change).__name__)
                if cls is Change:
                    break


__all__ = [
    "AvailabilityChanged",
    "C",
    "Change",
    "DeadLettered",
    "EventAccepted",
    "EventApplied",
    "EventDuplicate",
    "Feed",
    "JobClaimed",
    "JobConfirmed",
    "JobCopyReleased",
    "JobCreated",
    "JobFailed",
    "JobPrinted",
    "JobQueued",
    "JobReturned",
    "JobUnconfirmed",
    "JobWithdrawn",
    "OrderStageChanged",
    "OrderStatusChanged",
    "PrinterSeen",
    "PrinterStateChanged",
    "RecordQueued",
    "TimelineChanged",
    "WanChanged",
]
