"""The outbox sender: pushes outbox records to the upstream whenever it answers (CONTRACT 7).

It runs as its own task and only ever reads the outbox and marks records; the kitchen never
waits for it. A record is marked accepted only after the upstream listed it in a 2xx answer,
so a crash at any point leaves it pending and it is simply sent again (the upstream accepts
an id it has already seen).

Batches are pipelined: up to `max_in_flight` requests are out at once, each holding at most
one record per order, and no order has records in two of them (`outbox.next_batch` is told
which orders are in flight). So an order's records still reach the upstream one at a time in
seq order, while a backlog drains at the upstream's pace rather than at one round trip
(read, POST, mark) per batch. A failed request stops new ones; the others land, then the
sender backs off once.

While the upstream keeps up, a batch that emptied the outbox is followed by the next one no
sooner than `linger` seconds after it started: a ticket's queued, sending and printed states
then mostly meet in the outbox, where the newest supersedes the others before they are sent,
and a busy kitchen's records go in one request (and one write marking them) a second instead
of one per change (issue 12: bytes written per order).

WAN state is judged from the sender's own requests: up when a request got any HTTP answer
(even a 500 proves the link works), down on a connect error, a broken connection or a
timeout. A silently cut link (no FIN, no RST) is caught by httpx's connect/read/write/pool
timeouts, each `upstream.timeout`, and by an overall deadline of DEADLINE_FACTOR x timeout
per request, which also catches an answer dripping in too slowly for the read timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sqlite3
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from functools import partial
from typing import Any, Literal

import httpx
import structlog

from edge.backoff import Backoff
from edge.clock import Clock, SystemClock
from edge.config.models import UpstreamConfig
from edge.config.secrets import TokenFile
from edge.store import outbox
from edge.store.db import Store
from edge.store.outbox import OutboxRecord
from edge.store.trouble import log_failure

log = structlog.get_logger(__name__)

DEADLINE_FACTOR = 3.0
# 4xx answers that say nothing about the records (auth, wrong URL...): parking on them would
# park the whole outbox, so they are retried with backoff and logged loudly instead.
_NOT_THE_RECORDS = frozenset({401, 403, 404, 405, 407, 421})
_RETRYABLE = frozenset({408, 429})
_COMPACT_CHUNK = 2000

AnswerKind = Literal["ok", "retry", "reject", "config"]


@dataclass(slots=True)
class _Answer:
    kind: AnswerKind
    status: int | None = None
    accepted: set[str] = field(default_factory=set)
    retry_after: float | None = None
    error: str = ""
    records: int = 0


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = (when - now).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


class Sender:
    def __init__(
        self,
        store: Store,
        cfg: UpstreamConfig,
        site: str,
        *,
        clock: Clock | None = None,
        on_wan_change: Callable[[bool], None] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        backoff_base: float = 1.0,
        poll_interval: float = 5.0,
        housekeeping_interval: float = 60.0,
        rng: random.Random | None = None,
        max_in_flight: int = 2,
        linger: float = 1.0,
    ) -> None:
        self._store = store
        self._cfg = cfg
        self._site = site
        self._clock: Clock = clock or SystemClock()
        self._on_wan_change = on_wan_change
        self._transport = transport
        self._backoff_base = backoff_base
        # Records written by someone who cannot kick us (the operator's retry-parked) are
        # found by polling this often.
        self._poll_interval = poll_interval
        self._housekeeping_interval = housekeeping_interval
        # Full jitter (towards a server, spreading retriers best); Retry-After wins, capped.
        self._backoff = Backoff(backoff_base, cfg.backoff_max, rng=rng or random.Random())
        self._endpoint = f"{cfg.url}/v1/sites/{site}/records"
        # Parsed once, and the headers built once per token: a drain makes a request every
        # few milliseconds, and httpx would otherwise redo both for each (issue 17).
        self._url = httpx.URL(self._endpoint)
        self._headers: dict[str, str] = {}
        self._headers_token: str | None = None
        self._client: httpx.AsyncClient | None = None
        self._retired: list[httpx.AsyncClient] = []
        # Loading the CA bundle takes 50-80 ms of event loop; the client is rebuilt after
        # every network failure, so build the TLS context once. It also holds about 7 MB
        # (OpenSSL 3 keeps every certificate parsed): a plain-http upstream has none.
        self._ssl: ssl.SSLContext | bool = (httpx.create_ssl_context()
                                            if cfg.url.startswith("https:") else False)
        self._kicked = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._token_file = TokenFile(cfg.token_file, "upstream_token")
        self._last_housekeeping: float | None = None
        self._wan_up: bool | None = None
        self._max_in_flight = max(1, max_in_flight)
        self._linger = linger
        self._flights: set[asyncio.Task[None]] = set()
        self._landed = asyncio.Event()
        # Orders with a record in flight, and records without an order in flight.
        self._busy_orders: set[str] = set()
        self._busy_seqs: set[int] = set()
        # The highest seq a durable commit of ours has covered (see `_launch`).
        self._durable_upto = 0
        # When the last batch started (monotonic), and whether it left nothing behind.
        self._last_start: float | None = None
        self._caught_up = False
        # A failed request's answer, backed off on once the requests out have landed.
        self._setback: _Answer | None = None
        # Read by the health check (edge.web) and the drain benchmark.
        self.last_success_at: datetime | None = None
        self.last_error: str | None = None
        self.records_accepted = 0

    @property
    def consecutive_failures(self) -> int:
        return self._backoff.failures

    @property
    def wan_up(self) -> bool | None:
        return self._wan_up

    def kick(self) -> None:
        """New records were written: send soon, without waiting out a backoff if WAN is up.

        Safe from any thread (the kitchen may kick from the database worker thread).
        """
        loop = self._loop
        if loop is None or loop.is_closed():
            self._kicked.set()
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._kicked.set()
        else:
            loop.call_soon_threadsafe(self._kicked.set)

    async def run(self) -> None:
        """Send until cancelled. Network trouble is logged and retried, never raised."""
        self._loop = asyncio.get_running_loop()
        log.info("upstream_sender_started", endpoint=self._endpoint)
        try:
            while True:
                try:
                    await self._cycle()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    # A database hiccup (disk full, a locked file) must not end syncing for
                    # good: log it and come back later.
                    log_failure(log, "upstream_sender_error", exc)
                    await self._clock.sleep(self._failed(repr(exc), None))
        finally:
            flights = list(self._flights)
            for task in flights:
                task.cancel()
            for task in flights:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self._drop_client()
            log.info("upstream_sender_stopped")

    # -- one round ---------------------------------------------------------------------------

    async def _cycle(self) -> None:
        await self._housekeep_if_due()
        if self._setback is not None:
            # Something failed: let the other requests land (they would most likely fail
            # the same way), then wait once for all of them.
            while self._flights:
                await asyncio.wait(set(self._flights))
            await self._close_retired()
            answer, self._setback = self._setback, None
            await self._back_off(answer)
            return
        if len(self._flights) >= self._max_in_flight:
            await asyncio.wait(set(self._flights), return_when=asyncio.FIRST_COMPLETED)
            return
        await self._pace()
        # Cleared before reading: a kick that lands while we read or send is not lost.
        self._kicked.clear()
        self._landed.clear()
        busy_orders, busy_seqs = frozenset(self._busy_orders), frozenset(self._busy_seqs)
        batch = await self._store.read(
            partial(
                outbox.next_batch,
                max_records=self._cfg.batch_records,
                max_bytes=self._cfg.batch_bytes,
                busy_orders=busy_orders,
                busy_seqs=busy_seqs,
            )
        )
        if not batch:
            await self._wait_landing(self._poll_interval)
            return
        await self._launch(batch)

    async def _pace(self) -> None:
        """While the upstream keeps up, batches start at most one per `linger` seconds."""
        if not self._caught_up or self._last_start is None or self._linger <= 0:
            return
        wait = self._last_start + self._linger - self._clock.monotonic()
        if wait > 0:
            await self._clock.sleep(wait)

    async def _wait_landing(self, poll: float) -> None:
        """Until a request lands, a kick, or `poll` seconds."""
        if self._landed.is_set() or self._kicked.is_set():
            return
        waits: set[asyncio.Future[Any]] = {
            asyncio.ensure_future(self._landed.wait()),
            asyncio.ensure_future(self._kicked.wait()),
            asyncio.ensure_future(self._clock.sleep(poll)),
        }
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
            for task in waits:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _launch(self, batch: list[OutboxRecord]) -> None:
        # Applied events are committed without an fsync (docs/architecture.md). Nothing may
        # leave the box that a power cut could take back: its seq and record_id would be
        # reused for something else. One durable write makes everything committed before it
        # durable too, so it is needed only when the batch holds a record written after the
        # last one.
        if max(r.seq for r in batch) > self._durable_upto:
            at = self._clock.now()
            top = await self._store.transact(lambda tx: outbox.make_durable_point(tx.conn, at))
            self._durable_upto = max(self._durable_upto, top)
        full = len(batch) >= self._cfg.batch_records or (
            sum(len(r.wire_json) for r in batch) * 2 > self._cfg.batch_bytes)
        self._last_start = self._clock.monotonic()
        self._caught_up = False
        for record in batch:
            if record.order_id is None:
                self._busy_seqs.add(record.seq)
            else:
                self._busy_orders.add(record.order_id)
        task = asyncio.create_task(self._fly(batch, full))
        self._flights.add(task)

    async def _fly(self, batch: list[OutboxRecord], full: bool) -> None:
        tally: list[int] = []
        try:
            try:
                answer = await self._deliver(batch, tally)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The records stay pending: a failed mark only means they go again.
                log_failure(log, "upstream_sender_error", exc)
                answer = _Answer("retry", error=repr(exc))
        finally:
            # Only now, with the answer marked, may the next record of these orders go.
            for record in batch:
                if record.order_id is None:
                    self._busy_seqs.discard(record.seq)
                else:
                    self._busy_orders.discard(record.order_id)
            task = asyncio.current_task()
            if task is not None:
                self._flights.discard(task)
            self._landed.set()
        if answer is None:
            self._backoff.succeeded()
            # Everything there was went and was taken: the upstream keeps up.
            if not full and not self._flights and sum(tally) == len(batch):
                self._caught_up = True
            return
        answer.records = len(batch)
        if self._setback is None or (answer.retry_after or 0.0) > (
                self._setback.retry_after or 0.0):
            self._setback = answer

    async def _back_off(self, answer: _Answer) -> None:
        delay = self._failed(answer.error, answer.retry_after)
        log.info(
            "upstream_backoff", delay_s=round(delay, 3), status=answer.status,
            error=answer.error, failures=self.consecutive_failures, records=answer.records,
        )
        # New records cut a backoff short only while the link answers and the upstream set
        # no Retry-After; a floor keeps a busy kitchen from turning kicks into a hammering.
        if self._wan_up and answer.retry_after is None:
            self._kicked.clear()
            floor = min(delay, self._backoff_base)
            await self._clock.sleep(floor)
            await self._wait(delay - floor, kickable=True)
        else:
            await self._clock.sleep(delay)

    def _failed(self, error: str, retry_after: float | None) -> float:
        """Count a failure; the seconds to wait before the next attempt."""
        self.last_error = error
        if retry_after is not None and retry_after > self._cfg.backoff_max:
            log.warning("upstream_retry_after_capped", retry_after_s=retry_after,
                        backoff_max_s=self._cfg.backoff_max)
        return self._backoff.failed(retry_after)

    async def _wait(self, seconds: float, *, kickable: bool) -> None:
        if seconds <= 0:
            return
        if not kickable:
            await self._clock.sleep(seconds)
            return
        if self._kicked.is_set():
            return
        sleeper = asyncio.ensure_future(self._clock.sleep(seconds))
        kicked = asyncio.ensure_future(self._kicked.wait())
        try:
            await asyncio.wait({sleeper, kicked}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, kicked):
                task.cancel()
            for task in (sleeper, kicked):
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    # -- delivering one batch ----------------------------------------------------------------

    async def _deliver(self, batch: Sequence[OutboxRecord],
                       tally: list[int] | None = None) -> _Answer | None:
        """Send a batch; None when it made progress, else the answer to back off on.
        `tally` gets the count of every mark of accepted records."""
        answer = await self._post(batch)
        if answer.kind == "ok":
            done = await self._accept(batch, answer.accepted, tally)
            if done:
                return None
            answer.error = "upstream accepted none of the batch"
            return answer
        if answer.kind == "reject":
            log.warning("upstream_rejected_batch", status=answer.status, records=len(batch),
                        error=answer.error)
            return await self._isolate(batch, answer, tally)
        await self._write(partial(outbox.mark_failed_seqs, seqs=[r.seq for r in batch],
                                  error=answer.error))
        return answer

    async def _isolate(self, rejected: Sequence[OutboxRecord], answer: _Answer,
                       tally: list[int] | None = None) -> _Answer | None:
        """Bisect a refused group down to the records at fault; park those, deliver the rest.

        A batch holds at most one record per order, so its halves can go in any order
        without breaking per-order sequence.
        """
        if len(rejected) == 1:
            await self._park(rejected[0], answer)
            return None
        middle = len(rejected) // 2
        for half in (rejected[:middle], rejected[middle:]):
            reply = await self._post(half)
            if reply.kind == "ok":
                await self._accept(half, reply.accepted, tally)
            elif reply.kind == "reject":
                outcome = await self._isolate(half, reply, tally)
                if outcome is not None:
                    return outcome
            else:
                await self._write(partial(outbox.mark_failed_seqs, seqs=[r.seq for r in half],
                                          error=reply.error))
                return reply
        return None

    async def _park(self, record: OutboxRecord, answer: _Answer) -> None:
        error = f"HTTP {answer.status}: {answer.error}"
        await self._write(partial(outbox.park_seqs, seqs=[record.seq], error=error,
                                  at=self._clock.now()))
        log.error("upstream_record_parked", record_id=record.record_id, kind=record.kind,
                  order_id=record.order_id, seq=record.seq, status=answer.status,
                  error=answer.error)

    async def _accept(self, batch: Sequence[OutboxRecord], accepted: set[str],
                      tally: list[int] | None = None) -> int:
        ids = [r.seq for r in batch if r.record_id in accepted]
        if tally is not None:
            tally.append(len(ids))
        if not ids:
            return 0
        now = self._clock.now()
        # No fsync of its own: lost to a power cut, these records are sent again, and the
        # upstream accepts an id it has seen before (CONTRACT section 7).
        await self._write(partial(outbox.mark_accepted_seqs, seqs=ids, at=now),
                          durable=False)
        self.last_success_at = now
        self.records_accepted += len(ids)
        return len(ids)

    async def _write(self, fn: Callable[[sqlite3.Connection], object], *,
                     durable: bool = True) -> None:
        await self._store.transact(lambda tx: fn(tx.conn), durable=durable)

    # -- HTTP --------------------------------------------------------------------------------

    async def _post(self, records: Sequence[OutboxRecord]) -> _Answer:
        token = self._token_file.get()
        if token is None:
            return _Answer("config", error=self._token_file.problem or "no token")
        payload = ('{"records":[' + ",".join([r.wire_json for r in records]) + "]}").encode()
        if token != self._headers_token:
            self._headers_token = token
            self._headers = {
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
                "User-Agent": "kitchen-edge",
            }
        client = self._get_client()
        try:
            async with asyncio.timeout(self._cfg.timeout * DEADLINE_FACTOR):
                response = await client.post(self._url, content=payload, headers=self._headers)
        except (httpx.HTTPError, TimeoutError, OSError) as exc:
            reason = type(exc).__name__ if not str(exc) else f"{type(exc).__name__}: {exc}"
            if isinstance(exc, TimeoutError):
                reason = "overall deadline exceeded"
            # The pooled connection may be half dead; start the next request on a fresh one.
            # The old client is closed once no request is out on it: closing it now would
            # break the other requests in flight.
            self._retire_client(client)
            if len(self._flights) <= 1:
                await self._close_retired()
            self.last_error = reason
            self._set_wan(False, reason)
            return _Answer("retry", error=reason)
        self._set_wan(True, f"HTTP {response.status_code}")
        return self._classify(response)

    def _classify(self, response: httpx.Response) -> _Answer:
        status = response.status_code
        if 200 <= status < 300:
            try:
                data = json.loads(response.content)
                accepted = data["accepted"]
                if not isinstance(accepted, list):
                    raise TypeError("accepted is not a list")
                ids = {a for a in accepted if isinstance(a, str)}
            except (ValueError, KeyError, TypeError) as exc:
                return _Answer("retry", status, error=f"unreadable answer: {exc}")
            return _Answer("ok", status, accepted=ids)
        text = response.text[:300]
        if status in _RETRYABLE or status >= 500:
            retry_after = parse_retry_after(response.headers.get("Retry-After"),
                                            self._clock.now())
            return _Answer("retry", status, retry_after=retry_after, error=f"HTTP {status}")
        if 400 <= status < 500 and status not in _NOT_THE_RECORDS:
            return _Answer("reject", status, error=text)
        log.error("upstream_refuses_site", status=status, endpoint=self._endpoint, answer=text,
                  hint="check upstream.url and the token file")
        return _Answer("config", status, error=f"HTTP {status}: {text}")

    def _get_client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                transport=self._transport,
                timeout=httpx.Timeout(self._cfg.timeout),
                limits=httpx.Limits(max_connections=self._max_in_flight + 1,
                                    max_keepalive_connections=self._max_in_flight),
                follow_redirects=False,
                verify=self._ssl,
            )
        return self._client

    def _retire_client(self, client: httpx.AsyncClient) -> None:
        # A transport handed in by the caller is theirs to close, and cannot be reopened.
        if self._transport is not None or client is not self._client:
            return
        self._client = None
        self._retired.append(client)

    async def _close_retired(self) -> None:
        retired, self._retired = self._retired, []
        for client in retired:
            with contextlib.suppress(Exception):
                await client.aclose()

    async def _drop_client(self) -> None:
        if self._client is not None:
            self._retire_client(self._client)
        await self._close_retired()

    def _set_wan(self, up: bool, reason: str) -> None:
        if up == self._wan_up:
            return
        self._wan_up = up
        if up:
            log.info("upstream_wan_up", reason=reason)
        else:
            log.warning("upstream_wan_down", reason=reason)
        if self._on_wan_change is not None:
            try:
                self._on_wan_change(up)
            except Exception:
                log.exception("upstream_wan_callback_failed")

    # -- housekeeping ------------------------------------------------------------------------

    async def _housekeep_if_due(self) -> None:
        now_mono = self._clock.monotonic()
        last = self._last_housekeeping
        if last is not None and now_mono - last < self._housekeeping_interval:
            return
        self._last_housekeeping = now_mono
        await self.housekeep()

    async def housekeep(self) -> None:
        """Compact what is past retention, then hold the disk budget."""
        cutoff = self._clock.now() - timedelta(hours=self._cfg.retention_hours)
        total = 0
        while True:
            # Small transactions: the kitchen's writer is never held for long.
            touched = await self._store.transact(
                lambda tx: outbox.compact(tx.conn, older_than=cutoff, limit=_COMPACT_CHUNK))
            total += touched
            if touched < _COMPACT_CHUNK:
                break
        if total:
            log.info("outbox_compacted", rows=total)
        budget = int(self._cfg.disk_budget_mb * 1024 * 1024)
        await self._store.transact(
            lambda tx: outbox.enforce_budget(tx.conn, budget_bytes=budget))
