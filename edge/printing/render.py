"""Ticket -> ESC/POS bytes, through python-escpos's Dummy printer.

Each block of the layout (edge.printing.layout) is printed as text when one of the printer's
code pages holds all of it (ESC t n, then the page's bytes), else as GS v 0 raster lines
(edge.printing.raster). Text never passes through python-escpos's MagicEncode, which would
print `?` for a character its pages lack.

The ticket starts with ESC @ (and ESC R 0, so `#`, `@`, `[`... are ASCII whatever the
printer's international character set) and ends with a feed and GS V cut.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, tzinfo
from functools import lru_cache
from typing import Any

import structlog
from escpos.printer import Dummy

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
        self.dummy = Dummy(profile=printer.profile)
        self.style: Style | None = None
        self.page: CodePage | None = None
        self.rastered = 0

    def set_style(self, style: Style) -> None:
        current = self.style
        if current == style:
            return
        d = self.dummy
        if current is None or current.size != style.size:
            # ESC ! (the size command) also clears bold and font, so everything is resent.
            d.set(
                normal_textsize=style.size == "normal",
                double_width=style.size == "large",
                double_height=style.size in ("large", "tall"),
                bold=style.bold,
                invert=style.invert,
                align="center" if style.center else "left",
            )
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
            self.dummy._raw(page.select)
            self.page = page
        style = block.style
        # Reverse video on the indent would print a black bar left of the text.
        plain = replace(style, invert=False) if style.invert else style
        for prefix, text in block.lines:
            if prefix and style.invert:
                self.set_style(plain)
                self.dummy._raw(prefix.encode("ascii"))
                prefix = ""
            self.set_style(style)
            encoded = text.encode("ascii") if page is None else page.encode(text)
            self.dummy._raw(prefix.encode("ascii") + encoded + b"\n")

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
            self.dummy._raw(gs_v0(line.image))
            self.rastered += 1

    def finish(self) -> bytes:
        self.set_style(Style())
        self.dummy.print_and_feed(_FEED_LINES)
        self.dummy._raw(self.printer.cut)
        return bytes(self.dummy.output)


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
    writer.dummy._raw(_INIT)
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
