"""The outbox rules on a real SQLite file: order, supersession, parking, compaction, budget."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from edge.store import outbox
from edge.store.db import connect_sync
from edge.store.outbox import add_record, next_batch
from edge.upstream import cli

T0 = datetime(2026, 11, 21, 18, 0, 0, tzinfo=UTC)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "kitchen-edge.db"


@pytest.fixture
def conn(db_path: Path) -> Iterator[sqlite3.Connection]:
    c = connect_sync(db_path)
    try:
        yield c
    finally:
        c.close()


def add(conn: sqlite3.Connection, record_id: str, kind: str, order_id: str | None,
        at: datetime = T0, **body: Any) -> int | None:
    return add_record(conn, kind=kind, record_id=record_id, order_id=order_id,
                      body=body or {"x": 1}, created_at=at)


def states(conn: sqlite3.Connection) -> dict[str, str]:
    return dict(conn.execute("SELECT record_id, state FROM outbox").fetchall())


def batch_ids(conn: sqlite3.Connection, max_records: int = 500,
              max_bytes: int = 1 << 20) -> list[str]:
    return [r.record_id for r in next_batch(conn, max_records=max_records, max_bytes=max_bytes)]


def test_seq_grows_and_record_ids_are_written_once(conn: sqlite3.Connection) -> None:
    first = add(conn, "confirmation:o1", "confirmation", "o1")
    second = add(conn, "print_job:o1:k1", "print_job", "o1")
    again = add(conn, "confirmation:o1", "confirmation", "o1", note="retry of the same change")
    assert first is not None and second == first + 1
    assert again is None
    body = conn.execute("SELECT body FROM outbox WHERE record_id='confirmation:o1'").fetchone()
    assert json.loads(body[0]) == {"x": 1}


def test_newer_status_supersedes_pending_ones_of_its_order_only(
    conn: sqlite3.Connection,
) -> None:
    add(conn, "confirmation:o1", "confirmation", "o1")
    add(conn, "status:o1:a", "status", "o1")
    add(conn, "status:o2:a", "status", "o2")
    add(conn, "status:o1:b", "status", "o1")
    add(conn, "status:o1:c", "status", "o1")
    assert states(conn) == {
        "confirmation:o1": "pending", "status:o1:a": "superseded", "status:o1:b": "superseded",
        "status:o1:c": "pending", "status:o2:a": "pending",
    }


def test_an_accepted_status_is_not_superseded(conn: sqlite3.Connection) -> None:
    add(conn, "status:o1:a", "status", "o1")
    outbox.mark_accepted(conn, ["status:o1:a"], T0)
    add(conn, "status:o1:b", "status", "o1")
    assert states(conn) == {"status:o1:a": "accepted", "status:o1:b": "pending"}


def test_batches_hold_one_record_per_order_in_seq_order(conn: sqlite3.Connection) -> None:
    add(conn, "confirmation:o1", "confirmation", "o1")
    add(conn, "print_job:o1:1", "print_job", "o1")
    add(conn, "confirmation:o2", "confirmation", "o2")
    add(conn, "site:heartbeat:1", "site", None)
    add(conn, "site:heartbeat:2", "site", None)
    add(conn, "print_job:o2:1", "print_job", "o2")
    add(conn, "status:o1:a", "status", "o1")
    assert batch_ids(conn) == [
        "confirmation:o1", "confirmation:o2", "site:heartbeat:1", "site:heartbeat:2"]
    outbox.mark_accepted(conn, ["confirmation:o1", "site:heartbeat:1"], T0)
    # o2's head was not accepted: its next record still waits.
    assert batch_ids(conn) == ["print_job:o1:1", "confirmation:o2", "site:heartbeat:2"]
    outbox.mark_accepted(conn, ["print_job:o1:1", "confirmation:o2", "site:heartbeat:2"], T0)
    assert batch_ids(conn) == ["print_job:o2:1", "status:o1:a"]
    assert batch_ids(conn, max_records=1) == ["print_job:o2:1"]


def test_superseded_records_neither_go_nor_hold_their_order_back(
    conn: sqlite3.Connection,
) -> None:
    add(conn, "status:o1:a", "status", "o1")
    add(conn, "status:o1:b", "status", "o1")
    add(conn, "print_job:o1:1", "print_job", "o1")
    assert batch_ids(conn) == ["status:o1:b"]
    outbox.mark_accepted(conn, ["status:o1:b"], T0)
    assert batch_ids(conn) == ["print_job:o1:1"]


def job(conn: sqlite3.Connection, order_id: str, station: str, state: str) -> int | None:
    key = f"{order_id}/new/{station}"
    return add(conn, f"print_job:{key}:{state}", "print_job", order_id, job_key=key,
               state=state)


def test_a_newer_print_job_record_supersedes_the_unsent_ones_of_its_job_only(
    conn: sqlite3.Connection,
) -> None:
    add(conn, "confirmation:o1", "confirmation", "o1")
    job(conn, "o1", "grill", "queued")
    job(conn, "o1", "bar", "queued")
    job(conn, "o2", "grill", "queued")
    job(conn, "o1", "grill", "sending")
    job(conn, "o1", "grill", "printed")
    assert states(conn) == {
        "confirmation:o1": "pending",
        "print_job:o1/new/grill:queued": "superseded",
        "print_job:o1/new/grill:sending": "superseded",
        "print_job:o1/new/grill:printed": "pending",
        "print_job:o1/new/bar:queued": "pending",       # another job of the order
        "print_job:o2/new/grill:queued": "pending",     # another order
    }
    # What goes is the newest state of each job, in seq order per order.
    sent = []
    while batch := next_batch(conn, max_records=500, max_bytes=1 << 20):
        sent.append([r.record_id for r in batch])
        outbox.mark_accepted(conn, [r.record_id for r in batch], T0)
    assert sent == [
        ["confirmation:o1", "print_job:o2/new/grill:queued"],
        ["print_job:o1/new/bar:queued"],
        ["print_job:o1/new/grill:printed"],
    ]
    seqs = dict(conn.execute("SELECT record_id, seq FROM outbox").fetchall())
    assert [seqs[r[0]] for r in sent if r[0].startswith("print_job:o1")] == sorted(
        seqs[r[0]] for r in sent if r[0].startswith("print_job:o1"))


def test_a_print_job_record_already_accepted_is_not_superseded(
    conn: sqlite3.Connection,
) -> None:
    job(conn, "o1", "grill", "queued")
    outbox.mark_accepted(conn, ["print_job:o1/new/grill:queued"], T0)
    job(conn, "o1", "grill", "printed")
    assert states(conn) == {"print_job:o1/new/grill:queued": "accepted",
                            "print_job:o1/new/grill:printed": "pending"}


def test_a_superseded_record_in_flight_is_never_sent_after_the_newer_one(
    conn: sqlite3.Connection,
) -> None:
    """The sender has `queued` in flight when `printed` supersedes it: `printed` waits for
    the answer (its order is busy), and a failed answer does not bring `queued` back."""
    job(conn, "o1", "grill", "queued")
    (in_flight,) = next_batch(conn, max_records=500, max_bytes=1 << 20)
    job(conn, "o1", "grill", "printed")
    assert next_batch(conn, max_records=500, max_bytes=1 << 20, busy_orders={"o1"}) == []
    outbox.mark_failed(conn, [in_flight.record_id], "HTTP 503")   # the answer: try again
    assert batch_ids(conn) == ["print_job:o1/new/grill:printed"]
    assert states(conn)["print_job:o1/new/grill:queued"] == "superseded"
    # Had it been taken after all, it counts as accepted: the upstream has it.
    assert outbox.mark_accepted_seqs(conn, [in_flight.seq], T0) == 1


def test_busy_orders_and_records_are_left_out_of_the_next_batch(
    conn: sqlite3.Connection,
) -> None:
    add(conn, "confirmation:o1", "confirmation", "o1")
    add(conn, "print_job:o1:1", "print_job", "o1")
    add(conn, "confirmation:o2", "confirmation", "o2")
    heartbeat = add(conn, "site:heartbeat:1", "site", None)
    add(conn, "site:heartbeat:2", "site", None)
    ids = [r.record_id for r in next_batch(conn, max_records=500, max_bytes=1 << 20,
                                           busy_orders={"o1"}, busy_seqs={heartbeat or 0})]
    # o1's head is in flight: neither it nor its next record goes; nor the heartbeat out.
    assert ids == ["confirmation:o2", "site:heartbeat:2"]


def test_accepting_by_seq_is_accepting_by_id(conn: sqlite3.Connection) -> None:
    first = add(conn, "confirmation:o1", "confirmation", "o1")
    add(conn, "status:o1:a", "status", "o1")
    assert first is not None
    assert outbox.mark_accepted_seqs(conn, [first], T0 + timedelta(seconds=5)) == 1
    assert outbox.mark_accepted_seqs(conn, [first], T0) == 0
    assert states(conn) == {"confirmation:o1": "accepted", "status:o1:a": "pending"}
    assert outbox.stats(conn, T0).last_success == "2026-11-21T18:00:05.000Z"
    assert outbox.first_confirmation(conn, "o1") is not None
    assert outbox.first_confirmation(conn, "o2") is None


def test_bodies_are_emptied_once_accepted_or_superseded_but_a_confirmation_keeps_its_own(
    conn: sqlite3.Connection,
) -> None:
    """Issue 12: a row leaving the unsent records is rewritten anyway; without its body the
    rewrite is one small page, not the body's overflow pages. Nothing reads those bodies."""
    add(conn, "confirmation:o1", "confirmation", "o1", to="+90 555 000 00 00")
    add(conn, "status:o1:a", "status", "o1", steps=["x" * 3000])
    add(conn, "status:o1:b", "status", "o1", steps=["y" * 3000])
    outbox.mark_accepted(conn, ["confirmation:o1", "status:o1:b"], T0)
    bodies = {r[0]: (json.loads(r[1]), r[2]) for r in conn.execute(
        "SELECT record_id, body, size FROM outbox")}
    assert bodies["confirmation:o1"][0] == {"to": "+90 555 000 00 00"}
    assert bodies["status:o1:a"] == ({}, 2)      # superseded
    assert bodies["status:o1:b"] == ({}, 2)      # accepted


def test_the_outbox_indexes_hold_only_waiting_records(conn: sqlite3.Connection) -> None:
    """Issue 12: accepted records, the bulk of the table, are in no index (confirmations in
    theirs); every index is partial, over the unsent, parked or confirmation records. No
    unique index on record_id (no autoindex): only confirmations rely on uniqueness."""
    indexes = dict(conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'outbox'"
    ).fetchall())
    assert set(indexes) == {"outbox_unsent", "outbox_unsent_by_order", "outbox_parked",
                            "outbox_confirmations"}
    assert all(" WHERE state = " in sql or " WHERE kind = 'confirmation'" in sql
               for sql in indexes.values())
    # The sender's scan and the superseding lookups use them, not a table scan.
    plans = [
        " ".join(str(r[3]) for r in conn.execute("EXPLAIN QUERY PLAN " + sql, args))
        for sql, args in (
            (outbox._UNSENT, ()),
            ("UPDATE outbox SET state = 'superseded' WHERE order_id = ? AND state = 'pending'"
             " AND seq < ? AND kind = 'status'", ("o1", 5)),
        )
    ]
    assert "outbox_unsent" in plans[0] and "outbox_unsent_by_order" in plans[1], plans


def test_a_parked_record_holds_back_its_order_and_nothing_else(
    conn: sqlite3.Connection,
) -> None:
    add(conn, "confirmation:o1", "confirmation", "o1")
    add(conn, "print_job:o1:1", "print_job", "o1")
    add(conn, "confirmation:o2", "confirmation", "o2")
    assert outbox.park(conn, ["confirmation:o1"], "HTTP 400: bad phone", T0) == 1
    assert batch_ids(conn) == ["confirmation:o2"]
    summary = outbox.stats(conn, T0)
    assert (summary.parked, summary.backlog, summary.blocked) == (1, 2, 1)
    assert outbox.retry_parked(conn) == 1
    assert batch_ids(conn) == ["confirmation:o1", "confirmation:o2"]


def test_batch_bytes_are_bounded_but_a_big_record_still_goes_alone(
    conn: sqlite3.Connection,
) -> None:
    for i in range(10):
        add(conn, f"r{i}", "print_job", f"o{i}", blob="x" * 1000)
    add(conn, "huge", "print_job", "o-huge", blob="y" * 5000)
    batch = next_batch(conn, max_records=500, max_bytes=3500)
    wire = '{"records":[' + ",".join(r.wire() for r in batch) + "]}"
    assert len(batch) == 3 and len(wire.encode()) <= 3500
    outbox.mark_accepted(conn, [f"r{i}" for i in range(10)], T0)
    assert batch_ids(conn, max_bytes=3500) == ["huge"]


def test_the_wire_form_is_the_contract_record(conn: sqlite3.Connection) -> None:
    seq = add(conn, "confirmation:qr-7001", "confirmation", "qr-7001", name="Lülə")
    (record,) = next_batch(conn, max_records=10, max_bytes=1 << 20)
    assert json.loads(record.wire()) == {
        "record_id": "confirmation:qr-7001", "kind": "confirmation", "order_id": "qr-7001",
        "seq": seq, "created_at": "2026-11-21T18:00:00.000Z", "body": {"name": "Lülə"},
    }


def test_failures_count_attempts_and_acceptance_records_last_success(
    conn: sqlite3.Connection,
) -> None:
    add(conn, "a", "print_job", "o1")
    outbox.mark_failed(conn, ["a"], "ConnectError")
    outbox.mark_failed(conn, ["a"], "HTTP 503")
    row = conn.execute("SELECT attempts, last_error, state FROM outbox").fetchone()
    assert tuple(row) == (2, "HTTP 503", "pending")
    assert outbox.stats(conn, T0 + timedelta(seconds=30)).oldest_unsent_age_s == 30.0
    outbox.mark_accepted(conn, ["a"], T0 + timedelta(seconds=40))
    summary = outbox.stats(conn, T0 + timedelta(seconds=50))
    assert summary.last_success == "2026-11-21T18:00:40.000Z"
    assert summary.backlog == 0 and summary.oldest_unsent_age_s is None


def test_compaction_forgets_accepted_records_after_retention(conn: sqlite3.Connection) -> None:
    add(conn, "confirmation:o1", "confirmation", "o1", to="+994 50 123 45 67")
    add(conn, "print_job:o1:1", "print_job", "o1")
    add(conn, "status:o1:a", "status", "o1")
    add(conn, "status:o1:b", "status", "o1")          # supersedes a
    add(conn, "print_job:o2:1", "print_job", "o2")    # stays pending
    add(conn, "print_job:o3:1", "print_job", "o3")
    outbox.park(conn, ["print_job:o3:1"], "HTTP 422", T0)
    outbox.mark_accepted(conn, ["confirmation:o1", "print_job:o1:1"], T0)
    outbox.mark_accepted(conn, ["status:o1:b"], T0 + timedelta(hours=2))

    assert outbox.compact(conn, older_than=T0) == 0  # nothing is older than T0
    touched = outbox.compact(conn, older_than=T0 + timedelta(hours=1))
    assert touched == 3  # print_job:o1:1 and status:o1:a deleted, the confirmation emptied
    assert states(conn) == {
        "confirmation:o1": "accepted", "status:o1:b": "accepted",
        "print_job:o2:1": "pending", "print_job:o3:1": "parked",
    }
    # The confirmation stays as timeline evidence, without the contact it carried.
    body = conn.execute("SELECT body FROM outbox WHERE record_id='confirmation:o1'").fetchone()
    assert body[0] == "{}"
    assert outbox.compact(conn, older_than=T0 + timedelta(hours=1)) == 0


def test_compaction_in_bounded_steps(conn: sqlite3.Connection) -> None:
    for i in range(25):
        add(conn, f"p{i}", "print_job", f"o{i}")
    outbox.mark_accepted(conn, [f"p{i}" for i in range(25)], T0)
    steps = []
    while (n := outbox.compact(conn, older_than=T0 + timedelta(seconds=1), limit=10)):
        steps.append(n)
    assert steps == [10, 10, 5]


def test_budget_policy_drops_in_order_and_never_drops_confirmations_or_jobs(
    conn: sqlite3.Connection,
) -> None:
    blob = "z" * 2000
    for i in range(5):
        add(conn, f"confirmation:o{i}", "confirmation", f"o{i}", blob=blob)
        add(conn, f"print_job:o{i}", "print_job", f"o{i}", blob=blob)
    outbox.mark_accepted(conn, ["confirmation:o0", "print_job:o0"], T0)
    add(conn, "status:o1:a", "status", "o1", blob=blob)
    add(conn, "status:o1:b", "status", "o1", blob=blob)  # a is superseded
    # A parked status with a newer one behind it: moot, the first status to go.
    add(conn, "status:o2:a", "status", "o2", blob=blob)
    outbox.park(conn, ["status:o2:a"], "HTTP 400", T0)
    add(conn, "status:o2:b", "status", "o2", blob=blob)
    total = outbox.outbox_bytes(conn)

    # Under budget: nothing happens.
    report = outbox.enforce_budget(conn, budget_bytes=total)
    assert (report.compacted, report.dropped_superseded, report.dropped_status) == (0, 0, 0)

    # Slightly over: compacting the accepted records is enough.
    report = outbox.enforce_budget(conn, budget_bytes=total - 1000)
    assert report.compacted == 2 and report.dropped_superseded == 0
    assert not report.over_budget
    assert "print_job:o0" not in states(conn)
    assert states(conn)["confirmation:o0"] == "accepted"

    # Far over: superseded, then moot statuses go; confirmations and print jobs stay, and the
    # outbox stays over budget (logged) rather than losing them.
    report = outbox.enforce_budget(conn, budget_bytes=5000)
    assert report.dropped_superseded == 1 and report.dropped_status == 1
    assert report.over_budget
    left = states(conn)
    assert "status:o1:a" not in left and "status:o2:a" not in left
    assert left["status:o1:b"] == "pending" and left["status:o2:b"] == "pending"
    for i in range(5):
        assert f"confirmation:o{i}" in left
    assert all(f"print_job:o{i}" in left for i in range(1, 5))
    # And the kitchen keeps writing.
    assert add(conn, "confirmation:o9", "confirmation", "o9") is not None


def test_operator_commands_work_beside_a_running_writer(db_path: Path) -> None:
    writer = connect_sync(db_path)
    add(writer, "confirmation:o1", "confirmation", "o1")
    add(writer, "print_job:o1:1", "print_job", "o1")
    add(writer, "confirmation:o2", "confirmation", "o2")
    outbox.park(writer, ["confirmation:o1"], "HTTP 400: phone number invalid", T0)

    text = cli.outbox_status(db_path, as_json=False)
    assert "backlog: 2 pending (1 held back by parked records)" in text
    assert "parked: 1" in text and "confirmation:o1" in text and "phone number invalid" in text
    doc = json.loads(cli.outbox_status(db_path, as_json=True))
    assert doc["parked"] == 1 and doc["backlog"] == 2 and doc["blocked"] == 1
    assert doc["parked_records"][0]["record_id"] == "confirmation:o1"
    assert "body" not in doc["parked_records"][0]

    assert cli.retry_parked(db_path) == 1
    assert cli.retry_parked(db_path) == 0
    # The daemon's connection sees it at once.
    assert states(writer)["confirmation:o1"] == "pending"
    writer.close()


def test_operator_commands_refuse_a_missing_database(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        cli.retry_parked(tmp_path / "nope.db")
    with pytest.raises(FileNotFoundError):
        cli.outbox_status(tmp_path / "nope.db", as_json=True)
