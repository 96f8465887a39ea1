"""Config reload in the running daemon: SIGHUP or a changed file, valid or not.

A valid file restarts the daemon's pieces in-process: the jobs queued in SQLite and the MQTT
session on the broker outlive them, so nothing queued is lost and events published while the
daemon reconnects still arrive. The broker in the main test logs at debug level so the test
can read, from Mosquitto itself, that the reconnect resumed the session (`Sending CONNACK to
<client> (1, 0)`: session present 1). An invalid file is refused (logged with its problems and
published retained on `{root}/edge/config`) and the old configuration keeps the kitchen going.
"""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.broker import Broker, free_port
from tests.daemon import ROOT, SITE, DaemonProc, Listener, Publisher, created
from tests.printing_env import Kitchen, has_line, job_key_of, kitchen
from tests.test_sdnotify import NotifySocket

GRILL = [{"id": "grill", "printer": "hot", "categories": ["grill"]}]


def item(name: str, category: str = "grill") -> list[dict[str, object]]:
    return [{"line_id": "l1", "name": name, "qty": 1, "category": category}]


@pytest.fixture
def debug_broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path / "broker", extra_conf="log_type debug\n").start()
    try:
        yield b
    finally:
        b.stop()


def _edit_config(d: DaemonProc, change: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = yaml.safe_load(d.config.read_text())
    change(cfg)
    d.config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return cfg


def _pid(d: DaemonProc) -> int:
    assert d.proc is not None and d.proc.poll() is None, d.tail()
    return d.proc.pid


def _count(d: DaemonProc, name: str) -> int:
    return sum(1 for line in list(d.lines) if line.get("event") == name)


def _ready_more_than(d: DaemonProc, n: int) -> bool:
    return _count(d, "daemon_ready") > n


def _paper_out_with_queue(k: Kitchen, orders: list[str]) -> None:
    k.printers["hot"].set_state("paper_out")
    k.daemon.wait_until(lambda: k.daemon.scalar(
        "SELECT COUNT(*) FROM printer_states WHERE printer_id='hot' AND state='paper_out'") == 1,
        timeout=8, what="paper_out recorded")
    for order_id in orders:
        k.pos.order(created(order_id, item(f"Dish {order_id}")))
    k.daemon.wait_until(lambda: k.daemon.scalar(
        "SELECT COUNT(*) FROM print_jobs WHERE state='queued'") == len(orders),
        what="jobs queued")


def test_sighup_with_a_valid_config_keeps_queued_jobs_and_the_session(
        tmp_path: Path, debug_broker: Broker) -> None:
    ns = NotifySocket(str(tmp_path / "notify.sock")).start()
    http_port = free_port()
    statuses = Listener(debug_broker.port, f"{ROOT}/orders/+/status")
    try:
        with kitchen(tmp_path, debug_broker, printers=("hot",), stations=GRILL,
                     daemon_env={"NOTIFY_SOCKET": ns.env_value},
                     # retry_max: a printer back from paper-out is noticed within 0.5 s.
                     printing={"failover_after": 600, "retry_max": 0.5},
                     http={"listen": f"127.0.0.1:{http_port}"}) as k:
            d = k.daemon
            ns.wait_for("READY", "1")
            queued = [f"q-{i}" for i in range(3)]
            _paper_out_with_queue(k, queued)

            # A second station and another failover time: a real change of the kitchen.
            _edit_config(d, lambda c: (
                c["stations"].append({"id": "pastry", "printer": "hot",
                                      "categories": ["dessert"]}),
                c["printing"].update(failover_after=300)))

            # Orders keep coming while the daemon reloads (its own POS connection).
            streamed = [f"s-{i}" for i in range(20)]

            def stream() -> None:
                pub = Publisher(debug_broker.port, client_id="stream-pos")
                try:
                    for order_id in streamed:
                        pub.order(created(order_id, item(f"Dish {order_id}")))
                        time.sleep(0.025)
                finally:
                    pub.close()

            thread = threading.Thread(target=stream)
            thread.start()
            time.sleep(0.15)
            os.kill(_pid(d), signal.SIGHUP)
            thread.join()
            d.wait_log("config_reloaded", timeout=10)
            d.wait_until(lambda: _count(d, "daemon_ready") == 2, timeout=10,
                         what="ready again after the reload")
            assert _count(d, "mqtt_connected") == 2     # a real reconnect happened

            # The new configuration is in force: a dessert goes to the new station.
            k.pos.order(created("d-1", item("Baklava", "dessert")))
            expected = [*queued, *streamed, "d-1"]
            d.wait_until(lambda: d.scalar("SELECT COUNT(*) FROM print_jobs") == len(expected),
                         what="a job for every order")
            assert d.scalar("SELECT station_id FROM print_jobs WHERE order_id='d-1'") == "pastry"
            assert d.scalar("SELECT COUNT(*) FROM print_jobs WHERE state='queued'") == len(
                expected)
            assert d.scalar("SELECT COUNT(*) FROM events") == len(expected)
            assert d.scalar("SELECT COUNT(*) FROM dead_letters") == 0

            # Mosquitto resumed the daemon's session instead of starting a clean one.
            log = (debug_broker.workdir / "mosquitto.log").read_text(errors="replace")
            connacks = re.findall(rf"Sending CONNACK to edge-{SITE} \((\d), (\d+)\)", log)
            assert connacks == [("0", "0"), ("1", "0")], connacks

            # systemd hears RELOADING=1, then READY=1 once the broker connection is back.
            reloading = ns.wait_for("RELOADING", "1")
            assert int(reloading.fields["MONOTONIC_USEC"]) > 0
            assert any(r.fields.get("READY") == "1" and r.at > reloading.at for r in ns.got)

            # The local HTTP server is back on its port.
            health = httpx.get(f"http://127.0.0.1:{http_port}/healthz", timeout=5).json()
            assert health["mqtt"] == "connected"

            # Paper back: every ticket prints once, the queued ones first, none marked.
            k.printers["hot"].set_state("online")
            tickets = k.wait_tickets("hot", len(expected), timeout=20)
            keys = [job_key_of(t) or "" for t in tickets]
            assert keys[:3] == [f"{o}/new/grill" for o in queued]
            assert sorted(keys) == sorted(
                [f"{o}/new/grill" for o in expected[:-1]] + ["d-1/new/pastry"])
            for t in tickets:
                assert not has_line(t, "MAY BE DUPLICATE") and not has_line(t, "REPRINT"), t
            d.wait_until(lambda: d.scalar(
                "SELECT COUNT(*) FROM print_jobs WHERE state='printed'") == len(expected),
                what="all printed")

            # Every order's public status reached the broker, the reload window included.
            def published() -> set[str]:
                return {t.split("/")[3] for t, b, _ in list(statuses.messages)
                        if isinstance(b, dict) and len(b.get("steps", [])) >= 4}

            try:
                d.wait_until(lambda: published() >= set(expected), timeout=10)
            except TimeoutError:
                raise AssertionError(
                    f"no printed status for {sorted(set(expected) - published())}") from None
    finally:
        statuses.close()
        ns.close()


def test_invalid_config_is_refused_and_the_old_one_keeps_printing(
        tmp_path: Path, broker: Broker) -> None:
    with kitchen(tmp_path, broker, printers=("hot",), stations=GRILL) as k:
        d = k.daemon
        watcher = Listener(broker.port, f"{ROOT}/edge/config")
        try:
            good = d.config.read_text()
            _edit_config(d, lambda c: (c["stations"][0].update(printer="bar2"),
                                       c["printers"][0].update(columns=50)))
            lines = d.config.read_text().splitlines()
            bar2 = next(i for i, x in enumerate(lines, 1) if "printer: bar2" in x)
            cols = next(i for i, x in enumerate(lines, 1) if "columns: 50" in x)
            os.kill(_pid(d), signal.SIGHUP)

            refused = d.wait_log("reload_refused", timeout=5)
            problems = refused["problems"]
            assert f"station.yaml:{bar2} stations[0].printer: unknown printer 'bar2'" in problems
            assert any(p.startswith(f"station.yaml:{cols} printers[0].columns:")
                       for p in problems), problems
            assert refused["level"] == "error"
            body = watcher.wait_for(lambda _t, b: isinstance(b, dict)
                                    and b.get("state") == "refused")
            assert body["problems"] == problems and "at" in body

            # Retained: someone who subscribes later still learns the file was refused.
            late = Listener(broker.port, f"{ROOT}/edge/config")
            try:
                late.wait_for(lambda _t, b: isinstance(b, dict) and b.get("state") == "refused")
                assert all(retain for _, _, retain in late.messages)
            finally:
                late.close()

            # Still running with the old configuration: orders print at the grill.
            assert _count(d, "config_reloaded") == 0
            k.pos.order(created("o-1", item("Adana")))
            ticket = k.wait_tickets("hot", 1)[0]
            assert job_key_of(ticket) == "o-1/new/grill"

            # A fixed file, saved without SIGHUP, is picked up by the file watcher.
            cfg = yaml.safe_load(good)
            cfg["stations"].append({"id": "drinks", "printer": "hot", "categories": ["drinks"]})
            saved = time.monotonic()
            d.config.write_text(yaml.safe_dump(cfg, sort_keys=False))
            d.wait_log("config_reloaded", timeout=6)
            took = time.monotonic() - saved
            assert took < 3.5, f"file change picked up after {took:.1f}s"
            d.wait_until(lambda: _count(d, "daemon_ready") == 2, timeout=10, what="ready again")
            k.pos.order(created("o-2", item("Ayran", "drinks")))
            second = k.wait_tickets("hot", 2)[1]
            assert job_key_of(second) == "o-2/new/drinks"
            assert _count(d, "config_reloaded") == 1
            assert d.proc is not None and d.proc.poll() is None
        finally:
            watcher.close()


def test_a_valid_reload_replaces_the_retained_refusal(tmp_path: Path, broker: Broker) -> None:
    with kitchen(tmp_path, broker, printers=("hot",), stations=GRILL) as k:
        d = k.daemon
        good = d.config.read_text()
        _edit_config(d, lambda c: c["stations"][0].update(printer="bar2"))
        os.kill(_pid(d), signal.SIGHUP)
        d.wait_log("reload_refused", timeout=5)
        d.config.write_text(good + "log_level: info\n")
        os.kill(_pid(d), signal.SIGHUP)
        d.wait_log("config_reloaded", timeout=5)
        d.wait_until(lambda: _count(d, "daemon_ready") == 2, timeout=10, what="ready again")
        time.sleep(0.3)
        # A monitor that connects now must not be told the running config was refused.
        late = Listener(broker.port, f"{ROOT}/edge/+")
        try:
            late.wait_for(lambda t, _b: t.endswith("/edge/state"))
            time.sleep(0.3)
            configs = [b for t, b, _ in late.messages if t.endswith("/edge/config")]
            assert all(isinstance(b, dict) and b.get("state") != "refused" for b in configs), (
                json.dumps(configs))
        finally:
            late.close()


def test_reloads_while_tickets_print_lose_nothing_and_print_nothing_twice(
        tmp_path: Path, broker: Broker) -> None:
    orders = [f"r-{i}" for i in range(100)]
    statuses = Listener(broker.port, f"{ROOT}/orders/+/status")
    try:
        with kitchen(tmp_path, broker, printers=("hot",), stations=GRILL) as k:
            d = k.daemon
            done = threading.Event()

            def stream() -> None:
                pub = Publisher(broker.port, client_id="busy-pos")
                try:
                    for order_id in orders:
                        pub.order(created(order_id, item(f"Dish {order_id}")))
                        time.sleep(0.01)
                finally:
                    pub.close()
                    done.set()

            thread = threading.Thread(target=stream)
            thread.start()
            reloads = 0
            try:
                while not done.is_set():
                    time.sleep(0.1)
                    os.kill(_pid(d), signal.SIGHUP)
                    reloads += 1
                    # Each reload finishes: the new pieces are up (and own the signal handlers).
                    d.wait_until(functools.partial(_ready_more_than, d, reloads), timeout=3,
                                 what=f"reload {reloads} to finish")
            finally:
                thread.join()
            assert reloads >= 5
            d.wait_until(lambda: d.scalar(
                "SELECT COUNT(*) FROM print_jobs WHERE state='printed'") == len(orders),
                timeout=15, what="every job printed")
            time.sleep(0.3)
            tickets = k.tickets("hot")
            marked = [job_key_of(t) for t in tickets if has_line(t, "MAY BE DUPLICATE")]
            assert marked == [], f"clean reloads printed {marked} again"
            assert sorted(job_key_of(t) or "" for t in tickets) == sorted(
                f"{o}/new/grill" for o in orders)

            def printed_status() -> set[str]:
                return {t.split("/")[3] for t, b, _ in list(statuses.messages)
                        if isinstance(b, dict) and len(b.get("steps", [])) >= 4}

            try:
                d.wait_until(lambda: printed_status() >= set(orders), timeout=5)
            except TimeoutError:
                missing = sorted(set(orders) - printed_status())
                raise AssertionError(f"no printed status published for {missing}") from None
    finally:
        statuses.close()


@pytest.mark.parametrize("gap", [0.0, 0.05, 0.3])
def test_sigterm_during_a_reload_is_not_lost(tmp_path: Path, broker: Broker, gap: float) -> None:
    """Signals belong to the process, not to the pieces a reload replaces: a SIGTERM that
    lands while a SIGHUP's reload is under way still stops the daemon cleanly, offline said."""
    with kitchen(tmp_path, broker, printers=("hot",),
                 stations=[{"id": "grill", "printer": "hot", "categories": ["grill"]}]) as k:
        states = Listener(broker.port, f"{ROOT}/edge/state")
        try:
            states.wait_for(lambda _t, b: b.get("state") == "online")
            _edit_config(k.daemon, lambda cfg: cfg["printing"].update(failover_after=7)
                         if "printing" in cfg else cfg.update(printing={"failover_after": 7}))
            os.kill(_pid(k.daemon), signal.SIGHUP)
            time.sleep(gap)
            os.kill(_pid(k.daemon), signal.SIGTERM)
            assert k.daemon.proc is not None
            assert k.daemon.proc.wait(timeout=20) == 0
            try:
                states.wait_for(lambda _t, b: b.get("state") == "offline", timeout=5)
            except TimeoutError:
                raise AssertionError(k.daemon.tail(30)) from None
        finally:
            states.close()
