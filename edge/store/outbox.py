"""The `outbox` table: records waiting to reach the restaurant core (CONTRACT section 7).

Every function here is synchronous and takes the caller's `sqlite3.Connection`; none of them
commits. The kitchen calls `add_record` inside the writer transaction that makes the change
the record reports, so a record exists exactly when its change does. The sender calls the
rest, each inside its own short transaction.

States of a record:

- `pending`: waiting to be sent (or sent, with no 200 yet: a record is only ever marked
  `accepted` after the upstream listed it in a 200, so re-sending is always safe).
- `accepted`: the upstream has it. Kept for `retention_hours`, then compacted.
- `superseded`: a `status` record made pointless by a newer `status` of the same order before
  it was sent. Never sent; it does not hold up its order.
- `parked`: the upstream refused it with a 4xx of its own (not 401/403/404...). Kept and
  visible to the operator, never retried by itself (`retry_parked` puts it back).

Per-order order (section 7: none is sent while an earlier record of the same order is still
unaccepted) is applied strictly: at most one record of an order is in flight at a time, and
it is always the oldest one not yet accepted. A *parked* record is unaccepted, so it holds
back every later record of its order until the operator retries it; other orders carry on.
Records with no order are not held back by anything.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from edge.clock import parse_rfc3339, rfc3339_ms
from edge.store import kv
from edge.store.rows import query

log = structlog.get_logger(__name__)

# Rough per-row cost beyond the body (ids, timestamps, index entries), for the disk budget.
ROW_OVERHEAD = 160
# An accepted confirmation is kept as timeline evidence ("Confirmation recorded") after
# retention, with its body (which may hold contact details for the notification) emptied.
EMPTY_BODY = "{}"

# Envelope bytes around the records of a request: {"records":[ ... ]}
_BATCH_FRAME = len('{"records":[]}')


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    seq: int
    record_id: str
    kind: str
    order_id: str | None
    created_at: str
    body_json: str
    size: int
    attempts: int
    state: str
    wire_json: str  # built once: it is both measured for the batch and sent

    @property
    def body(self) -> Any:
        return json.loads(self.body_json)

    def wire(self) -> str:
        """The record as it goes upstream (CONTRACT section 7), as JSON text."""
        return self.wire_json


def _wire(seq: int, record_id: str, kind: str, order_id: str | None, created_at: str,
          body_json: str) -> str:
    # The stored body text is spliced in as is: it was written by json.dumps.
    return (
        '{"record_id":' + json.dumps(record_id)
        + ',"kind":' + json.dumps(kind)
        + ',"order_id":' + json.dumps(order_id)
        + ',"seq":' + str(seq)
        + ',"created_at":' + json.dumps(created_at)
        + ',"body":' + body_json + "}"
    )


@dataclass(frozen=True, slots=True)
class OutboxStats:
    backlog: int                    # pending records (sendable or held back)
    blocked: int                    # pending records held back by a parked one of their order
    oldest_unsent_age_s: float | None
    last_success: str | None        # when the upstream last accepted something
    parked: int
    superseded: int
    accepted: int
    bytes: int                      # what the outbox costs on disk, by the budget's measure

    def as_dict(self) -> dict[str, Any]:
        return {
            "backlog": self.backlog,
            "blocked": self.blocked,
            "oldest_unsent_age_s": self.oldest_unsent_age_s,
            "last_success": self.last_success,
            "parked": self.parked,
            "superseded": self.superseded,
            "accepted": self.accepted,
            "bytes": self.bytes,
        }


@dataclass(frozen=True, slots=True)
class BudgetReport:
    budget_bytes: int
    bytes_before: int
    bytes_after: int
    compacted: int = 0              # accepted records deleted (confirmations: body emptied)
    dropped_superseded: int = 0
    dropped_status: int = 0         # unsent status records that a newer status made moot

    @property
    def over_budget(self) -> bool:
        return self.bytes_after > self.budget_bytes


_COLUMNS = "seq, record_id, kind, order_id, created_at, body, size, attempts, state"
_KV_LAST_SUCCESS = "upstream.last_success"


def _record(row: sqlite3.Row) -> OutboxRecord:
    seq, record_id, kind = int(row["seq"]), str(row["record_id"]), str(row["kind"])
    order_id = None if row["order_id"] is None else str(row["order_id"])
    created_at, body_json = str(row["created_at"]), str(row["body"])
    return OutboxRecord(
        seq=seq, record_id=record_id, kind=kind, order_id=order_id, created_at=created_at,
        body_json=body_json, size=int(row["size"]), attempts=int(row["attempts"]),
        state=str(row["state"]),
        wire_json=_wire(seq, record_id, kind, order_id, created_at, body_json),
    )


def add_record(
    conn: sqlite3.Connection,
    *,
    kind: str,
    record_id: str,
    order_id: str | None,
    body: dict[str, Any],
    created_at: datetime,
) -> int | None:
    """Write one record; returns its seq, or None if `record_id` was already written.

    A new `status` record supersedes the still-pending status records of its order: only the
    newest status is worth sending. Nothing else is ever superseded.
    """
    body_json = json.dumps(body, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    size = len(body_json.encode("utf-8"))
    cur = query(conn,
        "INSERT OR IGNORE INTO outbox (record_id, kind, order_id, created_at, body, size)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (record_id, kind, order_id, rfc3339_ms(created_at), body_json, size),
    )
    if cur.rowcount == 0:
        return None
    seq = int(cur.lastrowid or 0)
    if kind == "status" and order_id is not None:
        query(conn,
            "UPDATE outbox SET state = 'superseded'"
            " WHERE order_id = ? AND kind = 'status' AND state = 'pending' AND seq < ?",
            (order_id, seq),
        )
    return seq


# The head of each order: pending, with no earlier pending or parked record of the same order
# (accepted and superseded records do not hold an order back).
_NEXT = f"""
SELECT {_COLUMNS} FROM outbox AS o
WHERE o.state = 'pending'
  AND (o.order_id IS NULL OR NOT EXISTS (
        SELECT 1 FROM outbox AS e
        WHERE e.order_id = o.order_id AND e.seq < o.seq AND e.state IN ('pending', 'parked')))
ORDER BY o.seq
LIMIT ?
"""


def next_batch(conn: sqlite3.Connection, *, max_records: int, max_bytes: int) -> list[OutboxRecord]:
    """The records to send now, in seq order: at most one per order (see the module doc).

    The request body built from the batch stays within `max_bytes`, except that a single
    record larger than that still goes alone (the upstream may refuse it; it is then parked).
    """
    batch: list[OutboxRecord] = []
    total = _BATCH_FRAME
    for row in query(conn, _NEXT, (max_records,)):
        record = _record(row)
        cost = len(record.wire().encode("utf-8")) + 1
        if batch and total + cost > max_bytes:
            break
        batch.append(record)
        total += cost
    return batch


def _chunks(ids: Iterable[str], size: int = 500) -> Iterable[list[str]]:
    chunk: list[str] = []
    for record_id in ids:
        chunk.append(record_id)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _update(conn: sqlite3.Connection, record_ids: Iterable[str], assignments: str,
            only_state: str, params: tuple[Any, ...]) -> int:
    """UPDATE the given records in chunks (SQLite caps bound parameters); rows changed."""
    changed = 0
    for chunk in _chunks(record_ids):
        marks = ",".join("?" * len(chunk))
        cur = query(conn,
            f"UPDATE outbox SET {assignments} WHERE record_id IN ({marks}) AND {only_state}",
            (*params, *chunk),
        )
        changed += cur.rowcount
    return changed


def mark_accepted(conn: sqlite3.Connection, record_ids: Iterable[str], at: datetime) -> int:
    """The upstream listed these ids in a 200: they are done. Call only after that answer."""
    stamp = rfc3339_ms(at)
    changed = _update(conn, record_ids, "state = 'accepted', accepted_at = ?, last_error = NULL",
                      "state != 'accepted'", (stamp,))
    if changed:
        kv.put(conn, _KV_LAST_SUCCESS, stamp)
    return changed


def mark_failed(conn: sqlite3.Connection, record_ids: Iterable[str], error: str) -> int:
    """A send of these records failed in a way worth retrying; they stay pending."""
    return _update(conn, record_ids, "attempts = attempts + 1, last_error = ?",
                   "state = 'pending'", (error[:500],))


def park(conn: sqlite3.Connection, record_ids: Iterable[str], error: str, at: datetime) -> int:
    """The upstream refuses these records themselves: keep them aside for the operator."""
    return _update(conn, record_ids,
                   "state = 'parked', parked_at = ?, attempts = attempts + 1, last_error = ?",
                   "state = 'pending'", (rfc3339_ms(at), error[:500]))


def retry_parked(conn: sqlite3.Connection) -> int:
    """Operator's call: parked records become pending again (and unblock their orders)."""
    cur = query(conn,
        "UPDATE outbox SET state = 'pending', parked_at = NULL WHERE state = 'parked'"
    )
    return cur.rowcount


def compact(conn: sqlite3.Connection, *, older_than: datetime, limit: int | None = None) -> int:
    """Forget what the upstream has had since before `older_than`; returns rows touched.

    Accepted records and superseded ones are deleted, except accepted confirmations: the
    row stays as the timeline's "Confirmation recorded" evidence, with its body emptied.
    Pending and parked records are never touched. `limit` bounds the work of one call so the
    kitchen's writer is never held for long.
    """
    cutoff = rfc3339_ms(older_than)
    cap = -1 if limit is None else limit
    deleted = query(conn,
        "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE"
        " (state = 'accepted' AND kind != 'confirmation' AND accepted_at < ?)"
        " OR (state = 'superseded' AND created_at < ?) LIMIT ?)",
        (cutoff, cutoff, cap),
    ).rowcount
    emptied = query(conn,
        "UPDATE outbox SET body = ?, size = ? WHERE seq IN (SELECT seq FROM outbox WHERE"
        " state = 'accepted' AND kind = 'confirmation' AND accepted_at < ? AND body != ?"
        " LIMIT ?)",
        (EMPTY_BODY, len(EMPTY_BODY), cutoff, EMPTY_BODY, cap),
    ).rowcount
    return int(deleted) + int(emptied)


def outbox_bytes(conn: sqlite3.Connection) -> int:
    row = query(conn,
        f"SELECT COALESCE(SUM(size), 0) + {ROW_OVERHEAD} * COUNT(*) AS bytes FROM outbox")
    return int(row.fetchone()["bytes"])


def enforce_budget(conn: sqlite3.Connection, *, budget_bytes: int) -> BudgetReport:
    """Keep the outbox within `budget_bytes` (body bytes + ROW_OVERHEAD per row).

    Policy, in order, stopping as soon as the outbox fits:

    1. compact every accepted record, whatever its age (confirmations keep their row, as
       timeline evidence, with an empty body);
    2. delete superseded status records;
    3. delete unsent (pending or parked) status records for which a newer status of the
       same order exists, oldest first: the newer one says more.

    Confirmations and print_job records, and the newest status of each order, are never
    dropped. If the outbox still does not fit, an `outbox_over_budget` error is logged with
    the numbers and nothing else happens: the kitchen keeps writing, because stopping it
    would cost food, and the operator is told to look.
    """
    before = outbox_bytes(conn)
    if before <= budget_bytes:
        return BudgetReport(budget_bytes, before, before)
    log.warning("outbox_budget_exceeded", bytes=before, budget_bytes=budget_bytes)

    compacted = query(conn,
        "DELETE FROM outbox WHERE state = 'accepted' AND kind != 'confirmation'"
    ).rowcount
    compacted += query(conn,
        "UPDATE outbox SET body = ?, size = ? WHERE state = 'accepted'"
        " AND kind = 'confirmation' AND body != ?",
        (EMPTY_BODY, len(EMPTY_BODY), EMPTY_BODY),
    ).rowcount
    now_bytes = outbox_bytes(conn)
    dropped_superseded = dropped_status = 0
    if now_bytes > budget_bytes:
        dropped_superseded = query(conn, "DELETE FROM outbox WHERE state = 'superseded'").rowcount
        now_bytes = outbox_bytes(conn)
    if now_bytes > budget_bytes:
        dropped_status = _drop_moot_status(conn, budget_bytes, now_bytes)
        now_bytes = outbox_bytes(conn)
    report = BudgetReport(
        budget_bytes, before, now_bytes, compacted, dropped_superseded, dropped_status
    )
    fields = {
        "bytes_before": before, "bytes_after": now_bytes, "budget_bytes": budget_bytes,
        "compacted": compacted, "dropped_superseded": dropped_superseded,
        "dropped_status": dropped_status,
    }
    if report.over_budget:
        kinds = dict(
            query(conn,
                "SELECT kind || ':' || state, COUNT(*) FROM outbox GROUP BY kind, state"
            ).fetchall()
        )
        log.error("outbox_over_budget", **fields, rows=kinds,
                  action="kitchen keeps writing; check the upstream link and parked records")
    else:
        log.warning("outbox_budget_restored", **fields)
    return report


def _drop_moot_status(conn: sqlite3.Connection, budget_bytes: int, current: int) -> int:
    moot = query(conn,
        "SELECT seq, size FROM outbox AS o WHERE o.kind = 'status'"
        " AND o.state IN ('pending', 'parked') AND o.order_id IS NOT NULL"
        " AND EXISTS (SELECT 1 FROM outbox AS n WHERE n.order_id = o.order_id"
        "             AND n.kind = 'status' AND n.seq > o.seq)"
        " ORDER BY o.seq"
    ).fetchall()
    victims: list[int] = []
    for row in moot:
        if current <= budget_bytes:
            break
        victims.append(int(row["seq"]))
        current -= int(row["size"]) + ROW_OVERHEAD
    for start in range(0, len(victims), 500):
        chunk = victims[start:start + 500]
        query(conn,
            f"DELETE FROM outbox WHERE seq IN ({','.join('?' * len(chunk))})", chunk
        )
    return len(victims)


def stats(conn: sqlite3.Connection, now: datetime) -> OutboxStats:
    counts = dict(
        query(conn, "SELECT state, COUNT(*) FROM outbox GROUP BY state").fetchall()
    )
    oldest = query(conn,
        "SELECT created_at FROM outbox WHERE state IN ('pending', 'parked') ORDER BY seq LIMIT 1"
    ).fetchone()
    blocked = query(conn,
        "SELECT COUNT(*) AS n FROM outbox AS o WHERE o.state = 'pending'"
        " AND o.order_id IS NOT NULL"
        " AND EXISTS (SELECT 1 FROM outbox AS p WHERE p.order_id = o.order_id"
        "             AND p.state = 'parked' AND p.seq < o.seq)"
    ).fetchone()["n"]
    last = kv.get(conn, _KV_LAST_SUCCESS)
    if last is None:
        last = query(conn, "SELECT MAX(accepted_at) AS at FROM outbox").fetchone()["at"]
    age = None
    if oldest is not None:
        age = max(0.0, (now - parse_rfc3339(str(oldest["created_at"]))).total_seconds())
    return OutboxStats(
        backlog=int(counts.get("pending", 0)),
        blocked=int(blocked),
        oldest_unsent_age_s=age,
        last_success=None if last is None else str(last),
        parked=int(counts.get("parked", 0)),
        superseded=int(counts.get("superseded", 0)),
        accepted=int(counts.get("accepted", 0)),
        bytes=outbox_bytes(conn),
    )


def parked_records(conn: sqlite3.Connection, limit: int = 100) -> list[dict[str, Any]]:
    """What the operator needs to judge a parked record, without its body."""
    cur = query(conn,
        "SELECT seq, record_id, kind, order_id, created_at, attempts, last_error, parked_at"
        " FROM outbox WHERE state = 'parked' ORDER BY seq LIMIT ?",
        (limit,),
    )
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


@dataclass(frozen=True, slots=True)
class Confirmation:
    record_id: str
    created_at: str


def first_confirmation(conn: sqlite3.Connection, order_id: str) -> Confirmation | None:
    """The order's `confirmation` record (timeline evidence), in whatever state."""
    row = query(conn,
        "SELECT record_id, created_at FROM outbox WHERE order_id = ? AND kind = 'confirmation'"
        " ORDER BY seq LIMIT 1", (order_id,)).fetchone()
    return None if row is None else Confirmation(str(row["record_id"]), str(row["created_at"]))


def make_durable_point(conn: sqlite3.Connection, at: datetime) -> None:
    """One durable write: with it, everything committed before is on disk too."""
    kv.put(conn, "outbox_durable_point", rfc3339_ms(at))
