"""What a kitchen-display card says, built from the store's ticket rows.

A card is one cooking ticket at one station. The notices that paper gets as tickets of
their own (VOID, HOLD, FIRE, CANCELLED) are shown on the cards they change instead: a voided
line is struck through, a held order says HOLD, a called-off one CANCELLED. The card keeps
the lines the kitchen first saw, so a void never makes food silently disappear.

Everything here is plain data; the browser sets it as text, never as markup. Free text
(names, modifiers, notes) is scrubbed of anything shaped like a phone number or an e-mail
address; identifiers (order, display and table ids) are the POS's own and shown as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from edge.store.kds import TicketLine, TicketRow
from edge.web.privacy import scrub, scrub_opt

CALLED_OFF_STATUSES = frozenset({"cancelled", "void"})
CALLED_OFF_STAGES = frozenset({"cancelled", "rejected"})
WHERE = {"dine_in": "Dine in", "pickup": "Pickup", "delivery": "Delivery"}
# A platform's delivery says who brings it, as its ticket does (seed 004).
SERVICES = {"platform_delivery": "Platform delivery", "fleet_delivery": "Fleet delivery"}


@dataclass(frozen=True, slots=True)
class CardItem:
    line_id: str
    qty: int
    name: str
    modifiers: tuple[str, ...]
    note: str | None
    allergens: tuple[str, ...]
    voided: bool


@dataclass(frozen=True, slots=True)
class Card:
    card_id: str                    # the job key
    order_id: str
    station_id: str
    kind: str                       # NEW | ADDED | FIRE
    display_id: str
    where: str                      # "Table 7", "Pickup", "Delivery"
    channel: str
    note: str | None
    items: tuple[CardItem, ...]
    started_at: str                 # RFC 3339: the timer counts from here, across recalls
    flags: tuple[str, ...]          # HOLD, CANCELLED, RECALLED

    def wire(self) -> dict[str, Any]:
        return asdict(self)


def where_of(fulfillment: str | None, table: str | None, service: str | None = None) -> str:
    if table:
        return f"Table {table}"
    if fulfillment == "delivery" and service in SERVICES:
        return SERVICES[service]
    return WHERE.get(fulfillment or "", (fulfillment or "").replace("_", " ").capitalize())


def build_card(row: TicketRow, lines: Mapping[tuple[str, str], TicketLine]) -> Card:
    items: list[CardItem] = []
    for line_id in row.line_ids:
        line = lines.get((row.order_id, line_id))
        if line is None:        # a line the order no longer has: nothing true to show
            continue
        items.append(CardItem(
            line_id=line_id, qty=line.qty, name=scrub(line.name),
            modifiers=tuple(scrub(m) for m in line.modifiers), note=scrub_opt(line.note),
            allergens=tuple(scrub(a) for a in line.allergens), voided=line.state == "voided"))
    flags: list[str] = []
    if row.status in CALLED_OFF_STATUSES or row.stage in CALLED_OFF_STAGES:
        flags.append("CANCELLED")
    elif row.status == "held":
        flags.append("HOLD")
    if row.recalled:
        flags.append("RECALLED")
    return Card(
        card_id=row.job_key, order_id=row.order_id, station_id=row.station_id, kind=row.kind,
        display_id=row.display_id or row.order_id,
        where=where_of(row.fulfillment, row.table_label, row.service), channel=row.channel,
        note=scrub_opt(row.order_note), items=tuple(items), started_at=row.shown_at,
        flags=tuple(flags))


__all__ = ["Card", "CardItem", "build_card", "where_of"]
