"""Operator commands (CONTRACT: `{root}/commands/reprint`, `kitchen-edge jobs reprint`).

A reprint is a new job copying the job it reprints (same station, kind, lines, due time),
marked REPRINT, under a key made from the command id: the same command twice is one reprint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from edge.clock import parse_rfc3339, rfc3339_ms
from edge.orders import kitchen
from edge.orders.events import Rejected, RejectKind
from edge.orders.records import add_activity
from edge.orders.routing import job_key as make_job_key
from edge.store import Tx, events, jobs


@dataclass(frozen=True)
class Reprint:
    command_id: str
    job_key: str

    @classmethod
    def from_document(cls, doc: Any) -> Reprint:
        if not isinstance(doc, dict):
            raise Rejected("payload must be a JSON object")
        command_id, key = doc.get("command_id"), doc.get("job_key")
        if not isinstance(command_id, str) or not 1 <= len(command_id) <= 128:
            raise Rejected("schema: command_id: required string of 1 to 128 characters",
                           RejectKind.SCHEMA)
        if not isinstance(key, str) or not key:
            raise Rejected("schema: job_key: required string", RejectKind.SCHEMA)
        return cls(command_id, key)


@dataclass(frozen=True)
class Done:
    order_id: str | None
    new_jobs: list[str]
    repeat: bool = False


def reprint(tx: Tx, command: Reprint, payload: str, now: datetime) -> Done:
    """Queue the reprint; a command id already carried out changes nothing."""
    if events.command_seen(tx.conn, command.command_id):
        return Done(None, [], repeat=True)
    job = jobs.source_of(tx.conn, command.job_key)
    if job is None:
        raise Rejected(f"job_key '{command.job_key}' is unknown")
    change_ref = f"{job.change_ref}~reprint-{command.command_id}"
    reprint_key = make_job_key(job.order_id, change_ref, job.station_id)
    kitchen.insert_job(tx, job_key=reprint_key, order_id=job.order_id,
                       station_id=job.station_id, kind=job.kind, change_ref=change_ref,
                       line_ids=job.line_ids, now=now, reprint_of=command.job_key,
                       due_at=parse_rfc3339(job.due_at) if job.due_at else None)
    events.add_command(tx.conn, command_id=command.command_id, kind="reprint",
                       received_at=rfc3339_ms(now), payload=payload,
                       result=json.dumps({"reprint_job_key": reprint_key}))
    add_activity(tx, None, "Reprint requested", now,
                 {"job_key": command.job_key, "reprint_job_key": reprint_key,
                  "command_id": command.command_id}, order_id=job.order_id)
    return Done(job.order_id, [reprint_key])


__all__ = ["Done", "Reprint", "reprint"]
