"""What the daemon is made of: components, and the context they share.

A component is one long-lived piece (the broker intake, the spooler, the upstream sender,
mDNS discovery, the HTTP server, a connector...). The daemon builds them from the config
through factories (`edge.daemon.FACTORIES`), then, in list order: `start()` each, `run()` all
of them in one TaskGroup until a stop or a reload, `stop()` each (graceful: take no new work,
let the work in hand finish), cancel the runs, `close()` each. Adding a connector is writing
a component and adding its factory to that list.

Components never import each other. What one needs from another comes through the context
(`store`, `feed`, `clock`, `publish`, `intake`, `health`, `board`) or, for the few pairs that
must talk directly (the spooler asking mDNS where a printer is), as a callable the daemon
passes in.

A component reacts to the kitchen's changes in one of two ways. After COMMIT, on the event
loop: `ctx.feed.subscribe(kind, fn)` (wake a sender, push to a screen, publish on MQTT).
Inside the transaction, writing in it: `ctx.store.react(kind, fn)`, registered in the
component's constructor (a partner call that must exist exactly when the change does).

This module sits below the adapter packages and above the domain: it may import the store,
the feed and the bottom modules, never an adapter.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from edge.clock import Clock
from edge.config.models import Config
from edge.feed import Feed
from edge.store import Store


class Publish(Protocol):
    """Queue an MQTT message on the daemon's one broker connection (`BrokerLink.publish`):
    it goes out on this connection or the next; a retained topic keeps its newest value."""

    def __call__(self, topic: str, body: dict[str, Any] | bytes, *, retain: bool = False,
                 on_sent: Callable[[], Awaitable[None]] | None = None) -> None: ...


class IntakeOutcome(Protocol):
    """What became of one submitted payload."""

    @property
    def result(self) -> str: ...          # accepted | duplicate | dead
    @property
    def event_id(self) -> str | None: ...
    @property
    def order_id(self) -> str | None: ...
    @property
    def reason(self) -> str | None: ...   # why it was dead-lettered


class Intake(Protocol):
    """The durable intake for in-process order sources (connectors, screens): see
    `edge.ingest.consumer.Ingest.submit` and `Ingest.command`."""

    async def submit(self, source: str, payloads: Sequence[bytes]) -> Sequence[IntakeOutcome]:
        ...

    async def command(self, name: str, payload: bytes) -> IntakeOutcome:
        """An operator command (`reprint`), as if it came on `{root}/commands/{name}`."""
        ...


Section = Callable[[], Awaitable[dict[str, Any]]]


class Board:
    """What components show the operator (the status page, `GET /status`): named sections,
    each an async provider of a JSON-able dict, registered when the component is built. A
    component that is not configured registers nothing, and its section is simply absent."""

    def __init__(self) -> None:
        self._sections: dict[str, Section] = {}

    def add(self, name: str, section: Section) -> None:
        if name in self._sections:
            raise ValueError(f"status section {name!r} is registered twice")
        self._sections[name] = section

    def sections(self) -> dict[str, Section]:
        return dict(self._sections)


class Health(Protocol):
    """What the HTTP server and the screens may ask about the running daemon."""

    def status_line(self) -> str: ...

    def broker_connected(self) -> bool: ...

    async def metrics(self) -> tuple[bytes, str]:
        """The Prometheus exposition, fresh, and its Content-Type."""
        ...


@dataclass(frozen=True)
class Context:
    """What every component may use."""

    cfg: Config
    store: Store
    feed: Feed
    clock: Clock
    publish: Publish
    intake: Intake
    health: Health
    board: Board = field(default_factory=Board)


class Component(Protocol):
    name: str

    async def start(self) -> None:
        """Before any component runs (in list order): recover, subscribe, announce."""

    async def run(self) -> None:
        """Until cancelled."""

    async def stop(self) -> None:
        """Graceful part of shutdown (in list order, before any run is cancelled): take no
        new work, finish the work in hand. Bounded by the daemon's grace."""

    async def close(self) -> None:
        """After every run is cancelled: release devices and sockets."""


class BaseComponent:
    """Defaults for the optional steps."""

    name = "component"

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def close(self) -> None:
        return None


Factory = Callable[[Context], "Component | None"]

__all__ = [
    "BaseComponent",
    "Board",
    "Component",
    "Context",
    "Factory",
    "Health",
    "Intake",
    "IntakeOutcome",
    "Publish",
    "Section",
]
