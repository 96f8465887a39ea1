"""The partner-call sender: sends one destination's durable calls (`edge.store.calls`).

A call is marked done only after a 2xx, so a crash at any point leaves it pending and it is
sent again (calls carry `Idempotency-Key: call-{id}` for partners that honour it). Per
order, only the oldest call not yet done is ever sent. 408, 429, 5xx, time-outs and broken
connections are retried with `Backoff` (full jitter, capped; a `Retry-After` wins, capped
too); every other 4xx parks the call for the operator, which holds its order back until
`retry_parked`. It wakes on the feed's `RecordQueued(destination)`, and otherwise when the
next call falls due or at `poll_interval` (calls written by tools that cannot wake it).

Printing never waits for it: it runs as its own component, and reads and marks calls in
short transactions of its own.

A partner with rules of its own about when a call may go (a marketplace's acknowledgement
must not go out before its connector has seen the order's current status) passes a `Gate`:
asked before each call (send it, keep it and its order back for now, or settle it unsent
because the partner no longer needs it), and told each 2xx answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import httpx
import structlog

from edge.backoff import Backoff
from edge.clock import parse_rfc3339, rfc3339_ms
from edge.component import BaseComponent, Context
from edge.config.secrets import SecretProblem, read_token_file
from edge.feed import RecordQueued
from edge.store import calls, kv
from edge.store.calls import Call
from edge.store.trouble import log_failure

log = structlog.get_logger(__name__)

_RETRYABLE = frozenset({408, 429})
# While a gate keeps calls back, how often they are asked about again without a kick.
HELD_RECHECK = 1.0


@dataclass(frozen=True)
class Verdict:
    """A gate's answer about one call: `send` it, `wait` (it and its order stay back until
    the sender is kicked or HELD_RECHECK passes), or `drop` it (done unsent, `reason` kept)."""

    action: Literal["send", "wait", "drop"]
    reason: str | None = None


SEND = Verdict("send")
WAIT = Verdict("wait")


class Gate(Protocol):
    async def before(self, call: Call) -> Verdict: ...

    async def answered(self, call: Call, status: int, body: bytes) -> None:
        """The partner answered a call with a 2xx (already marked done)."""


@dataclass(frozen=True)
class Destination:
    """Where one partner's calls go."""

    name: str
    url: str                           # base URL; a call's path is appended
    token_file: Path | None = None     # sent as Authorization: Bearer {token}
    timeout: float = 10.0
    backoff_base: float = 1.0
    backoff_max: float = 300.0
    poll_interval: float = 30.0


def retry_after_seconds(value: str | None, now_ts: float) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - now_ts
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


class CallSender(BaseComponent):
    def __init__(self, ctx: Context, destination: Destination, *,
                 transport: httpx.AsyncBaseTransport | None = None,
                 rng: random.Random | None = None, gate: Gate | None = None) -> None:
        self.ctx = ctx
        self.destination = destination
        self._gate = gate
        self.name = f"calls-{destination.name}"
        self._transport = transport
        self._backoff = Backoff(destination.backoff_base, destination.backoff_max,
                                rng=rng or random.Random())
        self._kicked = asyncio.Event()
        self._unsubscribe: Callable[[], None] | None = None
        # Read by the operator's status page and tests.
        self.last_error: str | None = None
        self.sent = 0
        ctx.board.add(self.name, self.status)

    async def status(self) -> dict[str, Any]:
        """This partner's calls, for the operator: how many in each state, the parked ones."""
        name = self.destination.name
        counts, parked = await self.ctx.store.read(lambda c: (
            calls.counts(c, name), calls.listing(c, name, state="parked", limit=50)))
        return {"destination": name, "url": self.destination.url, "calls": counts,
                "sent": self.sent, "last_error": self.last_error,
                "consecutive_failures": self._backoff.failures,
                "parked": [{"id": c.id, "order_id": c.order_id, "method": c.method,
                            "path": c.path, "status_code": c.status_code,
                            "last_error": c.last_error} for c in parked]}

    async def start(self) -> None:
        def queued(change: RecordQueued) -> None:
            if change.destination == self.destination.name:
                self._kicked.set()

        self._unsubscribe = self.ctx.feed.subscribe(RecordQueued, queued)

    async def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()

    def kick(self) -> None:
        self._kicked.set()

    async def run(self) -> None:
        log.info("partner_calls_started", destination=self.destination.name,
                 url=self.destination.url)
        async with httpx.AsyncClient(transport=self._transport,
                                     timeout=httpx.Timeout(self.destination.timeout),
                                     follow_redirects=False) as client:
            while True:
                try:
                    delay = await self._round(client)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a database hiccup must not end the sending
                    log_failure(log, "partner_calls_error", exc,
                                destination=self.destination.name)
                    self.last_error = repr(exc)
                    delay = self._backoff.failed()
                await self._wait(delay)

    async def _wait(self, seconds: float) -> None:
        if seconds <= 0:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._kicked.wait()

    async def _round(self, client: httpx.AsyncClient) -> float:
        """Send what is due; the seconds until something may be worth trying again."""
        name = self.destination.name
        self._kicked.clear()
        moment = self.ctx.clock.now()
        now = rfc3339_ms(moment)
        # No retry is put off longer than the backoff's cap (Retry-After included).
        latest = rfc3339_ms(moment + timedelta(seconds=2 * self.destination.backoff_max))
        batch = await self.ctx.store.read(lambda c: calls.due(c, name, now, latest=latest))
        if batch:
            # Calls are written by applied events, which commit without an fsync. Nothing may
            # reach a partner that a power cut could take back: one durable write first.
            await self.ctx.store.transact(lambda tx: kv.put(tx.conn, "calls_durable_point", now))
        moved = False
        for call in batch:
            if self._gate is not None:
                verdict = await self._gate.before(call)
                if verdict.action == "wait":
                    continue
                if verdict.action == "drop":
                    await self._drop(call, verdict.reason or "not needed any more")
                    moved = True
                    continue
            delay = await self._send(client, call)
            moved = True
            if delay is not None:
                # The partner is not answering well: nothing else goes until it has rested.
                return delay
        if moved:
            return 0.0          # more may have become due behind the heads just sent
        if batch:
            return min(HELD_RECHECK, self.destination.poll_interval)   # all kept back
        upcoming = await self.ctx.store.read(lambda c: calls.next_at(c, name))
        if upcoming is None:
            return self.destination.poll_interval
        wait = (parse_rfc3339(upcoming) - self.ctx.clock.now()).total_seconds()
        if wait > 2 * self.destination.backoff_max:
            wait = 0.0              # stamped before the clock stepped back: due (see above)
        return max(0.05, min(wait, self.destination.poll_interval))

    async def _send(self, client: httpx.AsyncClient, call: Call) -> float | None:
        """One call; None when it is settled (done or parked), else the backoff delay."""
        with structlog.contextvars.bound_contextvars(order_id=call.order_id, call_id=call.id,
                                                     destination=call.destination):
            headers = {"Idempotency-Key": f"call-{call.id}", "User-Agent": "kitchen-edge"}
            token = self._token()
            if token:
                headers["Authorization"] = f"Bearer {token}"
            if call.body is not None:
                headers["Content-Type"] = "application/json"
            url = self.destination.url.rstrip("/") + "/" + call.path.lstrip("/")
            try:
                async with asyncio.timeout(self.destination.timeout * 3):
                    response = await client.request(
                        call.method, url, headers=headers,
                        content=None if call.body is None else call.body.encode())
            except (httpx.HTTPError, TimeoutError, OSError) as exc:
                reason = "overall deadline exceeded" if isinstance(exc, TimeoutError) else (
                    f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
                return await self._retry(call, reason, None, None)
            status = response.status_code
            if 200 <= status < 300:
                at = rfc3339_ms(self.ctx.clock.now())
                await self.ctx.store.transact(
                    lambda tx: calls.mark_done(tx.conn, call.id, status, at), durable=False)
                self._backoff.succeeded()
                self.sent += 1
                log.info("partner_call_done", method=call.method, path=call.path,
                         status=status)
                if self._gate is not None:
                    try:
                        await self._gate.answered(call, status, response.content)
                    except asyncio.CancelledError:
                        raise
                    except Exception:  # the call is done; its follow-up is the gate's own
                        log.exception("partner_call_answer_failed", path=call.path)
                return None
            error = f"HTTP {status}: {response.text[:200]}"
            if status in _RETRYABLE or status >= 500:
                retry_after = retry_after_seconds(response.headers.get("Retry-After"),
                                                  self.ctx.clock.now().timestamp())
                return await self._retry(call, error, status, retry_after)
            await self.ctx.store.transact(lambda tx: calls.park(tx.conn, call.id, error, status))
            self.last_error = error
            log.error("partner_call_parked", method=call.method, path=call.path,
                      status=status, error=error)
            return None

    async def _drop(self, call: Call, reason: str) -> None:
        at = rfc3339_ms(self.ctx.clock.now())
        with structlog.contextvars.bound_contextvars(order_id=call.order_id, call_id=call.id,
                                                     destination=call.destination):
            await self.ctx.store.transact(
                lambda tx: calls.settle_unsent(tx.conn, call.id, reason, at), durable=False)
            log.info("partner_call_dropped", method=call.method, path=call.path, reason=reason)

    async def _retry(self, call: Call, error: str, status: int | None,
                     retry_after: float | None) -> float:
        delay = self._backoff.failed(retry_after)
        self.last_error = error
        at = rfc3339_ms(self.ctx.clock.now() + timedelta(seconds=delay))
        await self.ctx.store.transact(
            lambda tx: calls.retry_later(tx.conn, call.id, error, status, at))
        log.warning("partner_call_retry", method=call.method, path=call.path, status=status,
                    error=error, retry_in=round(delay, 3), failures=self._backoff.failures)
        return delay

    def _token(self) -> str | None:
        path = self.destination.token_file
        if path is None:
            return None
        try:
            return read_token_file(path)     # at each call: a rotated token is used at once
        except SecretProblem as exc:
            log.error("partner_token_unreadable", path=str(path), error=str(exc))
            return None


__all__ = ["SEND", "WAIT", "CallSender", "Destination", "Gate", "Verdict",
           "retry_after_seconds"]
