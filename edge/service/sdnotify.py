"""The systemd notification protocol (sd_notify) spoken over a plain datagram socket.

No libsystemd binding: the protocol is one AF_UNIX datagram of `KEY=value` lines sent to the
path in NOTIFY_SOCKET (a leading `@` means the Linux abstract namespace). Without NOTIFY_SOCKET
every call is a no-op, so the daemon runs the same way from a terminal.

The watchdog pinger is a coroutine on the daemon's own event loop on purpose: if anything
blocks the loop (a synchronous call that hangs, a runaway CPU loop), the pings stop, systemd
sees WatchdogSec pass in silence and restarts the service.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable

import structlog

log = structlog.get_logger(__name__)

# Without a watchdog, STATUS is still refreshed this often when a status function is given.
_STATUS_ONLY_PERIOD = 10.0


def _address(path: str) -> str | bytes:
    if path.startswith("@"):
        return b"\0" + path[1:].encode()
    return path


def _one_line(text: str) -> str:
    # A newline would end the STATUS= field and start a bogus assignment.
    return " ".join(text.split())


class Notifier:
    """Sends READY/STATUS/WATCHDOG/RELOADING/STOPPING to the service manager, if there is one."""

    def __init__(self, socket_path: str | None = None) -> None:
        path = socket_path if socket_path is not None else os.environ.get("NOTIFY_SOCKET")
        self._path = path or None
        self._address: str | bytes | None = _address(path) if path else None
        self._sock: socket.socket | None = None
        self._last_status: str | None = None
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def ready(self, status: str | None = None) -> None:
        lines = ["READY=1"]
        if status is not None:
            lines.append(f"STATUS={_one_line(status)}")
            self._last_status = _one_line(status)
        self.notify("\n".join(lines))

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    def status(self, text: str) -> None:
        self._last_status = _one_line(text)
        self.notify(f"STATUS={self._last_status}")

    def watchdog(self) -> None:
        self.notify("WATCHDOG=1")

    def reloading(self) -> None:
        """Announce a reload; systemd waits for the next `ready()` to call it finished."""
        # systemd compares MONOTONIC_USEC with its own CLOCK_MONOTONIC to match the reload.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notify(f"RELOADING=1\nMONOTONIC_USEC={usec}")

    def watchdog_interval(self) -> float | None:
        """Seconds between pings (half of WATCHDOG_USEC), or None when no watchdog is asked for."""
        if not self.enabled:
            return None
        raw = os.environ.get("WATCHDOG_USEC")
        if not raw:
            return None
        pid = os.environ.get("WATCHDOG_PID")
        if pid:
            try:
                if int(pid) != os.getpid():
                    # The watchdog belongs to another process (we were forked or exec'd by it).
                    return None
            except ValueError:
                return None
        try:
            usec = int(raw)
        except ValueError:
            return None
        if usec <= 0:
            return None
        return usec / 2 / 1_000_000

    async def run_watchdog(self, status_fn: Callable[[], str] | None = None) -> None:
        """Ping the watchdog (and refresh STATUS when it changed) until cancelled."""
        if not self.enabled:
            return
        interval = self.watchdog_interval()
        if interval is None and status_fn is None:
            return
        period = interval if interval is not None else _STATUS_ONLY_PERIOD
        while True:
            lines: list[str] = []
            if interval is not None:
                lines.append("WATCHDOG=1")
            if status_fn is not None:
                text = self._current_status(status_fn)
                if text is not None and text != self._last_status:
                    self._last_status = text
                    lines.append(f"STATUS={text}")
            if lines:
                self.notify("\n".join(lines))
            await asyncio.sleep(period)

    def notify(self, message: str) -> bool:
        """Send one raw notification; True when the datagram left. Never raises."""
        if self._address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                # Never stall the event loop on a full receiver queue: a lost ping is better.
                self._sock.setblocking(False)
            self._sock.sendto(message.encode(), self._address)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("sd_notify_failed", socket=self._path, error=str(exc))
            return False
        self._warned = False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    @staticmethod
    def _current_status(status_fn: Callable[[], str]) -> str | None:
        try:
            return _one_line(status_fn())
        except Exception as exc:
            # A broken summary must not cost the watchdog ping.
            log.warning("sd_notify_status_failed", error=repr(exc))
            return None
