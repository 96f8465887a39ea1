"""The virtual printer, driven the way kitchen-edge and the tests drive it: real TCP sockets,
the real HTTP control interface, bytes produced by python-escpos, and a real subprocess."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from escpos.printer import Dummy, Network
from PIL import Image, ImageDraw

from edge.virtual_printer import PrinterState, VirtualPrinter
from edge.virtual_printer.codepages import CodePages, for_profile
from edge.virtual_printer.control import ControlServer
from edge.virtual_printer.interpreter import Interpreter
from edge.virtual_printer.model import Page
from edge.virtual_printer.protocol import Token, Tokenizer
from edge.virtual_printer.render import render_page
from tests.vprinter import VPrinterProc

DLE_EOT = [b"\x10\x04\x01", b"\x10\x04\x02", b"\x10\x04\x03", b"\x10\x04\x04"]
GS_R = [b"\x1dr\x01", b"\x1dr\x02"]

EXPECTED_TXT = [
    "{2x2 b center} NEW",
    "grill",
    "{1x2} TABLE 7",
    "{b} 2x Adana kebap",
    "  - acılı, soğansız",
    "1x İskender ÇÖÜĞŞ",
    "[raster 200x24]",
    "job qr-7001:new:grill",
    *[""] * 6,  # python-escpos feeds six lines before the cut
]


def box_image(width: int = 200, height: int = 24) -> Image.Image:
    """Left half black, right half white: easy to find again in a rendering."""
    image = Image.new("1", (width, height), 1)
    ImageDraw.Draw(image).rectangle((0, 0, width // 2 - 1, height - 1), fill=0)
    return image


def sample_ticket(impl: str = "bitImageRaster") -> bytes:
    d = Dummy()
    d.hw("INIT")
    d.set(align="center", double_height=True, double_width=True, bold=True)
    d.textln("NEW")
    d.set(align="left", normal_textsize=True, bold=False)
    d.textln("grill")
    d.set(double_height=True)
    d.textln("TABLE 7")
    d.set(normal_textsize=True)
    d.set(bold=True)
    d.textln("2x Adana kebap")
    d.set(bold=False)
    d.textln("  - acılı, soğansız")
    d.textln("1x İskender ÇÖÜĞŞ")
    d.image(box_image(), impl=impl)
    d.textln("job qr-7001:new:grill")
    d.cut()
    return bytes(d.output)


def interpret(data: bytes, chunk: int | None = None, profile: str = "default") -> list[Page]:
    tokenizer = Tokenizer()
    engine = Interpreter(for_profile(profile))
    pages: list[Page] = []
    step = chunk or len(data) or 1
    for i in range(0, len(data), step):
        for token in tokenizer.feed(data[i : i + step]):
            page = engine.apply(token)
            if page is not None:
                pages.append(page)
    return pages


def black_box_rows(png: Image.Image, width: int = 100) -> int:
    """Rows whose first `width` pixels are all black (the pasted box image)."""
    gray = png.convert("L")
    return sum(
        1
        for y in range(gray.height)
        if all(gray.getpixel((x, y)) == 0 for x in range(0, width, 5))
    )


@pytest.fixture
async def printer(tmp_path: Path) -> AsyncIterator[VirtualPrinter]:
    vp = VirtualPrinter(tmp_path / "out", port=0)
    await vp.start()
    try:
        yield vp
    finally:
        await vp.stop()


@pytest.fixture
async def control(printer: VirtualPrinter) -> AsyncIterator[httpx.AsyncClient]:
    server = ControlServer(printer)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            yield client
    finally:
        await server.stop()


async def send(port: int, data: bytes) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def ask(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, queries: list[bytes]
) -> bytes:
    writer.write(b"".join(queries))
    await writer.drain()
    return await asyncio.wait_for(reader.readexactly(len(queries)), 5)


# -- tickets over TCP -------------------------------------------------------------------


async def test_python_escpos_ticket_prints_text_styles_turkish_and_image(
    printer: VirtualPrinter,
) -> None:
    ticket = sample_ticket()
    await send(printer.port, ticket)
    [job] = await printer.wait_for_jobs(1, timeout=5)
    assert job.txt == EXPECTED_TXT
    assert job.text[0] == "NEW"
    assert job.cut == "full"
    assert job.raw == ticket
    assert job.peer.startswith("127.0.0.1:")
    assert job.first_byte_at <= job.completed_at
    assert job.bin_path is not None and job.bin_path.read_bytes() == ticket
    assert job.txt_path is not None
    assert job.txt_path.read_text(encoding="utf-8") == "\n".join(EXPECTED_TXT) + "\n"
    png_path = await printer.wait_for_png(1, timeout=5)
    assert png_path == printer.out_dir / "0001.png"
    with Image.open(png_path) as png:
        assert png.width == 576
        assert png.height > 300
        assert black_box_rows(png) == 24


@pytest.mark.parametrize("impl", ["graphics", "bitImageColumn"])
def test_other_image_commands_render_like_the_raster_one(impl: str) -> None:
    [page] = interpret(sample_ticket(impl))
    assert page.txt_lines() == EXPECTED_TXT
    assert black_box_rows(render_page(page, 576)) == 24


def test_tall_column_image_is_one_picture() -> None:
    d = Dummy()
    d.image(box_image(200, 50), impl="bitImageColumn")
    d.textln("after")
    d.cut()
    [page] = interpret(bytes(d.output))
    # Three 24-dot stripes, one picture; the LF after each stripe adds no text line.
    assert page.txt_lines()[:2] == ["[raster 200x72]", "after"]
    assert black_box_rows(render_page(page, 576)) == 50


def test_raster_needs_an_empty_line_buffer() -> None:
    # Epson: in standard mode GS v 0 only prints when nothing is waiting in the line.
    d = Dummy()
    d.text("pending")
    d.image(box_image())
    d.textln("")
    d.image(box_image())
    d.cut()
    [page] = interpret(bytes(d.output))
    assert page.txt_lines()[:2] == ["pending", "[raster 200x24]"]


@pytest.mark.parametrize(
    ("encoding", "number", "text"),
    [
        ("CP437", 0, "Çöü é ß"),
        ("CP850", 2, "ÇöüÖÜ ñ ø"),
        ("CP857", 13, "ğşıİçöü ĞŞ"),
        ("CP1252", 16, "çöü € é"),
        ("CP1254", 48, "ğşıİçöü ĞŞ"),
    ],
)
def test_code_pages_decode_what_python_escpos_encodes(
    encoding: str, number: int, text: str
) -> None:
    d = Dummy()
    d.charcode(encoding)
    d.textln(text)
    d.cut()
    assert b"\x1bt" + bytes([number]) in d.output
    [page] = interpret(bytes(d.output))
    assert page.text_lines()[0] == text


def test_code_page_numbers_come_from_the_profile() -> None:
    pages = CodePages("TM-T88V")
    assert [pages.get(n).name for n in (0, 2, 13, 16, 48)] == [
        "CP437", "CP850", "CP857", "CP1252", "CP1254"
    ]
    assert pages.media_width_dots() == 512
    # A code page the profile does not know still decodes (as CP437), it never raises.
    assert pages.get(200).decode(b"A\x80") == "AÇ"


def test_long_lines_wrap_at_the_printable_width() -> None:
    d = Dummy()
    d.textln("x" * 50)
    d.set(double_width=True)
    d.textln("y" * 30)
    d.cut()
    [page] = interpret(bytes(d.output))
    assert page.text_lines()[:4] == ["x" * 48, "xx", "y" * 24, "y" * 6]


# -- status ------------------------------------------------------------------------------

STATUS_TABLE = {
    # state: (DLE EOT 1, 2, 3, 4, GS r 1, GS r 2), python-escpos is_online, paper_status
    "online": (bytes([0x12, 0x12, 0x12, 0x12, 0x00, 0x00]), True, 2),
    "paper_near_end": (bytes([0x12, 0x12, 0x12, 0x1E, 0x03, 0x00]), True, 1),
    "paper_out": (bytes([0x1A, 0x32, 0x12, 0x7E, 0x0F, 0x00]), False, 0),
    "cover_open": (bytes([0x1A, 0x16, 0x12, 0x12, 0x00, 0x00]), False, 2),
    "error": (bytes([0x1A, 0x52, 0x52, 0x12, 0x00, 0x00]), False, 2),
}


@pytest.mark.parametrize("state", list(STATUS_TABLE))
async def test_status_bits_in_each_state(
    printer: VirtualPrinter, control: httpx.AsyncClient, state: str
) -> None:
    response = await control.post("/state", json={"state": state})
    assert response.status_code == 200
    assert (await control.get("/state")).json()["state"] == state
    expected, online, paper = STATUS_TABLE[state]
    reader, writer = await asyncio.open_connection("127.0.0.1", printer.port)
    assert await ask(reader, writer, DLE_EOT + GS_R) == expected
    writer.close()
    await writer.wait_closed()

    # python-escpos's own reading of the same bytes, through its network printer class.
    def escpos_view() -> tuple[bool, int]:
        net = Network("127.0.0.1", printer.port, timeout=5)
        net.open()
        try:
            return net.is_online(), net.paper_status()
        finally:
            net.close()

    assert await asyncio.to_thread(escpos_view) == (online, paper)


async def test_status_is_answered_mid_job_and_first_byte_is_stamped_on_read(
    printer: VirtualPrinter,
) -> None:
    ticket = sample_ticket()
    middle = ticket.index(b"grill")
    reader, writer = await asyncio.open_connection("127.0.0.1", printer.port)
    before = time.time()
    writer.write(ticket[:middle])
    # The reply proves the first half was read and parsed; the job is still open.
    assert await ask(reader, writer, [DLE_EOT[0]]) == b"\x12"
    assert printer.jobs == []
    halfway = time.time()
    writer.write(ticket[middle:])
    await writer.drain()
    [job] = await printer.wait_for_jobs(1, timeout=5)
    writer.close()
    await writer.wait_closed()
    assert before <= job.first_byte_at < halfway < job.completed_at
    assert job.raw == ticket  # the status query is not part of the job
    assert job.txt == EXPECTED_TXT


async def test_offline_refuses_connections_and_loses_the_buffer(
    printer: VirtualPrinter, control: httpx.AsyncClient
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", printer.port)
    # Something in the receive buffer when the power goes.
    await control.post("/state", json={"state": "paper_out"})
    writer.write(b"\x1b@lost ticket\n\x1dV\x00")
    assert await ask(reader, writer, [DLE_EOT[0]]) == b"\x1a"
    assert (await control.get("/state")).json()["held_bytes"] > 0

    assert (await control.post("/state", json={"state": "offline"})).status_code == 200
    with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError, BrokenPipeError)):
        writer.write(DLE_EOT[0])
        await writer.drain()
        await asyncio.wait_for(reader.readexactly(1), 5)
    writer.close()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", printer.port)

    await control.post("/state", json={"state": "online"})
    await send(printer.port, sample_ticket())
    [job] = await printer.wait_for_jobs(1, timeout=5)
    assert job.txt == EXPECTED_TXT  # the buffered ticket died with the power
    state = (await control.get("/state")).json()
    assert state["state"] == "online" and state["held_bytes"] == 0


@pytest.mark.parametrize("stop_state", ["paper_out", "cover_open", "error"])
async def test_data_is_held_while_stopped_and_prints_when_back(
    printer: VirtualPrinter, control: httpx.AsyncClient, stop_state: str
) -> None:
    await control.post("/state", json={"state": stop_state})
    ticket = sample_ticket()
    reader, writer = await asyncio.open_connection("127.0.0.1", printer.port)
    writer.write(ticket)
    # Answered at once even with the ticket stuck in the buffer behind it.
    assert await ask(reader, writer, [DLE_EOT[0]]) == b"\x1a"
    writer.close()
    await writer.wait_closed()
    assert printer.jobs == []
    assert (await control.get("/jobs")).json() == []

    back = time.time()
    await control.post("/state", json={"state": "online"})
    response = await control.get("/jobs", params={"wait": 1, "timeout": 5})
    [job] = response.json()
    assert job["txt"] == EXPECTED_TXT
    assert job["cut"] == "full"
    assert job["first_byte_at"] < back <= job["completed_at"]
    assert (await control.get("/jobs/1/raw")).content == ticket


# -- parsing robustness ------------------------------------------------------------------


def tokens_of(data: bytes, chunk: int) -> list[Token]:
    tokenizer = Tokenizer()
    out: list[Token] = []
    for i in range(0, len(data), chunk):
        out += tokenizer.feed(data[i : i + chunk])
    return out


def test_tokens_are_the_same_whatever_the_read_boundaries() -> None:
    data = sample_ticket() + sample_ticket("graphics") + sample_ticket("bitImageColumn")
    whole = tokens_of(data, len(data))
    commands = [t for t in whole if t.kind != "text"]
    assert {"raster", "gs_paren", "bit_image", "cut", "codepage"} <= {t.kind for t in commands}
    for chunk in (1, 2, 3, 7, 64):
        split = tokens_of(data, chunk)
        assert b"".join(t.raw for t in split) == data
        assert [t for t in split if t.kind != "text"] == commands
    assert [p.txt_lines() for p in interpret(data, chunk=1)] == [EXPECTED_TXT] * 3


async def test_ticket_sent_one_byte_at_a_time(printer: VirtualPrinter) -> None:
    ticket = sample_ticket()
    # Between two commands (never inside one: in image data the query would be pixels).
    boundaries = set()
    offset = 0
    for token in tokens_of(ticket, len(ticket)):
        offset += len(token.raw)
        boundaries.add(offset)
    reader, writer = await asyncio.open_connection("127.0.0.1", printer.port)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    asked = 0
    for i in range(len(ticket)):
        writer.write(ticket[i : i + 1])
        await writer.drain()
        if i + 1 in boundaries and i % 3 == 0:
            # A round trip now and then, so the bytes really arrive in separate reads.
            assert await ask(reader, writer, [DLE_EOT[3]]) == b"\x12"
            asked += 1
    assert asked > 5
    [job] = await printer.wait_for_jobs(1, timeout=10)
    writer.close()
    await writer.wait_closed()
    assert job.raw == ticket
    assert job.txt == EXPECTED_TXT


def biased_garbage(rng: random.Random, size: int) -> bytes:
    """Random bytes, heavy in command prefixes so every parser branch gets its share."""
    prefixes = [b"\x1b", b"\x1d", b"\x10", b"\x1c", b"\n", b"\x1dv0", b"\x1d(L", b"\x1b*",
                b"\x1dV", b"\x1d!", b"\x1bt", b"\x1dk", b"\x1d(k", b"\x1c(", b"\x1b&",
                b"\x1bD", b"\x1d8L", b"\x1cq"]
    out = bytearray()
    while len(out) < size:
        if rng.random() < 0.5:
            out += rng.choice(prefixes)
        out += rng.randbytes(rng.randint(0, 6))
    return bytes(out)


def test_random_bytes_never_break_the_parser_or_the_renderer() -> None:
    rng = random.Random(20261122)
    rendered = 0
    for seed in range(30):
        data = rng.randbytes(8192) if seed % 2 else biased_garbage(rng, 8192)
        tokenizer = Tokenizer()
        engine = Interpreter(for_profile())
        pages: list[Page] = []
        position = 0
        while position < len(data):
            step = rng.randint(1, 512)
            for token in tokenizer.feed(data[position : position + step]):
                page = engine.apply(token)
                if page is not None:
                    pages.append(page)
            position += step
        tail = engine.end_of_data()
        if tail is not None:
            pages.append(tail)
        for page in pages[:3]:
            page.txt_lines()
            image = render_page(page, 576)
            assert image.width == 576
            rendered += 1
    assert rendered > 0


async def test_server_survives_random_bytes(printer: VirtualPrinter) -> None:
    rng = random.Random(7)
    for _ in range(4):
        await send(printer.port, rng.randbytes(32768) + biased_garbage(rng, 32768))
    # The printer reads through its small socket buffer after the senders have closed; a
    # ticket on a new connection meanwhile would be interleaved with their bytes.
    await printer.wait_until(lambda p: not p.state_info()["connections"], timeout=10)
    # Still answering, and still printing a proper ticket afterwards.
    reader, writer = await asyncio.open_connection("127.0.0.1", printer.port)
    assert await ask(reader, writer, DLE_EOT) == b"\x12" * 4
    writer.write(sample_ticket())
    await writer.drain()
    seen = len(printer.jobs)
    while True:  # garbage connections may still close their own partial jobs first
        jobs = await printer.wait_for_jobs(seen + 1, timeout=10)
        seen = len(jobs)
        if jobs[-1].txt == EXPECTED_TXT:
            break
    writer.close()
    await writer.wait_closed()


async def test_connection_closed_mid_job(printer: VirtualPrinter) -> None:
    await send(printer.port, b"\x1b@")  # no ink: no job
    await send(printer.port, b"\x1b@hello\nwor")
    [partial] = await printer.wait_for_jobs(1, timeout=5)
    assert partial.cut is None
    assert partial.txt == ["hello"]
    # The unprinted "wor" stays in the line buffer until the next ESC @ clears it.
    await send(printer.port, sample_ticket())
    jobs = await printer.wait_for_jobs(2, timeout=5)
    assert jobs[1].txt == EXPECTED_TXT


async def test_control_interface_edges(
    printer: VirtualPrinter, control: httpx.AsyncClient
) -> None:
    assert (await control.post("/state", json={"state": "sleepy"})).status_code == 400
    assert (await control.get("/jobs", params={"wait": 1, "timeout": 0.05})).status_code == 408
    assert (await control.get("/jobs/1")).status_code == 404
    await send(printer.port, sample_ticket())
    job = (await control.get("/jobs", params={"wait": 1, "timeout": 5})).json()[0]
    assert job["seq"] == 1 and job["paths"]["txt"].endswith("0001.txt")
    png = await control.get("/jobs/1/png", params={"timeout": 5})
    assert png.content.startswith(b"\x89PNG")
    txt = await control.get("/jobs/1/txt")
    assert txt.text.splitlines() == EXPECTED_TXT
    assert (await control.post("/reset")).json() == {"ok": True}
    assert (await control.get("/jobs")).json() == []
    await send(printer.port, sample_ticket())
    [after] = (await control.get("/jobs", params={"wait": 1, "timeout": 5})).json()
    assert after["seq"] == 2  # numbering carries on, files are never overwritten
    assert printer.state is PrinterState.ONLINE


async def test_no_png_mode(tmp_path: Path) -> None:
    async with VirtualPrinter(tmp_path / "np", port=0, png=False) as vp:
        await send(vp.port, sample_ticket())
        [job] = await vp.wait_for_jobs(1, timeout=5)
        assert job.txt == EXPECTED_TXT
    assert not list((tmp_path / "np").glob("*.png"))


# -- the subprocess helper ---------------------------------------------------------------


def test_subprocess_printer_sync(tmp_path: Path) -> None:
    with VPrinterProc(tmp_path / "vp").start() as vp:
        pid = vp.pid
        assert vp.address == f"tcp://127.0.0.1:{vp.port}"
        with socket.create_connection(("127.0.0.1", vp.port), timeout=5) as sock:
            sock.sendall(sample_ticket())
        [job] = vp.wait_jobs(1, timeout=10)
        assert job["txt"] == EXPECTED_TXT
        assert vp.job_raw(1) == sample_ticket()
        assert vp.job_png(1).startswith(b"\x89PNG")
        assert vp.set_state("cover_open")["state"] == "cover_open"
        with socket.create_connection(("127.0.0.1", vp.port), timeout=5) as sock:
            sock.sendall(DLE_EOT[1])
            assert sock.recv(1) == b"\x16"
        vp.set_state("offline")
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", vp.port), timeout=5)
        vp.set_state("online")
        with pytest.raises(TimeoutError):
            vp.wait_jobs(2, timeout=0.1)
        assert vp.stop() == 0
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert (tmp_path / "vp" / "0001.txt").read_text(encoding="utf-8").startswith(EXPECTED_TXT[0])


async def test_subprocess_printer_async(tmp_path: Path) -> None:
    vp = VPrinterProc(tmp_path / "vp", png=False)
    await asyncio.to_thread(vp.start)
    try:
        await vp.aset_state("paper_out")
        await send(vp.port, sample_ticket())
        assert await vp.ajobs() == []
        await vp.aset_state("online")
        [job] = await vp.await_jobs(1, timeout=10)
        assert job["txt"] == EXPECTED_TXT
        assert (await vp.astate())["state"] == "online"
    finally:
        assert await asyncio.to_thread(vp.stop) == 0


def test_advertise_without_the_mdns_module_fails_clearly(tmp_path: Path) -> None:
    # A None entry in sys.modules makes the import fail, as if the module were not shipped.
    script = (
        "import sys; sys.modules['edge.discovery.advertise'] = None; "
        "from edge.virtual_printer.cli import main; "
        f"raise SystemExit(main(['--port', '0', '--out', {str(tmp_path)!r}, "
        "'--advertise', 'Kitchen Printer']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "edge.discovery.advertise" in result.stderr


# -- an unkind printer: receive buffer, ASB, modes, power cycle, evidence -----------------

ASB_ON = b"\x1da\xff"
ASB_OFF = b"\x1da\x00"

ASB_TABLE = {
    "online": bytes([0x10, 0x00, 0x00, 0x0F]),
    "paper_near_end": bytes([0x10, 0x00, 0x03, 0x0F]),
    "paper_out": bytes([0x18, 0x00, 0x0F, 0x0F]),
    "cover_open": bytes([0x38, 0x00, 0x00, 0x0F]),
    "error": bytes([0x18, 0x40, 0x00, 0x0F]),
}


def keyed_ticket(job_key: str, lines: int = 3) -> bytes:
    d = Dummy()
    d.hw("INIT")
    d.set(align="center", double_height=True, double_width=True, bold=True)
    d.textln("NEW")
    d.set(align="left", normal_textsize=True, bold=False)
    for i in range(lines):
        d.textln(f"{i + 1}x item {i}")
    d.textln(f"job {job_key}")
    d.cut()
    return bytes(d.output)


def text_ticket(size: int) -> bytes:
    """A ticket of about `size` bytes of plain text lines, then a cut."""
    line = b"0123456789" * 4 + b"\n"
    body = line * (size // len(line) + 1)
    return b"\x1b@" + body[:size] + b"\n\x1dV\x00"


async def closed_by_printer(reader: asyncio.StreamReader) -> bool:
    """The printer closed the connection: EOF, or a reset when it left bytes unread."""
    try:
        return await asyncio.wait_for(reader.read(1), 5) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True


async def nothing_arrives(reader: asyncio.StreamReader, within: float = 0.3) -> bool:
    try:
        data = await asyncio.wait_for(reader.read(1), within)
    except TimeoutError:
        return True
    return data == b""  # EOF is "nothing" too; callers that care check separately


def fill_until_blocked(
    port: int, limit: int = 4 * 1024 * 1024, sock: socket.socket | None = None
) -> tuple[socket.socket, int]:
    """Write to a non-blocking socket until the kernel refuses more (or `limit` bytes)."""
    if sock is None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setblocking(False)
    sent = 0
    chunk = text_ticket(4096)[:4096]
    idle = 0
    while sent < limit and idle < 6:  # 300 ms without progress: blocked
        try:
            sent += sock.send(chunk)
            idle = 0
        except BlockingIOError:
            idle += 1
            time.sleep(0.05)  # let the printer read whatever it will read
    return sock, sent


def test_asb_status_bytes_follow_the_tm_t88_layout() -> None:
    from edge.virtual_printer.status import asb_changed, asb_status

    for state, expected in ASB_TABLE.items():
        block = asb_status(PrinterState(state))
        assert block == expected, state
        # Epson's transmission status identification: 0xx1xx00 for ASB's first byte.
        assert block[0] & 0x93 == 0x10
        assert all(b & 0x90 == 0 for b in block[1:])
    online, paper_out, near_end = (asb_status(PrinterState(s))
                                   for s in ("online", "paper_out", "paper_near_end"))
    assert asb_changed(0x02, online, paper_out)  # offline bit
    assert asb_changed(0x08, online, near_end)  # paper sensor
    assert not asb_changed(0x02, online, near_end)  # the paper item is not selected
    assert not asb_changed(0x04, online, paper_out)  # no error


async def test_asb_reports_at_once_and_on_every_change_until_disabled(
    printer: VirtualPrinter, control: httpx.AsyncClient
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", printer.port)
    writer.write(ASB_ON)
    await writer.drain()
    assert await asyncio.wait_for(reader.readexactly(4), 5) == ASB_TABLE["online"]
    for state in ("paper_near_end", "paper_out", "cover_open", "error", "online"):
        await control.post("/state", json={"state": state})
        assert await asyncio.wait_for(reader.readexactly(4), 5) == ASB_TABLE[state], state
    # A DLE EOT reply on the same connection tells itself apart by bit 1.
    assert await ask(reader, writer, [DLE_EOT[0]]) == b"\x12"
    writer.write(ASB_OFF)
    await control.post("/state", json={"state": "paper_out"})
    # Nothing but the reply to the query: ASB is off.
    assert await ask(reader, writer, [DLE_EOT[0]]) == b"\x1a"
    writer.write(b"\x1da\x08")  # paper sensors only
    assert await asyncio.wait_for(reader.readexactly(4), 5) == ASB_TABLE["paper_out"]
    await control.post("/state", json={"state": "cover_open"})  # paper loaded, cover open
    assert await asyncio.wait_for(reader.readexactly(4), 5) == ASB_TABLE["cover_open"]
    await control.post("/state", json={"state": "error"})  # paper bits unchanged: silent
    await control.post("/state", json={"state": "paper_near_end"})
    assert await asyncio.wait_for(reader.readexactly(4), 5) == ASB_TABLE["paper_near_end"]
    assert await ask(reader, writer, [DLE_EOT[0]]) == b"\x12"
    writer.close()
    await writer.wait_closed()


async def test_asb_is_not_part_of_the_ticket_and_is_answered_while_held(
    printer: VirtualPrinter, control: httpx.AsyncClient
) -> None:
    await control.post("/state", json={"state": "paper_out"})
    ticket = sample_ticket()
    middle = ticket.index(b"grill")  # between two commands
    reader, writer = await asyncio.open_connection("127.0.0.1", printer.port)
    writer.write(ticket[:middle] + ASB_ON + ticket[middle:])
    # Behind held data, yet answered at once with the status that matters: paper out.
    assert await asyncio.wait_for(reader.readexactly(4), 5) == ASB_TABLE["paper_out"]
    await printer.wait_until(lambda p: p.held_bytes == len(ticket), timeout=5)
    await control.post("/state", json={"state": "online"})
    assert await asyncio.wait_for(reader.readexactly(4), 5) == ASB_TABLE["online"]
    [job] = await printer.wait_for_jobs(1, timeout=5)
    assert job.raw == ticket
    writer.close()
    await writer.wait_closed()


async def test_full_receive_buffer_stops_reading_until_the_fault_clears(
    printer: VirtualPrinter, control: httpx.AsyncClient
) -> None:
    assert printer.buffer_bytes == 4096
    await control.post("/state", json={"state": "paper_out"})
    big = text_ticket(200_000)
    reader, writer = await asyncio.open_connection("127.0.0.1", printer.port)
    writer.write(b"\x1da\x02" + big)
    assert await asyncio.wait_for(reader.readexactly(4), 5) == ASB_TABLE["paper_out"]
    drained = asyncio.ensure_future(writer.drain())
    await printer.wait_until(lambda p: p.buffer_full, timeout=5)
    state = (await control.get("/state")).json()
    assert state["reading_paused"] is True
    assert state["buffered_bytes"] == 4096  # read to the byte, not a socket read beyond
    assert state["paused_connections"] == 1
    # TCP back-pressure: the sender cannot hand over the rest.
    await asyncio.sleep(0.3)
    assert not drained.done()
    assert writer.transport.get_write_buffer_size() > 50_000  # most of it stays with us
    # A full input buffer reads nothing: a status query waits behind the data.
    other_reader, other = await asyncio.open_connection("127.0.0.1", printer.port)
    other.write(DLE_EOT[0])
    assert await nothing_arrives(other_reader)
    assert printer.buffered_bytes() == 4096

    # Paper loaded: ASB says so on the stopped connection, the buffer prints and drains.
    await control.post("/state", json={"state": "online"})
    assert await asyncio.wait_for(reader.readexactly(4), 5) == ASB_TABLE["online"]
    assert await asyncio.wait_for(other_reader.readexactly(1), 5) == b"\x12"
    await asyncio.wait_for(drained, 10)
    [job] = await printer.wait_for_jobs(1, timeout=10)
    assert job.raw == big
    assert printer.state_info()["reading_paused"] is False
    for w in (writer, other):
        w.close()
        await w.wait_closed()


async def test_sender_meets_back_pressure_within_a_lan_sized_window(
    printer: VirtualPrinter, tmp_path: Path
) -> None:
    await printer.set_state("paper_out")
    sock, sent = await asyncio.to_thread(fill_until_blocked, printer.port)
    try:
        # 4 KB buffer + a few KB kernel window + the sender's own send buffer (~100 KB on
        # a LAN): far below the megabytes loopback would otherwise swallow.
        assert 4096 < sent < 1024 * 1024
        assert printer.held_bytes <= 4096
    finally:
        sock.close()
    # Unlimited buffer: everything is read and held.
    async with VirtualPrinter(tmp_path / "unlimited", port=0, png=False,
                              buffer_bytes=0) as vp:
        await vp.set_state("paper_out")
        sock, sent = await asyncio.to_thread(fill_until_blocked, vp.port, 1024 * 1024)
        try:
            assert sent >= 1024 * 1024
            await vp.wait_until(lambda p: p.held_bytes == sent, timeout=10)
        finally:
            sock.close()


async def test_hung_printer_accepts_and_never_reads_or_answers(
    printer: VirtualPrinter, control: httpx.AsyncClient
) -> None:
    response = await control.post("/mode", json={"mode": "hung"})
    assert response.json() == {"mode": "hung", "after_bytes": None, "bytes_per_second": 300}
    sock = socket.create_connection(("127.0.0.1", printer.port), timeout=5)
    try:
        sock.sendall(ASB_ON + DLE_EOT[0] + sample_ticket())
        # Then filler behind the ticket until the kernel takes no more.
        sock, sent = await asyncio.to_thread(fill_until_blocked, printer.port, sock=sock)
        assert sent < 1024 * 1024
        with pytest.raises(BlockingIOError):
            sock.recv(1)  # never answered
        [record] = (await control.get("/connections")).json()
        assert record["bytes_read"] == 0 and record["closed_at"] is None
        assert printer.jobs == [] and printer.received == []
        # Unstuck: what waited in the kernel is read, answered and printed.
        await control.post("/mode", json={"mode": "normal"})
        sock.setblocking(True)
        sock.settimeout(5)
        reply = b""
        while len(reply) < 5:
            reply += await asyncio.to_thread(sock.recv, 5 - len(reply))
        assert reply == ASB_TABLE["online"] + b"\x12"
        [job, *_] = await printer.wait_for_jobs(1, timeout=5)
        assert job.txt == EXPECTED_TXT
    finally:
        sock.close()


async def test_drop_mode_closes_every_connection(
    printer: VirtualPrinter, control: httpx.AsyncClient
) -> None:
    await control.post("/mode", json={"mode": "drop"})
    since = time.time()
    for _ in range(5):
        reader, writer = await asyncio.open_connection("127.0.0.1", printer.port)
        writer.write(sample_ticket())
        assert await closed_by_printer(reader)
        writer.close()
    await printer.wait_until(lambda p: len(p.connections(since)) == 5
                             and all(r.closed_at for r in p.connections(since)), timeout=5)
    records = (await control.get("/connections", params={"since": since})).json()
    assert [r["closed_by"] for r in records] == ["dropped"] * 5
    assert all(r["bytes"] == 0 and r["closed_at"] >= r["accepted_at"] for r in records)
    assert printer.jobs == [] and printer.received == []


async def test_drop_after_bytes_cuts_a_ticket_mid_way(
    printer: VirtualPrinter, control: httpx.AsyncClient
) -> None:
    await control.post("/mode", json={"mode": "drop", "after_bytes": 100})
    ticket = keyed_ticket("t1:new:grill", lines=20)
    assert len(ticket) > 200
    reader, writer = await asyncio.open_connection("127.0.0.1", printer.port)
    # The status query first is answered and does not count as print data.
    writer.write(DLE_EOT[0] + ticket)
    assert await asyncio.wait_for(reader.read(1), 5) == b"\x12"
    assert await closed_by_printer(reader)  # then closed
    writer.close()
    [received] = await printer.wait_for_received(1, timeout=5)
    assert received.bytes == 100 and received.cut is None
    assert received.job_key is None  # the job line never arrived
    [record] = printer.connections()
    assert (record.print_bytes, record.bytes_read, record.closed_by) == (100, 103, "dropped")
    [partial] = await printer.wait_for_jobs(1, timeout=5)
    assert partial.cut is None and partial.raw == ticket[:100]


async def test_slow_printer_reads_at_its_rate_and_answers_in_order(
    printer: VirtualPrinter, control: httpx.AsyncClient
) -> None:
    await control.post("/mode", json={"mode": "slow", "bytes_per_second": 4000})
    ticket = text_ticket(4000)
    reader, writer = await asyncio.open_connection("127.0.0.1", printer.port)
    started = time.monotonic()
    assert await ask(reader, writer, [DLE_EOT[0]]) == b"\x12"  # nothing in front of it
    assert time.monotonic() - started < 1.0
    writer.write(ticket + DLE_EOT[3])
    await writer.drain()
    sent = time.monotonic()
    # The reply comes only once the 4 KB in front of it have been read: about a second.
    assert await asyncio.wait_for(reader.readexactly(1), 10) == b"\x12"
    elapsed = time.monotonic() - sent
    assert 0.7 < elapsed < 5.0
    [job] = await printer.wait_for_jobs(1, timeout=5)
    assert job.raw == ticket
    writer.close()
    await writer.wait_closed()


async def test_power_cycle_loses_the_buffer_refuses_then_listens_again(
    printer: VirtualPrinter, control: httpx.AsyncClient
) -> None:
    port = printer.port
    await control.post("/state", json={"state": "paper_out"})
    ticket = keyed_ticket("p1:new:grill")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(ticket)
    await printer.wait_until(lambda p: p.held_bytes == len(ticket), timeout=5)
    response = await control.post("/power-cycle", json={"off_seconds": 0.5})
    assert response.json()["state"] == "offline"
    assert response.json()["power_on_at"] > time.time()
    with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
        await asyncio.wait_for(reader.readexactly(1), 5)
    writer.close()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
    # Back on the same port, in the state it had: paper does not load itself.
    await printer.wait_until(lambda p: p.state is PrinterState.PAPER_OUT, timeout=5)
    assert printer.port == port and printer.held_bytes == 0
    [lost] = printer.received
    assert (lost.fate, lost.lost_bytes, lost.job_key) == ("lost", len(ticket), "p1:new:grill")
    assert printer.connections()[0].closed_by == "power_off"

    # wait=True answers once it is back; state and mode can be chosen for after.
    await control.post("/mode", json={"mode": "hung"})
    response = await control.post("/power-cycle", json={
        "off_seconds": 0.2, "state": "online", "mode": {"mode": "normal"}, "wait": True})
    assert (response.json()["state"], response.json()["mode"]) == ("online", "normal")
    await send(port, ticket)
    [job] = await printer.wait_for_jobs(1, timeout=5)
    assert job.raw == ticket


async def test_paper_runs_out_after_a_chosen_number_of_bytes(
    printer: VirtualPrinter, control: httpx.AsyncClient
) -> None:
    ticket = keyed_ticket("a1:new:grill", lines=40)
    assert len(ticket) > 400
    response = await control.post("/state", json={"state": "paper_out", "after_bytes": 300})
    assert response.json()["armed"]["after_bytes"] == 300
    assert response.json()["state"] == "online"
    await send(printer.port, DLE_EOT[0] + ticket)  # the query does not count
    await printer.wait_until(lambda p: p.state is PrinterState.PAPER_OUT, timeout=5)
    await printer.wait_for_received(1, timeout=5)
    # To the byte: 300 went to the print engine, the rest is held.
    assert printer.held_bytes == len(ticket) - 300
    [received] = printer.received
    assert (received.printed_bytes, received.held_bytes) == (300, len(ticket) - 300)
    assert received.fate == "held" and received.job_key == "a1:new:grill"
    assert printer.armed is None and printer.jobs == []
    await control.post("/state", json={"state": "online"})
    [job] = await printer.wait_for_jobs(1, timeout=5)
    assert job.raw == ticket and job.cut == "full"
    assert job.to_dict()["job_key"] == "a1:new:grill"


async def test_power_lost_mid_ticket_loses_what_was_being_printed(
    printer: VirtualPrinter, control: httpx.AsyncClient
) -> None:
    ticket = keyed_ticket("pw-1:new:grill", lines=10)
    await control.post("/state", json={"state": "offline", "after_bytes": 50})
    reader, writer = await asyncio.open_connection("127.0.0.1", printer.port)
    writer.write(ticket)
    assert await closed_by_printer(reader)
    writer.close()
    await printer.wait_for_received(1, timeout=5)
    [received] = printer.received
    assert (received.bytes, received.lost_bytes, received.fate) == (50, 50, "lost")
    assert printer.jobs == [] and printer.state is PrinterState.OFFLINE
    [record] = printer.connections()
    assert record.closed_by == "power_off"
    # A second cycle asked for while off still comes back as the printer was.
    await control.post("/state", json={"state": "paper_out"})
    await control.post("/power-cycle", json={"off_seconds": 5})
    await control.post("/power-cycle", json={"off_seconds": 0.1, "wait": True})
    assert printer.state is PrinterState.PAPER_OUT


async def test_paper_runs_out_right_after_the_next_cut(
    printer: VirtualPrinter, control: httpx.AsyncClient
) -> None:
    first, second = keyed_ticket("c1:new:grill"), keyed_ticket("c2:new:grill")
    await control.post("/state", json={"state": "paper_out", "after_cuts": 1})
    await send(printer.port, first + second)  # one write: the change lands between them
    [job] = await printer.wait_for_jobs(1, timeout=5)
    await printer.wait_for_received(2, timeout=5)
    assert job.raw == first
    assert printer.state is PrinterState.PAPER_OUT
    assert printer.held_bytes == len(second)
    assert [(t.job_key, t.fate) for t in printer.received] == [
        ("c1:new:grill", "printed"), ("c2:new:grill", "held")]


async def test_received_tickets_count_every_copy_that_entered_the_printer(
    printer: VirtualPrinter, control: httpx.AsyncClient
) -> None:
    ticket = keyed_ticket("dup-1:new:grill")
    await control.post("/state", json={"state": "paper_out"})
    before = time.time()
    for _ in range(3):  # a spooler resending into a printer that buffers every copy
        await send(printer.port, ticket)
    await printer.wait_for_received(3, timeout=5)
    assert printer.jobs == []
    received = (await control.get("/received", params={"job_key": "dup-1:new:grill"})).json()
    assert len(received) == 3
    assert {r["fate"] for r in received} == {"held"}
    assert [r["bytes"] for r in received] == [len(ticket)] * 3
    assert [line for line in received[0]["text"] if line][-1] == "job dup-1:new:grill"
    assert len({r["connection"] for r in received}) == 3
    connections = (await control.get("/connections", params={"since": before})).json()
    assert [c["bytes"] for c in connections] == [len(ticket)] * 3
    assert all(c["closed_by"] == "peer" for c in connections)
    await control.post("/state", json={"state": "online"})
    jobs = await printer.wait_for_jobs(3, timeout=5)
    assert [j.to_dict()["job_key"] for j in jobs] == ["dup-1:new:grill"] * 3
    waited = await control.get("/received", params={"wait": 3, "timeout": 1})
    assert {r["fate"] for r in waited.json()} == {"printed"}
    # An open ticket shows what arrived so far.
    reader, writer = await asyncio.open_connection("127.0.0.1", printer.port)
    writer.write(ticket[: ticket.index(b"job ")])
    await printer.wait_until(lambda p: len(p.received) == 4 and p.received[-1].bytes > 0)
    assert await ask(reader, writer, [DLE_EOT[0]]) == b"\x12"
    [current] = [r for r in (await control.get("/received")).json() if r["open"]]
    assert current["text"][-1] == "3x item 2" and current["job_key"] is None
    writer.close()
    await writer.wait_closed()
    assert (await control.post("/reset")).json() == {"ok": True}
    await printer.wait_until(lambda p: not p.state_info()["connections"])
    await control.post("/reset")
    assert (await control.get("/received")).json() == []
    assert (await control.get("/connections")).json() == []


async def test_control_rejects_bad_fault_requests_naming_the_field(
    control: httpx.AsyncClient,
) -> None:
    cases = [
        ("/mode", {"mode": "sleepy"}, "mode"),
        ("/mode", {"mode": "slow", "after_bytes": 10}, "after_bytes"),
        ("/mode", {"mode": "slow", "bytes_per_second": 0}, "bytes_per_second"),
        ("/mode", {"mode": "drop", "after_bytes": -1}, "after_bytes"),
        ("/state", {"state": "paper_out", "after_bytes": 10, "after_cuts": 1}, "after_cuts"),
        ("/state", {"state": "paper_out", "after_cuts": "one"}, "after_cuts"),
        ("/state", {"state": "sleepy"}, "state"),
        ("/power-cycle", {"off_seconds": "soon"}, "off_seconds"),
        ("/power-cycle", {"state": "offline"}, "state"),
        ("/power-cycle", {"mode": {"mode": "wobbly"}}, "mode"),
    ]
    for path, body, field in cases:
        response = await control.post(path, json=body)
        assert response.status_code == 400, (path, body)
        assert response.json()["field"] == field, (path, body, response.text)
    response = await control.post("/mode", content=b"[1]")
    assert response.status_code == 400 and response.json()["field"] == "body"
    state = (await control.get("/state")).json()
    assert (state["state"], state["mode"], state["armed"]) == ("online", "normal", None)


def test_subprocess_printer_faults(tmp_path: Path) -> None:
    with VPrinterProc(tmp_path / "vp", png=False, buffer_bytes=2048, mode="slow",
                      bytes_per_second=100_000).start() as vp:
        state = vp.state()
        assert (state["buffer_bytes"], state["mode"]) == (2048, "slow")
        assert vp.mode()["bytes_per_second"] == 100_000
        ticket = keyed_ticket("s1:new:grill")
        vp.set_state("paper_out", after_cuts=1)
        with socket.create_connection(("127.0.0.1", vp.port), timeout=5) as sock:
            sock.sendall(ticket + ticket)
        [job] = vp.wait_jobs(1)
        assert job["job_key"] == "s1:new:grill"
        vp.wait_received(2)
        assert vp.received_job_keys() == {"s1:new:grill": 2}
        assert [r["fate"] for r in vp.received(job_key="s1:new:grill")] == ["printed", "held"]
        assert vp.state()["state"] == "paper_out"
        with pytest.raises(ValueError, match="after_bytes"):
            vp.set_mode("hung", after_bytes=3)
        assert vp.set_mode("drop", after_bytes=10)["after_bytes"] == 10
        off = vp.power_cycle(0.2, state="online", mode="normal", wait=True)
        assert (off["state"], off["mode"]) == ("online", "normal")
        [first] = vp.connections()
        assert first["closed_by"] == "peer" and first["bytes"] == 2 * len(ticket)
        assert vp.connections(since=time.time() + 60) == []


async def test_subprocess_printer_faults_async(tmp_path: Path) -> None:
    vp = VPrinterProc(tmp_path / "vp", png=False, mode="drop")
    await asyncio.to_thread(vp.start)
    try:
        assert (await vp.amode())["mode"] == "drop"
        with pytest.raises((ConnectionResetError, BrokenPipeError, asyncio.IncompleteReadError)):
            reader, writer = await asyncio.open_connection("127.0.0.1", vp.port)
            writer.write(b"\x1b@hello\n")
            await asyncio.wait_for(reader.readexactly(1), 5)
        await vp.aset_mode("normal")
        await vp.aset_state("cover_open", after_bytes=5)
        await send(vp.port, b"\x1b@hello\n\x1dV\x00")
        [ticket] = await vp.await_received(1)
        assert ticket["held_bytes"] == len(b"\x1b@hello\n\x1dV\x00") - 5
        assert (await vp.astate())["state"] == "cover_open"
        assert [c["closed_by"] for c in await vp.aconnections()] == ["dropped", "peer"]
        assert (await vp.areceived_job_keys()) == {}
        await vp.apower_cycle(0.1, wait=True)
        assert (await vp.astate())["state"] == "cover_open"
        assert [t["fate"] for t in await vp.areceived()] == ["lost"]
    finally:
        assert await asyncio.to_thread(vp.stop) == 0


def test_cli_refuses_mode_flags_that_do_not_fit(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "edge.virtual_printer", "--port", "0", "--out", str(tmp_path),
         "--mode", "hung", "--drop-after-bytes", "5"],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 2
    assert "--drop-after-bytes" in result.stderr
