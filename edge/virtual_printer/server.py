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
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import structlog

from edge.virtual_printer.codepages import for_profile
from edge.virtual_printer.interpreter import DEFAULT_PAPER_DOTS, Interpreter
from edge.virtual_printer.model import Job, Page
from edge.virtual_printer.protocol import Token, Tokenizer
from edge.virtual_printer.render import write_png
from edge.virtual_printer.status import PrinterState, dle_eot_reply, gs_r_reply

log = structlog.get_logger(__name__)


class _Connection(asyncio.Protocol):
    def __init__(self, printer: VirtualPrinter) -> None:
        self._printer = printer
        self._tokenizer = Tokenizer()
        self.transport: asyncio.Transport | None = None
        self.peer = "?"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.peer = f"{peer[0]}:{peer[1]}"
        self._printer._connected(self)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        printer = self._printer
        for token in self._tokenizer.feed(data):
            if token.realtime:
                reply = printer.status_reply(token)
                if reply is not None and self.transport is not None:
                    self.transport.write(reply)
            else:
                printer._receive(token, self, now)

    def connection_lost(self, exc: Exception | None) -> None:
        self._printer._disconnected(self)


@dataclass
class _OpenJob:
    peer: str
    first_byte_at: float
    last_conn: _Connection
    raw: bytearray = field(default_factory=bytearray)


# A held item: a command, or None for "this connection ended here".
_Held = tuple[Token | None, _Connection, float]


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
    ) -> None:
        self.out_dir = Path(out_dir)
        self.host = host
        self._port = port
        self.profile = profile
        self.png = png
        self._codepages = for_profile(profile)
        self.paper_dots = paper_dots or self._codepages.media_width_dots() or DEFAULT_PAPER_DOTS
        self._engine = Interpreter(self._codepages, self.paper_dots)
        self._state = PrinterState.ONLINE
        self._state_since = time.time()
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._held: list[_Held] = []
        self._open: _OpenJob | None = None
        self._jobs: list[Job] = []
        self._seq = 0
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
                 profile=self.profile, paper_dots=self.paper_dots, png=self.png)

    async def stop(self) -> None:
        self._stop_listening()
        for conn in list(self._connections):
            if conn.transport is not None:
                conn.transport.abort()
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

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), self.host, self._port, reuse_address=True
        )
        sockets = self._server.sockets
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

    def state_info(self) -> dict[str, object]:
        return {
            "state": self._state.value,
            "since": self._state_since,
            "held_bytes": sum(len(t.raw) for t, _, _ in self._held if t is not None),
            "connections": len(self._connections),
            "jobs": len(self._jobs),
            "last_seq": self._seq,
            "port": self._port,
        }

    async def set_state(self, state: PrinterState | str) -> None:
        new = PrinterState(state)
        old = self._state
        if new is old:
            return
        self._state = new
        self._state_since = time.time()
        log.info("printer_state", state=new.value, previous=old.value)
        if new is PrinterState.OFFLINE:
            self._power_off()
        elif old is PrinterState.OFFLINE:
            await self._listen()
        if new.powered and not new.holds_data:
            self._print_held()
        self._notify()

    def _power_off(self) -> None:
        self._stop_listening()
        for conn in list(self._connections):
            if conn.transport is not None:
                conn.transport.abort()
        if self._held:
            log.info("receive_buffer_lost", items=len(self._held))
        self._held.clear()
        if self._open is not None:
            log.info("job_lost_power_off", peer=self._open.peer, bytes=len(self._open.raw))
        self._open = None
        self._engine.power_on()

    def _print_held(self) -> None:
        held, self._held = self._held, []
        for token, conn, at in held:
            if token is None:
                self._end_of_data(conn)
            else:
                self._process(token, conn, at)

    def status_reply(self, token: Token) -> bytes | None:
        if token.kind == "dle_eot":
            return dle_eot_reply(token.a, self._state)
        if token.kind == "gs_r":
            return gs_r_reply(token.a, self._state)
        return None

    # -- data path (event loop only) -----------------------------------------------------

    def _connected(self, conn: _Connection) -> None:
        if not self._state.powered:
            if conn.transport is not None:
                conn.transport.abort()
            return
        self._connections.add(conn)
        log.debug("printer_connection", peer=conn.peer)

    def _disconnected(self, conn: _Connection) -> None:
        self._connections.discard(conn)
        if not self._state.powered:
            return
        if self._state.holds_data:
            self._held.append((None, conn, time.time()))
        else:
            self._end_of_data(conn)

    def _receive(self, token: Token, conn: _Connection, at: float) -> None:
        state = self._state
        if not state.powered:
            return
        if state.holds_data:
            self._held.append((token, conn, at))
        else:
            self._process(token, conn, at)

    def _process(self, token: Token, conn: _Connection, at: float) -> None:
        job = self._open
        if job is None:
            job = self._open = _OpenJob(peer=conn.peer, first_byte_at=at, last_conn=conn)
        job.raw += token.raw
        job.last_conn = conn
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
        """Forget the recorded jobs (files stay; numbering carries on)."""
        self._jobs.clear()
        self._notify()

    # A timeout argument (rather than asyncio.timeout at the call site) keeps the same
    # signature as the subprocess client in tests/vprinter.py.
    async def wait_for_jobs(self, n: int, timeout: float = 10.0) -> list[Job]:  # noqa: ASYNC109
        """Wait until at least n jobs are recorded (since the last reset)."""
        async with asyncio.timeout(timeout):
            while len(self._jobs) < n:
                await self._changed.wait()
        return list(self._jobs)

    async def wait_for_png(self, seq: int, timeout: float = 10.0) -> Path:  # noqa: ASYNC109
        if not self.png:
            raise RuntimeError("PNG rendering is disabled (--no-png)")
        async with asyncio.timeout(timeout):
            while True:
                job = self.job(seq)
                if job is not None and job.png_path is not None:
                    return job.png_path
                await self._changed.wait()
