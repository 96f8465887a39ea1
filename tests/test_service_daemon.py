"""The real daemon as systemd runs it, and behind the shipped Mosquitto configuration.

sd_notify: the daemon runs as a subprocess with NOTIFY_SOCKET pointing at an AF_UNIX datagram
socket this test owns (read by a thread, the way systemd's notify handler reads it) and
WATCHDOG_USEC=400000, so a healthy loop pings every 0.2 s. Two stalls are tried:

* SIGSTOP for 1.2 s: the whole process is frozen. Any pinger stops then, so this only shows
  the pings resume afterwards; it is not proof that a stuck *event loop* is noticed.
* A stalled event loop with the rest of the process alive: a `sitecustomize` module, put on
  the daemon's PYTHONPATH by this test (the daemon's code is not touched), installs a SIGUSR1
  handler that sleeps 1.2 s. Python runs signal handlers on the main thread, which is the
  thread running the asyncio loop, so the loop is blocked exactly like a synchronous call
  that hangs, while aiosqlite's and the kernel's side keep going. The pings must stop.

The Mosquitto test runs config/mosquitto.conf and config/mosquitto.acl unchanged except for
ports and paths (the rewrite of tests/test_mosquitto_conf.py) with a password file made by
mosquitto_passwd, and the daemon logs in as `kitchen-edge`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import queue
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from edge.timesync import kernel_synced
from tests.broker import Broker
from tests.daemon import ROOT, DaemonProc, Publisher, created, write_config
from tests.test_mosquitto_conf import (
    NOT_AUTHORIZED,
    PASSWORDS,
    SUCCESS,
    Client,
    KitchenBroker,
)
from tests.test_sdnotify import NotifySocket, Received

WATCHDOG_USEC = 400_000          # a ping every 0.2 s
PING = WATCHDOG_USEC / 2 / 1_000_000
STALL = 1.2

STALL_HOOK = f"""\
# Test instrumentation loaded into the daemon process only (through PYTHONPATH): SIGUSR1
# blocks the main thread, i.e. the asyncio event loop, for {STALL} s.
import signal
import time


def _stall(_signum, _frame):
    time.sleep({STALL})


signal.signal(signal.SIGUSR1, _stall)
"""


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    ns = NotifySocket(str(tmp_path / "notify.sock")).start()
    yield ns
    ns.close()


def _pings(ns: NotifySocket, after: float = 0.0, before: float = float("inf")) -> list[float]:
    return [r.at for r in list(ns.got) if "WATCHDOG" in r.fields and after <= r.at < before]


def _wait(check: Callable[[], bool], timeout: float, what: str, d: DaemonProc) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        assert d.proc is not None and d.proc.poll() is None, f"daemon exited: {d.tail()}"
        time.sleep(0.02)
    raise AssertionError(f"{what} not seen in {timeout}s; daemon log:\n{d.tail()}")


def _first(ns: NotifySocket, key: str, value: str | None = None) -> Received | None:
    for r in list(ns.got):
        if key in r.fields and (value is None or r.fields[key] == value):
            return r
    return None


def _assert_stall_silences_pings(ns: NotifySocket, d: DaemonProc, stall: Callable[[], None],
                                 how: str) -> None:
    _wait(lambda: len(_pings(ns, after=time.monotonic() - 1.0)) >= 3, 3, "steady pings", d)
    t0 = time.monotonic()
    stall()
    t1 = t0 + STALL
    # Pings come back after the stall: the loop's overdue sleep fires at once.
    _wait(lambda: len(_pings(ns, after=t1)) >= 3, 5, f"pings after {how}", d)
    # A datagram sent just before the stall may be read a moment later by our thread.
    during = _pings(ns, after=t0 + 0.1, before=t1 - 0.05)
    assert during == [], f"{len(during)} WATCHDOG pings while {how}"
    resumed = _pings(ns, after=t1 - 0.05)[0]
    assert resumed - t1 < 0.6, f"pings resumed {resumed - t1:.2f}s after {how} ended"
    before = _pings(ns, after=t0 - 1.0, before=t0)
    gaps = [b - a for a, b in itertools.pairwise(before)]
    assert gaps and max(gaps) < 4 * PING, f"irregular pings before {how}: {gaps}"


def test_ready_after_broker_watchdog_status_stall_and_stopping(
        tmp_path: Path, notify_socket: NotifySocket) -> None:
    ns = notify_socket
    broker = Broker(tmp_path / "broker")          # port chosen, not started yet
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(STALL_HOOK)
    cfg = write_config(tmp_path / "station.yaml", broker_port=broker.port)
    d = DaemonProc(cfg, env={
        "NOTIFY_SOCKET": ns.env_value, "WATCHDOG_USEC": str(WATCHDOG_USEC),
        # Notifier pings only when WATCHDOG_PID is unset or names this very process.
        "WATCHDOG_PID": "", "PYTHONPATH": str(hook)})
    pos: Publisher | None = None
    try:
        d.start(wait_ready=False)
        assert d.proc is not None
        pid = d.proc.pid
        # 1. The loop runs (the watchdog is pinged) but there is no broker: not READY.
        _wait(lambda: len(_pings(ns)) >= 5, 10, "watchdog pings before the broker is up", d)
        d.wait_log("mqtt_disconnected", timeout=5)
        assert _first(ns, "READY") is None, "READY=1 before the first broker connection"
        assert not any(line.get("event") == "daemon_ready" for line in d.lines)

        # 2. The broker comes up: READY=1, with a STATUS line, after the connection.
        broker_up = time.monotonic()
        broker.start()
        _wait(lambda: _first(ns, "READY", "1") is not None, 15, "READY=1", d)
        ready = _first(ns, "READY", "1")
        assert ready is not None and ready.at > broker_up
        assert d.wait_log("mqtt_connected", timeout=1)
        # The daemon reads the kernel's sync state (docs/clock.md): STATUS says it when unsynced.
        unsynced = "" if kernel_synced() else "clock not synced; "
        assert ready.fields.get("STATUS", "") == (
            f"{unsynced}printers 0/1 up; printed 0; events 0; wan n/a"), ready.fields

        # 3. STATUS follows the kitchen: an ingested event shows up in the next ping.
        pos = Publisher(broker.port)
        pos.order(created("sd-1"))
        _wait(lambda: any("events 1" in r.fields.get("STATUS", "") for r in list(ns.got)),
              5, "STATUS with events 1", d)
        assert all(r.fields["WATCHDOG"] == "1" for r in ns.got if "WATCHDOG" in r.fields)

        # 4. Whole process frozen (SIGSTOP), then the event loop alone blocked (SIGUSR1 hook).
        def freeze() -> None:
            os.kill(pid, signal.SIGSTOP)
            try:
                time.sleep(STALL)
            finally:
                os.kill(pid, signal.SIGCONT)

        _assert_stall_silences_pings(ns, d, freeze, "the process was stopped")

        def block_loop() -> None:
            os.kill(pid, signal.SIGUSR1)
            time.sleep(STALL)
            assert d.proc is not None and d.proc.poll() is None

        _assert_stall_silences_pings(ns, d, block_loop, "the event loop was blocked")

        # 5. SIGTERM: STOPPING=1, then exit 0.
        assert d.stop() == 0
        stopping = _first(ns, "STOPPING", "1")
        assert stopping is not None and stopping.at > ready.at
        assert any(line.get("event") == "daemon_stopped" for line in d.lines)
    finally:
        if pos is not None:
            pos.close()
        d.kill()
        broker.stop()


# -- behind the shipped Mosquitto configuration ----------------------------------------------

pytestmark_mosquitto = pytest.mark.skipif(
    shutil.which("mosquitto_passwd") is None, reason="mosquitto_passwd is not installed")


@pytestmark_mosquitto
def test_daemon_behind_shipped_mosquitto_conf_and_publisher_acl(tmp_path: Path) -> None:
    kb = KitchenBroker(tmp_path / "mosquitto")
    kb.prepare()
    kb.start()
    secret = tmp_path / "mqtt.pass"
    secret.write_text(PASSWORDS["kitchen-edge"] + "\n")
    cfg = write_config(tmp_path / "station.yaml", broker_port=kb.lan_port,
                       mqtt={"username": "kitchen-edge", "password_file": str(secret)})
    d = DaemonProc(cfg)
    clients: list[Client] = []
    try:
        d.start(timeout=15)
        pos = Client("pos-1")
        clients.append(pos)
        assert pos.connect(kb.lan_port, "publisher", PASSWORDS["publisher"])[0] == SUCCESS
        assert pos.subscribe(f"{ROOT}/orders/+/status") == [1]
        assert pos.subscribe(f"{ROOT}/edge/state") == [1]

        # An order from the POS with the publisher's credentials is ingested...
        assert pos.publish(f"{ROOT}/orders/o1/events", json.dumps(created("o1"))) == SUCCESS
        d.wait_until(lambda: d.scalar("SELECT COUNT(*) FROM print_jobs WHERE order_id='o1'")
                     == 1, what="o1 ingested")
        # ...and the daemon's retained status and presence reach the publisher.
        inbox = Inbox(pos)
        status = inbox.json(f"{ROOT}/orders/o1/status")
        assert status["order_id"] == "o1"
        assert [s["key"] for s in status["steps"]][:3] == [
            "order_accepted", "routed_to_core", "kitchen_ticket_created"]
        assert inbox.json(f"{ROOT}/edge/state")["state"] == "online"

        # The publisher may not forge the order's status nor send a reprint command.
        forged = json.dumps({"order_id": "o1", "steps": [], "forged": True})
        assert pos.publish(f"{ROOT}/orders/o1/status", forged, retain=True) == NOT_AUTHORIZED
        reprint = json.dumps({"command_id": "forged-1", "job_key": "o1/new/grill"})
        assert pos.publish(f"{ROOT}/commands/reprint", reprint) == NOT_AUTHORIZED
        assert pos.publish(f"{ROOT}/edge/state", b'{"state":"offline"}',
                           retain=True) == NOT_AUTHORIZED
        # One publisher's messages arrive in order: once this sentinel order is applied, the
        # refused reprint would have been applied before it.
        assert pos.publish(f"{ROOT}/orders/o2/events", json.dumps(created("o2"))) == SUCCESS
        d.wait_until(lambda: d.scalar("SELECT COUNT(*) FROM events WHERE order_id='o2'") == 1,
                     what="sentinel o2 ingested")
        assert d.scalar("SELECT COUNT(*) FROM commands") == 0
        assert d.scalar("SELECT COUNT(*) FROM print_jobs WHERE reprint_of IS NOT NULL") == 0
        assert d.scalar("SELECT COUNT(*) FROM dead_letters") == 0

        # The retained status a newcomer reads is still the daemon's, not the forgery.
        late = Client("qr-bridge")
        clients.append(late)
        assert late.connect(kb.lan_port, "publisher", PASSWORDS["publisher"])[0] == SUCCESS
        late.subscribe(f"{ROOT}/orders/o1/status")
        (retained,) = late.receive(1)
        body = json.loads(retained.payload)
        assert retained.retain and "forged" not in body and body["order_id"] == "o1"
        assert all(b"forged" not in m.payload and b"offline" not in m.payload
                   for m in inbox.all())
        assert d.stop() == 0
    finally:
        for c in clients:
            c.close()
        d.kill()
        kb.stop()


class Inbox:
    """Everything a test client received, looked up by topic (in arrival order)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.seen: list[mqtt.MQTTMessage] = []

    def _pull(self, timeout: float) -> None:
        with contextlib.suppress(queue.Empty):
            self.seen.append(self.client.messages.get(timeout=timeout))
        while not self.client.messages.empty():
            self.seen.append(self.client.messages.get_nowait())

    def json(self, topic: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for msg in self.seen:
                if msg.topic == topic:
                    body: dict[str, Any] = json.loads(msg.payload)
                    return body
            if time.monotonic() > deadline:
                raise AssertionError(f"nothing on {topic} in {timeout}s: "
                                     f"{[m.topic for m in self.seen]}")
            self._pull(0.05)

    def all(self) -> list[mqtt.MQTTMessage]:
        self._pull(0.0)
        return list(self.seen)
