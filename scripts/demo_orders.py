"""Sample orders for the demo, published like the POS, QR-menu and website bridges would.

Usage: demo_orders.py --port 1883 --site demo-kitchen --run RUNID [--waiter-closes-table-12]

With --waiter-closes-table-12, only the waiter's last moves at table 12 (after the guests
ordered from their phones): the soup is served, a discount, and the bill is paid.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion


def ev(order_id: str, kind: str, data: dict[str, Any], channel: str, n: str = "") -> dict[str, Any]:
    return {"event_id": f"evt-{order_id}-{kind.split('.')[-1]}{n}", "type": kind,
            "order_id": order_id, "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                               time.gmtime()),
            "source": {"channel": channel, "device": f"{channel}-1"}, "data": data}


def sample(run: str) -> list[dict[str, Any]]:
    qr, web, pos = f"qr-7001-{run}", f"web-8102-{run}", f"pos-t12-{run}"
    return [
        ev(qr, "order.created", {
            "display_id": "Q-7001", "fulfillment": {"type": "dine_in", "table": "7"},
            "customer": {"name": "Ayşe", "phone": "+90 555 000 0000"},
            "items": [
                {"line_id": "1", "name": "Adana kebap", "qty": 2, "category": "grill",
                 "modifiers": ["acılı", "lavaş"], "note": "soğansız", "allergens": ["gluten"]},
                {"line_id": "2", "name": "Ayran", "qty": 2, "category": "drinks"},
                {"line_id": "3", "name": "Şəkərbura (Azərbaycan)", "qty": 1,
                 "category": "desserts"},
            ]}, "qr_menu"),
        ev(web, "order.created", {
            "display_id": "W-8102", "fulfillment": {"type": "delivery",
                                                    "courier": "restaurant"},
            "items": [
                {"line_id": "1", "name": "İskender", "qty": 1, "category": "mains"},
                {"line_id": "2", "name": "Künefe", "qty": 1, "category": "desserts"},
            ]}, "website"),
        ev(web, "order.accepted", {"prep_minutes": 25}, "website"),
        ev(pos, "order.created", {
            "display_id": "T12", "fulfillment": {"type": "dine_in", "table": "12"},
            "items": [{"line_id": "a", "name": "Mercimek çorbası", "qty": 3,
                       "product_id": "mercimek"}]}, "pos"),
        ev(pos, "order.items_added", {"batch_id": "round-2", "items": [
            {"line_id": "b", "name": "Kuzu şiş", "qty": 2, "category": "grill"},
            {"line_id": "c", "name": "Çay", "qty": 3, "product_id": "cay"}]}, "pos"),
        ev(pos, "order.items_voided", {"line_ids": ["b"], "reason": "guest changed mind"},
           "pos"),
        ev(pos, "order.held", {}, "pos"),
        ev(pos, "order.resumed", {}, "pos"),
        # A platform repeating an order under a new event id: printed once.
        {**ev(qr, "order.created", {"fulfillment": {"type": "dine_in", "table": "7"},
                                    "items": [{"line_id": "1", "name": "Adana kebap",
                                               "qty": 2, "category": "grill"}]}, "qr_menu"),
         "event_id": f"evt-{qr}-platform-repeat"},
    ]


def waiter_closes(run: str) -> list[dict[str, Any]]:
    pos = f"pos-t12-{run}"
    return [
        ev(pos, "order.items_delivered", {"line_ids": ["a"]}, "pos"),
        ev(pos, "order.discount_applied", {"discount_id": "regulars", "amount": 5000,
                                           "reason": "regulars"}, "pos"),
        ev(pos, "order.payment_added", {"payment_id": "bill", "amount_cents": 109000,
                                        "method": "card"}, "pos"),
    ]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--site", required=True)
    parser.add_argument("--run", required=True)
    parser.add_argument("--waiter-closes-table-12", action="store_true")
    args = parser.parse_args()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"demo-pos-{args.run}",
                         protocol=paho.MQTTv5)
    client.connect("127.0.0.1", args.port)
    client.loop_start()
    root = f"kitchen/{args.site}"
    for body in waiter_closes(args.run) if args.waiter_closes_table_12 else sample(args.run):
        topic = f"{root}/orders/{body['order_id']}/events"
        client.publish(topic, json.dumps(body, ensure_ascii=False), qos=1).wait_for_publish(10)
        print(f"published {body['type']:22} {body['order_id']}")
        time.sleep(0.3)
    if args.waiter_closes_table_12:
        client.loop_stop()
        client.disconnect()
        return 0
    bad = client.publish(f"{root}/orders/broken-1/events", b"{not json", qos=1)
    bad.wait_for_publish(10)
    print("published a broken message (goes to the dead-letter topic)")
    client.loop_stop()
    client.disconnect()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
