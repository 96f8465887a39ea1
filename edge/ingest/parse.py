"""Raw MQTT messages into typed events: the size limit, the topic, UTF-8, JSON, then the
schema (`edge.orders.events`, `edge.orders.apply.decode`). Every refusal is a `Rejected`
naming the field at fault, with its kind for the metrics."""

from __future__ import annotations

import json
import re
from typing import Any

from edge.orders.apply import decode
from edge.orders.events import ORDER_ID, Event, Rejected, RejectKind, parse_envelope

MAX_PAYLOAD = 256 * 1024


_SOURCE = re.compile(r"^[a-z0-9_-]{1,64}$")


def connector_topic(root: str, source: str) -> str:
    """The topic-like name events from an in-process order source are stored under. No MQTT
    subscription covers it, so no publisher on the broker can pose as a connector."""
    if not _SOURCE.match(source):
        raise ValueError(f"source {source!r}: lower-case letters, digits, '-' and '_' only")
    return f"{root}/connectors/{source}/events"


def _is_connector_topic(topic: str, root: str) -> bool:
    prefix, suffix = f"{root}/connectors/", "/events"
    return topic.startswith(prefix) and topic.endswith(suffix) and \
        _SOURCE.match(topic[len(prefix):-len(suffix)]) is not None


def topic_order_id(topic: str, root: str) -> str | None:
    """The order_id in `{root}/orders/{order_id}/events`, or None if the topic is not that."""
    prefix, suffix = f"{root}/orders/", "/events"
    if topic.startswith(prefix) and topic.endswith(suffix):
        middle = topic[len(prefix) : -len(suffix)]
        if "/" not in middle:
            return middle
    return None


def json_document(payload: bytes) -> tuple[Any, str]:
    """(document, text) of a UTF-8 JSON payload; Rejected otherwise."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejected(f"payload is not UTF-8: {exc.reason} at byte {exc.start}",
                       RejectKind.INVALID_JSON) from None
    try:
        return json.loads(text), text
    except json.JSONDecodeError as exc:
        raise Rejected(f"payload is not valid JSON: {exc.msg} at line {exc.lineno} "
                       f"column {exc.colno}", RejectKind.INVALID_JSON) from None
    except RecursionError:
        raise Rejected("payload is not valid JSON: nested too deeply",
                       RejectKind.INVALID_JSON) from None


def parse_event(topic: str, payload: bytes, root: str) -> Event[Any]:
    if len(payload) > MAX_PAYLOAD:
        raise Rejected(f"payload is {len(payload)} bytes; the limit is {MAX_PAYLOAD} (256 KiB)",
                       RejectKind.TOO_LARGE)
    # A connector's events name their order in the envelope only.
    topic_order: str | None = None
    if not _is_connector_topic(topic, root):
        topic_order = topic_order_id(topic, root)
        if topic_order is None or not ORDER_ID.match(topic_order):
            raise Rejected(f"topic '{topic}' does not name a valid order_id",
                           RejectKind.BAD_TOPIC)
    document, text = json_document(payload)
    if not isinstance(document, dict):
        raise Rejected("payload must be a JSON object")
    envelope = parse_envelope(document)
    if topic_order is not None and envelope.order_id != topic_order:
        raise Rejected(f"order_id '{envelope.order_id}' does not match the topic's "
                       f"'{topic_order}'", RejectKind.TOPIC_MISMATCH)
    return decode(envelope, text)


__all__ = ["MAX_PAYLOAD", "connector_topic", "json_document", "parse_event", "topic_order_id"]
