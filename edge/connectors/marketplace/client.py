"""Reading a seed 001 marketplace: `GET /orders/get-current` and `GET /orders/cancel-reasons`.

Every way a marketplace can fail to answer becomes one `Unavailable` with a `state` the
operator reads at a glance: `down` (connection refused or broken), `timeout` (no answer in
time, a black hole), `unauthorized` (401/403: the token), `rate_limited` (429, with its
Retry-After), `error` (5xx or another status), `bad_answer` (200 but not the seed's JSON: a
maintenance page, a captive portal). The poller backs off on any of them. The calls back
(accept, cancel, success ...) do not go through here: they are the durable outbox's
(`edge.connectors.calls`).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import structlog

from edge.config.secrets import SecretProblem, read_token_file
from edge.connectors.calls import retry_after_seconds

log = structlog.get_logger(__name__)

# An answer larger than this is not a list of current orders.
MAX_ANSWER_BYTES = 8 * 1024 * 1024


class Unavailable(Exception):
    """The marketplace did not answer usefully; nothing was read."""

    def __init__(self, state: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.state = state
        self.message = message
        self.retry_after = retry_after


class MarketplaceClient:
    def __init__(self, url: str, token_file: Path, *, timeout: float,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self.token_file = token_file
        self.timeout = timeout
        self._client = httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(timeout),
                                         follow_redirects=False)

    async def close(self) -> None:
        await self._client.aclose()

    async def current(self) -> list[Any]:
        """The orders `get-current` lists now (each still to be validated)."""
        return _data_list(await self._get("/orders/get-current"), "get-current")

    async def cancel_reasons(self) -> dict[int, str]:
        """The marketplace's cancel reasons, id to text."""
        entries = _data_list(await self._get("/orders/cancel-reasons"), "cancel-reasons")
        reasons: dict[int, str] = {}
        for entry in entries:
            if isinstance(entry, dict) and type(entry.get("id")) is int:
                reasons[entry["id"]] = str(entry.get("reason") or "")
        if not reasons:
            raise Unavailable("bad_answer", "cancel-reasons listed no reason with an integer id")
        return reasons

    def _token(self) -> str:
        # Read at every request: an operator rotating the token needs no restart.
        try:
            return read_token_file(self.token_file)
        except SecretProblem as exc:
            raise Unavailable("unauthorized", str(exc)) from None

    async def _get(self, path: str) -> Any:
        headers = {"Authorization": f"Bearer {self._token()}", "Accept": "application/json",
                   "User-Agent": "kitchen-edge"}
        try:
            # httpx's time-out is per read; a server that trickles bytes needs a whole bound.
            async with asyncio.timeout(self.timeout * 2):
                response = await self._client.get(self.url + path, headers=headers)
        except (TimeoutError, httpx.TimeoutException):
            raise Unavailable("timeout", f"no answer to GET {path} within "
                                         f"{self.timeout:g}s") from None
        except (httpx.HTTPError, OSError) as exc:
            detail = str(exc) or type(exc).__name__
            raise Unavailable("down", f"GET {path}: {detail}") from None
        status = response.status_code
        if status in (401, 403):
            raise Unavailable("unauthorized", f"GET {path}: HTTP {status}: check token_file")
        if status == 429:
            wait = retry_after_seconds(response.headers.get("Retry-After"), time.time())
            raise Unavailable("rate_limited", f"GET {path}: HTTP 429", wait)
        if status != 200:
            raise Unavailable("error", f"GET {path}: HTTP {status}: {response.text[:120]}")
        if len(response.content) > MAX_ANSWER_BYTES:
            raise Unavailable("bad_answer", f"GET {path}: answer of {len(response.content)} "
                                            "bytes is too large")
        try:
            return json.loads(response.content)
        except ValueError:
            kind = response.headers.get("Content-Type", "no content type").split(";")[0]
            raise Unavailable("bad_answer", f"GET {path}: answered {kind}, not JSON "
                                            "(a maintenance page?)") from None


def _data_list(document: Any, what: str) -> list[Any]:
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        raise Unavailable("bad_answer", f"{what}: the answer has no 'data' list")
    data: list[Any] = document["data"]
    return data


__all__ = ["MarketplaceClient", "Unavailable"]
