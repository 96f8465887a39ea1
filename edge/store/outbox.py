"""The `outbox` table: records waiting to reach the restaurant core (CONTRACT section 7).

Every function here is synchronous and takes the caller's `sqlite3.Connection`; none of them
commits. The kitchen calls `add_record` inside the writer transaction that makes the change
the record reports, so a record exists exactly when its change does. The sender calls the
rest, each inside its own short transaction.

States of a record:

- `pending`: waiting to be sent (or sent, with no 200 yet: a record is only ever marked
  `accepted` after the upstream listed it in a 200, so re-sending is always safe).
- `accepted`: the upstream has it. The row (ids, seq, times) is kept for `retention_hours`,
  then compacted; its body is emptied at once, except a confirmation's.
- `superseded`: a `status` record made pointless by a newer `status` of the same order, or a
  `print_job` record by a newer record of the same job, before it was accepted. Never sent
  (again); it does not hold up its order. Its body is emptied.
- `parked`: the upstream refused it with a 4xx of its own (not 401/403/404...). Kept and
  visible to the operator, never retried by itself (`retry_parked` puts it back).

Per-order order (section 7: none is sent while an earlier record of the same order is still
unaccepted) is applied strictly: at most one record of an order is in flight at a time, and
it is always the oldest one not yet accepted. The sender may have several batches in flight;
it tells `next_batch` which orders and records are in flight, and those are left out. A
*parked* record is unaccepted, so it holds back every later record of its order until the
operator retries it; other orders carry on.
Records with no order are not held back by anything.
"""

from __future__ import annotations

import json
import json.encoder
import sqlite3
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from edge.clock import parse_rfc3339, rfc3339_ms
from edge.store import kv
from edge.store.rows import chunks, query

log = structlog.get_logger(__name__)


# Rough per-row cost beyond the body (ids, timestamps, index entries), for the disk budget.
ROW_OVERHEAD = 160
# An accepted confirmation is kept as timeline evidence ("Confirmation recorded") after
# retention, with its body (which may hold contact details for the notification) emptied.
EMPTY_BODY = "{}"

# Envelope bytes around the records of a request: {"records":[ ... ]}
_BATCH_FRAME = len('{"records":[]}')


# Not frozen: a frozen dataclass sets each field through object.__setattr__, and a drain
# builds thousands of these a second.
@dataclass(slots=True)
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


_KV_LAST_SUCCESS = "upstream.last_success"


def add_record(
    conn: sqlite3.Connection,
    *,
    kind: str,
    record_id: str,
    order_id: str | None,
    body: dict[str, Any],
    created_at: datetime,
    supersede: bool = True,
) -> int | None:
    """Write one record; returns its seq, or None if it is a confirmation already written
    (the one record the kitchen writes again on purpose; other ids cannot repeat).

    Only the newest state is worth sending, so a new record supersedes the still-unsent
    records that say less than it does (docs/contract-additions.md, "Upstream record kinds"):
    a `status` the pending status records of its order, a `print_job` the pending print_job
    records of the same job (`body["job_key"]`). Nothing else is ever superseded. A
    superseded record keeps its seq: the upstream sees a gap there, as it always has for
    statuses, and never the record. `supersede=False`: the caller knows there is nothing
    to supersede (the order's first status, a job's first report), so nothing is looked for.
    """
    body_json = _BODY_JSON.encode(body)
    size = len(body_json.encode("utf-8"))
    cur = query(conn,
        "INSERT OR IGNORE INTO outbox (seq, record_id, kind, order_id, created_at, body, size)"
        " VALUES (" + _NEXT_SEQ + ", ?, ?, ?, ?, ?, ?)",
        (record_id, kind, order_id, rfc3339_ms(created_at), body_json, size),
    )
    if cur.rowcount == 0:
        return None
    seq = int(cur.lastrowid or 0)
    if supersede and order_id is not None and kind in _SUPERSEDING:
        _supersede(conn, kind, order_id, seq, body)
    return seq


# json.dumps(body, ensure_ascii=False, separators=(",", ":"), sort_keys=True), built once:
# several records are written for every order applied.
_BODY_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True)
# The next seq (CONTRACT section 7: one more than any record ever written, never reused):
# past the newest row, and past the newest row ever deleted (`outbox_seq_floor`, kept by a
# trigger; migration 0013). Not AUTOINCREMENT: that rewrote sqlite_sequence's page in every
# transaction writing a record (issue 12).
_NEXT_SEQ = ("MAX(COALESCE((SELECT MAX(seq) FROM outbox), 0),"
             " (SELECT seq FROM outbox_seq_floor WHERE id = 1)) + 1")
_SUPERSEDING = frozenset({"status", "print_job"})
# The assignments that empty a row's body as it leaves the unsent records for good.
_DROP_BODY = (f"body = CASE WHEN kind = 'confirmation' THEN body ELSE '{EMPTY_BODY}' END,"
              f" size = CASE WHEN kind = 'confirmation' THEN size ELSE {len(EMPTY_BODY)} END")


def _supersede(conn: sqlite3.Connection, kind: str, order_id: str, seq: int,
               body: dict[str, Any]) -> None:
    # Both read only the order's unsent rows (`outbox_unsent_by_order`): a handful, or none
    # once the upstream has taken them.
    if kind == "status":
        query(conn,
            "UPDATE outbox SET state = 'superseded', " + _DROP_BODY
            + " WHERE order_id = ? AND state = 'pending' AND seq < ? AND kind = 'status'",
            (order_id, seq),
        )
        return
    job_key = body.get("job_key")
    if not isinstance(job_key, str):
        return
    query(conn,
        "UPDATE outbox SET state = 'superseded', " + _DROP_BODY
        + " WHERE order_id = ? AND state = 'pending' AND seq < ? AND kind = 'print_job'"
        " AND json_extract(body, '$.job_key') = ?",
        (order_id, seq, job_key),
    )


# The sender's scan: unsent records in seq order with their order, from the index alone.
_UNSENT = """
SELECT seq, order_id FROM outbox INDEXED BY outbox_unsent
WHERE state = 'pending'
ORDER BY seq
"""
# Then the chosen records' columns; their wire form is put together in Python (`_wire`):
# quoting four short strings in C is cheaper than SQLite's json_quote and `||` (issue 17).
_CHOSEN = """
SELECT seq, record_id, kind, order_id, created_at, body, size, attempts
FROM outbox
WHERE seq IN (@marks)
ORDER BY seq
"""
# Index entries looked at per call, at most, in units of `max_records`: the unsent records
# of orders already in flight or already in the batch are skipped, and a backlog of a few
# long orders must not make one call read the whole outbox.
_SCAN_FACTOR = 16
# JSON string quoting in C (json.dumps's own, without its call overhead).
_quote = json.encoder.encode_basestring


def _wire(seq: int, record_id: str, kind: str, order_id: str | None, created_at: str,
          body: str) -> str:
    """The record as it goes upstream (CONTRACT section 7), as JSON text: the stored body
    is spliced in as is (it was written by json.dumps)."""
    quote = _quote
    return (f'{{"record_id":{quote(record_id)},"kind":{quote(kind)},"order_id":'
            f'{"null" if order_id is None else quote(order_id)},"seq":{seq},'
            f'"created_at":{quote(created_at)},"body":{body}}}')


def next_batch(conn: sqlite3.Connection, *, max_records: int, max_bytes: int,
               busy_orders: Collection[str] = (),
               busy_seqs: Collection[int] = ()) -> list[OutboxRecord]:
    """The records to send now, in seq order: at most one per order, each its order's
    oldest unaccepted record (see the module doc).

    `busy_orders` are orders with a record in flight, `busy_seqs` the records in flight:
    neither goes again, and no later record of a busy order goes before its answer.

    The request body built from the batch stays within `max_bytes`, except that a single
    record larger than that still goes alone (the upstream may refuse it; it is then parked).
    """
    # Unsent rows come in seq order, so the first one seen of an order is its oldest unsent
    # one; a parked record (unaccepted too) holds back every later record of its order.
    # Plain tuples, not sqlite3.Row: this loop sees a few thousand rows per batch.
    parked = dict(conn.execute(
        "SELECT order_id, MIN(seq) FROM outbox INDEXED BY outbox_parked"
        " WHERE state = 'parked' AND order_id IS NOT NULL GROUP BY order_id"))
    seen: set[str] = set(busy_orders)
    chosen: list[int] = []
    budget = max(max_records * _SCAN_FACTOR, 1000)
    for seq, order_id in conn.execute(_UNSENT):
        budget -= 1
        if budget < 0:
            break
        if order_id is not None:
            if order_id in seen:
                continue
            seen.add(order_id)
            held = parked.get(order_id)
            if held is not None and held < seq:
                continue
        if seq in busy_seqs:
            continue
        chosen.append(seq)
        if len(chosen) >= max_records:
            break
    batch: list[OutboxRecord] = []
    total = _BATCH_FRAME
    for chunk in chunks(chosen):
        sql = _CHOSEN.replace("@marks", ",".join("?" * len(chunk)))
        for seq, record_id, kind, order_id, created_at, body, size, attempts in conn.execute(
                sql, chunk):
            wire = _wire(seq, record_id, kind, order_id, created_at, body)
            cost = len(wire.encode("utf-8")) + 1
            if batch and total + cost > max_bytes:
                return batch
            batch.append(OutboxRecord(seq, record_id, kind, order_id, created_at, body, size,
                                      attempts, "pending", wire))
            total += cost
    return batch


def _update(conn: sqlite3.Connection, record_ids: Iterable[str] | Iterable[int],
            assignments: str, only_state: str, params: tuple[Any, ...], *,
            key: str = "record_id") -> int:
    """UPDATE the given records in chunks (SQLite caps bound parameters); rows changed."""
    changed = 0
    for chunk in chunks(record_ids):
        marks = ",".join("?" * len(chunk))
        cur = query(conn,
            f"UPDATE outbox SET {assignments} WHERE {key} IN ({marks}) AND {only_state}",
            (*params, *chunk),
        )
        changed += cur.rowcount
    return changed


def mark_accepted(conn: sqlite3.Connection, record_ids: Iterable[str], at: datetime) -> int:
    """The upstream listed these ids in a 200: they are done. Call only after that answer.
    (By id: a scan, for tools and tests; the sender marks by seq.)"""
    return _accepted(conn, record_ids, at, key="record_id")


def mark_accepted_seqs(conn: sqlite3.Connection, seqs: Iterable[int], at: datetime) -> int:
    """`mark_accepted` by seq (the sender's way: a primary-key lookup per record)."""
    return _accepted(conn, seqs, at, key="seq")


def _accepted(conn: sqlite3.Connection, keys: Iterable[str] | Iterable[int], at: datetime, *,
              key: str) -> int:
    stamp = rfc3339_ms(at)
    # A superseded record the upstream took anyway is accepted too: it is done either way.
    # Its body is dropped (confirmations keep theirs until retention: timeline evidence):
    # nothing reads it again, and rewriting a row rewrites its whole body, overflow pages
    # included, so an emptied row is the cheaper write (issue 12).
    changed = _update(conn, keys, "state = 'accepted', accepted_at = ?, last_error = NULL, "
                      + _DROP_BODY, "state != 'accepted'", (stamp,), key=key)
    if changed:
        kv.put(conn, _KV_LAST_SUCCESS, stamp)
    return changed


def mark_failed(conn: sqlite3.Connection, record_ids: Iterable[str], error: str) -> int:
    """A send of these records failed in a way worth retrying; they stay pending. (By id: a
    scan, for tools and tests; the sender marks by seq.)"""
    return _failed(conn, record_ids, error, key="record_id")


def mark_failed_seqs(conn: sqlite3.Connection, seqs: Iterable[int], error: str) -> int:
    """`mark_failed` by seq (the sender's way, the primary key)."""
    return _failed(conn, seqs, error, key="seq")


def _failed(conn: sqlite3.Connection, keys: Iterable[str] | Iterable[int], error: str, *,
            key: str) -> int:
    return _update(conn, keys, "attempts = attempts + 1, last_error = ?",
                   "state = 'pending'", (error[:500],), key=key)


def park(conn: sqlite3.Connection, record_ids: Iterable[str], error: str, at: datetime) -> int:
    """The upstream refuses these records themselves: keep them aside for the operator."""
    return _park(conn, record_ids, error, at, key="record_id")


def park_seqs(conn: sqlite3.Connection, seqs: Iterable[int], error: str, at: datetime) -> int:
    """`park` by seq (the sender's way)."""
    return _park(conn, seqs, error, at, key="seq")


def _park(conn: sqlite3.Connection, keys: Iterable[str] | Iterable[int], error: str,
          at: datetime, *, key: str) -> int:
    return _update(conn, keys,
                   "state = 'parked', parked_at = ?, attempts = attempts + 1, last_error = ?",
                   "state = 'pending'", (rfc3339_ms(at), error[:500]), key=key)


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
    # Only records written before the cutoff can be past it (a record is accepted after it
    # was written): the scan stops at the first newer seq instead of reading the table (the
    # states it looks at are in no index, to keep every write cheap).
    first_new = query(conn,
        "SELECT seq FROM outbox WHERE created_at >= ? ORDER BY seq LIMIT 1", (cutoff,)
    ).fetchone()
    bound = int(first_new[0]) if first_new is not None else (1 << 62)
    deleted = query(conn,
        "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE seq < ? AND ("
        " (state = 'accepted' AND kind != 'confirmation' AND accepted_at < ?)"
        " OR (state = 'superseded' AND created_at < ?)) LIMIT ?)",
        (bound, cutoff, cutoff, cap),
    ).rowcount
    emptied = query(conn,
        "UPDATE outbox SET body = ?, size = ? WHERE seq IN (SELECT seq FROM outbox WHERE"
        " seq < ? AND state = 'accepted' AND kind = 'confirmation' AND accepted_at < ?"
        " AND body != ? LIMIT ?)",
        (EMPTY_BODY, len(EMPTY_BODY), bound, cutoff, EMPTY_BODY, cap),
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
    for chunk in chunks(victims):
        query(conn,
            f"DELETE FROM outbox WHERE seq IN ({','.join('?' * len(chunk))})", chunk
        )
    return len(victims)


def stats(conn: sqlite3.Connection, now: datetime) -> OutboxStats:
    counts = dict(
        query(conn, "SELECT state, COUNT(*) FROM outbox GROUP BY state").fetchall()
    )
    # Each through its partial index: the unsent and parked records, not the whole table.
    oldest = query(conn,
        "SELECT created_at FROM outbox WHERE seq = (SELECT MIN(m) FROM ("
        " SELECT MIN(seq) AS m FROM outbox WHERE state = 'pending'"
        " UNION ALL SELECT MIN(seq) FROM outbox WHERE state = 'parked'))"
    ).fetchone()
    blocked = query(conn,
        "SELECT COUNT(*) AS n FROM outbox AS o"
        " JOIN (SELECT order_id, MIN(seq) AS first FROM outbox WHERE state = 'parked'"
        "       AND order_id IS NOT NULL GROUP BY order_id) AS p ON p.order_id = o.order_id"
        " WHERE o.state = 'pending' AND o.seq > p.first"
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
        "SELECT record_id, created_at FROM outbox INDEXED BY outbox_confirmations"
        " WHERE order_id = ? AND kind = 'confirmation' ORDER BY seq LIMIT 1",
        (order_id,)).fetchone()
    return None if row is None else Confirmation(str(row["record_id"]), str(row["created_at"]))


def make_durable_point(conn: sqlite3.Connection, at: datetime) -> int:
    """One durable write: with it, everything committed before is on disk too. Returns the
    highest seq written so far, which that covers."""
    kv.put(conn, "outbox_durable_point", rfc3339_ms(at))
    row = query(conn, "SELECT MAX(seq) AS top FROM outbox").fetchone()
    return int(row["top"] or 0)
