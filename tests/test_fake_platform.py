"""The fake delivery platform (edge.connectors.aggregator.fake_platform): its webhook receiver
(auth, validation against seed 004, every fault mode, the recorded log, lifecycle checks), the
demo process with its control port, and the driver against a small recording server. All
over real loopback sockets."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from edge.clock import parse_rfc3339
from edge.connectors.aggregator import fake_platform, mapping
from edge.connectors.aggregator.fake_platform import FakePlatform, PlatformDriver, build_order
from edge.connectors.aggregator.schema import (
    DasherStatus,
    DeliveryStatus,
    PlatformCancel,
    PlatformOrder,
    parse_body,
)
from edge.ingest.parse import parse_event

TOKEN = "hook-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
AT = datetime(2026, 11, 21, 18, 2, 11, tzinfo=UTC)
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
async def platform() -> AsyncIterator[FakePlatform]:
    fake = await FakePlatform(token=TOKEN).start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5.0) as c:
        yield c


async def send(client: httpx.AsyncClient, platform: FakePlatform, hook: mapping.Webhook,
               **kw: Any) -> httpx.Response:
    kw.setdefault("headers", AUTH)
    return await client.request(hook.method, platform.url + hook.path, json=hook.body, **kw)


async def patch(client: httpx.AsyncClient, platform: FakePlatform, path: str,
                body: Any = None, **kw: Any) -> httpx.Response:
    kw.setdefault("headers", AUTH)
    if isinstance(body, bytes):
        return await client.patch(platform.url + path, content=body, **kw)
    return await client.patch(platform.url + path, json=body, **kw)


# -- the receiver ---------------------------------------------------------------------------


async def test_the_kitchens_webhooks_are_taken_and_recorded(
        platform: FakePlatform, client: httpx.AsyncClient) -> None:
    before = time.monotonic()
    hooks = [
        mapping.accepted_webhook("o-1", mapping.prep_time(AT, 20)),
        mapping.ready_webhook("o-1"),
        mapping.rejected_webhook("o-2", "Store is currently closed"),
        mapping.accepted_webhook("o-3", AT),
        mapping.cancellation_webhook("o-3", "busy", "Kitchen capacity exceeded"),
    ]
    for hook in hooks:
        response = await send(client, platform, hook)
        assert response.status_code == 200, response.text
        assert response.json() == {}
    assert [(h.method, h.path, h.body, h.status) for h in platform.requests] == [
        (hook.method, hook.path, hook.body, 200) for hook in hooks]
    assert [(h.order_id, h.kind) for h in platform.requests] == [
        ("o-1", "accepted"), ("o-1", "ready"), ("o-2", "rejected"), ("o-3", "accepted"),
        ("o-3", "cancellation")]
    times = [h.at for h in platform.requests]
    assert before <= times[0] and times == sorted(times) and times[-1] <= time.monotonic()
    for hook in platform.requests:
        assert abs((parse_rfc3339(hook.received_at) - datetime.now(UTC)).total_seconds()) < 60
        assert hook.error is None
    assert platform.violations == []
    assert [h.kind for h in platform.hooks("o-3")] == ["accepted", "cancellation"]
    assert len(platform.hooks(kind="accepted")) == 2
    assert platform.state()["taken"] == 5 and platform.state()["mode"] == "none"


async def test_the_token_is_checked(platform: FakePlatform, client: httpx.AsyncClient) -> None:
    hook = mapping.ready_webhook("o-1")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                    {"Authorization": f"bearer {TOKEN}"},
                    {"Authorization": f"Bearer {TOKEN}x"}):
        response = await send(client, platform, hook, headers=headers)
        assert response.status_code == 401
        assert response.json() == {"error": "bad token"}
    assert [h.status for h in platform.requests] == [401] * 5
    assert platform.hooks() == []   # nothing taken
    assert (await send(client, platform, hook)).status_code == 200


async def test_unknown_paths_and_methods(platform: FakePlatform,
                                         client: httpx.AsyncClient) -> None:
    for path in ("/", "/orders", "/orders/o-1/events/order_picked_up", "/orders/o-1/x",
                 "/orders/a b/cancellation", "/v1/orders/o-1"):
        response = await client.patch(platform.url + path, json={}, headers=AUTH)
        assert response.status_code == 404, path
    response = await client.post(platform.url + "/orders/o-1", json={}, headers=AUTH)
    assert response.status_code == 405
    assert [h.status for h in platform.requests] == [404] * 6 + [405]


async def test_a_base_path(client: httpx.AsyncClient) -> None:
    fake = await FakePlatform(token=TOKEN, base_path="hooks/").start()
    try:
        assert fake.url.endswith("/hooks")
        assert (await send(client, fake, mapping.ready_webhook("o-1"))).status_code == 200
        assert fake.requests[0].path == "/hooks/orders/o-1/events/order_ready_for_pickup"
        bare = await client.patch(f"http://127.0.0.1:{fake.port}/orders/o-1/cancellation",
                                  json={"cancel_reason": "OTHER", "cancel_details": ""},
                                  headers=AUTH)
        assert bare.status_code == 404
    finally:
        await fake.stop()


BAD_BODIES: list[tuple[str, Any, str]] = [
    ("/orders/o-1", {"merchant_supplied_id": "ot-o-1", "order_status": "success"},
     "prep_time: required field is missing"),
    ("/orders/o-1", {"merchant_supplied_id": "ot-o-1", "order_status": "success",
                     "prep_time": "in 20 minutes"}, "prep_time: Input should be a valid datetime"),
    ("/orders/o-1", {"merchant_supplied_id": "ot-o-1", "order_status": "success",
                     "prep_time": "2026-11-21T18:30:00"}, "prep_time: must be an RFC 3339 time"),
    ("/orders/o-1", {"merchant_supplied_id": "ot-o-1", "order_status": "success",
                     "prep_time": 1763749800}, "prep_time: must be an RFC 3339 time string"),
    ("/orders/o-1", {"merchant_supplied_id": "ot-o-1", "order_status": "success",
                     "prep_time": "2026-11-21T18:30:00Z", "prep_minutes": 20},
     "prep_minutes: Extra inputs are not permitted"),
    ("/orders/o-1", {"merchant_supplied_id": "ot-o-1", "order_status": "accepted",
                     "prep_time": "2026-11-21T18:30:00Z"},
     "order_status: must be 'success' or 'fail'"),
    ("/orders/o-1", {"merchant_supplied_id": "ot-o-1"}, "order_status: must be 'success' or"),
    ("/orders/o-1", {"merchant_supplied_id": "o-1", "order_status": "success",
                     "prep_time": "2026-11-21T18:30:00Z"},
     "merchant_supplied_id: 'o-1' is not this order's ('ot-o-1')"),
    ("/orders/o-1", {"merchant_supplied_id": 5, "order_status": "fail",
                     "failure_reason": "closed"}, "merchant_supplied_id: must be a string"),
    ("/orders/o-1", {"merchant_supplied_id": "ot-o-1", "order_status": "fail"},
     "failure_reason: required field is missing"),
    ("/orders/o-1", {"merchant_supplied_id": "ot-o-1", "order_status": "fail",
                     "failure_reason": ""}, "failure_reason: must not be empty"),
    ("/orders/o-1/events/order_ready_for_pickup", {}, "merchant_supplied_id: required field"),
    ("/orders/o-1/events/order_ready_for_pickup", {"merchant_supplied_id": "ot-o-2"},
     "merchant_supplied_id: 'ot-o-2' is not this order's ('ot-o-1')"),
    ("/orders/o-1/cancellation", {"cancel_reason": "OUT_OF_STOCK", "cancel_details": "x"},
     "cancel_reason: Input should be 'ITEM_OUT_OF_STOCK', 'STORE_CLOSED', 'KITCHEN_BUSY' or "
     "'OTHER'"),
    ("/orders/o-1/cancellation", {"cancel_reason": "OTHER", "cancel_details": 3},
     "cancel_details: must be a string"),
    ("/orders/o-1/cancellation", {"cancel_reason": "OTHER"},
     "cancel_details: required field is missing"),
    ("/orders/o-1/cancellation", b"{not json", "body is not valid JSON"),
    ("/orders/o-1/cancellation", b"", "body is not valid JSON"),
    ("/orders/o-1/cancellation", [1, 2], "body must be a JSON object"),
]


@pytest.mark.parametrize(("path", "body", "error"), BAD_BODIES)
async def test_a_body_the_seed_does_not_allow_is_400(
        platform: FakePlatform, client: httpx.AsyncClient, path: str, body: Any,
        error: str) -> None:
    response = await patch(client, platform, path, body)
    assert response.status_code == 400
    assert response.json()["error"].startswith(error), response.json()
    [hook] = platform.requests
    assert (hook.status, hook.order_id, hook.kind) == (400, "o-1", None)
    assert hook.error == response.json()["error"]
    assert hook.body == (body if not isinstance(body, bytes) else
                         (body.decode() or None))
    assert platform.hooks() == [] and platform.violations == []


async def test_a_body_too_large_is_413(platform: FakePlatform,
                                       client: httpx.AsyncClient) -> None:
    body = json.dumps({"cancel_reason": "OTHER", "cancel_details": "x" * 300_000}).encode()
    response = await patch(client, platform, "/orders/o-1/cancellation", body)
    assert response.status_code == 413
    assert response.json()["error"].startswith("body is 300")
    huge = await patch(client, platform, "/orders/o-1/cancellation", b"x" * 2_000_000)
    assert huge.status_code == 413
    assert [h.status for h in platform.requests] == [413, 413]


async def test_lifecycle_violations_are_noted_not_refused(
        platform: FakePlatform, client: httpx.AsyncClient) -> None:
    steps = [
        mapping.ready_webhook("a"),                               # ready before accepted
        mapping.accepted_webhook("b", AT), mapping.accepted_webhook("b", AT),   # a repeat
        mapping.ready_webhook("b"), mapping.ready_webhook("b"),
        mapping.cancellation_webhook("b", "busy", None),
        mapping.ready_webhook("b"),                               # after cancellation
        mapping.rejected_webhook("c", "closed"),
        mapping.accepted_webhook("c", AT),                        # after rejected
        mapping.accepted_webhook("d", AT), mapping.rejected_webhook("d", "late"),
        mapping.cancellation_webhook("e", "out_of_stock", "gone"),  # cancel before accept: ok
    ]
    for hook in steps:
        assert (await send(client, platform, hook)).status_code == 200
    assert platform.violations == [
        "order a: ready before accepted",
        "order b: ready after cancellation",
        "order c: accepted after rejected",
        "order d: rejected after accepted",
    ]
    assert platform.state()["violations"] == platform.violations


# -- faults ---------------------------------------------------------------------------------


async def test_down_refuses_connections_and_comes_back_on_the_same_port(
        platform: FakePlatform, client: httpx.AsyncClient) -> None:
    port = platform.port
    await platform.set_fault("down")
    with pytest.raises(httpx.ConnectError):
        await send(client, platform, mapping.ready_webhook("o-1"))
    await platform.set_fault("none")
    assert platform.port == port
    assert (await send(client, platform, mapping.ready_webhook("o-1"))).status_code == 200
    assert [h.status for h in platform.requests] == [200]


async def test_down_cuts_a_request_in_flight(platform: FakePlatform,
                                             client: httpx.AsyncClient) -> None:
    await platform.set_fault("slow", delay=30)
    request = asyncio.create_task(send(client, platform, mapping.ready_webhook("o-1")))
    await platform.wait_requests(1)
    await platform.set_fault("down")
    with pytest.raises(httpx.TransportError):
        await asyncio.wait_for(request, 5)


async def test_slow_takes_the_webhook_and_answers_late(platform: FakePlatform,
                                                       client: httpx.AsyncClient) -> None:
    await platform.set_fault("slow", delay=0.6)
    with pytest.raises(httpx.ReadTimeout):
        await send(client, platform, mapping.ready_webhook("o-1"), timeout=0.2)
    assert [h.status for h in platform.requests] == [200]   # taken, though unanswered
    started = time.monotonic()
    response = await send(client, platform, mapping.ready_webhook("o-1"))
    took = time.monotonic() - started
    assert response.status_code == 200
    assert 0.6 <= took < 5.0
    assert len(platform.hooks("o-1", "ready")) == 2


@pytest.mark.parametrize(("mode", "retry_after", "header"), [
    ("429", 2.0, "2"), ("429", 1.5, "1.5"), ("429", None, None), ("500", None, None),
    ("500", 3.0, "3"),
])
async def test_429_and_500(platform: FakePlatform, client: httpx.AsyncClient, mode: Any,
                           retry_after: float | None, header: str | None) -> None:
    await platform.set_fault(mode, retry_after=retry_after)
    response = await send(client, platform, mapping.ready_webhook("o-1"))
    assert response.status_code == int(mode)
    assert response.headers.get("Retry-After") == header
    assert [(h.status, h.order_id, h.kind) for h in platform.requests] == [
        (int(mode), "o-1", None)]
    assert platform.hooks() == []
    await platform.set_fault("none")
    assert (await send(client, platform, mapping.ready_webhook("o-1"))).status_code == 200


async def test_the_token_is_checked_before_a_fault(platform: FakePlatform,
                                                   client: httpx.AsyncClient) -> None:
    await platform.set_fault("500")
    response = await send(client, platform, mapping.ready_webhook("o-1"), headers={})
    assert response.status_code == 401


async def test_blackhole_never_answers(platform: FakePlatform,
                                       client: httpx.AsyncClient) -> None:
    await platform.set_fault("blackhole")
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        await send(client, platform, mapping.ready_webhook("o-1"), timeout=0.3)
    assert time.monotonic() - started >= 0.3
    assert [h.status for h in platform.requests] == [0]
    assert platform.hooks() == []
    await platform.set_fault("none")
    assert (await send(client, platform, mapping.ready_webhook("o-1"))).status_code == 200
    assert [h.status for h in platform.requests] == [0, 200]


async def test_blackhole_holds_the_connection_open(platform: FakePlatform,
                                                   client: httpx.AsyncClient) -> None:
    await platform.set_fault("blackhole")
    request = asyncio.create_task(send(client, platform, mapping.ready_webhook("o-1")))
    await platform.wait_requests(1)
    await asyncio.sleep(0.2)
    assert not request.done()      # no answer and no close: the sender must time out
    request.cancel()


async def test_reject_a_method_and_path_prefix(platform: FakePlatform,
                                               client: httpx.AsyncClient) -> None:
    await platform.set_fault("reject", status=410, method="patch", path_prefix="/orders/o-9")
    gone = await send(client, platform, mapping.ready_webhook("o-9"))
    assert gone.status_code == 410
    assert (await send(client, platform, mapping.accepted_webhook("o-9", AT))).status_code \
        == 410
    assert (await send(client, platform, mapping.ready_webhook("o-8"))).status_code == 200
    await platform.set_fault("reject", path_prefix="/orders/o-8/cancellation")
    bad = await send(client, platform, mapping.cancellation_webhook("o-8", "busy", None))
    assert bad.status_code == 400
    assert [(h.status, h.order_id) for h in platform.requests] == [
        (410, "o-9"), (410, "o-9"), (200, "o-8"), (400, "o-8")]
    assert platform.requests[0].error == "rejected by the fault in place"


async def test_reject_without_a_method_matches_any(platform: FakePlatform,
                                                   client: httpx.AsyncClient) -> None:
    await platform.set_fault("reject", status=422)
    assert (await send(client, platform, mapping.accepted_webhook("o-1", AT))).status_code \
        == 422
    await platform.set_fault("reject", status=422, method="POST")
    assert (await send(client, platform, mapping.accepted_webhook("o-1", AT))).status_code \
        == 200


async def test_fault_arguments_are_checked(platform: FakePlatform) -> None:
    with pytest.raises(ValueError, match="unknown fault mode"):
        await platform.set_fault("flaky")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not an HTTP status"):
        await platform.set_fault("reject", status=42)
    assert platform.mode == "none"


async def test_wait_for_wakes_on_a_request(platform: FakePlatform,
                                           client: httpx.AsyncClient) -> None:
    waiting = asyncio.create_task(platform.wait_for(lambda: len(platform.hooks("o-5")) == 1))
    await asyncio.sleep(0)
    assert not waiting.done()
    await send(client, platform, mapping.accepted_webhook("o-5", AT))
    await asyncio.wait_for(waiting, 2)
    with pytest.raises(TimeoutError):
        await platform.wait_requests(5, within=0.1)


# -- the demo process -----------------------------------------------------------------------


async def test_the_serve_process_and_its_control_port(tmp_path: Path,
                                                      client: httpx.AsyncClient) -> None:
    token_file = tmp_path / "platform.token"
    token_file.write_text(TOKEN + "\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edge.connectors.aggregator.fake_platform", "serve",
        "--token-file", str(token_file), "--base-path", "/hooks",
        stdout=asyncio.subprocess.PIPE, cwd=REPO)
    try:
        assert proc.stdout is not None
        info = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
        url, control = info["url"], f"http://127.0.0.1:{info['control_port']}"
        assert url == f"http://127.0.0.1:{info['port']}/hooks"
        hook = mapping.accepted_webhook("o-1", AT)
        assert (await client.patch(url + hook.path, json=hook.body, headers=AUTH)
                ).status_code == 200
        state = (await client.post(control + "/fault",
                                   json={"mode": "429", "retry_after": 7})).json()
        assert state["mode"] == "429" and state["taken"] == 1
        busy = await client.patch(url + hook.path, json=hook.body, headers=AUTH)
        assert (busy.status_code, busy.headers["Retry-After"]) == (429, "7")
        await client.post(control + "/fault", json={
            "mode": "reject", "status": 404, "method": "PATCH", "path_prefix": "/hooks/orders/x"})
        assert (await client.patch(url + "/orders/x/events/order_ready_for_pickup",
                                   json={"merchant_supplied_id": "ot-x"}, headers=AUTH)
                ).status_code == 404
        log = (await client.get(control + "/requests")).json()
        assert [r["status"] for r in log["requests"]] == [200, 429, 404]
        assert log["requests"][0]["body"] == hook.body and log["next"] == 3
        assert log["requests"][0]["kind"] == "accepted"
        later = (await client.get(control + "/requests?since=2")).json()
        assert [r["status"] for r in later["requests"]] == [404]
        assert (await client.get(control + "/requests?since=x")).status_code == 400
        assert (await client.post(control + "/fault", json={"mode": "nope"})).status_code == 400
        assert (await client.get(control + "/state")).json()["mode"] == "reject"
        await client.post(control + "/fault", json={"mode": "down"})
        with pytest.raises(httpx.ConnectError):
            await client.patch(url + hook.path, json=hook.body, headers=AUTH)
        assert (await client.get(control + "/state")).json()["mode"] == "down"
    finally:
        if proc.returncode is None:
            os.kill(proc.pid, signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0


# -- the driver -----------------------------------------------------------------------------


@dataclass
class Kitchen:
    """A small stand-in for the kitchen's aggregator API that records what it got and
    answers what it is told to."""

    got: list[tuple[str, str, str | None, bytes]] = field(default_factory=list)
    answers: dict[str, int] = field(default_factory=dict)   # dasher_status -> status
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        self.got.append((request.method, request.path, request.headers.get("Authorization"),
                         raw))
        if request.path == "/orders":
            return web.json_response({"id": json.loads(raw)["id"], "status": "submitted"},
                                     status=202)
        if request.path.endswith("/delivery-status"):
            status = self.answers.get(json.loads(raw)["dasher_status"], 200)
            return web.json_response({"error": "backwards"} if status >= 400 else {},
                                     status=status)
        return web.Response(text="plain", status=200)

    def bodies(self) -> list[Any]:
        return [json.loads(raw) for _, _, _, raw in self.got]


@pytest.fixture
async def kitchen() -> AsyncIterator[Kitchen]:
    rig = Kitchen()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", rig.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    rig.url = f"http://{host}:{port}"
    try:
        yield rig
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("fulfillment", ["pickup", "dx_delivery", "mx_fleet_delivery"])
async def test_the_driver_posts_a_realistic_order(kitchen: Kitchen, fulfillment: Any) -> None:
    async with PlatformDriver(kitchen.url + "/", "api-token") as driver:
        order = build_order("p-42", fulfillment=fulfillment, now=AT)
        reply = await driver.post_order(order)
    assert (reply.status, reply.body, reply.ok) == (202, {"id": "p-42", "status": "submitted"},
                                                    True)
    [(method, path, auth, raw)] = kitchen.got
    assert (method, path, auth) == ("POST", "/orders", "Bearer api-token")
    parsed = parse_body(PlatformOrder, raw)
    assert parsed.fulfillment == fulfillment and parsed.id == "p-42"
    assert parsed.consumer.email and parsed.consumer.phone     # a platform sends them
    assert any(i.extras for i in parsed.items) and any(i.special_instructions
                                                       for i in parsed.items)
    assert parsed.subtotal == sum(i.quantity * i.price for i in parsed.items)
    assert parsed.estimated_pickup_time == datetime(2026, 11, 21, 18, 22, 11, tzinfo=UTC)
    assert driver.replies == [reply]


@pytest.mark.parametrize("fulfillment", ["pickup", "dx_delivery", "mx_fleet_delivery"])
def test_built_orders_map_to_events_ingest_takes(fulfillment: Any) -> None:
    order = parse_body(PlatformOrder, json.dumps(build_order("p-42", fulfillment=fulfillment,
                                                             now=AT)).encode())
    event = mapping.order_created(order, AT)
    root = "kitchen/ist-kadikoy-01"
    parsed = parse_event(f"{root}/orders/ot-p-42/events", json.dumps(event).encode(), root)
    assert len(parsed.data.items) == 4
    assert parsed.data.items[0].modifiers == ["Cheddar", "Bacon"]
    assert parsed.data.items[0].note == "No pickles on one, please"


def test_the_builder() -> None:
    body = build_order("p-1", fulfillment="pickup", with_type=False)
    assert "fulfillment_type" not in body and body["is_pickup"] is True
    with pytest.raises(ValueError, match="mx_fleet_delivery"):
        build_order("p-1", fulfillment="mx_fleet_delivery", with_type=False)
    assert build_order()["id"] != build_order()["id"]
    assert build_order("p-1")["delivery_short_code"] == build_order("p-1")["delivery_short_code"]
    one = build_order("p-1", categories=[{"items": [
        {"id": "x", "name": "Tea", "quantity": 3, "price": 150}]}])
    assert one["subtotal"] == 450


async def test_the_driver_plays_the_dasher_flow(kitchen: Kitchen) -> None:
    async with PlatformDriver(kitchen.url, "api-token") as driver:
        replies = await driver.deliver("p-42")
        assert [r.status for r in replies] == [200] * 5
        bodies = kitchen.bodies()
        assert [b["dasher_status"] for b in bodies] == [s.value for s in DasherStatus]
        for body in bodies:
            status = parse_body(DeliveryStatus, json.dumps(body).encode())
            assert status.client_order_id == "ot-p-42"
            assert status.dasher is not None and status.dasher.phone_number
        assert {path for _, path, _, _ in kitchen.got} == {"/orders/p-42/delivery-status"}

        kitchen.got.clear()
        kitchen.answers["arrived_at_store"] = 409
        replies = await driver.deliver("p-43")
        assert [r.status for r in replies] == [200, 200, 409]   # stops at the refusal
        assert replies[-1].body == {"error": "backwards"} and not replies[-1].ok

        kitchen.got.clear()
        await driver.send_dasher_status("p-44", DasherStatus.DROPOFF, dasher={},
                                        client_order_id="other")
        assert kitchen.bodies() == [{"client_order_id": "other", "dasher_status": "dropoff",
                                     "dasher": {}}]


async def test_the_driver_cancels(kitchen: Kitchen) -> None:
    async with PlatformDriver(kitchen.url, "api-token") as driver:
        reply = await driver.cancel("p-42", reason="Customer asked", store_id="store-9")
    assert (reply.status, reply.body) == (200, "plain")
    [(method, path, auth, raw)] = kitchen.got
    assert (method, path, auth) == ("POST", "/orders/p-42/cancel", "Bearer api-token")
    cancel = parse_body(PlatformCancel, raw)
    assert (cancel.store.merchant_supplied_id, cancel.client_order_id, cancel.reason) == \
        ("store-9", "ot-p-42", "Customer asked")


async def test_the_driver_sends_broken_bodies_and_no_token(kitchen: Kitchen) -> None:
    async with PlatformDriver(kitchen.url, "api-token") as driver:
        await driver.request("POST", "/orders/p-1/cancel", content=b"{broken", token="")
        await driver.request("POST", "/orders/p-1/cancel", {"a": 1}, token="other")
    (_, _, auth1, raw1), (_, _, auth2, raw2) = kitchen.got
    assert (auth1, raw1) == (None, b"{broken")
    assert (auth2, json.loads(raw2)) == ("Bearer other", {"a": 1})


async def test_the_driver_raises_when_the_kitchen_is_not_there() -> None:
    async with PlatformDriver("http://127.0.0.1:9", "t", timeout=2) as driver:
        with pytest.raises(httpx.ConnectError):
            await driver.post_order(build_order())
        assert driver.replies == []


async def test_the_driver_cli(kitchen: Kitchen, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    async def _run(*args: str) -> tuple[int, list[dict[str, Any]]]:
        # In a thread (main runs its own event loop) rather than a process: the same code
        # path, a second instead of six.
        capsys.readouterr()
        code = await asyncio.to_thread(fake_platform.main, list(args))
        return code, [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    token_file = tmp_path / "aggregator.token"
    token_file.write_text("api-token\n")
    common = ["--api", kitchen.url, "--token-file", str(token_file)]
    code, out = await _run("order", *common, "--id", "p-7", "--fulfillment",
                           "mx_fleet_delivery")
    assert code == 0 and out == [{"method": "POST", "path": "/orders", "status": 202,
                                  "body": {"id": "p-7", "status": "submitted"}}]
    assert parse_body(PlatformOrder, kitchen.got[0][3]).fulfillment == "mx_fleet_delivery"
    assert kitchen.got[0][2] == "Bearer api-token"

    kitchen.answers["dropoff"] = 409
    code, out = await _run("dasher", *common, "--id", "p-7", "dasher_confirmed", "dropoff")
    assert code == 1 and [r["status"] for r in out] == [200, 409]
    code, out = await _run("dasher", *common, "--id", "p-8")
    assert code == 1 and [r["status"] for r in out] == [200, 200, 200, 200, 409]

    code, out = await _run("cancel", *common, "--id", "p-7", "--reason", "Changed mind")
    assert code == 0 and out[0]["path"] == "/orders/p-7/cancel"
    assert kitchen.bodies()[-1]["reason"] == "Changed mind"

    with pytest.raises(SystemExit) as exit_:
        await _run("dasher", *common, "--id", "p-7", "picked_up")
    assert exit_.value.code == 2
    assert "'picked_up' is not one of dasher_confirmed" in capsys.readouterr().err

    code, out = await _run("cancel", "--api", "http://127.0.0.1:9", "--token-file",
                           str(token_file), "--id", "p-7")
    assert code == 1 and out[0]["error"].startswith("ConnectError")
