"""SIGKILL the daemon at random moments during a stream of 2,000 events (with repeated
event_ids mixed in), restart it each time: every event is applied exactly once."""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path

from tests.broker import Broker
from tests.daemon import DaemonProc, Publisher, created, event, write_config

ORDERS = 1000          # each: order.created + order.items_added = 2,000 distinct events
REPEATS = 300


def test_sigkill_during_stream_applies_every_event_exactly_once(tmp_path: Path,
                                                               broker: Broker) -> None:
    seed = int(os.environ.get("CRASH_SEED", time.time_ns() % 100_000))
    rng = random.Random(seed)
    print(f"CRASH_SEED={seed}")
    stream = []
    for i in range(ORDERS):
        stream.append(created(f"k-{i}"))
        stream.append(event(f"k-{i}", "order.items_added",
                            {"batch_id": "round-2", "items": [
                                {"line_id": "l2", "name": "Ayran", "qty": 1,
                                 "category": "drinks"}]}))
    # Repeats: an event sent again later with the same event_id (a publisher's retry).
    for _ in range(REPEATS):
        k = rng.randrange(len(stream) // 2)
        stream.insert(rng.randrange(2 * k + 2, len(stream) + 1), stream[2 * k])
    d = DaemonProc(write_config(tmp_path / "station.yaml", broker_port=broker.port))
    done = threading.Event()

    def publish() -> None:
        pub = Publisher(broker.port)
        try:
            for start in range(0, len(stream), 40):
                infos = [pub.order(e, wait=False) for e in stream[start:start + 40]]
                for info in infos:
                    info.wait_for_publish(timeout=30)
                # Spread the stream over several seconds so the kills land inside it.
                time.sleep(0.12)
        finally:
            pub.close()
            done.set()

    kills = 0
    d.start()
    thread = threading.Thread(target=publish)
    thread.start()
    try:
        # A start is slow on a loaded machine: at least three kills, in the stream or, if it
        # was quicker, while the backlog it left is applied.
        while not done.is_set() or kills < 3:
            time.sleep(rng.uniform(0.2, 0.9))
            d.kill()
            kills += 1
            d.start()
        thread.join()
        d.wait_until(lambda: d.scalar("SELECT COUNT(*) FROM events WHERE applied = 1")
                     == 2 * ORDERS, timeout=90, what="all events applied")
        time.sleep(0.5)   # nothing more may arrive: the repeats are absorbed, not applied
    finally:
        d.kill()
    print(f"kills={kills}")
    assert d.scalar("SELECT COUNT(*) FROM events") == 2 * ORDERS
    assert d.scalar("SELECT COUNT(*) FROM orders") == ORDERS
    assert d.scalar("SELECT COUNT(*) FROM order_lines") == 2 * ORDERS
    assert d.scalar("SELECT COUNT(*) FROM dead_letters") == 0
    # Applied once: one activity entry per event, one NEW and one ADDED job per order.
    assert d.query("SELECT event_id, COUNT(*) FROM activities WHERE event_id IS NOT NULL "
                   "GROUP BY event_id HAVING COUNT(*) != 1") == []
    assert d.scalar("SELECT COUNT(*) FROM activities WHERE event_id IS NOT NULL") == 2 * ORDERS
    assert d.query("SELECT kind, COUNT(*) FROM print_jobs GROUP BY kind ORDER BY kind") == [
        ("ADDED", ORDERS), ("NEW", ORDERS)]
    assert d.scalar("SELECT COUNT(*) FROM outbox WHERE kind='confirmation'") == ORDERS
