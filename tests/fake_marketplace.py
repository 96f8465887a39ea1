"""The fake marketplace as a separate process (`python -m edge.connectors.marketplace.fake`),
for end-to-end tests that run the daemon in its own process and drive the marketplace from
outside through its control port."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.procs import FakeServerProcess


@dataclass
class FakeMarketplaceProcess(FakeServerProcess):
    module = ("edge.connectors.marketplace.fake",)
    token_name = "marketplace.token"

    def new_order(self, **options: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.control("POST", "/orders/build", options)
        return result

    def set_status(self, payment_key: str, status_id: int, **options: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.control(
            "POST", f"/orders/{payment_key}/status", {"status_id": status_id, **options})
        return result

    def set_fault(self, mode: str, **options: Any) -> dict[str, Any]:
        """mode: none, down, slow, 429, 500, html, blackhole, reject (see the fake's doc)."""
        return super().set_fault(mode, **options)

    def orders(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.control("GET", "/orders")["data"]
        return result

    def requests(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.control("GET", "/requests")["data"]
        return result
