"""OpenApp's messages: `openapp_in` (requests as received, applied later),
`openapp_submissions` (one answer per submission_id) and `openapp_out` (what goes back,
written in the transaction of what it reports, marked sent once the broker has it)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from edge.store.rows import query


@dataclass(frozen=True, slots=True)
class StoredRequest:
    rowid: int
    message_id: str
    message_type: str
    table_id: str
    payload: str


@dataclass(frozen=True, slots=True)
class Outgoing:
    id: int
    message_id: str
    message_type: str
    table_id: str
    body: str


@dataclass(frozen=True, slots=True)
class OutStats:
    unsent: int
    sent: int
    oldest_unsent_at: str | None


# -- in ---------------------------------------------------------------------------------


def seen(conn: sqlite3.Connection, message_id: str) -> bool:
    return query(conn, "SELECT 1 FROM openapp_in WHERE message_id = ?",
                 (message_id,)).fetchone() is not None


def add(conn: sqlite3.Connection, *, message_id: str, message_type: str, table_id: str,
        received_at: str, payload: str) -> None:
    query(conn, "INSERT INTO openapp_in (message_id, message_type, table_id, received_at, "
                "payload) VALUES (?,?,?,?,?)",
          (message_id, message_type, table_id, received_at, payload))


def unapplied(conn: sqlite3.Connection, limit: int) -> list[StoredRequest]:
    rows = query(conn, "SELECT rowid, message_id, message_type, table_id, payload "
                       "FROM openapp_in WHERE applied = 0 ORDER BY rowid LIMIT ?",
                 (limit,)).fetchall()
    return [StoredRequest(int(r["rowid"]), str(r["message_id"]), str(r["message_type"]),
                          str(r["table_id"]), str(r["payload"])) for r in rows]


def mark_applied(conn: sqlite3.Connection, rowid: int) -> None:
    query(conn, "UPDATE openapp_in SET applied = 1 WHERE rowid = ?", (rowid,))


def forget(conn: sqlite3.Connection, rowid: int) -> None:
    """A request that could not be applied is no seen message_id: a corrected resend may be."""
    query(conn, "DELETE FROM openapp_in WHERE rowid = ?", (rowid,))


# -- submissions ------------------------------------------------------------------------


def submission_result(conn: sqlite3.Connection, submission_id: str) -> str | None:
    row = query(conn, "SELECT result FROM openapp_submissions WHERE submission_id = ?",
                (submission_id,)).fetchone()
    return None if row is None else str(row["result"])


def add_submission(conn: sqlite3.Connection, *, submission_id: str, table_id: str,
                   order_id: str | None, result: str, at: str) -> None:
    query(conn, "INSERT INTO openapp_submissions (submission_id, table_id, order_id, result, "
                "at) VALUES (?,?,?,?,?)", (submission_id, table_id, order_id, result, at))


# -- out --------------------------------------------------------------------------------


def queue(conn: sqlite3.Connection, *, message_id: str, message_type: str, table_id: str,
          body: str, at: str) -> bool:
    """False when a message with this id is already queued (the same answer twice)."""
    cursor = query(conn, "INSERT OR IGNORE INTO openapp_out (message_id, message_type, "
                         "table_id, body, created_at) VALUES (?,?,?,?,?)",
                   (message_id, message_type, table_id, body, at))
    return cursor.rowcount > 0


def hand_unsent(conn: sqlite3.Connection, at: str, limit: int, *,
                after: int = 0) -> list[Outgoing]:
    """The oldest messages not yet sent (with an id above `after`: those below are with the
    broker link already), marked as handed to it (a real write, so the transaction that
    reads them is a durable one)."""
    rows = query(conn, "SELECT id, message_id, message_type, table_id, body FROM openapp_out "
                       "WHERE sent_at IS NULL AND id > ? ORDER BY id LIMIT ?",
                 (after, limit)).fetchall()
    out = [Outgoing(int(r["id"]), str(r["message_id"]), str(r["message_type"]),
                    str(r["table_id"]), str(r["body"])) for r in rows]
    conn.executemany("UPDATE openapp_out SET handed_at = ? WHERE id = ?",
                     [(at, x.id) for x in out])
    return out


def mark_sent(conn: sqlite3.Connection, ids: list[int], at: str) -> None:
    conn.executemany("UPDATE openapp_out SET sent_at = ? WHERE id = ? AND sent_at IS NULL",
                     [(at, i) for i in ids])


def prune(conn: sqlite3.Connection, before: str) -> int:
    """Forget messages sent, and requests applied, before `before`: the outbox is a queue,
    not an archive (a submission's answer stays, in `openapp_submissions`). The rows gone."""
    sent = query(conn, "DELETE FROM openapp_out WHERE sent_at IS NOT NULL AND sent_at < ?",
                 (before,)).rowcount
    applied = query(conn, "DELETE FROM openapp_in WHERE applied = 1 AND received_at < ?",
                    (before,)).rowcount
    return int(sent) + int(applied)


def stats(conn: sqlite3.Connection) -> OutStats:
    row = query(conn, "SELECT SUM(sent_at IS NULL) AS unsent, SUM(sent_at IS NOT NULL) AS sent, "
                      "MIN(CASE WHEN sent_at IS NULL THEN created_at END) AS oldest "
                      "FROM openapp_out").fetchone()
    return OutStats(int(row["unsent"] or 0), int(row["sent"] or 0), row["oldest"])


__all__ = ["OutStats", "Outgoing", "StoredRequest", "add", "add_submission", "forget",
           "hand_unsent", "mark_applied", "mark_sent", "prune", "queue", "seen", "stats",
           "submission_result", "unapplied"]
