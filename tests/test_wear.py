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
