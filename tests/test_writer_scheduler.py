"""The single writer's scheduler (edge.store.db): printing first, group commit with a
savepoint per unit, results only after COMMIT, nothing acknowledged lost to a SIGKILL."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from edge.feed import Change, EventAccepted
from edge.store import Priority, Store, Tx, db, kv

ROOT = Path(__file__).resolve().parent.parent


def _put(key: str, done: list[str] | None = None) -> Callable[[Tx], str]:
    def fn(tx: Tx) -> str:
        kv.put(tx.conn, key, "x")
        tx.emit(EventAccepted(key, "o-1", "order.created"))
        if done is not None:
            done.append(key)
        return key
    return fn


async def _hold_writer(store: Store) -> tuple[threading.Event, asyncio.Task[None]]:
    """A unit that keeps the writer busy until released, so the next units queue up."""
    started, release = threading.Event(), threading.Event()

    def block(_tx: Tx) -> None:
        started.set()
        assert release.wait(10), "the test never released the writer"

    task = asyncio.create_task(store.transact(block))
    assert await asyncio.to_thread(started.wait, 10)
    return release, task


def _keys(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {r[0] for r in conn.execute("SELECT key FROM kv")}
    finally:
        conn.close()


async def test_printing_goes_first_and_an_apply_pass_waits_for_the_next_group(
        store: Store) -> None:
    order: list[str] = []
    release, holder = await _hold_writer(store)
    groups_before = store.groups
    waiting = [
        asyncio.create_task(store.transact(_put("outbox-1", order))),
        asyncio.create_task(store.transact(_put("apply-1", order), priority=Priority.APPLY)),
        asyncio.create_task(store.transact(_put("outbox-2", order))),
        asyncio.create_task(store.transact(_put("claim-1", order), priority=Priority.PRINT)),
        asyncio.create_task(store.transact(_put("intake-1", order),
                                           priority=Priority.INTAKE)),
        asyncio.create_task(store.transact(_put("claim-2", order), priority=Priority.PRINT)),
    ]
    await asyncio.sleep(0.05)          # all six queued behind the held writer
    assert order == []
    release.set()
    await holder
    await asyncio.gather(*waiting)
    # The claims first (in their order), then by priority the small units that share their
    # fsync; the apply pass, which may be long, waits for the next group.
    assert order == ["claim-1", "claim-2", "intake-1", "outbox-1", "outbox-2", "apply-1"]
    assert store.groups - groups_before == 3        # the holder, the claims' group, apply


async def test_one_failing_unit_rolls_back_alone_in_a_group(store: Store) -> None:
    published: list[Change] = []
    store.feed.subscribe(EventAccepted, published.append)

    def fails(tx: Tx) -> None:
        kv.put(tx.conn, "bad", "x")
        tx.emit(EventAccepted("bad", "o-1", "order.created"))
        raise ValueError("this unit is wrong")

    release, holder = await _hold_writer(store)
    groups_before = store.groups
    first = asyncio.create_task(store.transact(_put("good-1")))
    bad = asyncio.create_task(store.transact(fails))
    last = asyncio.create_task(store.transact(_put("good-2")))
    await asyncio.sleep(0.05)
    release.set()
    await holder
    assert await first == "good-1"
    assert await last == "good-2"
    with pytest.raises(ValueError, match="this unit is wrong"):
        await bad
    assert store.groups - groups_before == 2        # the holder, then all three together
    assert _keys(store.path) == {"good-1", "good-2"}
    assert [c.event_id for c in published if isinstance(c, EventAccepted)] == [
        "good-1", "good-2"]


async def test_a_caller_gets_its_result_only_after_the_group_committed(store: Store) -> None:
    """A unit done early in a group is not answered while a later unit of the same group
    still runs: its row is not committed yet (another connection cannot see it)."""
    later_started, release_later = threading.Event(), threading.Event()

    def later(tx: Tx) -> None:
        kv.put(tx.conn, "later", "x")
        later_started.set()
        assert release_later.wait(10)

    release, holder = await _hold_writer(store)
    early = asyncio.create_task(store.transact(_put("early"), priority=Priority.PRINT))
    slow = asyncio.create_task(store.transact(later, priority=Priority.PRINT))
    await asyncio.sleep(0.05)
    release.set()
    await holder
    assert await asyncio.to_thread(later_started.wait, 10)
    await asyncio.sleep(0.05)
    assert not early.done()
    assert _keys(store.path) == set()
    release_later.set()
    assert await early == "early"
    assert _keys(store.path) == {"early", "later"}   # on disk once answered
    await slow


async def test_commit_failure_fails_every_unit_of_the_group(store: Store) -> None:
    """A group that cannot commit answers every caller with the error; nothing of it stays."""
    def breaks_the_transaction(tx: Tx) -> None:
        kv.put(tx.conn, "half", "x")
        # What SQLite does itself on SQLITE_FULL or an I/O error: the whole transaction goes.
        tx.conn.execute("ROLLBACK")
        raise sqlite3.OperationalError("database or disk is full")

    release, holder = await _hold_writer(store)
    first = asyncio.create_task(store.transact(_put("before")))
    broken = asyncio.create_task(store.transact(breaks_the_transaction))
    after = asyncio.create_task(store.transact(_put("after")))
    await asyncio.sleep(0.05)
    release.set()
    await holder
    results = await asyncio.gather(first, broken, after, return_exceptions=True)
    assert all(isinstance(r, sqlite3.OperationalError) for r in results)
    assert _keys(store.path) == set()
    # The writer is usable again.
    assert await store.transact(_put("next")) == "next"


async def test_durable_false_alone_does_not_wait_for_the_disk_and_restores_full(
        store: Store) -> None:
    def sync_level(tx: Tx) -> int:
        return int(tx.conn.execute("PRAGMA synchronous").fetchone()[0])

    assert await store.transact(sync_level, durable=False) == 1      # NORMAL
    assert await store.transact(sync_level) == 2                     # FULL again
    # Beside a durable unit, the whole group is durable.
    release, holder = await _hold_writer(store)
    lazy = asyncio.create_task(store.transact(sync_level, durable=False))
    strict = asyncio.create_task(store.transact(sync_level))
    await asyncio.sleep(0.05)
    release.set()
    await holder
    assert (await lazy, await strict) == (2, 2)


async def test_synced_waits_for_the_next_durable_commit_or_fsyncs_the_wal(
        store: Store) -> None:
    """The intake's way to the disk: commit without waiting, then `synced()`. A durable unit
    coming within the linger (a ticket's claim) serves it with its own fsync; with none, the
    writer fsyncs the WAL itself after SYNC_LINGER; with nothing unsynced it returns at once."""
    await store.transact(_put("intake-1"), durable=False, priority=Priority.INTAKE)
    durable_before, own_before = store.durable_groups, store.wal_syncs
    waiter = asyncio.create_task(store.synced())
    await store.transact(_put("claim-1"), priority=Priority.PRINT)
    await asyncio.wait_for(waiter, 1)
    assert store.durable_groups == durable_before + 1
    assert store.wal_syncs == own_before                 # the claim's fsync served it

    await store.transact(_put("intake-2"), durable=False, priority=Priority.INTAKE)
    started = time.monotonic()
    await asyncio.wait_for(store.synced(), 1)
    assert time.monotonic() - started >= db.SYNC_LINGER * 0.9
    assert store.wal_syncs == own_before + 1              # nothing durable came: its own
    assert store.durable_groups == durable_before + 1

    started = time.monotonic()
    await store.synced()                                  # nothing new since: no wait
    assert time.monotonic() - started < db.SYNC_LINGER
    assert store.wal_syncs == own_before + 1

    # A backlog coming in expects no claim: no linger.
    await store.transact(_put("intake-3"), durable=False, priority=Priority.INTAKE)
    started = time.monotonic()
    await asyncio.wait_for(store.synced(linger=False), 1)
    assert store.wal_syncs == own_before + 2


async def test_synced_is_not_held_up_by_a_stream_of_non_durable_work(store: Store) -> None:
    """Applying orders (non-durable) keeps the writer busy: past its linger a `synced()`
    caller gets the WAL fsynced after the next group all the same."""
    await store.transact(_put("intake-1"), durable=False, priority=Priority.INTAKE)
    waiter = asyncio.create_task(store.synced())
    stop = asyncio.Event()

    async def apply_forever() -> None:
        i = 0
        while not stop.is_set():
            await store.transact(_put(f"apply-{i}"), durable=False, priority=Priority.APPLY)
            i += 1

    applying = asyncio.create_task(apply_forever())
    try:
        await asyncio.wait_for(waiter, db.SYNC_LINGER * 100)
    finally:
        stop.set()
        await applying
    assert store.wal_syncs >= 1


_WRITER = """
import asyncio, sys
from pathlib import Path
from edge.store import Priority, Store, kv

async def main() -> None:
    store = Store(Path(sys.argv[1]))
    await store.open()
    print("ready", flush=True)

    async def worker(n: int) -> None:
        prio = [Priority.PRINT, Priority.INTAKE, Priority.BACKGROUND][n % 3]
        i = 0
        while True:
            key = f"w{n}-{i}"
            def put(tx, key=key):
                kv.put(tx.conn, key, "x")
                if n == 0 and i % 7 == 3:
                    raise ValueError("a unit that fails now and then")
            try:
                await store.transact(put, priority=prio)
            except ValueError:
                pass
            else:
                print(key, flush=True)      # acknowledged: must survive the kill
            i += 1

    await asyncio.gather(*(worker(n) for n in range(12)))

asyncio.run(main())
"""


def test_sigkill_during_group_commits_loses_nothing_acknowledged(tmp_path: Path) -> None:
    db = tmp_path / "k.db"
    for round_ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(db)], cwd=ROOT,
                                stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            # Log lines (structlog's default, to stdout) may come first.
            for line in proc.stdout:
                if line.strip() == "ready":
                    break
            else:
                raise AssertionError("the writer process never got ready")
            time.sleep(0.3 + 0.2 * round_)
            os.kill(proc.pid, signal.SIGKILL)
            out = proc.stdout.read()
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        # A line cut by the kill was never fully printed: not counted as acknowledged.
        acked = {line for line in out.split("\n")[:-1] if line}
        assert len(acked) > 50, f"too few units got through to make a point: {len(acked)}"
        stored = _keys(db)
        lost = acked - stored
        assert not lost, f"acknowledged and lost after SIGKILL: {sorted(lost)[:10]}"
        # The failing units never got in.
        assert not {k for k in stored if k.startswith("w0-") and int(k[3:]) % 7 == 3}


async def test_the_wal_is_checkpointed_off_the_writer(store: Store,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer never checkpoints (no ticket's COMMIT pays for it); the store's own
    checkpointer copies the WAL into the database file after the writes (every
    CHECKPOINT_EVERY seconds, shortened here)."""
    monkeypatch.setattr(db, "CHECKPOINT_EVERY", 0.2)
    assert await store.transact(
        lambda tx: int(tx.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0])) == 0
    before = store.path.stat().st_size
    for n in range(20):
        await store.transact(lambda tx, n=n: [kv.put(tx.conn, f"k{n}-{i}", "x" * 2000)
                                              for i in range(20)])
    for _ in range(100):
        if store.checkpoints:
            break
        await asyncio.sleep(0.1)
    assert store.checkpoints >= 1
    assert store.path.stat().st_size > before + 400_000   # the rows reached the file itself


async def test_the_wal_is_reset_under_writes_that_never_stop(store: Store,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    """The checkpointer's PASSIVE checkpoint never catches up with a writer that never stops
    (a backlog being worked off, a long rush): frames come in while it copies, so the WAL is
    never complete, never started again from its beginning, and grows with every write. Past
    WAL_SIZE_LIMIT_BYTES the writer copies the last few frames itself between two groups;
    the next write starts the WAL again, and the file stays bounded."""
    monkeypatch.setattr(db, "CHECKPOINT_EVERY", 0.05)
    monkeypatch.setattr(db, "WAL_SIZE_LIMIT_BYTES", 1024 * 1024)
    wal = f"{store.path}-wal"
    peaks = [0, 0]                       # the WAL's biggest size in each half of the run
    started = time.monotonic()
    n = 0
    while (elapsed := time.monotonic() - started) < 4.0:
        await store.transact(lambda tx, n=n: [kv.put(tx.conn, f"k{i % 50}", f"{n}" * 2000)
                                              for i in range(10)], durable=False)
        n += 1
        half = 0 if elapsed < 2.0 else 1
        peaks[half] = max(peaks[half], os.stat(wal).st_size)
    written = n * 10 * 2000
    assert written > 8 * 1024 * 1024, f"too few writes to make the point: {written}"
    # Growing with every write, the second half's peak would be about twice the first's.
    assert peaks[1] < 1.5 * peaks[0], (
        f"the WAL kept growing: {peaks[0]:,} then {peaks[1]:,} bytes, {written:,} written")
    assert store.writer_checkpoints >= 1
