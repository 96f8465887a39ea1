"""Seed 004 through the daemon: a delivery platform (the fake platform, its own process)
POSTs orders to the running kitchen-edge's aggregator API and receives its webhooks; real
broker, real virtual printers, real SQLite, real sockets.

The whole story (submitted, confirmed, ready, the courier's five statuses, completed),
duplicates, bad bodies, the courier going backwards, the platform's webhook endpoint down
and refusing, SIGKILL after the 202 and before the ticket, a paused store, cancellations
both ways, TLS, and no phone or e-mail in any public view.
"""

from __future__ import annotations

import json
import re
import ssl
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge.clock import parse_rfc3339
from tests.broker import Broker, free_port
from tests.daemon import ROOT, DaemonProc, Listener, event, write_config
from tests.fake_platform import API_TOKEN, Api, FakePlatformProcess, wait
from tests.fake_upstream import FakeUpstreamProcess
from tests.printing_env import Kitchen, has_line, job_key_of, kitchen
from tests.test_operator_cli import edge, edge_json, edge_many
from tests.vprinter import VPrinterProc

GRILL = [{"id": "grill", "printer": "hot", "categories": []}]
FLOW = ["dasher_confirmed", "arriving_at_store", "arrived_at_store",
        "dasher_out_for_delivery", "dropoff"]


@dataclass
class Rig:
    k: Kitchen
    platform: FakePlatformProcess
    api: Api
    port: int
    http_port: int | None = None
    upstream: FakeUpstreamProcess | None = None

    @property
    def daemon(self) -> DaemonProc:
        return self.k.daemon

    def order_row(self, order_id: str) -> tuple[Any, ...]:
        return self.daemon.query("SELECT status, kitchen_stage, courier_status FROM orders "
                                 "WHERE order_id = ?", (order_id,))[0]

    def timeline(self, order_id: str) -> dict[str, Any]:
        assert self.http_port is not None
        result: dict[str, Any] = httpx.get(
            f"http://127.0.0.1:{self.http_port}/orders/{order_id}/timeline", timeout=10).json()
        return result

    def keys(self, order_id: str) -> list[str]:
        return [s["key"] for s in self.timeline(order_id)["steps"]]


def aggregator_config(tmp_path: Path, platform: FakePlatformProcess, port: int,
                      **options: Any) -> dict[str, Any]:
    token = tmp_path / "aggregator.token"
    token.write_text(API_TOKEN + "\n")
    token.chmod(0o600)
    return {"listen": f"127.0.0.1:{port}", "token_file": str(token),
            "webhook_url": platform.url, "webhook_token_file": str(platform.token_file),
            # Retries a second apart at most: the platform coming back is seen at once.
            "webhook_retry_max": 1.0, **options}


@contextmanager
def platform_kitchen(tmp_path: Path, broker: Broker, *, http: bool = False,
                     upstream: bool = False, printers: tuple[str, ...] = ("hot",),
                     scheme: str = "http", verify: bool | ssl.SSLContext = True,
                     **options: Any) -> Iterator[Rig]:
    platform = FakePlatformProcess(tmp_path / "platform").start()
    up = FakeUpstreamProcess(tmp_path / "upstream").start() if upstream else None
    port = free_port()
    extra: dict[str, Any] = {}
    http_port = free_port() if http else None
    if http_port:
        extra["http"] = {"listen": f"127.0.0.1:{http_port}"}
    if up is not None:
        extra["upstream"] = {"url": up.url, "token_file": str(up.token_file)}
    api: Api | None = None
    try:
        with kitchen(tmp_path, broker, printers=printers, stations=GRILL,
                     aggregator=aggregator_config(tmp_path, platform, port, **options),
                     **extra) as k:
            k.daemon.wait_log("aggregator_listening")
            api = Api(f"{scheme}://127.0.0.1:{port}", verify=verify)
            yield Rig(k, platform, api, port, http_port, up)
    finally:
        if api is not None:
            api.close()
        platform.stop()
        if up is not None:
            up.stop()


def answer(rig: Rig, order_id: str, action: str, **fields: Any) -> None:
    """The operator's answer, published as the CLI does (`{root}/commands/order`); returns
    once applied."""
    command_id = f"t-{action}-{order_id}"
    rig.k.pos.send(f"{ROOT}/commands/order", {"command_id": command_id, "order_id": order_id,
                                              "action": action, **fields})
    rig.daemon.wait_until(lambda: rig.daemon.scalar(
        "SELECT COUNT(*) FROM events WHERE event_id = ? AND applied = 1",
        (f"cmd:{command_id}",)) == 1, what=f"{action} {order_id}")


def store_state(rig: Rig, state: str, **fields: Any) -> None:
    """The store's state, set as `kitchen-edge store ...` does; returns once recorded."""
    command_id = f"t-store-{state}"
    rig.k.pos.send(f"{ROOT}/commands/store", {"command_id": command_id, "state": state,
                                              **fields})
    rig.daemon.wait_until(lambda: rig.daemon.scalar(
        "SELECT COUNT(*) FROM commands WHERE command_id = ?", (command_id,)) == 1,
        what=f"store {state}")


def board(rig: Rig) -> dict[str, Any]:
    result: dict[str, Any] = httpx.get(f"http://127.0.0.1:{rig.http_port}/status",
                                       timeout=10).json()
    return result


def post(api: Api, body: dict[str, Any]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    reply = api.order(body)
    return reply, time.monotonic() - started


# -- the story ------------------------------------------------------------------------------


def test_the_seed_004_story(tmp_path: Path, broker: Broker) -> None:
    """Submitted, waiting, confirmed with a prep time, ready, the courier's five statuses
    (each a timeline step), completed: the platform hears accepted and ready, in order."""
    status_topic = Listener(broker.port, f"{ROOT}/orders/+/status")
    try:
        with platform_kitchen(tmp_path, broker, http=True) as rig:
            reply, took = post(rig.api, rig.api.new_order("p-story"))
            assert (reply.status_code, reply.json()) == (202, {"id": "p-story",
                                                               "status": "submitted"})
            assert took < 1.0, f"answered in {took:.3f} s"
            order_id = "ot-p-story"
            # Durable before the answer: the platform order and its event are on disk.
            assert rig.daemon.scalar("SELECT COUNT(*) FROM platform_orders") == 1
            assert rig.daemon.scalar("SELECT COUNT(*) FROM events WHERE order_id=?",
                                     (order_id,)) == 1

            # It waits for the restaurant: listed, nothing printed, nothing told.
            rig.daemon.wait_until(lambda: rig.daemon.scalar(
                "SELECT COUNT(*) FROM print_jobs WHERE wait_reason='acceptance'") == 1)
            waiting = board(rig)["aggregator"]["waiting_for_acceptance"]
            assert [(w["order_id"], w["display_id"]) for w in waiting] == [
                (order_id, rig.daemon.scalar("SELECT display_id FROM orders"))]
            time.sleep(0.3)
            assert rig.k.tickets("hot") == [] and rig.platform.hooks("p-story") == []

            accepted_at = datetime.now(UTC)
            assert f"{order_id} accepted" in edge(
                rig.daemon, "orders", "accept", order_id, "--prep", "15").stdout
            ticket = rig.k.wait_tickets("hot", 1)[0]
            assert job_key_of(ticket) == f"{order_id}/new/grill"
            assert has_line(ticket, "PLATFORM DELIVERY")
            assert has_line(ticket, "2x Classic Burger") and has_line(ticket, "+ Cheddar")
            [hook] = rig.platform.wait_hooks("p-story", ["accepted"])
            assert hook["body"]["merchant_supplied_id"] == order_id
            prep_time = parse_rfc3339(hook["body"]["prep_time"])
            assert abs(prep_time - (accepted_at + timedelta(minutes=15))) < timedelta(minutes=1)

            rig.k.pos.order(event(order_id, "order.ready", {}, channel="onetablet"))
            rig.platform.wait_hooks("p-story", ["accepted", "ready"])

            for status in FLOW:
                reply = rig.api.dasher("p-story", status)
                assert (reply.status_code, reply.json()["status"]) == (200, "applied"), status
            rig.daemon.wait_until(lambda: rig.order_row(order_id) == (
                "completed", "completed", "arrived_at_store"), what="completed")

            steps = rig.timeline(order_id)["steps"]
            assert [s["key"] for s in steps] == [
                "order_accepted", "routed_to_core", "kitchen_ticket_created",
                "printer_job_created", "confirmation_outboxed", "order_confirmed",
                "order_ready", "courier_assigned", "courier_arriving", "courier_arrived",
                "out_for_delivery", "order_completed"]
            assert steps[0]["service"] == "platform_delivery"
            assert steps[5]["prep_minutes"] == 15
            assert [s["label"] for s in steps[7:10]] == [
                "Courier assigned", "Courier on the way", "Courier at the restaurant"]
            assert all(s["evidence"] for s in steps)
            published = status_topic.wait_for(
                lambda topic, body: topic.endswith(f"/{order_id}/status")
                and body["last_status"] == "Order completed")
            assert [s["key"] for s in published["steps"]] == [s["key"] for s in steps]

            # Log every status change: the order's own activity log says each one.
            whats = [a["what"] for a in httpx.get(
                f"http://127.0.0.1:{rig.http_port}/orders/{order_id}/activities",
                timeout=10).json()["activities"]]
            for what in ("Order created", "Order accepted", "Order ready",
                         "Courier dasher_confirmed", "Courier arriving_at_store",
                         "Courier arrived_at_store", "Order out for delivery",
                         "Order completed"):
                assert what in whats, (what, whats)

            # Nothing more went to the platform; its lifecycle checker saw nothing wrong.
            time.sleep(0.3)
            assert rig.platform.kinds("p-story") == ["accepted", "ready"]
            assert rig.platform.state()["violations"] == []
            status, text = edge_many(rig.daemon, ("aggregator", "--json"), ("aggregator",))
            assert status["listening"] is True and status["webhooks"] == {"done": 2}
            assert status["orders"] == {"waiting": 1, "repeats": 0}
            assert status["recent"][0]["dasher_status"] == "dropoff"
            assert f"127.0.0.1:{rig.port} (http), listening" in text
            assert "RECENT PLATFORM ORDERS" in text and "dropoff" in text
            shown = board(rig)
            assert shown["aggregator"]["answers"]["202"] == 1
            assert shown["aggregator"]["order_answer_ms"]["slowest"] < 1000
            assert shown["calls-aggregator"]["calls"] == {"done": 2}
    finally:
        status_topic.close()


# -- duplicates -----------------------------------------------------------------------------


def test_the_same_order_again_is_taken_once(tmp_path: Path, broker: Broker) -> None:
    with platform_kitchen(tmp_path, broker, auto_accept=True) as rig:
        body = rig.api.new_order("p-dup", fulfillment="pickup")
        assert rig.api.order(body).status_code == 202
        again = rig.api.order(body)
        assert (again.status_code, again.json()) == (
            200, {"id": "p-dup", "status": "submitted", "duplicate": True})
        # Changed details under the same id: still the same order (the seed: by order id).
        changed = {**body, "delivery_short_code": "OTHER1"}
        assert rig.api.order(changed).status_code == 200

        # Five at once: one is taken, the others are repeats.
        racing = [rig.api.new_order("p-race") for _ in range(5)]
        with ThreadPoolExecutor(5) as pool:
            codes = sorted(r.status_code for r in pool.map(rig.api.order, racing))
        assert codes == [200, 200, 200, 200, 202]

        tickets = rig.k.wait_tickets("hot", 2)
        assert sorted(job_key_of(t) or "" for t in tickets) == [
            "ot-p-dup/new/grill", "ot-p-race/new/grill"]
        assert has_line(tickets[0], "PICKUP")
        assert rig.platform.wait_hooks("p-dup", ["accepted"])
        assert rig.platform.wait_hooks("p-race", ["accepted"])

        # The repeats survive a restart: the platform order's record is durable.
        rig.daemon.stop()
        rig.daemon.start()
        rig.daemon.wait_log("aggregator_listening")
        assert rig.api.order(body).status_code == 200
        assert rig.daemon.query("SELECT platform_id, repeats FROM platform_orders "
                                "ORDER BY platform_id") == [("p-dup", 3), ("p-race", 4)]
        assert rig.daemon.scalar("SELECT COUNT(*) FROM orders") == 2
        assert rig.daemon.scalar("SELECT COUNT(*) FROM events") == 4    # created + accepted
        assert rig.daemon.scalar("SELECT COUNT(*) FROM dead_letters") == 0
        time.sleep(0.5)
        assert len(rig.k.tickets("hot")) == 2
        assert rig.platform.kinds("p-dup") == ["accepted"]


# -- bad bodies -----------------------------------------------------------------------------

_WRONG_TYPES: list[tuple[str, Any, str]] = [
    ("id", 1.5, "id: must be a string or an integer"),
    ("id", "has space", "id: must be 1 to 64 characters"),
    ("store_order_cart_id", [], "store_order_cart_id: must be a string or an integer"),
    ("delivery_short_code", 7, "delivery_short_code: must be a string"),
    ("store", "store-123", "store: must be a JSON object"),
    ("store.merchant_supplied_id", None, "store.merchant_supplied_id: must be a string"),
    ("store.provider_type", {}, "store.provider_type: must be a string"),
    ("store.timezone", "Mars/Olympus", "store.timezone: 'Mars/Olympus' is not an IANA"),
    ("store.store_business", [], "store.store_business: must be a JSON object"),
    ("store.store_business.auto_release_enabled", "yes",
     "store.store_business.auto_release_enabled: must be true or false"),
    ("consumer", "John", "consumer: must be a JSON object"),
    ("consumer.id", True, "consumer.id: must be a string or an integer"),
    ("consumer.first_name", 5, "consumer.first_name: must be a string"),
    ("consumer.last_name", 5, "consumer.last_name: must be a string"),
    ("consumer.email", ["a@b.c"], "consumer.email: must be a string"),
    ("consumer.phone", 15551234567, "consumer.phone: must be a string"),
    ("subtotal", "2500", "subtotal: must be an integer"),
    ("tax", 2.25, "tax: must be an integer"),
    ("is_pickup", 0, "is_pickup: must be true or false"),
    ("estimated_pickup_time", 1700000000, "estimated_pickup_time: must be an RFC 3339"),
    ("categories", {}, "categories: must be a JSON array"),
    ("categories[0]", "Burgers", "categories[0]: must be a JSON object"),
    ("categories[0].items", "burger", "categories[0].items: must be a JSON array"),
    ("categories[0].items[1]", 3, "categories[0].items[1]: must be a JSON object"),
    ("categories[0].items[1].id", None, "categories[0].items[1].id: must be a string"),
    ("categories[0].items[1].name", 3, "categories[0].items[1].name: must be a string"),
    ("categories[0].items[1].quantity", "2", "categories[0].items[1].quantity: must be an "
                                              "integer"),
    ("categories[0].items[1].quantity", 0, "categories[0].items[1].quantity: Input should be"),
    ("categories[0].items[1].price", True, "categories[0].items[1].price: must be an integer"),
    ("categories[0].items[0].extras", "cheese", "categories[0].items[0].extras: must be a "
                                                "JSON array"),
    ("categories[0].items[0].extras[0].name", 1, "categories[0].items[0].extras[0].name: "
                                                 "must be a string"),
    ("categories[0].items[0].special_instructions", {}, "categories[0].items[0]."
                                                        "special_instructions: must be a string"),
    ("fulfillment_type", "drone", "fulfillment_type: Input should be 'pickup'"),
]


def _set(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    doc = json.loads(json.dumps(body))
    parts = re.findall(r"[^.\[\]]+|\[\d+\]", path)
    node: Any = doc
    for part in parts[:-1]:
        node = node[int(part[1:-1])] if part.startswith("[") else node[part]
    last = parts[-1]
    if last.startswith("["):
        node[int(last[1:-1])] = value
    else:
        node[last] = value
    return doc


def test_bad_bodies_are_refused_naming_the_field(tmp_path: Path, broker: Broker) -> None:
    with platform_kitchen(tmp_path, broker, auto_accept=True) as rig:
        api = rig.api
        good = api.new_order("p-good")
        for path, value, message in _WRONG_TYPES:
            reply = api.order(_set(good, path, value))
            assert reply.status_code == 400, (path, reply.text)
            assert reply.json()["error"].startswith(message), (path, reply.json())
        missing = {k: v for k, v in good.items() if k != "consumer"}
        assert api.order(missing).json() == {"error": "consumer: required field is missing"}
        for raw, message in [(b"{broken", "body is not valid JSON"),
                             (b"[1, 2]", "body must be a JSON object"),
                             (b"\xff\xfe", "body is not UTF-8"),
                             (b"", "body is not valid JSON")]:
            reply = api.call("POST", "/orders", content=raw)
            assert (reply.status_code, reply.json()["error"][:len(message)]) == (400, message)

        # Over 256 KiB: 413, by the declared length and by the bytes themselves.
        big = _set(good, "categories[0].items[0].special_instructions", "x" * 300_000)
        assert api.order(big).status_code == 413
        chunked = api.client.post(api.base_url + "/orders",
                                  content=iter([b"{" + b" " * 200_000, b" " * 100_000 + b"}"]),
                                  headers={"Authorization": f"Bearer {API_TOKEN}"})
        assert chunked.status_code == 413 and "256 KiB" in chunked.json()["error"]

        # The token, before anything else: none, wrong, another scheme, wrong with a bad body.
        for token, headers in [("", {}), ("nope", {}), ("", {"Authorization": API_TOKEN}),
                               ("", {"Authorization": f"Basic {API_TOKEN}"})]:
            reply = api.call("POST", "/orders", good, token=token, headers=headers)
            assert (reply.status_code, reply.headers["WWW-Authenticate"]) == (
                401, 'Bearer realm="kitchen-edge"')
        assert api.call("POST", "/orders", content=b"x" * 300_000,
                        token="nope").status_code == 401
        assert api.call("POST", "/orders/p-good/cancel", token="nope").status_code == 401

        # Paths and methods it does not have; orders it does not know.
        assert api.call("GET", "/orders").status_code == 405
        assert api.call("POST", "/menu", {}).status_code == 404
        assert "no such path" in api.call("POST", "/menu", {}).json()["error"]
        assert api.dasher("nobody", "dasher_confirmed").status_code == 404
        assert api.cancel("nobody").status_code == 404
        assert api.call("POST", "/orders/bad%20id/cancel", {}).json()["error"].startswith(
            "id: must be")
        for body, message in [
            ({"client_order_id": "ot-x", "dasher_status": "flying"}, "dasher_status: Input"),
            ({"client_order_id": 5, "dasher_status": "dropoff"}, "client_order_id: must be"),
            ({"dasher_status": "dropoff"}, "client_order_id: required field is missing"),
            ({"client_order_id": "ot-x", "dasher_status": "dropoff", "dasher": "Mike"},
             "dasher: must be a JSON object"),
        ]:
            reply = api.call("POST", "/orders/p-good/delivery-status", body)
            assert (reply.status_code, reply.json()["error"][:len(message)]) == (400, message)

        # Nothing of all that was stored; the daemon is alive and takes a good order.
        assert rig.daemon.scalar("SELECT COUNT(*) FROM events") == 0
        assert rig.daemon.scalar("SELECT COUNT(*) FROM dead_letters") == 0
        assert rig.daemon.proc is not None and rig.daemon.proc.poll() is None
        assert api.order(good).status_code == 202
        # Now known: a mismatched client_order_id or store is named too.
        wrong = api.dasher("p-good", "dasher_confirmed", client_order_id="ot-other")
        assert (wrong.status_code, wrong.json()["error"]) == (
            400, "client_order_id: 'ot-other' is not this order's ('ot-p-good')")
        wrong = api.cancel("p-good", store={"merchant_supplied_id": "store-9"})
        assert wrong.json()["error"].startswith("store.merchant_supplied_id: 'store-9'")
        refused = [line for line in rig.daemon.lines if line.get("event") == "aggregator_refused"]
        assert len(refused) >= len(_WRONG_TYPES) + 10


# -- the courier ----------------------------------------------------------------------------


def test_the_courier_only_goes_forward(tmp_path: Path, broker: Broker) -> None:
    with platform_kitchen(tmp_path, broker, http=True, auto_accept=True) as rig:
        api = rig.api
        for platform_id, fulfillment in (("p-fwd", "mx_fleet_delivery"),
                                         ("p-pick", "pickup")):
            assert api.order(api.new_order(platform_id, fulfillment=fulfillment)
                             ).status_code == 202
        rig.k.wait_tickets("hot", 2)

        def say(status: str) -> tuple[int, str]:
            reply = api.dasher("p-fwd", status)
            return reply.status_code, reply.json().get("status") or reply.json()["error"]

        assert say("arrived_at_store") == (200, "applied")      # skipping ahead is allowed
        code, error = say("dasher_confirmed")
        assert code == 409 and error == ("dasher_status: 'dasher_confirmed' goes back from "
                                         "'arrived_at_store'; the courier only goes forward")
        assert say("arriving_at_store")[0] == 409
        assert say("arrived_at_store") == (200, "repeat")
        assert say("dasher_out_for_delivery") == (200, "applied")
        assert say("arrived_at_store")[0] == 409
        assert say("dropoff") == (200, "applied")
        assert say("dropoff") == (200, "repeat")
        assert say("dasher_out_for_delivery")[0] == 409

        rig.daemon.wait_until(lambda: rig.order_row("ot-p-fwd")[1] == "completed")
        assert rig.keys("ot-p-fwd")[5:] == ["order_confirmed", "courier_arrived",
                                             "out_for_delivery", "order_completed"]
        assert rig.timeline("ot-p-fwd")["steps"][0]["service"] == "fleet_delivery"
        # Refusals changed nothing: one event per status taken.
        assert rig.daemon.scalar("SELECT COUNT(*) FROM events WHERE event_id LIKE "
                                 "'ot-p-fwd:courier:%'") == 3
        assert rig.daemon.scalar("SELECT COUNT(*) FROM dead_letters") == 0

        pickup = api.dasher("p-pick", "dasher_confirmed")
        assert pickup.status_code == 409 and "pickup order" in pickup.json()["error"]


def test_pick_up_waits_for_the_restaurants_yes(tmp_path: Path, broker: Broker) -> None:
    with platform_kitchen(tmp_path, broker) as rig:
        api = rig.api
        assert api.order(api.new_order("p-wait")).status_code == 202
        rig.daemon.wait_until(lambda: rig.daemon.scalar(
            "SELECT COUNT(*) FROM orders WHERE order_id='ot-p-wait'") == 1)
        # A courier may be assigned before the restaurant said yes; not pick the food up.
        assert api.dasher("p-wait", "dasher_confirmed").status_code == 200
        early = api.dasher("p-wait", "dasher_out_for_delivery")
        assert early.status_code == 409 and "waits for the restaurant" in early.json()["error"]
        answer(rig, "ot-p-wait", "accept")
        rig.k.wait_tickets("hot", 1)
        assert api.dasher("p-wait", "dasher_out_for_delivery").status_code == 200
        rig.daemon.wait_until(lambda: rig.order_row("ot-p-wait")[1] == "out_for_delivery")


# -- webhooks: the platform down, refusing ---------------------------------------------------


def test_webhooks_wait_for_a_platform_that_is_down_and_arrive_in_order(
        tmp_path: Path, broker: Broker) -> None:
    with platform_kitchen(tmp_path, broker, auto_accept=True) as rig:
        api, platform = rig.api, rig.platform
        platform.set_fault("down")
        ids = [f"p-{n}" for n in range(4)]
        for platform_id in ids:
            assert api.order(api.new_order(platform_id)).status_code == 202
        rig.k.wait_tickets("hot", 4)
        for platform_id in ids[:3]:
            rig.k.pos.order(event(f"ot-{platform_id}", "order.ready", {},
                                  channel="onetablet"))
        # The restaurant calls p-2 off after its ready (a cancellation webhook follows);
        # the platform cancels p-3 itself (nothing goes back for that).
        rig.k.pos.order(event("ot-p-2", "order.cancelled", {"reason_code": "out_of_stock"},
                              channel="onetablet"))
        assert api.cancel("p-3").status_code == 200
        rig.daemon.wait_until(lambda: rig.daemon.scalar(
            "SELECT COUNT(*) FROM calls WHERE destination='aggregator'") == 8, what="8 calls")
        time.sleep(2.0)                     # down a while: attempts fail, nothing is lost
        assert rig.daemon.scalar("SELECT COUNT(*) FROM calls WHERE state='done'") == 0
        assert rig.daemon.scalar("SELECT MAX(attempts) FROM calls") >= 2
        platform.set_fault("none")
        for platform_id in ids[:2]:
            platform.wait_hooks(platform_id, ["accepted", "ready"])
        [*_, cancellation] = platform.wait_hooks("p-2", ["accepted", "ready", "cancellation"])
        assert cancellation["body"] == {"cancel_reason": "ITEM_OUT_OF_STOCK",
                                        "cancel_details": "Required item is unavailable"}
        platform.wait_hooks("p-3", ["accepted"])
        rig.daemon.wait_until(lambda: rig.daemon.scalar(
            "SELECT COUNT(*) FROM calls WHERE state='done'") == 8)
        assert platform.state()["violations"] == []


def test_a_refused_webhook_is_parked_and_holds_its_order_back(
        tmp_path: Path, broker: Broker) -> None:
    with platform_kitchen(tmp_path, broker, auto_accept=True) as rig:
        api, platform = rig.api, rig.platform
        platform.set_fault("reject", status=422, path_prefix="/hooks/orders/p-bad")
        for platform_id in ("p-bad", "p-ok"):
            assert api.order(api.new_order(platform_id)).status_code == 202
        rig.k.wait_tickets("hot", 2)
        for platform_id in ("p-bad", "p-ok"):
            rig.k.pos.order(event(f"ot-{platform_id}", "order.ready", {},
                                  channel="onetablet"))
        platform.wait_hooks("p-ok", ["accepted", "ready"])
        rig.daemon.wait_until(lambda: rig.daemon.scalar(
            "SELECT COUNT(*) FROM calls WHERE state='parked'") == 1)
        time.sleep(0.5)
        # Parked: not retried by itself; the order's ready waits behind it.
        assert [r["status"] for r in platform.hooks("p-bad", status=None)] == [422]
        status = edge_json(rig.daemon, "aggregator")
        [parked] = status["parked_webhooks"]
        assert (parked["order_id"], parked["status_code"]) == ("ot-p-bad", 422)
        assert status["webhooks"] == {"done": 2, "parked": 1, "pending": 1}

        platform.set_fault("none")
        assert "1 parked webhook(s) due again" in edge(
            rig.daemon, "aggregator", "retry-parked").stdout
        platform.wait_hooks("p-bad", ["accepted", "ready"], timeout=30)


# -- crashes --------------------------------------------------------------------------------


def test_sigkill_after_the_202_and_before_the_ticket(tmp_path: Path, broker: Broker) -> None:
    """The order is there after the restart, once: one ticket, one accepted webhook, and
    the platform's retry is a repeat. Also killed between the commit and the answer: the
    platform gets no answer, sends it again, and that is a repeat."""
    platform = FakePlatformProcess(tmp_path / "platform").start()
    printer_port = free_port()          # no printer there yet: nothing can print
    port = free_port()
    cfg = write_config(
        tmp_path / "station.yaml", broker_port=broker.port,
        printers=[{"id": "hot", "connection": f"tcp://127.0.0.1:{printer_port}"}],
        stations=GRILL, aggregator=aggregator_config(tmp_path, platform, port,
                                                     auto_accept=True))
    daemon = DaemonProc(cfg, env={"KITCHEN_EDGE_CRASHPOINT": "aggregator_after_commit"})
    printer: VPrinterProc | None = None
    api = Api(f"http://127.0.0.1:{port}")
    try:
        daemon.start()
        daemon.wait_log("aggregator_listening")
        with pytest.raises(httpx.TransportError):
            api.order(api.new_order("p-lost"))        # killed before it could answer
        assert daemon.proc is not None and daemon.proc.wait(10) == -9
        daemon.env = {}
        daemon.start()
        daemon.wait_log("aggregator_listening")
        assert api.order(api.new_order("p-lost")).status_code == 200

        assert api.order(api.new_order("p-kill")).status_code == 202
        daemon.kill()                                  # SIGKILL, right after the 202
        assert daemon.scalar("SELECT COUNT(*) FROM platform_orders") == 2
        printer = VPrinterProc(tmp_path / "printer", port=printer_port).start()
        daemon.start()
        daemon.wait_log("aggregator_listening")
        assert api.order(api.new_order("p-kill")).status_code == 200
        tickets = printer.wait_jobs(2)
        time.sleep(1.0)
        assert sorted(job_key_of(t) or "" for t in printer.jobs()) == [
            "ot-p-kill/new/grill", "ot-p-lost/new/grill"]
        assert all(not has_line(t, "MAY BE DUPLICATE") for t in tickets)
        for platform_id in ("p-lost", "p-kill"):
            platform.wait_hooks(platform_id, ["accepted"], resent_ok=True)
        assert daemon.scalar("SELECT COUNT(*) FROM orders") == 2
        assert daemon.scalar("SELECT COUNT(*) FROM calls") == 2
    finally:
        api.close()
        daemon.kill()
        if printer is not None:
            printer.stop()
        platform.stop()


# -- the store, and calling orders off -------------------------------------------------------


def test_a_paused_store_fails_new_orders_and_a_busy_one_takes_longer(
        tmp_path: Path, broker: Broker) -> None:
    with platform_kitchen(tmp_path, broker, auto_accept=True) as rig:
        store_state(rig, "paused")
        assert rig.api.order(rig.api.new_order("p-closed")).status_code == 202
        [fail] = rig.platform.wait_hooks("p-closed", ["rejected"])
        assert fail["body"] == {"merchant_supplied_id": "ot-p-closed", "order_status": "fail",
                                "failure_reason": "Store is currently closed"}
        assert rig.order_row("ot-p-closed")[:2] == ("void", "rejected")

        store_state(rig, "busy", busy_minutes=10)
        asked = datetime.now(UTC)
        assert rig.api.order(rig.api.new_order("p-busy")).status_code == 202
        [ok] = rig.platform.wait_hooks("p-busy", ["accepted"])
        prep_time = parse_rfc3339(ok["body"]["prep_time"])
        assert abs(prep_time - (asked + timedelta(minutes=30))) < timedelta(minutes=1)
        tickets = rig.k.wait_tickets("hot", 1)
        assert [job_key_of(t) for t in tickets] == ["ot-p-busy/new/grill"]
        assert rig.daemon.query("SELECT platform_id, answer FROM platform_orders ORDER BY 1"
                                ) == [("p-busy", "accepted"), ("p-closed", "store_closed")]


def test_calling_orders_off_both_ways(tmp_path: Path, broker: Broker) -> None:
    with platform_kitchen(tmp_path, broker) as rig:
        api, platform = rig.api, rig.platform
        for n in range(4):
            assert api.order(api.new_order(f"p-{n}")).status_code == 202
        rig.daemon.wait_until(lambda: rig.daemon.scalar("SELECT COUNT(*) FROM orders") == 4)

        # The restaurant says no: fail, with the seed's words for its reason.
        answer(rig, "ot-p-0", "reject", reason_code="out_of_stock")
        [fail] = platform.wait_hooks("p-0", ["rejected"])
        assert fail["body"]["failure_reason"] == "Required item is unavailable"
        # Cancelled before anyone accepted it: the platform had nothing confirmed, so fail.
        rig.k.pos.order(event("ot-p-1", "order.cancelled",
                              {"reason_code": "busy", "reason": "Too many orders"},
                              channel="onetablet"))
        [fail] = platform.wait_hooks("p-1", ["rejected"])
        assert fail["body"]["failure_reason"] == "Too many orders"

        # Accepted and printed, then the restaurant cancels: the cancellation webhook.
        answer(rig, "ot-p-2", "accept")
        answer(rig, "ot-p-3", "accept")
        rig.k.wait_tickets("hot", 2)
        rig.k.pos.order(event("ot-p-2", "order.cancelled", {"reason_code": "busy"},
                              channel="onetablet"))
        [_, cancellation] = platform.wait_hooks("p-2", ["accepted", "cancellation"])
        assert cancellation["body"] == {"cancel_reason": "KITCHEN_BUSY",
                                        "cancel_details": "Kitchen capacity exceeded"}
        # The platform cancels a printed order: CANCELLED at the grill, nothing goes back.
        assert api.cancel("p-3", reason="Customer changed their mind").json() == {
            "id": "p-3", "status": "cancelled"}
        assert api.cancel("p-3").json()["duplicate"] is True
        tickets = rig.k.wait_tickets("hot", 4)
        kinds = {job_key_of(t): t["text"][0].strip() for t in tickets}
        assert kinds["ot-p-3/cancel/grill"] == "CANCELLED"
        assert kinds["ot-p-2/cancel/grill"] == "CANCELLED"
        rig.daemon.wait_until(lambda: rig.order_row("ot-p-3")[:2] == ("cancelled",
                                                                      "cancelled"))
        time.sleep(0.5)
        assert platform.kinds("p-3") == ["accepted"]
        late = api.dasher("p-3", "dasher_confirmed")
        assert late.status_code == 409 and "called off" in late.json()["error"]
        assert platform.state()["violations"] == []


# -- TLS ------------------------------------------------------------------------------------


def test_the_api_over_tls(tmp_path: Path, broker: Broker) -> None:
    cert, key = tmp_path / "api.crt", tmp_path / "api.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    key.chmod(0o600)
    trusted = ssl.create_default_context(cafile=str(cert))
    with platform_kitchen(tmp_path, broker, scheme="https", verify=trusted, auto_accept=True,
                          tls_cert_file=str(cert), tls_key_file=str(key)) as rig:
        assert rig.daemon.wait_log("aggregator_listening")["scheme"] == "https"
        reply = rig.api.order(rig.api.new_order("p-tls"))
        assert reply.status_code == 202
        rig.platform.wait_hooks("p-tls", ["accepted"])
        # Plain HTTP to the TLS port gets no answer; an unverified client refuses the cert.
        with pytest.raises(httpx.HTTPError):
            httpx.post(f"http://127.0.0.1:{rig.port}/orders", json={}, timeout=5)
        with pytest.raises(httpx.ConnectError):
            httpx.post(f"https://127.0.0.1:{rig.port}/orders", json={}, timeout=5)


# -- privacy --------------------------------------------------------------------------------

CONSUMER_EMAIL = "jane.quarrington@example.com"
CONSUMER_PHONE = "+15557654321"
DASHER = {"first_name": "Zebulon", "last_name": "Quixby", "phone_number": "+15559876543"}


def _contact_free(text: str, where: str) -> None:
    digits = re.sub(r"\D", "", text)
    for phone in (CONSUMER_PHONE, DASHER["phone_number"], "+1 555 010 9999"):
        assert re.sub(r"\D", "", phone) not in digits, (where, phone)
    for mail in (CONSUMER_EMAIL, "call.me@example.org"):
        assert mail not in text, (where, mail)
    for name in ("Quarrington", "Zebulon", "Quixby"):
        assert name not in text, (where, name)


def test_no_phone_or_email_in_any_public_view(tmp_path: Path, broker: Broker) -> None:
    status_topic = Listener(broker.port, f"{ROOT}/orders/+/status")
    try:
        with platform_kitchen(tmp_path, broker, http=True, upstream=True,
                              auto_accept=True) as rig:
            api = rig.api
            for platform_id, fulfillment in (("p-pickup", "pickup"),
                                             ("p-dx", "dx_delivery"),
                                             ("p-fleet", "mx_fleet_delivery")):
                body = api.new_order(platform_id, fulfillment=fulfillment)
                body["consumer"].update(first_name="Jane", last_name="Quarrington",
                                        email=CONSUMER_EMAIL, phone=CONSUMER_PHONE)
                item = body["categories"][0]["items"][0]
                item["special_instructions"] = "Ring +1 555 010 9999 or call.me@example.org"
                item["extras"] = [*item["extras"], {"name": f"note {CONSUMER_PHONE}"}]
                body["delivery_short_code"] = "XY" + platform_id[-2:].upper()
                assert api.order(body).status_code == 202
            tickets = rig.k.wait_tickets("hot", 3)
            services = {job_key_of(t): t["text"][3] for t in tickets}
            assert services == {"ot-p-pickup/new/grill": "PICKUP",
                                "ot-p-dx/new/grill": "PLATFORM DELIVERY",
                                "ot-p-fleet/new/grill": "FLEET DELIVERY"}
            for platform_id in ("p-dx", "p-fleet"):
                for status in FLOW:
                    assert api.dasher(platform_id, status, dasher=DASHER).status_code == 200
            rig.daemon.wait_until(lambda: rig.daemon.scalar(
                "SELECT COUNT(*) FROM orders WHERE kitchen_stage='completed'") == 2)
            assert rig.upstream is not None
            wait(lambda: any(r["kind"] == "status" and r["body"]["last_status"] ==
                             "Order completed" for r in rig.upstream.records()),
                 what="completed timelines upstream")
            time.sleep(1.0)

            views: dict[str, str] = {}
            for ticket in rig.k.tickets("hot"):
                views[f"ticket {job_key_of(ticket)}"] = "\n".join(ticket["text"])
            for order_id in ("ot-p-pickup", "ot-p-dx", "ot-p-fleet"):
                views[f"timeline {order_id}"] = json.dumps(rig.timeline(order_id))
                views[f"activities {order_id}"] = httpx.get(
                    f"http://127.0.0.1:{rig.http_port}/orders/{order_id}/activities",
                    timeout=10).text
            views["mqtt status"] = json.dumps([b for _, b, _ in status_topic.messages])
            views["upstream records"] = json.dumps(rig.upstream.records())
            views["board"] = httpx.get(f"http://127.0.0.1:{rig.http_port}/status",
                                       timeout=10).text
            shown, cli = edge_many(rig.daemon, ("orders", "show", "ot-p-dx", "--json"),
                                   ("aggregator", "--json"))
            views["orders show"], views["aggregator cli"] = json.dumps(shown), json.dumps(cli)
            views["webhooks"] = json.dumps(rig.platform.requests())
            views["daemon log"] = json.dumps(rig.daemon.lines)
            views["dead letters"] = json.dumps(rig.daemon.query("SELECT * FROM dead_letters"))
            views["stored events"] = json.dumps(rig.daemon.query("SELECT payload FROM events"))
            for where, text in views.items():
                _contact_free(text, where)
            # The customer is on record as first name and last initial, no more.
            assert "Jane Q." in views["stored events"]
            assert "[removed]" in views["ticket ot-p-dx/new/grill"]
            assert len(status_topic.messages) >= 3
    finally:
        status_topic.close()
