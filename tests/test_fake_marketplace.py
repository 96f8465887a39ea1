"""The fake seed 001 marketplace over real HTTP (httpx): repetition until acknowledged, the
reappearance on every status change, courier rules, idempotent repeats, bad calls, every
fault mode, auth, and the demo process."""

from __future__ import annotations

import asyncio
import time
import urllib.error
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge.connectors.marketplace.fake import MAINTENANCE_PAGE, FakeMarketplace, build_order
from tests.fake_marketplace import FakeMarketplaceProcess

TOKEN = "mkt-secret"


@pytest.fixture
async def fake() -> AsyncIterator[FakeMarketplace]:
    market = await FakeMarketplace(token=TOKEN).start()
    try:
        yield market
    finally:
        await market.stop()


@pytest.fixture
async def api(fake: FakeMarketplace) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fake.url, timeout=5.0,
                                 headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield client


async def listed(api: httpx.AsyncClient) -> list[tuple[str, int]]:
    response = await api.get("/orders/get-current")
    assert response.status_code == 200
    return [(o["payment_key"], o["status_id"]) for o in response.json()["data"]]


async def put(api: httpx.AsyncClient, action: str, key: str,
              body: dict[str, Any] | None = None) -> httpx.Response:
    return await api.put(f"/orders/{action}/{key}", json=body)


# -- the order lifecycle ------------------------------------------------------------------


async def test_an_order_repeats_until_acknowledged_and_reappears_on_every_change(
        fake: FakeMarketplace, api: httpx.AsyncClient) -> None:
    key = fake.new_order()["payment_key"]
    assert await listed(api) == [(key, 1)]
    assert await listed(api) == [(key, 1)]                   # repeated
    assert (await put(api, "success", key)).json() == {
        "success": True, "data": {"payment_key": key, "status_id": 1}}
    assert await listed(api) == []
    assert fake.acknowledged(key) == 1
    assert (await put(api, "accept", key, {"preparing_time": 30})).status_code == 200
    assert await listed(api) == [(key, 2)]                   # the restaurant's own move
    assert (await api.get("/orders/get-current")).json()["data"][0]["preparing_time"] == 30
    await put(api, "success", key)
    assert await listed(api) == []
    fake.set_status(key, 6, reason_id=4)                     # the customer cancelled
    assert await listed(api) == [(key, 6)]
    await put(api, "success", key)
    assert await listed(api) == []
    assert [(h.status_id, h.by, h.reason_id) for h in fake.history(key)] == [
        (1, "marketplace", None), (2, "restaurant", None), (6, "marketplace", 4)]


async def test_acknowledgement_covers_the_status_the_order_has_now(
        fake: FakeMarketplace, api: httpx.AsyncClient) -> None:
    """The call names no status: a move between the poll and the acknowledgement is
    acknowledged unseen. The fake keeps this hazard of the real API."""
    key = fake.new_order()["payment_key"]
    assert await listed(api) == [(key, 1)]
    fake.set_status(key, 6)
    await put(api, "success", key)
    assert await listed(api) == []
    assert fake.acknowledged(key) == 6


async def test_orders_are_listed_in_arrival_order_with_the_seed_shape(
        fake: FakeMarketplace, api: httpx.AsyncClient) -> None:
    first = fake.new_order(courier_type="platform", payment_method="CREDIT_CARD")
    second = fake.new_order(scheduled_date="2026-01-15 18:30:00")
    third = fake.add_order(build_order(9001, payment_key="k-9001", status_id=2))
    data = (await api.get("/orders/get-current")).json()["data"]
    assert [o["id"] for o in data] == [first["id"], second["id"], 9001]
    assert data[0] == first and data[1] == second and data[2] == third
    assert second["id"] == first["id"] + 1
    assert first["courier_fee"] > 0 and second["courier_fee"] == 0
    assert first["total"] == first["courier_fee"] + sum(
        p["price"] * p["quantity"] for p in first["products"])
    assert {"name", "phone", "address"} <= set(first["customer"])
    assert any(p["options"] for p in first["products"])
    assert any(p["note"] for p in first["products"])
    with pytest.raises(ValueError, match="already used"):
        fake.add_order(build_order(9002, payment_key="k-9001"))
    with pytest.raises(ValueError, match="status_id"):
        fake.add_order(build_order(9003, status_id=3))


async def test_restaurant_courier_goes_the_whole_way(fake: FakeMarketplace,
                                                     api: httpx.AsyncClient) -> None:
    key = fake.new_order(courier_type="restaurant")["payment_key"]
    for action, body, status in [("accept", {"preparing_time": 25}, 2), ("ontheway", None, 16),
                                 ("complete", None, 5)]:
        response = await put(api, action, key, body)
        assert (response.status_code, response.json()["data"]["status_id"]) == (200, status)
    assert [h.status_id for h in fake.history(key)] == [1, 2, 16, 5]
    assert fake.history(key)[1].preparing_time == 25


async def test_platform_courier_cannot_be_sent_on_its_way_or_completed(
        fake: FakeMarketplace, api: httpx.AsyncClient) -> None:
    key = fake.new_order(courier_type="platform")["payment_key"]
    assert (await put(api, "accept", key, {"preparing_time": 20})).status_code == 200
    for action in ("ontheway", "complete"):
        response = await put(api, action, key)
        assert response.status_code == 403
        assert "courier_type 'restaurant'" in response.json()["error"]
    assert fake.status_of(key) == 2
    fake.set_status(key, 5)                                  # their courier delivered
    assert await listed(api) == [(key, 5)]


@pytest.mark.parametrize(
    ("start", "action", "body"),
    [
        (1, "ontheway", None), (1, "complete", None), (2, "complete", None),
        (16, "accept", {"preparing_time": 10}), (6, "accept", {"preparing_time": 10}),
        (6, "ontheway", None), (5, "cancel", {"reason_id": 3}),
        (5, "accept", {"preparing_time": 10}),
    ],
)
async def test_a_call_that_does_not_fit_the_status_is_a_conflict(
        fake: FakeMarketplace, api: httpx.AsyncClient, start: int, action: str,
        body: dict[str, Any] | None) -> None:
    key = fake.new_order(status_id=start)["payment_key"]
    response = await put(api, action, key, body)
    assert response.status_code == 409
    assert f"order is in status {start}" in response.json()["error"]
    assert fake.status_of(key) == start and len(fake.history(key)) == 1


@pytest.mark.parametrize(
    ("start", "action", "body"),
    [(1, "cancel", {"reason_id": 1}), (2, "cancel", {"reason_id": 3}),
     (16, "cancel", {"reason_id": 2})],
)
async def test_cancel_from_any_status_before_completion(
        fake: FakeMarketplace, api: httpx.AsyncClient, start: int, action: str,
        body: dict[str, Any]) -> None:
    key = fake.new_order(status_id=start)["payment_key"]
    assert (await put(api, action, key, body)).status_code == 200
    assert fake.status_of(key) == 6
    assert fake.history(key)[-1].reason_id == body["reason_id"]


async def test_repeating_a_call_is_answered_200_and_changes_nothing(
        fake: FakeMarketplace, api: httpx.AsyncClient) -> None:
    key = fake.new_order()["payment_key"]
    for _ in range(2):
        assert (await put(api, "success", key)).status_code == 200
    assert (await put(api, "accept", key, {"preparing_time": 30})).status_code == 200
    again = await put(api, "accept", key, {"preparing_time": 45})       # a retry, changed mind
    assert (again.status_code, again.json()["data"]["status_id"]) == (200, 2)
    assert fake.order(key)["preparing_time"] == 30
    await put(api, "success", key)
    assert await listed(api) == []                   # the repeat did not list it again
    for action in ("ontheway", "ontheway", "complete", "complete"):
        assert (await put(api, action, key)).status_code == 200
    assert [h.status_id for h in fake.history(key)] == [1, 2, 16, 5]

    other = fake.new_order()["payment_key"]
    assert (await put(api, "cancel", other, {"reason_id": 3})).status_code == 200
    assert (await put(api, "cancel", other, {"reason_id": 5})).status_code == 200
    assert [(h.status_id, h.reason_id) for h in fake.history(other)] == [(1, None), (6, 3)]


@pytest.mark.parametrize(
    ("action", "content", "error"),
    [
        ("accept", None, "preparing_time must be an integer from 1 to 240"),
        ("accept", b'{"preparing_time": "30"}', "preparing_time must be an integer"),
        ("accept", b'{"preparing_time": 0}', "preparing_time must be an integer"),
        ("accept", b'{"preparing_time": 241}', "preparing_time must be an integer"),
        ("accept", b'{"preparing_time": true}', "preparing_time must be an integer"),
        ("accept", b'{"preparing_time": 30', "preparing_time must be an integer"),
        ("cancel", b'{"reason_id": 9}', "reason_id must be an integer from 1 to 8"),
        ("cancel", b'{}', "reason_id must be an integer from 1 to 8"),
        ("cancel", b'[3]', "reason_id must be an integer from 1 to 8"),
    ],
)
async def test_a_bad_body_is_400_and_changes_nothing(
        fake: FakeMarketplace, api: httpx.AsyncClient, action: str, content: bytes | None,
        error: str) -> None:
    key = fake.new_order()["payment_key"]
    response = await api.put(f"/orders/{action}/{key}", content=content,
                             headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"].startswith(error)
    assert fake.status_of(key) == 1


async def test_unknown_orders_paths_and_methods(fake: FakeMarketplace,
                                                api: httpx.AsyncClient) -> None:
    order = fake.new_order()
    cases = [
        ("PUT", f"/orders/accept/{order['id']}", 404),        # the id, not the payment_key
        ("PUT", "/orders/success/00000000-0000-0000-0000-000000000000", 404),
        ("PUT", f"/orders/deliver/{order['payment_key']}", 404),
        ("GET", "/orders", 404),
        ("GET", "/", 404),
        ("POST", f"/orders/accept/{order['payment_key']}", 405),
        ("POST", "/orders/get-current", 405),
    ]
    for method, path, status in cases:
        response = await api.request(method, path, json={"preparing_time": 10})
        assert (path, response.status_code) == (path, status)
        assert "error" in response.json()
    assert fake.status_of(order["payment_key"]) == 1


async def test_cancel_reasons_are_the_seeds_eight(api: httpx.AsyncClient) -> None:
    data = (await api.get("/orders/cancel-reasons")).json()["data"]
    assert [r["id"] for r in data] == list(range(1, 9))
    assert data[0] == {"id": 1, "reason": "Ürün tükendi"}
    assert data[2] == {"id": 3, "reason": "Yoğunluk nedeniyle"}
    assert data[7] == {"id": 8, "reason": "Diğer"}


async def test_raw_malformed_orders_are_kept_in_the_list(fake: FakeMarketplace,
                                                         api: httpx.AsyncClient) -> None:
    fake.add_raw_order({"id": "x", "payment_key": "raw-1", "products": "none"})
    fake.add_raw_order({"hello": "world"})
    good = fake.new_order()["payment_key"]
    data = (await api.get("/orders/get-current")).json()["data"]
    assert data[:2] == [{"id": "x", "payment_key": "raw-1", "products": "none"},
                        {"hello": "world"}]
    assert data[2]["payment_key"] == good
    accept = await put(api, "accept", "raw-1", {"preparing_time": 10})
    assert (accept.status_code, accept.json()["error"]) == (409, "order cannot be changed")
    assert (await put(api, "success", "raw-1")).status_code == 200
    await put(api, "success", good)
    assert (await api.get("/orders/get-current")).json()["data"] == [{"hello": "world"}]


async def test_unanswered_orders_are_cancelled_by_the_marketplace(
        fake: FakeMarketplace, api: httpx.AsyncClient) -> None:
    waiting = fake.new_order()["payment_key"]
    answered = fake.new_order()["payment_key"]
    start = time.monotonic()
    fake.set_auto_cancel(0.4)
    late = fake.new_order()["payment_key"]
    assert (await put(api, "accept", answered, {"preparing_time": 20})).status_code == 200
    await fake.wait_for(lambda: fake.status_of(waiting) == fake.status_of(late) == 6, within=5)
    elapsed = time.monotonic() - start
    assert 0.35 <= elapsed < 3.0
    assert fake.history(waiting)[-1].by == "marketplace"
    assert fake.history(waiting)[-1].reason_id == 8
    assert fake.status_of(answered) == 2
    assert sorted(await listed(api)) == sorted([(waiting, 6), (answered, 2), (late, 6)])
    fake.set_auto_cancel(None)
    spared = fake.new_order()["payment_key"]
    await asyncio.sleep(0.6)
    assert fake.status_of(spared) == 1


# -- auth ------------------------------------------------------------------------------------


@pytest.mark.parametrize("header", [None, "Bearer wrong", TOKEN, f"Basic {TOKEN}"])
async def test_a_bearer_token_is_required(fake: FakeMarketplace, header: str | None) -> None:
    key = fake.new_order()["payment_key"]
    headers = {} if header is None else {"Authorization": header}
    async with httpx.AsyncClient(base_url=fake.url, headers=headers) as client:
        for method, path, body in [
            ("GET", "/orders/get-current", None),
            ("PUT", f"/orders/accept/{key}", {"preparing_time": 10}),
            ("PUT", f"/orders/success/{key}", None),
            ("GET", "/orders/nowhere", None),
        ]:
            response = await client.request(method, path, json=body)
            assert response.status_code == 401
            assert response.json() == {"error": "unauthorized"}
    assert fake.status_of(key) == 1 and fake.acknowledged(key) is None


# -- faults --------------------------------------------------------------------------------


async def test_down_refuses_connections_and_comes_back_with_its_orders(
        fake: FakeMarketplace, api: httpx.AsyncClient) -> None:
    key = fake.new_order()["payment_key"]
    port = fake.port
    await fake.set_fault("down")
    with pytest.raises(httpx.ConnectError):
        await api.get("/orders/get-current")
    fake.set_status(key, 6)                       # the marketplace lives on while we cannot see it
    await fake.set_fault("none")
    assert fake.port == port
    assert await listed(api) == [(key, 6)]


async def test_down_cuts_a_request_in_flight(fake: FakeMarketplace,
                                             api: httpx.AsyncClient) -> None:
    fake.new_order()
    await fake.set_fault("slow", delay=5.0)
    call = asyncio.create_task(api.get("/orders/get-current"))
    await fake.wait_requests(1)
    await fake.set_fault("down")
    with pytest.raises(httpx.TransportError):
        await call


async def test_slow_does_the_work_and_answers_late(fake: FakeMarketplace,
                                                   api: httpx.AsyncClient) -> None:
    key = fake.new_order()["payment_key"]
    await fake.set_fault("slow", delay=0.5)
    with pytest.raises(httpx.ReadTimeout):
        await api.put(f"/orders/accept/{key}", json={"preparing_time": 30}, timeout=0.2)
    assert fake.status_of(key) == 2               # the answer was lost, not the change
    start = time.monotonic()
    retry = await put(api, "accept", key, {"preparing_time": 30})
    assert retry.status_code == 200 and time.monotonic() - start >= 0.45
    await fake.set_fault("none")
    start = time.monotonic()
    assert await listed(api) == [(key, 2)]
    assert time.monotonic() - start < 0.45


@pytest.mark.parametrize(("retry_after", "header"), [(None, "1"), (7, "7"), (0.5, "0.5")])
async def test_429_with_retry_after_changes_nothing(
        fake: FakeMarketplace, api: httpx.AsyncClient, retry_after: float | None,
        header: str) -> None:
    key = fake.new_order()["payment_key"]
    await fake.set_fault("429", retry_after=retry_after)
    for response in (await api.get("/orders/get-current"),
                     await put(api, "accept", key, {"preparing_time": 30}),
                     await api.get("/orders/get-current", headers={"Authorization": ""})):
        assert response.status_code == 429
        assert response.headers["Retry-After"] == header
        assert "error" in response.json()
    assert fake.status_of(key) == 1


async def test_500_changes_nothing(fake: FakeMarketplace, api: httpx.AsyncClient) -> None:
    key = fake.new_order()["payment_key"]
    await fake.set_fault("500")
    response = await put(api, "success", key)
    assert response.status_code == 500 and "Retry-After" not in response.headers
    assert fake.acknowledged(key) is None
    await fake.set_fault("none")
    assert await listed(api) == [(key, 1)]


async def test_html_is_a_200_that_is_not_json(fake: FakeMarketplace,
                                              api: httpx.AsyncClient) -> None:
    key = fake.new_order()["payment_key"]
    await fake.set_fault("html")
    for response in (await api.get("/orders/get-current"), await put(api, "success", key),
                     await api.get("/orders/get-current", headers={"Authorization": ""})):
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/html")
        assert response.text == MAINTENANCE_PAGE
        with pytest.raises(ValueError):
            response.json()
    assert fake.acknowledged(key) is None


async def test_blackhole_takes_the_request_and_never_answers(
        fake: FakeMarketplace, api: httpx.AsyncClient) -> None:
    key = fake.new_order()["payment_key"]
    await fake.set_fault("blackhole")
    start = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        await api.put(f"/orders/accept/{key}", json={"preparing_time": 30}, timeout=0.3)
    assert time.monotonic() - start >= 0.25
    assert fake.status_of(key) == 1
    (logged,) = fake.calls("PUT", "/orders/accept/")
    assert logged.status == 0 and logged.body == {"preparing_time": 30}
    await fake.set_fault("none")
    assert (await put(api, "accept", key, {"preparing_time": 30})).status_code == 200


async def test_reject_answers_only_the_matching_calls(fake: FakeMarketplace,
                                                      api: httpx.AsyncClient) -> None:
    bad = fake.new_order()["payment_key"]
    good = fake.new_order()["payment_key"]
    await fake.set_fault("reject", method="PUT", path_prefix="/orders/accept/", payment_key=bad)
    refused = await put(api, "accept", bad, {"preparing_time": 30})
    assert (refused.status_code, refused.json()) == (400, {"error": "rejected"})
    assert fake.status_of(bad) == 1
    assert (await put(api, "accept", good, {"preparing_time": 30})).status_code == 200
    assert (await put(api, "success", bad)).status_code == 200
    assert await listed(api) == [(good, 2)]

    await fake.set_fault("reject", status=503, retry_after=2, path_prefix="/orders/success/")
    response = await put(api, "success", good)
    assert (response.status_code, response.headers["Retry-After"]) == (503, "2")
    assert await listed(api) == [(good, 2)]
    with pytest.raises(ValueError, match="reject needs"):
        await fake.set_fault("reject")


async def test_every_request_is_recorded(fake: FakeMarketplace, api: httpx.AsyncClient) -> None:
    key = fake.new_order()["payment_key"]
    await api.get("/orders/get-current")
    await put(api, "accept", key, {"preparing_time": 30})
    await api.put(f"/orders/cancel/{key}", content=b"not json")
    await fake.set_fault("500")
    await put(api, "success", key)
    assert [(r.method, r.path, r.body, r.status) for r in fake.requests] == [
        ("GET", "/orders/get-current", None, 200),
        ("PUT", f"/orders/accept/{key}", {"preparing_time": 30}, 200),
        ("PUT", f"/orders/cancel/{key}", "not json", 400),
        ("PUT", f"/orders/success/{key}", None, 500),
    ]
    times = [r.at for r in fake.requests]
    assert times == sorted(times) and times[-1] <= time.monotonic()
    assert len(fake.calls("PUT")) == 3 and len(fake.calls(path_prefix="/orders/accept/")) == 1


async def test_unknown_fault_mode_is_refused(fake: FakeMarketplace) -> None:
    with pytest.raises(ValueError, match="unknown fault mode"):
        await fake.set_fault("flaky")  # type: ignore[arg-type]


# -- the demo process -----------------------------------------------------------------------


async def test_the_demo_process_serves_the_api_and_takes_control(tmp_path: Path) -> None:
    market = await asyncio.to_thread(FakeMarketplaceProcess(tmp_path, token=TOKEN).start)
    try:
        order = await asyncio.to_thread(market.new_order, courier_type="platform")
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(base_url=market.url, headers=headers) as client:
            data = (await client.get("/orders/get-current")).json()["data"]
            assert data == [order]
            key = order["payment_key"]
            assert (await client.put(f"/orders/success/{key}")).status_code == 200
            await asyncio.to_thread(market.set_status, key, 6, reason_id=4)
            assert [o["status_id"] for o in
                    (await client.get("/orders/get-current")).json()["data"]] == [6]
            await asyncio.to_thread(market.set_fault, "429", retry_after=3)
            response = await client.get("/orders/get-current")
            assert (response.status_code, response.headers["Retry-After"]) == (429, "3")
            await asyncio.to_thread(market.set_fault, "none")
        (described,) = await asyncio.to_thread(market.orders)
        assert described["acknowledged"] == 1
        assert [(h["status_id"], h["by"], h["reason_id"]) for h in described["history"]] == [
            (1, "marketplace", None), (6, "marketplace", 4)]
        requests = await asyncio.to_thread(market.requests)
        assert [r["status"] for r in requests] == [200, 200, 200, 429]
        with pytest.raises(urllib.error.HTTPError) as refused:
            await asyncio.to_thread(market.set_status, key, 3)
        assert refused.value.code == 400
        with pytest.raises(urllib.error.HTTPError) as no_status:
            await asyncio.to_thread(market.control, "POST", f"/orders/{key}/status", {})
        assert no_status.value.code == 400
        with pytest.raises(urllib.error.HTTPError) as missing:
            await asyncio.to_thread(market.set_status, "nope", 6)
        assert missing.value.code == 404
        raw = await asyncio.to_thread(market.control, "POST", "/orders/raw", {"odd": True})
        assert raw == {"added": True}
        full = build_order(4242, payment_key="k-4242", scheduled_date="2026-01-15 18:30:00")
        assert await asyncio.to_thread(market.control, "POST", "/orders", full) == full
        with pytest.raises(urllib.error.HTTPError) as duplicate:
            await asyncio.to_thread(market.control, "POST", "/orders", full)
        assert duplicate.value.code == 400
        with pytest.raises(urllib.error.HTTPError) as bad_mode:
            await asyncio.to_thread(market.set_fault, "flaky")
        assert bad_mode.value.code == 400
        armed = await asyncio.to_thread(market.control, "POST", "/auto-cancel", {"seconds": 60})
        assert armed["listed"] == 3                      # the raw one, 4242, and the cancel
    finally:
        code = await asyncio.to_thread(market.stop)
    assert code == 0
