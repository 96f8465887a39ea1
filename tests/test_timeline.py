"""The public status timeline (CONTRACT section 6, seed 000) over a real SQLite file."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from edge.orders.timeline import build_timeline, looks_personal
from edge.store.db import connect_sync
from edge.store.outbox import add_record

PHONE = "+994 50 123 45 67"
EMAIL = "aysel.m@example.az"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "kitchen-edge.db"


@pytest.fixture
def conn(db_path: Path) -> Iterator[sqlite3.Connection]:
    c = connect_sync(db_path)
    try:
        yield c
    finally:
        c.close()


def event(
    conn: sqlite3.Connection, event_id: str, order_id: str, type_: str, at: str,
    data: dict[str, Any], channel: str = "qr_menu", received_at: str | None = None,
) -> None:
    envelope = {
        "event_id": event_id, "type": type_, "order_id": order_id, "occurred_at": at,
        "source": {"channel": channel, "device": f"{channel}-1"}, "data": data,
    }
    conn.execute(
        "INSERT INTO events (event_id, order_id, type, occurred_at, received_at, channel,"
        " device, topic, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (event_id, order_id, type_, at, received_at or at.replace("Z", ".250Z"), channel,
         f"{channel}-1", f"kitchen/ist-kadikoy-01/orders/{order_id}/events",
         json.dumps(envelope)),
    )


def intake(
    conn: sqlite3.Connection, order_id: str, event_id: str, channel: str, at: str,
    *, fulfillment: str = "dine_in", table: str | None = None,
) -> None:
    data: dict[str, Any] = {
        "display_id": order_id.upper(),
        "fulfillment": {"type": fulfillment, "table": table},
        "customer": {"name": "Aysel Məmmədova", "phone": PHONE},
        "note": f"call {PHONE} or mail {EMAIL} at the door",
        "items": [{"line_id": "l1", "name": "Lülə kabab", "qty": 2, "category": "grill"}],
    }
    event(conn, event_id, order_id, "order.created", at, data, channel)
    conn.execute(
        "INSERT INTO orders (order_id, channel, device, display_id, fulfillment, table_label,"
        " note, status, created_at, updated_at, intake_event_id)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, 'new', ?, ?, ?)",
        (order_id, channel, f"{channel}-1", order_id.upper(), fulfillment, table,
         data["note"], at, at, event_id),
    )
    conn.execute(
        "INSERT INTO order_lines (order_id, line_id, batch_ref, name, qty, category)"
        " VALUES (?, 'l1', 'initial', 'Lülə kabab', 2, 'grill')",
        (order_id,),
    )


def job(
    conn: sqlite3.Connection, job_key: str, order_id: str, state: str, created_at: str,
    *, printed_at: str | None = None, wait_reason: str | None = None,
) -> None:
    conn.execute(
        "INSERT INTO print_jobs (job_key, order_id, station_id, kind, change_ref, line_ids,"
        " state, wait_reason, created_at, queued_at, printed_at, printer_id)"
        " VALUES (?, ?, 'main', 'NEW', 'initial', '[\"l1\"]', ?, ?, ?, ?, ?, 'hot-line')",
        (job_key, order_id, state, wait_reason, created_at,
         None if state == "waiting" else created_at, printed_at),
    )


def confirmation(conn: sqlite3.Connection, record_id: str, order_id: str, at: str) -> None:
    # The notification request carries the contact: the timeline must never copy it.
    add_record(
        conn, kind="confirmation", record_id=record_id, order_id=order_id,
        body={"order_id": order_id, "channel": "whatsapp", "to": PHONE, "email": EMAIL},
        created_at=datetime.fromisoformat(at.replace("Z", "+00:00")),
    )


def seed_000(conn: sqlite3.Connection) -> None:
    intake(conn, "qr-7001", "public_intake_qr_table_7", "qr_menu", "2026-11-21T18:02:11Z",
           table="7")
    job(conn, "kpj_req_qr_7001_station_main", "qr-7001", "printed", "2026-11-21T18:02:11.300Z",
        printed_at="2026-11-21T18:02:12.100Z")
    confirmation(conn, "public_confirm_qr_lan_pos_table_001", "qr-7001",
                 "2026-11-21T18:02:11.300Z")
    intake(conn, "web-8102", "public_intake_website_delivery", "website",
           "2026-11-21T18:05:40Z", fulfillment="delivery")
    job(conn, "kpj_req_web_8102_station_main", "web-8102", "queued", "2026-11-21T18:05:41Z")
    confirmation(conn, "public_confirm_website_whatsapp_customer_003", "web-8102",
                 "2026-11-21T18:05:41Z")


FIVE = ["order_accepted", "routed_to_core", "kitchen_ticket_created", "printer_job_created",
        "confirmation_outboxed"]


def test_seed_000_qr_and_website_timelines(conn: sqlite3.Connection) -> None:
    seed_000(conn)
    qr = build_timeline(conn, "qr-7001")
    web = build_timeline(conn, "web-8102")
    assert qr is not None and web is not None

    assert qr["order_id"] == "qr-7001" and qr["channel"] == "qr_menu"
    assert web["order_id"] == "web-8102" and web["channel"] == "website"
    for timeline in (qr, web):
        assert timeline["read_only"] is True and timeline["external_mutation"] is False
        assert [s["key"] for s in timeline["steps"]] == FIVE
        assert [s["sequence"] for s in timeline["steps"]] == [1, 2, 3, 4, 5]
        assert all(s["customer_visible"] for s in timeline["steps"])
        assert timeline["last_status"] == "Confirmation recorded"
        assert timeline["checks"] == {
            "core_routed": True, "printer_stage": True, "confirmation_stage": True,
            "evidence_linked": True, "read_only": True, "no_lan_block": True,
        }
    assert [s["label"] for s in qr["steps"]] == [
        "Order accepted", "Sent to restaurant", "Kitchen received", "Ticket printed or queued",
        "Confirmation recorded",
    ]
    assert [s["evidence"] for s in qr["steps"]] == [
        "public_intake_qr_table_7", "ingest_public_intake_qr_table_7",
        "ingest_public_intake_qr_table_7", "kpj_req_qr_7001_station_main",
        "public_confirm_qr_lan_pos_table_001",
    ]
    assert [s["evidence"] for s in web["steps"]] == [
        "public_intake_website_delivery", "ingest_public_intake_website_delivery",
        "ingest_public_intake_website_delivery", "kpj_req_web_8102_station_main",
        "public_confirm_website_whatsapp_customer_003",
    ]
    # Each step is stamped from its own evidence row.
    assert [s["at"] for s in qr["steps"]] == [
        "2026-11-21T18:02:11Z", "2026-11-21T18:02:11Z", "2026-11-21T18:02:11Z",
        "2026-11-21T18:02:12Z", "2026-11-21T18:02:11Z",
    ]
    assert web["steps"][3]["at"] == "2026-11-21T18:05:41Z"  # queued, not printed yet


def test_unknown_order_has_no_timeline(conn: sqlite3.Connection) -> None:
    seed_000(conn)
    assert build_timeline(conn, "qr-9999") is None


def test_steps_appear_only_with_their_evidence(conn: sqlite3.Connection) -> None:
    # Lines recorded, no job yet: accepted and routed only.
    intake(conn, "qr-1", "evt-qr-1-created", "qr_menu", "2026-11-21T18:00:00Z", table="3")
    t = build_timeline(conn, "qr-1")
    assert t is not None
    assert [s["key"] for s in t["steps"]] == FIVE[:2]
    assert t["checks"]["core_routed"] is True
    assert t["checks"]["printer_stage"] is False
    assert t["checks"]["confirmation_stage"] is False
    assert t["last_status"] == "Sent to restaurant"

    # A queued job and no confirmation record: four steps.
    job(conn, "kpj_qr-1_initial_main", "qr-1", "queued", "2026-11-21T18:00:01Z")
    t = build_timeline(conn, "qr-1")
    assert t is not None
    assert [s["key"] for s in t["steps"]] == FIVE[:4]
    assert t["last_status"] == "Ticket printed or queued"
    assert t["checks"]["printer_stage"] is True
    assert t["checks"]["confirmation_stage"] is False
    assert t["checks"]["evidence_linked"] is True

    # A scheduled order: its job waits, so the kitchen has it but no printer does yet.
    intake(conn, "web-2", "evt-web-2-created", "website", "2026-11-21T18:00:00Z",
           fulfillment="pickup")
    job(conn, "kpj_web-2_initial_main", "web-2", "waiting", "2026-11-21T18:00:01Z",
        wait_reason="scheduled")
    confirmation(conn, "confirmation:web-2", "web-2", "2026-11-21T18:00:01Z")
    t = build_timeline(conn, "web-2")
    assert t is not None
    keys = [s["key"] for s in t["steps"]]
    assert keys == ["order_accepted", "routed_to_core", "kitchen_ticket_created",
                    "confirmation_outboxed"]
    assert [s["sequence"] for s in t["steps"]] == [1, 2, 3, 4]
    assert t["checks"]["printer_stage"] is False
    assert t["checks"]["confirmation_stage"] is True


def test_later_steps_follow_in_the_same_form(conn: sqlite3.Connection) -> None:
    seed_000(conn)
    event(conn, "evt-web-8102-accepted", "web-8102", "order.accepted", "2026-11-21T18:06:00Z",
          {"prep_minutes": 25}, "website")
    event(conn, "evt-web-8102-ready", "web-8102", "order.ready", "2026-11-21T18:30:00Z", {},
          "website")
    event(conn, "evt-web-8102-out", "web-8102", "order.out_for_delivery",
          "2026-11-21T18:34:00Z", {}, "website")
    event(conn, "evt-web-8102-done", "web-8102", "order.completed", "2026-11-21T18:55:00Z",
          {}, "website")
    # Not a customer step: an added batch.
    event(conn, "evt-web-8102-add", "web-8102", "order.items_added", "2026-11-21T18:07:00Z",
          {"batch_id": "b1", "items": []}, "website")
    t = build_timeline(conn, "web-8102")
    assert t is not None
    later = t["steps"][5:]
    assert [s["key"] for s in later] == [
        "order_confirmed", "order_ready", "out_for_delivery", "order_completed"]
    assert [s["sequence"] for s in later] == [6, 7, 8, 9]
    assert [s["evidence"] for s in later] == [
        "evt-web-8102-accepted", "evt-web-8102-ready", "evt-web-8102-out",
        "evt-web-8102-done"]
    assert later[0]["prep_minutes"] == 25
    assert later[0]["label"] == "Order confirmed"
    assert later[2]["at"] == "2026-11-21T18:34:00Z"
    assert t["last_status"] == "Order completed"
    assert t["checks"]["evidence_linked"] is True


def test_cancelled_before_printing(conn: sqlite3.Connection) -> None:
    intake(conn, "qr-5", "evt-qr-5-created", "qr_menu", "2026-11-21T18:00:00Z", table="9")
    job(conn, "kpj_qr-5_initial_main", "qr-5", "withdrawn", "2026-11-21T18:00:01Z")
    event(conn, "evt-qr-5-cancel", "qr-5", "order.cancelled", "2026-11-21T18:01:00Z",
          {"reason_code": "customer_request", "reason": f"customer called from {PHONE}"})
    t = build_timeline(conn, "qr-5")
    assert t is not None
    assert [s["key"] for s in t["steps"]] == [
        "order_accepted", "routed_to_core", "kitchen_ticket_created", "order_cancelled"]
    assert t["steps"][-1]["reason_code"] == "customer_request"
    assert t["last_status"] == "Order cancelled"
    assert t["checks"]["printer_stage"] is False
    assert "reason" not in t["steps"][-1]


def _file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_reading_a_timeline_changes_nothing(db_path: Path) -> None:
    writer = connect_sync(db_path)
    seed_000(writer)
    event(writer, "evt-qr-7001-accepted", "qr-7001", "order.accepted",
          "2026-11-21T18:03:00Z", {"prep_minutes": 15})
    writer.close()  # checkpoints the WAL into the main file
    before = _file_hash(db_path)
    assert not Path(f"{db_path}-wal").exists()

    statements: list[str] = []
    reader = sqlite3.connect(str(db_path), isolation_level=None)  # read-write on purpose
    reader.set_trace_callback(statements.append)
    first = build_timeline(reader, "qr-7001")
    second = build_timeline(reader, "qr-7001")
    reader.close()

    assert first == second and first is not None
    assert len(first["steps"]) == 6
    assert statements, "the trace saw nothing"
    assert all(s.lstrip().upper().startswith("SELECT") for s in statements), statements
    assert _file_hash(db_path) == before


def test_no_phone_or_email_in_a_timeline(conn: sqlite3.Connection) -> None:
    seed_000(conn)
    event(conn, "evt-web-8102-accepted", "web-8102", "order.accepted", "2026-11-21T18:06:00Z",
          {"prep_minutes": 25, "note": f"texted {PHONE}"}, "website")
    for order_id in ("qr-7001", "web-8102"):
        text = json.dumps(build_timeline(conn, order_id), ensure_ascii=False)
        assert "@" not in text
        assert "example.az" not in text
        assert "123 45 67" not in text and "1234567" not in text
        assert "Aysel" not in text and "door" not in text  # no customer data at all


def test_guard_strips_a_contact_smuggled_into_an_id(conn: sqlite3.Connection) -> None:
    # A publisher that builds ids out of the customer's phone number: the guard drops the
    # field, and the timeline admits the step has lost its evidence.
    intake(conn, "qr-6", "evt-994501234567", "qr_menu", "2026-11-21T18:00:00Z", table="1")
    event(conn, "evt-qr-6-cancel", "qr-6", "order.cancelled", "2026-11-21T18:01:00Z",
          {"reason_code": "mail bob@example.com"})
    t = build_timeline(conn, "qr-6")
    assert t is not None
    text = json.dumps(t)
    assert "994501234567" not in text and "bob@example.com" not in text
    assert "evidence" not in t["steps"][0]
    assert "reason_code" not in t["steps"][-1]
    assert t["checks"]["evidence_linked"] is False


@pytest.mark.parametrize(
    ("text", "personal"),
    [
        ("+994 50 123 45 67", True),
        ("(050) 123-45-67", True),
        ("555-123-4567", True),
        ("ops@kitchen.example", True),
        ("kpj_req_qr_7001_station_main", False),
        ("ord-2026-11-21-000123", False),
        ("evt-qr-7001-created", False),
        ("public_confirm_website_whatsapp_customer_003", False),
    ],
)
def test_personal_data_shapes(text: str, personal: bool) -> None:
    assert looks_personal(text) is personal


def test_order_ids_are_untouched_unless_they_are_the_contact(conn: sqlite3.Connection) -> None:
    # A POS with purely numeric order ids keeps them: only a known contact is stripped.
    intake(conn, "20261121000123", "evt-pos-1", "pos", "2026-11-21T18:00:00Z", table="2")
    t = build_timeline(conn, "20261121000123")
    assert t is not None and t["order_id"] == "20261121000123"
    assert t["steps"][0]["evidence"] == "evt-pos-1"
