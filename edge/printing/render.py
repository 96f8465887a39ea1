"""Ticket -> ESC/POS bytes.

Each block of the layout (edge.printing.layout) is printed as text when one of the printer's
code pages holds all of it (ESC t n, then the page's bytes), else as GS v 0 raster lines
(edge.printing.raster). Text never passes through python-escpos's MagicEncode, which would
print `?` for a character its pages lack.

The ticket starts with ESC @ (and ESC R 0, so `#`, `@`, `[`... are ASCII whatever the
printer's international character set) and ends with a feed and GS V cut.

The few commands a ticket uses (size, bold, alignment, reverse, font, feed) are written here:
python-escpos's printer classes import its barcode, QR code and image support (Pillow) at
start, about 8 MB of the daemon's RSS (issue 12). Only its capability database is used
(profiles, code pages, paper width). The bytes are the ones python-escpos's `Escpos.set()`
and `print_and_feed()` send for the same request, so tickets did not change
(tests/test_render.py compares every style change with python-escpos's own).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, tzinfo
from functools import lru_cache
from typing import Any

import structlog

from edge.orders.ticket import Ticket
from edge.printing.codepages import CodePage, CodePageError, CodePageSet, codepage_set
from edge.printing.layout import Block, Style, font_b_columns, layout_ticket
from edge.printing.raster import draw_line, gs_v0, line_width_px

__all__ = ["CodePageError", "render_test_ticket", "render_ticket"]

log = structlog.get_logger(__name__)

_INIT = b"\x1b@" + b"\x1bR\x00"
_FEED_LINES = 6  # clears the cutter on common 80 mm / 58 mm heads
_FULL_CUT = b"\x1dV\x00"
_PART_CUT = b"\x1dV\x01"
COLUMNS = (32, 42, 48)

_ESC = b"\x1b"
_GS = b"\x1d"
# ESC ! n, the print mode: it also clears bold, underline and font, so a size change resends
# them all. python-escpos clears the mode twice (ESC ! 0) before it; kept, so the bytes are
# the same.
_MODE_CLEAR = (_ESC + b"!\x00") * 2
_SIZE = {"normal": _ESC + b"!\x00", "tall": _ESC + b"!\x10", "large": _ESC + b"!\x30"}
_BOLD = {False: _ESC + b"E\x00", True: _ESC + b"E\x01"}
_ALIGN = {False: _ESC + b"a\x00", True: _ESC + b"a\x01"}    # left, center
_INVERT = {False: _GS + b"B\x00", True: _GS + b"B\x01"}
_FONT = {False: _ESC + b"M\x00", True: _ESC + b"M\x01"}     # font A, font B


def style_change(current: Style | None, style: Style) -> bytes:
    """The commands that take the printer from `current` (None: unknown) to `style`."""
    if current == style:
        return b""
    if current is None or current.size != style.size:
        return (_MODE_CLEAR + _SIZE[style.size] + _BOLD[style.bold]
                + _ALIGN[style.center] + _INVERT[style.invert] + _FONT[style.font_b])
    out = b""
    if current.bold != style.bold:
        out += _BOLD[style.bold]
    if current.invert != style.invert:
        out += _INVERT[style.invert]
    if current.center != style.center:
        out += _ALIGN[style.center]
    if current.font_b != style.font_b:
        out += _FONT[style.font_b]
    return out


@dataclass(frozen=True)
class _Printer:
    """What rendering needs to know about one (profile, columns, codepage) printer."""

    profile: str
    pages: CodePageSet
    columns: int
    raster_width: int
    cut: bytes


@lru_cache(maxsize=64)
def _printer(profile: str | None, columns: int, codepage: str | None) -> _Printer:
    if columns not in COLUMNS:
        raise ValueError(f"columns must be one of {COLUMNS}, not {columns}")
    from escpos.capabilities import CAPABILITIES

    name = profile or "default"
    pages = codepage_set(name, codepage)
    data: dict[str, Any] = CAPABILITIES["profiles"][name]
    pixels = data.get("media", {}).get("width", {}).get("pixels")
    features = data.get("features", {})
    if features.get("paperFullCut") or not features.get("paperPartCut"):
        cut = _FULL_CUT
    else:
        cut = _PART_CUT
    return _Printer(
        profile=name,
        pages=pages,
        columns=columns,
        raster_width=line_width_px(columns, pixels if isinstance(pixels, int) else None),
        cut=cut,
    )


class _Writer:
    """Tracks the printer's mode so a style or code page is sent only when it changes."""

    def __init__(self, printer: _Printer) -> None:
        self.printer = printer
        self.out = bytearray()
        self.style: Style | None = None
        self.page: CodePage | None = None
        self.rastered = 0

    def set_style(self, style: Style) -> None:
        self.out += style_change(self.style, style)
        self.style = style

    def block(self, block: Block) -> None:
        text = "".join(t for _, t in block.lines)
        if text.isascii():
            self._text(block, None)
            return
        page = self.printer.pages.choose(text, self.page)
        if page is None:
            self._raster(block)
        else:
            self._text(block, page)

    def _text(self, block: Block, page: CodePage | None) -> None:
        if page is not None and page is not self.page:
            self.out += page.select
            self.page = page
        style = block.style
        # Reverse video on the indent would print a black bar left of the text.
        plain = replace(style, invert=False) if style.invert else style
        for prefix, text in block.lines:
            if prefix and style.invert:
                self.set_style(plain)
                self.out += prefix.encode("ascii")
                prefix = ""
            self.set_style(style)
            encoded = text.encode("ascii") if page is None else page.encode(text)
            self.out += prefix.encode("ascii") + encoded + b"\n"

    def _raster(self, block: Block) -> None:
        style = block.style
        # Images take no text style; left alignment keeps the full-width image where drawn.
        self.set_style(Style(size=style.size))
        # The cell is font A's (or B's); draw_line doubles it itself for large lines.
        columns = self.printer.columns
        if style.font_b:
            columns = font_b_columns(columns)
        for prefix, text in block.lines:
            line = draw_line(
                prefix,
                text,
                columns=columns,
                width_px=self.printer.raster_width,
                double_width=style.size == "large",
                double_height=style.size in ("large", "tall"),
                bold=style.bold,
                invert=style.invert,
                center=style.center,
            )
            self.out += gs_v0(line.image)
            self.rastered += 1

    def finish(self) -> bytes:
        self.set_style(Style())
        self.out += _ESC + b"d" + bytes([_FEED_LINES])     # ESC d n: print and feed n lines
        self.out += self.printer.cut
        return bytes(self.out)


def render_ticket(
    ticket: Ticket,
    *,
    columns: int = 48,
    profile: str | None = None,
    codepage: str | None = None,
    tz: tzinfo | None = None,
) -> bytes:
    """ESC/POS bytes for one kitchen ticket, ending with feed and cut.

    `profile` is a python-escpos capability profile name (None: "default"); `codepage` forces
    one of its code pages (printer config `codepage:`); `tz` is the zone times are printed in
    (None: the machine's local zone). Raises CodePageError (a ValueError) for an unknown
    profile or an unusable forced code page, ValueError for columns other than 32/42/48.
    """
    printer = _printer(profile, columns, codepage)
    writer = _Writer(printer)
    writer.out += _INIT
    for block in layout_ticket(ticket, columns, tz):
        writer.block(block)
    data = writer.finish()
    if writer.rastered:
        log.info("ticket_lines_rastered", job_key=ticket.job_key, lines=writer.rastered)
    return data


TURKISH_CHECK = "Çiğ köfte, şiş, ığdır: ÇĞİÖŞÜ çğıöşü"
AZERBAIJANI_CHECK = "Qutab, dolma, şəkərbura: Əə"


def ruler(columns: int) -> str:
    """Exactly `columns` characters, a digit every ten and `|` on the last column."""
    marks = [
        str(i // 10 % 10) if i % 10 == 0 else "+" if i % 5 == 0 else "." for i in range(1, columns)
    ]
    return "".join(marks) + "|"


def render_test_ticket(
    printer_id: str,
    *,
    columns: int = 48,
    profile: str | None = None,
    codepage: str | None = None,
    now: datetime | None = None,
    job_key: str | None = None,
    tz: tzinfo | None = None,
) -> bytes:
    """A TEST ticket: code page and raster check lines and a ruler of exactly `columns`.

    Its last text line is `job test-{printer_id}-{UTC timestamp}` unless `job_key` is given.
    """
    moment = now or datetime.now(UTC)
    key = job_key or f"test-{printer_id}-{moment.astimezone(UTC):%Y%m%dT%H%M%SZ}"
    ticket = Ticket(
        kind="TEST",
        station=printer_id,
        order_label="TEST PRINT",
        service=f"PRINTER {printer_id}",
        channel="kitchen-edge",
        created_at=moment,
        job_key=key,
        extra_lines=(
            f"Profile: {profile or 'default'}",
            f"Code page: {codepage or 'auto'}",
            f"Columns: {columns}",
            TURKISH_CHECK,
            AZERBAIJANI_CHECK,
            ruler(columns),
        ),
    )
    return render_ticket(ticket, columns=columns, profile=profile, codepage=codepage, tz=tz)
