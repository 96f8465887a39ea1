"""Operator commands on the outbox; safe while the daemon runs.

They use plain sqlite3 connections and short transactions: the daemon's writer waits at most
a few milliseconds for them (busy_timeout on both sides), and the sender picks changes up
on its next poll.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from edge.store.db import open_readonly
from edge.store.migrate import SchemaTooNew, latest_version
from edge.upstream import outbox


def outbox_status(db_path: Path, *, as_json: bool) -> str:
    """The outbox at a glance: backlog, age, last success, and every parked record."""
    conn = open_readonly(db_path)
    try:
        conn.execute("BEGIN")
        try:
            summary = outbox.stats(conn, datetime.now(UTC))
            parked = outbox.parked_records(conn)
        finally:
            conn.execute("ROLLBACK")
    finally:
        conn.close()
    if as_json:
        return json.dumps({**summary.as_dict(), "parked_records": parked}, sort_keys=True)
    age = summary.oldest_unsent_age_s
    lines = [
        f"backlog: {summary.backlog} pending"
        + (f" ({summary.blocked} held back by parked records)" if summary.blocked else ""),
        f"oldest unsent: {'-' if age is None else f'{age:.0f}s ago'}",
        f"last success: {summary.last_success or 'never'}",
        f"parked: {summary.parked}",
        f"accepted (kept until retention): {summary.accepted}",
        f"superseded: {summary.superseded}",
        f"size: {summary.bytes} bytes",
    ]
    if parked:
        lines.append("parked records (kitchen-edge outbox retry-parked sends them again):")
        for rec in parked:
            lines.append(
                f"  seq {rec['seq']} {rec['kind']} {rec['record_id']}"
                f" order={rec['order_id'] or '-'} parked_at={rec['parked_at']}"
                f" attempts={rec['attempts']} error={rec['last_error']}"
            )
    return "\n".join(lines)


def retry_parked(db_path: Path) -> int:
    """Put every parked record back in line; returns how many."""
    if not db_path.exists():
        raise FileNotFoundError(f"{db_path}: no database here (has the daemon ever run?)")
    conn = sqlite3.connect(str(db_path), isolation_level=None, timeout=10.0)
    try:
        conn.execute("PRAGMA busy_timeout=10000")
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > latest_version():
            raise SchemaTooNew(
                f"{db_path}: schema version {version} is newer than this kitchen-edge"
            )
        if version < latest_version():
            raise RuntimeError(
                f"{db_path}: schema version {version} is older than this kitchen-edge's "
                f"{latest_version()}; start the daemon once to migrate it"
            )
        conn.execute("BEGIN IMMEDIATE")
        try:
            count = outbox.retry_parked(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return count
    finally:
        conn.close()
