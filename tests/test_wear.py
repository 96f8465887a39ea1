"""Storage wear settings (issue 12): what `_tune` gives a new file and an older one."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from edge.store.db import PAGE_SIZE, WAL_CHECKPOINT_BYTES, WAL_SIZE_LIMIT_BYTES, connect_sync


def pragmas(conn: sqlite3.Connection) -> dict[str, object]:
    return {name: conn.execute(f"PRAGMA {name}").fetchone()[0] for name in (
        "page_size", "journal_mode", "synchronous", "wal_autocheckpoint", "journal_size_limit")}


def test_a_new_file_gets_small_pages_and_a_larger_wal_with_full_sync(tmp_path: Path) -> None:
    conn = connect_sync(tmp_path / "kitchen-edge.db")
    try:
        assert pragmas(conn) == {
            "page_size": PAGE_SIZE, "journal_mode": "wal", "synchronous": 2,  # FULL
            "wal_autocheckpoint": WAL_CHECKPOINT_BYTES // PAGE_SIZE,
            "journal_size_limit": WAL_SIZE_LIMIT_BYTES,
        }
    finally:
        conn.close()


def test_an_older_file_keeps_its_pages_and_checkpoints_at_the_same_wal_size(
    tmp_path: Path,
) -> None:
    path = tmp_path / "kitchen-edge.db"
    old = sqlite3.connect(str(path))
    old.execute("PRAGMA page_size=4096")
    old.execute("PRAGMA journal_mode=WAL")
    old.execute("CREATE TABLE before_us (x)")
    old.close()
    conn = connect_sync(path)
    try:
        got = pragmas(conn)
        assert got["page_size"] == 4096
        assert got["wal_autocheckpoint"] == WAL_CHECKPOINT_BYTES // 4096
        assert got["synchronous"] == 2
    finally:
        conn.close()


def test_an_older_outbox_migrates_to_the_partial_indexes_and_sends_the_same(
    tmp_path: Path,
) -> None:
    """A file from before the outbox's partial indexes (schema 8) keeps its records, states
    and seq counter, and the sender picks the same heads from it."""
    from datetime import UTC, datetime

    from edge.store import outbox
    from edge.store.migrate import migrations

    path = tmp_path / "kitchen-edge.db"
    old = sqlite3.connect(str(path), isolation_level=None)
    old.execute("PRAGMA journal_mode=WAL")
    steps = [m for m in migrations() if m[0] <= 8]
    for version, _name, sql in steps:
        old.executescript(f"BEGIN;\n{sql}\nPRAGMA user_version = {version};\nCOMMIT;")
    rows = [("confirmation:o1", "confirmation", "o1", "pending"),
            ("print_job:o1/new/grill:queued", "print_job", "o1", "accepted"),
            ("print_job:o1/new/grill:printed", "print_job", "o1", "pending"),
            ("confirmation:o2", "confirmation", "o2", "parked"),
            ("status:o2:a", "status", "o2", "pending"),
            ("confirmation:o3", "confirmation", "o3", "accepted")]
    for record_id, kind, order_id, state in rows:
        old.execute("INSERT INTO outbox (record_id, kind, order_id, created_at, body, size,"
                    " state) VALUES (?, ?, ?, '2026-12-01T10:00:00.000Z', '{}', 2, ?)",
                    (record_id, kind, order_id, state))
    old.execute("DELETE FROM outbox WHERE record_id = 'confirmation:o3'")  # compacted
    old.close()

    conn = connect_sync(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] >= 9
        batch = outbox.next_batch(conn, max_records=10, max_bytes=1 << 20)
        # o1's head is its confirmation; o2 waits behind its parked record.
        assert [r.record_id for r in batch] == ["confirmation:o1"]
        outbox.mark_accepted_seqs(conn, [batch[0].seq], datetime.now(UTC))
        assert [r.record_id for r in outbox.next_batch(
            conn, max_records=10, max_bytes=1 << 20)] == ["print_job:o1/new/grill:printed"]
        assert outbox.stats(conn, datetime.now(UTC)).blocked == 1
        # The seq counter carried on past the compacted record.
        seq = outbox.add_record(conn, kind="status", record_id="status:o1:b", order_id="o1",
                                body={}, created_at=datetime.now(UTC))
        assert seq == 7
    finally:
        conn.close()


def test_job_lookups_by_state_read_partial_indexes_only(tmp_path: Path) -> None:
    """No index holds the settled jobs (issue 12: print_jobs_by_state moved an entry on every
    state change); each lookup by a passing state reads that state's partial index."""
    conn = connect_sync(tmp_path / "kitchen-edge.db")
    try:
        names = {r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='index' AND tbl_name='print_jobs'")}
        assert "print_jobs_by_state" not in names
        plans = {
            "SELECT job_key FROM print_jobs WHERE state='sending'": "print_jobs_sending",
            "SELECT job_key, order_id FROM print_jobs WHERE state='waiting' "
            "AND wait_reason='scheduled' AND not_before <= '2026'": "print_jobs_waiting",
            "SELECT (SELECT COUNT(*) FROM print_jobs WHERE state = 'queued' "
            "AND station_id IN ('a')) + (SELECT COUNT(*) FROM print_jobs "
            "WHERE state = 'sending' AND station_id IN ('a'))": "print_jobs_queue",
        }
        for sql, index in plans.items():
            plan = " ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql))
            assert index in plan, (sql, plan)
    finally:
        conn.close()


def test_seq_is_never_given_again_after_the_newest_records_are_deleted(tmp_path: Path) -> None:
    """Without AUTOINCREMENT (issue 12) the floor kept by the delete trigger holds seq up
    (CONTRACT section 7), and no transaction writes sqlite_sequence for the outbox."""
    from datetime import UTC, datetime

    from edge.store import outbox

    conn = connect_sync(tmp_path / "kitchen-edge.db")
    try:
        now = datetime.now(UTC)
        seqs = [outbox.add_record(conn, kind="status", record_id=f"status:o{n}:a",
                                  order_id=f"o{n}", body={}, created_at=now) for n in range(5)]
        assert seqs == [1, 2, 3, 4, 5]
        conn.execute("DELETE FROM outbox WHERE seq >= 4")   # the newest, then others
        assert outbox.add_record(conn, kind="status", record_id="status:o9:a", order_id="o9",
                                 body={}, created_at=now) == 6
        conn.execute("DELETE FROM outbox")                  # all of it, newest first or not
        assert outbox.add_record(conn, kind="status", record_id="status:o9:b", order_id="o9",
                                 body={}, created_at=now) == 7
        assert conn.execute("SELECT COUNT(*) FROM sqlite_sequence WHERE name = 'outbox'"
                            ).fetchone()[0] == 0
    finally:
        conn.close()
