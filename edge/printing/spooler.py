"""The spooler: one worker per printer, so a dead printer never holds up the others.

A worker serves the stations whose primary printer it is, and, once a station's primary has
been down for `failover_after`, that station's jobs too when it is the backup. Job states
live in SQLite: queued -> sending -> printed, or -> unconfirmed when the printer took bytes
of the ticket without confirming them (docs/architecture.md, "What a printer may hold"):

- No byte of a ticket is written before the printer answered "ready" on that connection
  (the transport's `send` asks first). Nothing written: the job goes back unmarked.
- A ticket whose bytes may be in a printer is never written into that printer again. If the
  printer said "offline" behind it (paper ran out under the ticket), it is confirmed printed
  the moment the same connection says ready again: the printer's buffer printed it. If it
  is not confirmed within `unconfirmed_failover_after`, one copy marked MAY BE DUPLICATE may
  print on another printer of the station (the backup: BACKUP FROM). With no other printer
  it stays unconfirmed, on the printer's state topic and in `kitchen-edge printers list`,
  for an operator's reprint.
- A printer that cannot print is retried with capped, jittered exponential backoff: new jobs
  do not make it try sooner. Where the printer pushes its status (Automatic Status Back) a
  fault clearing is noticed at once; otherwise at the next retry, `printing.retry_max` at
  the latest. Its state changes are logged, one line each, not its attempts.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

import structlog

from edge import crashpoints
from edge.backoff import Backoff
from edge.clock import Clock, rfc3339
from edge.config.models import Config, PrinterConfig
from edge.feed import Feed, PrinterStateChanged
from edge.orders import acceptance
from edge.orders import printjobs as jobs
from edge.printing.render import render_ticket
from edge.printing.status import PrinterStatus
from edge.printing.transport import (
    Delivery,
    NotReady,
    Outcome,
    PrinterUnavailable,
    Transport,
)
from edge.printing.transports import AddressLookup, make_transport
from edge.store import Priority, Store, registry
from edge.store import jobs as job_rows
from edge.store.trouble import StorageTrouble

log = structlog.get_logger(__name__)


# How often an idle, ready printer is asked for its state (one cheap round trip on an open
# connection): the published state stays fresh, and a printer switched off is noticed.
IDLE_POLL = 2.0
# The scheduler's longest sleep: scheduled tickets and unconfirmed copies are let go on time.
SCHEDULER_TICK = 1.0


@dataclass
class PrinterHealth:
    state: str = "unknown"
    since: float = 0.0
    since_wall: str = ""
    down_since: float | None = None   # monotonic; None while the printer can print
    detail: str | None = None

    @property
    def ready(self) -> bool:
        return self.state == "online"


@dataclass
class Worker:
    printer: PrinterConfig
    transport: Transport
    primary_for: list[str]
    backup_for: dict[str, str]        # station -> its primary printer id
    backoff: Backoff
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    # Woken for a job of a station it prints first: the next claim need not look first.
    claim_now: bool = False
    health: PrinterHealth = field(default_factory=PrinterHealth)
    last_published: dict[str, object] | None = None
    retry_in: float = 0.0             # seconds to the next attempt while it cannot print
    # Tickets HELD in this printer's buffer: job_key -> the connection that carried them.
    held: dict[str, int] = field(default_factory=dict)


class Claim(Enum):
    """What a worker's try at the next ticket came to."""

    PRINTED = "printed"       # a ticket went (or was handled: failed, unconfirmed, not sent)
    NONE = "none"             # nothing this printer may take
    REFUSED = "refused"       # the disk refused the claim: nothing was sent


@dataclass
class Unconfirmed:
    printer_id: str
    station_id: str
    since: float                      # monotonic


class Spooler:
    def __init__(self, cfg: Config, store: Store, clock: Clock, feed: Feed, *,
                 mdns_lookup: AddressLookup | None = None,
                 transports: dict[str, Transport] | None = None) -> None:
        self.cfg = cfg
        self.store = store
        self.clock = clock
        # Printer states go to the feed directly; what a job does goes with its transaction.
        self.feed = feed
        self.workers: dict[str, Worker] = {}
        self.printed = 0
        # Jobs delivered, not confirmed, waiting for their copy's turn.
        self.unconfirmed: dict[str, Unconfirmed] = {}
        # Workers between "about to claim" and "ticket done": a claim is a transaction on
        # another thread, so shutdown must wait for this, not for a job state.
        self._busy = 0
        self._recovered = True        # False while a crash's jobs wait to be recovered
        self._stopping = False
        self._idle = asyncio.Event()
        self._idle.set()
        # Printed marks on their way (not awaited by the worker; see `_print_claimed`).
        self._marks: set[asyncio.Task[None]] = set()
        timing = cfg.printing
        for printer in cfg.printers:
            transport = (transports or {}).get(printer.id) or make_transport(
                printer, cfg, mdns_lookup)
            self.workers[printer.id] = Worker(
                printer=printer,
                transport=transport,
                primary_for=[s.id for s in cfg.stations if s.printer == printer.id],
                backup_for={s.id: s.printer for s in cfg.stations if s.backup == printer.id},
                backoff=Backoff(base=min(0.5, timing.retry_max), cap=timing.retry_max,
                                floor=0.5),
            )

    def kick(self, station_id: str | None = None) -> None:
        """Wake the workers that may print a job of `station_id` (its primary and its backup;
        every worker when None)."""
        for worker in self.workers.values():
            if station_id is None or station_id in worker.primary_for \
                    or station_id in worker.backup_for:
                worker.claim_now |= station_id is not None and station_id in worker.primary_for
                worker.wake.set()

    async def wait_idle(self) -> None:
        """Stop claiming jobs, then wait until no ticket is on its way to a printer.

        After this, cancelling run() cannot cut a ticket whose bytes are already written
        (which the next start would print again as MAY BE DUPLICATE) nor leave a freshly
        claimed job in `sending`."""
        self._stopping = True
        await self._idle.wait()

    async def recover(self) -> None:
        try:
            keys = await self.store.transact(jobs.recover_after_crash)
        except StorageTrouble as exc:
            # Started on a full disk: the rest of the daemon comes up (and says so); the
            # workers wait in run() until this is written, so nothing left `sending` by the
            # crash is touched before it is marked MAY BE DUPLICATE.
            log.error("jobs_not_recovered_yet", storage=exc.kind)
            self._recovered = False
            return
        self._recovered = True
        for key in keys:
            log.warning("job_requeued_after_crash", job_key=key, mark="MAY BE DUPLICATE")
        waiting = await self.store.read(job_rows.unconfirmed_jobs)
        now = self.clock.monotonic()
        for job in waiting:
            # The connection that carried them is gone with the old process: they can no
            # longer be confirmed, only copied (from now, after the usual wait).
            self.unconfirmed[job.job_key] = Unconfirmed(job.printer_id, job.station_id, now)
        if waiting:
            log.warning("jobs_unconfirmed_at_start", jobs=[j.job_key for j in waiting])

    async def run(self) -> None:
        while not self._recovered:
            await self.store.disk.wait_ok()
            await self.recover()
        async with asyncio.TaskGroup() as group:
            for worker in self.workers.values():
                group.create_task(self._work(worker), name=f"printer-{worker.printer.id}")
            group.create_task(self._scheduler(), name="scheduler")

    async def close(self) -> None:
        for worker in self.workers.values():
            await worker.transport.close()

    # -- scheduling --------------------------------------------------------------------

    async def _scheduler(self) -> None:
        while True:
            try:
                await self._schedule()
            except StorageTrouble as exc:
                # What is due is let go once the disk takes writes again.
                log.error("scheduler_waiting_for_storage", storage=exc.kind)
                await self.store.disk.wait_ok()

    async def _schedule(self) -> None:
        """One pass of the scheduler, then its sleep."""
        now = self.clock.now()
        released = await self.store.transact(functools.partial(jobs.release_due, now=now))
        if released:
            for key in released:
                log.info("job_released", job_key=key, why="scheduled time reached")
            self.kick()
        await self._release_copies()
        await self._remind()
        due = await self.store.read(jobs.next_due)
        wait = SCHEDULER_TICK if due is None else max(
            0.05, min(SCHEDULER_TICK, (due - now).total_seconds()))
        await self.clock.sleep(wait)

    async def _remind(self) -> None:
        """Orders nobody answered (accept or reject): one ATTENTION ticket each."""
        after = timedelta(seconds=self.cfg.acceptance.attention_after)
        station, now = self.cfg.default_station, self.clock.now()
        # A read first: most ticks nobody is waiting, and the writer is left alone.
        restamp = self.clock.restamp
        waiting = await self.store.read(lambda c: acceptance.waiting(c, now, restamp))
        if not any(w.waited_s >= after.total_seconds() and not w.reminded for w in waiting):
            return
        made = await self.store.transact(
            lambda tx: acceptance.remind(tx, now, after, station, restamp))
        for key in made:
            log.warning("order_waiting_for_acceptance", job_key=key,
                        after_s=self.cfg.acceptance.attention_after)
        if made:
            self.kick()

    def _station_printers(self, station_id: str) -> list[str]:
        for station in self.cfg.stations:
            if station.id == station_id:
                return [p for p in (station.printer, station.backup) if p is not None]
        return []

    async def _release_copies(self) -> None:
        limit = self.cfg.printing.unconfirmed_limit
        now = self.clock.monotonic()
        for key, waiting in list(self.unconfirmed.items()):
            if now - waiting.since < limit:
                continue
            printers = self._station_printers(waiting.station_id)
            went = await self.store.transact(functools.partial(
                jobs.release_copy, job_key=key, printers=printers, now=self.clock.now()))
            # Only once that is written: a disk refusing it leaves the copy for the next pass.
            self.unconfirmed.pop(key, None)
            if went is None:
                log.warning("ticket_unconfirmed_no_copy", job_key=key,
                            printer_id=waiting.printer_id,
                            hint="no other printer may take it, or the order was called off; "
                                 "reprint it if the kitchen did not get it")
            else:
                log.warning("ticket_unconfirmed_copy_released", job_key=key,
                            printer_id=waiting.printer_id, state=went,
                            after_s=round(now - waiting.since, 1))
                self.kick()
            worker = self.workers.get(waiting.printer_id)
            if worker is not None:
                await self._publish_state(worker)

    # -- printing ----------------------------------------------------------------------

    def _serving(self, worker: Worker) -> list[str]:
        stations = list(worker.primary_for)
        threshold = self.cfg.printing.failover_after
        now = self.clock.monotonic()
        for station, primary in worker.backup_for.items():
            health = self.workers[primary].health if primary in self.workers else None
            if health and health.down_since is not None and now - health.down_since >= threshold:
                stations.append(station)
        return stations

    def _copies_for(self, worker: Worker) -> list[str]:
        """Stations whose marked copies this printer may take: those it backs up, and those
        it is the primary of (a copy of a ticket its backup holds)."""
        return [*worker.backup_for, *worker.primary_for]

    @staticmethod
    def _backups(worker: Worker) -> dict[str, str]:
        """Station -> the printer a ticket printed here is BACKUP FROM."""
        return {s: p for s, p in worker.backup_for.items() if s not in worker.primary_for}

    async def _publish_state(self, worker: Worker) -> None:
        printer_id, stations = worker.printer.id, worker.primary_for
        queued, unconfirmed = await self.store.read(lambda c: (
            job_rows.queued_count(c, stations), job_rows.unconfirmed_on(c, printer_id)))
        health = worker.health
        change = PrinterStateChanged(printer_id, health.state, health.since_wall, queued,
                                     tuple(unconfirmed), health.detail or None)
        body = change.body()
        if body != worker.last_published:
            worker.last_published = body
            self.feed.publish([change])

    async def _set_health(self, worker: Worker, state: str, detail: str | None) -> None:
        health = worker.health
        now = self.clock.monotonic()
        if state == "online":
            health.down_since = None
            detail = None
        elif health.down_since is None:
            health.down_since = now
        if state != health.state:
            health.state, health.since, health.detail = state, now, detail
            health.since_wall = rfc3339(self.clock.now())
            log.info("printer_state", printer_id=worker.printer.id, state=state, detail=detail)
            printer_id, since = worker.printer.id, health.since_wall
            try:
                await self.store.transact(lambda tx: registry.set_printer_state(
                    tx.conn, printer_id, state, since, detail))
            except StorageTrouble as exc:
                # A record for the operator's tools, not for printing: the state still goes
                # out on MQTT, and a queued ticket still gets its chance to be claimed.
                log.warning("printer_state_not_stored", printer_id=printer_id, state=state,
                            storage=exc.kind)
        await self._publish_state(worker)
        # A primary going down may hand its stations to a backup after failover_after.
        if state != "online":
            for other in self.workers.values():
                if worker.printer.id in other.backup_for.values():
                    other.wake.set()

    async def _failed(self, worker: Worker, state: str, detail: str | None) -> None:
        """An attempt found the printer unable to print: no new attempt before the backoff."""
        worker.retry_in = worker.backoff.failed()
        await self._set_health(worker, state, detail)

    async def _check(self, worker: Worker) -> PrinterStatus | None:
        """Ask the printer; on "ready", confirm what its buffer held."""
        try:
            status = await worker.transport.status()
        except PrinterUnavailable as exc:
            await self._failed(worker, "offline", exc.reason)
            return None
        if not status.ready:
            await self._failed(worker, status.state, None)
            return status
        worker.backoff.succeeded()
        await self._confirm_held(worker)
        await self._set_health(worker, "online", None)
        return status

    async def _confirm_held(self, worker: Worker) -> None:
        generation = worker.transport.generation
        keys = [k for k, g in worker.held.items() if g == generation]
        # Held on a connection that is gone: no longer knowable; their copy will come.
        worker.held.clear()
        if not keys:
            return
        now = self.clock.now()
        printer_id = worker.printer.id
        # The order's records and timeline change with the confirmation, in its
        # transaction: published from the feed like a print.
        done = await self.store.disk.patiently(
            lambda: self.store.transact(lambda tx: jobs.confirm(tx, keys, printer_id, now)),
            what="confirm held tickets")
        for key, order_id, _timeline in done:
            self.unconfirmed.pop(key, None)
            self.printed += 1
            log.info("ticket_confirmed_after_fault", job_key=key, order_id=order_id,
                     printer_id=printer_id)

    async def _watch_or_wake(self, worker: Worker, seconds: float) -> PrinterStatus | None:
        """Up to `seconds`, until the printer pushes a status (returned) or a job wakes the
        worker (None, wake set). Measured on the event loop's monotonic clock."""
        loop = asyncio.get_running_loop()
        until = loop.time() + seconds
        woke = asyncio.ensure_future(worker.wake.wait())
        pushed: asyncio.Future[PrinterStatus | None] | None = None
        try:
            while (left := until - loop.time()) > 0 and not woke.done():
                if pushed is None:
                    pushed = asyncio.ensure_future(worker.transport.watch(left))
                waiting: set[asyncio.Future[Any]] = {woke} if pushed.done() else {woke, pushed}
                await asyncio.wait(waiting, timeout=left, return_when=asyncio.FIRST_COMPLETED)
                if pushed.done() and not woke.done():
                    status = None if pushed.cancelled() or pushed.exception() else pushed.result()
                    if status is not None:
                        return status
                    # Nothing pushed, or a transport that cannot push: only a job or the
                    # deadline ends the wait now.
        finally:
            for task in (woke, pushed):
                if task is not None and not task.done():
                    task.cancel()
            await asyncio.gather(*(t for t in (woke, pushed) if t is not None),
                                 return_exceptions=True)
        return None

    async def _wait_down(self, worker: Worker) -> None:
        """Until the next attempt is due. A printer that pushes its status cuts the wait
        short when it says it can print; new jobs do not (they would hammer a dead printer),
        they only refresh the queued count on the state topic."""
        loop = asyncio.get_running_loop()
        until = loop.time() + worker.retry_in
        while (left := until - loop.time()) > 0:
            pushed = await self._watch_or_wake(worker, left)
            if pushed is not None and pushed.ready:
                return
            if worker.wake.is_set():
                worker.wake.clear()
                await self._publish_state(worker)

    async def _work(self, worker: Worker) -> None:
        printed_last = False
        while True:
            if self._stopping:
                # Shutting down or reloading: claim nothing more, wait to be cancelled.
                await asyncio.Event().wait()
            if not worker.health.ready:
                await self._wait_down(worker)
                if self._stopping:
                    continue
                status = await self._check(worker)
                if status is None or not status.ready:
                    continue
            # Cleared before looking, so a job queued while we look still wakes us.
            worker.wake.clear()
            stations = self._serving(worker)
            copies = self._copies_for(worker)
            # Right after a ticket, or woken for a job of a station it prints first: straight
            # to the claim, which finds the job itself (one trip through the database, and
            # the claim shares the printed mark's commit). Otherwise (a poll, a wake for a
            # station it only backs up) a look on the reader first: an empty claim is a
            # write on the single writer, at the print path's priority.
            straight, worker.claim_now = printed_last or worker.claim_now, False
            if not straight and await self.store.read(functools.partial(
                    job_rows.next_queued, printer_id=worker.printer.id, stations=stations,
                    copies_for=copies)) is None:
                printed_last = False
                await self._idle_wait(worker)
                continue
            outcome = await self._print_one(worker, stations, copies)
            printed_last = outcome is Claim.PRINTED
            if outcome is Claim.REFUSED:
                # The claim was refused (the disk): wait for the disk, not busy, so a
                # shutdown meanwhile need not wait for us.
                await self.store.disk.wait_ok()
            elif outcome is Claim.NONE:
                await self._idle_wait(worker)

    async def _idle_wait(self, worker: Worker) -> None:
        """Idle: wake at once for new jobs, ask the printer now and then."""
        await self._watch_or_wake(worker, IDLE_POLL)
        if not worker.wake.is_set():
            await self._check(worker)

    async def _print_one(self, worker: Worker, stations: list[str],
                         copies: list[str]) -> Claim:
        """Claim and print the next ticket this printer may take."""
        if self._stopping:
            return Claim.NONE
        self._busy_begin()
        try:
            return await self._claim_and_print(worker, stations, copies)
        finally:
            self._busy_end()

    def _busy_begin(self) -> None:
        self._busy += 1
        self._idle.clear()

    def _busy_end(self) -> None:
        self._busy -= 1
        if not self._busy:
            self._idle.set()


    async def _claim_and_print(self, worker: Worker, stations: list[str],
                               copies: list[str]) -> Claim:
        now = self.clock.now()
        backups = self._backups(worker)
        printer = worker.printer
        try:
            claimed = await self.store.transact(
                lambda tx: jobs.claim(tx, stations, printer.id, backups, now,
                                     self.cfg.printing.late_after, copies,
                                     self.clock.restamp),
                priority=Priority.PRINT)
        except StorageTrouble as exc:
            # Never a ticket without a durable claim (a crash would print it again, silently):
            # it waits, queued, and the kitchen is told why (the log, the edge's state).
            log.error("ticket_not_claimed", printer_id=printer.id, storage=exc.kind,
                      hint="tickets wait until the disk takes writes again")
            return Claim.REFUSED
        if claimed is None:
            return Claim.NONE
        # Everything logged while this ticket is on its way (the transport's lines too)
        # names the job, its order and the printer.
        with structlog.contextvars.bound_contextvars(
                job_key=claimed.job_key, order_id=claimed.order_id, printer_id=printer.id):
            await self._print_claimed(worker, claimed)
        return Claim.PRINTED

    async def _print_claimed(self, worker: Worker, claimed: jobs.Claimed) -> None:
        printer = worker.printer
        log_ = log.bind(job_key=claimed.job_key, order_id=claimed.order_id,
                        printer_id=printer.id)
        try:
            data = render_ticket(claimed.ticket, columns=printer.columns,
                                 profile=printer.profile, codepage=printer.codepage)
        except Exception as exc:  # a rendering bug must not stop the kitchen
            log_.exception("ticket_render_failed")
            why, at = f"render failed: {exc}", self.clock.now()
            await self.store.disk.patiently(
                lambda: self.store.transact(lambda tx: jobs.fail(tx, claimed, why, at),
                                            priority=Priority.PRINT),
                what="ticket failed")
            return
        try:
            delivery = await worker.transport.send(data)
        except PrinterUnavailable as exc:
            # Not a byte left: the job goes back as it was, unmarked.
            reason = exc.reason
            await self.store.disk.patiently(
                lambda: self.store.transact(lambda tx: jobs.unclaim(tx, claimed, reason),
                                            durable=False, priority=Priority.PRINT),
                what="ticket not sent")
            state = exc.status.state if isinstance(exc, NotReady) else "offline"
            log_.debug("ticket_not_sent", reason=reason)
            await self._failed(worker, state, None if isinstance(exc, NotReady) else reason)
            return
        crashpoints.reached("after_send")
        if delivery.outcome is not Outcome.CONFIRMED:
            await self._unconfirmed(worker, claimed, delivery, log_)
            return
        done = self.clock.now()
        # The printed mark is not waited for: the worker goes on to claim the next ticket,
        # and the mark shares that claim's transaction. Shutdown still waits for it (busy).
        # It waits for the disk if it must (a crash meanwhile prints the ticket again
        # marked MAY BE DUPLICATE, never silently).
        self._busy_begin()
        mark = asyncio.get_running_loop().create_task(
            self._mark_printed(claimed, done, len(data), log_), name="printed-mark")
        self._marks.add(mark)
        mark.add_done_callback(self._marks.discard)

    async def _mark_printed(self, claimed: jobs.Claimed, done: datetime, size: int,
                            log_: Any) -> None:
        try:
            await self.store.disk.patiently(
                lambda: self.store.transact(lambda tx: jobs.printed(tx, claimed, done),
                                            durable=False, priority=Priority.PRINT),
                what="ticket printed")
        except Exception as exc:
            # Left `sending`: the next start prints it again marked MAY BE DUPLICATE.
            log_.error("ticket_printed_mark_failed", error=repr(exc))
        else:
            self.printed += 1
            log_.info("ticket_printed", kind=claimed.ticket.kind, station=claimed.station_id,
                      backup_from=claimed.backup_from, bytes=size)
        finally:
            self._busy_end()

    async def _unconfirmed(self, worker: Worker, claimed: jobs.Claimed, delivery: Delivery,
                           log_: Any) -> None:
        reason = delivery.reason or delivery.outcome.value
        at = self.clock.now()
        # Durable: a power cut must not turn this back into `sending`, which a restart would
        # send to this printer again.
        await self.store.disk.patiently(
            lambda: self.store.transact(lambda tx: jobs.unconfirmed(tx, claimed, reason, at),
                                        priority=Priority.PRINT),
            what="ticket unconfirmed")
        if delivery.outcome is Outcome.HELD:
            worker.held[claimed.job_key] = delivery.generation
        self.unconfirmed[claimed.job_key] = Unconfirmed(
            worker.printer.id, claimed.station_id, self.clock.monotonic())
        log_.warning("ticket_unconfirmed", outcome=delivery.outcome.value, reason=reason,
                     copy_after_s=self.cfg.printing.unconfirmed_limit)
        state = delivery.status.state if delivery.status is not None else "offline"
        await self._failed(worker, state, reason)

