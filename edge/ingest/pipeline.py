"""Broker messages into the database, in two steps.

`accept_batch` is the durable step, one transaction per batch: each message is validated,
deduplicated by event_id and stored as received (or dead-lettered). The caller sends the
PUBACKs once it has committed. `apply_pending` then applies the stored events in arrival
order through the domain (`edge.orders.apply`): order state, print jobs, activity log,
outbox records. A refused event (a transition the order cannot make) is rolled back to its
savepoint, removed and dead-lettered. OpenApp's requests (`{root}/openapp/in`) take the same
two steps: stored as received, then applied (`edge.orders.openapp`) after the events of the
same pass.

Splitting them keeps the acknowledged-only-when-durable promise cheap: the broker can forget
an event as soon as its raw form is on disk, and deriving everything from it costs no fsync
of its own (the spooler's claim, a durable commit, flushes it before any ticket prints; if
power is lost first, the event is still there, unapplied, and is applied again at start).

Every step records its changes on the transaction (`Tx.emit`): events accepted, applied,
duplicate or dead-lettered, and whatever the domain changed; the store publishes them to the
feed once committed. Nothing here talks to the network.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import structlog

from edge.clock import rfc3339_ms
from edge.feed import DeadLettered, EventAccepted, EventApplied, EventDuplicate
from edge.ingest.parse import MAX_PAYLOAD, connector_topic, json_document, parse_event
from edge.orders import commands, openapp
from edge.orders.apply import Applier
from edge.orders.events import Event, Rejected, RejectKind
from edge.orders.records import sync_records
from edge.store import Tx, as_tx, events, retention
from edge.store import openapp as openapp_messages
from edge.store.events import DEAD_LETTER_CUT
from edge.store.trouble import is_storage_error

log = structlog.get_logger(__name__)


class Result(StrEnum):
    ACCEPTED = "accepted"      # stored, not yet applied
    APPLIED = "applied"
    REPEAT = "repeat"          # a change the order already had
    DUPLICATE = "duplicate"    # an event_id (or command_id) already stored
    DEAD = "dead"              # refused: dead-lettered
    COMMAND = "command"        # an operator command carried out


@dataclass(frozen=True)
class Incoming:
    topic: str
    payload: bytes


@dataclass
class Outcome:
    topic: str
    result: Result
    event_id: str | None = None
    order_id: str | None = None
    event_type: str | None = None
    reason: str | None = None
    reject_kind: RejectKind | None = None
    dead_letter_id: int | None = None
    new_jobs: list[str] = field(default_factory=list)
    occurred_at: datetime | None = None      # the publisher's, of an accepted event


@dataclass
class BatchResult:
    outcomes: list[Outcome]
    touched_orders: set[str]
    new_jobs: int
    timelines: dict[str, dict[str, Any]] = field(default_factory=dict)  # changed ones


def cut_payload(payload: bytes) -> str:
    return payload[:DEAD_LETTER_CUT].decode("utf-8", errors="replace")


# Parsed events between the two steps, so a live event is validated once; after a restart
# the stored payload is parsed again.
_CACHE_LIMIT = 20_000


class Pipeline:
    def __init__(self, root: str, applier: Applier) -> None:
        self.root = root
        self.applier = applier
        self.reprint_topic = f"{root}/commands/reprint"
        self.commands_prefix = f"{root}/commands/"
        self.openapp_topic = f"{root}/openapp/in"
        self.openapp = openapp.Desk(root, applier, connector_topic(root, "openapp"))
        self._parsed: dict[str, Event[Any]] = {}

    def apply_batch(self, tx: Tx | sqlite3.Connection, batch: list[Incoming],
                    now: datetime) -> BatchResult:
        """Both steps in the caller's one transaction (operator commands, tests): one outcome
        per message, as applied. On a plain connection the changes are not published."""
        tx = as_tx(tx)
        accepted = self.accept_batch(tx, batch, now)
        applied = self.apply_pending(tx, now, limit=1_000_000)
        by_id = {o.event_id: o for o in applied.outcomes}
        outcomes = [by_id.pop(o.event_id, o) if o.result is Result.ACCEPTED else o
                    for o in accepted.outcomes]
        merged = merge(accepted, applied)
        merged.outcomes = outcomes + list(by_id.values())
        return merged

    def accept_batch(self, tx: Tx, batch: list[Incoming], now: datetime) -> BatchResult:
        outcomes: list[Outcome] = []
        touched: set[str] = set()
        new_jobs = 0
        # Nothing in this batch compacts an order: asked once, not per event.
        compacted = retention.any_compacted(tx.conn)
        for message in batch:
            try:
                with tx.savepoint("message"):
                    if message.topic.startswith(self.commands_prefix):
                        outcome = self._command(tx, message, now)
                    elif message.topic == self.openapp_topic:
                        outcome = self._openapp(tx, message, now)
                    else:
                        outcome = self._accept(tx, message, now, compacted=compacted)
            except Rejected as exc:
                outcome = self._dead(tx, message.topic, message.payload, exc.reason, exc.kind,
                                     now)
            except Exception as exc:  # one odd message must not stop the kitchen
                if is_storage_error(exc):
                    raise       # the disk's fault, not the message's: nothing is stored
                # A bug of ours, not the publisher's fault, but the message must still go
                # somewhere: left unacknowledged it would come back and crash us forever.
                log.exception("message_crashed_intake", topic=message.topic)
                outcome = self._dead(tx, message.topic, message.payload,
                                     f"internal error: {type(exc).__name__}: {exc}",
                                     RejectKind.OTHER, now)
            if outcome.order_id and outcome.result is Result.COMMAND:
                touched.add(outcome.order_id)
            new_jobs += len(outcome.new_jobs)
            outcomes.append(outcome)
        return BatchResult(outcomes, touched, new_jobs, self._sync(tx, touched, now))

    def apply_pending(self, tx: Tx, now: datetime, *, limit: int) -> BatchResult:
        """Apply up to `limit` stored events, oldest first."""
        outcomes: list[Outcome] = []
        touched: set[str] = set()
        new_jobs = 0
        for stored in events.unapplied(tx.conn, limit):
            raw = stored.payload.encode()
            event: Event[Any] | None = None
            try:
                with tx.savepoint("event"):
                    event = self._parsed.pop(stored.event_id, None) or parse_event(
                        stored.topic, raw, self.root)
                    # Bound for the log lines applying may write; set and reset directly
                    # (bound_contextvars copies the whole context, twice per event).
                    bound = structlog.contextvars.bind_contextvars(
                        order_id=event.order_id, event_id=event.event_id)
                    try:
                        applied = self.applier.apply(tx, event, now)
                    finally:
                        structlog.contextvars.reset_contextvars(**bound)
                    events.mark_applied(tx.conn, stored.rowid)
                    outcome = Outcome(stored.topic, Result(applied.effect), event.event_id,
                                      event.order_id, event.type, new_jobs=applied.new_jobs)
                    tx.emit(EventApplied(event.event_id, event.order_id, event.type,
                                         applied.effect))
                    touched.add(event.order_id)
            except Exception as exc:  # Rejected, or a bug: never a poison pill
                if is_storage_error(exc):
                    raise       # not the event's fault: it is applied once the disk is back
                # Not applied, so not a seen event_id: a corrected resend may still apply.
                # An acknowledged event that crashed the applier would otherwise block every
                # later event at every start.
                events.forget(tx.conn, stored.rowid)
                if isinstance(exc, Rejected):
                    reason, kind = exc.reason, exc.kind
                else:
                    log.exception("event_crashed_applier", event_id=stored.event_id)
                    reason = f"internal error: {type(exc).__name__}: {exc}"
                    kind = RejectKind.OTHER
                outcome = self._dead(tx, stored.topic, raw, reason, kind, now)
            new_jobs += len(outcome.new_jobs)
            outcomes.append(outcome)
        if len(outcomes) < limit:
            more = self._apply_openapp(tx, now, limit - len(outcomes))
            outcomes += more.outcomes
            touched |= more.touched_orders
            new_jobs += more.new_jobs
        return BatchResult(outcomes, touched, new_jobs, self._sync(tx, touched, now))

    def _apply_openapp(self, tx: Tx, now: datetime, limit: int) -> BatchResult:
        """Apply stored OpenApp requests, oldest first, each in its own savepoint; one that
        cannot be applied is removed and dead-lettered, like an event."""
        outcomes: list[Outcome] = []
        touched: set[str] = set()
        for stored in openapp_messages.unapplied(tx.conn, limit):
            try:
                with tx.savepoint("openapp"), structlog.contextvars.bound_contextvars(
                        message_id=stored.message_id, table_id=stored.table_id):
                    handled = self.openapp.apply(tx, stored, now)
                    openapp_messages.mark_applied(tx.conn, stored.rowid)
                    tx.emit(EventApplied(stored.message_id, handled.order_id,
                                         stored.message_type, "applied"))
                outcome = Outcome(self.openapp_topic, Result.APPLIED, stored.message_id,
                                  handled.order_id, stored.message_type,
                                  new_jobs=handled.new_jobs)
                touched |= handled.touched
            except Exception as exc:  # never a poison pill, as for events
                if is_storage_error(exc):
                    raise
                openapp_messages.forget(tx.conn, stored.rowid)
                if isinstance(exc, Rejected):
                    reason, kind = exc.reason, exc.kind
                else:
                    log.exception("openapp_crashed_applier", message_id=stored.message_id)
                    reason = f"internal error: {type(exc).__name__}: {exc}"
                    kind = RejectKind.OTHER
                outcome = self._dead(tx, self.openapp_topic, stored.payload.encode(), reason,
                                     kind, now)
            outcomes.append(outcome)
        return BatchResult(outcomes, touched, sum(len(o.new_jobs) for o in outcomes))

    @staticmethod
    def _sync(tx: Tx, touched: set[str], now: datetime) -> dict[str, dict[str, Any]]:
        timelines: dict[str, dict[str, Any]] = {}
        for order_id in touched:
            timeline = sync_records(tx, order_id, now)
            if timeline is not None:
                timelines[order_id] = timeline
        return timelines

    def _dead(self, tx: Tx, topic: str, payload: bytes, reason: str, kind: RejectKind,
              now: datetime) -> Outcome:
        outcome = Outcome(topic, Result.DEAD, reason=reason, reject_kind=kind)
        outcome.dead_letter_id = events.add_dead_letter(tx.conn, topic, payload, reason,
                                                        rfc3339_ms(now))
        self._describe(outcome, Incoming(topic, payload))
        tx.emit(DeadLettered(outcome.dead_letter_id, topic, reason, kind))
        return outcome

    @staticmethod
    def _describe(outcome: Outcome, message: Incoming) -> None:
        """Best-effort ids for the log line of a rejected message."""
        try:
            doc = json.loads(message.payload)
        except (ValueError, RecursionError):
            return
        if isinstance(doc, dict):
            for key in ("event_id", "order_id", "type"):
                value = doc.get(key)
                if isinstance(value, str):
                    setattr(outcome, "event_type" if key == "type" else key, value[:128])

    def _accept(self, tx: Tx, message: Incoming, now: datetime, *,
                compacted: bool = True) -> Outcome:
        """Store one event as received. `compacted=False`: no order is compacted, so no
        tombstone needs looking up."""
        event = parse_event(message.topic, message.payload, self.root)
        base = Outcome(message.topic, Result.ACCEPTED, event.event_id, event.order_id,
                       event.type, occurred_at=event.envelope.occurred_at)
        # A compacted order (edge.store.retention) keeps only a tombstone: a late copy of
        # one of its events is a duplicate, anything else for it is refused, never applied.
        replay = retention.replayed(tx.conn, event.order_id, event.event_id) \
            if compacted else None
        if replay is False:
            raise Rejected(f"order '{event.order_id}' was compacted by retention: it is "
                           "final and past the retention period; nothing more is applied "
                           "to it", RejectKind.TRANSITION)
        env = event.envelope
        # Stored unless its event_id already is (one statement: no look first).
        if replay or not events.add_new(
                tx.conn, event_id=event.event_id, order_id=event.order_id, type=event.type,
                occurred_at=rfc3339_ms(env.occurred_at), received_at=rfc3339_ms(now),
                channel=env.source.channel, device=env.source.device, topic=message.topic,
                payload=event.raw):
            base.result = Result.DUPLICATE
            tx.emit(EventDuplicate(event.event_id, event.order_id))
            return base
        tx.emit(EventAccepted(event.event_id, event.order_id, event.type))
        if len(self._parsed) >= _CACHE_LIMIT:
            self._parsed.clear()
        self._parsed[event.event_id] = event
        return base

    def _openapp(self, tx: Tx, message: Incoming, now: datetime) -> Outcome:
        """Check an OpenApp request and store it as received; applied by the applier."""
        if len(message.payload) > MAX_PAYLOAD:
            raise Rejected(f"payload is {len(message.payload)} bytes; the limit is "
                           f"{MAX_PAYLOAD} (256 KiB)", RejectKind.TOO_LARGE)
        document, text = json_document(message.payload)
        request = openapp.parse_request(document, self.openapp.zone)
        outcome = Outcome(message.topic, Result.ACCEPTED, request.message_id, None,
                          request.message_type)
        if not openapp.store_request(tx, request, text, now):
            outcome.result = Result.DUPLICATE
            tx.emit(EventDuplicate(request.message_id, None))
        return outcome

    def command_topic(self, name: str) -> str:
        return self.commands_prefix + name

    def _command(self, tx: Tx, message: Incoming, now: datetime) -> Outcome:
        name = message.topic[len(self.commands_prefix):]
        command = commands.COMMANDS.get(name)
        if command is None:
            raise Rejected(f"unknown command '{name}' (known: "
                           f"{', '.join(sorted(commands.COMMANDS))})", RejectKind.BAD_TOPIC)
        try:
            doc: Any = json.loads(message.payload)
        except (ValueError, RecursionError) as exc:
            raise Rejected(f"payload is not valid JSON: {exc}", RejectKind.INVALID_JSON) from None
        payload = message.payload.decode("utf-8", "replace")
        done = command.carry_out(tx, doc, payload, now)
        command_id = doc.get("command_id") if isinstance(doc, dict) else None
        outcome = Outcome(message.topic, Result.COMMAND, event_id=command_id)
        if done.repeat:
            outcome.result = Result.DUPLICATE
            tx.emit(EventDuplicate(command_id, None))
            return outcome
        # A command that is an order event (an answer to an order) is stored like one and
        # applied by the applier, with everything an event brings.
        for event in done.events:
            self._accept(tx, Incoming(connector_topic(self.root, "kitchen"), event.encode()),
                         now)
        outcome.order_id = done.order_id
        outcome.new_jobs = done.new_jobs
        tx.emit(EventApplied(command_id or name, done.order_id, "command", "command"))
        return outcome


def merge(first: BatchResult, second: BatchResult) -> BatchResult:
    return BatchResult(
        first.outcomes + second.outcomes,
        first.touched_orders | second.touched_orders,
        first.new_jobs + second.new_jobs,
        {**first.timelines, **second.timelines},
    )


__all__ = ["BatchResult", "Incoming", "Outcome", "Pipeline", "Result", "cut_payload", "merge"]
