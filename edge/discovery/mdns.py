"""mDNS printer discovery: browse, resolve, follow moves, notice silence.

A printer configured as `mdns://Service Name` is printed to wherever that service resolves
now. The spooler asks `MdnsBrowser.lookup(name)` before each connection (a dict read, never
the network) and is told through `on_change(name, record | None)` when the answer changes.

Everything network-facing runs in background tasks: `start()` returns at once even when
zeroconf cannot open its sockets (no such interface yet, address not configured); it logs and
retries with backoff, so a broken network never holds up a ticket.

Withdrawal is seen three ways: a goodbye packet, the records expiring from zeroconf's cache
(both arrive as the browser's Removed), and silence. zeroconf keeps a browsed service in its
cache for the PTR's TTL (75 minutes by default), far too long for a kitchen, so every
`refresh_interval` seconds each known service is asked for its SRV record; one that misses
`missed_answers` rounds in a row counts as gone until it answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog
from zeroconf import (
    DNSQuestionType,
    InterfaceChoice,
    IPVersion,
    RecordUpdate,
    RecordUpdateListener,
    ServiceStateChange,
    Zeroconf,
)
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from edge.backoff import Backoff
from edge.clock import Clock, SystemClock, rfc3339
from edge.discovery.zeroconf_compat import TYPE_SRV, TYPE_TXT, ask_srv
from edge.store import registry

if TYPE_CHECKING:
    from edge.store import Tx
    from edge.store.db import Store

__all__ = [
    "BROWSE_TYPES",
    "RAW_TYPE",
    "MdnsBrowser",
    "ServiceRecord",
    "ZeroconfFactory",
    "type_label",
]

log = structlog.get_logger(__name__)

# Raw TCP (JetDirect, port 9100): the only advertised service the spooler can send ESC/POS to.
RAW_TYPE = "_pdl-datastream._tcp.local."
# LPD and IPP are browsed too, so `printers discover` can show every printer on the LAN.
BROWSE_TYPES: tuple[str, ...] = (RAW_TYPE, "_printer._tcp.local.", "_ipp._tcp.local.")

SOURCE = "mdns"

ZeroconfFactory = Callable[[list[str] | None], AsyncZeroconf]

# RFC 6762 10.2: records replaced by a cache-flush answer linger for one more second.
_SETTLE_SECONDS = 1.1
# RFC 6762 6: a responder may hold back a record it multicast less than a second ago, so an
# answer heard up to a second before our question also answers it.
_ANSWER_CREDIT_SECONDS = 1.0
# A healthy printer's last_seen is rewritten at most this often (one fsync per write).
_LAST_SEEN_WRITE_SECONDS = 60.0


@dataclass(frozen=True)
class ServiceRecord:
    """One resolved service instance, as last answered on the network."""

    service_name: str  # instance name without the type, e.g. "Kitchen Printer"
    service_type: str  # e.g. "_pdl-datastream._tcp.local."
    host: str  # SRV target, e.g. "kitchen-printer.local."
    port: int
    addresses: tuple[str, ...]  # routable IPv4 first, link-local and IPv6 after
    txt: dict[str, str] = field(hash=False)
    seen_at: datetime

    @property
    def fullname(self) -> str:
        return f"{self.service_name}.{self.service_type}"

    @property
    def address(self) -> str | None:
        return self.addresses[0] if self.addresses else None

    @property
    def endpoint(self) -> tuple[str, int] | None:
        return (self.addresses[0], self.port) if self.addresses else None


def type_label(service_type: str) -> str:
    """`_ipp._tcp.local.` -> `_ipp._tcp`, the form people read."""
    return service_type.removesuffix(".").removesuffix(".local")


def _type_rank(service_type: str) -> int:
    try:
        return BROWSE_TYPES.index(service_type.lower())
    except ValueError:
        return len(BROWSE_TYPES)


def _address_rank(text: str) -> tuple[int, int]:
    ip = ipaddress.ip_address(text.split("%", 1)[0])
    return (ip.version, 1 if ip.is_link_local else 0)


def _record_from_info(
    info: AsyncServiceInfo, service_type: str, seen_at: datetime
) -> ServiceRecord:
    addresses = info.parsed_addresses(IPVersion.V4Only) + info.parsed_scoped_addresses(
        IPVersion.V6Only
    )
    return ServiceRecord(
        service_name=info.get_name(),
        service_type=service_type,
        host=info.server or "",
        port=info.port or 0,
        addresses=tuple(sorted(addresses, key=_address_rank)),
        txt={key: value or "" for key, value in info.decoded_properties.items()},
        seen_at=seen_at,
    )


def _default_zeroconf(interfaces: list[str] | None) -> AsyncZeroconf:
    return AsyncZeroconf(interfaces=interfaces or InterfaceChoice.All)


class _Ear(RecordUpdateListener):
    """Hears every SRV/TXT answer, refreshes included; the browser reports only changes."""

    def __init__(self, on_heard: Callable[[str], None]) -> None:
        super().__init__()
        self._on_heard = on_heard

    def async_update_records(self, zc: Zeroconf, now: float, records: list[RecordUpdate]) -> None:
        for update in records:
            record = update.new
            if record.type in (TYPE_SRV, TYPE_TXT) and not record.is_expired(now):
                self._on_heard(record.name.lower())

    def async_update_records_complete(self) -> None:
        return None


def _on_conn(unit: Callable[[sqlite3.Connection], object]) -> Callable[[Tx], object]:
    def run(tx: Tx) -> object:
        return unit(tx.conn)

    return run


class MdnsBrowser:
    """Browses printer service types and keeps, in memory, where each one answers now."""

    def __init__(
        self,
        *,
        interfaces: list[str] | None = None,
        on_change: Callable[[str, ServiceRecord | None], None] | None = None,
        zeroconf_factory: ZeroconfFactory | None = None,
        store: Store | None = None,
        service_types: Sequence[str] = BROWSE_TYPES,
        refresh_interval: float = 10.0,
        answer_timeout: float = 2.0,
        missed_answers: int = 2,
        resolve_timeout: float = 3.0,
        retry_max: float = 30.0,
        clock: Clock | None = None,
    ) -> None:
        self._interfaces = list(interfaces) if interfaces else None
        self._on_change = on_change
        self._factory: ZeroconfFactory = zeroconf_factory or _default_zeroconf
        self._store = store
        self._types = [t if t.endswith(".") else t + "." for t in service_types]
        self._refresh_interval = refresh_interval
        self._answer_timeout = answer_timeout
        self._missed_answers = max(1, missed_answers)
        self._resolve_timeout_ms = resolve_timeout * 1000.0
        self._retry_max = retry_max
        self._clock: Clock = clock or SystemClock()

        self._records: dict[str, ServiceRecord] = {}  # fullname.lower() -> answering now
        self._silent: dict[str, tuple[str, str]] = {}  # fullname.lower() -> (type, fullname)
        self._heard: dict[str, float] = {}  # fullname.lower() -> monotonic time of last answer
        self._misses: dict[str, int] = {}
        self._resolving: dict[str, asyncio.Task[None]] = {}
        self._persisted: dict[str, tuple[tuple[Any, ...], float]] = {}
        self._writes: asyncio.Queue[Callable[[sqlite3.Connection], object] | None] = asyncio.Queue()

        self._zc: AsyncZeroconf | None = None
        self._ear: _Ear | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._main: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._stopping = False

    # -- public ------------------------------------------------------------------------

    async def start(self) -> None:
        """Begin browsing in the background; returns at once and never raises for the network."""
        if self._main is not None:
            return
        self._stopping = False
        if self._store is not None:
            self._writes.put_nowait(lambda conn: registry.mark_source_absent(conn, SOURCE))
            self._writer = asyncio.create_task(self._write_loop(), name="mdns-registry")
        self._main = asyncio.create_task(self._run(), name="mdns-browser")

    async def stop(self) -> None:
        self._stopping = True
        tasks = [t for t in (self._main, *self._resolving.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._main = None
        self._resolving.clear()
        await self._close_zeroconf()
        if self._writer is not None:
            self._writes.put_nowait(None)
            try:
                await asyncio.wait_for(self._writer, timeout=5.0)
            except TimeoutError:
                log.warning("mdns_registry_writer_stuck", pending=self._writes.qsize())
            self._writer = None

    @property
    def browsing(self) -> bool:
        """True once zeroconf's sockets are open and the browse is running."""
        return self._browser is not None

    def lookup(self, service_name: str) -> tuple[str, int] | None:
        """Where the raw-printing service of this name answers now, or None; memory only."""
        record = self._records.get(f"{service_name}.{RAW_TYPE}".lower())
        return record.endpoint if record is not None else None

    def records(self) -> list[ServiceRecord]:
        """Every service answering now, of every browsed type."""
        return sorted(
            self._records.values(),
            key=lambda r: (r.service_name.casefold(), _type_rank(r.service_type)),
        )

    # -- zeroconf lifecycle --------------------------------------------------------------

    async def _run(self) -> None:
        # 1 s, 2 s, 4 s ... up to retry_max; one browser per box, so no jitter is needed.
        backoff = Backoff(min(1.0, self._retry_max), self._retry_max, floor=1.0)
        while True:
            try:
                self._open()
                break
            except Exception as exc:  # any failure to open is retried, never raised to start()
                delay = backoff.failed()
                log.error(
                    "mdns_unavailable",
                    error=f"{type(exc).__name__}: {exc}",
                    interfaces=self._interfaces or "all",
                    retry_in=delay,
                )
                await self._close_zeroconf()
                await self._clock.sleep(delay)
        log.info("mdns_browsing", types=self._types, interfaces=self._interfaces or "all")
        while True:
            await self._clock.sleep(self._refresh_interval)
            try:
                await self._probe_round()
            except Exception:  # a fault in one round must not end discovery for good
                log.exception("mdns_probe_failed")

    def _open(self) -> None:
        zc = self._factory(self._interfaces)
        self._zc = zc
        ear = _Ear(self._on_heard)
        zc.zeroconf.async_add_listener(ear, None)
        self._ear = ear
        # QM (multicast answers) from the first query: with several mDNS stacks on one host
        # (avahi next to us, or tests) a unicast answer goes to just one of the sockets that
        # share port 5353, often not ours.
        self._browser = AsyncServiceBrowser(
            zc.zeroconf,
            self._types,
            handlers=[self._on_service_state],
            question_type=DNSQuestionType.QM,
        )

    async def _close_zeroconf(self) -> None:
        browser, zc, ear = self._browser, self._zc, self._ear
        self._browser = self._zc = self._ear = None
        if browser is not None:
            with contextlib.suppress(Exception):
                await browser.async_cancel()
        if zc is not None:
            if ear is not None:
                zc.zeroconf.async_remove_listener(ear)
            try:
                await asyncio.wait_for(zc.async_close(), timeout=3.0)
            except Exception as exc:
                log.warning("mdns_close_failed", error=f"{type(exc).__name__}: {exc}")

    # -- what the network tells us ----------------------------------------------------------

    def _on_service_state(
        self,
        zeroconf: Zeroconf,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        if self._stopping:
            return
        if state_change is ServiceStateChange.Removed:
            self._forget(name.lower())
        else:
            updated = state_change is ServiceStateChange.Updated
            self._resolve_soon(service_type, name, settle=updated)

    def _on_heard(self, key: str) -> None:
        if key in self._records:
            self._heard[key] = self._clock.monotonic()
        elif key in self._silent:
            self._heard[key] = self._clock.monotonic()
            service_type, fullname = self._silent[key]
            self._resolve_soon(service_type, fullname, settle=False)

    def _resolve_soon(self, service_type: str, fullname: str, *, settle: bool) -> None:
        key = fullname.lower()
        running = self._resolving.get(key)
        if running is not None and not running.done():
            if not settle:
                return
            # An update replaces what an earlier resolve may already have read.
            running.cancel()
        task = asyncio.get_running_loop().create_task(
            self._resolve(service_type, fullname, settle=settle), name=f"mdns-resolve {fullname}"
        )
        self._resolving[key] = task

        def _done(finished: asyncio.Task[None]) -> None:
            if self._resolving.get(key) is finished:
                del self._resolving[key]

        task.add_done_callback(_done)

    async def _resolve(self, service_type: str, fullname: str, *, settle: bool) -> None:
        for attempt in range(2 if settle else 1):
            if attempt:
                # A moved service's old SRV/A records stay in the cache for a second; read again
                # once they are gone so the final answer is the new one.
                await self._clock.sleep(_SETTLE_SECONDS)
            zc = self._zc
            if zc is None:
                return
            info = AsyncServiceInfo(service_type, fullname)
            try:
                complete = await info.async_request(
                    zc.zeroconf, self._resolve_timeout_ms, question_type=DNSQuestionType.QM
                )
            except Exception as exc:
                log.warning("mdns_resolve_failed", service=fullname, error=repr(exc))
                return
            if not complete or not info.port:
                log.info("mdns_resolve_incomplete", service=fullname)
                continue
            self._accept(_record_from_info(info, service_type, self._clock.now()))

    def _accept(self, record: ServiceRecord) -> None:
        key = record.fullname.lower()
        old = self._records.get(key)
        came_back = self._silent.pop(key, None) is not None
        self._records[key] = record
        self._heard[key] = self._clock.monotonic()
        self._misses[key] = 0
        if old is None or old.endpoint != record.endpoint:
            log.info(
                "mdns_service_found" if old is None else "mdns_service_moved",
                service=record.service_name,
                type=type_label(record.service_type),
                address=record.address,
                port=record.port,
                came_back=came_back,
            )
            if record.service_type == RAW_TYPE:
                self._notify(record.service_name, record)
        self._persist(record.service_name)

    def _forget(self, key: str) -> None:
        """The service said goodbye or expired from the cache: drop it entirely."""
        task = self._resolving.pop(key, None)
        if task is not None:
            task.cancel()
        self._silent.pop(key, None)
        self._heard.pop(key, None)
        self._misses.pop(key, None)
        record = self._records.pop(key, None)
        if record is not None:
            self._gone(record, reason="withdrawn")

    def _fall_silent(self, key: str) -> None:
        """The service stopped answering: gone for printing, still asked after."""
        record = self._records.pop(key)
        self._silent[key] = (record.service_type, record.fullname)
        self._gone(record, reason="not_answering")

    def _gone(self, record: ServiceRecord, *, reason: str) -> None:
        log.warning(
            "mdns_service_gone",
            service=record.service_name,
            type=type_label(record.service_type),
            reason=reason,
            last_address=record.address,
            last_port=record.port,
        )
        if record.service_type == RAW_TYPE:
            self._notify(record.service_name, None)
        self._persist(record.service_name)

    def _notify(self, service_name: str, record: ServiceRecord | None) -> None:
        if self._on_change is None:
            return
        try:
            self._on_change(service_name, record)
        except Exception:  # the listener's bug must not stop discovery
            log.exception("mdns_on_change_failed", service=service_name)

    # -- asking after known services ---------------------------------------------------------

    async def _probe_round(self) -> None:
        zc = self._zc
        if zc is None:
            return
        targets = {key: record.fullname for key, record in self._records.items()}
        targets.update({key: fullname for key, (_, fullname) in self._silent.items()})
        if not targets:
            return
        asked_at = self._clock.monotonic()
        ask_srv(zc.zeroconf, targets.values())
        await self._clock.sleep(self._answer_timeout)
        now = self._clock.now()
        for key in targets:
            record = self._records.get(key)
            if record is None:
                continue  # silent ones wake up through _on_heard; removed ones are gone
            if self._heard.get(key, 0.0) >= asked_at - _ANSWER_CREDIT_SECONDS:
                self._misses[key] = 0
                self._records[key] = dataclasses.replace(record, seen_at=now)
                self._persist(record.service_name)
                continue
            self._misses[key] = self._misses.get(key, 0) + 1
            log.info("mdns_service_unanswered", service=record.fullname, misses=self._misses[key])
            if self._misses[key] >= self._missed_answers:
                self._fall_silent(key)

    # -- the registry table ------------------------------------------------------------------

    def _persist(self, service_name: str) -> None:
        """Queue the registry row of one instance name: its best live record, or gone."""
        if self._store is None:
            return
        folded = service_name.casefold()
        live = [r for r in self._records.values() if r.service_name.casefold() == folded]
        if not live:
            self._persisted.pop(folded, None)
            self._writes.put_nowait(
                lambda conn: registry.mark_gone(conn, source=SOURCE, name=service_name)
            )
            return
        best = min(live, key=lambda r: _type_rank(r.service_type))
        details: dict[str, Any] = {
            "type": type_label(best.service_type),
            "host": best.host,
            "addresses": list(best.addresses),
            "txt": best.txt,
            "services": {type_label(r.service_type): r.port for r in live},
        }
        snapshot = (best.address, best.port, repr(sorted(details.items())))
        previous = self._persisted.get(folded)
        now = self._clock.monotonic()
        if (
            previous is not None
            and previous[0] == snapshot
            and now - previous[1] < _LAST_SEEN_WRITE_SECONDS
        ):
            return
        self._persisted[folded] = (snapshot, now)
        seen_at = rfc3339(max(r.seen_at for r in live))
        name, address, port = best.service_name, best.address, best.port
        self._writes.put_nowait(
            lambda conn: registry.upsert_seen(
                conn,
                source=SOURCE,
                name=name,
                address=address,
                port=port,
                details=details,
                seen_at=seen_at,
            )
        )

    async def _write_loop(self) -> None:
        store = self._store
        assert store is not None
        while True:
            unit = await self._writes.get()
            if unit is None:
                return
            try:
                await store.transact(_on_conn(unit))
            except Exception as exc:  # the registry is a record, never a reason to stop browsing
                log.error("mdns_registry_write_failed", error=f"{type(exc).__name__}: {exc}")
