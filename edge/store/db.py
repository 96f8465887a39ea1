"""Opening the database and running work on its single writer.

All writes go through `Store.transact(fn)`: `fn` receives a `Tx` (the sqlite3 connection and
the list of changes it makes) and runs on aiosqlite's worker thread as one unit. After
COMMIT, on the event loop, the changes go to the feed.

The writer is one thread and every durable COMMIT is an fsync, so units are scheduled, not
run in arrival order:

- Priority. A ticket's claim and its marks (`Priority.PRINT`) go before orders coming in
  (`INTAKE`, then `APPLY`), which go before everything else (`BACKGROUND`: outbox sends,
  screens, housekeeping). Within a priority, first come first served.
- Group commit. Units waiting together run in one BEGIN IMMEDIATE ... COMMIT, each inside its
  own SAVEPOINT: a unit that raises is rolled back alone and its caller gets the exception;
  the others commit. One fsync covers them all: on this kind of disk the fsync is most of a
  durable commit's cost, so small units of any priority share it. While a ticket's claim
  waits, only an apply pass (which can hold a chunk of orders) is left for the next group.
- Every caller gets its result only once the COMMIT holding its unit has returned, durable
  (synchronous=FULL) unless every unit of the group asked for `durable=False`.
- `synced()` waits until everything committed so far is on disk, without a commit of its
  own: the intake stores a batch with `durable=False`, wakes the applier, and sends its
  PUBACKs after `synced()`. A ticket's claim, durable, follows within a few milliseconds and
  its one fsync serves both; only when no durable unit comes within `SYNC_LINGER` does the
  writer fsync the WAL itself. So the print path pays one fsync, not two, and the broker still
  forgets nothing that is not on disk.
- The WAL is checkpointed off the writer: the writer has `wal_autocheckpoint=0`, and a third
  connection checkpoints (PASSIVE) every `CHECKPOINT_EVERY` seconds while commits come in, so
  no ticket's COMMIT pays for copying the WAL into the database. Seldom, for the storage's
  sake: a page changed by many transactions in between is copied into the database once.
  Under writes that never stop, that checkpoint never copies the whole WAL, and SQLite only
  starts a WAL again from its beginning once it has: past `WAL_SIZE_LIMIT_BYTES` the writer
  copies the few frames left itself between two groups (never before a waiting claim).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import heapq
import itertools
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any, TypeVar, cast

import aiosqlite
import structlog

from edge.feed import C, Change, Feed
from edge.store.aiosqlite_compat import run_on_thread
from edge.store.migrate import SchemaTooNew, migrate
from edge.store.trouble import StorageHealth
from edge.store.tx import Reaction, Tx

DB_FILENAME = "kitchen-edge.db"

log = structlog.get_logger(__name__)

T = TypeVar("T")

__all__ = [
    "DB_FILENAME", "MAX_GROUP", "Priority", "SchemaTooNew", "Store", "connect_sync",
    "open_readonly", "operator_read", "operator_write",
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
    # Temporary files in memory: every unit of a group runs in a SAVEPOINT, whose journal (the
    # pages it changed, as they were before) spilled to a deleted file in /var/tmp once past
    # 64 KiB, about as many bytes per order as the WAL itself (issue 12). That journal only
    # serves a ROLLBACK TO inside the transaction and is never needed after a crash, so
    # keeping it in memory changes nothing about what is durable.
    conn.execute("PRAGMA temp_store=MEMORY")
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


class Priority(IntEnum):
    """Which waiting write goes first on the single writer (lower first)."""

    PRINT = 0        # a ticket's claim and marks: a cook is waiting for the paper
    INTAKE = 1       # orders made durable before their PUBACK (or a partner's answer)
    APPLY = 2        # stored orders turned into jobs: before the jobs can be claimed
    BACKGROUND = 3   # outbox sends, screens, operators, housekeeping


# Units in one group commit at most: a group is one transaction on the writer, and a ticket
# waiting behind it waits for all of it.
MAX_GROUP = 64
# How long background work alone waits for a unit of the print path to share a commit with.
BACKGROUND_LINGER = 0.02
# ... and only while the kitchen is busy: a unit of the print path or the intake came within
# this many seconds. In a quiet moment (the upstream draining a day's backlog after the WAN
# came back) nothing is coming to share with, and each wait would only slow the drain.
BUSY_WITHIN = 1.0
# How often the WAL is copied into the database, at most, while writes keep coming. Each
# checkpoint copies every page changed since the last one, however often it changed: the
# longer between them, the fewer bytes per order reach the storage (issue 12; the WAL then
# holds up to about this many seconds of writes, ~15 MiB at 20 orders/s, in line with
# WAL_CHECKPOINT_BYTES, which other connections, the operator's tools, go by).
CHECKPOINT_EVERY = 10.0
# How long `synced()` callers wait for a durable unit to share its fsync with before the writer
# fsyncs the WAL for them. A stored order's claim (durable) comes within a few milliseconds of
# its intake when a printer is free; this only delays the PUBACKs of what prints nothing, or
# prints later, by at most this much.
SYNC_LINGER = 0.005
_SAVEPOINT = "writer_unit"


@dataclass(eq=False)
class _Unit:
    fn: Callable[[Tx], Any]
    durable: bool
    priority: Priority
    seq: int
    future: asyncio.Future[Any]
    tx: Tx | None = None
    result: Any = None
    error: BaseException | None = None

    def __lt__(self, other: _Unit) -> bool:
        return (self.priority, self.seq) < (other.priority, other.seq)


def _kind(fn: Callable[..., Any]) -> str:
    inner = fn.func if isinstance(fn, functools.partial) else fn
    return str(getattr(inner, "__qualname__", type(inner).__name__))


class Store:
    """The daemon's handle on its database: one writer connection (scheduled, see the module
    docstring), one reader connection, and one that only checkpoints the WAL."""

    def __init__(self, path: Path, feed: Feed | None = None) -> None:
        self.path = path
        self.feed = feed if feed is not None else Feed()
        self._reactions: list[tuple[type[Change], Reaction]] = []
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        # Whether the disk takes writes (`edge.store.trouble`): told by every transaction.
        self.disk = StorageHealth(path.parent, transact=self.transact)
        self._checkpointer: aiosqlite.Connection | None = None
        self._waiting: list[_Unit] = []            # a heap, by (priority, seq)
        self._seq = itertools.count()
        self._drain: asyncio.Task[None] | None = None
        self._checkpoint: asyncio.Task[None] | None = None
        self._checkpoint_due: asyncio.TimerHandle | None = None
        self._arrived = asyncio.Event()     # a unit other than background work was queued
        self._foreground_at = float("-inf")  # when the last such unit was (loop time)
        self._closing = False
        # Groups committed, and the last of them known to be on disk (a durable commit or a
        # WAL fsync after it). `synced()` callers wait for a group number, in the order they
        # came (so their numbers only grow), with the loop time they came at.
        self._committed = 0
        self._synced = 0
        self._sync_waiters: collections.deque[tuple[int, float, asyncio.Future[None]]] = (
            collections.deque())
        # Figures for benches and tests: transactions run, units they held.
        self.groups = 0
        self.units = 0
        self.checkpoints = 0
        self.writer_checkpoints = 0
        self.durable_groups = 0
        # The checkpointer found the WAL past WAL_SIZE_LIMIT_BYTES: the writer copies the last
        # frames itself between two groups (see `checkpoint`).
        self._writer_checkpoint_due = False
        self.wal_syncs = 0          # fsyncs made for `synced()` callers, not by a durable commit
        # Units by the function that made them (its qualified name): what fills the writer.
        self.unit_kinds: collections.Counter[str] = collections.Counter()

    def react(self, kind: type[C], fn: Callable[[Tx, C], None]) -> None:
        """Run `fn(tx, change)` inside every write transaction, for each change of `kind`
        that commits, before COMMIT (see `edge.store.tx`). Register at build time."""
        self._reactions.append((kind, fn))

    async def open(self) -> None:
        self._closing = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        writer = aiosqlite.connect(str(self.path), isolation_level=None)
        await writer
        opened: list[aiosqlite.Connection] = [writer]
        try:
            def prepare(conn: sqlite3.Connection) -> None:
                _tune(conn)
                migrate(conn, str(self.path))
                # The writer never checkpoints: that would land inside some ticket's COMMIT.
                conn.execute("PRAGMA wal_autocheckpoint=0")

            await self._run(writer, prepare)
            reader = aiosqlite.connect(str(self.path), isolation_level=None)
            await reader
            opened.append(reader)
            await self._run(reader, _tune)
            checkpointer = aiosqlite.connect(str(self.path), isolation_level=None)
            await checkpointer
            opened.append(checkpointer)
            await self._run(checkpointer, _tune)
        except BaseException:
            for conn in opened:
                await conn.close()
            raise
        self._writer, self._reader, self._checkpointer = writer, reader, checkpointer

    async def close(self) -> None:
        # Units already handed in are carried out (their callers wait for them); then the
        # connections go.
        self._closing = True
        self._arrived.set()
        while self._drain is not None and not self._drain.done():
            await asyncio.shield(self._drain)
        if self._checkpoint_due is not None:
            self._checkpoint_due.cancel()
            self._checkpoint_due = None
        if self._checkpoint is not None:
            await asyncio.gather(self._checkpoint, return_exceptions=True)
        await self.disk.close()
        for conn in (self._checkpointer, self._reader, self._writer):
            if conn is not None:
                await conn.close()
        if self._writer is not None:
            log.info("store_closed", transactions=self.groups, units=self.units,
                     durable=self.durable_groups, checkpoints=self.checkpoints,
                     units_by_kind=dict(self.unit_kinds.most_common(12)))
        self._writer = self._reader = self._checkpointer = None

    @staticmethod
    async def _run(conn: aiosqlite.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await run_on_thread(conn, fn)

    async def transact(self, fn: Callable[[Tx], T], *, durable: bool = True,
                       priority: Priority = Priority.BACKGROUND) -> T:
        """Run `fn` as one unit on the writer: committed with the units waiting beside it, or
        rolled back alone if it raises (its exception is raised here). Returns once the
        COMMIT holding it has returned; its changes are then published to the feed, also if
        the caller was cancelled meanwhile.

        `durable=False` lets the unit commit without waiting for the disk (WAL,
        synchronous=NORMAL) when no unit beside it needs the disk: a process crash keeps it,
        a power cut may lose it, and the next durable commit makes it durable too. Only for
        writes whose loss is safe, such as marking a ticket printed (lost, the ticket prints
        again saying MAY BE DUPLICATE)."""
        return cast(T, await self.submit(fn, durable=durable, priority=priority))

    def submit(self, fn: Callable[[Tx], T], *, durable: bool = True,
               priority: Priority = Priority.BACKGROUND) -> asyncio.Future[T]:
        """`transact` for a caller that goes on meanwhile: `fn` is queued at once (before
        anything the caller queues next, at the same priority) and the future is answered
        as `transact` would return or raise."""
        if self._writer is None:
            raise RuntimeError("store is not open")
        loop = asyncio.get_running_loop()
        unit = _Unit(fn, durable, Priority(priority), next(self._seq), loop.create_future())
        heapq.heappush(self._waiting, unit)
        if unit.priority is not Priority.BACKGROUND:
            self._foreground_at = loop.time()
            self._arrived.set()
        self._ensure_drain()
        return unit.future

    async def synced(self, *, linger: bool = True) -> None:
        """Return once everything committed before this call is on disk: at the next durable
        commit, or a WAL fsync of the writer's own after `SYNC_LINGER` (at once with
        `linger=False`: no durable commit is expected, a backlog is being taken in). Raises
        StorageTrouble when the disk refuses the fsync: nothing may then be taken as durable
        (the caller leaves its messages unacknowledged, as for a refused write)."""
        target = self._committed
        if self._synced >= target:
            return
        if self._writer is None:
            raise RuntimeError("store is not open")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._sync_waiters.append((target, loop.time() - (0.0 if linger else SYNC_LINGER),
                                   future))
        self._ensure_drain()
        await future

    def _ensure_drain(self) -> None:
        if self._drain is None or self._drain.done():
            self._drain = asyncio.get_running_loop().create_task(
                self._run_waiting(), name="store-writer")

    def _next_group(self) -> list[_Unit]:
        group: list[_Unit] = []
        # While a ticket waits, an apply pass (up to a chunk of orders' worth of work) waits
        # for the next group; the small units ride along: the disk's fsync, not their SQL,
        # is what every one of them waits for, and one fsync serves them all.
        ticket_waits = self._waiting[0].priority is Priority.PRINT
        later: list[_Unit] = []
        while self._waiting and len(group) < MAX_GROUP:
            unit = heapq.heappop(self._waiting)
            if unit.future.done():            # its caller gave up before it ran: drop it
                continue
            if ticket_waits and unit.priority is Priority.APPLY:
                later.append(unit)
                continue
            group.append(unit)
        for unit in later:
            heapq.heappush(self._waiting, unit)
        return group

    async def _run_waiting(self) -> None:
        assert self._writer is not None
        writer = self._writer
        while self._waiting or self._sync_waiters:
            if not self._waiting:
                # Only `synced()` callers: a durable unit (a claim) is likely on its way, and
                # its fsync would serve them; else the writer fsyncs the WAL for them.
                linger = SYNC_LINGER - (asyncio.get_running_loop().time()
                                        - self._sync_waiters[0][1])
                if linger > 0 and not self._closing:
                    self._arrived.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._arrived.wait(), linger)
                if not self._waiting:
                    self.wal_syncs += 1
                    await self._sync_wal(writer)
                    continue
            if (self._waiting[0].priority is Priority.BACKGROUND and not self._closing
                    and asyncio.get_running_loop().time() - self._foreground_at < BUSY_WITHIN):
                # Only background work waiting: give the print path a moment to bring a
                # durable commit whose fsync it can share (and the sender more records per
                # request) rather than paying for an fsync of its own.
                self._arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), BACKGROUND_LINGER)
            if self._writer_checkpoint_due and self._waiting[0].priority is not Priority.PRINT:
                self._writer_checkpoint_due = False
                await self._checkpoint_on_writer(writer)
            group = self._next_group()
            if not group:
                continue
            durable = any(unit.durable for unit in group)
            try:
                await self._run(writer, functools.partial(self._commit_group, group, durable))
            except BaseException as exc:
                # Nothing of the group committed (COMMIT failed, or a unit broke the whole
                # transaction): every caller gets the error, the disk refusing told apart
                # (edge.store.trouble), each its own exception.
                for unit in group:
                    if not unit.future.done():
                        if isinstance(exc, asyncio.CancelledError):
                            unit.future.cancel()
                        else:
                            unit.future.set_exception(self._refused(exc))
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            self.disk.committed()
            self.groups += 1
            self.units += len(group)
            self._committed += 1
            self.durable_groups += durable
            for unit in group:
                self.unit_kinds[_kind(unit.fn)] += 1
            for unit in group:
                if unit.error is not None:
                    if not unit.future.done():
                        unit.future.set_exception(self._refused(unit.error))
                    continue
                if unit.tx is not None and unit.tx.changes:
                    self.feed.publish(unit.tx.changes)
                if not unit.future.done():
                    unit.future.set_result(unit.result)
            self._schedule_checkpoint()
            # `synced()` callers are served by the fsync of a durable group, or by one of
            # the writer's own once they have waited their linger (a stream of non-durable
            # work must not hold their PUBACKs). The WAL is fsynced after the group either
            # way: a durable COMMIT that changed nothing does not touch the WAL, and after
            # one that did, the file is clean and the fsync costs next to nothing.
            if self._sync_waiters and (durable or self._sync_overdue()):
                self.wal_syncs += not durable
                await self._sync_wal(writer)

    def _sync_overdue(self) -> bool:
        """A `synced()` caller has waited its linger already."""
        return bool(self._sync_waiters) and (
            asyncio.get_running_loop().time() - self._sync_waiters[0][1] >= SYNC_LINGER)

    def _now_synced(self, group: int) -> None:
        self._synced = max(self._synced, group)
        while self._sync_waiters and self._sync_waiters[0][0] <= self._synced:
            _, _, future = self._sync_waiters.popleft()
            if not future.done():
                future.set_result(None)

    async def _sync_wal(self, writer: aiosqlite.Connection) -> None:
        """fsync the WAL on the writer's thread, after its last COMMIT: the frames of every
        non-durable commit before it are then on disk, as a synchronous=FULL commit would
        have left them (SQLite's recovery takes every complete, checksummed frame)."""
        target = self._committed
        wal = f"{self.path}-wal"

        def sync(_: sqlite3.Connection) -> None:
            fd = os.open(wal, os.O_RDONLY)
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)

        try:
            await self._run(writer, sync)
        except OSError as exc:
            refused: BaseException = self.disk.refused(exc) or exc
            # Nothing committed since the last good fsync can be vouched for: every waiter
            # gets the trouble, and a later fsync is asked for afresh.
            while self._sync_waiters:
                _, _, future = self._sync_waiters.popleft()
                if not future.done():
                    future.set_exception(refused)
            return
        self._now_synced(target)

    def _refused(self, exc: BaseException) -> BaseException:
        """What a caller gets for `exc`: a StorageTrouble (the health degraded) when it is
        the disk refusing the write, `exc` itself otherwise."""
        if not isinstance(exc, sqlite3.Error):
            return exc
        trouble = self.disk.refused(exc)
        if trouble is None:
            return exc
        trouble.__cause__ = exc
        return trouble

    def _commit_group(self, group: list[_Unit], durable: bool,
                      conn: sqlite3.Connection) -> None:
        """On the writer's thread: the group's units in one transaction."""
        if not durable:
            conn.execute("PRAGMA synchronous=NORMAL")
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for unit in group:
                    self._run_unit(unit, conn)
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

    def _run_unit(self, unit: _Unit, conn: sqlite3.Connection) -> None:
        conn.execute(f"SAVEPOINT {_SAVEPOINT}")
        tx = Tx(conn, self._reactions)
        try:
            unit.result = unit.fn(tx)
            tx.react()
        except Exception as exc:
            if not conn.in_transaction:
                # SQLite rolled the whole transaction back itself (disk full, I/O error):
                # the units before this one are gone too. The group fails as one.
                raise
            conn.execute(f"ROLLBACK TO {_SAVEPOINT}")
            conn.execute(f"RELEASE {_SAVEPOINT}")
            unit.error = exc
            return
        conn.execute(f"RELEASE {_SAVEPOINT}")
        unit.tx = tx

    def _schedule_checkpoint(self) -> None:
        if self._checkpoint_due is not None or self._checkpointer is None:
            return
        loop = asyncio.get_running_loop()
        self._checkpoint_due = loop.call_later(CHECKPOINT_EVERY, self._start_checkpoint)

    def _start_checkpoint(self) -> None:
        self._checkpoint_due = None
        if self._checkpoint is not None and not self._checkpoint.done():
            self._schedule_checkpoint()
            return
        self._checkpoint = asyncio.get_running_loop().create_task(self.checkpoint())

    async def checkpoint(self) -> None:
        """Copy the WAL into the database on a connection of its own (PASSIVE: it never waits
        for, nor holds up, the writer or a reader). A failure is logged and left to the next
        one: the WAL holds everything meanwhile."""
        if self._checkpointer is None:
            return
        wal = f"{self.path}-wal"

        def passive(conn: sqlite3.Connection) -> int:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            try:
                return os.stat(wal).st_size
            except OSError:
                return 0

        try:
            size = await self._run(self._checkpointer, passive)
        except sqlite3.Error as exc:
            log.warning("wal_checkpoint_failed", error=str(exc))
            return
        self.checkpoints += 1
        # Frames the writer adds while this one copies are left for the next, so a writer that
        # never stops (a backlog, a long rush) leaves the WAL never wholly copied: SQLite starts
        # it again from its beginning only then, and it grows with every write (800 MB for
        # 200 MB written in tests/test_writer_scheduler.py). Past the size it is cut back to,
        # the writer copies what is left itself, between two groups (a ticket's claim first):
        # the few frames written meanwhile, a few milliseconds; its next write starts the WAL
        # again.
        if size > WAL_SIZE_LIMIT_BYTES:
            self._writer_checkpoint_due = True

    async def _checkpoint_on_writer(self, writer: aiosqlite.Connection) -> None:
        try:
            await self._run(writer,
                            lambda conn: conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone())
        except sqlite3.Error as exc:
            log.warning("wal_checkpoint_failed", error=str(exc), on="writer")
        else:
            self.writer_checkpoints += 1

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
