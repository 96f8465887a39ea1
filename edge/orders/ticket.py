"""What a kitchen ticket says, independent of how it is put on paper.

The apply step stores jobs; the spooler builds a `Ticket` from a job when it prints it, so
marks that depend on the moment of printing (BACKUP FROM, MAY BE DUPLICATE, LATE) are set
then. `edge.printing.render` turns a Ticket into ESC/POS bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

TicketKind = Literal["NEW", "ADDED", "VOID", "HOLD", "FIRE", "CANCELLED", "TEST", "ATTENTION"]


@dataclass(frozen=True)
class TicketItem:
    qty: int
    name: str
    modifiers: tuple[str, ...] = ()
    note: str | None = None
    allergens: tuple[str, ...] = ()
    course: int | None = None


@dataclass(frozen=True)
class Ticket:
    kind: TicketKind
    station: str
    order_label: str              # display id, else order id
    service: str                  # "TABLE 7", "PICKUP", "DELIVERY (restaurant courier)"
    channel: str                  # pos, qr_menu, ...
    created_at: datetime          # when the change reached the kitchen
    job_key: str
    items: tuple[TicketItem, ...] = ()
    order_note: str | None = None
    reason: str | None = None     # void / cancel / hold reason
    due_at: datetime | None = None  # scheduled orders: when the food is due
    printed_at: datetime | None = None
    reprint: bool = False
    backup_from: str | None = None
    may_be_duplicate: bool = False
    late: bool = False
    clock_synced: bool = True     # False: the box's clock is unsynchronised (times marked)
    extra_lines: tuple[str, ...] = field(default=())  # test tickets: check lines
