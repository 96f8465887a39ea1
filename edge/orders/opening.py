"""Whether the restaurant takes channel orders now: open, busy, or paused (CONTRACT section 8).

`{root}/commands/store` and `kitchen-edge store open|busy MINUTES|pause [--until TIME]` set
it; it is kept in the database, so a restart keeps it. `busy` still takes orders, with
`busy_minutes` more preparing time when the kitchen accepts one; `paused` refuses new channel
orders (the marketplace cancels them with its "too busy" reason, the aggregator answers
`fail` "Store is currently closed"); POS orders are never refused. With `until`, a busy or
paused store is open again from that moment on, without anyone having to say so.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from edge.clock import parse_rfc3339, rfc3339
from edge.feed import AvailabilityChanged
from edge.orders.events import Rejected, RejectKind
from edge.store import Tx, kv

_KEY = "store_state"
# What a paused store answers a channel that sends an order (seed 004's wording).
CLOSED_REASON = "Store is currently closed"


class Opening(StrEnum):
    OPEN = "open"
    BUSY = "busy"
    PAUSED = "paused"


@dataclass(frozen=True)
class StoreState:
    state: Opening = Opening.OPEN
    busy_minutes: int | None = None
    until: str | None = None          # RFC 3339; open again from then on
    since: str | None = None

    def now(self, at: datetime) -> StoreState:
        """The state in force at `at`: a busy or paused spell whose `until` passed is over."""
        if self.until is not None and self.state is not Opening.OPEN \
                and parse_rfc3339(self.until) <= at:
            return StoreState(Opening.OPEN, since=self.until)
        return self

    def takes_orders(self, at: datetime) -> bool:
        return self.now(at).state is not Opening.PAUSED

    def extra_prep_minutes(self, at: datetime) -> int:
        current = self.now(at)
        return current.busy_minutes or 0 if current.state is Opening.BUSY else 0

    def public(self, at: datetime) -> dict[str, Any]:
        """The `store` part of `{root}/menu/availability`."""
        current = self.now(at)
        return {"state": current.state.value, "busy_minutes": current.busy_minutes,
                "until": current.until}


@dataclass(frozen=True)
class StoreCommand:
    command_id: str
    state: Opening
    busy_minutes: int | None
    until: datetime | None

    @classmethod
    def from_document(cls, doc: Any) -> StoreCommand:
        if not isinstance(doc, dict):
            raise Rejected("payload must be a JSON object")
        command_id = doc.get("command_id")
        if not isinstance(command_id, str) or not 1 <= len(command_id) <= 128:
            raise Rejected("schema: command_id: required string of 1 to 128 characters",
                           RejectKind.SCHEMA)
        try:
            state = Opening(str(doc.get("state")))
        except ValueError:
            raise Rejected("schema: state: must be one of open, busy, paused",
                           RejectKind.SCHEMA) from None
        busy = doc.get("busy_minutes")
        if busy is not None and (type(busy) is not int or not 1 <= busy <= 24 * 60):
            raise Rejected("schema: busy_minutes: must be a whole number of minutes, 1 to 1440",
                           RejectKind.SCHEMA)
        if state is Opening.BUSY and busy is None:
            raise Rejected("schema: busy_minutes: required when the state is busy",
                           RejectKind.SCHEMA)
        until_text = doc.get("until")
        until: datetime | None = None
        if until_text is not None:
            try:
                until = parse_rfc3339(until_text) if isinstance(until_text, str) else None
            except ValueError:
                until = None
            if until is None or until.tzinfo is None:
                raise Rejected("schema: until: must be an RFC 3339 time with a timezone",
                               RejectKind.SCHEMA)
        return cls(command_id, state, busy if state is Opening.BUSY else None, until)


def current(conn: sqlite3.Connection) -> StoreState:
    text = kv.get(conn, _KEY)
    if text is None:
        return StoreState()
    doc = json.loads(text)
    return StoreState(Opening(doc["state"]), doc.get("busy_minutes"), doc.get("until"),
                      doc.get("since"))


def set_state(tx: Tx, command: StoreCommand, now: datetime) -> StoreState:
    """Record the store's new state; `{root}/menu/availability` follows."""
    state = StoreState(command.state, command.busy_minutes,
                       rfc3339(command.until) if command.until is not None else None,
                       rfc3339(now))
    kv.put(tx.conn, _KEY, json.dumps({k: (v.value if isinstance(v, Opening) else v)
                                      for k, v in asdict(state).items()}))
    tx.emit(AvailabilityChanged())
    return state


__all__ = ["CLOSED_REASON", "Opening", "StoreCommand", "StoreState", "current", "set_state"]
