"""When the disk cannot take a write: storage trouble, told apart in one place, and the
storage's health that the daemon's state, sd_notify and the metrics read.

SQLite says SQLITE_FULL ("database or disk is full") or SQLITE_IOERR ("disk I/O error"),
and the transaction is rolled back (`Store.transact` already does that). Nothing of it is
on disk, so nothing of it may be acknowledged: the caller keeps what it had in hand (the
broker's unacknowledged messages, a claimed ticket not yet printed) and tries again once the
disk takes writes again. `Store.transact` turns such an error into `StorageTrouble` and
tells the `StorageHealth` here; a successful commit does not clear it, since a small write
may still fit in the WAL's free pages while the next batch does not: only a probe that
writes `PROBE_BYTES` to a file beside the database and then commits does.

The probe runs from the first refused write until it succeeds, with capped backoff, so a
full disk costs one small write now and then, and no restart: the daemon never exits over
it (systemd would restart it into the same full disk, in a loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import structlog

from edge.backoff import Backoff
from edge.clock import rfc3339_ms
from edge.store import kv
from edge.store.tx import Tx

log = structlog.get_logger(__name__)

T = TypeVar("T")

FULL = "full"
IO_ERROR = "io_error"
LABELS = {FULL: "disk full", IO_ERROR: "disk I/O error"}

# SQLite's primary result codes (the low byte of an extended one).
_SQLITE_IOERR = 10
_SQLITE_FULL = 13
_MESSAGES = {"database or disk is full": FULL, "disk i/o error": IO_ERROR}
_ERRNOS = {errno.ENOSPC: FULL, errno.EDQUOT: FULL, errno.EIO: IO_ERROR}

# What a probe writes beside the database before it calls the disk usable again: enough
# for a batch of orders and their WAL frames, little enough for a nearly full SD card.
PROBE_BYTES = 256 * 1024
PROBE_FILENAME = ".kitchen-edge-space-probe"
PROBE_BASE = 0.25
PROBE_CAP = 5.0


class StorageTrouble(sqlite3.OperationalError):
    """A write the disk refused (full, or an I/O error); it was rolled back, nothing of it
    is stored. `kind` is `full` or `io_error`."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{LABELS[kind]}: {detail}")
        self.kind = kind
        self.detail = detail

    @property
    def label(self) -> str:
        return LABELS[self.kind]


def storage_kind(exc: BaseException | None) -> str | None:
    """`full` or `io_error` when `exc`, or what it was raised from or while handling (a
    ROLLBACK TO that failed because SQLite had already rolled back), is the disk refusing a
    write; else None."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, StorageTrouble):
            return exc.kind
        if isinstance(exc, sqlite3.Error):
            code = getattr(exc, "sqlite_errorcode", None)
            if isinstance(code, int):
                primary = code & 0xFF
                if primary == _SQLITE_FULL:
                    return FULL
                if primary == _SQLITE_IOERR:
                    return IO_ERROR
            text = str(exc).lower()
            for message, kind in _MESSAGES.items():
                if message in text:
                    return kind
        if isinstance(exc, OSError) and exc.errno in _ERRNOS:
            return _ERRNOS[exc.errno]
        # As a traceback follows it: the cause, else the context unless it was suppressed.
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
        seen += 1
    return None


def is_storage_error(exc: BaseException) -> bool:
    """For code that catches everything inside a transaction (one odd message must not stop
    the kitchen): a storage error is not the message's fault, re-raise it."""
    return storage_kind(exc) is not None


def log_failure(logger: Any, event: str, exc: BaseException, **fields: Any) -> None:
    """For a loop that logs a failure and tries again later: a storage trouble is waited out
    and says so in one line (no traceback at every retry while the disk is full); anything
    else is unexpected and keeps its traceback. Call it inside the `except` block."""
    kind = storage_kind(exc)
    if kind is not None:
        logger.warning(event, storage=kind, error=str(exc), **fields)
    else:
        logger.exception(event, error=repr(exc), **fields)


@dataclass(frozen=True)
class StorageState:
    state: str                    # ok | full | io_error
    since: str                    # RFC 3339, UTC
    detail: str | None = None

    @property
    def ok(self) -> bool:
        return self.state == "ok"

    @property
    def label(self) -> str:
        """What the edge state and sd_notify say: `ok` or `degraded: disk full`."""
        return "ok" if self.ok else f"degraded: {LABELS[self.state]}"


def _utc_now() -> str:
    return rfc3339_ms(datetime.now(UTC))


class StorageHealth:
    """Whether the disk takes writes, since when; who waits for it to, and the probe."""

    def __init__(self, directory: Path, *,
                 transact: Callable[[Callable[[Tx], None]], Awaitable[None]] | None = None,
                 ) -> None:
        self.directory = directory
        # The store's `transact`, for the probe's one small durable write: the file proves
        # there is space, the commit that SQLite can use it.
        self._transact = transact
        self.current = StorageState("ok", _utc_now())
        self.failures = 0                 # writes refused since the daemon started
        self.probes = 0
        self._listeners: list[Callable[[StorageState], None]] = []
        self._ok: asyncio.Event | None = None
        self._probe: asyncio.Task[None] | None = None
        self._backoff = Backoff(PROBE_BASE, PROBE_CAP, floor=0.5)
        self.degraded_since: float | None = None      # monotonic

    @property
    def ok(self) -> bool:
        return self.current.ok

    def subscribe(self, fn: Callable[[StorageState], None]) -> Callable[[], None]:
        """`fn(state)` on the event loop at every change of state."""
        self._listeners.append(fn)
        return lambda: self._listeners.remove(fn) if fn in self._listeners else None

    def refused(self, exc: BaseException) -> StorageTrouble | None:
        """`exc` came out of a write transaction: the StorageTrouble to raise instead, the
        health degraded, when it is the disk refusing; None when it is something else."""
        kind = storage_kind(exc)
        if kind is None:
            return None
        self.failures += 1
        detail = str(exc)
        if self.current.state != kind:
            log.error("storage_degraded", storage=kind, error=detail,
                      hint="nothing is acknowledged until the disk takes writes again")
            self.degraded_since = time.monotonic()
            self._set(StorageState(kind, _utc_now(), detail))
        # Probed from now even if nobody waits (a refused screen action, say): the state
        # must come back to ok by itself.
        self._ensure_probe()
        return exc if isinstance(exc, StorageTrouble) else StorageTrouble(kind, detail)

    def committed(self) -> None:
        """A real write committed: the disk held up after a recovery, so the probe's backoff
        starts from the bottom next time (a flapping disk keeps it growing)."""
        if self.ok and self._backoff.failures:
            self._backoff.succeeded()

    async def wait_ok(self) -> None:
        """Until the disk takes writes again (probed here, with backoff, while anyone waits)."""
        if self.ok:
            return
        event = self._event()
        self._ensure_probe()
        await event.wait()

    async def patiently(self, write: Callable[[], Awaitable[T]], *, what: str) -> T:
        """`write()` (a transaction), waiting for the disk and trying again as long as the
        disk refuses it. For a writer whose work cannot go on without that write."""
        while True:
            try:
                return await write()
            except StorageTrouble as exc:
                log.warning("storage_write_waiting", what=what, storage=exc.kind)
                await self.wait_ok()

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
            self._probe = None

    # -- inside ----------------------------------------------------------------------------

    def _ensure_probe(self) -> None:
        if self._probe is None or self._probe.done():
            self._probe = asyncio.get_running_loop().create_task(
                self._probe_until_ok(), name="storage-probe")

    def _event(self) -> asyncio.Event:
        if self._ok is None:
            self._ok = asyncio.Event()
            if self.ok:
                self._ok.set()
        return self._ok

    def _set(self, state: StorageState) -> None:
        self.current = state
        event = self._event()
        if state.ok:
            event.set()
        else:
            event.clear()
        for fn in list(self._listeners):
            try:
                fn(state)
            except Exception:  # one listener failing must not hide the state from the rest
                log.exception("storage_listener_failed")

    async def _probe_until_ok(self) -> None:
        while not self.ok:
            await asyncio.sleep(self._backoff.failed())
            self.probes += 1
            try:
                await asyncio.to_thread(_write_probe_file, self.directory / PROBE_FILENAME)
                if self._transact is not None:
                    await self._transact(_stamp_probe(_utc_now()))
            except (OSError, sqlite3.Error) as exc:
                if storage_kind(exc) is None:
                    log.warning("storage_probe_failed", error=str(exc))
                continue
            was = self.degraded_since
            self.degraded_since = None
            log.info("storage_recovered", was=self.current.state, probes=self.probes,
                     degraded_s=None if was is None else round(time.monotonic() - was, 1))
            self._set(StorageState("ok", _utc_now()))


def _stamp_probe(stamp: str) -> Callable[[Tx], None]:
    return lambda tx: kv.put(tx.conn, "storage_probe", stamp)


def _write_probe_file(path: Path) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            chunk = b"\0" * 65536
            left = PROBE_BYTES
            while left > 0:
                left -= os.write(fd, chunk[:left])
            os.fsync(fd)
        finally:
            os.close(fd)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


__all__ = [
    "FULL", "IO_ERROR", "PROBE_BYTES", "StorageHealth", "StorageState", "StorageTrouble",
    "is_storage_error", "log_failure", "storage_kind",
]
