"""A dining room on one SQLite file: the real ingest pipeline with a menu, the POS, OpenApp's
requests on `{root}/openapp/in`, the spooler's bookkeeping for "printed", and what the
kitchen queued for OpenApp (`openapp_out`). The transactional reaction that pushes a
streamed table's changes is registered as the daemon's OpenApp component registers it."""

from __future__ import annotations

import itertools
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from edge.config.menu import Menu, Product
from edge.config.models import StationConfig
from edge.feed import EventApplied
from edge.ingest.pipeline import Incoming, Outcome, Pipeline
from edge.orders import menu as menu_rules
from edge.orders import openapp
from edge.orders import printjobs as jobs
from edge.orders.apply import Applier, Plan
from edge.store import Tx
from edge.store.db import connect_sync

ROOT = "kitchen/test-site"
STATIONS = (
    StationConfig(id="grill", printer="hot", categories=["grill"]),
    StationConfig(id="drinks", printer="bar", categories=["drinks", "desserts"]),
)
MENU = Menu(currency="TRY", products=[
    Product(id="adana", name="Adana kebap", category="grill", price=42000, stock=3),
    Product(id="ayran", name="Ayran", category="drinks", price=6000),
    Product(id="baklava", name="Baklava", category="desserts", price=15000, listed=False),
    Product(id="kunefe", name="Künefe", category="desserts", price=18000, stock=1),
    Product(id="cay", name="Çay", category="drinks", price=2000, stock=0),
])


def line(line_id: str, product_id: str, qty: int = 1, **more: Any) -> dict[str, Any]:
    """A POS line naming a product: its name is the POS's, the rest comes from the menu."""
    return {"line_id": line_id, "name": more.pop("name", product_id.title()), "qty": qty,
            "product_id": product_id, **more}


@dataclass
class Floor:
    conn: sqlite3.Connection
    pipeline: Pipeline
    now: datetime = datetime(2026, 11, 21, 18, 0, tzinfo=UTC)
    counter: Iterator[int] = field(default_factory=itertools.count)

    def run(self, batch: list[Incoming]) -> list[Outcome]:
        self.now += timedelta(seconds=1)
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            tx = Tx(self.conn, [(EventApplied, self._react)])
            result = self.pipeline.apply_batch(tx, batch, self.now)
            tx.react()
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")
        return result.outcomes

    def _react(self, tx: Tx, change: EventApplied) -> None:
        openapp.on_applied(tx, change, root=ROOT, currency="TRY", now=self.now)

    # -- the POS -------------------------------------------------------------------------

    def pos(self, order_id: str, kind: str, data: dict[str, Any], *,
            event_id: str | None = None, channel: str = "pos") -> Outcome:
        body = {"event_id": event_id or f"e{next(self.counter)}", "type": kind,
                "order_id": order_id, "occurred_at": "2026-11-21T18:00:00Z",
                "source": {"channel": channel, "device": "till-1"}, "data": data}
        return self.run([Incoming(f"{ROOT}/orders/{order_id}/events",
                                  json.dumps(body).encode())])[0]

    def ok(self, order_id: str, kind: str, data: dict[str, Any] | None = None,
           effect: str = "applied", **kw: Any) -> Outcome:
        outcome = self.pos(order_id, kind, data or {}, **kw)
        assert outcome.result == effect, (kind, outcome.reason)
        return outcome

    def open_table(self, order_id: str, table: str, items: list[dict[str, Any]]) -> None:
        self.ok(order_id, "order.created", {"fulfillment": {"type": "dine_in", "table": table},
                                            "items": items})

    # -- OpenApp -------------------------------------------------------------------------

    def request(self, body: dict[str, Any] | bytes) -> Outcome:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.run([Incoming(f"{ROOT}/openapp/in", payload)])[0]

    def snapshot(self, table: str, message_id: str | None = None) -> dict[str, Any]:
        msg_id = message_id or f"m{next(self.counter)}"
        outcome = self.request({"message_type": "TableOrderSnapshotRequested",
                                "message_id": msg_id, "table_id": table,
                                "sent_at": "2026-11-21T18:00:00Z"})
        assert outcome.result in ("applied", "duplicate"), outcome.reason
        return self.answer(msg_id)

    def submission(self, table: str, submission_id: str, items: list[dict[str, Any]],
                   message_id: str | None = None, **more: Any) -> dict[str, Any]:
        return {"message_type": "OrderSubmissionRequested",
                "message_id": message_id or f"m{next(self.counter)}", "table_id": table,
                "sent_at": "2026-11-21T18:00:00Z", "submission_id": submission_id,
                "items": items, **more}

    def submit(self, table: str, submission_id: str, items: list[dict[str, Any]],
               **more: Any) -> dict[str, Any]:
        body = self.submission(table, submission_id, items, **more)
        outcome = self.request(body)
        assert outcome.result == "applied", outcome.reason
        return self.answer(body["message_id"])

    def out(self) -> list[dict[str, Any]]:
        """Everything queued for OpenApp, in order."""
        return [json.loads(r[0]) for r in self.conn.execute(
            "SELECT body FROM openapp_out ORDER BY id")]

    def answer(self, message_id: str) -> dict[str, Any]:
        found = [m for m in self.out() if m.get("correlation_id") == message_id]
        assert len(found) == 1, found
        return found[0]

    def changes(self) -> list[dict[str, Any]]:
        return [m for m in self.out() if m["message_type"] == "TableOrderSnapshotChanged"]

    # -- the kitchen ---------------------------------------------------------------------

    def print_queued(self) -> list[str]:
        done: list[str] = []
        while True:
            self.conn.execute("BEGIN IMMEDIATE")
            claimed = jobs.claim(Tx(self.conn), ["grill", "drinks"], "hot", {}, self.now, 0.0)
            if claimed is not None:
                jobs.printed(Tx(self.conn), claimed, self.now)
            self.conn.execute("COMMIT")
            if claimed is None:
                return done
            done.append(claimed.job_key)

    def stock(self, product_id: str) -> int | None:
        row = self.conn.execute("SELECT stock FROM menu_stock WHERE product_id=?",
                                (product_id,)).fetchone()
        assert row is not None
        return row[0] if row[0] is None else int(row[0])

    def jobs(self, order_id: str) -> list[str]:
        return [r[0] for r in self.conn.execute(
            "SELECT job_key FROM print_jobs WHERE order_id=? ORDER BY rowid", (order_id,))]

    def activities(self, order_id: str) -> list[str]:
        return [r[0] for r in self.conn.execute(
            "SELECT what FROM activities WHERE order_id=? ORDER BY id", (order_id,))]

    def dead(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT reason FROM dead_letters ORDER BY id")]


def floor_at(path: Path, menu: Menu | None = MENU, tables: tuple[str, ...] | None = None
             ) -> Floor:
    conn = connect_sync(path / "kitchen-edge.db")
    conn.execute("BEGIN IMMEDIATE")
    menu_rules.sync(Tx(conn), menu, datetime(2026, 11, 21, 17, 0, tzinfo=UTC))
    conn.execute("COMMIT")
    plan = Plan(STATIONS, "grill", menu, tables)
    return Floor(conn, Pipeline(ROOT, Applier(plan)))
