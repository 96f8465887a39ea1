"""OpenApp table ordering (seed 002, CONTRACT section 11), inside the kitchen's transactions.

OpenApp's requests come in on `{root}/openapp/in` and take the order events' road: checked
and stored as received in the intake's durable transaction (`store_request`), acknowledged,
then applied by the applier (`Desk.apply`), one savepoint each. Every answer, and every
change pushed to a streamed table, is written to the `openapp_out` outbox in the transaction
of what it reports; the OpenApp component publishes it after COMMIT and marks it sent once
the broker has it, so a crash anywhere in between still answers, from the outbox, at the
next start.

- `TableOrderSnapshotRequested`: the table's open check (`edge.orders.checks`), or null;
  the table is streamed from then on (`table_streams`), until ORDER_CLOSED.
- `OrderSubmissionRequested`: each item accepted or rejected against the menu and the stock
  in this one transaction (so two guests after the last portion cannot both have it); the
  accepted ones join the open check as one round (`order.items_added`, an ADDED ticket) or
  open a check (`order.created`, channel openapp), applied here through the same `Applier`
  as any event, which takes the portions. One answer per `submission_id`, repeated as is.
- `on_applied` (a transactional reaction): a POS-side change to a streamed table's check
  pushes `TableOrderSnapshotChanged` with the whole check; OpenApp's own rounds are
  answered by their results instead.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge.clock import rfc3339_ms
from edge.feed import Change, EventApplied
from edge.orders import checks, menu, opening, status
from edge.orders.apply import Applier, decode
from edge.orders.events import (
    EVENT_ID_PATTERN,
    ORDER_ID,
    Rejected,
    RejectKind,
    field_errors,
    parse_envelope,
)
from edge.store import Tx, events, orders
from edge.store import checks as check_table
from edge.store import openapp as messages
from edge.store.openapp import StoredRequest

log = structlog.get_logger(__name__)

CHANNEL = "openapp"


class MessageType(StrEnum):
    SNAPSHOT_REQUESTED = "TableOrderSnapshotRequested"
    SNAPSHOT_RESULT = "TableOrderSnapshotResolutionResult"
    SUBMISSION_REQUESTED = "OrderSubmissionRequested"
    SUBMISSION_RESULT = "OrderSubmissionResult"
    SNAPSHOT_CHANGED = "TableOrderSnapshotChanged"


class ChangeType(StrEnum):
    ITEMS_ADDED = "ITEMS_ADDED"
    ITEMS_CANCELLED = "ITEMS_CANCELLED"
    ITEMS_DELIVERED = "ITEMS_DELIVERED"
    DISCOUNT_APPLIED = "DISCOUNT_APPLIED"
    LINES_REMOVED = "LINES_REMOVED"
    ORDER_CLOSED = "ORDER_CLOSED"


class Reason(StrEnum):
    OUT_OF_STOCK = "OUT_OF_STOCK"
    INSUFFICIENT_STOCK = "INSUFFICIENT_STOCK"
    DELISTED = "DELISTED"
    ORDER_CLOSED = "ORDER_CLOSED"
    PRICE_CHANGED = "PRICE_CHANGED"


@dataclass(frozen=True)
class TableMessageQueued(Change):
    """A message to OpenApp waits in the `openapp_out` outbox."""

    table_id: str


# -- the requests -----------------------------------------------------------------------


class _Message(BaseModel):
    # OpenApp may send fields of its own; they are kept in the stored payload, not read.
    model_config = ConfigDict(extra="ignore", frozen=True)


class Request(_Message):
    message_type: str
    message_id: Annotated[str, Field(pattern=EVENT_ID_PATTERN)]
    table_id: Annotated[str, Field(min_length=1, max_length=64)]
    sent_at: datetime


class SnapshotRequested(Request):
    message_type: Literal["TableOrderSnapshotRequested"]


class SubmittedItem(_Message):
    # An id the menu does not know is DELISTED, not a broken message.
    product_id: Annotated[str, Field(min_length=1, max_length=128)]
    qty: Annotated[int, Field(ge=1, le=100, strict=True)]
    unit_price: Annotated[int, Field(ge=0, strict=True)]
    modifiers: Annotated[list[Annotated[str, Field(min_length=1, max_length=128)]],
                         Field(max_length=20)] = Field(default_factory=list)
    note: Annotated[str, Field(max_length=512)] | None = None


class SubmissionRequested(Request):
    message_type: Literal["OrderSubmissionRequested"]
    # Part of the event ids and line ids the round makes: shorter than a message id.
    submission_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9._:-]{1,100}$")]
    items: Annotated[list[SubmittedItem], Field(min_length=1, max_length=100)]
    # Addition: the check the guest's session is on (from its snapshot). When that check is
    # closed meanwhile, every item is rejected ORDER_CLOSED instead of opening a new one.
    order_id: Annotated[str, Field(pattern=ORDER_ID.pattern)] | None = None


REQUESTS: dict[str, type[SnapshotRequested] | type[SubmissionRequested]] = {
    MessageType.SNAPSHOT_REQUESTED: SnapshotRequested,
    MessageType.SUBMISSION_REQUESTED: SubmissionRequested,
}


def parse_request(document: Any, zone: ZoneInfo) -> SnapshotRequested | SubmissionRequested:
    """A valid request, or `Rejected` naming the field at fault. A `sent_at` without an
    offset is read in the configured time zone."""
    if not isinstance(document, dict):
        raise Rejected("payload must be a JSON object")
    kind = document.get("message_type")
    model = REQUESTS.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise Rejected(f"schema: message_type: must be one of {', '.join(REQUESTS)}"
                       + (f" (got '{str(kind)[:64]}')" if kind is not None else ""),
                       RejectKind.UNKNOWN_TYPE)
    try:
        request = model.model_validate(document)
    except ValidationError as exc:
        raise Rejected(f"schema: {field_errors(exc, '')}", RejectKind.SCHEMA) from None
    if request.sent_at.tzinfo is None:
        request = request.model_copy(update={"sent_at": request.sent_at.replace(tzinfo=zone)})
    return request


def store_request(tx: Tx, request: Request, text: str, now: datetime) -> bool:
    """Keep the request as received (the intake's durable step); False when its
    message_id was stored before (a redelivery: already answered, or about to be)."""
    if messages.seen(tx.conn, request.message_id):
        return False
    messages.add(tx.conn, message_id=request.message_id, message_type=request.message_type,
                 table_id=request.table_id, received_at=rfc3339_ms(now), payload=text)
    return True


# -- applying them ----------------------------------------------------------------------


@dataclass
class Handled:
    """What applying one request did: the orders it touched (for their timelines), the
    jobs it created, and its answer."""

    message_type: str
    order_id: str | None = None
    touched: set[str] = field(default_factory=set)
    new_jobs: list[str] = field(default_factory=list)
    answer: dict[str, Any] = field(default_factory=dict)


def message_id(root: str, *parts: str) -> str:
    """A message id derived from what the message answers or reports: the same answer
    written again (a request applied again after a power cut) keeps its id, so OpenApp
    can drop a second copy by id."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "/".join((root, "openapp", *parts))))


def queue_message(tx: Tx, *, message_type: MessageType, msg_id: str, table_id: str,
                  body: dict[str, Any], now: datetime) -> None:
    document = {"message_type": message_type.value, "message_id": msg_id,
                "table_id": table_id, "sent_at": rfc3339_ms(now), **body}
    if messages.queue(tx.conn, message_id=msg_id, message_type=message_type.value,
                      table_id=table_id, body=json.dumps(document, ensure_ascii=False),
                      at=rfc3339_ms(now)):
        tx.emit(TableMessageQueued(table_id))


def round_ref(submission_id: str) -> str:
    """A short, stable name for a submission's round: its batch id, so its job keys
    (`{order}/add-oa-1a2b3c4d5e/{station}`) fit the ticket's last line whatever OpenApp's
    submission ids look like."""
    return "oa-" + hashlib.sha256(submission_id.encode()).hexdigest()[:10]


class Desk:
    """OpenApp's requests, applied in the applier's transaction."""

    def __init__(self, root: str, applier: Applier, events_topic: str) -> None:
        self.root = root
        self.applier = applier
        self.events_topic = events_topic

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.applier.plan.timezone)

    @property
    def currency(self) -> str | None:
        menu_file = self.applier.plan.menu
        return menu_file.currency if menu_file is not None else None

    def known_table(self, table_id: str) -> bool:
        tables = self.applier.plan.tables
        return tables is None or table_id in tables

    def apply(self, tx: Tx, stored: StoredRequest, now: datetime) -> Handled:
        request = parse_request(json.loads(stored.payload), self.zone)
        if isinstance(request, SnapshotRequested):
            return self._snapshot(tx, request, now)
        return self._submission(tx, request, now)

    def _reply(self, tx: Tx, request: Request, kind: MessageType, body: dict[str, Any],
               now: datetime) -> dict[str, Any]:
        answer = {"correlation_id": request.message_id, **body}
        queue_message(tx, message_type=kind, msg_id=message_id(self.root, "result",
                                                               request.message_id),
                      table_id=request.table_id, body=answer, now=now)
        return answer

    # -- snapshot ------------------------------------------------------------------------

    def _snapshot(self, tx: Tx, request: SnapshotRequested, now: datetime) -> Handled:
        handled = Handled(request.message_type)
        if not self.known_table(request.table_id):
            handled.answer = self._reply(tx, request, MessageType.SNAPSHOT_RESULT, {
                "resolution": "REJECTED", "rejection_reason": "TABLE_NOT_FOUND"}, now)
            return handled
        check = checks.open_check(tx.conn, request.table_id)
        document = checks.document(tx.conn, check.order_id, self.currency) \
            if check is not None else None
        if check_table.start_stream(tx.conn, request.table_id, rfc3339_ms(now)):
            log.info("openapp_stream_started", table_id=request.table_id)
        handled.order_id = check.order_id if check is not None else None
        handled.answer = self._reply(tx, request, MessageType.SNAPSHOT_RESULT, {
            "resolution": "RESOLVED", "order": document}, now)
        return handled

    # -- submission ----------------------------------------------------------------------

    def _submission(self, tx: Tx, request: SubmissionRequested, now: datetime) -> Handled:
        handled = Handled(request.message_type)
        before = messages.submission_result(tx.conn, request.submission_id)
        if before is not None:
            # The same submission again: the same answer, nothing new in the kitchen.
            result = json.loads(before)
            handled.order_id = result.get("order_id")
            handled.answer = self._reply(tx, request, MessageType.SUBMISSION_RESULT,
                                         result, now)
            return handled
        result = self._decide(tx, request, handled, now)
        messages.add_submission(tx.conn, submission_id=request.submission_id,
                                table_id=request.table_id, order_id=result.get("order_id"),
                                result=json.dumps(result, ensure_ascii=False),
                                at=rfc3339_ms(now))
        handled.answer = self._reply(tx, request, MessageType.SUBMISSION_RESULT, result, now)
        return handled

    def _decide(self, tx: Tx, request: SubmissionRequested, handled: Handled,
                now: datetime) -> dict[str, Any]:
        items = request.items

        def refuse_all(why: str | None) -> dict[str, Any]:
            out: dict[str, Any] = {
                "submission_id": request.submission_id, "accepted": [],
                "rejected": [{"product_id": i.product_id, "qty": i.qty,
                              "reason": Reason.ORDER_CLOSED.value} for i in items]}
            if why is not None:
                out["rejection_reason"] = why
            return out

        if not self.known_table(request.table_id):
            return refuse_all("TABLE_NOT_FOUND")
        check = checks.open_check(tx.conn, request.table_id)
        if request.order_id is not None:
            named = orders.get(tx.conn, request.order_id)
            if named is None or named.status not in status.WORKING \
                    or named.table_label != request.table_id:
                return refuse_all(None)
            check = named
        if check is None and not opening.current(tx.conn).takes_orders(now):
            # A paused store opens no new check; a table being served carries on.
            return refuse_all("STORE_CLOSED")
        plan_menu = self.applier.plan.menu
        taking: dict[str, int] = {}
        accepted: list[tuple[int, SubmittedItem]] = []
        rejected: list[dict[str, Any]] = []
        for n, item in enumerate(items, start=1):
            got = menu.offer(tx.conn, plan_menu, item.product_id, item.qty, item.unit_price,
                             taking.get(item.product_id, 0))
            if got.reason is None:
                taking[item.product_id] = taking.get(item.product_id, 0) + item.qty
                accepted.append((n, item))
                continue
            entry: dict[str, Any] = {"product_id": item.product_id, "qty": item.qty,
                                     "reason": got.reason}
            if got.available_qty is not None:
                entry["available_qty"] = got.available_qty
            if got.current_price is not None:
                entry["current_price"] = got.current_price
            rejected.append(entry)
        result: dict[str, Any] = {"submission_id": request.submission_id, "accepted": [],
                                  "rejected": rejected}
        if not accepted:
            return result
        order_id = check.order_id if check is not None else self._new_order_id(request)
        lines = [(f"{request.submission_id}-{n}", item) for n, item in accepted]
        try:
            with tx.savepoint("openapp_round"):
                self._round(tx, request, check is None, order_id, lines, handled, now)
        except Rejected as exc:
            # The kitchen refused the round (the check closed under it): nothing was added.
            log.warning("openapp_round_refused", table_id=request.table_id, order_id=order_id,
                        reason=exc.reason)
            return refuse_all(None)
        result["order_id"] = order_id
        result["accepted"] = [{"product_id": item.product_id, "qty": item.qty,
                               "line_id": line_id} for line_id, item in lines]
        return result

    def _new_order_id(self, request: SubmissionRequested) -> str:
        table = re.sub(r"[^A-Za-z0-9._-]", "_", request.table_id)[:32]
        return f"oa-{table}-{round_ref(request.submission_id)[3:]}"

    def _round(self, tx: Tx, request: SubmissionRequested, opens: bool, order_id: str,
               lines: list[tuple[str, SubmittedItem]], handled: Handled,
               now: datetime) -> None:
        """The accepted items as an order event, stored and applied here like any other,
        so the stock is taken in this transaction and the tickets are the usual ones."""
        plan_menu = self.applier.plan.menu
        assert plan_menu is not None  # an accepted item is a known product
        items: list[dict[str, Any]] = []
        for line_id, item in lines:
            product = plan_menu.product(item.product_id)
            assert product is not None
            entry: dict[str, Any] = {"line_id": line_id, "name": product.name, "qty": item.qty,
                                     "category": product.category,
                                     "product_id": item.product_id,
                                     "unit_price": item.unit_price}
            if item.modifiers:
                entry["modifiers"] = item.modifiers
            if item.note:
                entry["note"] = item.note
            items.append(entry)
        if opens:
            kind = "order.created"
            data: dict[str, Any] = {"fulfillment": {"type": "dine_in",
                                                    "table": request.table_id},
                                    "items": items}
        else:
            kind = "order.items_added"
            data = {"batch_id": round_ref(request.submission_id), "items": items}
        document = {"event_id": f"openapp:{request.submission_id}", "type": kind,
                    "order_id": order_id, "occurred_at": rfc3339_ms(request.sent_at),
                    "source": {"channel": CHANNEL, "device": "openapp"}, "data": data}
        text = json.dumps(document, ensure_ascii=False)
        event = decode(parse_envelope(document), text)
        env = event.envelope
        events.add(tx.conn, event_id=event.event_id, order_id=order_id, type=kind,
                   occurred_at=rfc3339_ms(env.occurred_at), received_at=rfc3339_ms(now),
                   channel=CHANNEL, device="openapp", topic=self.events_topic, payload=text,
                   applied=True)
        applied = self.applier.apply(tx, event, now)
        tx.emit(EventApplied(event.event_id, order_id, kind, applied.effect))
        handled.order_id = order_id
        handled.touched.add(order_id)
        handled.new_jobs += applied.new_jobs


# -- pushing the POS side's changes ------------------------------------------------------

# The changes OpenApp hears of; the rest (hold, fire, payments that do not close the check,
# the kitchen's stages) change nothing on the guest's check.
_PUSHED = {"order.created", "order.items_added", "order.items_voided",
           "order.items_delivered", "order.discount_applied", "order.items_complimented",
           "order.payment_added", "order.completed", "order.cancelled", "order.rejected"}


def change_type(tx: Tx, change: EventApplied, channel: str, data: dict[str, Any],
                order_status: str) -> ChangeType | None:
    kind = change.event_type
    if order_status in status.FINAL:
        # The check closed with this change (paid, completed, cancelled, every line void).
        return ChangeType.ORDER_CLOSED if kind in _PUSHED else None
    if kind in ("order.created", "order.items_added"):
        # The guest's own round is answered by its result, not pushed.
        return None if channel == CHANNEL else ChangeType.ITEMS_ADDED
    if kind == "order.items_voided":
        voided = [str(x) for x in data.get("line_ids", [])]
        assert change.order_id is not None
        return ChangeType.LINES_REMOVED if checks.removed(tx.conn, change.order_id, voided) \
            else ChangeType.ITEMS_CANCELLED
    if kind == "order.items_delivered":
        return ChangeType.ITEMS_DELIVERED
    if kind in ("order.discount_applied", "order.items_complimented"):
        # A compliment takes lines to zero price: for the guest's total, a discount.
        return ChangeType.DISCOUNT_APPLIED
    return None


def on_applied(tx: Tx, change: EventApplied, *, root: str, currency: str | None,
               now: datetime) -> None:
    """Transactional reaction: a change to a streamed table's check, made on the POS side,
    pushes the whole check to OpenApp in the same transaction. ORDER_CLOSED ends the table's
    stream until OpenApp asks for a snapshot again."""
    if change.effect != "applied" or change.order_id is None \
            or change.event_type not in _PUSHED:
        return
    # Most kitchens stream no table: one small look, not the order's row, for every event.
    if not check_table.any_streamed(tx.conn):
        return
    order = orders.get(tx.conn, change.order_id)
    if order is None or order.fulfillment != "dine_in" or not order.table_label:
        return
    table_id = order.table_label
    stream = check_table.stream(tx.conn, table_id)
    if stream is None or not stream.active:
        return
    payloads = events.payloads(tx.conn, change.event_id)
    document = json.loads(payloads[0]) if payloads else {}
    channel = str(document.get("source", {}).get("channel", ""))
    kind = change_type(tx, change, channel, document.get("data", {}), order.status)
    if kind is None:
        return
    queue_message(tx, message_type=MessageType.SNAPSHOT_CHANGED,
                  msg_id=message_id(root, "change", table_id, change.event_id),
                  table_id=table_id,
                  body={"change_type": kind.value,
                        "order": checks.document(tx.conn, order.order_id, currency)}, now=now)
    if kind is ChangeType.ORDER_CLOSED:
        check_table.end_stream(tx.conn, table_id, rfc3339_ms(now))
        log.info("openapp_stream_ended", table_id=table_id, order_id=order.order_id)


__all__ = ["CHANNEL", "REQUESTS", "ChangeType", "Desk", "Handled", "MessageType", "Reason",
           "SnapshotRequested", "SubmissionRequested", "SubmittedItem", "TableMessageQueued",
           "change_type", "message_id", "on_applied", "parse_request", "queue_message",
           "round_ref", "store_request"]
