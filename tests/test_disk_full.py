"""A full disk (issue 12): the state_dir on a small tmpfs the test mounts, filled with a filler
file during a stream of orders, then freed.

While the disk refuses writes nothing is acknowledged (the broker keeps the orders), no
ticket prints without a durable claim, and `{root}/edge/state`, sd_notify STATUS, the board
and the metrics say `degraded: disk full`. Once space is back the daemon recovers on its own
(no exit, no restart) and every order prints exactly once. The power-loss test SIGKILLs the
daemon while the disk is full and while it recovers: 0 lost, 0 silent duplicates.

Mounting needs root (CI runs as root); without it, or where mount fails, the tests skip and
say why.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import random
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
import structlog.testing

from edge.component import BaseComponent
from edge.daemon import Daemon, load_station
from edge.store import Store, kv
from edge.store.trouble import (
    PROBE_FILENAME,
    StorageTrouble,
    is_storage_error,
    log_failure,
    storage_kind,
)
from tests.broker import Broker, free_port
from tests.daemon import ROOT, DaemonProc, Listener, Publisher, created, write_config
from tests.printing_env import kitchen, printed_once
from tests.test_sdnotify import NotifySocket

GRILL = [{"id": "grill", "printer": "hot", "categories": ["grill"]}]
DISK_MIB = 16
FILLER = "zz-filler"


def item(name: str) -> list[dict[str, Any]]:
    return [{"line_id": "l1", "name": name, "qty": 1, "category": "grill"}]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """`tmp_path/state` as a DISK_MIB tmpfs; unmounted in teardown."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs for the state_dir needs root (CI runs as root)")
    state = tmp_path / "state"
    state.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MIB}m,mode=0755",
                              "tmpfs", str(state)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield state
    finally:
        # The daemon is killed by then; lazy, so a straggler's open file never leaves it.
        subprocess.run(["umount", "-l", str(state)], check=False)


def fill(disk: Path) -> None:
    """Leave not one block free on the disk."""
    fd = os.open(disk / FILLER, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        # Big writes, then what they did not fit into in smaller ones.
        for size in (65536, 4096, 512, 1):
            chunk = b"\xff" * size
            while True:
                try:
                    os.write(fd, chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    finally:
        os.close(fd)
    left = os.statvfs(disk)
    assert left.f_bavail == 0, f"{left.f_bavail} blocks still free"


def free(disk: Path) -> None:
    (disk / FILLER).unlink()


def edge_state(listener: Listener, health: str, timeout: float) -> dict[str, Any]:
    body: dict[str, Any] = listener.wait_for(
        lambda t, b: t == f"{ROOT}/edge/state" and isinstance(b, dict)
        and b.get("health") == health, timeout=timeout)
    return body


def printed_once_grill(tickets: list[dict[str, Any]], order_ids: list[str]) -> dict[str, int]:
    """Every order's grill ticket printed; a second copy only ever says MAY BE DUPLICATE."""
    return printed_once(tickets, {f"{o}/new/grill" for o in order_ids})


def metric(port: int, name: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in /metrics")


def test_storage_errors_are_told_apart_from_other_database_errors() -> None:
    full = sqlite3.OperationalError("database or disk is full")
    assert storage_kind(full) == "full"
    assert storage_kind(sqlite3.OperationalError("disk I/O error")) == "io_error"
    assert storage_kind(OSError(errno.ENOSPC, "No space left on device")) == "full"
    assert storage_kind(OSError(errno.EIO, "Input/output error")) == "io_error"
    assert storage_kind(sqlite3.OperationalError("no such table: orders")) is None
    assert storage_kind(sqlite3.IntegrityError("UNIQUE constraint failed")) is None
    assert storage_kind(ValueError("database or disk is full")) is None
    # SQLite rolled the whole transaction back on SQLITE_FULL, so the savepoint's own
    # ROLLBACK TO failed: what is raised is that, in the handling of the full disk.
    try:
        try:
            raise full
        except sqlite3.OperationalError:
            raise sqlite3.OperationalError("no such savepoint: message") from None
    except sqlite3.OperationalError as exc:
        assert storage_kind(exc) is None    # `from None`: nothing to follow
    try:
        try:
            raise full
        except sqlite3.OperationalError:
            raise sqlite3.OperationalError("no such savepoint: message")  # noqa: B904
    except sqlite3.OperationalError as exc:
        assert storage_kind(exc) == "full"
        assert is_storage_error(exc)


def test_a_retry_loop_logs_a_full_disk_in_one_line_and_a_bug_with_its_traceback() -> None:
    """The upstream sender's and the marketplace connector's loops wait a full disk out: one
    line each time, not a traceback at every retry; anything else keeps its traceback."""
    log = structlog.get_logger("test")
    with structlog.testing.capture_logs() as logs:
        try:
            raise StorageTrouble("full", "database or disk is full")
        except Exception as exc:
            log_failure(log, "upstream_sender_error", exc)
        try:
            raise KeyError("seq")
        except Exception as exc:
            log_failure(log, "marketplace_poll_failed", exc, marketplace="yemek")
    waited, bug = logs
    assert waited == {"event": "upstream_sender_error", "log_level": "warning",
                      "storage": "full", "error": "disk full: database or disk is full"}
    assert bug == {"event": "marketplace_poll_failed", "log_level": "error", "exc_info": True,
                   "error": "KeyError('seq')", "marketplace": "yemek"}


async def test_a_store_on_a_full_disk_refuses_says_so_and_recovers_by_the_probe(
        small_disk: Path) -> None:
    store = Store(small_disk / "kitchen-edge.db")
    await store.open()
    seen: list[str] = []
    store.disk.subscribe(lambda state: seen.append(state.label))
    try:
        await store.transact(lambda tx: kv.put(tx.conn, "before", "kept"))
        fill(small_disk)
        with pytest.raises(StorageTrouble) as refused:
            await store.transact(lambda tx: kv.put(tx.conn, "during", "x" * 65536))
        assert refused.value.kind == "full" and refused.value.label == "disk full"
        assert store.disk.current.label == "degraded: disk full"
        assert seen == ["degraded: disk full"]
        # Still full: the probe fails (with backoff) and nobody is told it is back.
        waiting = asyncio.create_task(store.disk.wait_ok())
        await asyncio.sleep(1.0)
        assert not waiting.done() and store.disk.probes >= 1
        assert store.disk.current.state == "full"
        # The writer connection was left usable: reads and, once there is room, writes.
        assert await store.read(lambda c: kv.get(c, "before")) == "kept"
        free(small_disk)
        await asyncio.wait_for(waiting, timeout=10)
        assert store.disk.ok and seen == ["degraded: disk full", "ok"]
        await store.transact(lambda tx: kv.put(tx.conn, "after", "written"))
        assert await store.read(lambda c: (kv.get(c, "during"), kv.get(c, "after"))) == (
            None, "written")
        assert not (small_disk / PROBE_FILENAME).exists()
    finally:
        await store.close()


async def test_a_component_a_refused_write_ended_runs_again_once_the_disk_takes_writes(
        tmp_path: Path) -> None:
    """The upstream sender's marks, discovery's registry, a connector's records: a write the
    disk refused that ends a component's run() does not end the daemon."""
    daemon = Daemon(load_station(write_config(tmp_path / "station.yaml", broker_port=1)),
                    handle_signals=False)
    await daemon.store.open()
    runs: list[bool] = []

    class Registry(BaseComponent):
        name = "registry"

        async def run(self) -> None:
            runs.append(daemon.store.disk.ok)
            if len(runs) == 1:
                trouble = daemon.store.disk.refused(
                    sqlite3.OperationalError("database or disk is full"))
                assert trouble is not None
                raise trouble

    try:
        await asyncio.wait_for(daemon._run_component(Registry()), timeout=10)
    finally:
        await daemon.store.close()
    # Run again only once the probe (on a disk with room) said the disk takes writes.
    assert runs == [True, True] and daemon.store.disk.ok and daemon.store.disk.probes >= 1
    assert "degraded: disk full" not in daemon.status_line()


def test_disk_full_holds_the_orders_and_prints_them_once_when_space_returns(
        tmp_path: Path, broker: Broker, small_disk: Path) -> None:
    ns = NotifySocket(str(tmp_path / "notify.sock")).start()
    states = Listener(broker.port, f"{ROOT}/edge/state")
    http_port = free_port()
    queued, during = [f"q-{i}" for i in range(8)], [f"f-{i}" for i in range(40)]
    try:
        with kitchen(tmp_path, broker, printers=("hot",), stations=GRILL,
                     daemon_env={"NOTIFY_SOCKET": ns.env_value},
                     printing={"retry_max": 0.5},
                     http={"listen": f"127.0.0.1:{http_port}"}) as k:
            d, printer = k.daemon, k.printers["hot"]
            edge_state(states, "ok", timeout=10)
            assert metric(http_port, "storage_ok") == 1
            # Tickets queued behind a printer out of paper, then the disk fills up.
            printer.set_state("paper_out")
            d.wait_until(lambda: d.scalar(
                "SELECT COUNT(*) FROM printer_states WHERE state='paper_out'") == 1,
                what="paper_out recorded")
            for order_id in queued:
                k.pos.order(created(order_id, item(f"Dish {order_id}")))
            d.wait_until(lambda: d.scalar(
                "SELECT COUNT(*) FROM print_jobs WHERE state='queued'") == len(queued),
                what="jobs queued")
            fill(small_disk)

            # Paper back: the claims cannot be recorded, so nothing prints, and it is said.
            printer.set_state("online")
            claim = d.wait_log("ticket_not_claimed", timeout=20)
            assert claim["storage"] == "full"
            body = edge_state(states, "degraded: disk full", timeout=10)
            assert body["state"] == "online" and body["storage"] == "full"
            ns.wait_for("READY", "1")
            deadline = time.monotonic() + 10
            while not any(r.fields.get("STATUS", "").startswith("degraded: disk full")
                          for r in ns.got):
                assert time.monotonic() < deadline, [r.fields for r in ns.got]
                time.sleep(0.05)
            assert metric(http_port, "storage_ok") == 0
            board = httpx.get(f"http://127.0.0.1:{http_port}/status", timeout=5).json()
            assert board["storage"]["health"] == "degraded: disk full"

            # A stream of orders meanwhile: none stored, none acknowledged, none lost.
            for order_id in during:
                k.pos.order(created(order_id, item(f"Dish {order_id}")))
                time.sleep(0.01)
            held = d.wait_log("events_not_stored", timeout=10)
            assert held["storage"] == "full" and held["events"] >= 1
            time.sleep(1.0)
            assert k.tickets("hot") == [], "a ticket printed without a durable claim"
            assert d.scalar("SELECT COUNT(*) FROM orders") == len(queued)
            assert d.scalar("SELECT COUNT(*) FROM print_jobs WHERE state='sending'") == 0
            assert d.proc is not None and d.proc.poll() is None, "the daemon must not exit"

            free(small_disk)
            d.wait_log("storage_recovered", timeout=20)
            d.wait_until(lambda: d.scalar(
                "SELECT COUNT(*) FROM print_jobs WHERE state='printed'")
                == len(queued) + len(during), timeout=30, what="every ticket printed")
            assert states.messages[-1][1]["health"] == "ok"
            assert metric(http_port, "storage_ok") == 1
            assert d.proc is not None and d.proc.poll() is None, "the daemon must not exit"
            tickets = k.tickets("hot")
            lines = list(d.lines)
        seen = printed_once_grill(tickets, queued + during)
        assert all(n == 1 for n in seen.values()), seen
        events = [line.get("event") for line in lines]
        assert "daemon_failed" not in events and "message_crashed_intake" not in events
        assert events.count("daemon_starting") == 1, "recovered without a restart"
    finally:
        states.close()
        ns.close()


def test_started_on_a_full_disk_it_waits_to_open_the_database_and_does_not_exit(
        tmp_path: Path, broker: Broker, small_disk: Path) -> None:
    """After a clean stop the WAL's files are gone; on a full disk the next start cannot make
    them (SQLITE_IOERR_SHMSIZE). Exiting would be systemd's restart loop: it waits."""
    ns = NotifySocket(str(tmp_path / "notify.sock")).start()
    d = DaemonProc(write_config(tmp_path / "station.yaml", broker_port=broker.port),
                   env={"NOTIFY_SOCKET": ns.env_value})
    try:
        d.start()
        assert d.stop() == 0
        fill(small_disk)
        d.start(wait_ready=False)
        refused = d.wait_log("database_not_opened", timeout=20)
        assert refused["storage"] in ("full", "io_error")
        status = ns.wait_for("EXTEND_TIMEOUT_USEC")
        assert status.fields["STATUS"].startswith("degraded: disk")
        time.sleep(1.5)
        assert d.proc is not None and d.proc.poll() is None, "it must not exit"
        assert d.stop() == 0, "a SIGTERM while it waits is a clean stop"
        d.start(wait_ready=False)
        d.wait_log("database_not_opened", timeout=20)
        free(small_disk)
        d.wait_log("daemon_ready", timeout=30)
        with contextlib.closing(Publisher(broker.port)) as pos:
            pos.order(created("late-1"))
        d.wait_until(lambda: d.scalar("SELECT COUNT(*) FROM orders") == 1, timeout=20,
                     what="the order stored")
        assert d.stop() == 0
    finally:
        d.kill()
        ns.close()


def test_a_sigterm_while_the_disk_is_full_stops_soon_and_the_broker_keeps_the_orders(
        tmp_path: Path, broker: Broker, small_disk: Path) -> None:
    d = DaemonProc(write_config(tmp_path / "station.yaml", broker_port=broker.port))
    try:
        d.start()
        fill(small_disk)
        with contextlib.closing(Publisher(broker.port)) as pos:
            for i in range(5):
                pos.order(created(f"t-{i}"))
        d.wait_log("events_not_stored", timeout=20)
        began = time.monotonic()
        assert d.stop() == 0
        # Nothing between COMMIT and PUBACK, no ticket on its way: no grace to wait out.
        assert time.monotonic() - began < 8.0
        free(small_disk)
        d.start()
        d.wait_until(lambda: d.scalar("SELECT COUNT(*) FROM orders") == 5, timeout=20,
                     what="the orders the broker kept")
    finally:
        d.kill()


def test_sigkill_while_the_disk_is_full_and_while_it_recovers_loses_nothing(
        tmp_path: Path, broker: Broker, small_disk: Path) -> None:
    seed = int(os.environ.get("CRASH_SEED", time.time_ns() % 100_000))
    rng = random.Random(seed)
    print(f"CRASH_SEED={seed}")
    orders = [f"p-{i}" for i in range(90)]
    extra: list[str] = []
    done = threading.Event()

    def publish() -> None:
        pub = Publisher(broker.port, client_id="full-pos")
        try:
            for order_id in orders:
                pub.order(created(order_id, item(f"Dish {order_id}")))
                time.sleep(0.05)
        finally:
            pub.close()
            done.set()

    with kitchen(tmp_path, broker, printers=("hot",), stations=GRILL) as k:
        d: DaemonProc = k.daemon
        thread = threading.Thread(target=publish)
        thread.start()
        kills = full_kills = 0
        try:
            # Fill a little into the stream, kill while full (and restart into the full
            # disk: it must come up and wait, not exit), free, kill while it recovers.
            time.sleep(rng.uniform(0.3, 0.8))
            fill(small_disk)
            d.wait_log("storage_degraded", timeout=30)
            for _ in range(2):
                time.sleep(rng.uniform(0.2, 0.8))
                d.kill()
                kills += 1
                full_kills += 1
                d.start()
                # Restarted on a full disk: up (start() waited for daemon_ready), taking the
                # orders, and finding it cannot store them; it waits, it does not exit. (One
                # order of our own, in case the stream is already over.)
                extra.append(f"x-{full_kills}")
                k.pos.order(created(extra[-1], item(f"Dish {extra[-1]}")))
                d.wait_log("storage_degraded", timeout=20)
            free(small_disk)
            while not done.is_set() or kills < full_kills + 3:
                time.sleep(rng.uniform(0.15, 0.6))
                d.kill()
                kills += 1
                d.start()
            thread.join()
            d.wait_until(lambda: d.scalar(
                "SELECT COUNT(DISTINCT order_id) FROM print_jobs WHERE state='printed'")
                == len(orders) + len(extra), timeout=60, what="every order printed")
            time.sleep(0.5)
            tickets = k.tickets("hot")
        finally:
            done.wait(timeout=30)
        print(f"kills={kills} while_full={full_kills}")
        assert d.scalar("SELECT COUNT(*) FROM orders") == len(orders) + len(extra)
        assert d.scalar("SELECT COUNT(*) FROM dead_letters") == 0
    printed_once_grill(tickets, orders + extra)
