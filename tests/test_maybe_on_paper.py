"""A ticket whose bytes may have reached the printer (a crash mid-send, a send that failed
half-way) counts as on paper for voids, cancels and holds: the station is told, even though
the job is back in the queue waiting for its MAY BE DUPLICATE copy."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from edge.config.models import StationConfig
from edge.ingest.pipeline import Incoming, Pipeline
from edge.orders import printjobs as jobs
from edge.orders.apply import Applier, Plan
from edge.store import Tx
from edge.store.db import connect_sync

ROOT = "kitchen/s"
STATIONS = (StationConfig(id="grill", printer="hot", categories=["grill"]),)


def message(order_id: str, kind: str, data: dict[str, Any], n: str = "") -> Incoming:
    body = {"event_id": f"{order_id}-{kind}{n}", "type": kind, "order_id": order_id,
            "occurred_at": "2026-11-21T18:02:11Z", "source": {"channel": "pos"}, "data": data}
    return Incoming(f"{ROOT}/orders/{order_id}/events", json.dumps(body).encode())


@pytest.fixture
def kitchen(tmp_path: Path) -> Iterator[Any]:
    conn = connect_sync(tmp_path / "k.db")
    pipeline = Pipeline(ROOT, Applier(Plan(STATIONS, "grill")))

    def apply(*batch: Incoming) -> Any:
        conn.execute("BEGIN IMMEDIATE")
        result = pipeline.apply_batch(conn, list(batch), datetime.now(UTC))
        conn.execute("COMMIT")
        return result

    apply(message("o1", "order.created", {
        "fulfillment": {"type": "pickup"},
        "items": [{"line_id": "a", "name": "Adana", "qty": 1, "category": "grill"},
                  {"line_id": "b", "name": "Pide", "qty": 1, "category": "grill"}]}))
    # The spooler claimed the NEW ticket and the daemon died with its bytes at the printer.
    conn.execute("BEGIN IMMEDIATE")
    assert jobs.claim(Tx(conn), ["grill"], "hot", {}, datetime.now(UTC), 600) is not None
    jobs.recover_after_crash(Tx(conn))
    conn.execute("COMMIT")
    assert [tuple(r) for r in conn.execute("SELECT state, may_be_duplicate FROM print_jobs")] == [
        ("queued", 1)]
    yield conn, apply
    conn.close()


def kinds(conn: Any) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in conn.execute(
        "SELECT kind, state FROM print_jobs ORDER BY rowid")]


def test_cancel_after_a_maybe_printed_ticket_is_cancelled_with_a_ticket(kitchen: Any) -> None:
    conn, apply = kitchen
    apply(message("o1", "order.cancelled", {"reason_code": "CUSTOMER"}))
    assert conn.execute("SELECT status FROM orders").fetchone()[0] == "cancelled"
    assert kinds(conn) == [("NEW", "withdrawn"), ("CANCELLED", "queued")]


def test_void_after_a_maybe_printed_ticket_prints_void(kitchen: Any) -> None:
    conn, apply = kitchen
    apply(message("o1", "order.items_voided", {"line_ids": ["a"]}))
    assert kinds(conn) == [("NEW", "queued"), ("VOID", "queued")]
    # The duplicate copy still to print no longer shows the voided line.
    assert json.loads(conn.execute(
        "SELECT line_ids FROM print_jobs WHERE kind='NEW'").fetchone()[0]) == ["b"]


def test_hold_after_a_maybe_printed_ticket_prints_hold(kitchen: Any) -> None:
    conn, apply = kitchen
    apply(message("o1", "order.held", {}))
    assert kinds(conn) == [("NEW", "waiting"), ("HOLD", "queued")]
