"""Operator queries over the database, shared by the CLI and the local HTTP server.

All of them are plain SELECTs on a read-only connection: safe while the daemon runs.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from edge.timeline import build_timeline


def _rows(cur: sqlite3.Cursor) -> list[dict[str, Any]]:
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def jobs_list(conn: sqlite3.Connection, *, state: str | None = None, order_id: str | None = None,
              limit: int = 50) -> list[dict[str, Any]]:
    sql = ("SELECT job_key, order_id, station_id, kind, state, printer_id, attempts, "
           "may_be_duplicate, backup_from, created_at, printed_at, reason FROM print_jobs")
    where, args = [], []
    if state:
        where.append("state = ?")
        args.append(state)
    if order_id:
        where.append("order_id = ?")
        args.append(order_id)
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY rowid DESC LIMIT ?"
    return _rows(conn.execute(sql, (*args, limit)))


def job_show(conn: sqlite3.Connection, job_key: str) -> dict[str, Any] | None:
    rows = _rows(conn.execute("SELECT * FROM print_jobs WHERE job_key = ?", (job_key,)))
    if not rows:
        return None
    job = rows[0]
    job["line_ids"] = json.loads(job["line_ids"])
    return job


def order_show(conn: sqlite3.Connection, order_id: str) -> dict[str, Any] | None:
    rows = _rows(conn.execute(
        "SELECT order_id, channel, display_id, fulfillment, table_label, status, held_from, "
        "kitchen_stage, prep_minutes, scheduled_for, paid_cents, refunded_cents, created_at, "
        "updated_at FROM orders WHERE order_id = ?", (order_id,)))
    if not rows:
        return None
    order = rows[0]
    order["lines"] = _rows(conn.execute(
        "SELECT line_id, qty, name, category, course, state, batch_ref FROM order_lines "
        "WHERE order_id = ? ORDER BY rowid", (order_id,)))
    order["activities"] = activities(conn, order_id)
    order["jobs"] = jobs_list(conn, order_id=order_id, limit=1000)
    order["timeline"] = build_timeline(conn, order_id)
    return order


def activities(conn: sqlite3.Connection, order_id: str) -> list[dict[str, Any]]:
    out = _rows(conn.execute(
        "SELECT at, what, channel, device, event_id, detail FROM activities "
        "WHERE order_id = ? ORDER BY id", (order_id,)))
    for row in out:
        row["detail"] = json.loads(row["detail"])
    return out


def dead_letters(conn: sqlite3.Connection, limit: int = 50) -> list[dict[str, Any]]:
    out = _rows(conn.execute(
        "SELECT id, received_at, topic, reason, seen, payload_size, payload FROM dead_letters "
        "ORDER BY id DESC LIMIT ?", (limit,)))
    for row in out:
        row["payload"] = bytes(row["payload"]).decode("utf-8", errors="replace")
    return out


def printer_states(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    return _rows(conn.execute("SELECT * FROM printer_states ORDER BY printer_id"))


def unconfirmed_jobs(conn: sqlite3.Connection) -> dict[str, list[str]]:
    """printer_id -> job keys delivered there, not confirmed (may be on paper, may not)."""
    out: dict[str, list[str]] = {}
    for row in conn.execute("SELECT printer_id, job_key FROM print_jobs "
                            "WHERE state='unconfirmed' ORDER BY rowid"):
        out.setdefault(row["printer_id"], []).append(row["job_key"])
    return out


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A plain text table for people; --json is for scripts."""
    if not rows:
        return "(none)"
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."
