"""The public status timeline of an order (CONTRACT section 6, seed 000).

A read-only evidence view: every step is derived from a row that proves it, and reading a
timeline only reads (through the table owners in `edge.store`). The first five steps, in
this fixed order:

1. `order_accepted` - the order's intake event (`orders.intake_event_id`); at: its
   `occurred_at`.
2. `routed_to_core` - ingest applied the intake and recorded its lines for the stations
   (`order_lines` rows, or print jobs, exist); evidence `ingest_{intake_event_id}`; at: when
   the intake was received.
3. `kitchen_ticket_created` - a kitchen print job exists for the order (in any state,
   waiting jobs of a scheduled order included); evidence `ingest_{intake_event_id}` as in
   seed 000; at: that job's `created_at`.
4. `printer_job_created` - the first original (non-reprint) job was handed to a printer
   (queued, sending, printed or failed, not just waiting or withdrawn); evidence its
   `job_key`; at: `printed_at`, else `queued_at`, else `created_at`.
5. `confirmation_outboxed` - the order's `confirmation` outbox record, in whatever state;
   evidence its `record_id`; at: its `created_at`.

Then one step per lifecycle event applied to the order, in the order they were applied:
`order.accepted` -> `order_confirmed` (with `prep_minutes`), `order.ready`,
`order.out_for_delivery`, `order.completed`, `order.cancelled`, `order.rejected`, and the
courier's statuses before pick-up (`order.courier_status`, seed 004): `courier_assigned`,
`courier_arriving`, `courier_arrived`; evidence the event id. Sequence numbers count the
steps present. A delivery with a `service` (who brings it, seed 004) says so on the first
step.

Nothing from the customer ever goes in: the only payload fields read are `prep_minutes`,
`reason_code` and a courier `status` (one of three words). As a guard, the finished
document is scanned and any field holding an e-mail address, something shaped like a phone
number, or a contact value found in the order's events is removed (a step that loses its
evidence that way fails `evidence_linked`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import sqlite3
from collections.abc import Iterable, Set
from typing import Any

from edge.clock import clock_synced, parse_rfc3339, rfc3339
from edge.store import events, jobs, orders, outbox
from edge.store.orders import OrderRow

LABELS = {
    "order_accepted": "Order accepted",
    "routed_to_core": "Sent to restaurant",
    "kitchen_ticket_created": "Kitchen received",
    "printer_job_created": "Ticket printed or queued",
    "confirmation_outboxed": "Confirmation recorded",
    "order_confirmed": "Order confirmed",
    "order_ready": "Order ready",
    "out_for_delivery": "Out for delivery",
    "order_completed": "Order completed",
    "order_cancelled": "Order cancelled",
    "order_rejected": "Order rejected",
    "courier_assigned": "Courier assigned",
    "courier_arriving": "Courier on the way",
    "courier_arrived": "Courier at the restaurant",
}

LIFECYCLE = {
    "order.accepted": "order_confirmed",
    "order.ready": "order_ready",
    "order.out_for_delivery": "out_for_delivery",
    "order.completed": "order_completed",
    "order.cancelled": "order_cancelled",
    "order.rejected": "order_rejected",
}

COURIER = "order.courier_status"
# order.courier_status's `status` -> its step.
COURIER_STEPS = {
    "dasher_confirmed": "courier_assigned",
    "arriving_at_store": "courier_arriving",
    "arrived_at_store": "courier_arrived",
}

_HANDED_TO_PRINTER = ("queued", "sending", "unconfirmed", "printed", "failed")

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# A run of digits with phone punctuation: "+994 50 123 45 67", "(050) 123-45-67".
_DIGIT_RUN = re.compile(r"[+(]?\d[\d\s().-]*\d\)?")
_NANP = re.compile(r"(?<!\d)\d{3}[-.]\d{3}[-.]\d{4}(?!\d)")
_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?Z$")
_CONTACT_KEYS = ("phone", "mail", "tel", "msisdn", "whatsapp", "telegram", "contact")


def build_timeline(conn: sqlite3.Connection, order_id: str) -> dict[str, Any] | None:
    """The timeline of `order_id`, or None if no such order. Only reads."""
    order = orders.get(conn, order_id)
    if order is None:
        return None
    return timeline_of(conn, order)


def timeline_of(conn: sqlite3.Connection, order: OrderRow) -> dict[str, Any]:
    """The timeline of an order whose row the caller has just read. Only reads."""
    order_id = order.order_id
    intake_id = order.intake_event_id
    intake, lifecycle = events.for_timeline(conn, order_id, intake_id, [*LIFECYCLE, COURIER])
    created_at = order.created_at
    steps: list[dict[str, Any]] = []

    def add(key: str, at: str | None, evidence: str | None, **extra: Any) -> None:
        step = {
            "sequence": len(steps) + 1, "key": key, "label": LABELS[key],
            "customer_visible": True, "at": _at(at), "evidence": evidence, **extra,
        }
        steps.append(step)

    service = {"service": order.service} if order.service else {}
    add("order_accepted", intake.occurred_at if intake else created_at, intake_id, **service)

    kitchen_jobs = jobs.for_timeline(conn, order_id)
    ingest = f"ingest_{intake_id}"
    if kitchen_jobs or orders.has_lines(conn, order_id):
        add("routed_to_core", intake.received_at if intake else created_at, ingest)
    if kitchen_jobs:
        add("kitchen_ticket_created", kitchen_jobs[0].created_at, ingest)
    handed = next((j for j in kitchen_jobs if j.state in _HANDED_TO_PRINTER), None)
    if handed is not None:
        add("printer_job_created", handed.printed_at or handed.queued_at or handed.created_at,
            handed.job_key)

    confirmation = outbox.first_confirmation(conn, order_id)
    if confirmation is not None:
        add("confirmation_outboxed", confirmation.created_at, confirmation.record_id)

    seen: set[str] = set()
    for applied in lifecycle:
        if applied.type == COURIER:
            found = COURIER_STEPS.get(str(_payload_data(applied.payload).get("status")))
            if found is None:
                continue
            key = found
        else:
            key = LIFECYCLE[applied.type]
        if key in seen:
            continue
        seen.add(key)
        add(key, applied.occurred_at, applied.event_id,
            **_lifecycle_extra(applied.type, applied.payload))

    document: dict[str, Any] = {
        "order_id": order_id,
        "channel": order.channel,
        "read_only": True,
        "external_mutation": False,
        "steps": steps,
    }
    # Only strings a publisher chose (ids, reason codes) can carry personal data; labels and
    # times are ours. Checking those first keeps the full scrub off the hot path.
    outside = list(_outside_strings(document))
    # A known contact can only hide in a string with enough digits for a phone, or an '@'.
    suspicious = any("@" in t or _digits(t) >= 7 for t in outside)
    # Not suspicious: nothing there can match an e-mail, a phone or a contact.
    if suspicious:
        known = _known_contacts(conn, intake_id)
        if any(looks_personal(text, known) for text in outside):
            document = _scrub(document, known)
    kept: list[dict[str, Any]] = document.get("steps", [])
    present = {s.get("key") for s in kept}
    document["last_status"] = kept[-1].get("label") if kept else None
    document["checks"] = {
        "core_routed": "routed_to_core" in present,
        "printer_stage": "printer_job_created" in present,
        "confirmation_stage": "confirmation_outboxed" in present,
        "evidence_linked": bool(kept) and all(s.get("evidence") for s in kept),
        "read_only": True,
        "no_lan_block": True,
    }
    if not clock_synced():
        # The box's own times (routed, ticket, printer, confirmation) may be far off; the
        # publishers' (accepted and the lifecycle steps) are theirs.
        document["clock_synced"] = False
    return document


_ASCII_DIGITS = str.maketrans("", "", "0123456789")


def _digits(text: str) -> int:
    """How many digits `text` holds (str.isdigit's count); without a Python step per
    character for the ASCII strings ids are."""
    if text.isascii():
        return len(text) - len(text.translate(_ASCII_DIGITS))
    return sum(c.isdigit() for c in text)


def _at(text: str | None) -> str | None:
    if not text:
        return None
    return _second(text)


# A timeline is rebuilt at each step of an order, and the orders applied together share
# their stamps: the same few texts are converted again and again.
@functools.lru_cache(maxsize=1024)
def _second(text: str) -> str | None:
    try:
        return rfc3339(parse_rfc3339(text))
    except ValueError:
        return None


def _payload_data(payload: Any) -> dict[str, Any]:
    try:
        doc = json.loads(payload)
    except (TypeError, ValueError):
        return {}
    if not isinstance(doc, dict):
        return {}
    data = doc.get("data", doc)
    return data if isinstance(data, dict) else {}


def _lifecycle_extra(kind: str, payload: Any) -> dict[str, Any]:
    data = _payload_data(payload)
    if kind == "order.accepted":
        prep = data.get("prep_minutes")
        if isinstance(prep, int) and not isinstance(prep, bool):
            return {"prep_minutes": prep}
    if kind == "order.cancelled":
        code = data.get("reason_code")
        if isinstance(code, str) and code:
            return {"reason_code": code[:64]}
    return {}


# -- the privacy guard --------------------------------------------------------------------


def _outside_strings(document: dict[str, Any]) -> Iterable[str]:
    yield str(document.get("order_id", ""))
    yield str(document.get("channel", ""))
    for step in document.get("steps", []):
        for key, value in step.items():
            if key not in ("sequence", "key", "label", "customer_visible", "at") and \
                    isinstance(value, str):
                yield value


# The timeline is rebuilt at every step of an order, and finding the contacts in its intake
# payload each time was a third of it. Keyed by a digest of the payload text itself (not the
# event id: a payload rolled back and sent again corrected is looked at afresh), not by the
# text: holding thousands of payloads was most of the daemon's RSS growth over a service.
_CONTACTS_KEPT = 4096
_contacts: dict[bytes, tuple[frozenset[str], frozenset[str]]] = {}


def _digest(payloads: tuple[str, ...]) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for payload in payloads:
        h.update(payload.encode())
        h.update(b"\0")
    return h.digest()


def _known_contacts(conn: sqlite3.Connection,
                    intake_id: str) -> tuple[frozenset[str], frozenset[str]]:
    """(phone digit strings, lowercased e-mails) in the order's intake event: the one event
    whose schema carries the customer's contact."""
    payloads = tuple(events.payloads(conn, intake_id))
    key = _digest(payloads)
    known = _contacts.get(key)
    if known is None:
        known = _read_contacts(payloads)
        if len(_contacts) >= _CONTACTS_KEPT:
            _contacts.clear()
        _contacts[key] = known
    return known


def _read_contacts(payloads: tuple[str, ...]) -> tuple[frozenset[str], frozenset[str]]:
    phones: set[str] = set()
    emails: set[str] = set()
    for payload in payloads:
        try:
            doc = json.loads(payload)
        except (TypeError, ValueError):
            continue
        for key, value in _strings(doc, ""):
            emails.update(m.group(0).lower() for m in _EMAIL.finditer(value))
            if any(word in key.lower() for word in _CONTACT_KEYS):
                digits = re.sub(r"\D", "", value)
                if len(digits) >= 7:
                    phones.add(digits)
    return frozenset(phones), frozenset(emails)


def _strings(node: Any, key: str) -> Iterable[tuple[str, str]]:
    if isinstance(node, str):
        yield key, node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from _strings(v, f"{key}.{k}")
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v, key)


_NONE_KNOWN: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset())


def looks_personal(text: str,
                   known: tuple[Set[str], Set[str]] = _NONE_KNOWN) -> bool:
    """True if `text` holds an e-mail address, a phone-shaped number or a known contact."""
    if _EMAIL.search(text) or _NANP.search(text):
        return True
    for run in _DIGIT_RUN.finditer(text):
        chunk = run.group(0)
        digits = sum(c.isdigit() for c in chunk)
        if digits >= 7 and (chunk.startswith("+") or any(c in chunk for c in " ()")):
            return True
    phones, emails = known
    lowered = text.lower()
    if any(e in lowered for e in emails):
        return True
    only_digits = re.sub(r"\D", "", text)
    return any(p in only_digits for p in phones)


def _scrub(node: Any, known: tuple[Set[str], Set[str]]) -> Any:
    if isinstance(node, dict):
        clean: dict[str, Any] = {}
        for key, value in node.items():
            if key == "at" and isinstance(value, str) and _TIMESTAMP.match(value):
                clean[key] = value
            elif isinstance(value, str) and looks_personal(value, known):
                continue
            else:
                clean[key] = _scrub(value, known)
        return clean
    if isinstance(node, list):
        return [
            _scrub(v, known) for v in node
            if not (isinstance(v, str) and looks_personal(v, known))
        ]
    return node
