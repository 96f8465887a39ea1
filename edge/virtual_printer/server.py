"""The virtual printer: an ESC/POS TCP server that records every ticket it prints.

One printer, like the hardware: one print engine (modes carry over between connections),
fed by every connection in arrival order, each connection with its own tokenizer because a
command can be split across reads. Status queries (DLE EOT n, GS r n) are answered the
moment they are read, mid-job or while the paper is out.

States (see `status.PrinterState`):
- paper_out, cover_open, error: the printer is offline in the ESC/POS sense. Data keeps
  arriving into the receive buffer and is held there; it prints, in order, when the
  printer is put back online (or paper_near_end). Status queries are still answered.
- offline: powered off. The listening socket is closed, so connecting is refused
  (ECONNREFUSED); open connections are aborted (RST); the receive buffer, the ticket being
  printed and all modes are lost. Back online, it listens again on the same port.

The receive buffer has a limit (`buffer_bytes`, 4096 by default like a TM-T88's small receive
buffer; 0 = unlimited). While the printer holds data and the held bytes (with any command
still incomplete) reach the limit, it stops reading its sockets (asyncio `pause_reading`), so
the sender's writes block once the kernel buffers are full: TCP back-pressure. The listening
socket's SO_RCVBUF is set to the same size, so "the kernel buffers" are a few KB, as with a
printer's network interface, not the megabytes loopback would allow. It reads again when the
fault clears and the buffer drains. A printer whose input buffer is full reads nothing, so
status queries sent on a stopped connection are not read and not answered either; ASB
(below) still reaches the host, because writing does not need reading. When online, data
prints as it arrives and the limit does not apply.

Automatic Status Back: GS a n with n != 0 makes the printer send the four ASB bytes
(`status.asb_status`) on that connection at once and again whenever a status item n selects
changes, until GS a 0. Unlike a real TM-T88, which runs GS a in buffer order (so behind held
data it waits for the fault to clear), GS a is acted on when read, like a status query, and
is not part of a job: a host that enables ASB while the paper is out gets the paper-out
status at once and the recovery later.

Fault modes (`faults.Mode`: normal, hung, drop, slow), armed state changes (after N bytes of
print data or N cuts) and `power_cycle` make the printer as unkind as a real one; see
`faults`. The evidence a test asserts on, every connection and every received ticket, is in
`evidence`.

A job ends at a cut. When a connection ends in the middle of a job, what was printed so far
is recorded as a job with `cut = None`; a job that printed nothing is dropped. A job's
`first_byte_at` is the wall-clock time its first byte was read from the socket (status
queries do not start a job); `completed_at` is when its cut was processed.

For each job: DIR/NNNN.bin (the bytes), DIR/NNNN.txt (see `model` for the format),
DIR/NNNN.png (rendered in a worker thread after the job is recorded, unless png=False),
and a line in DIR/jobs.jsonl.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import structlog

from edge.virtual_printer.codepages import for_profile
from edge.virtual_printer.evidence import ConnectionRecord, ReceivedTicket
from edge.virtual_printer.faults import ArmedChange, Mode, ModeSettings, TokenBucket
from edge.virtual_printer.interpreter import DEFAULT_PAPER_DOTS, Interpreter
from edge.virtual_printer.model import Job, Page, job_key_of
from edge.virtual_printer.protocol import Token, Tokenizer
from edge.virtual_printer.render import write_png
from edge.virtual_printer.status import (
    PrinterState,
    asb_changed,
    asb_status,
    dle_eot_reply,
    gs_r_reply,
)

log = structlog.get_logger(__name__)

DEFAULT_BUFFER_BYTES = 4096
_READ_CHUNK = 65536
_ETHERNET_MSS = 1460
# Closed connections remembered for GET /connections: a sender reconnecting 60 times a
# second fills this in under three minutes, long enough for any test window.
_CONNECTION_LOG = 10_000


class _Connection(asyncio.BufferedProtocol):
    """One TCP connection. Buffered, so the printer decides how many bytes each read takes:
    never more than the room left in the receive buffer or the slow mode's budget."""

    def __init__(self, printer: VirtualPrinter, number: int) -> None:
        self._printer = printer
        self.tokenizer = Tokenizer()
        self.transport: asyncio.Transport | None = None
        self.record = ConnectionRecord(number=number, peer="?", accepted_at=time.time())
        self.reading = True
        self.asb = 0  # GS a n in force on this connection
        self.ticket: ReceivedTicket | None = None
        self.view: Interpreter | None = None  # renders what this connection sent
        self._buffer: bytearray | None = None  # allocated on the first read

    @property
    def peer(self) -> str:
        return self.record.peer

    @property
    def open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.record.peer = f"{peer[0]}:{peer[1]}"
        self._printer._connected(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        # Never empty (asyncio refuses that); reading is paused whenever the room is 0.
        room = min(max(self._printer._read_room(self), 1), _READ_CHUNK)
        if self._buffer is None:
            self._buffer = bytearray(_READ_CHUNK)
        return memoryview(self._buffer)[:room]

    def buffer_updated(self, nbytes: int) -> None:
        assert self._buffer is not None
        self._printer._read(self, bytes(self._buffer[:nbytes]))

    def eof_received(self) -> bool | None:
        return None  # the sender is done: close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._printer._disconnected(self, exc)

    def write(self, data: bytes) -> None:
        if self.open:
            assert self.transport is not None
            self.transport.write(data)

    def set_reading(self, want: bool) -> None:
        if want is self.reading or not self.open:
            return
        assert self.transport is not None
        self.reading = want
        if want:
            self.transport.resume_reading()
        else:
            self.transport.pause_reading()

    def close(self, closed_by: str, *, abort: bool = False) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.record.closed_by = self.record.closed_by or closed_by
        if abort:
            self.transport.abort()
        else:
            self.transport.close()


@dataclass
class _OpenJob:
    peer: str
    first_byte_at: float
    last_conn: _Connection
    raw: bytearray = field(default_factory=bytearray)
    # Bytes each received ticket gave this job: lost with it if the power goes first.
    sources: dict[int, tuple[ReceivedTicket, int]] = field(default_factory=dict)


# A held item: a command, or None for "this connection ended here", with its received ticket.
_Held = tuple[Token | None, _Connection, float, ReceivedTicket | None]


class VirtualPrinter:
    """In-process API; `edge.virtual_printer.control` serves the same over HTTP."""

    def __init__(
        self,
        out_dir: Path | str,
        *,
        host: str = "127.0.0.1",
        port: int = 9100,
        profile: str = "default",
        png: bool = True,
        paper_dots: int | None = None,
        buffer_bytes: int = DEFAULT_BUFFER_BYTES,
        mode: ModeSettings | None = None,
    ) -> None:
        if buffer_bytes < 0:
            raise ValueError("buffer_bytes must be >= 0 (0 = unlimited)")
        self.out_dir = Path(out_dir)
        self.host = host
        self._port = port
        self.profile = profile
        self.png = png
        self.buffer_bytes = buffer_bytes
        self._codepages = for_profile(profile)
        self.paper_dots = paper_dots or self._codepages.media_width_dots() or DEFAULT_PAPER_DOTS
        self._engine = Interpreter(self._codepages, self.paper_dots)
        self._state = PrinterState.ONLINE
        self._state_since = time.time()
        self._last_powered = PrinterState.ONLINE  # what a power cycle comes back to
        self._mode = mode or ModeSettings()
        self._bucket = TokenBucket(self._mode.bytes_per_second)
        self._refill: asyncio.TimerHandle | None = None
        self._armed: ArmedChange | None = None
        self._power_task: asyncio.Task[None] | None = None
        self._power_on_at: float | None = None
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._connection_log: deque[ConnectionRecord] = deque(maxlen=_CONNECTION_LOG)
        self._connections_total = 0
        self._held: list[_Held] = []
        self._held_bytes = 0
        self._open: _OpenJob | None = None
        self._jobs: list[Job] = []
        self._seq = 0
        self._received: list[ReceivedTicket] = []
        self._received_seq = 0
        self._changed = asyncio.Event()
        self._renderer: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._jsonl: Path = self.out_dir / "jobs.jsonl"

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.png:
            self._renderer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vprinter-png")
        await self._listen()
        log.info("printer_started", host=self.host, port=self.port, out=str(self.out_dir),
                 profile=self.profile, paper_dots=self.paper_dots, png=self.png,
                 buffer_bytes=self.buffer_bytes, mode=self._mode.mode.value)

    async def stop(self) -> None:
        self._cancel_power_on()
        if self._refill is not None:
            self._refill.cancel()
            self._refill = None
        self._stop_listening()
        for conn in list(self._connections):
            conn.close("stopped", abort=True)
        await asyncio.sleep(0)  # let connection_lost callbacks run
        if self._renderer is not None:
            renderer, self._renderer = self._renderer, None
            await asyncio.get_running_loop().run_in_executor(None, renderer.shutdown, True)
        log.info("printer_stopped", port=self._port, jobs=self._seq)

    async def __aenter__(self) -> VirtualPrinter:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def _new_connection(self) -> _Connection:
        self._connections_total += 1
        return _Connection(self, self._connections_total)

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._new_connection, self.host, self._port, reuse_address=True
        )
        sockets = self._server.sockets
        for sock in sockets:
            # Accepted sockets inherit both. Loopback's 64 KB segments would let the sender's
            # kernel autotune its send buffer to megabytes at once; with Ethernet's MSS it
            # starts near 100 KB, as with a printer on the LAN.
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, _ETHERNET_MSS)
            if self.buffer_bytes:
                # A small window, like a printer's network interface.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.buffer_bytes)
        if sockets:
            self._port = int(sockets[0].getsockname()[1])

    def _stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()  # closes the listening socket now; refusals start here
            self._server = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def address(self) -> str:
        return f"tcp://{self.host}:{self._port}"

    # -- state ---------------------------------------------------------------------------

    @property
    def state(self) -> PrinterState:
        return self._state

    @property
    def mode(self) -> ModeSettings:
        return self._mode

    @property
    def armed(self) -> ArmedChange | None:
        return self._armed

    @property
    def held_bytes(self) -> int:
        return self._held_bytes

    def buffered_bytes(self) -> int:
        """The receive buffer's fill: held commands plus commands still incomplete."""
        return self._held_bytes + sum(c.tokenizer.pending for c in self._connections)

    @property
    def buffer_full(self) -> bool:
        """The printer holds data and its buffer is full: it has stopped reading."""
        return (
            bool(self.buffer_bytes)
            and self._state.holds_data
            and self.buffered_bytes() >= self.buffer_bytes
        )

    def state_info(self) -> dict[str, object]:
        return {
            "state": self._state.value,
            "since": self._state_since,
            "held_bytes": self._held_bytes,
            "buffered_bytes": self.buffered_bytes(),
            "buffer_bytes": self.buffer_bytes,
            "reading_paused": self.buffer_full,
            "paused_connections": sum(
                1 for c in self._connections if c.open and not c.reading
            ),
            "mode": self._mode.mode.value,
            "mode_settings": self._mode.to_dict(),
            "armed": self._armed.to_dict() if self._armed else None,
            "power_on_at": self._power_on_at,
            "connections": len(self._connections),
            "connections_total": self._connections_total,
            "jobs": len(self._jobs),
            "last_seq": self._seq,
            "received": len(self._received),
            "port": self._port,
        }

    async def set_state(self, state: PrinterState | str) -> None:
        """Change the state now; cancels an armed change and a pending power-on."""
        self._cancel_power_on()
        self._armed = None
        await self._set_state(PrinterState(state))

    def arm_state(
        self,
        state: PrinterState | str,
        *,
        after_bytes: int | None = None,
        after_cuts: int | None = None,
    ) -> ArmedChange:
        """Change the state once `after_bytes` more bytes of print data (the text run that
        crosses the point is split there) or `after_cuts` more cuts have been received.

        Replaces any armed change. The bytes after the trigger point are treated in the new
        state: held when it holds data, lost when it is offline.
        """
        if (after_bytes is None) == (after_cuts is None):
            raise ValueError("give exactly one of after_bytes, after_cuts")
        if (after_bytes is not None and after_bytes < 1) or (
            after_cuts is not None and after_cuts < 1
        ):
            raise ValueError("after_bytes / after_cuts must be >= 1")
        self._armed = ArmedChange(PrinterState(state), after_bytes, after_cuts, time.time())
        log.info("printer_state_armed", **self._armed.to_dict())
        self._notify()
        return self._armed

    async def _set_state(self, new: PrinterState) -> None:
        old = self._state
        if new is old:
            return
        self._switch(new)
        if not old.powered and new.powered:
            try:
                await self._listen()
            except OSError:
                self._switch(PrinterState.OFFLINE)
                raise

    def _switch(self, new: PrinterState) -> None:
        """The state change itself, synchronous so an armed change lands between commands."""
        old = self._state
        if new is old:
            return
        self._state = new
        self._state_since = time.time()
        if new.powered:
            self._last_powered = new
        log.info("printer_state", state=new.value, previous=old.value)
        if new is PrinterState.OFFLINE:
            self._power_off()
        elif not new.holds_data:
            self._print_held()
        if old.powered and new.powered:
            self._send_asb(asb_status(old), asb_status(new))
        self._update_reading()
        self._notify()

    def _send_asb(self, old: bytes, new: bytes) -> None:
        if self._mode.mode is Mode.HUNG:
            return  # a hung printer answers nothing
        for conn in self._connections:
            if conn.asb and asb_changed(conn.asb, old, new):
                conn.write(new)

    def _power_off(self) -> None:
        self._stop_listening()
        for conn in list(self._connections):
            conn.close("power_off", abort=True)
        if self._held:
            log.info("receive_buffer_lost", items=len(self._held), bytes=self._held_bytes)
        for token, _, _, ticket in self._held:
            if token is not None and ticket is not None:
                ticket.held_bytes -= len(token.raw)
                ticket.lost_bytes += len(token.raw)
        self._held.clear()
        self._held_bytes = 0
        if self._open is not None:
            log.info("job_lost_power_off", peer=self._open.peer, bytes=len(self._open.raw))
            for ticket, size in self._open.sources.values():
                ticket.printed_bytes -= size
                ticket.lost_bytes += size
        self._open = None
        self._engine.power_on()

    def _print_held(self) -> None:
        held, self._held = self._held, []
        self._held_bytes = 0
        for token, conn, at, ticket in held:
            if token is None:
                self._end_of_data(conn)
                continue
            if ticket is not None:
                ticket.held_bytes -= len(token.raw)
                ticket.printed_bytes += len(token.raw)
            self._process(token, conn, at, ticket)

    def status_reply(self, token: Token) -> bytes | None:
        if token.kind == "dle_eot":
            return dle_eot_reply(token.a, self._state)
        if token.kind == "gs_r":
            return gs_r_reply(token.a, self._state)
        return None

    # -- fault modes ---------------------------------------------------------------------

    def set_mode(self, settings: ModeSettings) -> None:
        """Switch the fault mode; it applies to open connections as well as new ones."""
        self._mode = settings
        self._bucket = TokenBucket(settings.bytes_per_second)
        if self._refill is not None:
            self._refill.cancel()
            self._refill = None
        log.info("printer_mode", **settings.to_dict())
        if settings.mode is Mode.DROP:
            for conn in list(self._connections):
                self._drop_if_due(conn)
        self._update_reading()
        self._notify()

    async def power_cycle(
        self,
        off_seconds: float = 2.0,
        *,
        state: PrinterState | str | None = None,
        mode: ModeSettings | None = None,
        wait: bool = False,
    ) -> None:
        """Power off now (buffer, open job and connections lost; connections refused), and
        back on after `off_seconds`, listening on the same port, in `state` (default: the
        state before, since paper does not load itself) and `mode` (default: unchanged).

        Returns once the power is off, or once it is back on with wait=True.
        """
        if off_seconds < 0:
            raise ValueError("off_seconds must be >= 0")
        after = PrinterState(state) if state is not None else self._last_powered
        if not after.powered:
            raise ValueError("the state after a power cycle must be a powered one")
        self._cancel_power_on()
        self._switch(PrinterState.OFFLINE)
        self._power_on_at = time.time() + off_seconds
        task = asyncio.get_running_loop().create_task(
            self._power_on_later(off_seconds, after, mode)
        )
        self._power_task = task
        log.info("printer_power_cycle", off_seconds=off_seconds, state=after.value)
        if wait:
            await asyncio.shield(task)

    async def _power_on_later(
        self, off_seconds: float, state: PrinterState, mode: ModeSettings | None
    ) -> None:
        await asyncio.sleep(off_seconds)
        self._power_task = None
        self._power_on_at = None
        if mode is not None:
            self.set_mode(mode)
        try:
            await self._set_state(state)
        except OSError as exc:
            log.error("power_on_failed", port=self._port, error=str(exc))

    def _cancel_power_on(self) -> None:
        task, self._power_task = self._power_task, None
        self._power_on_at = None
        if task is not None and not task.done():
            task.cancel()

    def _read_room(self, conn: _Connection) -> int:
        """How many bytes the next read from this connection may take (0: do not read)."""
        if not conn.open or not self._state.powered:
            return 0
        mode = self._mode
        room = _READ_CHUNK
        if mode.mode is Mode.HUNG:
            return 0
        if mode.mode is Mode.DROP:
            room = min(room, (mode.after_bytes or 0) - conn.record.print_bytes)
        elif mode.mode is Mode.SLOW:
            room = min(room, self._bucket.available())
        if self.buffer_bytes and self._state.holds_data:
            room = min(room, self.buffer_bytes - self.buffered_bytes())
        return max(room, 0)

    def _update_reading(self) -> None:
        starved = False
        for conn in list(self._connections):
            if not conn.open:
                continue
            room = self._read_room(conn)
            conn.set_reading(room > 0)
            if room == 0 and self._mode.mode is Mode.SLOW and not self.buffer_full:
                starved = True
        if starved and self._refill is None and self._loop is not None:
            self._refill = self._loop.call_later(self._bucket.seconds_to_full(), self._refilled)

    def _refilled(self) -> None:
        self._refill = None
        self._update_reading()

    def _drop_if_due(self, conn: _Connection) -> None:
        mode = self._mode
        if mode.mode is Mode.DROP and conn.record.print_bytes >= (mode.after_bytes or 0):
            log.debug("printer_connection_dropped", peer=conn.peer,
                      bytes=conn.record.print_bytes)
            conn.close("dropped")

    # -- data path (event loop only) -----------------------------------------------------

    def _connected(self, conn: _Connection) -> None:
        self._connection_log.append(conn.record)
        if not self._state.powered:
            conn.close("power_off", abort=True)
            return
        self._connections.add(conn)
        log.debug("printer_connection", peer=conn.peer, id=conn.record.number)
        self._drop_if_due(conn)
        self._update_reading()

    def _disconnected(self, conn: _Connection, exc: Exception | None) -> None:
        self._connections.discard(conn)
        record = conn.record
        record.closed_at = time.time()
        if record.closed_by is None:
            record.closed_by = "peer" if exc is None else "error"
            if exc is not None:
                record.error = f"{type(exc).__name__}: {exc}"
        self._end_received(conn, None)
        if self._state.powered:
            if self._state.holds_data:
                self._held.append((None, conn, record.closed_at, None))
            else:
                self._end_of_data(conn)
            self._update_reading()  # its incomplete command no longer fills the buffer
        self._notify()

    def _read(self, conn: _Connection, data: bytes) -> None:
        now = time.time()
        conn.record.bytes_read += len(data)
        if self._mode.mode is Mode.SLOW:
            self._bucket.take(len(data))
        for token in conn.tokenizer.feed(data):
            if not conn.open:
                break  # dropped or powered off mid-read: the rest never arrived
            if token.realtime:
                conn.record.status_bytes += len(token.raw)
                self._answer(conn, token)
            else:
                self._receive(token, conn, now)
        self._drop_if_due(conn)
        self._update_reading()
        self._notify()  # bytes held, buffer fill: what wait_until may be waiting for

    def _answer(self, conn: _Connection, token: Token) -> None:
        if token.kind == "asb":
            conn.asb = token.a
            if token.a:
                conn.write(asb_status(self._state))
            return
        conn.record.status_queries += 1
        reply = self.status_reply(token)
        if reply is not None:
            conn.write(reply)

    def _receive(self, token: Token, conn: _Connection, at: float) -> None:
        armed = self._armed
        split = armed.split_point(token) if armed is not None else None
        if split is not None:
            self._receive_one(Token("text", token.raw[:split]), conn, at)
            self._receive_one(Token("text", token.raw[split:]), conn, at)
        else:
            self._receive_one(token, conn, at)

    def _receive_one(self, token: Token, conn: _Connection, at: float) -> None:
        if not self._state.powered or not conn.open:
            return
        ticket = conn.ticket
        if ticket is None:
            if conn.view is None:
                conn.view = Interpreter(self._codepages, self.paper_dots)
            self._received_seq += 1
            ticket = conn.ticket = ReceivedTicket(
                seq=self._received_seq, connection=conn.record.number, peer=conn.peer,
                first_byte_at=at, view=conn.view,
            )
            self._received.append(ticket)
        size = len(token.raw)
        ticket.bytes += size
        if self._state.holds_data:
            self._held.append((token, conn, at, ticket))
            self._held_bytes += size
            ticket.held_bytes += size
        else:
            ticket.printed_bytes += size
            self._process(token, conn, at, ticket)
        assert conn.view is not None
        page = conn.view.apply(token)
        if page is not None:
            self._end_received(conn, page)
        armed = self._armed
        if armed is not None and armed.count(token):
            self._armed = None
            log.info("printer_state_armed_fired", state=armed.state.value)
            self._switch(armed.state)

    def _end_received(self, conn: _Connection, page: Page | None) -> None:
        """The connection's current received ticket ends: at its cut (page) or at the end of
        the connection (None), when a line without LF may still be pending."""
        ticket, conn.ticket = conn.ticket, None
        if ticket is None:
            return
        pending = ""
        if page is None and conn.view is not None:
            page = conn.view.end_of_data()
            pending = conn.view.pending_text()
        lines = page.text_lines() if page is not None else []
        # An unterminated line may be cut mid-key: it is text, never the job key.
        ticket.job_key = job_key_of(lines)
        ticket.text = [*lines, pending] if pending.strip() else lines
        ticket.cut = page.cut if page is not None else None
        ticket.ended_at = time.time()
        ticket.view = None
        log.debug("ticket_received", seq=ticket.seq, connection=ticket.connection,
                  bytes=ticket.bytes, cut=ticket.cut, job_key=ticket.job_key)
        self._notify()

    def _process(
        self, token: Token, conn: _Connection, at: float, ticket: ReceivedTicket | None
    ) -> None:
        job = self._open
        if job is None:
            job = self._open = _OpenJob(peer=conn.peer, first_byte_at=at, last_conn=conn)
        job.raw += token.raw
        job.last_conn = conn
        if ticket is not None:
            _, size = job.sources.get(ticket.seq, (ticket, 0))
            job.sources[ticket.seq] = (ticket, size + len(token.raw))
        page = self._engine.apply(token)
        if page is not None:
            self._record(page)

    def _end_of_data(self, conn: _Connection) -> None:
        job = self._open
        if job is None or job.last_conn is not conn:
            return
        page = self._engine.end_of_data()
        if page is None:
            self._open = None
            log.debug("job_dropped_nothing_printed", peer=job.peer, bytes=len(job.raw))
            return
        self._record(page)

    def _record(self, page: Page) -> None:
        job_open = self._open
        assert job_open is not None
        self._open = None
        self._seq += 1
        seq = self._seq
        stem = self.out_dir / f"{seq:04d}"
        job = Job(
            seq=seq,
            peer=job_open.peer,
            first_byte_at=job_open.first_byte_at,
            completed_at=time.time(),
            raw=bytes(job_open.raw),
            page=page,
        )
        # Small files, written before the job is visible so readers always find them.
        try:
            bin_path, txt_path = stem.with_suffix(".bin"), stem.with_suffix(".txt")
            bin_path.write_bytes(job.raw)
            txt_path.write_text("".join(line + "\n" for line in job.txt), encoding="utf-8")
            job.bin_path, job.txt_path = bin_path, txt_path
            with self._jsonl.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(job.to_dict(), ensure_ascii=False) + "\n")
        except OSError as exc:
            # The job still counts: it printed. Only its record on disk is missing.
            log.error("job_files_not_written", seq=seq, error=str(exc))
        self._jobs.append(job)
        duration_ms = round((job.completed_at - job.first_byte_at) * 1000, 3)
        log.info("job_printed", seq=seq, peer=job.peer, bytes=len(job.raw), cut=job.cut,
                 lines=len(job.txt), duration_ms=duration_ms)
        if self._renderer is not None and job.txt_path is not None:
            self._renderer.submit(self._render, job, stem.with_suffix(".png"))
        self._notify()

    def _render(self, job: Job, path: Path) -> None:
        try:
            write_png(job.page, path, self.paper_dots)
        except Exception:
            log.exception("png_render_failed", seq=job.seq)
            return
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed while we drew
                loop.call_soon_threadsafe(self._png_written, job, path)

    def _png_written(self, job: Job, path: Path) -> None:
        job.png_path = path
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # -- jobs ----------------------------------------------------------------------------

    @property
    def jobs(self) -> list[Job]:
        return list(self._jobs)

    def job(self, seq: int) -> Job | None:
        for job in self._jobs:
            if job.seq == seq:
                return job
        return None

    def reset(self) -> None:
        """Forget the recorded jobs, the received tickets that have ended and the closed
        connections (files stay; numbering carries on; what is open is kept)."""
        self._jobs.clear()
        self._received = [t for t in self._received if t.open]
        open_records = [c.record for c in self._connections]
        self._connection_log.clear()
        self._connection_log.extend(sorted(open_records, key=lambda r: r.number))
        self._notify()

    # -- evidence ------------------------------------------------------------------------

    def connections(self, since: float | None = None) -> list[ConnectionRecord]:
        """Connections accepted (at or after `since`), oldest first, open ones included.

        The last 10000 are kept.
        """
        return [r for r in self._connection_log if since is None or r.accepted_at >= since]

    @property
    def received(self) -> list[ReceivedTicket]:
        """Received tickets since the last reset, in the order their first byte arrived."""
        return list(self._received)

    async def wait_for_received(
        self, n: int, timeout: float = 10.0, *, ended: bool = True  # noqa: ASYNC109
    ) -> list[ReceivedTicket]:
        """Wait until at least n received tickets exist (that have ended, by default)."""
        async with asyncio.timeout(timeout):
            while sum(1 for t in self._received if not ended or not t.open) < n:
                await self._changed.wait()
        return list(self._received)

    # A timeout argument (rather than asyncio.timeout at the call site) keeps the same
    # signature as the subprocess client in tests/vprinter.py.
    async def wait_for_jobs(self, n: int, timeout: float = 10.0) -> list[Job]:  # noqa: ASYNC109
        """Wait until at least n jobs are recorded (since the last reset)."""
        async with asyncio.timeout(timeout):
            while len(self._jobs) < n:
                await self._changed.wait()
        return list(self._jobs)

    async def wait_until(
        self, predicate: Callable[[VirtualPrinter], bool], timeout: float = 10.0  # noqa: ASYNC109
    ) -> None:
        """Wait until predicate(printer) holds; it is checked at every change the printer
        notifies (jobs, received tickets, connections, state, mode)."""
        async with asyncio.timeout(timeout):
            while not predicate(self):
                await self._changed.wait()

    async def wait_for_png(self, seq: int, timeout: float = 10.0) -> Path:  # noqa: ASYNC109
        if not self.png:
            raise RuntimeError("PNG rendering is disabled (--no-png)")
        async with asyncio.timeout(timeout):
            while True:
                job = self.job(seq)
                if job is not None and job.png_path is not None:
                    return job.png_path
                await self._changed.wait()
