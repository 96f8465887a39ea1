"""Retention (issue 12, docs/retention.md): final orders past the retention period are
compacted to tombstones once synced; a late copy of their events never prints again; dead
letters and activities are capped; the file stops growing; a SIGKILL in the middle loses
nothing and prints nothing twice.

The first tests run the kitchen's own code on a real SQLite file (the pipeline that takes
and applies events, the spooler's claim and printed steps, the retention component) with a
ManualClock stepping days. The last runs the daemon as a process with a real broker and a
virtual printer, and kills it while retention runs.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from edge.clock import ManualClock, rfc3339_ms
from edge.component import Context
from edge.config import Config, load_config
from edge.daemon import plan_of
from edge.feed import Feed
from edge.ingest.pipeline import Incoming, Pipeline, Result
from edge.orders import printjobs, views
from edge.orders.apply import Applier
from edge.service.retention import Retention
from edge.store import Store, Tx, outbox, retention
from edge.store.db import DB_FILENAME, connect_sync
from edge.store.migrate import latest_version, migrations
from tests.broker import Broker
from tests.daemon import ROOT, DaemonProc, Publisher, created, event, write_config
from tests.printing_env import printed_once
from tests.vprinter import VPrinterProc

START = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
DAY = 24 * 3600.0
PRINTER = "hot"


def station_config(tmp_path: Path, **extra: Any) -> Config:
    return load_config(write_config(tmp_path / "station.yaml", broker_port=1883, **extra))


def topic(order_id: str) -> str:
    return f"{ROOT}/orders/{order_id}/events"


@dataclass
class Kitchen:
    """The kitchen's own write paths on a real file, one transaction per call."""

    conn: sqlite3.Connection
    pipeline: Pipeline
    clock: ManualClock
    config: Path

    def send(self, *bodies: dict[str, Any]) -> list[Any]:
        batch = [Incoming(topic(b["order_id"]), json.dumps(b).encode()) for b in bodies]
        return self._tx(lambda tx: self.pipeline.apply_batch(tx, batch, self.clock.now())
                        ).outcomes

    def print_all(self) -> int:
        """What the spooler does for each queued ticket: claim it, then mark it printed."""
        printed = 0
        while True:
            def one(tx: Tx) -> bool:
                claimed = printjobs.claim(tx, ["grill"], PRINTER, {}, self.clock.now(), 0)
                if claimed is None:
                    return False
                printjobs.printed(tx, claimed, self.clock.now())
                return True
            if not self._tx(one):
                return printed
            printed += 1

    def serve(self, order_id: str) -> None:
        """Order in, ticket printed, order completed."""
        self.send(created(order_id))
        self.print_all()
        self.send(event(order_id, "order.completed", {}))

    def compact(self, *, upstream: bool = False, max_rows: int = 300, days: float = 30,
                final: bool = True) -> retention.Compacted:
        before = rfc3339_ms(self.clock.now() - timedelta(days=days))
        return self._tx(lambda tx: retention.compact_due(
            tx.conn, before=before, upstream=upstream, now=rfc3339_ms(self.clock.now()),
            max_rows=max_rows, final=final))

    def count(self, sql: str, *args: Any) -> int:
        return int(self.conn.execute(sql, args).fetchone()[0])

    def _tx(self, fn: Any) -> Any:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(Tx(self.conn))
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")
        return result


@pytest.fixture
def kitchen(tmp_path: Path) -> Iterator[Kitchen]:
    cfg = station_config(tmp_path)
    conn = connect_sync(tmp_path / "state" / DB_FILENAME)
    try:
        yield Kitchen(conn, Pipeline(ROOT, Applier(plan_of(cfg))), ManualClock(START),
                      tmp_path / "station.yaml")
    finally:
        conn.close()


ORDER_TABLES = ("events", "order_lines", "print_jobs", "activities", "outbox", "kds_tickets",
                "check_lines")


def rows_of(k: Kitchen, order_id: str) -> dict[str, int]:
    return {t: k.count(f"SELECT COUNT(*) FROM {t} WHERE order_id = ?", order_id)
            for t in ORDER_TABLES}


def test_a_final_order_past_the_period_becomes_a_tombstone_and_never_prints_again(
        kitchen: Kitchen) -> None:
    k = kitchen
    k.serve("o-done")
    k.send(created("o-void"))
    k.send(event("o-void", "order.cancelled", {"reason_code": "customer", "reason": "guest left"}))
    k.send(created("o-open"))
    k.print_all()
    assert sum(rows_of(k, "o-done").values()) > 5

    k.clock.advance(29 * DAY)
    assert k.compact() == retention.Compacted(0, 0)      # not yet 30 days

    k.clock.advance(2 * DAY)
    done = k.compact()
    assert done.orders == 2 and done.rows > 10
    # The working order stays whole, however old; the final ones leave only a tombstone.
    assert k.count("SELECT COUNT(*) FROM orders") == 1
    assert rows_of(k, "o-open")["events"] == 1
    assert rows_of(k, "o-done") == dict.fromkeys(ORDER_TABLES, 0)
    assert rows_of(k, "o-void") == dict.fromkeys(ORDER_TABLES, 0)
    stone = retention.tombstone(k.conn, "o-done")
    assert stone is not None
    assert (stone["status"], stone["kitchen_stage"], stone["lines"], stone["tickets"],
            stone["events"]) == ("completed", "completed", 1, 1, 2)
    assert stone["compacted_at"] == rfc3339_ms(k.clock.now())
    void = retention.tombstone(k.conn, "o-void")
    assert void is not None and (void["status"], void["tickets"]) == ("void", 0)
    # The operator still finds it: `kitchen-edge orders show` says what is left.
    shown = views.order_show(k.conn, "o-done")
    assert shown is not None and shown["compacted"] and shown["status"] == "completed"
    cli = subprocess.run([sys.executable, "-m", "edge", "orders", "show", "o-done", "--config",
                          str(k.config)], capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0, cli.stderr
    assert "status completed" in cli.stdout and "compacted by retention" in cli.stdout

    # A late copy of its events (a broker redelivery, a marketplace listing it again) is a
    # duplicate: nothing stored, nothing printed, no dead letter.
    jobs_before = k.count("SELECT COUNT(*) FROM print_jobs")
    outcomes = k.send(created("o-done"), event("o-done", "order.completed", {}),
                      created("o-void"))
    assert [o.result for o in outcomes] == [Result.DUPLICATE] * 3
    # Anything new for it is refused, said in a dead letter, never applied.
    [fresh] = k.send(created("o-done", event_id="evt-o-done-again"))
    assert fresh.result is Result.DEAD and "compacted" in (fresh.reason or "")
    assert k.count("SELECT COUNT(*) FROM print_jobs") == jobs_before
    assert k.print_all() == 0
    assert k.count("SELECT COUNT(*) FROM orders WHERE order_id = 'o-done'") == 0
    # A compacted order runs no second compaction.
    k.clock.advance(DAY)
    assert k.compact().orders == 0


def test_an_order_that_never_became_final_goes_after_the_longer_period(
        kitchen: Kitchen) -> None:
    """A bridge that never closes its orders must not keep every order for ever: an order
    left open goes after `retention.open_days` unchanged, once nothing of it is in flight."""
    k = kitchen
    k.send(created("o-left"))
    k.print_all()
    k.send(created("o-stuck"))                      # its ticket never printed
    k.clock.advance(31 * DAY)
    k.serve("o-done")
    assert k.compact().orders == 0                  # not final: the 30 days do not apply
    assert k.compact(days=90, final=False).orders == 0

    k.clock.advance(60 * DAY)                        # 91 days unchanged
    done = k.compact(days=90, final=False)
    assert done.orders == 1 and done.cursor[1] == "o-left"
    assert rows_of(k, "o-left") == dict.fromkeys(ORDER_TABLES, 0)
    stone = retention.tombstone(k.conn, "o-left")
    assert stone is not None and stone["status"] not in retention.FINAL_STATUSES
    # The one with a ticket still queued stays whole, and the final one is not taken early.
    assert rows_of(k, "o-stuck")["print_jobs"] == 1
    assert k.count("SELECT COUNT(*) FROM orders WHERE order_id = 'o-done'") == 1
    # A late event for it is refused, never printed.
    [late] = k.send(event("o-left", "order.items_added",
                          {"batch_id": "b-2", "items": [{"line_id": "l2", "name": "Ayran",
                                                         "qty": 1, "category": "grill"}]}))
    assert late.result is Result.DEAD and "compacted" in (late.reason or "")
    assert k.count("SELECT COUNT(*) FROM print_jobs WHERE order_id = 'o-left'") == 0


def test_with_an_upstream_an_order_waits_until_its_records_are_accepted(
        kitchen: Kitchen) -> None:
    k = kitchen
    k.serve("o-1")
    k.clock.advance(31 * DAY)
    assert k.count("SELECT COUNT(*) FROM outbox WHERE order_id='o-1' AND state='pending'") > 0
    assert k.compact(upstream=True).orders == 0
    ids = [r[0] for r in k.conn.execute("SELECT record_id FROM outbox WHERE order_id='o-1'")]
    k._tx(lambda tx: outbox.mark_accepted(tx.conn, ids[:-1], k.clock.now()))
    assert k.compact(upstream=True).orders == 0          # one record still unaccepted
    k._tx(lambda tx: outbox.mark_accepted(tx.conn, ids[-1:], k.clock.now()))
    assert k.compact(upstream=True).orders == 1
    # Its confirmation goes with it; records accepted only now go by age, in the sender's
    # compaction (`upstream.retention_hours` after their acceptance), as everyone's do.
    assert k.count("SELECT COUNT(*) FROM outbox WHERE kind = 'confirmation'"
                   " OR state IN ('pending', 'parked')") == 0
    assert k.count("SELECT COUNT(*) FROM outbox WHERE state != 'accepted'") == 0
    k._tx(lambda tx: outbox.compact(tx.conn, older_than=k.clock.now() + timedelta(hours=1)))
    assert k.count("SELECT COUNT(*) FROM outbox") == 0


def test_an_order_with_a_ticket_still_to_print_is_not_compacted(kitchen: Kitchen) -> None:
    k = kitchen
    k.serve("o-1")
    k.clock.advance(DAY)
    k.serve("o-2")                    # a later order, done: the waiting one does not block it
    # A reprint of o-1's ticket asked for after it was completed, not printed yet.
    reprint = {"command_id": "rp-1", "job_key": "o-1/new/grill"}
    k._tx(lambda tx: k.pipeline.apply_batch(
        tx, [Incoming(f"{ROOT}/commands/reprint", json.dumps(reprint).encode())],
        k.clock.now()))
    assert k.count("SELECT COUNT(*) FROM print_jobs WHERE order_id='o-1' AND state='queued'"
                   ) == 1
    k.clock.advance(40 * DAY)
    done = k.compact()
    assert done.orders == 1 and done.cursor[1] == "o-2"
    assert k.count("SELECT COUNT(*) FROM orders WHERE order_id = 'o-1'") == 1
    assert k.print_all() == 1
    assert k.compact().orders == 1


def test_compaction_works_in_chunks_of_about_max_rows(kitchen: Kitchen) -> None:
    k = kitchen
    for i in range(30):
        k.serve(f"o-{i}")
    k.clock.advance(31 * DAY)
    steps = []
    while (done := k.compact(max_rows=40)).orders:
        steps.append(done)
    assert len(steps) > 3
    assert all(s.rows < 40 + 30 for s in steps)           # one order over at most
    assert sum(s.orders for s in steps) == 30
    assert k.count("SELECT COUNT(*) FROM order_tombstones") == 30


def test_dead_letters_and_activities_are_capped_newest_kept(kitchen: Kitchen) -> None:
    k = kitchen
    for i in range(40):
        k._tx(lambda tx, i=i: k.pipeline.apply_batch(
            tx, [Incoming(topic(f"x-{i}"), b"not json %d" % i)], k.clock.now()))
    for i in range(10):
        k.send(created(f"o-{i}"))
    assert k.count("SELECT COUNT(*) FROM dead_letters") == 40
    newest = [r[0] for r in k.conn.execute("SELECT id FROM dead_letters ORDER BY id DESC "
                                           "LIMIT 15")]
    gone = k._tx(lambda tx: retention.cap_newest(tx.conn, "dead_letters", keep=15, limit=10))
    assert gone == 10
    gone = k._tx(lambda tx: retention.cap_newest(tx.conn, "dead_letters", keep=15, limit=100))
    assert gone == 15
    assert sorted(newest) == [r[0] for r in k.conn.execute("SELECT id FROM dead_letters "
                                                           "ORDER BY id")]
    activities = k.count("SELECT COUNT(*) FROM activities")
    assert activities >= 10
    k._tx(lambda tx: retention.cap_newest(tx.conn, "activities", keep=5, limit=1000))
    assert k.count("SELECT COUNT(*) FROM activities") == 5
    assert k._tx(lambda tx: retention.cap_newest(tx.conn, "activities", keep=5,
                                                 limit=1000)) == 0


class _Unused:
    """Context members retention never touches (it only uses the store and the clock)."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"retention used {name}")


def test_the_file_stops_growing_over_fill_and_compact_cycles(tmp_path: Path) -> None:
    cfg = station_config(tmp_path, retention={"chunk_rows": 200, "vacuum_pages": 64})
    clock = ManualClock(START)
    pipeline = Pipeline(ROOT, Applier(plan_of(cfg)))
    path = tmp_path / "state" / DB_FILENAME
    per_cycle = 150

    async def main() -> list[int]:
        store = Store(path, Feed())
        await store.open()
        ctx = Context(cfg=cfg, store=store, feed=store.feed, clock=clock, publish=_Unused(),
                      intake=_Unused(), health=_Unused())   # type: ignore[arg-type]
        component = Retention(ctx, cfg.retention)
        sizes = []
        try:
            for cycle in range(6):
                for i in range(per_cycle):
                    oid = f"c{cycle}-{i}"
                    body = created(oid, items=[{"line_id": f"l{n}", "name": "Lahmacun " * 8,
                                                "qty": 1, "category": "grill",
                                                "note": "no onion " * 10} for n in range(4)])
                    batch = [Incoming(topic(oid), json.dumps(body).encode())]
                    await store.transact(lambda tx, b=batch: pipeline.apply_batch(
                        tx, b, clock.now()))
                    # Cancelled before any ticket printed: void, tickets withdrawn.
                    stop = [Incoming(topic(oid), json.dumps(event(
                        oid, "order.cancelled", {"reason_code": "customer"})).encode())]
                    await store.transact(lambda tx, b=stop: pipeline.apply_batch(
                        tx, b, clock.now()))
                clock.advance(31 * DAY)
                report = await component.run_pass()
                assert report.orders == per_cycle
                assert report.pages > 0
                # Measure the file itself: everything in it, nothing waiting in the WAL.
                side = sqlite3.connect(path)
                try:
                    side.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
                finally:
                    side.close()
                sizes.append(path.stat().st_size)
            free = await store.read(retention.free_pages)
            assert free < cfg.retention.vacuum_pages
            assert await store.read(lambda c: c.execute("PRAGMA auto_vacuum").fetchone()[0]) \
                == 2
        finally:
            await store.close()
        return sizes

    sizes = asyncio.run(main())
    print("file size after each cycle:", sizes)
    # What stays per order is its tombstone (~210 bytes with its index); a cycle's orders took
    # some 2,000 bytes each before compaction.
    tombstone_bytes = per_cycle * 300
    for earlier, later in itertools.pairwise(sizes):
        assert later - earlier <= tombstone_bytes + 3 * 4096, sizes


def test_the_component_runs_on_the_clock_and_lets_tombstones_go_when_told(
        tmp_path: Path) -> None:
    cfg = station_config(tmp_path, retention={"days": 30, "tombstone_days": 60,
                                               "every_minutes": 60})
    clock = ManualClock(START)
    pipeline = Pipeline(ROOT, Applier(plan_of(cfg)))

    async def main() -> None:
        store = Store(tmp_path / "state" / DB_FILENAME, Feed())
        await store.open()
        ctx = Context(cfg=cfg, store=store, feed=store.feed, clock=clock, publish=_Unused(),
                      intake=_Unused(), health=_Unused())   # type: ignore[arg-type]
        component = Retention(ctx, cfg.retention)
        stones = "SELECT COUNT(*) FROM order_tombstones"

        async def passes(n: int) -> None:
            for _ in range(500):
                if component.passes >= n:
                    return
                await asyncio.sleep(0.01)
            raise AssertionError(f"{component.passes} passes, expected {n}")

        async def count(sql: str) -> int:
            return int(await store.read(lambda c: c.execute(sql).fetchone()[0]))

        try:
            for oid in ("a", "b"):
                for body in (created(oid), event(oid, "order.cancelled",
                                                 {"reason_code": "customer"})):
                    batch = [Incoming(topic(oid), json.dumps(body).encode())]
                    await store.transact(lambda tx, b=batch: pipeline.apply_batch(
                        tx, b, clock.now()))
            run = asyncio.create_task(component.run())
            await asyncio.sleep(0.05)
            assert component.passes == 0           # the first pass waits a minute
            clock.advance(60)
            await passes(1)
            assert await count(stones) == 0        # nothing is 30 days old yet
            clock.advance(31 * DAY)                # the hourly sleep is over too
            await passes(2)
            assert await count(stones) == 2
            assert component.last is not None and component.last.orders == 2
            status = await component.status()
            assert status["passes"] == 2 and status["last_pass"]["orders"] == 2
            clock.advance(59 * DAY)                # 59 days after compaction: kept
            await passes(3)
            assert await count(stones) == 2
            clock.advance(2 * DAY)                 # 61: past tombstone_days
            await passes(4)
            assert await count(stones) == 0
            run.cancel()
        finally:
            await store.close()

    asyncio.run(main())


def test_an_older_file_is_switched_to_incremental_vacuum_once(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    # Written by a kitchen-edge of schema 8, before auto_vacuum was set.
    for version, _name, sql in migrations()[:8]:
        conn.executescript(f"BEGIN;\n{sql}\nPRAGMA user_version = {version};\nCOMMIT;")
    conn.executemany("INSERT INTO kv (key, value) VALUES (?, ?)",
                     [(f"k{i}", "x" * 200) for i in range(500)])
    assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
    conn.close()
    conn = connect_sync(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == latest_version()
        assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
        assert conn.execute("SELECT COUNT(*) FROM kv").fetchone()[0] == 500
    finally:
        conn.close()


# -- the daemon, killed while retention runs ----------------------------------------------

ORDERS = 120


def test_sigkill_while_retention_runs_loses_nothing_and_prints_nothing_twice(
        tmp_path: Path, broker: Broker) -> None:
    seed = int(os.environ.get("CRASH_SEED", time.time_ns() % 100_000))
    rng = random.Random(seed)
    print(f"CRASH_SEED={seed}")
    printer = VPrinterProc(tmp_path / "printer").start()
    # Retention after 1.5 s, a pass every 0.3 s, in steps of a few orders: the kills land
    # inside compaction steps.
    cfg = write_config(tmp_path / "station.yaml", broker_port=broker.port,
                       printers=[{"id": "hot", "connection": printer.address}],
                       retention={"days": 1.5 / DAY, "every_minutes": 0.005, "chunk_rows": 30,
                                  "vacuum_pages": 8})
    d = DaemonProc(cfg)
    pub = Publisher(broker.port)
    stream = [created(f"r-{i}") for i in range(ORDERS)]
    finals = [event(f"r-{i}", "order.completed", {}) for i in range(ORDERS)]
    kills = 0
    at_kill: list[int] = []          # orders compacted when each kill landed
    try:
        d.start()
        for body in stream:
            pub.order(body, wait=False)
        d.wait_until(lambda: d.scalar("SELECT COUNT(*) FROM print_jobs WHERE state='printed'")
                     == ORDERS, timeout=90, what="every NEW ticket printed")
        done = threading.Event()

        def complete() -> None:
            try:
                for start in range(0, ORDERS, 10):
                    for body in finals[start:start + 10]:
                        pub.order(body, wait=True)
                    time.sleep(0.25)
            finally:
                done.set()

        thread = threading.Thread(target=complete)
        thread.start()
        while not done.is_set() or kills < 3 or (
                kills < 12 and d.scalar("SELECT COUNT(*) FROM orders") > 0):
            time.sleep(rng.uniform(0.3, 1.2))
            d.kill()
            kills += 1
            at_kill.append(d.scalar("SELECT COUNT(*) FROM order_tombstones"))
            d.start()
        thread.join()
        d.wait_until(lambda: d.scalar("SELECT COUNT(*) FROM order_tombstones") == ORDERS,
                     timeout=90, what="every order compacted")
        # Every event again, as a broker or a marketplace might send them late.
        for body in stream + finals:
            pub.order(body, wait=False)
        pub.order(created("r-late"), wait=True)      # a new order: the kitchen still works
        d.wait_until(lambda: d.scalar("SELECT COUNT(*) FROM print_jobs WHERE "
                                      "state='printed'") == 1, timeout=30, what="r-late")
        time.sleep(1.0)
        tickets = printer.jobs()
        assert d.scalar("SELECT COUNT(*) FROM dead_letters") == 0
        assert d.scalar("SELECT COUNT(*) FROM orders") == 1
        stones = d.query("SELECT status, tickets, lines, length(event_keys) "
                         "FROM order_tombstones GROUP BY 1, 2, 3, 4")
        assert stones == [("completed", 1, 1, 16)]
    finally:
        pub.close()
        d.kill()
        printer.stop()
    print(f"kills={kills} compacted at each kill={at_kill}")
    # Some kills landed while retention had work left (not all before, not all after).
    assert any(0 < n < ORDERS for n in at_kill), at_kill
    printed_once(tickets, {f"r-{i}/new/grill" for i in range(ORDERS)} | {"r-late/new/grill"})
