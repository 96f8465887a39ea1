"""Opening the database and running work on its single writer.

All writes go through `Store.transact(fn)`: `fn` receives a `Tx` (the sqlite3 connection and
the list of changes it makes) and runs on aiosqlite's worker thread as one unit, inside
BEGIN IMMEDIATE ... COMMIT. A batch of incoming events therefore costs one thread hop and one
fsync, not one per statement. After COMMIT, on the event loop, the changes go to the feed.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import aiosqlite

from edge.feed import C, Change, Feed
from edge.store.aiosqlite_compat import run_on_thread
from edge.store.migrate import SchemaTooNew, migrate
from edge.store.trouble import StorageHealth
from edge.store.tx import Reaction, Tx

DB_FILENAME = "kitchen-edge.db"

T = TypeVar("T")

__all__ = [
    "DB_FILENAME", "SchemaTooNew", "Store", "connect_sync", "open_readonly", "operator_read",
    "operator_write",
]


# Storage wear (issue 12; figures in scripts/bench/README.md). Every transaction appends each
# page it changed, whole, to the WAL, and a checkpoint copies each page once more into the
# database: bytes written follow the page size times the pages a transaction touches. With
# 1 KiB pages an order's transactions write about a third of what 4 KiB pages did. SQLite
# takes the page size only when it creates the file; an existing file keeps its own.
PAGE_SIZE = 1024
# Checkpoint when the WAL holds this much (SQLite's default is 1,000 pages): a page changed
# by many transactions between checkpoints is copied into the database once, not once per
# 1,000 pages of WAL. Recovery after a crash reads at most this much WAL.
WAL_CHECKPOINT_BYTES = 16 * 1024 * 1024
# After a checkpoint the WAL file is cut back to this; it only grows past it while a reader
# holds an old snapshot.
WAL_SIZE_LIMIT_BYTES = 32 * 1024 * 1024


def _tune(conn: sqlite3.Connection) -> None:
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit is on disk before we PUBACK the message it holds; power loss loses nothing.
    conn.execute("PRAGMA synchronous=FULL")
    page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
    conn.execute(f"PRAGMA wal_autocheckpoint={max(1000, WAL_CHECKPOINT_BYTES // page_size)}")
    conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT_BYTES}")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=10000")


def connect_sync(path: Path) -> sqlite3.Connection:
    """A plain connection with the store's settings, migrated; for tools and the writer."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    _tune(conn)
    migrate(conn, str(path))
    return conn


def open_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection for operator commands; safe while the daemon runs."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no database here (has the daemon ever run?)")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout=10000")
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    from edge.store.migrate import latest_version

    if version > latest_version():
        raise SchemaTooNew(f"{path}: schema version {version} is newer than this kitchen-edge")
    return conn


def operator_read(path: Path, fn: Callable[[sqlite3.Connection], T]) -> T:
    """`fn` on a read-only connection, in one read transaction (a consistent view)."""
    conn = open_readonly(path)
    try:
        conn.execute("BEGIN")
        try:
            return fn(conn)
        finally:
            conn.execute("ROLLBACK")
    finally:
        conn.close()


def operator_write(path: Path, fn: Callable[[sqlite3.Connection], T]) -> T:
    """One short write transaction from an operator command, safe while the daemon runs
    (both sides wait on busy_timeout). The file must exist at this kitchen-edge's schema."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no database here (has the daemon ever run?)")
    conn = sqlite3.connect(str(path), isolation_level=None, timeout=10.0)
    try:
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout=10000")
        from edge.store.migrate import latest_version

        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > latest_version():
            raise SchemaTooNew(
                f"{path}: schema version {version} is newer than this kitchen-edge")
        if version < latest_version():
            raise RuntimeError(
                f"{path}: schema version {version} is older than this kitchen-edge's "
                f"{latest_version()}; start the daemon once to migrate it")
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result
    finally:
        conn.close()


class Store:
    """The daemon's handle on its database: one writer connection, one reader connection."""

    def __init__(self, path: Path, feed: Feed | None = None) -> None:
        self.path = path
        self.feed = feed if feed is not None else Feed()
        self._reactions: list[tuple[type[Change], Reaction]] = []
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        # Whether the disk takes writes (`edge.store.trouble`): told by every transaction.
        self.disk = StorageHealth(path.parent, transact=self.transact)

    def react(self, kind: type[C], fn: Callable[[Tx, C], None]) -> None:
        """Run `fn(tx, change)` inside every write transaction, for each change of `kind`
        that commits, before COMMIT (see `edge.store.tx`). Register at build time."""
        self._reactions.append((kind, fn))

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        writer = aiosqlite.connect(str(self.path), isolation_level=None)
        await writer
        reader = aiosqlite.connect(str(self.path), isolation_level=None)
        try:
            def prepare(conn: sqlite3.Connection) -> None:
                _tune(conn)
                migrate(conn, str(self.path))

            await self._run(writer, prepare)
            await reader
            await self._run(reader, _tune)
        except BaseException:
            await writer.close()
            raise
        self._writer, self._reader = writer, reader

    async def close(self) -> None:
        await self.disk.close()
        for conn in (self._reader, self._writer):
            if conn is not None:
                await conn.close()
        self._writer = self._reader = None

    @staticmethod
    async def _run(conn: aiosqlite.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await run_on_thread(conn, fn)

    async def transact(self, fn: Callable[[Tx], T], *, durable: bool = True) -> T:
        """Run `fn` inside one IMMEDIATE transaction on the writer; commit, or roll back.
        Once committed, the changes `fn` emitted are published to the feed.

        `durable=False` commits without waiting for the disk (WAL, synchronous=NORMAL): a
        process crash keeps it, a power cut may lose it, and the next durable commit makes it
        durable too. Only for writes whose loss is safe, such as marking a ticket printed
        (lost, the ticket prints again saying MAY BE DUPLICATE)."""
        if self._writer is None:
            raise RuntimeError("store is not open")

        tx: Tx | None = None

        def unit(conn: sqlite3.Connection) -> T:
            nonlocal tx
            if not durable:
                conn.execute("PRAGMA synchronous=NORMAL")
            try:
                conn.execute("BEGIN IMMEDIATE")
                tx = Tx(conn, self._reactions)
                try:
                    result = fn(tx)
                    tx.react()
                    conn.execute("COMMIT")
                except BaseException:
                    # Also when COMMIT itself failed (disk full, I/O error): a connection
                    # left inside a transaction would refuse every later one.
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            finally:
                if not durable and not conn.in_transaction:
                    conn.execute("PRAGMA synchronous=FULL")
            return result

        try:
            result = await self._run(self._writer, unit)
        except sqlite3.Error as exc:
            # The disk refusing (full, I/O error) is told apart in one place: trouble.py.
            trouble = self.disk.refused(exc)
            if trouble is None:
                raise
            raise trouble from exc
        self.disk.committed()
        if tx is not None and tx.changes:
            self.feed.publish(tx.changes)
        return result

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` on the reader connection inside one read transaction (a consistent view)."""
        if self._reader is None:
            raise RuntimeError("store is not open")

        def unit(conn: sqlite3.Connection) -> T:
            conn.execute("BEGIN")
            try:
                return fn(conn)
            finally:
                conn.execute("ROLLBACK")

        return await self._run(self._reader, unit)

