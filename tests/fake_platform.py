"""The fake delivery platform of seed 004 as a separate process
(`python -m edge.connectors.aggregator.fake_platform serve`), receiving the kitchen's
webhooks, with faults set through its control port; and `Api`, the platform's calls to the
kitchen's aggregator API, for tests that run the daemon in its own process."""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from edge.connectors.aggregator.fake_platform import build_order
from tests.procs import FakeServerProcess

API_TOKEN = "aggregator-test-token"
WEBHOOK_TOKEN = "platform-test-token"


@dataclass
class FakePlatformProcess(FakeServerProcess):
    module = ("edge.connectors.aggregator.fake_platform", "serve")
    token_name = "platform.token"
    extra_args = ("--base-path", "/hooks")
    token: str = WEBHOOK_TOKEN

    def set_fault(self, mode: str, **options: Any) -> dict[str, Any]:
        """none, down, slow, 429, 500, blackhole, reject (see the fake's docstring)."""
        return super().set_fault(mode, **options)

    def requests(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.control("GET", "/requests")["requests"]
        return result

    def state(self) -> dict[str, Any]:
        result: dict[str, Any] = self.control("GET", "/state")
        return result

    def hooks(self, order_id: str | None = None, *, status: int | None = 200
              ) -> list[dict[str, Any]]:
        """The webhooks taken (answered `status`; None: any), for one platform order."""
        return [r for r in self.requests()
                if (order_id is None or r["order_id"] == order_id)
                and (status is None or r["status"] == status)]

    def kinds(self, order_id: str) -> list[str]:
        return [r["kind"] for r in self.hooks(order_id)]

    def wait_hooks(self, order_id: str, kinds: list[str], timeout: float = 20.0, *,
                   resent_ok: bool = False) -> list[Any]:
        """Until the webhooks taken for `order_id` are `kinds` (in this order). With
        `resent_ok`, a webhook sent again with the same body right after itself counts once:
        a daemon killed after sending and before recording it sends it again (the outbox is
        at least once; the seed asks the platform to handle duplicates by order id)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            taken = self.hooks(order_id)
            if resent_ok:
                taken = [h for i, h in enumerate(taken)
                         if i == 0 or (h["kind"], h["body"]) != (taken[i - 1]["kind"],
                                                                 taken[i - 1]["body"])]
            if [h["kind"] for h in taken] == kinds:
                return taken
            if len(taken) > len(kinds):
                break
            time.sleep(0.05)
        raise AssertionError(f"webhooks for {order_id}: {self.kinds(order_id)}, not {kinds}; "
                             f"all: {self.requests()[-8:]}")


class Api:
    """The platform's side: calls to the kitchen's aggregator API (sync, for tests that
    wait on processes)."""

    def __init__(self, base_url: str, token: str = API_TOKEN, *,
                 verify: bool | ssl.SSLContext = True) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.client = httpx.Client(timeout=10, verify=verify)

    def call(self, method: str, path: str, body: Any = None, *, content: bytes | None = None,
             token: str | None = None, headers: dict[str, str] | None = None
             ) -> httpx.Response:
        sent = dict(headers or {})
        token = self.token if token is None else token
        if token:
            sent["Authorization"] = f"Bearer {token}"
        if content is None and body is not None:
            content = json.dumps(body).encode()
            sent.setdefault("Content-Type", "application/json")
        return self.client.request(method, self.base_url + path, content=content,
                                   headers=sent)

    def order(self, body: dict[str, Any]) -> httpx.Response:
        return self.call("POST", "/orders", body)

    def new_order(self, platform_id: str, **options: Any) -> dict[str, Any]:
        return build_order(platform_id, **options)

    def dasher(self, platform_id: str, status: str, **body: Any) -> httpx.Response:
        sent = {"client_order_id": f"ot-{platform_id}", "dasher_status": status,
                "dasher": {"first_name": "Mike", "last_name": "Courier",
                           "phone_number": "+15559876543"}, **body}
        return self.call("POST", f"/orders/{platform_id}/delivery-status", sent)

    def cancel(self, platform_id: str, reason: str = "Customer requested cancellation",
               **body: Any) -> httpx.Response:
        sent = {"store": {"merchant_supplied_id": "store-123"},
                "client_order_id": f"ot-{platform_id}", "reason": reason, **body}
        return self.call("POST", f"/orders/{platform_id}/cancel", sent)

    def close(self) -> None:
        self.client.close()


def wait(check: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what} not reached in {timeout}s")
