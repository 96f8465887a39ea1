"""Upstream sync: the outbox of records for the restaurant core, and the task that sends it."""

from edge.upstream.outbox import OutboxRecord, OutboxStats, add_record
from edge.upstream.sender import Sender

__all__ = ["OutboxRecord", "OutboxStats", "Sender", "add_record"]
