"""The daemon: wires the store, the broker link, ingest, the spooler, upstream sync, the
local HTTP server and systemd notification together, and shuts them down in order.

Shutdown order matters: stop taking messages (what is committed is acknowledged, the rest
stays with the broker), let an in-flight ticket finish, say offline, close the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
from pathlib import Path
from typing import Any

import structlog

from edge import __version__
from edge.clock import Clock, SystemClock, rfc3339_ms
from edge.config import Config, ConfigError, MdnsConnection, load_config
from edge.ingest.consumer import Ingest
from edge.ingest.link import BrokerLink
from edge.ingest.pipeline import BatchResult, Pipeline, cut_payload
from edge.orders.apply import Applier, Plan
from edge.printing.jobs import Claimed
from edge.printing.spooler import Spooler
from edge.store import DB_FILENAME, SchemaTooNew, Store

log = structlog.get_logger(__name__)

SHUTDOWN_GRACE = 10.0
FLUSH_GRACE = 2.0
CONFIG_POLL = 2.0


def db_path(cfg: Config) -> Path:
    return cfg.state_dir / DB_FILENAME


def plan_of(cfg: Config) -> Plan:
    return Plan(tuple(cfg.stations), cfg.routing.default_station)


class Daemon:
    def __init__(self, cfg: Config, *, config_path: Path | None = None,
                 clock: Clock | None = None, handle_signals: bool = True) -> None:
        self.cfg = cfg
        self.handle_signals = handle_signals
        self._stopping = False
        self.said_goodbye = False
        self.next_config: Config | None = None
        self.config_path = config_path
        self.clock = clock or SystemClock()
        self.store = Store(db_path(cfg))
        self.link = BrokerLink(cfg, clock=self.clock, password=_read_secret(cfg.mqtt.password_file))
        self.applier = Applier(plan_of(cfg))
        self.pipeline = Pipeline(cfg.root, self.applier)
        self.ingest = Ingest(self.store, self.pipeline, self.clock, max_batch=cfg.mqtt.max_batch,
                             on_batch=self._after_batch)
        self.spooler: Spooler | None = None
        self.sender: Any = None
        self.browser: Any = None
        self.notifier: Any = None
        self.stop_requested = asyncio.Event()
        self.ready = asyncio.Event()

    # -- wiring --------------------------------------------------------------------------

    def _publish_printer_state(self, printer_id: str, body: dict[str, object]) -> None:
        self.link.publish(f"{self.cfg.root}/printers/{printer_id}/state", body, retain=True)

    def _after_batch(self, result: BatchResult) -> None:
        from edge.service import metrics

        for outcome in result.outcomes:
            if outcome.result == "dead":
                metrics.events_dead_lettered.labels(_reason_kind(outcome.reason or "")).inc()
            elif outcome.result == "duplicate":
                metrics.events_duplicate.inc()
            elif outcome.result != "accepted":
                metrics.events_ingested.labels(outcome.event_type or "command").inc()
        if result.new_jobs and self.spooler is not None:
            self.spooler.kick()
        if self.sender is not None:
            self.sender.kick()
        for outcome in result.outcomes:
            if outcome.dead_letter_id is not None:
                self._publish_dead_letter(outcome.dead_letter_id)
        for order_id, timeline in result.timelines.items():
            self._publish_timeline(order_id, timeline)

    def _after_print(self, claimed: Claimed, timeline: dict[str, Any] | None) -> None:
        from edge.service import metrics

        waited = (self.clock.now() - claimed.created_at).total_seconds()
        metrics.event_to_print_seconds.observe(max(0.0, waited))
        if self.sender is not None:
            self.sender.kick()
        if timeline is not None:
            self._publish_timeline(claimed.order_id, timeline)

    def _timeline_changed(self, order_id: str, timeline: dict[str, Any]) -> None:
        if self.sender is not None:
            self.sender.kick()
        self._publish_timeline(order_id, timeline)

    def _publish_timeline(self, order_id: str, timeline: dict[str, Any]) -> None:
        """The timeline the transaction just wrote as a status record, retained; the link
        keeps only the newest per topic if it cannot send at once."""
        self.link.publish(f"{self.cfg.root}/orders/{order_id}/status", timeline, retain=True)

    def _publish_dead_letter(self, row_id: int) -> None:
        async def publish() -> None:
            row = await self.store.read(lambda c: c.execute(
                "SELECT topic, reason, received_at, payload FROM dead_letters WHERE id=?",
                (row_id,)).fetchone())
            if row is None:
                return

            async def sent() -> None:
                await self.store.transact(lambda c: c.execute(
                    "UPDATE dead_letters SET published=1 WHERE id=?", (row_id,)))

            self.link.publish(f"{self.cfg.root}/dead-letter", {
                "topic": row[0], "reason": row[1], "received_at": row[2],
                "payload": cut_payload(bytes(row[3]))}, on_sent=sent)

        task = asyncio.get_running_loop().create_task(publish())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _republish_unsent_dead_letters(self) -> None:
        ids = await self.store.read(lambda c: [r[0] for r in c.execute(
            "SELECT id FROM dead_letters WHERE published=0 ORDER BY id")])
        for row_id in ids:
            self._publish_dead_letter(row_id)

    # -- lifecycle -----------------------------------------------------------------------

    async def run(self) -> int:
        self._background: set[asyncio.Task[None]] = set()
        await self.store.open()
        log.info("daemon_starting", version=__version__, site=self.cfg.site,
                 database=str(self.store.path))
        try:
            await self._run()
        finally:
            if self.notifier is not None:
                self.notifier.close()   # a reload makes a new one
            await self.store.close()
        log.info("daemon_stopped")
        return 0

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig.name)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)

    def request_stop(self, why: str = "requested") -> None:
        log.info("shutdown_requested", signal=why)
        # A stop wins over a reload in progress: say goodbye, do not come back.
        self._stopping = True
        self.next_config = None
        self.stop_requested.set()

    def request_reload(self, why: str = "SIGHUP") -> None:
        """Re-read the config; a valid one restarts the pieces in-process (the broker
        session and the queued jobs survive: both live outside this object), an invalid
        one is refused and the running config stays."""
        if self.config_path is None or self._stopping:
            return
        log.info("reload_requested", why=why)
        try:
            fresh = load_config(self.config_path)
        except ConfigError as exc:
            problems = [str(p) for p in exc.problems]
            log.error("reload_refused", problems=problems)
            self.link.publish(f"{self.cfg.root}/edge/config", {
                "state": "refused", "problems": problems,
                "at": rfc3339_ms(self.clock.now())}, retain=True)
            return
        self.next_config = fresh
        self.stop_requested.set()

    async def _watch_config(self) -> None:
        """A changed config file is re-read like a SIGHUP (operators forget to send one)."""
        path = self.config_path
        if path is None:
            return

        def stamp() -> tuple[float, int] | None:
            try:
                st = path.stat()
            except OSError:
                return None
            return st.st_mtime, st.st_size

        seen = stamp()
        while True:
            await asyncio.sleep(CONFIG_POLL)
            now = stamp()
            if now != seen and now is not None:
                seen = now
                self.request_reload("config file changed")

    async def _run(self) -> None:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            if self.handle_signals:
                self._install_signals()
        self._setup_optional()
        self.spooler = Spooler(self.cfg, self.store, self.clock, self._publish_printer_state,
                               mdns_lookup=self.browser.lookup if self.browser else None)
        self.spooler.on_printed = self._after_print
        self.spooler.on_timeline = self._timeline_changed
        await self.spooler.recover()
        await self._republish_unsent_dead_letters()
        # The config in force, retained: replaces a refusal an earlier reload left there.
        self.link.publish(f"{self.cfg.root}/edge/config", {
            "state": "applied", "problems": [], "at": rfc3339_ms(self.clock.now())},
            retain=True)
        async with asyncio.TaskGroup() as group:
            ingest = group.create_task(self.link.run(self.ingest.consume), name="ingest")
            applier = group.create_task(self.ingest.run_applier(), name="applier")
            spool = group.create_task(self.spooler.run(), name="spooler")
            others = [group.create_task(self._announce_ready(), name="ready")]
            others.append(group.create_task(self._watch_config(), name="config-watch"))
            if self.sender is not None:
                others.append(group.create_task(self.sender.run(), name="upstream"))
            if self.browser is not None:
                await self.browser.start()
            if self.cfg.discovery.enabled and self.cfg.discovery.usb:
                others.append(group.create_task(self._watch_usb(), name="usb-watch"))
            if self.notifier is not None and self.notifier.enabled:
                others.append(group.create_task(
                    self.notifier.run_watchdog(self.status_line), name="watchdog"))
            if self.cfg.http is not None:
                from edge.http import serve

                others.append(group.create_task(serve(self), name="http"))
            await self.stop_requested.wait()
            reloading = self.next_config is not None
            if self.notifier is not None:
                if reloading:
                    self.notifier.reloading()
                else:
                    self.notifier.stopping()
            # 1. Stop taking messages once the batch in hand is committed and acknowledged,
            #    and let an apply pass in hand hand on its results.
            self.ingest.stop()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SHUTDOWN_GRACE):
                    await self.ingest.idle.wait()
                    await self.ingest.applier_idle.wait()
            # 2. Let a ticket that is on its way finish (it would otherwise print again,
            #    marked MAY BE DUPLICATE, after restart).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SHUTDOWN_GRACE):
                    await self.spooler.wait_idle()
            spool.cancel()
            # 3. Publish what those changed (an order's retained status is published only
            #    when it changes: one dropped here stays stale for good), then tell everyone
            #    we are going, while the connection is still up.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FLUSH_GRACE):
                    await self.link.flush()
            # Asked now, not when shutdown began: a SIGTERM may have landed since the SIGHUP.
            if self.next_config is None:
                await self.link.say_goodbye()
                self.said_goodbye = True
            ingest.cancel()
            applier.cancel()   # what it has not applied is stored, and applied at next start
            for task in others:
                task.cancel()
        await self.spooler.close()
        if self.browser is not None:
            await self.browser.stop()

    async def _announce_ready(self) -> None:
        await self.link.ever_connected.wait()
        self.ready.set()
        log.info("daemon_ready")
        if self.notifier is not None:
            self.notifier.ready(self.status_line())

    def _setup_optional(self) -> None:
        from edge.service.sdnotify import Notifier

        self.notifier = Notifier()
        if self.cfg.upstream is not None:
            from edge.upstream.sender import Sender

            self.sender = Sender(self.store, self.cfg.upstream, self.cfg.site, clock=self.clock,
                                 on_wan_change=self._wan_changed)
        wants_mdns = any(isinstance(p.target, MdnsConnection) for p in self.cfg.printers)
        if wants_mdns and self.cfg.discovery.enabled:
            from edge.discovery.mdns import MdnsBrowser

            self.browser = MdnsBrowser(interfaces=self.cfg.discovery.interfaces,
                                       on_change=self._mdns_changed, store=self.store)

    async def _watch_usb(self) -> None:
        """Plugging and unplugging, noticed by rescanning: kept in the registry, and the
        spooler woken so a replugged printer takes its queue at once. (Printing never waits
        for this: a USB transport finds its device itself, on whatever port it now is.)"""
        from edge.discovery.registry import mark_gone, upsert_seen
        from edge.discovery.usb import UsbPrinterInfo, UsbWatcher

        async def changed(added: list[UsbPrinterInfo], removed: list[UsbPrinterInfo]) -> None:
            stamp = rfc3339_ms(self.clock.now())

            def record(conn: sqlite3.Connection) -> None:
                for info in added:
                    upsert_seen(conn, source="usb", name=info.connection,
                                address=f"bus {info.bus} device {info.address}", port=None,
                                details={"manufacturer": info.manufacturer,
                                         "model": info.model,
                                         "command_set": info.command_set,
                                         "escpos": info.escpos},
                                seen_at=stamp)
                for info in removed:
                    mark_gone(conn, source="usb", name=info.connection)

            await self.store.transact(record)
            if self.spooler is not None:
                self.spooler.kick()

        await UsbWatcher().run(changed, self.cfg.discovery.usb_rescan)

    def _wan_changed(self, up: bool) -> None:
        log.info("wan_state", up=up)
        self.link.update_presence(wan="up" if up else "down")

    def _mdns_changed(self, name: str, record: object) -> None:
        if self.spooler is not None:
            self.spooler.kick()

    async def refresh_metrics(self) -> None:
        """Gauges that are facts of the database are read when scraped, not tracked."""
        from edge.service import metrics
        from edge.upstream.outbox import stats

        now = self.clock.now()
        by_state = await self.store.read(lambda c: dict(c.execute(
            "SELECT state, COUNT(*) FROM print_jobs GROUP BY state").fetchall()))
        for state in ("waiting", "queued", "sending", "unconfirmed", "printed", "failed",
                      "withdrawn"):
            metrics.print_jobs.labels(state).set(by_state.get(state, 0))
        outbox = await self.store.read(lambda c: stats(c, now))
        metrics.outbox_backlog.set(outbox.backlog)
        metrics.outbox_oldest_unsent_age_seconds.set(outbox.oldest_unsent_age_s or 0)
        if self.spooler is not None:
            for worker in self.spooler.workers.values():
                metrics.printer_up.labels(worker.printer.id).set(
                    1 if worker.health.state == "online" else 0)
        if self.sender is not None:
            metrics.wan_up.set(1 if self.sender.wan_up else 0)

    def status_line(self) -> str:
        spooler = self.spooler
        if spooler is None:
            return "starting"
        up = sum(1 for w in spooler.workers.values() if w.health.state == "online")
        wan = "n/a" if self.sender is None else ("up" if self.sender.wan_up else "down")
        return (f"printers {up}/{len(spooler.workers)} up; printed {spooler.printed}; "
                f"events {self.ingest.committed}; wan {wan}")


def _reason_kind(reason: str) -> str:
    for prefix, kind in (("payload is not valid JSON", "invalid_json"),
                         ("payload is not UTF-8", "invalid_json"), ("schema:", "schema"),
                         ("payload is ", "too_large"), ("Cannot transition", "transition"),
                         ("unknown event type", "unknown_type"), ("order_id '", "topic_mismatch"),
                         ("topic '", "bad_topic")):
        if reason.startswith(prefix):
            return kind
    return "other"


def _read_secret(path: Path | None) -> str | None:
    if path is None:
        return None
    return path.read_text("utf-8").strip()


def run_daemon(config_path: Path) -> int:
    import faulthandler

    from edge.log import configure

    cfg = load_config(config_path)
    configure(cfg.log_level)
    # A watchdog kill (SIGABRT) then leaves the stuck stack in the journal.
    faulthandler.enable()

    async def main() -> int:
        # Signals belong to this loop, not to one Daemon object: a SIGTERM or SIGHUP that
        # arrives while a reload swaps the pieces must reach the new ones, not be lost.
        running: list[Daemon] = []
        stop: list[str] = []

        def on_stop(name: str) -> None:
            stop.append(name)
            if running:
                running[0].request_stop(name)

        def on_reload() -> None:
            if running:
                running[0].request_reload()

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_stop, sig.name)
        loop.add_signal_handler(signal.SIGHUP, on_reload)
        current: Config | None = cfg
        while current is not None:
            daemon = Daemon(current, config_path=config_path, handle_signals=False)
            running[:] = [daemon]
            if stop:
                daemon.request_stop(stop[-1])
            await daemon.run()
            if stop and not daemon.said_goodbye:
                # The stop landed after these pieces had shut down for a reload: come back
                # just long enough to tell the broker we are offline.
                current = daemon.next_config or daemon.cfg
            else:
                current = None if stop else daemon.next_config
            if current is not None and not stop:
                log.info("config_reloaded", site=current.site)
        return 0

    try:
        return asyncio.run(main())
    except (SchemaTooNew, OSError, sqlite3.DatabaseError) as exc:
        # What the operator must fix (a newer database, a full disk, a bad state_dir) is
        # said in one line; systemd's Restart= will try again.
        log.error("daemon_failed", error=str(exc), kind=type(exc).__name__)
        return 1


__all__ = ["Daemon", "db_path", "plan_of", "run_daemon"]
