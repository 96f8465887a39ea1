"""The store's file: versioned migrations, refusing a newer schema, durability settings."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from edge.store import SchemaTooNew, Store
from edge.store.migrate import latest_version
from tests.daemon import DaemonProc, write_config


async def test_new_file_is_migrated_wal_and_full_sync(tmp_path: Path) -> None:
    store = Store(tmp_path / "k.db")
    await store.open()
    try:
        version = await store.read(lambda c: c.execute("PRAGMA user_version").fetchone()[0])
        mode = await store.read(lambda c: c.execute("PRAGMA journal_mode").fetchone()[0])
        sync = await store.transact(
            lambda tx: tx.conn.execute("PRAGMA synchronous").fetchone()[0])
    finally:
        await store.close()
    assert version == latest_version() >= 1
    assert mode == "wal"
    assert sync == 2  # FULL


async def test_older_file_is_migrated_keeping_its_data(tmp_path: Path) -> None:
    path = tmp_path / "k.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE operator_notes (x TEXT)")   # a version-0 file with data
    conn.execute("INSERT INTO operator_notes VALUES ('keep me')")
    conn.commit()
    conn.close()
    store = Store(path)
    await store.open()
    try:
        kept = await store.read(lambda c: [tuple(r) for r in c.execute(
            "SELECT x FROM operator_notes")])
        tables = await store.read(lambda c: {r[0] for r in c.execute(
            "SELECT name FROM sqlite_master WHERE type='table'")})
    finally:
        await store.close()
    assert kept == [("keep me",)]
    assert {"events", "orders", "print_jobs", "outbox", "dead_letters"} <= tables


async def test_newer_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "k.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {latest_version() + 1}")
    conn.close()
    with pytest.raises(SchemaTooNew, match="newer kitchen-edge"):
        await Store(path).open()


def test_daemon_refuses_a_newer_database_with_a_clear_error(tmp_path: Path) -> None:
    d = DaemonProc(write_config(tmp_path / "station.yaml", broker_port=1))
    d.db.parent.mkdir(parents=True)
    conn = sqlite3.connect(d.db)
    conn.execute(f"PRAGMA user_version = {latest_version() + 5}")
    conn.close()
    d.start(wait_ready=False)
    assert d.proc is not None
    code = d.proc.wait(timeout=30)
    assert code != 0
    d.wait_log("daemon_failed", timeout=5,
               where=lambda line: "newer kitchen-edge" in line.get("error", ""))
