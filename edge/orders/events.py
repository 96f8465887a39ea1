"""The order event schema of CONTRACT section 4: the envelope, the event types and their
data models, and `Rejected`, the refusal that names the field at fault.

Nothing here knows where an event came from (MQTT, a connector): the ingest side turns bytes
into a document, `parse_envelope` checks the envelope, and `edge.orders.apply.decode` picks
the data model from the one registry of event types (`edge.orders.apply.EVENTS`). A refused
message is dead-lettered, never applied.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

ORDER_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
EVENT_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"

Channel = Literal[
    "pos", "qr_menu", "website", "kiosk", "phone", "marketplace", "openapp", "onetablet"
]


class RejectKind(StrEnum):
    """Why a message was refused, as the `reason_kind` metric label says it."""

    INVALID_JSON = "invalid_json"
    SCHEMA = "schema"
    TOO_LARGE = "too_large"
    TRANSITION = "transition"
    UNKNOWN_TYPE = "unknown_type"
    TOPIC_MISMATCH = "topic_mismatch"
    BAD_TOPIC = "bad_topic"
    OTHER = "other"


class Rejected(Exception):
    """The message is not applied; `reason` goes to the dead-letter topic and table."""

    def __init__(self, reason: str, kind: RejectKind = RejectKind.OTHER) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


class EventType(StrEnum):
    CREATED = "order.created"
    ITEMS_ADDED = "order.items_added"
    ITEMS_VOIDED = "order.items_voided"
    HELD = "order.held"
    RESUMED = "order.resumed"
    CANCELLED = "order.cancelled"
    ACCEPTED = "order.accepted"
    REJECTED = "order.rejected"
    READY = "order.ready"
    OUT_FOR_DELIVERY = "order.out_for_delivery"
    COMPLETED = "order.completed"
    # Additions (docs/contract-additions.md, AsyncAPI): courses, payment, refunds, compliments.
    COURSE_FIRED = "order.course_fired"
    PAYMENT_ADDED = "order.payment_added"
    REFUNDED = "order.refunded"
    ITEMS_COMPLIMENTED = "order.items_complimented"


class _Model(BaseModel):
    # Publishers may add fields of their own; we keep the payload, and ignore what we do not use.
    model_config = ConfigDict(extra="ignore", frozen=True)


class EventData(_Model):
    """The `data` of one event type."""


NonEmpty = Annotated[str, Field(min_length=1, max_length=512)]


class Item(_Model):
    line_id: Annotated[str, Field(min_length=1, max_length=128)]
    name: NonEmpty
    qty: Annotated[int, Field(ge=1, le=10_000, strict=True)]
    category: str | None = None
    modifiers: list[str] = Field(default_factory=list)
    note: str | None = None
    allergens: list[str] = Field(default_factory=list)
    course: Annotated[int, Field(ge=1, le=20, strict=True)] | None = None


class Source(_Model):
    channel: Channel
    device: str | None = None


class Fulfillment(_Model):
    type: Literal["dine_in", "pickup", "delivery"]
    table: str | None = None
    courier: Literal["restaurant", "platform"] | None = None


class Customer(_Model):
    name: str | None = None
    phone: str | None = None


def _sane_time(value: datetime) -> datetime:
    """Aware, and in years a restaurant can mean: `0001-01-01T00:00:00+01:00` is valid RFC 3339
    but overflows as soon as it is converted to UTC or moved by a lead time."""
    if value.tzinfo is None:
        raise ValueError("must be an RFC 3339 time with a timezone")
    if not 2000 <= value.year <= 2200:
        raise ValueError("must be a time between the years 2000 and 2200")
    return value


def _unique_lines(items: list[Item]) -> list[Item]:
    seen: set[str] = set()
    for item in items:
        if item.line_id in seen:
            raise ValueError(f"line_id '{item.line_id}' appears twice")
        seen.add(item.line_id)
    return items


class OrderCreated(EventData):
    display_id: str | None = None
    fulfillment: Fulfillment
    customer: Customer | None = None
    scheduled_for: datetime | None = None
    note: str | None = None
    items: Annotated[list[Item], Field(min_length=1)]
    # Addition: an order a channel sends for the restaurant to accept or reject (seeds 001,
    # 004, without auto-accept). Its tickets wait for `order.accepted`; `order.rejected`
    # calls it off before anything printed.
    requires_acceptance: Annotated[bool, Field(strict=True)] = False

    _lines = field_validator("items")(_unique_lines)

    @field_validator("scheduled_for")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        return None if value is None else _sane_time(value)


class ItemsAdded(EventData):
    batch_id: Annotated[str, Field(min_length=1, max_length=128)]
    items: Annotated[list[Item], Field(min_length=1)]

    _lines = field_validator("items")(_unique_lines)


class ItemsVoided(EventData):
    line_ids: Annotated[list[str], Field(min_length=1)]
    reason: str | None = None


class Empty(EventData):
    pass


class Cancelled(EventData):
    reason_code: NonEmpty
    reason: str | None = None


class Accepted(EventData):
    prep_minutes: Annotated[int, Field(ge=0, le=24 * 60, strict=True)] | None = None


class RejectedByRestaurant(EventData):
    reason: NonEmpty
    # Addition: why, as a code a channel can map (the marketplace's reason ids, seed 001).
    reason_code: Annotated[str, Field(min_length=1, max_length=64)] | None = None


class CourseFired(EventData):
    course: Annotated[int, Field(ge=1, le=20, strict=True)]


class PaymentAdded(EventData):
    payment_id: Annotated[str, Field(min_length=1, max_length=128)]
    amount_cents: Annotated[int, Field(ge=1, strict=True)]
    method: NonEmpty
    completes: bool = True


class Refunded(EventData):
    refund_id: Annotated[str, Field(min_length=1, max_length=128)]
    amount_cents: Annotated[int, Field(ge=1, strict=True)]
    method: NonEmpty
    reason: NonEmpty


class ItemsComplimented(EventData):
    line_ids: Annotated[list[str], Field(min_length=1)]
    reason: NonEmpty


class Envelope(_Model):
    event_id: Annotated[str, Field(pattern=EVENT_ID_PATTERN)]
    type: str
    order_id: Annotated[str, Field(pattern=ORDER_ID.pattern)]
    occurred_at: datetime
    source: Source
    data: dict[str, Any]

    @field_validator("occurred_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return _sane_time(value)


D = TypeVar("D", bound=EventData)


@dataclass(frozen=True)
class Event(Generic[D]):
    """A validated event: the envelope, its typed data, and the payload as received."""

    envelope: Envelope
    type: EventType
    data: D
    raw: str

    @property
    def event_id(self) -> str:
        return self.envelope.event_id

    @property
    def order_id(self) -> str:
        return self.envelope.order_id


def field_errors(exc: ValidationError, prefix: str) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = prefix + "".join(
            f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]
        )
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "missing":
            msg = "required field is missing"
        parts.append(f"{loc.lstrip('.')}: {msg}")
    more = len(exc.errors()) - 5
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def parse_envelope(document: dict[str, Any]) -> Envelope:
    try:
        return Envelope.model_validate(document)
    except ValidationError as exc:
        raise Rejected(f"schema: {field_errors(exc, '')}", RejectKind.SCHEMA) from None


def parse_data(model: type[D], envelope: Envelope) -> D:
    try:
        return model.model_validate(envelope.data)
    except ValidationError as exc:
        raise Rejected(f"schema: {field_errors(exc, 'data')}", RejectKind.SCHEMA) from None
