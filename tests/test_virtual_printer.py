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
