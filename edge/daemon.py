"""The daemon: the composition root. It builds the components from the config, runs them,
handles signals and reloads, and shuts them down in order.

Shutdown order matters, and is the order of the component list: stop taking messages (what
is committed is acknowledged, the rest stays with the broker) and let the applier hand on
what it applied, let an in-flight ticket finish, flush what they changed to the broker and
say offline, then everything else; then close the database.

Nothing here knows what a component does beyond this order: results travel on the feed
(`edge.feed`), and what one component needs of another is passed in as a callable.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path

import structlog

from edge import __version__
from edge.backoff import Backoff
from edge.clock import Clock, SystemClock, rfc3339_ms
from edge.component import Component, Context
from edge.config import Config, ConfigError, MdnsConnection, load_config
from edge.feed import Feed, WanChanged
from edge.ingest.component import BrokerIntake, BrokerOut
from edge.ingest.consumer import Ingest
from edge.ingest.link import BrokerLink
from edge.ingest.pipeline import Pipeline
from edge.orders import acceptance, menu
from edge.orders.apply import Applier, Plan
from edge.printing.component import Printing
from edge.service import metrics
from edge.service.sdnotify import Notifier
from edge.store import DB_FILENAME, SchemaTooNew, Store, jobs, outbox
from edge.store.trouble import StorageState, StorageTrouble, storage_kind

log = structlog.get_logger(__name__)

CONFIG_POLL = 2.0
# How often {root}/edge/state looks whether the clock's sync state changed.
CLOCK_POLL = 5.0
# A component's stop() bounds its own waits; this only keeps a broken one from hanging us.
STOP_GUARD = 30.0
# Opening the database on a disk that refuses: tried again from 0.5 s, up to every 10 s.
OPEN_RETRY_BASE = 0.5
OPEN_RETRY_CAP = 10.0


def load_station(path: Path) -> Config:
    """The station config, with what only printing knows checked too (code pages)."""
    from edge.printing.codepages import check_codepage

    return load_config(path, codepage_check=check_codepage)


def db_path(cfg: Config) -> Path:
    return cfg.state_dir / DB_FILENAME


def plan_of(cfg: Config) -> Plan:
    return Plan(tuple(cfg.stations), cfg.routing.default_station, cfg.menu_data,
                tuple(cfg.tables) if cfg.tables is not None else None, cfg.timezone)


# -- the optional components, built from the config ----------------------------------------
# Adding a connector: write its component (its own package under edge/connectors/), then
# add one line here.

OptionalFactory = Callable[[Context], Component | None]


def _upstream(ctx: Context) -> Component | None:
    if ctx.cfg.upstream is None:
        return None
    from edge.upstream.component import Upstream

    return Upstream(ctx, ctx.cfg.upstream)


def _usb(ctx: Context) -> Component | None:
    if not (ctx.cfg.discovery.enabled and ctx.cfg.discovery.usb):
        return None
    from edge.discovery.component import UsbDiscovery

    return UsbDiscovery(ctx)


def _web(ctx: Context) -> Component | None:
    if ctx.cfg.http is None:
        return None
    from edge.printing.preview import TicketPreview
    from edge.web import WebServer

    return WebServer(ctx, ctx.cfg.http,
                     ticket_image=TicketPreview(ctx.store, ctx.cfg, ctx.clock).png)


def _aggregator(ctx: Context) -> Component | None:
    if ctx.cfg.aggregator is None:
        return None
    from edge.connectors.aggregator.component import Aggregator

    return Aggregator(ctx, ctx.cfg.aggregator)


def _openapp(ctx: Context) -> Component | None:
    # OpenApp's topics are always there (CONTRACT section 11): its answers go out from here.
    from edge.connectors.openapp.component import OpenApp

    return OpenApp(ctx)


def _metrics(ctx: Context) -> Component | None:
    from edge.service.component import Metrics

    return Metrics(ctx)


def _marketplaces(ctx: Context) -> Component | None:
    if not ctx.cfg.marketplaces:
        return None
    from edge.connectors.marketplace.component import Marketplaces

    return Marketplaces(ctx)


def _retention(ctx: Context) -> Component | None:
    if not ctx.cfg.retention.enabled:
        return None
    from edge.service.retention import Retention

    return Retention(ctx, ctx.cfg.retention)


FACTORIES: list[OptionalFactory] = [_upstream, _usb, _web, _aggregator, _openapp, _metrics,
                                    _marketplaces, _retention]


class Daemon:
    def __init__(self, cfg: Config, *, config_path: Path | None = None,
                 clock: Clock | None = None, handle_signals: bool = True) -> None:
        self.cfg = cfg
        self.handle_signals = handle_signals
        self._stopping = False
        self.opened = False             # the database: a full disk may keep it shut
        self.next_config: Config | None = None
        self.config_path = config_path
        self.clock = clock or SystemClock()
        self.feed = Feed()
        self.store = Store(db_path(cfg), self.feed)
        self.link = BrokerLink(cfg, clock=self.clock, password=_read_secret(cfg.mqtt.password_file))
        self.applier = Applier(plan_of(cfg))
        self.pipeline = Pipeline(cfg.root, self.applier)
        self.ingest = Ingest(self.store, self.pipeline, self.clock, max_batch=cfg.mqtt.max_batch)
        self.ctx = Context(cfg=cfg, store=self.store, feed=self.feed, clock=self.clock,
                           publish=self.link.publish, intake=self.ingest, health=self)
        self.notifier = Notifier()
        self.components: list[Component] = []
        self.printing: Printing | None = None
        self.out: BrokerOut | None = None
        self.stop_requested = asyncio.Event()
        self.ready = asyncio.Event()
        self._wan_up: bool | None = None   # as the upstream sender last judged it
        self.feed.subscribe(WanChanged, self._wan)
        self._storage_unsubscribe = self.store.disk.subscribe(self._storage)
        self.ctx.board.add("storage", self._storage_section)

    @property
    def said_goodbye(self) -> bool:
        return self.out is not None and self.out.said_goodbye

    # -- building ------------------------------------------------------------------------

    def _build(self) -> list[Component]:
        """The components, in shutdown order."""
        ctx = self.ctx
        mdns = None
        wants_mdns = any(isinstance(p.target, MdnsConnection) for p in self.cfg.printers)
        if wants_mdns and self.cfg.discovery.enabled:
            from edge.discovery.component import MdnsDiscovery

            mdns = MdnsDiscovery(ctx)
        self.printing = Printing(ctx, mdns_lookup=mdns.lookup if mdns else None)
        self.out = BrokerOut(self.link, self.store, self.feed, self.clock,
                             leaving=lambda: self.next_config is None)
        from edge.service.component import Watchdog

        built: list[Component] = [BrokerIntake(self.link, self.ingest), self.printing,
                                  self.out]
        if mdns is not None:
            built.append(mdns)
        built += [c for make in FACTORIES if (c := make(ctx)) is not None]
        built.append(Watchdog(ctx, self.notifier))
        return built

    # -- lifecycle -----------------------------------------------------------------------

    async def run(self) -> int:
        if not await self._open_store():
            self.notifier.close()
            log.info("daemon_stopped")
            return 0
        log.info("daemon_starting", version=__version__, site=self.cfg.site,
                 database=str(self.store.path))
        try:
            await self._run()
        finally:
            self._storage_unsubscribe()
            self.notifier.close()   # a reload makes a new one
            await self.store.close()
        log.info("daemon_stopped")
        return 0

    async def _open_store(self) -> bool:
        """Open the database; False if asked to stop first. A disk that refuses (full: the
        WAL's shared-memory file cannot be made) is waited out with backoff, not exited on:
        systemd would restart us into the same full disk, in a loop. systemd's start timeout
        is extended meanwhile, and STATUS says why."""
        backoff = Backoff(OPEN_RETRY_BASE, OPEN_RETRY_CAP, floor=0.5)
        while True:
            try:
                await self.store.open()
                self.opened = True
                return True
            except (sqlite3.Error, OSError) as exc:
                kind = storage_kind(exc)
                if kind is None:
                    raise
                delay = backoff.failed()
                log.error("database_not_opened", storage=kind, error=str(exc),
                          retry_in=round(delay, 1), database=str(self.store.path))
                label = StorageState(kind, "").label
                self.notifier.notify(f"STATUS={label}; database not open\n"
                                     f"EXTEND_TIMEOUT_USEC={int((delay + 60) * 1_000_000)}")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self.stop_requested.wait()
            if self.stop_requested.is_set():
                return False

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
            fresh = load_station(self.config_path)
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

        # The menu file is part of the config: an edited price or stock is a reload too.
        watched = [path] + ([self.cfg.menu] if self.cfg.menu is not None else [])

        def stamp() -> tuple[tuple[float, int], ...] | None:
            try:
                stats = [p.stat() for p in watched]
            except OSError:
                return None
            return tuple((st.st_mtime, st.st_size) for st in stats)

        seen = stamp()
        while True:
            await asyncio.sleep(CONFIG_POLL)
            now = stamp()
            if now != seen and now is not None:
                seen = now
                self.request_reload("config file changed")

    async def _watch_clock(self) -> None:
        """The kernel's clock sync state, republished on {root}/edge/state when it changes
        (the kitchen clock asks the kernel at most every few seconds)."""
        while True:
            await asyncio.sleep(CLOCK_POLL)
            synced = self.clock.synced()
            if synced != self.link.extra_state.get("clock_synced"):
                self.link.update_presence(clock_synced=synced)

    async def _run(self) -> None:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            if self.handle_signals:
                self._install_signals()
        self._storage(self.store.disk.current)
        # The menu file's products and stock, before anyone publishes availability. Started
        # on a full disk, the daemon waits here for space rather than exit (and be restarted
        # by systemd into the same full disk, in a loop).
        await self.store.disk.patiently(lambda: self.store.transact(
            lambda tx: menu.sync(tx, self.cfg.menu_data, self.clock.now())), what="menu")
        self.components = self._build()
        # In {root}/edge/state from the first publish: whether the times this box sends can
        # be trusted (docs/clock.md).
        self.link.extra_state["clock_synced"] = self.clock.synced()
        for component in self.components:
            await component.start()
        async with asyncio.TaskGroup() as group:
            runs = [group.create_task(self._run_component(c), name=c.name)
                    for c in self.components]
            runs.append(group.create_task(self._announce_ready(), name="ready"))
            runs.append(group.create_task(self._watch_config(), name="config-watch"))
            runs.append(group.create_task(self._watch_clock(), name="clock-watch"))
            await self.stop_requested.wait()
            if self.next_config is not None:
                self.notifier.reloading()
            else:
                self.notifier.stopping()
            # In list order: intake, spooler, broker publishes (and goodbye), the rest.
            for component in self.components:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(STOP_GUARD):
                        await component.stop()
            for task in runs:
                task.cancel()
        for component in self.components:
            try:
                await component.close()
            except Exception:  # one piece failing to let go must not keep the others
                log.exception("component_close_failed", component=component.name)

    async def _run_component(self, component: Component) -> None:
        """`component.run()`; run again, once the disk takes writes, if a write the disk
        refused ended it. The writers that must not lose their place wait inside (the intake,
        the spooler); for the others (the upstream sender's marks, discovery's registry, a
        connector's records) starting over from what is stored is what they do at start."""
        while True:
            try:
                await component.run()
                return
            except* StorageTrouble as group:
                first = group.exceptions[0]
                log.error("component_waiting_for_storage", component=component.name,
                          error=str(first))
            await self.store.disk.wait_ok()
            log.info("component_restarted", component=component.name, why="storage is back")

    async def _announce_ready(self) -> None:
        await self.link.ever_connected.wait()
        self.ready.set()
        log.info("daemon_ready")
        self.notifier.ready(self.status_line())

    # -- health (edge.component.Health) --------------------------------------------------

    def broker_connected(self) -> bool:
        return self.link.connected.is_set()

    async def metrics(self) -> tuple[bytes, str]:
        await self.refresh_metrics()
        return metrics.render_latest()

    async def refresh_metrics(self) -> None:
        """Gauges that are facts of the database are read when scraped, not tracked."""
        now = self.clock.now()
        by_state = await self.store.read(jobs.counts_by_state)
        for state in ("waiting", "queued", "sending", "unconfirmed", "printed", "failed",
                      "withdrawn"):
            metrics.print_jobs.labels(state).set(by_state.get(state, 0))
        restamp = self.clock.restamp
        waiting = await self.store.read(lambda c: acceptance.waiting(c, now, restamp))
        metrics.orders_awaiting_acceptance.set(len(waiting))
        metrics.oldest_awaiting_acceptance_seconds.set(
            max((w.waited_s for w in waiting), default=0))
        if self.cfg.marketplaces:
            from edge.connectors.marketplace.views import overview

            for market in self.cfg.marketplaces:
                view = await self.store.read(functools.partial(overview, market=market,
                                                               now=now))
                metrics.marketplace_up.labels(market.id).set(1 if view["state"] == "ok" else 0)
                metrics.marketplace_awaiting_acceptance.labels(market.id).set(
                    len(view["waiting"]))
                metrics.marketplace_oldest_awaiting_acceptance_seconds.labels(market.id).set(
                    view["oldest_wait_s"])
                metrics.marketplace_calls_parked.labels(market.id).set(view["calls"]["parked"])
        stats = await self.store.read(lambda c: outbox.stats(c, now))
        metrics.outbox_backlog.set(stats.backlog)
        metrics.outbox_oldest_unsent_age_seconds.set(stats.oldest_unsent_age_s or 0)
        if self.printing is not None:
            for worker in self.printing.spooler.workers.values():
                metrics.printer_up.labels(worker.printer.id).set(
                    1 if worker.health.state == "online" else 0)
        if self.cfg.upstream is not None:
            metrics.wan_up.set(1 if self._wan_up else 0)

    def status_line(self) -> str:
        storage = self.store.disk.current
        degraded = "" if storage.ok else f"{storage.label}; "
        # As {root}/edge/state's clock_synced: what this box stamps cannot be trusted yet.
        if not self.clock.synced():
            degraded += "clock not synced; "
        if self.printing is None:
            return f"{degraded}starting"
        spooler = self.printing.spooler
        up = sum(1 for w in spooler.workers.values() if w.health.state == "online")
        wan = "n/a" if self.cfg.upstream is None else ("up" if self._wan_up else "down")
        return (f"{degraded}printers {up}/{len(spooler.workers)} up; "
                f"printed {spooler.printed}; "
                f"events {self.ingest.committed}; wan {wan}")

    def _wan(self, change: WanChanged) -> None:
        self._wan_up = change.up

    def _storage(self, state: StorageState) -> None:
        """The disk's state on the edge's retained state, sd_notify STATUS and a gauge, now:
        a full disk is not a thing to learn about at the next watchdog tick."""
        self.link.update_presence(health=state.label, storage=state.state,
                                  storage_since=state.since)
        metrics.storage_ok.set(1 if state.ok else 0)
        if self.ready.is_set():
            self.notifier.status(self.status_line())

    async def _storage_section(self) -> dict[str, object]:
        disk = self.store.disk
        state = disk.current
        return {"state": state.state, "health": state.label, "since": state.since,
                "detail": state.detail, "writes_refused": disk.failures,
                "probes": disk.probes}


def _read_secret(path: Path | None) -> str | None:
    if path is None:
        return None
    return path.read_text("utf-8").strip()


def run_daemon(config_path: Path) -> int:
    import faulthandler

    from edge.log import configure

    cfg = load_station(config_path)
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
            if stop and not daemon.said_goodbye and daemon.opened:
                # The stop landed after these pieces had shut down for a reload: come back
                # just long enough to tell the broker we are offline. (Not when the database
                # never opened, the disk being full: coming back would only wait again.)
                current = daemon.next_config or daemon.cfg
            else:
                current = None if stop else daemon.next_config
            if current is not None and not stop:
                log.info("config_reloaded", site=current.site)
        return 0

    # Everything imported so far (modules, schemas, the config) lives as long as the process:
    # out of the collector's sight, a full collection no longer walks it, which was a pause
    # of 30-70 ms in front of a ticket now and then (issue 17).
    gc.freeze()
    try:
        return asyncio.run(main())
    except (SchemaTooNew, OSError, sqlite3.DatabaseError) as exc:
        # What the operator must fix (a newer database, a full disk, a bad state_dir) is
        # said in one line; systemd's Restart= will try again.
        log.error("daemon_failed", error=str(exc), kind=type(exc).__name__)
        return 1


__all__ = ["FACTORIES", "Daemon", "db_path", "load_station", "plan_of", "run_daemon"]
