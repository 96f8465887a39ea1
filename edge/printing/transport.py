"""How ticket bytes reach a printer, and how its real-time status comes back.

A `Transport` is one printer's channel, used by that printer's spooler worker only. The
contract every transport keeps (docs/architecture.md, "What a printer may hold"):

- `send()` asks the printer's status on the connection it is about to use and writes no byte
  of the ticket unless that answer says ready. Every failure before the first byte is a
  `PrinterUnavailable` (`NotReady` when the printer answered, but not "ready"): nothing of
  the ticket can be in the printer, so the job may go anywhere, unmarked.
- Once a byte of the ticket may have been written, `send()` no longer raises: it returns a
  `Delivery` saying what is known. `CONFIRMED`: the printer answered a DLE EOT sent behind
  the ticket, online, so it read every byte while able to print. `HELD`: it answered, but
  offline (paper ran out, the cover opened under the ticket): the ticket sits in its receive
  buffer and prints when the fault clears. `LOST`: no answer (dropped, reset, stalled): the
  bytes may be on paper, in the buffer, or gone with a power cycle. Either way the spooler
  must never write those bytes into that printer again.
- `generation` counts connections. A ticket HELD on generation N is still in the buffer the
  printer will print when a status on generation N says ready again; after a reconnect that
  is no longer knowable.

`TcpTransport` talks raw ESC/POS on a TCP port (9100). Some printers accept one connection at
a time, so it keeps one persistent connection and reconnects after any error. Connecting and
disconnecting are logged at debug level: a dead printer is retried for hours, and its state
changes are what the spooler logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import fcntl
import socket
import termios
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import structlog

from edge.printing.status import (
    ASB_ENABLE,
    ASB_FRAME,
    OFFLINE_BIT,
    QUERY_ERROR_CAUSE,
    QUERY_PRINTER,
    STATUS_QUERIES,
    PrinterStatus,
    is_asb_header,
    is_status_reply,
    parse_asb,
    parse_status,
)

log = structlog.get_logger(__name__)

Address = tuple[str, int]

# How often a ticket in flight is checked for progress (bytes leaving our socket).
_PROGRESS_TICK = 0.25
# Status Back frames that follow one another this closely are one change.
_BURST = 0.05
# Bytes a second the slowest printer we wait for reads (the slowest serial-speed ones).
_SLOWEST_PRINTER = 256


class PrinterUnavailable(Exception):
    """No byte of the ticket was written: cannot connect, no status answer, not ready."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NotReady(PrinterUnavailable):
    """The printer answered, and the answer was not "ready" (paper out, cover open...)."""

    def __init__(self, status: PrinterStatus) -> None:
        super().__init__(f"printer not ready: {status.state}")
        self.status = status


class Outcome(enum.StrEnum):
    CONFIRMED = "confirmed"
    HELD = "held"
    LOST = "lost"


@dataclass(frozen=True)
class Delivery:
    """What is known once ticket bytes may be in the printer."""

    outcome: Outcome
    generation: int
    reason: str | None = None
    status: PrinterStatus | None = None


class Transport(Protocol):
    name: str

    @property
    def generation(self) -> int:
        """Which connection (or device opening) the transport is on; +1 at every new one."""
        ...

    async def status(self) -> PrinterStatus:
        """Ask the printer now; raises PrinterUnavailable."""
        ...

    async def send(self, data: bytes) -> Delivery:
        """Status first, then the whole ticket; see the module docstring."""
        ...

    async def watch(self, within: float) -> PrinterStatus | None:
        """Wait up to `within` seconds for the printer to push a status change (Automatic Status
        Back); None when nothing came or the transport cannot be told."""
        ...

    async def close(self) -> None: ...


@dataclass
class _Connection:
    address: Address
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    generation: int

    @property
    def dead(self) -> bool:
        # The printer closed an idle connection: writing there would lose the ticket.
        return self.reader.at_eof() or self.writer.transport.is_closing()


class _Lost(Exception):
    """The connection failed after ticket bytes were written."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TcpTransport:
    """Raw ESC/POS over TCP (port 9100), with DLE EOT real-time status on the same socket."""

    def __init__(
        self,
        address: Callable[[], Address | None],
        *,
        name: str,
        connect_timeout: float = 3.0,
        write_timeout: float = 5.0,
        status_timeout: float = 1.5,
        status_back: bool = False,
    ) -> None:
        self.name = name
        self._address = address
        self._connect_timeout = connect_timeout
        self._write_timeout = write_timeout
        self._status_timeout = status_timeout
        self._status_back = status_back
        self._lock = asyncio.Lock()
        self._conn: _Connection | None = None
        self._generation = 0

    @property
    def generation(self) -> int:
        return self._generation

    async def status(self) -> PrinterStatus:
        async with self._lock:
            conn, fresh = await self._connection()
            try:
                return await self._query(conn)
            except _ConnectionLost:
                if fresh:
                    raise
            # A reused connection the printer had closed since: asking again is harmless.
            conn, _ = await self._connection()
            return await self._query(conn)

    async def send(self, data: bytes) -> Delivery:
        async with self._lock:
            conn, fresh = await self._connection()
            try:
                status = await self._query(conn)
            except _ConnectionLost:
                if fresh:
                    raise
                conn, _ = await self._connection()
                status = await self._query(conn)
            if not status.ready:
                raise NotReady(status)
            # From here on bytes of the ticket may be in the printer: no more raising.
            try:
                confirmation = await self._write_and_confirm(conn, data)
            except _Lost as lost:
                return Delivery(Outcome.LOST, conn.generation, lost.reason)
            except BaseException:
                # Cancelled mid-ticket: the printer may hold half of it; start clean.
                self._abort("cancelled")
                raise
            if confirmation & OFFLINE_BIT:
                # The printer read the ticket but cannot print it now. Its cause, asked on the
                # same connection, goes to the operator; the ticket waits in its buffer.
                try:
                    held = await self._query(conn)
                except PrinterUnavailable as exc:
                    return Delivery(Outcome.HELD, conn.generation, exc.reason)
                return Delivery(Outcome.HELD, conn.generation,
                                f"printer went {held.state} under the ticket", held)
            return Delivery(Outcome.CONFIRMED, conn.generation)

    async def watch(self, within: float) -> PrinterStatus | None:
        """The newest Automatic Status Back frame the printer pushed, waiting up to `within`
        seconds for one. Only on a live connection with status back enabled."""
        if not self._status_back:
            return None
        async with self._lock:
            conn = self._conn
            if conn is None or conn.dead:
                return None
            latest: PrinterStatus | None = None
            wait = within
            while True:
                try:
                    async with asyncio.timeout(wait):
                        frame = await self._frame(conn)
                except TimeoutError:
                    return latest
                except (asyncio.IncompleteReadError, OSError):
                    self._abort("closed by printer")
                    return latest
                latest = parse_asb(frame)
                # A change often comes as a burst (cover closed, then paper sensed): take
                # what follows at once, answer with the last.
                wait = _BURST

    async def close(self) -> None:
        async with self._lock:
            conn, self._conn = self._conn, None
            if conn is None:
                return
            conn.writer.close()
            try:
                async with asyncio.timeout(1.0):
                    await conn.writer.wait_closed()
            except TimeoutError:
                conn.writer.transport.abort()  # unsent bytes must not hold shutdown up
            except OSError:
                pass
            log.debug("tcp_printer_closed", printer=self.name)

    # -- connection --------------------------------------------------------------------

    async def _connection(self) -> tuple[_Connection, bool]:
        """The open connection, or a new one; True when it was just made."""
        address = self._address()
        conn = self._conn
        if conn is not None:
            if address is not None and address != conn.address:
                log.info("tcp_printer_address_changed", printer=self.name,
                         old=_fmt(conn.address), new=_fmt(address))
                self._abort("address changed")
            elif address is None:
                # The service said goodbye or stopped answering: whatever still listens
                # there is no longer the printer the config names.
                self._abort("service withdrawn")
            elif conn.dead:
                self._abort("closed by printer")
            else:
                return conn, False
        if address is None:
            raise PrinterUnavailable("service not resolved")
        host, port = address
        try:
            async with asyncio.timeout(self._connect_timeout):
                reader, writer = await asyncio.open_connection(host, port)
        except TimeoutError:
            raise PrinterUnavailable(
                f"connect to {_fmt(address)} timed out after {self._connect_timeout:g}s"
            ) from None
        except OSError as exc:
            raise PrinterUnavailable(
                f"cannot connect to {_fmt(address)}: {_describe(exc)}"
            ) from None
        _tune(writer)
        self._generation += 1
        self._conn = _Connection(address, reader, writer, self._generation)
        if self._status_back:
            writer.write(ASB_ENABLE)
        log.debug("tcp_printer_connected", printer=self.name, address=_fmt(address),
                  generation=self._generation)
        return self._conn, True

    def _abort(self, why: str) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.writer.transport.abort()
            log.debug("tcp_printer_disconnected", printer=self.name, reason=why)

    # -- status ------------------------------------------------------------------------

    async def _query(self, conn: _Connection) -> PrinterStatus:
        try:
            async with asyncio.timeout(self._status_timeout):
                # One round trip: the three questions go together and are answered in order.
                conn.writer.write(STATUS_QUERIES)
                await conn.writer.drain()
                eot1 = await self._reply(conn)
                eot2 = await self._reply(conn)
                eot4 = await self._reply(conn)
                eot3 = await self._ask(conn, QUERY_ERROR_CAUSE) if eot2 & 0x40 else None
        except TimeoutError:
            # A late reply would be read as the answer to the next question: start clean.
            self._abort("status timed out")
            raise PrinterUnavailable(f"no status reply within {self._status_timeout:g}s") from None
        except asyncio.IncompleteReadError:
            self._abort("closed by printer")
            raise _ConnectionLost("connection closed by printer") from None
        except (OSError, RuntimeError) as exc:
            self._abort("status failed")
            raise _ConnectionLost(f"connection lost: {_describe(exc)}") from None
        except BaseException:
            self._abort("cancelled")
            raise
        return parse_status(eot1, eot2, eot4, eot3)

    @classmethod
    async def _ask(cls, conn: _Connection, query: bytes) -> int:
        conn.writer.write(query)
        await conn.writer.drain()
        return await cls._reply(conn)

    @staticmethod
    async def _reply(conn: _Connection) -> int:
        while True:
            byte = (await conn.reader.readexactly(1))[0]
            # Automatic Status Back frames and XON/XOFF share the channel; skip them.
            if is_status_reply(byte):
                return byte

    @staticmethod
    async def _frame(conn: _Connection) -> bytes:
        """The next ASB frame. Cancelled half-way, the rest of the frame is skipped by the
        next reader: no byte of a frame after its first looks like a header or a reply."""
        while True:
            byte = (await conn.reader.readexactly(1))[0]
            if is_asb_header(byte):
                return bytes([byte]) + await conn.reader.readexactly(ASB_FRAME - 1)

    # -- ticket ------------------------------------------------------------------------

    async def _write_and_confirm(self, conn: _Connection, data: bytes) -> int:
        """Write the ticket with a DLE EOT 1 behind it; the reply byte. Raises _Lost.

        The reply proves the printer read every byte before it: a drained socket only proves
        the kernel took them. A slow printer is given time as long as it keeps reading (see
        `_until_done`), not a fixed deadline for the whole ticket."""
        writer = conn.writer
        try:
            writer.write(data + QUERY_PRINTER)
            reply = asyncio.ensure_future(self._reply(conn))
            try:
                await self._until_done(conn, reply, len(data))
            finally:
                if not reply.done():
                    reply.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await reply
            return reply.result()
        except TimeoutError:
            self._abort("write timed out")
            raise _Lost(f"printer stopped reading for {self._write_timeout:g}s "
                        "during the ticket") from None
        except asyncio.IncompleteReadError:
            self._abort("closed by printer")
            raise _Lost("connection closed by printer during the ticket") from None
        except (OSError, RuntimeError) as exc:
            self._abort("write failed")
            raise _Lost(f"connection lost during the ticket: {_describe(exc)}") from None

    async def _until_done(self, conn: _Connection, reply: asyncio.Future[int],
                          size: int) -> None:
        """Wait for the reply while the printer keeps taking bytes. TimeoutError when bytes
        wait to leave and none moved for `write_timeout`; or, once the printer's side has
        them all (its kernel acknowledged them, its own reading is invisible from here),
        after `write_timeout` plus the time the slowest printer takes to read the ticket."""
        loop = asyncio.get_running_loop()
        last_left = _unsent(conn)
        moved_at = loop.time()
        tail = self._write_timeout + size / _SLOWEST_PRINTER
        while True:
            done, _ = await asyncio.wait({reply}, timeout=_PROGRESS_TICK)
            if done:
                return
            left = _unsent(conn)
            now = loop.time()
            if left != last_left:
                moved_at = now
            last_left = left
            allowed = tail if left == 0 else self._write_timeout
            if now - moved_at >= allowed:
                raise TimeoutError


class _ConnectionLost(PrinterUnavailable):
    """The connection broke (as opposed to a printer that is there but silent)."""


def _unsent(conn: _Connection) -> int:
    """Bytes not yet taken by the printer: asyncio's buffer plus what the kernel has not had
    acknowledged (SIOCOUTQ). Falls back to asyncio's buffer alone where the ioctl fails."""
    pending = conn.writer.transport.get_write_buffer_size()
    sock = conn.writer.get_extra_info("socket")
    if sock is None:
        return pending
    try:
        raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except OSError:
        return pending
    return pending + int.from_bytes(raw, "little")


def _tune(writer: asyncio.StreamWriter) -> None:
    # drain() must mean "handed to the kernel", not "below the high-water mark".
    writer.transport.set_write_buffer_limits(high=0)
    sock = writer.get_extra_info("socket")
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # A printer switched off while idle is noticed without waiting for a ticket.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for option, value in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3)):
            if hasattr(socket, option):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


def _fmt(address: Address) -> str:
    return f"{address[0]}:{address[1]}"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


__all__ = ["Delivery", "NotReady", "Outcome", "PrinterUnavailable", "TcpTransport", "Transport"]
