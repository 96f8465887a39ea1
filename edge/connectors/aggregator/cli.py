"""`kitchen-edge aggregator`: the aggregator API as the operator sees it, from the config
and the database (read-only, safe while the daemon runs), and the parked webhooks sent
again.

    kitchen-edge aggregator [status]     listening?, orders waiting, webhooks, recent orders
    kitchen-edge aggregator retry-parked parked webhooks are due again

Whether the API listens is asked of the port itself (a TCP connect), not of the database.
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge.clock import rfc3339_ms
from edge.config.models import AggregatorConfig
from edge.connectors.aggregator import mapping
from edge.connectors.aggregator.webhooks import DESTINATION
from edge.orders import acceptance
from edge.store import calls, platform_orders
from edge.store.db import operator_read, operator_write


def listening(cfg: AggregatorConfig, timeout: float = 0.5) -> bool:
    host = cfg.host
    if host in ("0.0.0.0", "", "*"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    try:
        with socket.create_connection((host, cfg.port), timeout=timeout):
            return True
    except OSError:
        return False


def status(cfg: AggregatorConfig, db: Path) -> dict[str, Any]:
    now = datetime.now(UTC)

    def read(conn: Any) -> dict[str, Any]:
        waiting = [w for w in acceptance.waiting(conn, now) if w.channel == mapping.CHANNEL]
        parked = calls.listing(conn, DESTINATION, state="parked", limit=50)
        return {
            "orders": platform_orders.counts(conn),
            "waiting_for_acceptance": [
                {"order_id": w.order_id, "display_id": w.display_id, "since": w.since,
                 "waiting_s": round(w.waited_s), "reminded": w.reminded} for w in waiting],
            "webhooks": calls.counts(conn, DESTINATION),
            "parked_webhooks": [
                {"id": c.id, "order_id": c.order_id, "method": c.method, "path": c.path,
                 "status_code": c.status_code, "last_error": c.last_error} for c in parked],
            "recent": [
                {"platform_id": o.platform_id, "order_id": o.order_id,
                 "fulfillment": o.fulfillment, "answer": o.answer,
                 "dasher_status": o.dasher_status, "cancelled": o.cancelled_at is not None,
                 "received_at": o.received_at}
                for o in platform_orders.recent(conn, 10)],
        }

    found = operator_read(db, read)
    return {"listen": cfg.listen, "tls": cfg.tls, "listening": listening(cfg),
            "auto_accept": cfg.auto_accept, "prep_minutes": cfg.prep_minutes,
            "webhook_url": cfg.webhook_url, **found}


def retry_parked(db: Path) -> int:
    now = rfc3339_ms(datetime.now(UTC))
    return operator_write(db, lambda conn: calls.retry_parked(conn, DESTINATION, now))


def render(found: dict[str, Any], table: Any) -> str:
    """The status for people; `table(rows, columns)` draws the tables."""
    scheme = "https" if found["tls"] else "http"
    hooks = found["webhooks"]
    orders = found["orders"]
    taken = sum(v for k, v in orders.items() if k != "repeats")
    lines = [
        f"listen        {found['listen']} ({scheme}), "
        f"{'listening' if found['listening'] else 'NOT LISTENING'}",
        f"auto_accept   {str(found['auto_accept']).lower()}, prep {found['prep_minutes']} min",
        f"webhooks      {found['webhook_url']}: pending {hooks.get('pending', 0)}, "
        f"done {hooks.get('done', 0)}, parked {hooks.get('parked', 0)}",
        f"orders        {taken} taken (waiting {orders.get('waiting', 0)}, accepted at once "
        f"{orders.get('accepted', 0)}, store closed {orders.get('store_closed', 0)}), "
        f"{orders.get('repeats', 0)} repeats",
        "",
        "WAITING FOR ACCEPTANCE",
        table(found["waiting_for_acceptance"],
              ["order_id", "display_id", "since", "waiting_s", "reminded"]),
        "",
        "PARKED WEBHOOKS (kitchen-edge aggregator retry-parked)",
        table(found["parked_webhooks"],
              ["id", "order_id", "method", "path", "status_code", "last_error"]),
        "",
        "RECENT PLATFORM ORDERS",
        table([{**o, "cancelled": "yes" if o["cancelled"] else None} for o in found["recent"]],
              ["platform_id", "order_id", "fulfillment", "answer", "dasher_status", "cancelled",
               "received_at"]),
    ]
    return "\n".join(lines)


__all__ = ["listening", "render", "retry_parked", "status"]
