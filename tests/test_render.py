"""Kitchen ticket rendering: the bytes are read back by a small ESC/POS reader written here,
independent of the renderer, and checked against CONTRACT section 5."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import structlog
from escpos.capabilities import CAPABILITIES
from PIL import Image, ImageOps

from edge.orders.ticket import Ticket, TicketItem
from edge.printing.codepages import CodePageError, check_codepage
from edge.printing.raster import PLACEHOLDER, draw_line
from edge.printing.render import (
    AZERBAIJANI_CHECK,
    TURKISH_CHECK,
    render_test_ticket,
    render_ticket,
)

T0 = datetime(2026, 11, 21, 18, 2, 11, tzinfo=UTC)

# --------------------------------------------------------------------------- reader


@dataclass
class Mode:
    double_w: bool = False
    double_h: bool = False
    bold: bool = False
    invert: bool = False
    font_b: bool = False


@dataclass
class TextLine:
    raw: bytes
    text: str
    page: int | None
    modes: list[Mode]  # the mode of every character

    def _ink(self) -> list[Mode]:
        return [m for m, c in zip(self.modes, self.text, strict=True) if c != " "] or self.modes

    @property
    def large(self) -> bool:
        return bool(self.modes) and all(m.double_w and m.double_h for m in self._ink())

    @property
    def bold(self) -> bool:
        return bool(self.modes) and all(m.bold for m in self._ink())

    @property
    def invert(self) -> bool:
        return bool(self.modes) and all(m.invert for m in self._ink())

    @property
    def font_b(self) -> bool:
        return bool(self.modes) and all(m.font_b for m in self.modes)

    @property
    def cells(self) -> int:
        """Width in font-A-sized columns of this line at its print size."""
        return sum(2 if m.double_w else 1 for m in self.modes)


@dataclass
class Raster:
    width: int
    height: int
    data: bytes

    def image(self) -> Image.Image:
        return Image.frombytes("1", (self.width, self.height), self.data)

    def dots(self) -> int:
        return sum(bin(b).count("1") for b in self.data)


@dataclass
class Doc:
    events: list[TextLine | Raster | str] = field(default_factory=list)  # str: "feed", "cut"

    @property
    def lines(self) -> list[TextLine]:
        return [e for e in self.events if isinstance(e, TextLine)]

    @property
    def texts(self) -> list[str]:
        return [line.text for line in self.lines]

    @property
    def rasters(self) -> list[Raster]:
        return [e for e in self.events if isinstance(e, Raster)]

    def index(self, text: str) -> int:
        return self.texts.index(text)


def _codec(profile: str, number: int) -> str:
    name = CAPABILITIES["profiles"][profile]["codePages"][str(number)]
    codec: str = CAPABILITIES["encodings"][name]["python_encode"]
    return codec


def read(data: bytes, profile: str = "default") -> Doc:
    """Interpret the ESC/POS subset a kitchen ticket may use; anything else fails the test."""
    doc = Doc()
    mode = Mode()
    page: int | None = None
    buf = bytearray()
    modes: list[Mode] = []
    i = 0

    def arg(k: int = 1) -> bytes:
        nonlocal i
        out = data[i : i + k]
        assert len(out) == k, f"truncated command at {i}"
        i += k
        return out

    while i < len(data):
        b = data[i]
        i += 1
        if b == 0x0A:
            raw = bytes(buf)
            if any(c >= 0x80 for c in raw):
                assert page is not None, f"non-ASCII text {raw!r} before any ESC t"
                text = raw.decode(_codec(profile, page))
            else:
                text = raw.decode("ascii")
            doc.events.append(TextLine(raw, text, page, modes))
            buf = bytearray()
            modes = []
        elif b == 0x1B:
            cmd = arg()[0]
            if cmd == 0x40:  # ESC @
                mode, page = Mode(), None
            elif cmd == 0x21:  # ESC ! n
                n = arg()[0]
                mode = Mode(
                    double_w=bool(n & 0x20),
                    double_h=bool(n & 0x10),
                    bold=bool(n & 0x08),
                    invert=mode.invert,
                    font_b=bool(n & 0x01),
                )
            elif cmd == 0x45:  # ESC E n
                mode = Mode(**{**mode.__dict__, "bold": bool(arg()[0] & 1)})
            elif cmd == 0x4D:  # ESC M n
                mode = Mode(**{**mode.__dict__, "font_b": arg()[0] in (1, 49)})
            elif cmd == 0x74:  # ESC t n
                page = arg()[0]
                _codec(profile, page)  # the page must exist in the profile, with a codec
            elif cmd == 0x64:  # ESC d n
                assert not buf
                doc.events.append("feed")
                arg()
            elif cmd in (0x52, 0x61, 0x2D, 0x7B):  # ESC R / a / - / { n
                arg()
            else:
                raise AssertionError(f"unexpected ESC 0x{cmd:02x} at {i}")
        elif b == 0x1D:
            cmd = arg()[0]
            if cmd == 0x42:  # GS B n
                mode = Mode(**{**mode.__dict__, "invert": bool(arg()[0] & 1)})
            elif cmd == 0x21:  # GS ! n
                n = arg()[0]
                mode = Mode(
                    **{**mode.__dict__, "double_w": bool(n & 0x70), "double_h": bool(n & 7)}
                )
            elif cmd == 0x76:  # GS v 0 m xL xH yL yH d...
                assert arg() == b"0"
                assert not buf, "raster image in the middle of a text line"
                arg()
                xb = int.from_bytes(arg(2), "little")
                h = int.from_bytes(arg(2), "little")
                doc.events.append(Raster(xb * 8, h, arg(xb * h)))
            elif cmd == 0x56:  # GS V m [n]
                m = arg()[0]
                if m in (65, 66):
                    arg()
                doc.events.append("cut")
            elif cmd == 0x62:  # GS b n
                arg()
            else:
                raise AssertionError(f"unexpected GS 0x{cmd:02x} at {i}")
        elif b < 0x20 or b == 0x7F:
            raise AssertionError(f"stray control byte 0x{b:02x} at {i - 1}")
        else:
            buf.append(b)
            modes.append(mode)
    assert not buf, "text after the last line feed"
    return doc


def assert_no_question_marks(doc: Doc, source: str) -> None:
    """No `?` in any text byte unless the source had one (raster payload is not text)."""
    if "?" in source:
        return
    for line in doc.lines:
        assert b"?" not in line.raw, line.text
        assert "\ufffd" not in line.text


def _source(ticket: Ticket) -> str:
    parts = [ticket.order_label, ticket.station, ticket.order_note or "", ticket.reason or ""]
    for it in ticket.items:
        parts += [it.name, *it.modifiers, it.note or "", *it.allergens]
    return " ".join([*parts, *ticket.extra_lines])


# --------------------------------------------------------------------------- tickets


def make_ticket(**overrides: object) -> Ticket:
    fields: dict[str, object] = {
        "kind": "NEW",
        "station": "grill",
        "order_label": "#1042",
        "service": "TABLE 7",
        "channel": "qr_menu",
        "created_at": T0,
        "job_key": "qr-7001.created.grill",
        "items": (
            TicketItem(
                2,
                "Adana kebap",
                modifiers=("extra cheese", "double meat"),
                note="no onions",
                allergens=("gluten", "nuts"),
                course=2,
            ),
            TicketItem(1, "Ayran"),
        ),
    }
    fields.update(overrides)
    return Ticket(**fields)  # type: ignore[arg-type]


def ten_items() -> tuple[TicketItem, ...]:
    return tuple(
        TicketItem(
            1 + i % 3,
            f"Dish number {i} with a name long enough to wrap on narrow paper",
            modifiers=("extra cheese", "no salt") if i % 2 else (),
            note="well done" if i % 3 == 0 else None,
            allergens=("gluten",) if i % 4 == 0 else (),
        )
        for i in range(10)
    )


# --------------------------------------------------------------------------- layout


def test_sections_in_contract_order_kind_first_job_last() -> None:
    ticket = make_ticket(
        reason="Ürün tükendi",
        order_note="Ring the bell twice",
        printed_at=T0 + timedelta(minutes=3),
        due_at=T0 + timedelta(minutes=88),
    )
    data = render_ticket(ticket, tz=UTC)
    doc = read(data)
    lines = doc.lines

    assert isinstance(doc.events[0], TextLine), "the kind is the first thing printed"
    assert lines[0].text == "NEW" and lines[0].large and lines[0].bold

    expected = [
        "NEW",
        "Station: grill",
        "#1042",
        "TABLE 7",
        "Channel: qr_menu",
        "Time: 18:02  printed 18:05",
        "DUE 19:30",
        "Reason: Ürün tükendi",
        "2x Adana kebap",
        "   + extra cheese",
        "   ! no onions",
        "   ALLERGEN: gluten, nuts",
        "1x Ayran",
        "Note: Ring the bell twice",
        "job qr-7001.created.grill",
    ]
    positions = [doc.index(t) for t in expected]
    assert positions == sorted(positions), doc.texts
    assert lines[doc.index("#1042")].large
    assert lines[doc.index("DUE 19:30")].large

    # `job KEY` is the last text line, followed only by the feed and the cut.
    assert lines[-1].text == "job qr-7001.created.grill"
    assert doc.events[-3:] == [lines[-1], "feed", "cut"]
    assert data.endswith(b"\x1dV\x00")
    assert_no_question_marks(doc, _source(ticket))


def test_due_on_another_day_shows_the_date() -> None:
    doc = read(render_ticket(make_ticket(due_at=T0 + timedelta(days=1)), tz=UTC))
    assert "DUE 22.11 18:02" in doc.texts


@pytest.mark.parametrize(
    ("flags", "marks"),
    [
        ({}, []),
        ({"reprint": True}, ["REPRINT"]),
        ({"backup_from": "hot-line"}, ["BACKUP FROM hot-line"]),
        ({"may_be_duplicate": True}, ["MAY BE DUPLICATE"]),
        ({"late": True}, ["LATE"]),
        (
            {"reprint": True, "backup_from": "bar", "may_be_duplicate": True, "late": True},
            ["REPRINT", "BACKUP FROM bar", "MAY BE DUPLICATE", "LATE"],
        ),
    ],
)
def test_marks_directly_under_the_kind(flags: dict[str, object], marks: list[str]) -> None:
    doc = read(render_ticket(make_ticket(**flags), tz=UTC))
    assert doc.texts[0] == "NEW"
    assert doc.texts[1 : 1 + len(marks)] == marks
    assert doc.texts[1 + len(marks)] == "Station: grill"
    for line in doc.lines[1 : 1 + len(marks)]:
        assert line.bold and line.invert and not line.large


def test_modifiers_notes_allergens_course_indented_under_their_item() -> None:
    long_name = "Adana kebap with grilled tomatoes peppers and lavash bread"
    item = TicketItem(
        2,
        long_name,
        modifiers=("extra cheese", "a very long modifier that surely needs a second line too"),
        note="no onions",
        allergens=("gluten", "nuts"),
        course=2,
    )
    doc = read(render_ticket(make_ticket(items=(item, TicketItem(1, "Ayran"))), columns=32))
    texts = doc.texts
    start = texts.index("2x Adana kebap with grilled")
    end = texts.index("1x Ayran")
    block = texts[start:end]
    assert block == [
        "2x Adana kebap with grilled",
        "   tomatoes peppers and lavash",
        "   bread",
        "   + extra cheese",
        "   + a very long modifier that",
        "     surely needs a second line",
        "     too",
        "   ! no onions",
        "   ALLERGEN: gluten, nuts",
        "   COURSE 2",
    ]
    allergen = doc.lines[start + 8]
    assert allergen.bold and allergen.invert
    # The indent before reverse text is not reversed (no black bar at the left edge).
    assert not any(m.invert for m in allergen.modes[:3])


@pytest.mark.parametrize("columns", [32, 42, 48])
def test_wrapping_never_exceeds_the_width(columns: int) -> None:
    words = "Lahmacun with very finely minced lamb parsley and a squeeze of lemon " * 3
    ticket = make_ticket(
        station="grill-and-mezze-station-number-one",
        order_label="website-8102-abcdefghijklmnopqrstuvwxyz",
        service="DELIVERY (restaurant courier) to the back entrance",
        reason=words,
        order_note=words,
        items=(
            TicketItem(12, words, modifiers=(words,), note=words, allergens=("gluten",) * 9),
            TicketItem(1, "Supercalifragilisticexpialidociouskebapwithoutanyspaces"),
        ),
        job_key="k" * (columns - 4),
    )
    doc = read(render_ticket(ticket, columns=columns, tz=UTC))
    for line in doc.lines:
        assert line.cells <= columns, (line.text, line.cells)
    assert "job " + "k" * (columns - 4) == doc.texts[-1]
    assert not doc.lines[-1].font_b
    # Nothing is lost to wrapping: the words of the item name all come back, in order.
    start = next(i for i, t in enumerate(doc.texts) if t.startswith("12x "))
    name_words: list[str] = []
    for text in doc.texts[start:]:
        if text.startswith("   +"):
            break
        name_words += text.removeprefix("12x ").split()
    assert name_words == words.split()


@pytest.mark.parametrize("columns", [32, 42, 48])
def test_long_job_key_stays_one_line_in_font_b(columns: int) -> None:
    key = "order-" + "x" * columns + ".items_added.batch-7.grill"
    doc = read(render_ticket(make_ticket(job_key=key), columns=columns))
    last = doc.lines[-1]
    assert last.text == f"job {key}"  # one line in the bytes, the whole key recoverable
    assert last.font_b
    assert doc.events[-2:] == ["feed", "cut"]


def test_control_characters_in_names_never_reach_the_printer() -> None:
    item = TicketItem(1, "Burger\x1b@\x1dV\x00\nwith\tfries\r\u00a0and Kebap\u00adbrot\u200d")
    doc = read(render_ticket(make_ticket(items=(item,))))  # read() rejects stray controls
    assert "1x Burger @ V with fries and Kebapbrot" in doc.texts
    assert not doc.rasters


# --------------------------------------------------------------------------- code pages


def _after_select(data: bytes, number: int, encoded: bytes) -> bool:
    """ESC t number comes before `encoded`, with no other ESC t in between."""
    at = data.find(encoded)
    select = data.rfind(b"\x1bt", 0, at)
    return at > 0 and select >= 0 and data[select + 2] == number


def test_turkish_prints_through_pc857_of_the_profile() -> None:
    name = "Çiğ köfte dürüm, şiş, ığdır"
    ticket = make_ticket(items=(TicketItem(1, name, modifiers=("acılı",)),))
    data = render_ticket(ticket, profile="TM-T88V", columns=42)
    pc857 = next(
        int(n) for n, p in CAPABILITIES["profiles"]["TM-T88V"]["codePages"].items() if p == "CP857"
    )
    assert _after_select(data, pc857, f"1x {name}".encode("cp857"))
    doc = read(data, "TM-T88V")
    assert f"1x {name}" in doc.texts
    assert "   + acılı" in doc.texts
    assert not doc.rasters
    assert_no_question_marks(doc, _source(ticket))


def test_forced_wpc1254_is_used_and_only_it() -> None:
    name = "Çiğ köfte, şiş, ığdır: ÇĞİÖŞÜ çğıöşü"
    ticket = make_ticket(items=(TicketItem(1, name), TicketItem(1, "Борщ")))
    data = render_ticket(ticket, profile="TM-T88V", codepage="WPC1254", columns=48)
    assert _after_select(data, 48, f"1x {name}".encode("cp1254"))
    selects = {data[i + 2] for i in range(len(data) - 2) if data[i : i + 2] == b"\x1bt"}
    assert selects == {48}
    doc = read(data, "TM-T88V")
    assert f"1x {name}" in doc.texts
    # Cyrillic is not in WPC1254: with the page forced that line goes raster, not `?`.
    assert "1x Борщ" not in doc.texts and len(doc.rasters) == 1
    assert_no_question_marks(doc, _source(ticket))


def test_profile_without_a_turkish_page_rasters_turkish() -> None:
    ticket = make_ticket(items=(TicketItem(1, "Çiğ köfte"), TicketItem(1, "Ürün")))
    doc = read(render_ticket(ticket, profile="TM-T88IV", columns=42), "TM-T88IV")
    assert len(doc.rasters) == 1  # ğ: no page of the TM-T88IV holds it
    assert "1x Ürün" in doc.texts  # Ü is in PC437: stays text
    assert_no_question_marks(doc, _source(ticket))


def test_unknown_profile_or_codepage_is_refused() -> None:
    with pytest.raises(CodePageError):
        render_ticket(make_ticket(), profile="no-such-printer")
    with pytest.raises(CodePageError):
        render_ticket(make_ticket(), profile="TM-T88IV", codepage="PC857")
    with pytest.raises(ValueError, match="columns"):
        render_ticket(make_ticket(), columns=40)
    assert check_codepage("TM-T88V", "pc857") is None
    assert check_codepage("TM-T88V", "windows-1254") is None
    assert "not in printer profile" in (check_codepage("TM-T88IV", "PC857") or "")


# --------------------------------------------------------------------------- raster


@pytest.mark.parametrize(("columns", "width"), [(32, 384), (42, 504), (48, 576)])
@pytest.mark.parametrize(
    "name",
    [
        "Qutab, dolma, şəkərbura",  # Azerbaijani ə
        "Pizza 🍕 margherita",  # emoji
        "شاورما دجاج",  # Arabic
        "Çiğ köfte with şəkər",  # Turkish and ə on one line: all of it raster
    ],
)
def test_lines_no_code_page_holds_become_gs_v0_raster(columns: int, width: int, name: str) -> None:
    ticket = make_ticket(items=(TicketItem(1, "Ayran"), TicketItem(3, name)))
    data = render_ticket(ticket, columns=columns)
    doc = read(data)
    assert "1x Ayran" in doc.texts
    assert not any(name.split()[0] in t for t in doc.texts), "no part of the line as text"
    assert len(doc.rasters) == 1
    raster = doc.rasters[0]
    assert (raster.width, raster.height) == (width, 30)
    assert raster.dots() > 200
    # The raster takes the item's place, between the item before and the rule after it.
    events = doc.events
    at = events.index(raster)
    before, after = events[at - 1], events[at + 1]
    assert isinstance(before, TextLine) and before.text == "1x Ayran"
    assert isinstance(after, TextLine) and set(after.text) == {"-"}
    assert_no_question_marks(doc, _source(ticket))


def test_missing_glyph_is_a_visible_box_and_reported() -> None:
    with structlog.testing.capture_logs() as logs:
        line = draw_line("", "Pizza 🍕", columns=48, width_px=576)
    assert line.missing == ("🍕",)
    assert any(e["event"] == "ticket_glyph_missing" and "U+1F355" in e["codepoints"] for e in logs)
    box = draw_line("", f"Pizza {PLACEHOLDER}", columns=48, width_px=576)
    assert line.image.tobytes() == box.image.tobytes()


def test_raster_png_looks_like_the_text(tmp_path: Path) -> None:
    doc = read(render_ticket(make_ticket(items=(TicketItem(2, "Qutab, şəkərbura: Əə"),))))
    (raster,) = doc.rasters
    img = raster.image()
    ink = img.getbbox()
    assert ink is not None
    left, top, right, bottom = ink
    assert left < 12, "drawn from the left margin, like text"
    assert 22 * 12 < right <= 23 * 12, "23 characters, each one 12-dot cell wide"
    assert top >= 0 and bottom <= 30
    ImageOps.invert(img.convert("L")).save(tmp_path / "line.png")
    assert (tmp_path / "line.png").stat().st_size > 100


# --------------------------------------------------------------------------- test ticket


@pytest.mark.parametrize("columns", [32, 42, 48])
def test_test_ticket(columns: int) -> None:
    data = render_test_ticket("hot-line", columns=columns, profile="TM-T88V", now=T0, tz=UTC)
    doc = read(data, "TM-T88V")
    assert doc.texts[0] == "TEST" and doc.lines[0].large
    ruler = [t for t in doc.texts if t.endswith("|")]
    assert len(ruler) == 1 and len(ruler[0]) == columns
    if len(TURKISH_CHECK) <= columns:
        assert TURKISH_CHECK in doc.texts
        assert _after_select(data, 13, TURKISH_CHECK.encode("cp857"))
    assert len(doc.rasters) == 1  # the Azerbaijani line
    assert not any("Qutab" in t for t in doc.texts)
    assert doc.texts[-1] == "job test-hot-line-20261121T180211Z"
    assert doc.events[-2:] == ["feed", "cut"]
    assert_no_question_marks(doc, TURKISH_CHECK + AZERBAIJANI_CHECK)


# --------------------------------------------------------------------------- speed


def test_render_time_per_ticket(capsys: pytest.CaptureFixture[str]) -> None:
    tickets = [
        make_ticket(
            job_key=f"qr-{n}.created.grill",
            order_label=f"#{n}",
            items=ten_items(),
            order_note="Kapıda ödeme" if n % 2 else None,
            reprint=n % 5 == 0,
        )
        for n in range(1000)
    ]
    render_ticket(tickets[0], columns=48, profile="TM-T20II")  # warm the caches
    start = time.perf_counter()
    for ticket in tickets:
        render_ticket(ticket, columns=48, profile="TM-T20II")
    per_ticket_ms = (time.perf_counter() - start) * 1000 / len(tickets)

    raster_ticket = make_ticket(items=(*ten_items()[:9], TicketItem(1, "Qutab şəkərbura")))
    start = time.perf_counter()
    for _ in range(100):
        render_ticket(raster_ticket, columns=48, profile="TM-T20II")
    raster_ms = (time.perf_counter() - start) * 1000 / 100
    with capsys.disabled():
        print(
            f"\nrender_ticket: {per_ticket_ms:.3f} ms per 10-item ticket (1000 tickets), "
            f"{raster_ms:.3f} ms with one raster line"
        )
    assert per_ticket_ms < 20
    assert raster_ms < 20


def test_without_dejavu_the_builtin_font_still_draws(monkeypatch: pytest.MonkeyPatch) -> None:
    from edge.printing import raster

    monkeypatch.setattr(raster, "FONT_DIRS", (Path("/nonexistent-font-dir"),))
    raster._fonts.cache_clear()
    try:
        with structlog.testing.capture_logs() as logs:
            line = draw_line("2x ", "Qutab şəkərbura Əə", columns=48, width_px=576)
        assert any(e["event"] == "raster_font_missing" for e in logs)
        assert line.image.size == (576, 30)
        assert line.image.getbbox() is not None
    finally:
        raster._fonts.cache_clear()


def test_style_changes_are_the_bytes_python_escpos_sends() -> None:
    """The renderer writes its few style commands itself (python-escpos's printer classes
    import barcode, QR and Pillow support at start: RSS, issue 12); every change between two
    styles is byte for byte what python-escpos's Escpos.set() sent for it."""
    from itertools import product

    from escpos.printer import Dummy

    from edge.printing.layout import Style
    from edge.printing.render import style_change

    def escpos_bytes(current: Style | None, style: Style) -> bytes:
        d = Dummy()
        if current is None or current.size != style.size:
            d.set(normal_textsize=style.size == "normal", double_width=style.size == "large",
                  double_height=style.size in ("large", "tall"), bold=style.bold,
                  invert=style.invert, align="center" if style.center else "left")
            d._raw(b"\x1bM\x01" if style.font_b else b"\x1bM\x00")
        else:
            if current.bold != style.bold:
                d.set(bold=style.bold)
            if current.invert != style.invert:
                d.set(invert=style.invert)
            if current.center != style.center:
                d.set(align="center" if style.center else "left")
            if current.font_b != style.font_b:
                d._raw(b"\x1bM\x01" if style.font_b else b"\x1bM\x00")
        return bytes(d.output)

    styles = [Style(size=size, bold=bold, invert=invert, center=center, font_b=font_b)
              for size, bold, invert, center, font_b
              in product(("normal", "tall", "large"), *([(False, True)] * 4))]
    for current in [None, *styles]:
        for style in styles:
            assert style_change(current, style) == escpos_bytes(current, style), (current, style)
