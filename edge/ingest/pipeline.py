"""Broker messages into the database, in two steps.

`accept_batch` is the durable step, one transaction per batch: each message is validated,
deduplicated by event_id and stored as received (or dead-lettered). The caller sends the
PUBACKs once it has committed. `apply_pending` then applies the stored events in arrival
order: order state, print jobs, activity log, outbox records. A refused event (a transition
the order cannot make) is rolled back to its savepoint, removed and dead-lettered.

Splitting them keeps the acknowledged-only-when-durable promise cheap: the broker can forget
an event as soon as its raw form is on disk, and deriving everything from it costs no fsync
of its own (the spooler's claim, a durable commit, flushes it before any ticket prints; if
power is lost first, the event is still there, unapplied, and is applied again at start).
Nothing here talks to the network.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog

from edge.clock import rfc3339_ms
from edge.ingest.events import Event, Rejected, parse_event
from edge.orders.apply import Applier
from edge.orders.kitchen import insert_job
from edge.orders.records import add_activity, sync_records
from edge.printing.routing import job_key as make_job_key

log = structlog.get_logger(__name__)

DEAD_LETTER_CUT = 4096


@dataclass(frozen=True)
class Incoming:
    topic: str
    payload: bytes


@dataclass
class Outcome:
    topic: str
    result: str          # accepted (stored, not yet applied) | applied | repeat | duplicate
                         # | dead | command
    event_id: str | None = None
    order_id: str | None = None
    event_type: str | None = None
    reason: str | None = None
    dead_letter_id: int | None = None
    new_jobs: list[str] = field(default_factory=list)


@dataclass
class BatchResult:
    outcomes: list[Outcome]
    touched_orders: set[str]
    new_jobs: int
    timelines: dict[str, dict[str, Any]] = field(default_factory=dict)  # changed ones


def cut_payload(payload: bytes) -> str:
    return payload[:DEAD_LETTER_CUT].decode("utf-8", errors="replace")


def store_dead_letter(conn: sqlite3.Connection, topic: str, payload: bytes, reason: str,
                      now: datetime) -> int:
    """Keep a rejected message once, however often it is redelivered; returns its row id."""
    digest = hashlib.sha256(topic.encode() + b"\0" + payload).hexdigest()
    conn.execute(
        "INSERT INTO dead_letters (topic, reason, received_at, payload, payload_size, digest) "
        "VALUES (?,?,?,?,?,?) ON CONFLICT(digest) DO UPDATE SET seen = seen + 1, published = 0",
        (topic, reason, rfc3339_ms(now), payload[:DEAD_LETTER_CUT], len(payload), digest),
    )
    row = conn.execute("SELECT id FROM dead_letters WHERE digest=?", (digest,)).fetchone()
    return int(row[0])


# Parsed events between the two steps, so a live event is validated once; after a restart
# the stored payload is parsed again.
_CACHE_LIMIT = 20_000


class Pipeline:
    def __init__(self, root: str, applier: Applier) -> None:
        self.root = root
        self.applier = applier
        self.reprint_topic = f"{root}/commands/reprint"
        self._parsed: dict[str, Event] = {}

    def apply_batch(self, conn: sqlite3.Connection, batch: list[Incoming],
                    now: datetime) -> BatchResult:
        """Both steps in the caller's one transaction (operator commands, tests): one outcome
        per message, as applied."""
        accepted = self.accept_batch(conn, batch, now)
        applied = self.apply_pending(conn, now, limit=1_000_000)
        by_id = {o.event_id: o for o in applied.outcomes}
        outcomes = [by_id.pop(o.event_id, o) if o.result == "accepted" else o
                    for o in accepted.outcomes]
        merged = merge(accepted, applied)
        merged.outcomes = outcomes + list(by_id.values())
        return merged

    def accept_batch(self, conn: sqlite3.Connection, batch: list[Incoming],
                     now: datetime) -> BatchResult:
        outcomes: list[Outcome] = []
        touched: set[str] = set()
        new_jobs = 0
        for message in batch:
            conn.execute("SAVEPOINT message")
            try:
                if message.topic == self.reprint_topic:
                    outcome = self._reprint(conn, message, now)
                else:
                    outcome = self._accept(conn, message, now)
            except Rejected as exc:
                conn.execute("ROLLBACK TO message")
                outcome = self._dead(conn, message.topic, message.payload, exc.reason, now)
            except Exception as exc:  # one odd message must not stop the kitchen
                # A bug of ours, not the publisher's fault, but the message must still go
                # somewhere: left unacknowledged it would come back and crash us forever.
                conn.execute("ROLLBACK TO message")
                log.exception("message_crashed_intake", topic=message.topic)
                outcome = self._dead(conn, message.topic, message.payload,
                                     f"internal error: {type(exc).__name__}: {exc}", now)
            conn.execute("RELEASE message")
            if outcome.order_id and outcome.result == "command":
                touched.add(outcome.order_id)
            new_jobs += len(outcome.new_jobs)
            outcomes.append(outcome)
        return BatchResult(outcomes, touched, new_jobs, self._sync(conn, touched, now))

    def apply_pending(self, conn: sqlite3.Connection, now: datetime, *,
                      limit: int) -> BatchResult:
        """Apply up to `limit` stored events, oldest first."""
        rows = conn.execute(
            "SELECT rowid, event_id, topic, payload FROM events WHERE applied = 0 "
            "ORDER BY rowid LIMIT ?", (limit,)).fetchall()
        outcomes: list[Outcome] = []
        touched: set[str] = set()
        new_jobs = 0
        for rowid, event_id, topic, payload in rows:
            raw = str(payload).encode()
            conn.execute("SAVEPOINT event")
            try:
                event = self._parsed.pop(event_id, None) or parse_event(topic, raw, self.root)
                applied = self.applier.apply(conn, event, now)
                conn.execute("UPDATE events SET applied = 1 WHERE rowid = ?", (rowid,))
                outcome = Outcome(topic, applied.effect, event.event_id, event.order_id,
                                  event.type, new_jobs=applied.new_jobs)
                touched.add(event.order_id)
            except Exception as exc:  # Rejected, or a bug: never a poison pill
                conn.execute("ROLLBACK TO event")
                # Not applied, so not a seen event_id: a corrected resend may still apply.
                # An acknowledged event that crashed the applier would otherwise block every
                # later event at every start.
                conn.execute("DELETE FROM events WHERE rowid = ?", (rowid,))
                if isinstance(exc, Rejected):
                    reason = exc.reason
                else:
                    log.exception("event_crashed_applier", event_id=event_id)
                    reason = f"internal error: {type(exc).__name__}: {exc}"
                outcome = self._dead(conn, topic, raw, reason, now)
            conn.execute("RELEASE event")
            new_jobs += len(outcome.new_jobs)
            outcomes.append(outcome)
        return BatchResult(outcomes, touched, new_jobs, self._sync(conn, touched, now))

    @staticmethod
    def _sync(conn: sqlite3.Connection, touched: set[str],
              now: datetime) -> dict[str, dict[str, Any]]:
        timelines: dict[str, dict[str, Any]] = {}
        for order_id in touched:
            timeline = sync_records(conn, order_id, now)
            if timeline is not None:
                timelines[order_id] = timeline
        return timelines

    def _dead(self, conn: sqlite3.Connection, topic: str, payload: bytes, reason: str,
              now: datetime) -> Outcome:
        outcome = Outcome(topic, "dead", reason=reason)
        outcome.dead_letter_id = store_dead_letter(conn, topic, payload, reason, now)
        self._describe(outcome, Incoming(topic, payload))
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

    def _accept(self, conn: sqlite3.Connection, message: Incoming, now: datetime) -> Outcome:
        event = parse_event(message.topic, message.payload, self.root)
        base = Outcome(message.topic, "accepted", event.event_id, event.order_id, event.type)
        if conn.execute("SELECT 1 FROM events WHERE event_id=?", (event.event_id,)).fetchone():
            base.result = "duplicate"
            return base
        env = event.envelope
        conn.execute(
            "INSERT INTO events (event_id, order_id, type, occurred_at, received_at, channel, "
            "device, topic, payload, applied) VALUES (?,?,?,?,?,?,?,?,?,0)",
            (event.event_id, event.order_id, event.type, rfc3339_ms(env.occurred_at),
             rfc3339_ms(now), env.source.channel, env.source.device, message.topic, event.raw),
        )
        if len(self._parsed) >= _CACHE_LIMIT:
            self._parsed.clear()
        self._parsed[event.event_id] = event
        return base

    def _reprint(self, conn: sqlite3.Connection, message: Incoming, now: datetime) -> Outcome:
        try:
            doc: Any = json.loads(message.payload)
        except (ValueError, RecursionError) as exc:
            raise Rejected(f"payload is not valid JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise Rejected("payload must be a JSON object")
        command_id, key = doc.get("command_id"), doc.get("job_key")
        if not isinstance(command_id, str) or not 1 <= len(command_id) <= 128:
            raise Rejected("schema: command_id: required string of 1 to 128 characters")
        if not isinstance(key, str) or not key:
            raise Rejected("schema: job_key: required string")
        outcome = Outcome(message.topic, "command", event_id=command_id)
        seen = conn.execute("SELECT result FROM commands WHERE command_id=?",
                            (command_id,)).fetchone()
        if seen:
            outcome.result = "duplicate"
            return outcome
        job = conn.execute(
            "SELECT order_id, station_id, kind, change_ref, line_ids, due_at "
            "FROM print_jobs WHERE job_key=?", (key,)
        ).fetchone()
        if job is None:
            raise Rejected(f"job_key '{key}' is unknown")
        reprint_key = make_job_key(job[0], f"{job[3]}~reprint-{command_id}", job[1])
        insert_job(conn, job_key=reprint_key, order_id=job[0], station_id=job[1], kind=job[2],
                   change_ref=f"{job[3]}~reprint-{command_id}", line_ids=json.loads(job[4]),
                   now=now, reprint_of=key,
                   due_at=datetime.fromisoformat(job[5].replace("Z", "+00:00")) if job[5]
                   else None)
        conn.execute(
            "INSERT INTO commands (command_id, kind, received_at, payload, result) "
            "VALUES (?,?,?,?,?)",
            (command_id, "reprint", rfc3339_ms(now), message.payload.decode("utf-8", "replace"),
             json.dumps({"reprint_job_key": reprint_key})),
        )
        add_activity(conn, None, "Reprint requested", now,
                     {"job_key": key, "reprint_job_key": reprint_key, "command_id": command_id},
                     order_id=job[0])
        outcome.order_id = job[0]
        outcome.new_jobs = [reprint_key]
        return outcome


def merge(first: BatchResult, second: BatchResult) -> BatchResult:
    return BatchResult(
        first.outcomes + second.outcomes,
        first.touched_orders | second.touched_orders,
        first.new_jobs + second.new_jobs,
        {**first.timelines, **second.timelines},
    )
