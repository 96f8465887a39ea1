"""The seed 001 marketplace order, as the connector reads it from `GET /orders/get-current`.

Lenient where the seed is vague: fields we do not use (`courier_fee`, product ids, ...) are
ignored, whatever their shape; `customer`, `note`, `category`, `options`, `price`, `total` and
`preparing_time` may be absent or null; the customer's phone and address may have any shape;
an option is a string or an object with a `name`; an unreadable `preparing_time` is dropped;
`scheduled_date` may be absent, null, `""`, `YYYY-MM-DD HH:MM[:SS]` (space or `T`), or carry
its own UTC offset.

Strict where a wrong value would mislead the kitchen: `id` and `quantity` are true integers
(not `"2"`, not `2.5`, not `true`), `quantity` is at least 1, `status_id` is one of the
seed's five, `courier_type` is `restaurant` or `platform` (any case), `payment_key` is safe to
put in a URL path and an event id, every product has a name, and a `scheduled_date` that is
not a date is an error rather than "immediate".

`parse_order` raises `BadOrder` whose reason names every field at fault
(`products[1].quantity: Input should be greater than or equal to 1`).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Final

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)

# Seed 001 status ids.
RECEIVED: Final = 1
PREPARING: Final = 2
ON_THE_WAY: Final = 16
DELIVERED: Final = 5
CANCELLED: Final = 6
STATUSES: Final = (RECEIVED, PREPARING, ON_THE_WAY, DELIVERED, CANCELLED)

# The seed's cancel reasons, as `GET /orders/cancel-reasons` lists them.
CANCEL_REASONS: Final[dict[int, str]] = {
    1: "Ürün tükendi",
    2: "Adres bulunamıyor",
    3: "Yoğunluk nedeniyle",
    4: "Müşteri iptal etti",
    5: "Teknik sorun",
    6: "Çok uzak teslimat adresi",
    7: "Ödeme problemi",
    8: "Diğer",
}
OTHER_REASON_ID: Final = 8

PAYMENT_KEY_PATTERN: Final = r"^[A-Za-z0-9_-]{1,64}$"
_PAYMENT_KEY = re.compile(PAYMENT_KEY_PATTERN)
_SCHEDULED_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M")


class BadOrder(ValueError):
    """An order the connector cannot turn into kitchen events; `reason` names the fields."""

    def __init__(self, reason: str, payment_key: str | None = None,
                 order_id: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        # Read leniently from the raw order so the caller can still log (and acknowledge) it.
        self.payment_key = payment_key
        self.order_id = order_id


def _status(value: int) -> int:
    if value not in STATUSES:
        raise ValueError(f"unknown status {value}; the seed knows {', '.join(map(str, STATUSES))}")
    return value


def _courier(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


def _payment_method(value: Any) -> Any:
    if isinstance(value, str):
        return value.strip().upper().replace(" ", "_") or None
    return value


def _blank_to_none(value: Any) -> Any:
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _minutes(value: Any) -> int | None:
    return value if type(value) is int and 0 <= value <= 24 * 60 else None


def _none_to_empty(value: Any) -> Any:
    return [] if value is None else value


def _option(value: Any) -> Any:
    # Marketplaces send options as plain strings or as {"name": ..., "price": ...} objects.
    if isinstance(value, dict):
        name = value.get("name")
        if not isinstance(name, str):
            raise ValueError("an option object needs a string 'name'")
        return name
    return value


def _scheduled(value: Any) -> Any:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise ValueError("must be a string: empty, or 'YYYY-MM-DD HH:MM:SS'")
    text = value.strip().replace("T", " ", 1)
    moment: datetime | None = None
    for fmt in _SCHEDULED_FORMATS:
        try:
            moment = datetime.strptime(text, fmt)
            break
        except ValueError:
            continue
    if moment is None:
        try:
            # A marketplace that does send an offset has said exactly when it means.
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            moment = None
        if moment is None or moment.tzinfo is None:
            raise ValueError(f"'{value}' is not empty or 'YYYY-MM-DD HH:MM:SS'")
    if not 2000 <= moment.year <= 2200:
        raise ValueError(f"'{value}' is not a time between the years 2000 and 2200")
    return moment


Text = Annotated[str, StringConstraints(strip_whitespace=True, max_length=512)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=512)]
OptionalText = Annotated[Text | None, BeforeValidator(_blank_to_none)]
StrictCount = Annotated[int, Field(strict=True, ge=1, le=10_000)]
Money = Annotated[int, Field(strict=True, ge=0)]


class _Model(BaseModel):
    # Marketplaces add fields freely; we read what we use and ignore the rest.
    model_config = ConfigDict(extra="ignore", frozen=True)


class Customer(_Model):
    name: OptionalText = None
    # Never copied into an event; read only to blank it out of notes. Any shape is taken
    # (a string, an object of parts, a number): an odd phone must not lose the order.
    phone: Any = None
    address: Any = None


class Product(_Model):
    name: Name
    quantity: StrictCount
    price: Money | None = None                 # unit price, minor units
    category: OptionalText = None
    options: Annotated[list[Annotated[Text, BeforeValidator(_option)]],
                       BeforeValidator(_none_to_empty)] = Field(
        default_factory=list)
    note: OptionalText = None


class MarketplaceOrder(_Model):
    id: Annotated[int, Field(strict=True, ge=1)]
    payment_key: Annotated[str, Field(pattern=PAYMENT_KEY_PATTERN)]
    status_id: Annotated[int, Field(strict=True), AfterValidator(_status)]
    courier_type: Annotated[str, BeforeValidator(_courier),
                            Field(pattern=r"^(restaurant|platform)$")]
    payment_method: Annotated[str | None, BeforeValidator(_payment_method)] = None
    scheduled_date: Annotated[datetime | None, BeforeValidator(_scheduled)] = None
    note: OptionalText = None
    customer: Customer | None = None
    products: Annotated[list[Product], Field(min_length=1, max_length=500)]
    total: Money | None = None                 # minor units
    # Only a hint for an acceptance made elsewhere: a value we cannot read is dropped.
    preparing_time: Annotated[int | None, BeforeValidator(_minutes)] = None


def field_errors(exc: ValidationError, limit: int = 5) -> str:
    """`products[1].quantity: ...; customer.name: ...` from a pydantic error."""
    parts = []
    errors = exc.errors()
    for err in errors[:limit]:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
        message = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "missing":
            message = "required field is missing"
        elif err["type"] == "string_pattern_mismatch" and err["loc"][-1:] == ("courier_type",):
            message = "must be 'restaurant' or 'platform'"
        parts.append(f"{where.lstrip('.') or 'order'}: {message}")
    more = len(errors) - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def parse_order(document: Any) -> MarketplaceOrder:
    """One entry of `get-current`'s `data` list, validated; `BadOrder` names what is wrong."""
    if not isinstance(document, dict):
        raise BadOrder(f"order: must be a JSON object, not {type(document).__name__}")
    try:
        return MarketplaceOrder.model_validate(document)
    except ValidationError as exc:
        key = document.get("payment_key")
        order_id = document.get("id")
        raise BadOrder(
            field_errors(exc),
            payment_key=key if isinstance(key, str) and _PAYMENT_KEY.match(key) else None,
            order_id=order_id if type(order_id) is int else None,
        ) from None
