"""Ingest against a real Mosquitto: apply, dedupe, dead-letter, presence, and the three
aiomqtt traps (early PUBACK, clean start on connect, a full queue dropping messages)."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.broker import Broker
from tests.daemon import ROOT, DaemonProc, Listener, Publisher, created, event, write_config


@pytest.fixture
def daemon(tmp_path: Path, broker: Broker) -> Iterator[DaemonProc]:
    d = DaemonProc(write_config(tmp_path / "station.yaml", broker_port=broker.port))
    try:
        yield d
    finally:
        d.kill()


@pytest.fixture
def pos(broker: Broker) -> Iterator[Publisher]:
    p = Publisher(broker.port)
    yield p
    p.close()


def count(d: DaemonProc, sql: str, *args: object) -> int:
    return int(d.scalar(sql, args))


def test_event_applied_once_and_same_change_under_new_id_makes_no_new_job(
        daemon: DaemonProc, pos: Publisher) -> None:
    daemon.start()
    pos.order(created("qr-7001", channel="qr_menu"))
    pos.order(created("qr-7001", channel="qr_menu"))                   # broker redelivery
    pos.order(created("qr-7001", channel="qr_menu", event_id="retry-2"))  # new id, same change
    daemon.wait_until(lambda: count(daemon, "SELECT COUNT(*) FROM events WHERE applied = 1") == 2,
                      what="2 events applied")
    assert count(daemon, "SELECT COUNT(*) FROM print_jobs") == 1
    assert count(daemon, "SELECT COUNT(*) FROM outbox WHERE kind='confirmation'") == 1
    assert daemon.query("SELECT status, channel FROM orders") == [("created", "qr_menu")]


BIG = json.dumps(event("o1", "order.created", {"note": "x" * (256 * 1024)}))


@pytest.mark.parametrize(
    ("topic_order", "payload", "reason"),
    [
        ("o1", b"{not json", "payload is not valid JSON"),
        ("o1", b"\xff\xfe", "payload is not UTF-8"),
        ("o1", b"[1, 2]", "payload must be a JSON object"),
        ("o1", json.dumps({**event("o1", "order.created", {}), "event_id": "bad id!"}).encode(),
         "schema: event_id"),
        ("o1", json.dumps(event("o1", "order.created", {"fulfillment": {"type": "dine_in"},
                                                       "items": [{"line_id": "a", "name": "x",
                                                                  "qty": 0}]})).encode(),
         "schema: data.items[0].qty"),
        ("o1", json.dumps(event("o1", "order.created", {"items": []})).encode(),
         "schema: data.fulfillment: required field is missing"),
        ("o1", BIG.encode(), "the limit is 262144"),
        ("o2", json.dumps(event("o1", "order.ready", {})).encode(),
         "order_id 'o1' does not match the topic's 'o2'"),
        ("o1", json.dumps(event("o1", "order.teleported", {})).encode(),
         "unknown event type 'order.teleported'"),
        ("o1", json.dumps(event("o1", "order.ready", {})).encode(), "order 'o1' is unknown"),
        ("o1", json.dumps({**event("o1", "order.ready", {}),
                           "source": {"channel": "fax"}}).encode(), "schema: source.channel"),
        # Poison messages: valid enough to get far, each used to crash the intake.
        ("o1", b"[" * 100_000, "nested too deeply"),
        ("o1", json.dumps({**event("o1", "order.ready", {}),
                           "occurred_at": "0001-01-01T00:00:00+01:00"}).encode(),
         "schema: occurred_at: must be a time between the years 2000 and 2200"),
        ("o1", json.dumps(event("o1", "order.created", {
            "fulfillment": {"type": "pickup"}, "scheduled_for": "0001-01-01T00:00:00Z",
            "items": [{"line_id": "a", "name": "x", "qty": 1}]})).encode(),
         "schema: data.scheduled_for: must be a time between the years 2000 and 2200"),
    ],
)
def test_rejected_input_is_dead_lettered_and_the_daemon_carries_on(
        daemon: DaemonProc, pos: Publisher, broker: Broker, topic_order: str, payload: bytes,
        reason: str) -> None:
    daemon.start()
    dead = Listener(broker.port, f"{ROOT}/dead-letter")
    try:
        time.sleep(0.2)
        topic = f"{ROOT}/orders/{topic_order}/events"
        pos.send(topic, payload)
        got = dead.wait_for(lambda _t, body: isinstance(body, dict) and reason in body["reason"])
        assert got["topic"] == topic
        assert len(got["payload"].encode()) <= 4096 + 4   # cut to 4 KiB (+ replacement chars)
        assert got["received_at"].endswith("Z")
        rows = daemon.query("SELECT reason, payload_size FROM dead_letters")
        assert len(rows) == 1 and reason in rows[0][0] and rows[0][1] == len(payload)
        # Still serving: a good order after the bad one is applied.
        pos.order(created("after-bad"))
        daemon.wait_until(lambda: count(daemon, "SELECT COUNT(*) FROM orders "
                                        "WHERE order_id='after-bad'") == 1, what="good order")
    finally:
        dead.close()


def test_forbidden_transition_is_dead_lettered_with_the_seed_wording(
        daemon: DaemonProc, pos: Publisher) -> None:
    daemon.start()
    pos.order(created("o9"))
    pos.order(event("o9", "order.completed", {}))
    daemon.wait_until(lambda: count(daemon, "SELECT COUNT(*) FROM dead_letters") == 1)
    assert daemon.scalar("SELECT reason FROM dead_letters") == \
        'Cannot transition from "created" to "completed"'
    assert daemon.scalar("SELECT status FROM orders") == "created"


def test_presence_online_then_offline_on_clean_stop_and_as_last_will(
        daemon: DaemonProc, broker: Broker) -> None:
    states = Listener(broker.port, f"{ROOT}/edge/state")
    try:
        daemon.start()
        states.wait_for(lambda _t, b: b.get("state") == "online")
        assert daemon.stop() == 0
        states.wait_for(lambda _t, b: b.get("state") == "offline")
        states.messages.clear()
        daemon.start()
        states.wait_for(lambda _t, b: b.get("state") == "online")
        daemon.kill()                                  # no goodbye: the broker's Last Will
        states.wait_for(lambda _t, b: b.get("state") == "offline", timeout=15)
    finally:
        states.close()
    # The retained value is what a late subscriber sees.
    late = Listener(broker.port, f"{ROOT}/edge/state")
    try:
        body = late.wait_for(lambda _t, b: True)
        assert body["state"] == "offline" and body["version"]
    finally:
        late.close()


class DbLock:
    """Holds the SQLite write lock from outside, so the daemon cannot commit."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(str(path), isolation_level=None, timeout=30)
        self.conn.execute("BEGIN IMMEDIATE")

    def release(self) -> None:
        self.conn.execute("ROLLBACK")
        self.conn.close()


def test_trap_no_puback_before_commit(daemon: DaemonProc, pos: Publisher) -> None:
    """aiomqtt 2.x lets paho acknowledge on receipt. Here the daemon receives the event but
    cannot commit it; we SIGKILL it. Had it acknowledged, the broker would have dropped the
    message and the restarted daemon would never see it."""
    daemon.start()
    lock = DbLock(daemon.db)
    try:
        pos.order(created("early-ack"))
        time.sleep(1.0)                       # delivered to the daemon, stuck on the lock
        daemon.kill()
    finally:
        lock.release()
    assert count(daemon, "SELECT COUNT(*) FROM events") == 0
    daemon.start()
    daemon.wait_until(lambda: count(daemon, "SELECT COUNT(*) FROM events") == 1,
                      what="redelivered event")


def test_trap_session_survives_restart(daemon: DaemonProc, pos: Publisher) -> None:
    """With aiomqtt's default clean_start (first connect only) the broker would discard
    everything queued for us while we were down."""
    daemon.start()
    daemon.stop()
    for i in range(50):
        pos.order(created(f"while-stopped-{i}"))
    daemon.kill()
    daemon.start()
    daemon.wait_until(lambda: count(daemon, "SELECT COUNT(*) FROM orders") == 50,
                      what="orders queued while stopped")


def test_trap_full_queue_never_drops_acknowledged_messages(daemon: DaemonProc,
                                                          pos: Publisher) -> None:
    """The daemon is stalled (database locked) while 1,500 events arrive: far more than any
    in-memory queue bound. Flow control is the broker's Receive Maximum, so nothing is
    dropped and every event is applied once the stall ends."""
    daemon.start()
    lock = DbLock(daemon.db)
    try:
        infos = [pos.order(created(f"burst-{i}"), wait=False) for i in range(1500)]
        for info in infos:
            info.wait_for_publish(timeout=20)
        time.sleep(1.0)
    finally:
        lock.release()
    daemon.wait_until(lambda: count(daemon, "SELECT COUNT(*) FROM orders") == 1500,
                      timeout=60, what="1500 orders")


def test_broker_restart_mid_stream_loses_nothing(daemon: DaemonProc, broker: Broker) -> None:
    daemon.start()
    total = 600
    sent: list[int] = []

    def publish_all() -> None:
        pub: Publisher | None = None
        i = 0
        while i < total:
            try:
                if pub is None:
                    pub = Publisher(broker.port, client_id="restart-pos")
                info = pub.order(created(f"rs-{i}"), wait=False)
                info.wait_for_publish(timeout=2)
                if info.is_published():
                    sent.append(i)
                    i += 1
                    continue
            except (OSError, RuntimeError, ValueError):
                pass
            if pub is not None:
                with contextlib.suppress(Exception):  # the broker is going away under it
                    pub.close()
                pub = None
            time.sleep(0.1)
        if pub is not None:
            pub.close()

    thread = threading.Thread(target=publish_all)
    thread.start()
    while len(sent) < total // 3:
        time.sleep(0.01)
    broker.restart()
    thread.join(timeout=90)
    assert not thread.is_alive()
    daemon.wait_until(lambda: count(daemon, "SELECT COUNT(*) FROM orders") == total,
                      timeout=60, what="all orders after broker restart")
    daemon.wait_log("mqtt_connected", where=lambda _: True)
    assert count(daemon, "SELECT COUNT(*) FROM events") == total
