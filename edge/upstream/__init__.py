"""Upstream sync: the task that sends the outbox (`edge.store.outbox`) to the restaurant core."""

from edge.upstream.sender import Sender

__all__ = ["Sender"]
