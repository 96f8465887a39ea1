"""TcpTransport against small real TCP printers served by this test (real sockets)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable

import pytest

from edge.printing.status import ASB_ENABLE, STATUS_QUERIES, PrinterStatus, parse_status
from edge.printing.transport import NotReady, Outcome, PrinterUnavailable, TcpTransport
from tests.broker import free_port

ONLINE = {1: 0x12, 2: 0x12, 3: 0x12, 4: 0x12}


class TcpPrinter:
    """A raw-port printer: records what it is sent, answers DLE EOT n with `status[n]`."""

    def __init__(
        self,
        status: dict[int, int] | None = None,
        *,
        answer: bool = True,
        read: bool = True,
        preamble: bytes = b"",
        hang_up_after_replies: int | None = None,
        hang_up_on_accept: bool = False,
        rcvbuf: int | None = None,
        read_limit: int | None = None,
        bytes_per_second: int | None = None,
        status_after: dict[int, int] | None = None,
    ) -> None:
        self.status = dict(status or ONLINE)
        self.answer = answer
        self.read = read
        self.preamble = preamble
        self.hang_up_after_replies = hang_up_after_replies  # on the first connection only
        self.hang_up_on_accept = hang_up_on_accept
        self.rcvbuf = rcvbuf
        self.read_limit = read_limit            # stop reading after this many bytes
        self.bytes_per_second = bytes_per_second  # a slow printer
        self.status_after = status_after        # the answers after the first three replies
        self.received = bytearray()
        self.queries: list[int] = []
        self.accepted = 0
        self.open_now = 0
        self.max_open = 0
        self._changed = asyncio.Condition()
        self._server: asyncio.Server | None = None
        self._stop = asyncio.Event()
        self.port = 0

    async def start(self) -> TcpPrinter:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.rcvbuf is not None:
            # Accepted sockets inherit it: a small window makes a non-reading printer fill up.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        self.port = sock.getsockname()[1]
        self._server = await asyncio.start_server(self._handle, sock=sock)
        return self

    async def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def wait_for(self, predicate: Callable[[], bool], within: float = 5.0) -> None:
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(predicate)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.open_now += 1
        self.max_open = max(self.max_open, self.open_now)
        await self._notify()
        replies = 0
        first = self.accepted == 1
        try:
            if self.hang_up_on_accept:
                return
            if self.preamble:
                writer.write(self.preamble)
            if not self.read:
                await self._stop.wait()
                return
            tail = b""
            size = 64 if self.bytes_per_second else 65536
            while chunk := await reader.read(size):
                if self.bytes_per_second:
                    await asyncio.sleep(len(chunk) / self.bytes_per_second)
                self.received += chunk
                stream = tail + chunk
                for i in range(len(stream) - 2):
                    if stream[i : i + 2] == b"\x10\x04" and stream[i + 2] in self.status:
                        self.queries.append(stream[i + 2])
                        if self.answer:
                            table = self.status
                            if self.status_after is not None and len(self.queries) > 3:
                                table = self.status_after
                            writer.write(bytes([table[stream[i + 2]]]))
                            replies += 1
                tail = stream[-2:]
                await self._notify()
                limit = self.hang_up_after_replies
                if first and limit is not None and replies >= limit:
                    return
                if self.read_limit is not None and len(self.received) >= self.read_limit:
                    await self._stop.wait()
                    return
        except ConnectionError:
            pass
        finally:
            writer.close()
            self.open_now -= 1
            await self._notify()


@pytest.fixture
async def printer() -> AsyncIterator[TcpPrinter]:
    p = await TcpPrinter().start()
    yield p
    await p.stop()


def local(port: int) -> Callable[[], tuple[str, int]]:
    return lambda: ("127.0.0.1", port)


# --- status bits ------------------------------------------------------------------------


def test_status_queries_are_dle_eot_1_2_4() -> None:
    assert STATUS_QUERIES == b"\x10\x04\x01\x10\x04\x02\x10\x04\x04"


def test_parse_status_rejects_bytes_that_are_no_reply() -> None:
    with pytest.raises(ValueError):
        parse_status(0x00, 0x12, 0x12)
    with pytest.raises(ValueError):
        parse_status(0x12, 0x12, 0x12, 0x13)  # XOFF


def test_state_precedence() -> None:
    everything = parse_status(0x1E, 0x76, 0x7E, 0x5A)  # offline, cover, paper end, error
    assert everything.state == "cover_open"
    no_cover = parse_status(0x1E, 0x72, 0x7E, 0x5A)
    assert no_cover.state == "paper_out"
    assert parse_status(0x1E, 0x52, 0x12, 0x1A).state == "error"
    assert parse_status(0x1E, 0x12, 0x12).state == "offline"
    assert not any(s.ready for s in (everything, no_cover))


@pytest.mark.parametrize(
    ("bytes_", "state", "ready", "near_end"),
    [
        ({1: 0x12, 2: 0x12, 4: 0x12}, "online", True, False),
        ({1: 0x16, 2: 0x12, 4: 0x12}, "online", True, False),  # drawer pin high: no matter
        ({1: 0x12, 2: 0x12, 4: 0x1E}, "online", True, True),  # near end still prints
        ({1: 0x1A, 2: 0x12, 4: 0x12}, "offline", False, False),
        ({1: 0x1A, 2: 0x32, 4: 0x7E}, "paper_out", False, True),
        ({1: 0x1A, 2: 0x16, 4: 0x12}, "cover_open", False, False),
        ({1: 0x1A, 2: 0x52, 3: 0x1A, 4: 0x12}, "error", False, False),
    ],
)
async def test_status_bits_read_from_a_tcp_printer(
    bytes_: dict[int, int], state: str, ready: bool, near_end: bool
) -> None:
    p = await TcpPrinter({**ONLINE, **bytes_}).start()
    t = TcpTransport(local(p.port), name="hot")
    try:
        status = await t.status()
    finally:
        await t.close()
        await p.stop()
    assert isinstance(status, PrinterStatus)
    assert status.state == state
    assert status.ready is ready
    assert status.paper_near_end is near_end
    # DLE EOT 3 (the error's cause) is asked only when DLE EOT 2 reports an error.
    assert (3 in p.queries) is (state == "error")
    if state == "error":
        assert status.error_causes == ("autocutter",)


async def test_status_skips_bytes_that_are_not_status_replies() -> None:
    # An Automatic Status Back header and XON arrive before the replies.
    p = await TcpPrinter({**ONLINE, 1: 0x1A}, preamble=b"\x14\x00\x11").start()
    t = TcpTransport(local(p.port), name="hot")
    try:
        assert (await t.status()).state == "offline"
    finally:
        await t.close()
        await p.stop()


# --- failures ---------------------------------------------------------------------------


async def test_connection_refused_is_unavailable_fast() -> None:
    t = TcpTransport(local(free_port()), name="hot", connect_timeout=3.0)
    started = time.monotonic()
    with pytest.raises(PrinterUnavailable) as caught:
        await t.send(b"ticket")
    assert time.monotonic() - started < 1.0
    assert "cannot connect" in caught.value.reason


async def test_unresolved_service_is_unavailable() -> None:
    t = TcpTransport(lambda: None, name="mdns-printer")
    with pytest.raises(PrinterUnavailable) as caught:
        await t.status()
    assert caught.value.reason == "service not resolved"


async def test_printer_that_never_answers_status_is_unavailable_within_status_timeout() -> None:
    p = await TcpPrinter(answer=False).start()
    t = TcpTransport(local(p.port), name="hot", status_timeout=0.3)
    try:
        started = time.monotonic()
        with pytest.raises(PrinterUnavailable) as caught:
            await t.status()
        elapsed = time.monotonic() - started
        assert 0.25 <= elapsed < 1.0
        assert "no status reply" in caught.value.reason
        # The silent connection is dropped, not reused for the next question.
        await p.wait_for(lambda: p.open_now == 0)
    finally:
        await t.close()
        await p.stop()


async def test_no_ticket_byte_before_the_printer_said_ready() -> None:
    p = await TcpPrinter({**ONLINE, 1: 0x1A, 2: 0x32, 4: 0x7E}).start()   # paper out
    t = TcpTransport(local(p.port), name="hot")
    try:
        with pytest.raises(NotReady) as caught:
            await t.send(b"\x1b@TICKET")
        assert caught.value.status.state == "paper_out"
        await p.wait_for(lambda: len(p.received) >= len(STATUS_QUERIES))
        assert bytes(p.received) == STATUS_QUERIES
    finally:
        await t.close()
        await p.stop()


async def test_a_silent_printer_gets_no_ticket_byte() -> None:
    p = await TcpPrinter(answer=False).start()
    t = TcpTransport(local(p.port), name="hot", status_timeout=0.3)
    try:
        with pytest.raises(PrinterUnavailable):
            await t.send(b"\x1b@TICKET")
        assert b"TICKET" not in p.received
    finally:
        await t.close()
        await p.stop()


async def test_paper_out_under_the_ticket_is_held_with_its_cause() -> None:
    paper_out = {**ONLINE, 1: 0x1A, 2: 0x32, 4: 0x7E}
    p = await TcpPrinter(status_after=paper_out).start()
    t = TcpTransport(local(p.port), name="hot")
    try:
        delivery = await t.send(b"\x1b@TICKET")
        assert delivery.outcome is Outcome.HELD
        assert delivery.status is not None and delivery.status.state == "paper_out"
        assert delivery.generation == t.generation == 1
        assert "paper_out" in (delivery.reason or "")
    finally:
        await t.close()
        await p.stop()


async def test_printer_that_stops_reading_mid_ticket_loses_it_after_write_timeout() -> None:
    p = await TcpPrinter(read_limit=64, rcvbuf=4096).start()
    t = TcpTransport(local(p.port), name="hot", write_timeout=0.5)
    try:
        started = time.monotonic()
        # Far more than the kernel buffers on both ends can hold.
        delivery = await t.send(b"\x1b@" + b"X" * (16 * 1024 * 1024))
        assert time.monotonic() - started < 3.0
        assert delivery.outcome is Outcome.LOST
        assert "stopped reading" in (delivery.reason or "")
    finally:
        await t.close()
        await p.stop()


async def test_a_slow_printer_that_keeps_reading_is_given_the_time() -> None:
    p = await TcpPrinter(bytes_per_second=1500).start()
    t = TcpTransport(local(p.port), name="hot", write_timeout=0.6)
    try:
        ticket = b"\x1b@" + b"Y" * 3000            # about 2 s at this printer's pace
        started = time.monotonic()
        delivery = await t.send(ticket)
        assert delivery.outcome is Outcome.CONFIRMED
        assert time.monotonic() - started > 1.0   # longer than write_timeout: progress counted
        assert ticket in p.received
    finally:
        await t.close()
        await p.stop()


async def test_printer_that_hung_up_an_idle_connection_is_reconnected() -> None:
    p = await TcpPrinter(hang_up_after_replies=3).start()
    t = TcpTransport(local(p.port), name="hot")
    try:
        assert (await t.status()).ready
        await p.wait_for(lambda: p.open_now == 0)
        # Whether or not the hang-up was seen yet, the question is asked on a new connection.
        assert (await t.status()).ready
        assert (await t.send(b"after hang-up")).outcome is Outcome.CONFIRMED
        await p.wait_for(lambda: b"after hang-up" in p.received)
        assert p.accepted == 2
        assert t.generation == 2
    finally:
        await t.close()
        await p.stop()


async def test_a_printer_that_hangs_up_on_the_ticket_lost_it() -> None:
    # It answers the status query, then hangs up: the ticket's bytes reach our kernel buffer
    # (drain completes) but never the printer. Only the missing DLE EOT reply tells.
    p = await TcpPrinter(hang_up_after_replies=3).start()
    t = TcpTransport(local(p.port), name="hot")
    try:
        delivery = await t.send(b"lost ticket")
        assert delivery.outcome is Outcome.LOST
    finally:
        await t.close()
        await p.stop()


async def test_a_printer_that_hangs_up_at_once_gets_nothing() -> None:
    p = await TcpPrinter(hang_up_on_accept=True).start()
    t = TcpTransport(local(p.port), name="hot")
    try:
        with pytest.raises(PrinterUnavailable):
            await t.send(b"never sent")
        assert b"never sent" not in p.received
    finally:
        await t.close()
        await p.stop()


async def test_status_back_frames_are_watched_and_skipped_by_replies() -> None:
    # The printer pushes "paper end, offline" then "online" after ASB is asked for.
    frames = bytes([0x18, 0x00, 0x0C, 0x00]) + bytes([0x10, 0x00, 0x00, 0x00])
    p = await TcpPrinter(preamble=frames).start()
    t = TcpTransport(local(p.port), name="hot", status_back=True)
    try:
        assert (await t.status()).ready              # the frames before the replies skipped
        await p.wait_for(lambda: p.received.startswith(ASB_ENABLE))
        # Both frames were read past by the replies; nothing more is pushed.
        assert await t.watch(0.2) is None
    finally:
        await t.close()
        await p.stop()


async def test_watch_returns_the_latest_pushed_status() -> None:
    p = await TcpPrinter().start()
    t = TcpTransport(local(p.port), name="hot", status_back=True)
    server_side: list[asyncio.StreamWriter] = []
    try:
        assert (await t.status()).ready
        conn = t._conn
        assert conn is not None
        # Push from the printer's side by writing into our reader, as the socket would.
        conn.reader.feed_data(bytes([0x18, 0x00, 0x0C, 0x00]))
        pushed = await t.watch(1.0)
        assert pushed is not None and pushed.state == "paper_out" and not pushed.ready
        conn.reader.feed_data(bytes([0x38, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00]))
        pushed = await t.watch(1.0)
        assert pushed is not None and pushed.ready   # the burst's last frame wins
        assert await TcpTransport(local(p.port), name="x").watch(0.1) is None
    finally:
        for w in server_side:
            w.close()
        await t.close()
        await p.stop()


# --- connections ------------------------------------------------------------------------


async def test_send_writes_the_whole_ticket(printer: TcpPrinter) -> None:
    t = TcpTransport(local(printer.port), name="hot")
    ticket = b"\x1b@" + bytes(range(256)) * 200 + b"\x1dV\x00"
    assert (await t.send(ticket)).outcome is Outcome.CONFIRMED
    # The status asked first, the ticket, then the DLE EOT 1 whose answer confirmed it.
    assert bytes(printer.received) == STATUS_QUERIES + ticket + b"\x10\x04\x01"
    await t.close()
    await printer.wait_for(lambda: printer.open_now == 0)


async def test_address_change_moves_the_connection_to_the_new_port() -> None:
    old = await TcpPrinter().start()
    new = await TcpPrinter().start()
    where = [("127.0.0.1", old.port)]
    t = TcpTransport(lambda: where[0], name="mdns-printer")
    try:
        await t.send(b"first")
        await old.wait_for(lambda: b"first" in old.received)
        where[0] = ("127.0.0.1", new.port)
        await t.send(b"second")
        await new.wait_for(lambda: b"second" in new.received)
        await old.wait_for(lambda: old.open_now == 0)  # the old connection was closed
        assert b"second" not in old.received
        assert (old.accepted, new.accepted) == (1, 1)
    finally:
        await t.close()
        await old.stop()
        await new.stop()


async def test_one_connection_at_a_time_with_concurrent_callers(printer: TcpPrinter) -> None:
    t = TcpTransport(local(printer.port), name="hot")
    tickets = [f"<ticket {i:02d}>".encode() * 500 for i in range(10)]

    async def status() -> PrinterStatus:
        return await t.status()

    results = await asyncio.gather(
        *(t.send(ticket) for ticket in tickets), *(status() for _ in range(10))
    )
    assert all(r.ready for r in results[10:] if isinstance(r, PrinterStatus))
    # Every send was confirmed by the printer, so everything has arrived already.
    assert printer.accepted == 1
    assert printer.max_open == 1
    for ticket in tickets:  # serialised: no ticket interleaved with another
        assert ticket in printer.received
    await t.close()
