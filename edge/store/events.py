"""The `events`, `dead_letters` and `commands` tables: what came in, what was refused, and
which operator commands were carried out.

`events` holds every accepted event as received (`applied = 0` until the applier has applied
it); its `event_id` primary key is what makes a redelivery harmless. A dead letter is kept
once per (topic, payload), however often it is redelivered.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from edge.store.rows import query

DEAD_LETTER_CUT = 4096


@dataclass(frozen=True, slots=True)
class StoredEvent:
    rowid: int
    event_id: str
    topic: str
    payload: str


@dataclass(frozen=True, slots=True)
class EventTimes:
    occurred_at: str
    received_at: str


@dataclass(frozen=True, slots=True)
class AppliedEvent:
    event_id: str
    type: str
    occurred_at: str
    payload: str


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    topic: str
    reason: str
    received_at: str
    payload: bytes


def seen(conn: sqlite3.Connection, event_id: str) -> bool:
    return query(conn, "SELECT 1 FROM events WHERE event_id=?", (event_id,)).fetchone() \
        is not None


def add(conn: sqlite3.Connection, *, event_id: str, order_id: str, type: str,
        occurred_at: str, received_at: str, channel: str, device: str | None, topic: str,
        payload: str, applied: bool = False) -> None:
    """Store an event as received, not yet applied (or applied by the caller, in the same
    transaction: an OpenApp round)."""
    query(conn,
        "INSERT INTO events (event_id, order_id, type, occurred_at, received_at, channel, "
        "device, topic, payload, applied) VALUES (?,?,?,?,?,?,?,?,?,?)",
        (event_id, order_id, type, occurred_at, received_at, channel, device, topic, payload,
         int(applied)))


def add_new(conn: sqlite3.Connection, *, event_id: str, order_id: str, type: str,
            occurred_at: str, received_at: str, channel: str, device: str | None,
            topic: str, payload: str) -> bool:
    """Store an event as received, not yet applied, unless its event_id is already stored:
    False then (a duplicate), and nothing is written. One statement for `seen` and `add`."""
    cur = query(conn,
        "INSERT INTO events (event_id, order_id, type, occurred_at, received_at, channel, "
        "device, topic, payload, applied) VALUES (?,?,?,?,?,?,?,?,?,0) "
        "ON CONFLICT(event_id) DO NOTHING",
        (event_id, order_id, type, occurred_at, received_at, channel, device, topic, payload))
    return cur.rowcount == 1


def unapplied(conn: sqlite3.Connection, limit: int) -> list[StoredEvent]:
    """Stored events not yet applied, oldest first."""
    rows = query(conn,
        "SELECT rowid, event_id, topic, payload FROM events WHERE applied = 0 "
        "ORDER BY rowid LIMIT ?", (limit,)).fetchall()
    return [StoredEvent(int(r["rowid"]), str(r["event_id"]), str(r["topic"]), str(r["payload"]))
            for r in rows]


def mark_applied(conn: sqlite3.Connection, rowid: int) -> None:
    query(conn, "UPDATE events SET applied = 1 WHERE rowid = ?", (rowid,))


def forget(conn: sqlite3.Connection, rowid: int) -> None:
    """An event that could not be applied is no seen event_id: a corrected resend may apply."""
    query(conn, "DELETE FROM events WHERE rowid = ?", (rowid,))


def payloads(conn: sqlite3.Connection, event_id: str) -> list[str]:
    return [str(r["payload"]) for r in query(conn,
        "SELECT payload FROM events WHERE event_id = ?", (event_id,))]


def for_timeline(conn: sqlite3.Connection, order_id: str, intake_id: str,
                 types: Iterable[str]) -> tuple[EventTimes | None, list[AppliedEvent]]:
    """For an order's timeline, in one read of its events (it is rebuilt at every step of
    the order): its intake event's times, and its applied events of these types in the
    order they were received."""
    wanted = list(types)
    marks = ",".join("?" * len(wanted))
    rows = query(conn,
        f"SELECT event_id, type, occurred_at, received_at, applied, type IN ({marks}) AS step,"
        f" CASE WHEN type IN ({marks}) THEN payload END AS payload FROM events"
        f" WHERE order_id = ? AND (event_id = ? OR (applied = 1 AND type IN ({marks})))"
        f" ORDER BY received_at, rowid",
        (*wanted, *wanted, order_id, intake_id, *wanted)).fetchall()
    intake: EventTimes | None = None
    steps: list[AppliedEvent] = []
    for r in rows:
        if r["event_id"] == intake_id:
            intake = EventTimes(str(r["occurred_at"]), str(r["received_at"]))
        if r["applied"] == 1 and r["step"]:
            steps.append(AppliedEvent(str(r["event_id"]), str(r["type"]),
                                      str(r["occurred_at"]), str(r["payload"])))
    return intake, steps


# -- dead letters -----------------------------------------------------------------------


def add_dead_letter(conn: sqlite3.Connection, topic: str, payload: bytes, reason: str,
                    received_at: str) -> int:
    """Keep a refused message once, however often it is redelivered; returns its row id."""
    digest = hashlib.sha256(topic.encode() + b"\0" + payload).hexdigest()
    query(conn,
        "INSERT INTO dead_letters (topic, reason, received_at, payload, payload_size, digest) "
        "VALUES (?,?,?,?,?,?) ON CONFLICT(digest) DO UPDATE SET seen = seen + 1, published = 0",
        (topic, reason, received_at, payload[:DEAD_LETTER_CUT], len(payload), digest),
    )
    row = query(conn, "SELECT id FROM dead_letters WHERE digest=?", (digest,)).fetchone()
    return int(row["id"])


def dead_letter(conn: sqlite3.Connection, dead_letter_id: int) -> DeadLetter | None:
    row = query(conn,
        "SELECT id, topic, reason, received_at, payload FROM dead_letters WHERE id=?",
        (dead_letter_id,)).fetchone()
    if row is None:
        return None
    return DeadLetter(int(row["id"]), str(row["topic"]), str(row["reason"]),
                      str(row["received_at"]), bytes(row["payload"]))


def mark_dead_letter_published(conn: sqlite3.Connection, dead_letter_id: int) -> None:
    query(conn, "UPDATE dead_letters SET published=1 WHERE id=?", (dead_letter_id,))


def unpublished_dead_letters(conn: sqlite3.Connection) -> list[int]:
    return [int(r["id"]) for r in query(conn,
        "SELECT id FROM dead_letters WHERE published=0 ORDER BY id")]


def recent_dead_letters(conn: sqlite3.Connection, limit: int = 50) -> list[dict[str, Any]]:
    out = [dict(r) for r in query(conn,
        "SELECT id, received_at, topic, reason, seen, payload_size, payload FROM dead_letters "
        "ORDER BY id DESC LIMIT ?", (limit,)).fetchall()]
    for row in out:
        row["payload"] = bytes(row["payload"]).decode("utf-8", errors="replace")
    return out


# -- commands ---------------------------------------------------------------------------


def command_seen(conn: sqlite3.Connection, command_id: str) -> bool:
    return query(conn, "SELECT 1 FROM commands WHERE command_id=?",
                        (command_id,)).fetchone() is not None


def command_result(conn: sqlite3.Connection, command_id: str) -> str | None:
    row = query(conn, "SELECT result FROM commands WHERE command_id=?",
                (command_id,)).fetchone()
    return None if row is None else str(row["result"])


def event_applied(conn: sqlite3.Connection, event_id: str) -> bool | None:
    """True once applied, False while stored and waiting, None when not stored (yet, or it
    was refused and dead-lettered)."""
    row = query(conn, "SELECT applied FROM events WHERE event_id=?", (event_id,)).fetchone()
    return None if row is None else bool(row["applied"])


def dead_letter_mentioning(conn: sqlite3.Connection, needle: str) -> str | None:
    """The reason of the newest dead letter whose payload holds `needle` (an id)."""
    row = query(conn, "SELECT reason FROM dead_letters WHERE instr(CAST(payload AS TEXT), ?) "
                "ORDER BY id DESC LIMIT 1", (needle,)).fetchone()
    return None if row is None else str(row["reason"])


def add_command(conn: sqlite3.Connection, *, command_id: str, kind: str, received_at: str,
                payload: str, result: str) -> None:
    query(conn,
        "INSERT INTO commands (command_id, kind, received_at, payload, result) "
        "VALUES (?,?,?,?,?)", (command_id, kind, received_at, payload, result))


__all__ = [
    "DEAD_LETTER_CUT",
    "AppliedEvent",
    "DeadLetter",
    "EventTimes",
    "StoredEvent",
    "add",
    "add_command",
    "add_dead_letter",
    "add_new",
    "command_result",
    "command_seen",
    "dead_letter",
    "dead_letter_mentioning",
    "event_applied",
    "for_timeline",
    "forget",
    "mark_applied",
    "mark_dead_letter_published",
    "payloads",
    "recent_dead_letters",
    "seen",
    "unapplied",
    "unpublished_dead_letters",
]
