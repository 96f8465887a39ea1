"""The order event schema of CONTRACT section 4, and its validation.

`parse_event` turns raw MQTT bytes into a typed `Event` or raises `Rejected` with a reason
naming the field at fault; rejected messages are dead-lettered, never applied.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

MAX_PAYLOAD = 256 * 1024
ORDER_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
EVENT_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"

Channel = Literal[
    "pos", "qr_menu", "website", "kiosk", "phone", "marketplace", "openapp", "onetablet"
]


class Rejected(Exception):
    """The message is not applied; `reason` goes to the dead-letter topic and table."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Model(BaseModel):
    # Publishers may add fields of their own; we keep the payload, and ignore what we do not use.
    model_config = ConfigDict(extra="ignore", frozen=True)


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


class OrderCreated(_Model):
    display_id: str | None = None
    fulfillment: Fulfillment
    customer: Customer | None = None
    scheduled_for: datetime | None = None
    note: str | None = None
    items: Annotated[list[Item], Field(min_length=1)]

    _lines = field_validator("items")(_unique_lines)

    @field_validator("scheduled_for")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        return None if value is None else _sane_time(value)


class ItemsAdded(_Model):
    batch_id: Annotated[str, Field(min_length=1, max_length=128)]
    items: Annotated[list[Item], Field(min_length=1)]

    _lines = field_validator("items")(_unique_lines)


class ItemsVoided(_Model):
    line_ids: Annotated[list[str], Field(min_length=1)]
    reason: str | None = None


class Empty(_Model):
    pass


class Cancelled(_Model):
    reason_code: NonEmpty
    reason: str | None = None


class Accepted(_Model):
    prep_minutes: Annotated[int, Field(ge=0, le=24 * 60, strict=True)] | None = None


class RejectedByRestaurant(_Model):
    reason: NonEmpty


class CourseFired(_Model):
    course: Annotated[int, Field(ge=1, le=20, strict=True)]


class PaymentAdded(_Model):
    payment_id: Annotated[str, Field(min_length=1, max_length=128)]
    amount_cents: Annotated[int, Field(ge=1, strict=True)]
    method: NonEmpty
    completes: bool = True


class Refunded(_Model):
    refund_id: Annotated[str, Field(min_length=1, max_length=128)]
    amount_cents: Annotated[int, Field(ge=1, strict=True)]
    method: NonEmpty
    reason: NonEmpty


class ItemsComplimented(_Model):
    line_ids: Annotated[list[str], Field(min_length=1)]
    reason: NonEmpty


DATA_MODELS: dict[str, type[_Model]] = {
    "order.created": OrderCreated,
    "order.items_added": ItemsAdded,
    "order.items_voided": ItemsVoided,
    "order.held": Empty,
    "order.resumed": Empty,
    "order.cancelled": Cancelled,
    "order.accepted": Accepted,
    "order.rejected": RejectedByRestaurant,
    "order.ready": Empty,
    "order.out_for_delivery": Empty,
    "order.completed": Empty,
    # Additions (docs/contract-additions.md, AsyncAPI): courses, payment, refunds, compliments.
    "order.course_fired": CourseFired,
    "order.payment_added": PaymentAdded,
    "order.refunded": Refunded,
    "order.items_complimented": ItemsComplimented,
}


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


class Event(BaseModel):
    """A validated event: the envelope plus its typed data, and the raw payload as received."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    envelope: Envelope
    data: Any
    raw: str

    @property
    def event_id(self) -> str:
        return self.envelope.event_id

    @property
    def order_id(self) -> str:
        return self.envelope.order_id

    @property
    def type(self) -> str:
        return self.envelope.type


def _field_errors(exc: ValidationError, prefix: str) -> str:
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


def topic_order_id(topic: str, root: str) -> str | None:
    """The order_id in `{root}/orders/{order_id}/events`, or None if the topic is not that."""
    prefix, suffix = f"{root}/orders/", "/events"
    if topic.startswith(prefix) and topic.endswith(suffix):
        middle = topic[len(prefix) : -len(suffix)]
        if "/" not in middle:
            return middle
    return None


def parse_event(topic: str, payload: bytes, root: str) -> Event:
    if len(payload) > MAX_PAYLOAD:
        raise Rejected(f"payload is {len(payload)} bytes; the limit is {MAX_PAYLOAD} (256 KiB)")
    topic_order = topic_order_id(topic, root)
    if topic_order is None or not ORDER_ID.match(topic_order):
        raise Rejected(f"topic '{topic}' does not name a valid order_id")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejected(f"payload is not UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise Rejected(f"payload is not valid JSON: {exc.msg} at line {exc.lineno} "
                       f"column {exc.colno}") from None
    except RecursionError:
        raise Rejected("payload is not valid JSON: nested too deeply") from None
    if not isinstance(document, dict):
        raise Rejected("payload must be a JSON object")
    try:
        envelope = Envelope.model_validate(document)
    except ValidationError as exc:
        raise Rejected(f"schema: {_field_errors(exc, '')}") from None
    if envelope.order_id != topic_order:
        raise Rejected(f"order_id '{envelope.order_id}' does not match the topic's "
                       f"'{topic_order}'")
    model = DATA_MODELS.get(envelope.type)
    if model is None:
        raise Rejected(f"unknown event type '{envelope.type}'")
    try:
        data = model.model_validate(envelope.data)
    except ValidationError as exc:
        raise Rejected(f"schema: {_field_errors(exc, 'data')}") from None
    return Event(envelope=envelope, data=data, raw=text)
