"""The marketplace connector's tables (CONTRACT section 9): `marketplace_orders`, each order
a marketplace listed as it was last listed (what was imported from it, what could not be and
why), and `marketplace_state`, how each marketplace answers its polls.

Written by the connector in the transaction that stores an order's kitchen events (so the
order is kept exactly when its import is), read by the connector's reactions inside other
transactions, and by `kitchen-edge marketplaces` and the board.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

from edge.store.rows import query

_ORDER_COLUMNS = ("marketplace, payment_key, market_order_id, order_id, status, imported, "
                  "acked, courier, raw, problem, first_seen, last_seen")


@dataclass(frozen=True, slots=True)
class MarketOrder:
    marketplace: str
    payment_key: str
    market_order_id: int | None
    order_id: str | None
    status: int | None           # as last listed
    imported: int | None         # the status whose kitchen events are stored
    acked: int | None            # the status the marketplace said it acknowledged
    courier: str | None
    raw: str
    problem: str | None
    first_seen: str
    last_seen: str


def _order(row: sqlite3.Row) -> MarketOrder:
    return MarketOrder(str(row["marketplace"]), str(row["payment_key"]), row["market_order_id"],
                       row["order_id"], row["status"], row["imported"], row["acked"],
                       row["courier"], str(row["raw"]), row["problem"], str(row["first_seen"]),
                       str(row["last_seen"]))


def get(conn: sqlite3.Connection, marketplace: str, payment_key: str) -> MarketOrder | None:
    row = query(conn, f"SELECT {_ORDER_COLUMNS} FROM marketplace_orders "
                      "WHERE marketplace=? AND payment_key=?",
                (marketplace, payment_key)).fetchone()
    return None if row is None else _order(row)


def by_order(conn: sqlite3.Connection, order_id: str) -> MarketOrder | None:
    """The marketplace order behind a kitchen order, if a marketplace sent it."""
    row = query(conn, f"SELECT {_ORDER_COLUMNS} FROM marketplace_orders WHERE order_id=? "
                      "ORDER BY last_seen DESC LIMIT 1", (order_id,)).fetchone()
    return None if row is None else _order(row)


def keep(conn: sqlite3.Connection, *, marketplace: str, payment_key: str,
         market_order_id: int | None, order_id: str | None, status: int | None,
         imported: int | None, courier: str | None, raw: str, problem: str | None,
         at: str) -> None:
    """Record the order as listed now; `imported` None keeps what was imported before."""
    query(conn,
          "INSERT INTO marketplace_orders (marketplace, payment_key, market_order_id, order_id,"
          " status, imported, courier, raw, problem, first_seen, last_seen)"
          " VALUES (?,?,?,?,?,?,?,?,?,?,?)"
          " ON CONFLICT(marketplace, payment_key) DO UPDATE SET"
          " market_order_id=COALESCE(excluded.market_order_id, market_order_id),"
          " order_id=COALESCE(excluded.order_id, order_id), status=excluded.status,"
          " imported=COALESCE(excluded.imported, imported),"
          " courier=COALESCE(excluded.courier, courier), raw=excluded.raw,"
          " problem=excluded.problem, last_seen=excluded.last_seen",
          (marketplace, payment_key, market_order_id, order_id, status, imported, courier, raw,
           problem, at, at))


def set_acked(conn: sqlite3.Connection, marketplace: str, payment_key: str,
              status: int | None) -> None:
    query(conn, "UPDATE marketplace_orders SET acked=? WHERE marketplace=? AND payment_key=?",
          (status, marketplace, payment_key))


def problems(conn: sqlite3.Connection, marketplace: str, limit: int = 50) -> list[MarketOrder]:
    """Orders kept with a problem, newest first."""
    return [_order(r) for r in query(
        conn, f"SELECT {_ORDER_COLUMNS} FROM marketplace_orders WHERE marketplace=? AND "
              "problem IS NOT NULL ORDER BY last_seen DESC LIMIT ?", (marketplace, limit))]


def recent(conn: sqlite3.Connection, marketplace: str, limit: int = 50) -> list[MarketOrder]:
    return [_order(r) for r in query(
        conn, f"SELECT {_ORDER_COLUMNS} FROM marketplace_orders WHERE marketplace=? "
              "ORDER BY last_seen DESC LIMIT ?", (marketplace, limit))]


# -- how the marketplace answers ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MarketState:
    marketplace: str
    state: str
    since: str
    last_poll_at: str | None
    last_ok_at: str | None
    last_error: str | None
    failures: int
    cancel_reasons: dict[int, str] | None
    reasons_at: str | None


def state(conn: sqlite3.Connection, marketplace: str) -> MarketState | None:
    row = query(conn, "SELECT marketplace, state, since, last_poll_at, last_ok_at, last_error,"
                      " failures, cancel_reasons, reasons_at FROM marketplace_state"
                      " WHERE marketplace=?", (marketplace,)).fetchone()
    if row is None:
        return None
    reasons = None
    if row["cancel_reasons"]:
        reasons = {int(k): str(v) for k, v in json.loads(row["cancel_reasons"]).items()}
    return MarketState(str(row["marketplace"]), str(row["state"]), str(row["since"]),
                       row["last_poll_at"], row["last_ok_at"], row["last_error"],
                       int(row["failures"]), reasons, row["reasons_at"])


def record_poll(conn: sqlite3.Connection, marketplace: str, *, state: str, at: str,
                error: str | None, failures: int) -> None:
    """One poll's outcome: `since` moves only when the state changes."""
    ok = state == "ok"
    query(conn,
          "INSERT INTO marketplace_state (marketplace, state, since, last_poll_at, last_ok_at,"
          " last_error, failures) VALUES (?,?,?,?,?,?,?)"
          " ON CONFLICT(marketplace) DO UPDATE SET"
          " since=CASE WHEN state=excluded.state THEN since ELSE excluded.since END,"
          " state=excluded.state, last_poll_at=excluded.last_poll_at,"
          " last_ok_at=COALESCE(excluded.last_ok_at, last_ok_at),"
          " last_error=COALESCE(excluded.last_error, last_error), failures=excluded.failures",
          (marketplace, state, at, at, at if ok else None, error, failures))


def record_reasons(conn: sqlite3.Connection, marketplace: str, reasons: dict[int, str],
                   at: str) -> None:
    text = json.dumps({str(k): v for k, v in sorted(reasons.items())}, ensure_ascii=False)
    query(conn,
          "INSERT INTO marketplace_state (marketplace, state, since, cancel_reasons, reasons_at)"
          " VALUES (?, 'starting', ?, ?, ?) ON CONFLICT(marketplace) DO UPDATE SET"
          " cancel_reasons=excluded.cancel_reasons, reasons_at=excluded.reasons_at",
          (marketplace, at, text, at))


__all__ = [
    "MarketOrder",
    "MarketState",
    "by_order",
    "get",
    "keep",
    "problems",
    "recent",
    "record_poll",
    "record_reasons",
    "set_acked",
    "state",
]
