"""The order status machine of seed 003 (POS order statuses), and the fulfillment stages of
seeds 001 and 004 (accepted, ready, out for delivery, completed).

Two things move independently. `status` is the POS view: Created, Sent to Kitchen, Partially
Sent, Held, Completed, Cancelled, Void, Refunded, Partially Refunded. `stage` is where the
food is in its journey, which is what the public timeline shows. Kitchen progress (which
lines reached a printer) decides Created / Sent to Kitchen / Partially Sent, and Void versus
Cancelled.
"""

from __future__ import annotations

from enum import StrEnum

from edge.orders.events import Rejected, RejectKind


class Status(StrEnum):
    """Seed 003's order statuses, as stored (snake_case)."""

    CREATED = "created"
    SENT_TO_KITCHEN = "sent_to_kitchen"
    PARTIALLY_SENT = "partially_sent"
    HELD = "held"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    VOID = "void"
    REFUNDED = "refunded"
    PARTIALLY_REFUNDED = "partially_refunded"


class Stage(StrEnum):
    """Where the food is (seeds 001 and 004), what the public timeline shows."""

    RECEIVED = "received"
    ACCEPTED = "accepted"
    READY = "ready"
    OUT_FOR_DELIVERY = "out_for_delivery"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    REJECTED = "rejected"


WORKING: frozenset[str] = frozenset({"created", "sent_to_kitchen", "partially_sent", "held"})
FINAL: frozenset[str] = frozenset({"completed", "cancelled", "void", "refunded",
                                   "partially_refunded"})

# Every move the seed allows; anything else is refused. Held returns to where it was
# (checked separately against held_from); the kitchen-progress moves among the first three
# happen as tickets print.
ALLOWED: frozenset[tuple[str, str]] = frozenset({
    ("created", "sent_to_kitchen"), ("created", "partially_sent"),
    ("partially_sent", "sent_to_kitchen"), ("sent_to_kitchen", "partially_sent"),
    ("created", "held"), ("sent_to_kitchen", "held"), ("partially_sent", "held"),
    ("held", "created"), ("held", "sent_to_kitchen"), ("held", "partially_sent"),
    ("created", "void"), ("held", "void"),
    ("created", "cancelled"), ("sent_to_kitchen", "cancelled"),
    ("partially_sent", "cancelled"), ("held", "cancelled"),
    ("sent_to_kitchen", "completed"), ("partially_sent", "completed"),
    ("completed", "refunded"), ("completed", "partially_refunded"),
    ("partially_refunded", "refunded"), ("partially_refunded", "partially_refunded"),
})


class TransitionRefused(Rejected):
    """A move the order cannot make; dead-lettered with the seed's own wording."""

    def __init__(self, current: str, target: str, why: str | None = None) -> None:
        message = f'Cannot transition from "{current}" to "{target}"'
        super().__init__(f"{message}: {why}" if why else message, RejectKind.TRANSITION)
        self.current, self.target = current, target


def check(current: str, target: str, *, why: str | None = None) -> None:
    if (current, target) not in ALLOWED:
        raise TransitionRefused(current, target, why)


def progress_status(lines_total: int, lines_reached: int, current: str) -> str:
    """Created / Sent to Kitchen / Partially Sent from how many lines reached a printer."""
    if current not in ("created", "sent_to_kitchen", "partially_sent"):
        return current
    if lines_reached == 0:
        # Once sent, an order never goes back to Created: new unprinted lines make it partial.
        return "created" if current == "created" else "partially_sent"
    return "sent_to_kitchen" if lines_reached >= lines_total else "partially_sent"


# Fulfillment stages: forward only; the kitchen never moves food backwards.
STAGE_MOVES: dict[str, frozenset[str]] = {
    "received": frozenset({"accepted", "ready", "completed", "cancelled", "rejected"}),
    "accepted": frozenset({"ready", "out_for_delivery", "completed", "cancelled"}),
    "ready": frozenset({"out_for_delivery", "completed", "cancelled"}),
    "out_for_delivery": frozenset({"completed", "cancelled"}),
    "completed": frozenset(),
    "cancelled": frozenset(),
    "rejected": frozenset(),
}


def check_stage(current: str, target: str) -> None:
    if target not in STAGE_MOVES.get(current, frozenset()):
        raise TransitionRefused(current, target)
