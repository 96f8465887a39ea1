"""A small OpenApp, for the demo, the tests and a curious operator: it scans a table, submits
items from a guest's phone, and watches what the kitchen answers and pushes, over the same
broker topics the real OpenApp bridge uses (CONTRACT section 11).

    kitchen-edge simulate openapp scan 12
    kitchen-edge simulate openapp submit 12 adana=2 ayran=1@6000 --note adana="no onion"
    kitchen-edge simulate openapp watch 12 --seconds 60
    kitchen-edge simulate openapp session 12 adana=1 ayran=2 --seconds 5

Like a real bridge it has its own client id, publishes at QoS 1 and waits for the broker's
PUBACK, and matches answers by `correlation_id`. It keeps every message the kitchen sends,
including a second copy of one (same `message_id`), so a test can count them.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion


class NoAnswer(TimeoutError):
    """The kitchen did not answer in time (is the daemon running?)."""


class OpenAppSim:
    def __init__(self, host: str, port: int, root: str, *, username: str | None = None,
                 password: str | None = None, client_id: str | None = None) -> None:
        self.root = root
        self.received: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._client = paho.Client(CallbackAPIVersion.VERSION2,
                                   client_id=client_id or f"openapp-sim-{os.getpid()}-"
                                                          f"{uuid.uuid4().hex[:6]}",
                                   protocol=paho.MQTTv5)
        if username:
            self._client.username_pw_set(username, password)
        self._subscribed = threading.Event()
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *_a: self._subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect(host, port, keepalive=30)
        self._client.loop_start()
        if not self._subscribed.wait(10):
            self.close()
            raise NoAnswer(f"the broker at {host}:{port} did not let us subscribe")

    def _on_connect(self, client: paho.Client, _u: Any, _f: Any, reason: Any,
                    _p: Any = None) -> None:
        if not reason.is_failure:
            client.subscribe(f"{self.root}/openapp/out", qos=1)

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        try:
            body = json.loads(msg.payload)
        except ValueError:
            body = {"unreadable": msg.payload.decode(errors="replace")}
        with self._cond:
            self.received.append(body)
            self._cond.notify_all()

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    # -- sending -------------------------------------------------------------------------

    def send(self, body: dict[str, Any] | bytes) -> None:
        """Publish one request (or any bytes: a test's broken message) and wait for the
        broker to take it."""
        payload = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False)
        info = self._client.publish(f"{self.root}/openapp/in", payload, qos=1)
        info.wait_for_publish(10)
        if not info.is_published():
            raise NoAnswer("the broker did not acknowledge the request")

    @staticmethod
    def envelope(message_type: str, table_id: str, **more: Any) -> dict[str, Any]:
        return {"message_type": message_type, "message_id": f"oa-{uuid.uuid4().hex}",
                "table_id": table_id,
                "sent_at": datetime.now(UTC).isoformat(timespec="milliseconds"), **more}

    def scan(self, table_id: str, *, timeout: float = 10.0) -> dict[str, Any]:
        """TableOrderSnapshotRequested; its result."""
        request = self.envelope("TableOrderSnapshotRequested", table_id)
        self.send(request)
        return self.answer(request["message_id"], timeout=timeout)

    def submit(self, table_id: str, items: list[dict[str, Any]], *,
               submission_id: str | None = None, order_id: str | None = None,
               timeout: float = 10.0) -> dict[str, Any]:
        """OrderSubmissionRequested; its result."""
        request = self.submission(table_id, items, submission_id=submission_id,
                                  order_id=order_id)
        self.send(request)
        return self.answer(request["message_id"], timeout=timeout)

    def submission(self, table_id: str, items: list[dict[str, Any]], *,
                   submission_id: str | None = None,
                   order_id: str | None = None) -> dict[str, Any]:
        more: dict[str, Any] = {"submission_id": submission_id or f"sub-{uuid.uuid4().hex[:12]}",
                                "items": items}
        if order_id is not None:
            more["order_id"] = order_id
        return self.envelope("OrderSubmissionRequested", table_id, **more)

    # -- receiving -----------------------------------------------------------------------

    def wait_for(self, check: Callable[[dict[str, Any]], bool], *,
                 timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for body in self.received:
                    if check(body):
                        return body
                left = deadline - time.monotonic()
                if left <= 0:
                    raise NoAnswer(f"no matching message in {timeout:g}s")
                self._cond.wait(left)

    def answer(self, message_id: str, *, timeout: float = 10.0) -> dict[str, Any]:
        return self.wait_for(lambda b: b.get("correlation_id") == message_id, timeout=timeout)

    def answers(self, message_id: str) -> list[dict[str, Any]]:
        with self._cond:
            return [b for b in self.received if b.get("correlation_id") == message_id]

    def changes(self, table_id: str) -> list[dict[str, Any]]:
        with self._cond:
            return [b for b in self.received
                    if b.get("message_type") == "TableOrderSnapshotChanged"
                    and b.get("table_id") == table_id]

    def wait_change(self, table_id: str, change_type: str, *,
                    timeout: float = 10.0) -> dict[str, Any]:
        return self.wait_for(lambda b: b.get("message_type") == "TableOrderSnapshotChanged"
                             and b.get("table_id") == table_id
                             and b.get("change_type") == change_type, timeout=timeout)


def parse_items(words: list[str], prices: dict[str, int],
                notes: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """`adana=2` (the menu's price) or `ayran=1@6000` (a price of one's own, to see
    PRICE_CHANGED) into submission items."""
    items: list[dict[str, Any]] = []
    for word in words:
        product, _, rest = word.partition("=")
        qty_text, _, price_text = (rest or "1").partition("@")
        if not product or not qty_text.isdigit() or (price_text and not price_text.isdigit()):
            raise ValueError(f"'{word}': expected PRODUCT=QTY or PRODUCT=QTY@PRICE")
        if not price_text and product not in prices:
            raise ValueError(f"'{word}': '{product}' has no price in the menu; give one "
                             f"as {product}={qty_text}@PRICE")
        item: dict[str, Any] = {"product_id": product, "qty": int(qty_text),
                                "unit_price": int(price_text) if price_text
                                else prices[product]}
        if notes and product in notes:
            item["note"] = notes[product]
        items.append(item)
    return items


__all__ = ["NoAnswer", "OpenAppSim", "parse_items"]
