"""What the printer saw, for tests to assert on: its connections and the tickets received.

A *received ticket* is the print data one connection sent, from its first byte (after the
previous cut) to the next cut or the end of the connection, whatever became of it: printed,
still held in the receive buffer, or lost with the power. Printed jobs (`model.Job`) say what
came out on paper; received tickets say how many times a ticket's bytes entered the printer,
which is what "never prints a job twice" needs when the paper is out: a ticket resent three
times into a printer that buffers every copy is received three times and printed three times
later, even if nothing has printed yet.

Status queries and GS a are not print data and are not part of a received ticket.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edge.virtual_printer.interpreter import Interpreter


@dataclass
class ConnectionRecord:
    number: int
    peer: str
    accepted_at: float
    closed_at: float | None = None
    bytes_read: int = 0  # everything read from the socket
    status_bytes: int = 0  # of which status queries and GS a
    status_queries: int = 0
    # peer | error | dropped | power_off | stopped; None while open
    closed_by: str | None = None
    error: str | None = None

    @property
    def print_bytes(self) -> int:
        """Bytes of print data read (a command still incomplete counts)."""
        return self.bytes_read - self.status_bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.number,
            "peer": self.peer,
            "accepted_at": self.accepted_at,
            "closed_at": self.closed_at,
            "bytes": self.print_bytes,
            "bytes_read": self.bytes_read,
            "status_queries": self.status_queries,
            "closed_by": self.closed_by,
            "error": self.error,
        }


@dataclass
class ReceivedTicket:
    seq: int
    connection: int
    peer: str
    first_byte_at: float
    ended_at: float | None = None  # at the cut or when the connection ended; None while open
    bytes: int = 0
    held_bytes: int = 0  # in the receive buffer now
    printed_bytes: int = 0  # handed to the print engine (and not lost since)
    # In the buffer, or in the job being printed (no cut yet), when the power went.
    lost_bytes: int = 0
    cut: str | None = None
    text: list[str] = field(default_factory=list)
    job_key: str | None = None
    # The connection's view of its own data while the ticket is open, for its text so far.
    view: Interpreter | None = field(default=None, repr=False, compare=False)

    @property
    def open(self) -> bool:
        return self.ended_at is None

    @property
    def fate(self) -> str:
        if self.lost_bytes:
            return "lost"
        if self.held_bytes:
            return "held"
        return "printed"

    def to_dict(self) -> dict[str, Any]:
        text = self.text
        if self.open and self.view is not None:
            text = self.view.page_text()
            pending = self.view.pending_text()
            if pending.strip():
                text = [*text, pending]
        return {
            "seq": self.seq,
            "connection": self.connection,
            "peer": self.peer,
            "first_byte_at": self.first_byte_at,
            "ended_at": self.ended_at,
            "open": self.open,
            "bytes": self.bytes,
            "cut": self.cut,
            "complete": self.cut is not None,
            "job_key": self.job_key,
            "fate": self.fate,
            "held_bytes": self.held_bytes,
            "printed_bytes": self.printed_bytes,
            "lost_bytes": self.lost_bytes,
            "text": text,
        }
