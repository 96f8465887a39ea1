"""What the operator sees of each marketplace, read from the database alone (so the CLI, run
beside the daemon, sees what the board sees): how it answers (state, since, last poll, last
error), the orders waiting for the restaurant's answer and for how long, the calls back that
it refused (parked), the orders it sent that could not be imported (with the field at fault),
and its cancel reasons.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

from edge.config.models import MarketplaceConfig
from edge.connectors.marketplace.mapping import CHANNEL
from edge.orders import acceptance
from edge.store import calls
from edge.store import marketplace as kept


def destination(marketplace_id: str) -> str:
    return f"marketplace:{marketplace_id}"


def waiting(conn: sqlite3.Connection, marketplace_id: str,
            now: datetime) -> list[acceptance.Waiting]:
    return [w for w in acceptance.waiting(conn, now)
            if w.channel == CHANNEL and w.device == marketplace_id]


def overview(conn: sqlite3.Connection, market: MarketplaceConfig,
             now: datetime) -> dict[str, Any]:
    dest = destination(market.id)
    state = kept.state(conn, market.id)
    counts = calls.counts(conn, dest)
    parked = calls.listing(conn, dest, state="parked", limit=50)
    orders_waiting = waiting(conn, market.id, now)
    return {
        "marketplace": market.id,
        "url": market.url,
        "auto_accept": market.auto_accept,
        "state": state.state if state else "never polled",
        "since": state.since if state else None,
        "last_poll": state.last_poll_at if state else None,
        "last_ok": state.last_ok_at if state else None,
        "last_error": state.last_error if state else None,
        "failures": state.failures if state else 0,
        "waiting": [{"order_id": w.order_id, "display_id": w.display_id, "since": w.since,
                     "waiting_s": round(w.waited_s), "reminded": w.reminded}
                    for w in orders_waiting],
        "oldest_wait_s": round(max((w.waited_s for w in orders_waiting), default=0)),
        "calls": {"pending": counts.get("pending", 0), "parked": counts.get("parked", 0),
                  "done": counts.get("done", 0)},
        "parked": [{"id": c.id, "order_id": c.order_id, "call": f"{c.method} {c.path}",
                    "status_code": c.status_code, "error": c.last_error} for c in parked],
        "problems": [{"payment_key": o.payment_key, "market_order_id": o.market_order_id,
                      "order_id": o.order_id, "status": o.status, "problem": o.problem,
                      "last_seen": o.last_seen} for o in kept.problems(conn, market.id, 20)],
        "cancel_reasons": {str(k): v for k, v in (state.cancel_reasons or {}).items()}
        if state else {},
    }


__all__ = ["destination", "overview", "waiting"]
