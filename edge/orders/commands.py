"""Operator commands, one registry (`COMMANDS`) for `{root}/commands/{name}`, the CLI and the
operator page (which all take the same path through the intake):

- `reprint` (CONTRACT section 3): a new job copying the job it reprints (same station, kind,
  lines, due time), marked REPRINT, under a key made from the command id: the same command
  twice is one reprint.
- `order` (addition): the restaurant's answer to an order a channel sent for acceptance:
  `{"command_id", "order_id", "action": "accept"|"reject", "prep_minutes"?, "reason_code"?,
  "reason"?}`. It becomes an `order.accepted` / `order.rejected` event (event id
  `cmd:{command_id}`), applied like any other, so the status machine, the timeline and the
  partners' calls all follow from it.
- `store` (CONTRACT section 8): open, busy or paused (`edge.orders.opening`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Generic, TypeVar

from edge.clock import parse_rfc3339, rfc3339_ms
from edge.orders import kitchen, opening
from edge.orders.events import Rejected, RejectKind
from edge.orders.records import add_activity
from edge.orders.routing import job_key as make_job_key
from edge.store import Tx, events, jobs, orders


@dataclass(frozen=True)
class Reprint:
    command_id: str
    job_key: str

    @classmethod
    def from_document(cls, doc: Any) -> Reprint:
        if not isinstance(doc, dict):
            raise Rejected("payload must be a JSON object")
        command_id, key = doc.get("command_id"), doc.get("job_key")
        if not isinstance(command_id, str) or not 1 <= len(command_id) <= 128:
            raise Rejected("schema: command_id: required string of 1 to 128 characters",
                           RejectKind.SCHEMA)
        if not isinstance(key, str) or not key:
            raise Rejected("schema: job_key: required string", RejectKind.SCHEMA)
        return cls(command_id, key)


@dataclass(frozen=True)
class Done:
    order_id: str | None
    new_jobs: list[str]
    repeat: bool = False
    # Order events the command turned into (JSON text), for the caller to store and apply.
    events: list[str] = field(default_factory=list)


_COMMAND_ID = re.compile(r"^[A-Za-z0-9._:-]{1,120}$")


def _command_id(doc: dict[str, Any]) -> str:
    value = doc.get("command_id")
    if not isinstance(value, str) or not _COMMAND_ID.match(value):
        raise Rejected("schema: command_id: required, 1 to 120 of A-Z a-z 0-9 . _ : -",
                       RejectKind.SCHEMA)
    return value


class Action(StrEnum):
    ACCEPT = "accept"
    REJECT = "reject"


@dataclass(frozen=True)
class OrderDecision:
    command_id: str
    order_id: str
    action: Action
    prep_minutes: int | None = None
    reason_code: str | None = None
    reason: str | None = None

    @classmethod
    def from_document(cls, doc: Any) -> OrderDecision:
        if not isinstance(doc, dict):
            raise Rejected("payload must be a JSON object")
        command_id = _command_id(doc)
        order_id = doc.get("order_id")
        if not isinstance(order_id, str) or not order_id:
            raise Rejected("schema: order_id: required string", RejectKind.SCHEMA)
        try:
            action = Action(str(doc.get("action")))
        except ValueError:
            raise Rejected("schema: action: must be accept or reject", RejectKind.SCHEMA) \
                from None
        prep = doc.get("prep_minutes")
        if prep is not None and (type(prep) is not int or not 0 <= prep <= 24 * 60):
            raise Rejected("schema: prep_minutes: must be a whole number of minutes, 0 to 1440",
                           RejectKind.SCHEMA)
        texts: dict[str, str | None] = {}
        for name, limit in (("reason_code", 64), ("reason", 512)):
            value = doc.get(name)
            if value is not None and (not isinstance(value, str) or not 1 <= len(value) <= limit):
                raise Rejected(f"schema: {name}: must be a string of 1 to {limit} characters",
                               RejectKind.SCHEMA)
            texts[name] = value
        return cls(command_id, order_id, action, prep, texts["reason_code"], texts["reason"])

    def event(self, channel: str, now: datetime) -> dict[str, Any]:
        """The order event this answer is, in the envelope of CONTRACT section 4."""
        if self.action is Action.ACCEPT:
            kind = "order.accepted"
            data: dict[str, Any] = ({"prep_minutes": self.prep_minutes}
                                    if self.prep_minutes is not None else {})
        else:
            kind = "order.rejected"
            data = {"reason": self.reason or self.reason_code or "rejected by the restaurant"}
            if self.reason_code is not None:
                data["reason_code"] = self.reason_code
        return {"event_id": f"cmd:{self.command_id}", "type": kind, "order_id": self.order_id,
                "occurred_at": rfc3339_ms(now), "source": {"channel": channel,
                                                           "device": "kitchen"},
                "data": data}


def reprint(tx: Tx, command: Reprint, payload: str, now: datetime) -> Done:
    """Queue the reprint; a command id already carried out changes nothing."""
    if events.command_seen(tx.conn, command.command_id):
        return Done(None, [], repeat=True)
    job = jobs.source_of(tx.conn, command.job_key)
    if job is None:
        raise Rejected(f"job_key '{command.job_key}' is unknown")
    change_ref = f"{job.change_ref}~reprint-{command.command_id}"
    reprint_key = make_job_key(job.order_id, change_ref, job.station_id)
    kitchen.insert_job(tx, job_key=reprint_key, order_id=job.order_id,
                       station_id=job.station_id, kind=job.kind, change_ref=change_ref,
                       line_ids=job.line_ids, now=now, reprint_of=command.job_key,
                       due_at=parse_rfc3339(job.due_at) if job.due_at else None)
    events.add_command(tx.conn, command_id=command.command_id, kind="reprint",
                       received_at=rfc3339_ms(now), payload=payload,
                       result=json.dumps({"reprint_job_key": reprint_key}))
    add_activity(tx, None, "Reprint requested", now,
                 {"job_key": command.job_key, "reprint_job_key": reprint_key,
                  "command_id": command.command_id}, order_id=job.order_id)
    return Done(job.order_id, [reprint_key])


def decide(tx: Tx, command: OrderDecision, payload: str, now: datetime) -> Done:
    """Turn the answer into its order event; the caller stores and applies it, so a refusal
    (accepting a cancelled order...) is dead-lettered with the status machine's reason."""
    if events.command_seen(tx.conn, command.command_id):
        return Done(None, [], repeat=True)
    order = orders.get(tx.conn, command.order_id)
    if order is None:
        raise Rejected(f"order_id: order '{command.order_id}' is unknown")
    event = command.event(order.channel, now)
    events.add_command(tx.conn, command_id=command.command_id, kind="order",
                       received_at=rfc3339_ms(now), payload=payload,
                       result=json.dumps({"event_id": event["event_id"]}))
    return Done(order.order_id, [], events=[json.dumps(event, ensure_ascii=False)])


def store_state(tx: Tx, command: opening.StoreCommand, payload: str, now: datetime) -> Done:
    if events.command_seen(tx.conn, command.command_id):
        return Done(None, [], repeat=True)
    state = opening.set_state(tx, command, now)
    events.add_command(tx.conn, command_id=command.command_id, kind="store",
                       received_at=rfc3339_ms(now), payload=payload,
                       result=json.dumps({"state": state.state.value}))
    return Done(None, [])


C = TypeVar("C")


@dataclass(frozen=True)
class Command(Generic[C]):
    parse: Callable[[Any], C]
    run: Callable[[Tx, C, str, datetime], Done]

    def carry_out(self, tx: Tx, doc: Any, payload: str, now: datetime) -> Done:
        return self.run(tx, self.parse(doc), payload, now)


COMMANDS: dict[str, Command[Any]] = {
    "reprint": Command(Reprint.from_document, reprint),
    "order": Command(OrderDecision.from_document, decide),
    "store": Command(opening.StoreCommand.from_document, store_state),
}


__all__ = ["COMMANDS", "Action", "Command", "Done", "OrderDecision", "Reprint", "decide",
           "reprint", "store_state"]
