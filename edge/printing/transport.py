"""How ticket bytes reach a printer, and how its real-time status comes back.

A `Transport` is one printer's channel. The spooler calls `status()` to decide whether to
print, `send()` with a whole ticket, and `close()` on shutdown. Every failure is a
`PrinterUnavailable` with a short reason for the operator; its `may_have_printed` tells the
spooler whether bytes of the ticket may have reached the printer (a resend then carries
MAY BE DUPLICATE).

`TcpTransport` talks raw ESC/POS on a TCP port (9100). Some printers accept one connection
at a time, so it keeps one persistent connection, serialises every use with a lock and
reconnects after any error. `send` succeeds only once the printer has answered a DLE EOT sent
behind the ticket (`confirm=True`, the default), so a ticket is never reported printed when
it only reached the kernel's socket buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import structlog

from edge.printing.status import (
    OFFLINE_BIT,
    QUERY_ERROR_CAUSE,
    QUERY_OFFLINE_CAUSE,
    QUERY_PAPER,
    QUERY_PRINTER,
    PrinterStatus,
    is_status_reply,
    parse_status,
)

log = structlog.get_logger(__name__)

Address = tuple[str, int]


class PrinterUnavailable(Exception):
    """The printer cannot be used now: cannot connect, timed out, reset, unplugged, denied."""

    def __init__(self, reason: str, *, may_have_printed: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        # True when some bytes of the ticket may already be on paper.
        self.may_have_printed = may_have_printed


class _ConnectionLost(PrinterUnavailable):
    """The connection broke (as opposed to a printer that is there but silent)."""


class Transport(Protocol):
    name: str

    async def status(self) -> PrinterStatus:
        """Ask the printer now; raises PrinterUnavailable."""
        ...

    async def send(self, data: bytes) -> None:
        """Hand over a whole ticket; raises PrinterUnavailable (a partial write raises)."""
        ...

    async def close(self) -> None: ...


@dataclass
class _Connection:
    address: Address
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    @property
    def dead(self) -> bool:
        # The printer closed an idle connection: writing there would lose the ticket.
        return self.reader.at_eof() or self.writer.transport.is_closing()


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
        confirm: bool = True,
    ) -> None:
        self.name = name
        self._confirm = confirm
        self._address = address
        self._connect_timeout = connect_timeout
        self._write_timeout = write_timeout
        self._status_timeout = status_timeout
        self._lock = asyncio.Lock()
        self._conn: _Connection | None = None

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

    async def send(self, data: bytes) -> None:
        async with self._lock:
            conn, _ = await self._connection()
            drained = False
            try:
                # With `confirm`, a DLE EOT 1 rides behind the ticket: its reply proves the
                # printer read every byte before it. A drained socket only proves the kernel
                # took them, and a printer that hung up a moment ago loses them silently.
                conn.writer.write(data + QUERY_PRINTER if self._confirm else data)
                async with asyncio.timeout(self._write_timeout):
                    await conn.writer.drain()
                    drained = True
                    confirmation = await self._reply(conn) if self._confirm else None
                if confirmation is not None and confirmation & OFFLINE_BIT:
                    # The printer took the bytes but cannot print them now (paper ran out,
                    # the cover opened): the ticket may sit in its buffer or be half on paper.
                    raise PrinterUnavailable("printer went offline under the ticket",
                                             may_have_printed=True)
            except TimeoutError:
                self._abort("write timed out")
                if drained:
                    why = f"printer did not confirm the ticket within {self._write_timeout:g}s"
                else:
                    why = f"write timed out after {self._write_timeout:g}s (printer not reading)"
                raise PrinterUnavailable(why, may_have_printed=True) from None
            except asyncio.IncompleteReadError:
                self._abort("closed by printer")
                raise PrinterUnavailable(
                    "connection closed by printer during the ticket", may_have_printed=True
                ) from None
            except (OSError, RuntimeError) as exc:
                self._abort("write failed")
                raise PrinterUnavailable(
                    f"connection lost while writing: {_describe(exc)}", may_have_printed=True
                ) from None
            except BaseException:
                # Cancelled mid-write: the printer may hold half a ticket; start clean.
                self._abort("cancelled")
                raise

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
            log.info("tcp_printer_closed", printer=self.name)

    async def _connection(self) -> tuple[_Connection, bool]:
        """The open connection, or a new one; True when it was just made."""
        address = self._address()
        conn = self._conn
        if conn is not None:
            if address is not None and address != conn.address:
                log.info(
                    "tcp_printer_address_changed",
                    printer=self.name,
                    old=_fmt(conn.address),
                    new=_fmt(address),
                )
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
        self._conn = _Connection(address, reader, writer)
        log.info("tcp_printer_connected", printer=self.name, address=_fmt(address))
        return self._conn, True

    async def _query(self, conn: _Connection) -> PrinterStatus:
        try:
            async with asyncio.timeout(self._status_timeout):
                eot1 = await self._ask(conn, QUERY_PRINTER)
                eot2 = await self._ask(conn, QUERY_OFFLINE_CAUSE)
                eot4 = await self._ask(conn, QUERY_PAPER)
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
            # Automatic Status Back bytes and XON/XOFF share the channel; skip them.
            if is_status_reply(byte):
                return byte

    def _abort(self, why: str) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.writer.transport.abort()
            log.info("tcp_printer_disconnected", printer=self.name, reason=why)


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
