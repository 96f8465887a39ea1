"""Operator commands on the outbox; safe while the daemon runs.

They use plain sqlite3 connections and short transactions: the daemon's writer waits at most
a few milliseconds for them (busy_timeout on both sides), and the sender picks changes up
on its next poll.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from edge.store import outbox
from edge.store.db import operator_read, operator_write


def outbox_status(db_path: Path, *, as_json: bool) -> str:
    """The outbox at a glance: backlog, age, last success, and every parked record."""
    now = datetime.now(UTC)
    summary, parked = operator_read(
        db_path, lambda c: (outbox.stats(c, now), outbox.parked_records(c)))
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
    return operator_write(db_path, outbox.retry_parked)
