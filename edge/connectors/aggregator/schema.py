"""The bodies of CONTRACT section 10 (seed 004), in and out, and their validation.

In: what a delivery platform POSTs to the kitchen (`PlatformOrder`, `DeliveryStatus`,
`PlatformCancel`). `parse_body` turns raw request bytes into one of them or raises
`InvalidBody` whose `error` names the field at fault (`categories[0].items[2].quantity: Input
should be a valid integer`) and whose `status` is the HTTP answer (400, or 413 over 256 KiB).
Types are strict: `"2"` is not a quantity and `1` is not a boolean, so a platform's bug shows
at once instead of turning into a wrong ticket. Fields we do not know are ignored.

Out: the webhook bodies the kitchen PATCHes back, as the seed shows them. They forbid unknown
fields; the fake platform validates against them and the webhook builders are tested
against them.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
)

MAX_BODY = 256 * 1024

# The platform's order id goes into the kitchen order id (`ot-{id}`, CONTRACT section 3
# allows [A-Za-z0-9._-]{1,128}), into event ids (128 at most, with a suffix) and into webhook
# paths. 64 characters hold any UUID or numeric id with room to spare.
PLATFORM_ID_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"

FulfillmentType = Literal["pickup", "dx_delivery", "mx_fleet_delivery"]
CancelReason = Literal["ITEM_OUT_OF_STOCK", "STORE_CLOSED", "KITCHEN_BUSY", "OTHER"]


class DasherStatus(StrEnum):
    """The seed's delivery status flow, declared in its order: later members are further on."""

    DASHER_CONFIRMED = "dasher_confirmed"
    ARRIVING_AT_STORE = "arriving_at_store"
    ARRIVED_AT_STORE = "arrived_at_store"
    DASHER_OUT_FOR_DELIVERY = "dasher_out_for_delivery"
    DROPOFF = "dropoff"


class InvalidBody(Exception):
    """A request body the kitchen will not take; `error` goes back as `{"error": ...}`."""

    def __init__(self, error: str, status: int = 400) -> None:
        super().__init__(error)
        self.error = error
        self.status = status


def _platform_id(value: Any) -> Any:
    # Platforms use numbers as ids as often as strings; both name the same thing to us.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise ValueError("must be a string or an integer")
    return value


def _text(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value


def _count(value: Any) -> Any:
    # bool is an int to Python; `true` is never a quantity or an amount.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError("must be an integer")
    return value


def _rfc3339(value: Any) -> Any:
    # A bare number would otherwise pass as a Unix time.
    if not isinstance(value, str):
        raise ValueError("must be an RFC 3339 time string")
    return value


def _order_id(value: Any) -> Any:
    value = _platform_id(value)
    if not re.match(PLATFORM_ID_PATTERN, value):
        raise ValueError("must be 1 to 64 characters of A-Z a-z 0-9 . _ -")
    return value


PlatformId = Annotated[str, BeforeValidator(_order_id)]
ItemId = Annotated[
    str, BeforeValidator(_platform_id), StringConstraints(min_length=1, max_length=128)
]
Label = Annotated[str, BeforeValidator(_text), StringConstraints(min_length=1, max_length=512)]
Text = Annotated[str, BeforeValidator(_text), StringConstraints(max_length=1000)]
Quantity = Annotated[int, BeforeValidator(_count), Field(ge=1, le=10_000)]
Money = Annotated[int, BeforeValidator(_count), Field(ge=0, le=10**12)]
Moment = Annotated[datetime, BeforeValidator(_rfc3339)]


def _sane_time(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("must be an RFC 3339 time with a timezone offset")
    if not 2000 <= value.year <= 2200:
        raise ValueError("must be a time between the years 2000 and 2200")
    return value


class _In(BaseModel):
    # A platform may send fields of its own; we ignore what we do not use.
    model_config = ConfigDict(extra="ignore", frozen=True)


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- POST /orders ---------------------------------------------------------------------------


class StoreBusiness(_In):
    auto_release_enabled: StrictBool


class Store(_In):
    merchant_supplied_id: Label
    provider_type: Label
    timezone: Label
    store_business: StoreBusiness

    @field_validator("timezone")
    @classmethod
    def _iana(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"'{value[:64]}' is not an IANA time zone") from None
        return value


class Consumer(_In):
    """Who ordered. Only the first name and the last name's initial ever leave this model
    (see mapping.shown_name); e-mail and phone are read for nothing but scrubbing them."""

    id: ItemId
    first_name: Label
    last_name: Text | None = None
    email: Text | None = None
    phone: Text | None = None


class Extra(_In):
    name: Label


class Item(_In):
    id: ItemId
    name: Label
    quantity: Quantity
    price: Money
    extras: list[Extra] | None = None
    special_instructions: Text | None = None


class Category(_In):
    name: Text | None = None
    items: list[Item]


class PlatformOrder(_In):
    """`POST /orders`: the seed's body, with the items under `categories[].items[]`."""

    id: PlatformId
    store_order_cart_id: ItemId
    delivery_short_code: Label
    store: Store
    consumer: Consumer
    subtotal: Money
    tax: Money
    is_pickup: StrictBool
    estimated_pickup_time: Moment
    categories: Annotated[list[Category], Field(min_length=1)]
    fulfillment_type: FulfillmentType | None = None

    @field_validator("estimated_pickup_time")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return _sane_time(value)

    @field_validator("categories")
    @classmethod
    def _has_items(cls, value: list[Category]) -> list[Category]:
        if not any(category.items for category in value):
            raise ValueError("the order has no items")
        return value

    @field_validator("fulfillment_type")
    @classmethod
    def _agrees(cls, value: FulfillmentType | None, info: ValidationInfo) -> FulfillmentType | None:
        is_pickup = info.data.get("is_pickup")
        # When is_pickup itself failed, its own error says so; do not add a second one.
        if value is not None and isinstance(is_pickup, bool) and \
                (value == "pickup") != is_pickup:
            raise ValueError(f"'{value}' contradicts is_pickup {str(is_pickup).lower()}")
        return value

    @property
    def fulfillment(self) -> FulfillmentType:
        """The fulfillment type given, else the one `is_pickup` implies (platform delivery)."""
        if self.fulfillment_type is not None:
            return self.fulfillment_type
        return "pickup" if self.is_pickup else "dx_delivery"

    @property
    def items(self) -> list[Item]:
        return [item for category in self.categories for item in category.items]


# -- POST /orders/{id}/delivery-status ------------------------------------------------------


class Dasher(_In):
    """The courier. Read to validate, never copied anywhere."""

    first_name: Text | None = None
    last_name: Text | None = None
    phone_number: Text | None = None


class DeliveryStatus(_In):
    client_order_id: Label
    dasher_status: DasherStatus
    dasher: Dasher | None = None


# -- POST /orders/{id}/cancel ---------------------------------------------------------------


class CancelStore(_In):
    merchant_supplied_id: Label


class PlatformCancel(_In):
    store: CancelStore
    client_order_id: Label
    reason: Text


# -- the webhooks the kitchen sends (PATCH {webhook_url}...) --------------------------------


class OrderAccepted(_Out):
    """`PATCH /orders/{id}`, the restaurant accepted."""

    merchant_supplied_id: Label
    order_status: Literal["success"]
    prep_time: Moment

    @field_validator("prep_time")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return _sane_time(value)


class OrderRejected(_Out):
    """`PATCH /orders/{id}`, the restaurant declined."""

    merchant_supplied_id: Label
    order_status: Literal["fail"]
    failure_reason: Label


class OrderReady(_Out):
    """`PATCH /orders/{id}/events/order_ready_for_pickup`."""

    merchant_supplied_id: Label


class OrderCancellation(_Out):
    """`PATCH /orders/{id}/cancellation`, the restaurant cancelled."""

    cancel_reason: CancelReason
    cancel_details: Text


# -- parsing --------------------------------------------------------------------------------

M = TypeVar("M", bound=BaseModel)


# Pydantic's wording names Python types; a platform developer reads JSON.
_PLAIN = {
    "missing": "required field is missing",
    "model_type": "must be a JSON object",
    "model_attributes_type": "must be a JSON object",
    "dict_type": "must be a JSON object",
    "list_type": "must be a JSON array",
    "bool_type": "must be true or false",
}


def _length(kind: str, value: Any, ctx: dict[str, Any], fallback: str) -> str:
    unit = "characters" if isinstance(value, str) else "items" if isinstance(value, list) \
        else None
    if unit is None:
        return fallback
    if "short" in kind:
        least = ctx.get("min_length", 1)
        return "must not be empty" if least == 1 else f"must have at least {least} {unit}"
    return f"must have at most {ctx.get('max_length')} {unit}"


def describe(exc: ValidationError, limit: int = 5) -> str:
    """The errors of `exc` as `path.to[2].field: message; ...`, the first `limit` of them."""
    parts = []
    errors = exc.errors(include_url=False)
    for err in errors[:limit]:
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
        message = str(err["msg"]).removeprefix("Value error, ")
        message = _PLAIN.get(str(err["type"]), message)
        if err["type"] in ("too_short", "too_long", "string_too_short", "string_too_long"):
            message = _length(err["type"], err.get("input"), err.get("ctx") or {}, message)
        parts.append(f"{path.lstrip('.') or 'body'}: {message}")
    more = len(errors) - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def parse_body(model: type[M], raw: bytes) -> M:
    """Validate a request body as `model`; `InvalidBody` names what is wrong."""
    if len(raw) > MAX_BODY:
        raise InvalidBody(f"body is {len(raw)} bytes; the limit is {MAX_BODY} (256 KiB)", 413)
    try:
        document = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InvalidBody(f"body is not UTF-8: {exc.reason} at byte {exc.start}") from None
    except json.JSONDecodeError as exc:
        raise InvalidBody(f"body is not valid JSON: {exc.msg} at line {exc.lineno} "
                          f"column {exc.colno}") from None
    except RecursionError:
        raise InvalidBody("body is not valid JSON: nested too deeply") from None
    if not isinstance(document, dict):
        raise InvalidBody("body must be a JSON object")
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        raise InvalidBody(describe(exc)) from None
    except RecursionError:
        raise InvalidBody("body is nested too deeply") from None
