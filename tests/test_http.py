"""The daemon's local HTTP server, spoken to over real TCP while the kitchen works: health,
the public order timeline (the same document as the retained MQTT status), activities, and
the Prometheus metrics, read with prometheus_client's own parser.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from edge.timesync import kernel_synced
from tests.broker import Broker, free_port
from tests.daemon import ROOT, DaemonProc, Listener, created
from tests.fake_upstream import FakeUpstreamProcess
from tests.printing_env import kitchen

SEED_STEPS = ["order_accepted", "routed_to_core", "kitchen_ticket_created",
              "printer_job_created", "confirmation_outboxed"]
GRILL = [{"id": "grill", "printer": "hot", "categories": ["grill"]}]


def item(name: str) -> list[dict[str, object]]:
    return [{"line_id": "l1", "name": name, "qty": 1, "category": "grill"}]


def metrics(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of GET /metrics as {(name, sorted labels): value}."""
    response = httpx.get(f"{base}/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    out = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def metric(values: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
           **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    assert key in values, f"{name}{labels} not exposed: {sorted(k[0] for k in values)}"
    return values[key]


def eventually(d: DaemonProc, check: Callable[[], Any], what: str, timeout: float = 10) -> None:
    d.wait_until(lambda: bool(check()), timeout=timeout, what=what)


def test_health_timeline_activities_and_metrics(tmp_path: Path, broker: Broker) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    fake = FakeUpstreamProcess(tmp_path / "upstream").start()
    statuses = Listener(broker.port, f"{ROOT}/orders/+/status")
    try:
        with kitchen(tmp_path, broker, printers=("hot",), stations=GRILL,
                     http={"listen": f"127.0.0.1:{port}"},
                     upstream={"url": fake.url, "token_file": str(fake.token_file),
                               "backoff_max": 1}) as k:
            d = k.daemon
            health = httpx.get(f"{base}/healthz", timeout=5)
            assert health.status_code == 200
            body = health.json()
            assert (body["status"], body["mqtt"]) == ("ok", "connected")
            # The sd_notify STATUS line; it says so first while the kernel clock is unsynced.
            unsynced = "" if kernel_synced() else "clock not synced; "
            assert body["summary"].startswith(f"{unsynced}printers ")

            for i in range(3):
                k.pos.order(created(f"h-{i}", item(f"Dish {i}"), channel="qr_menu"))
            k.pos.send(f"{ROOT}/orders/h-9/events", b"not json at all")
            k.wait_tickets("hot", 3)
            eventually(d, lambda: d.scalar(
                "SELECT COUNT(*) FROM outbox WHERE state='pending'") == 0, "outbox sent")

            # The timeline: five seed-000 steps, and the very document retained on MQTT.
            timeline = httpx.get(f"{base}/orders/h-0/timeline", timeout=5).json()
            assert [s["key"] for s in timeline["steps"]] == SEED_STEPS
            assert [s["sequence"] for s in timeline["steps"]] == [1, 2, 3, 4, 5]
            assert timeline["steps"][3]["evidence"] == "h-0/new/grill"
            assert timeline["steps"][4]["evidence"] == "confirmation:h-0"
            assert timeline["last_status"] == "Confirmation recorded"
            assert all(timeline["checks"].values()) and timeline["read_only"] is True
            assert timeline["channel"] == "qr_menu"

            def last_status(order_id: str) -> Any:
                bodies = [b for t, b, _ in list(statuses.messages)
                          if t == f"{ROOT}/orders/{order_id}/status"]
                return bodies[-1] if bodies else None

            eventually(d, lambda: last_status("h-0") == timeline,
                       "retained status equal to the HTTP timeline", timeout=5)
            late = Listener(broker.port, f"{ROOT}/orders/h-0/status")
            try:
                assert late.wait_for(lambda _t, _b: True) == timeline
                assert late.messages[0][2] is True          # retained
            finally:
                late.close()

            # Unknown order 404, an id the contract forbids 400, for both views.
            for view in ("timeline", "activities"):
                assert httpx.get(f"{base}/orders/nope/{view}", timeout=5).status_code == 404
                bad = httpx.get(f"{base}/orders/bad%20id!/{view}", timeout=5)
                assert bad.status_code == 400, bad.text
                long = httpx.get(f"{base}/orders/{'x' * 129}/{view}", timeout=5)
                assert long.status_code == 400

            # Activities: the order's own log, in order.
            acts = httpx.get(f"{base}/orders/h-0/activities", timeout=5).json()
            assert acts["order_id"] == "h-0"
            whats = [a["what"] for a in acts["activities"]]
            assert whats[0] == "Order created"
            assert any(w.startswith("NEW ticket printed at hot") for w in whats), whats
            assert acts["activities"][0]["channel"] == "qr_menu"
            assert acts["activities"][0]["event_id"] == "evt-h-0-created"

            # The status page's sections, as the components registered them.
            status = httpx.get(f"{base}/status", timeout=5).json()
            # OpenApp's topics are always there (CONTRACT section 11), so is its section;
            # retention is on by default (docs/retention.md).
            assert set(status) == {"printers", "upstream", "openapp", "storage", "retention"}
            assert status["storage"]["health"] == "ok"
            assert status["retention"]["days"] == 30
            assert status["openapp"]["unsent"] == 0
            hot = status["printers"]["printers"][0]
            assert (hot["printer_id"], hot["state"], hot["stations"]) == (
                "hot", "online", ["grill"])
            assert status["printers"]["printed"] == 3
            assert status["upstream"]["wan"] == "up"
            assert status["upstream"]["backlog"] == 0 and status["upstream"]["parked"] == 0
            assert status["upstream"]["records_accepted"] >= 3
            assert status["upstream"]["consecutive_failures"] == 0

            # Metrics after three printed orders and one dead letter, upstream reachable.
            m = metrics(base)
            assert metric(m, "events_ingested_total", type="order.created") == 3
            assert metric(m, "events_dead_lettered_total", reason_kind="invalid_json") == 1
            assert metric(m, "print_jobs", state="printed") == 3
            assert metric(m, "print_jobs", state="queued") == 0
            assert metric(m, "event_to_print_seconds_count") == 3
            assert metric(m, "event_to_print_seconds_bucket", le="+Inf") == 3
            assert 0 < metric(m, "event_to_print_seconds_sum") < 3 * 10
            assert metric(m, "event_to_print_seconds_bucket", le="10.0") == 3
            assert metric(m, "printer_up", printer="hot") == 1
            assert metric(m, "outbox_backlog") == 0
            assert metric(m, "outbox_oldest_unsent_age_seconds") == 0
            assert metric(m, "wan_up") == 1

            # Paper out, then WAN cut while orders keep coming: the gauges follow.
            k.printers["hot"].set_state("paper_out")
            eventually(d, lambda: metric(metrics(base), "printer_up", printer="hot") == 0,
                       "printer_up 0")
            fake.set_fault("down")
            k.pos.order(created("h-3", item("Dish 3")))
            eventually(d, lambda: metric(metrics(base), "wan_up") == 0, "wan_up 0")
            eventually(d, lambda: metric(metrics(base), "print_jobs", state="queued") == 1,
                       "h-3 queued")
            time.sleep(0.3)
            m = metrics(base)
            backlog = d.scalar("SELECT COUNT(*) FROM outbox WHERE state='pending'")
            assert backlog >= 1 and metric(m, "outbox_backlog") == backlog
            assert metric(m, "outbox_oldest_unsent_age_seconds") >= 0.3
            assert metric(m, "print_jobs", state="printed") == 3
            assert metric(m, "events_ingested_total", type="order.created") == 4

            # The broker goes away: health says so.
            broker.stop()
            eventually(d, lambda: httpx.get(f"{base}/healthz", timeout=5).json()["mqtt"]
                       == "disconnected", "healthz disconnected")
            assert httpx.get(f"{base}/healthz", timeout=5).json()["status"] == "degraded"
    finally:
        statuses.close()
        fake.stop()
