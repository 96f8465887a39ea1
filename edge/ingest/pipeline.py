"""One batch of broker messages, applied in one transaction.

Each message gets a savepoint: a refused one is rolled back alone and dead-lettered, the rest
of the batch commits. Nothing here talks to the network; the caller acknowledges the
messages only after this transaction has committed.
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
from edge.ingest.events import Rejected, parse_event
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
    result: str                     # applied | repeat | duplicate | dead | command
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


class Pipeline:
    def __init__(self, root: str, applier: Applier) -> None:
        self.root = root
        self.applier = applier
        self.reprint_topic = f"{root}/commands/reprint"

    def apply_batch(self, conn: sqlite3.Connection, batch: list[Incoming],
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
                    outcome = self._event(conn, message, now)
            except Rejected as exc:
                conn.execute("ROLLBACK TO message")
                outcome = Outcome(message.topic, "dead", reason=exc.reason)
                outcome.dead_letter_id = store_dead_letter(
                    conn, message.topic, message.payload, exc.reason, now)
                self._describe(outcome, message)
            conn.execute("RELEASE message")
            if outcome.order_id and outcome.result in ("applied", "repeat", "command"):
                touched.add(outcome.order_id)
            new_jobs += len(outcome.new_jobs)
            outcomes.append(outcome)
        timelines: dict[str, dict[str, Any]] = {}
        for order_id in touched:
            timeline = sync_records(conn, order_id, now)
            if timeline is not None:
                timelines[order_id] = timeline
        return BatchResult(outcomes, touched, new_jobs, timelines)

    @staticmethod
    def _describe(outcome: Outcome, message: Incoming) -> None:
        """Best-effort ids for the log line of a rejected message."""
        try:
            doc = json.loads(message.payload)
        except ValueError:
            return
        if isinstance(doc, dict):
            for key in ("event_id", "order_id", "type"):
                value = doc.get(key)
                if isinstance(value, str):
                    setattr(outcome, "event_type" if key == "type" else key, value[:128])

    def _event(self, conn: sqlite3.Connection, message: Incoming, now: datetime) -> Outcome:
        event = parse_event(message.topic, message.payload, self.root)
        base = Outcome(message.topic, "applied", event.event_id, event.order_id, event.type)
        if conn.execute("SELECT 1 FROM events WHERE event_id=?", (event.event_id,)).fetchone():
            base.result = "duplicate"
            return base
        env = event.envelope
        conn.execute(
            "INSERT INTO events (event_id, order_id, type, occurred_at, received_at, channel, "
            "device, topic, payload) VALUES (?,?,?,?,?,?,?,?,?)",
            (event.event_id, event.order_id, event.type, rfc3339_ms(env.occurred_at),
             rfc3339_ms(now), env.source.channel, env.source.device, message.topic, event.raw),
        )
        applied = self.applier.apply(conn, event, now)
        base.result = applied.effect
        base.new_jobs = applied.new_jobs
        return base

    def _reprint(self, conn: sqlite3.Connection, message: Incoming, now: datetime) -> Outcome:
        try:
            doc: Any = json.loads(message.payload)
        except ValueError as exc:
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
