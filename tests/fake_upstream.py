"""The fake upstream as a separate process (`python -m edge.upstream.fake`), for end-to-end
tests that run the daemon in its own process and want to cut its WAN from outside."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.procs import FakeServerProcess


@dataclass
class FakeUpstreamProcess(FakeServerProcess):
    module = ("edge.upstream.fake",)
    token_name = "upstream.token"

    def set_fault(self, mode: str, **options: Any) -> dict[str, Any]:
        """mode: none, down, 500, 429, slow, blackhole, reject, partial (see edge.upstream.fake)."""
        return super().set_fault(mode, **options)

    def records(self) -> list[dict[str, Any]]:
        """Every record the upstream accepted, as the daemon sent it."""
        result: list[dict[str, Any]] = self.control("GET", "/records")["records"]
        return result

    def state(self, *, ids: bool = False) -> dict[str, Any]:
        result: dict[str, Any] = self.control("GET", "/state?ids=1" if ids else "/state")
        return result
