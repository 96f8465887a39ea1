"""The spooler: one worker per printer, so a dead printer never holds up the others.

A worker serves the stations whose primary printer it is, and, once a station's primary has
been down for `failover_after`, that station's jobs too when it is the backup. Before each
job it asks the printer's real-time status; paper out, cover open or no answer hold the job
and publish the printer's state. Job states live in SQLite: queued -> sending -> printed.
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from edge import crashpoints
from edge.clock import Clock, rfc3339
from edge.config.models import Config, MdnsConnection, PrinterConfig, TcpConnection
from edge.printing import jobs
from edge.printing.render import render_ticket
from edge.printing.status import PrinterStatus
from edge.printing.transport import PrinterUnavailable, TcpTransport, Transport
from edge.store.legacy import ConnStore as Store

log = structlog.get_logger(__name__)

StatePublisher = Callable[[str, dict[str, object]], None]
AddressLookup = Callable[[str], tuple[str, int] | None]

IDLE_POLL = 2.0
# A printer that answered a status query this recently (every send ends with one) is not
# asked again before the next ticket: at a rush that round trip is a third of the work.
STATUS_FRESH = 1.0


def make_transport(printer: PrinterConfig, cfg: Config,
                   mdns_lookup: AddressLookup | None) -> Transport:
    target = printer.target
    timing = cfg.printing
    if isinstance(target, TcpConnection):
        host, port = target.host, target.port

        def fixed() -> tuple[str, int] | None:
            return host, port

        return TcpTransport(fixed, name=printer.id, connect_timeout=timing.connect_timeout,
                            write_timeout=timing.write_timeout,
                            status_timeout=timing.status_timeout)
    if isinstance(target, MdnsConnection):
        service = target.service_name

        def resolved() -> tuple[str, int] | None:
            return mdns_lookup(service) if mdns_lookup else None

        return TcpTransport(resolved, name=printer.id, connect_timeout=timing.connect_timeout,
                            write_timeout=timing.write_timeout,
                            status_timeout=timing.status_timeout)
    from edge.printing.usb import UsbTransport

    return UsbTransport(target.vendor_id, target.product_id, target.serial, name=printer.id,
                        timeout_ms=int(timing.write_timeout * 1000),
                        status_timeout_ms=int(timing.status_timeout * 1000))


@dataclass
class PrinterHealth:
    state: str = "unknown"
    since: float = 0.0
    since_wall: str = ""
    down_since: float | None = None   # monotonic; None while the printer can print
    detail: str | None = None


@dataclass
class Worker:
    printer: PrinterConfig
    transport: Transport
    primary_for: list[str]
    backup_for: dict[str, str]        # station -> its primary printer id
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    ready_at: float | None = None       # monotonic time the printer last said it can print
    health: PrinterHealth = field(default_factory=PrinterHealth)
    last_published: dict[str, object] | None = None


class Spooler:
    def __init__(self, cfg: Config, store: Store, clock: Clock, publish: StatePublisher, *,
                 mdns_lookup: AddressLookup | None = None,
                 transports: dict[str, Transport] | None = None) -> None:
        self.cfg = cfg
        self.store = store
        self.clock = clock
        self.publish = publish
        self.workers: dict[str, Worker] = {}
        self.printed = 0
        self.on_printed: Callable[[jobs.Claimed, dict[str, Any] | None], None] | None = None
        self._sending: set[str] = set()
        # Workers between "about to claim" and "ticket done": a claim is a transaction on
        # another thread, so `_sending` alone misses a claim that is committing right now.
        self._busy = 0
        self._stopping = False
        self._idle = asyncio.Event()
        self._idle.set()
        for printer in cfg.printers:
            transport = (transports or {}).get(printer.id) or make_transport(
                printer, cfg, mdns_lookup)
            self.workers[printer.id] = Worker(
                printer=printer,
                transport=transport,
                primary_for=[s.id for s in cfg.stations if s.printer == printer.id],
                backup_for={s.id: s.printer for s in cfg.stations if s.backup == printer.id},
            )

    def kick(self) -> None:
        for worker in self.workers.values():
            worker.wake.set()

    async def wait_idle(self) -> None:
        """Stop claiming jobs, then wait until no ticket is on its way to a printer.

        After this, cancelling run() cannot cut a ticket whose bytes are already written
        (which the next start would print again as MAY BE DUPLICATE) nor leave a freshly
        claimed job in `sending`."""
        self._stopping = True
        await self._idle.wait()

    async def recover(self) -> None:
        keys = await self.store.transact(jobs.recover_after_crash)
        for key in keys:
            log.warning("job_requeued_after_crash", job_key=key, mark="MAY BE DUPLICATE")

    async def run(self) -> None:
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
            now = self.clock.now()
            released = await self.store.transact(functools.partial(jobs.release_due, now=now))
            if released:
                for key in released:
                    log.info("job_released", job_key=key, why="scheduled time reached")
                self.kick()
            due = await self.store.read(jobs.next_due)
            wait = 1.0 if due is None else max(0.05, min(1.0, (due - now).total_seconds()))
            await self.clock.sleep(wait)

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

    def _backups(self, worker: Worker, stations: list[str]) -> dict[str, str]:
        return {s: worker.backup_for[s] for s in stations if s not in worker.primary_for}

    async def _set_health(self, worker: Worker, state: str, detail: str | None) -> None:
        health = worker.health
        now = self.clock.monotonic()
        if state == "online":
            health.down_since = None
        elif health.down_since is None:
            health.down_since = now
        stations = worker.primary_for
        queued = await self.store.read(lambda c: jobs.queued_count(c, stations))
        changed = state != health.state
        if changed:
            health.state, health.since, health.detail = state, now, detail
            health.since_wall = rfc3339(self.clock.now())
            log.info("printer_state", printer_id=worker.printer.id, state=state, detail=detail,
                     queued=queued)
            printer_id, since = worker.printer.id, health.since_wall
            await self.store.transact(lambda c: c.execute(
                "INSERT INTO printer_states (printer_id, state, since, detail) VALUES (?,?,?,?) "
                "ON CONFLICT(printer_id) DO UPDATE SET state=excluded.state, "
                "since=excluded.since, detail=excluded.detail",
                (printer_id, state, since, detail)))
        body: dict[str, object] = {"printer_id": worker.printer.id, "state": state,
                                   "since": health.since_wall, "queued": queued}
        if body != worker.last_published:
            worker.last_published = body
            self.publish(worker.printer.id, body)
        # A primary going down may hand its stations to a backup after failover_after.
        if state != "online":
            for other in self.workers.values():
                if worker.printer.id in other.backup_for.values():
                    other.wake.set()

    async def _check(self, worker: Worker) -> PrinterStatus | None:
        worker.ready_at = None
        try:
            status = await worker.transport.status()
        except PrinterUnavailable as exc:
            await self._set_health(worker, "offline", exc.reason)
            return None
        await self._set_health(worker, status.state, None)
        if not status.ready:
            return None
        worker.ready_at = self.clock.monotonic()
        return status

    def _fresh(self, worker: Worker) -> bool:
        ready_at = worker.ready_at
        return ready_at is not None and self.clock.monotonic() - ready_at < STATUS_FRESH

    async def _work(self, worker: Worker) -> None:
        attempt = 0
        while True:
            if self._stopping:
                # Shutting down or reloading: claim nothing more, wait to be cancelled.
                await asyncio.Event().wait()
            stations = self._serving(worker)
            key = await self.store.read(functools.partial(jobs.next_queued, stations=stations))
            if key is None:
                # Idle: keep the published state fresh, wake at once for new jobs.
                worker.wake.clear()
                if (await self._check(worker)) is not None:
                    attempt = 0
                try:
                    async with asyncio.timeout(IDLE_POLL):
                        await worker.wake.wait()
                except TimeoutError:
                    pass
                continue
            if not self._fresh(worker) and await self._check(worker) is None:
                attempt += 1
                delay = min(self.cfg.printing.retry_max, 0.25 * 2 ** min(attempt, 8))
                worker.wake.clear()
                try:
                    async with asyncio.timeout(delay * random.uniform(0.7, 1.0)):
                        await worker.wake.wait()
                except TimeoutError:
                    pass
                continue
            attempt = 0
            await self._print_one(worker, stations)

    async def _print_one(self, worker: Worker, stations: list[str]) -> None:
        if self._stopping:
            return
        self._busy += 1
        self._idle.clear()
        try:
            await self._claim_and_print(worker, stations)
        finally:
            self._busy -= 1
            if not self._busy:
                self._idle.set()

    async def _claim_and_print(self, worker: Worker, stations: list[str]) -> None:
        now = self.clock.now()
        backups = self._backups(worker, stations)
        printer = worker.printer
        claimed = await self.store.transact(
            lambda c: jobs.claim(c, stations, printer.id, backups, now,
                                 self.cfg.printing.late_after))
        if claimed is None:
            return
        log_ = log.bind(job_key=claimed.job_key, order_id=claimed.order_id,
                        printer_id=printer.id)
        self._sending.add(claimed.job_key)
        try:
            try:
                data = render_ticket(claimed.ticket, columns=printer.columns,
                                     profile=printer.profile, codepage=printer.codepage)
            except Exception as exc:  # a rendering bug must not stop the kitchen
                log_.exception("ticket_render_failed")
                why, at = f"render failed: {exc}", self.clock.now()
                await self.store.transact(lambda c: jobs.fail(c, claimed, why, at))
                return
            try:
                await worker.transport.send(data)
            except PrinterUnavailable as exc:
                log_.warning("ticket_send_failed", reason=exc.reason)
                reason, maybe = exc.reason, exc.may_have_printed
                await self.store.transact(
                    lambda c: jobs.give_back(c, claimed, reason, maybe_on_paper=maybe))
                await self._set_health(worker, "offline", reason)
                return
            crashpoints.reached("after_send")
            # The send ends with a status round trip (the transport's confirmation).
            worker.ready_at = self.clock.monotonic()
            done = self.clock.now()
            timeline = await self.store.transact(lambda c: jobs.printed(c, claimed, done),
                                                 durable=False)
        finally:
            self._sending.discard(claimed.job_key)
        self.printed += 1
        log_.info("ticket_printed", kind=claimed.ticket.kind, station=claimed.station_id,
                  backup_from=claimed.backup_from, bytes=len(data))
        if self.on_printed is not None:
            self.on_printed(claimed, timeline)
