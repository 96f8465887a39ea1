"""Apply ESC/POS commands to a model of the paper, the way an Epson TM printer does.

The interpreter is the printer's print engine: it keeps the modes (size, emphasis,
alignment, code page, line spacing) across jobs and connections until ESC @ or power-off,
prints a line on LF (or when the next character would not fit the printable width), and
hands over the page at each cut. Characters are 12x24 dots (font A) or 9x17 (font B), so a
576-dot line holds 48 or 64 of them.
"""

from __future__ import annotations

import structlog

from edge.virtual_printer.codepages import CodePages
from edge.virtual_printer.model import (
    NORMAL,
    Gap,
    Marker,
    Page,
    PrintedLine,
    Raster,
    Span,
    Style,
    TextLine,
)
from edge.virtual_printer.protocol import Token

log = structlog.get_logger(__name__)

DEFAULT_SPACING = 30  # dots; about 1/6 inch, the Epson power-on default
DEFAULT_PAPER_DOTS = 576
CHAR_WIDTH = (12, 9)  # font A, font B
CHAR_HEIGHT = (24, 17)

_FULL_CUTS = frozenset({0, 48, 65, 97, 103})


def _select(n: int, choices: int) -> int:
    """ESC/POS accepts both 0,1,2 and '0','1','2' for small selectors."""
    if n >= 48:
        n -= 48
    return n if 0 <= n < choices else 0


class Interpreter:
    def __init__(self, codepages: CodePages, paper_dots: int = DEFAULT_PAPER_DOTS) -> None:
        self._codepages = codepages
        self.paper_dots = paper_dots
        self._page: list[PrintedLine] = []
        self._warned: set[str] = set()
        self._graphics: Raster | None = None
        self._symbols: dict[int, bytes] = {}
        self.power_on()

    # -- modes ---------------------------------------------------------------------------

    def power_on(self) -> None:
        """Everything a power cycle forgets, the page being printed included."""
        self._page = []
        self._graphics = None
        self._symbols = {}
        self._init()

    def _init(self) -> None:
        """ESC @: modes back to their defaults and the unprinted line dropped."""
        self._bold = False
        self._underline = 0
        self._width = 1
        self._height = 1
        self._font = 0
        self._reverse = False
        self._style = NORMAL
        self._align = 0
        self._codepage = 0
        self._spacing = DEFAULT_SPACING
        self._tabs = [CHAR_WIDTH[0] * 8 * k for k in range(1, 33)]
        self._spans: list[Span] = []
        self._line_dots = 0
        self._line_align = 0
        self._skip_next_lf = False

    def _restyle(self) -> None:
        self._style = Style(
            bold=self._bold,
            underline=self._underline,
            width=self._width,
            height=self._height,
            font=self._font,
            reverse=self._reverse,
        )

    def _warn_once(self, event: str, **kw: object) -> None:
        if event not in self._warned:
            self._warned.add(event)
            log.warning(event, **kw)

    # -- lines ---------------------------------------------------------------------------

    def _add_text(self, text: str) -> None:
        style = self._style
        cw = CHAR_WIDTH[style.font] * style.width
        if not self._spans:
            self._line_align = self._align
        if self._line_dots + cw * len(text) <= self.paper_dots:
            self._append(text, style, cw * len(text))
            return
        start = 0
        for i in range(len(text)):
            if self._line_dots + cw > self.paper_dots and (self._spans or i > start):
                self._append(text[start:i], style, 0)
                self._print_line(self._spacing)
                self._line_align = self._align
                start = i
            self._line_dots += cw
        self._append(text[start:], style, 0)

    def _append(self, text: str, style: Style, dots: int) -> None:
        self._line_dots += dots
        if not text:
            return
        if self._spans and self._spans[-1].style == style:
            last = self._spans[-1]
            self._spans[-1] = Span(last.text + text, style)
        else:
            self._spans.append(Span(text, style))

    def _print_line(self, spacing: int) -> None:
        align = self._line_align if self._spans else 0
        self._page.append(TextLine(tuple(self._spans), align, spacing))
        self._spans = []
        self._line_dots = 0

    def _tab(self) -> None:
        stop = next((t for t in self._tabs if t > self._line_dots), None)
        if stop is None or stop > self.paper_dots:
            return
        cw = CHAR_WIDTH[self._style.font] * self._style.width
        if not self._spans:
            self._line_align = self._align
        count = max(1, -(-(stop - self._line_dots) // cw))
        self._append(" " * count, self._style, 0)
        self._line_dots = stop

    def _flush_pending(self) -> None:
        if self._spans:
            self._print_line(self._spacing)

    def _emit_image(self, image: Raster) -> None:
        self._flush_pending()
        self._page.append(image)

    def _finish(self, cut: str | None) -> Page:
        page = Page(tuple(self._page), cut)
        self._page = []
        return page

    # -- commands ------------------------------------------------------------------------

    def apply(self, token: Token) -> Page | None:
        """Apply one command; at a cut, return the finished page."""
        kind = token.kind
        after_stripe, self._skip_next_lf = self._skip_next_lf, False
        if kind == "text":
            page = self._codepages.get(self._codepage)
            self._add_text(page.decode(token.raw))
        elif kind == "lf":
            if not (after_stripe and not self._spans):
                self._print_line(self._spacing)
        elif kind == "ht":
            self._tab()
        elif kind == "cut":
            return self._cut(token)
        elif kind == "print_mode":
            n = token.a
            self._font = n & 0x01
            self._bold = bool(n & 0x08)
            self._height = 2 if n & 0x10 else 1
            self._width = 2 if n & 0x20 else 1
            self._underline = 1 if n & 0x80 else 0
            self._restyle()
        elif kind == "bold":
            self._bold = bool(token.a & 1)
            self._restyle()
        elif kind == "underline":
            self._underline = _select(token.a, 3)
            self._restyle()
        elif kind == "char_size":
            self._width = ((token.a >> 4) & 0x07) + 1
            self._height = (token.a & 0x07) + 1
            self._restyle()
        elif kind == "reverse":
            self._reverse = bool(token.a & 1)
            self._restyle()
        elif kind == "font":
            self._font = _select(token.a, 2)
            self._restyle()
        elif kind == "align":
            self._align = _select(token.a, 3)
        elif kind == "codepage":
            self._codepage = token.a
        elif kind == "init":
            self._init()
        elif kind == "spacing_default":
            self._spacing = DEFAULT_SPACING
        elif kind == "spacing":
            self._spacing = token.a
        elif kind == "spacing_60":
            self._spacing = token.a * 3
        elif kind == "spacing_360":
            self._spacing = token.a // 2
        elif kind == "feed_lines":
            if token.a == 0:
                self._flush_pending()
            for _ in range(token.a):
                self._print_line(self._spacing)
        elif kind == "feed_dots":
            if self._spans:
                self._print_line(token.a)
            else:
                self._page.append(Gap(token.a))
        elif kind == "tabs":
            cw = CHAR_WIDTH[self._style.font] * self._style.width
            self._tabs = [n * cw for n in token.data]
        elif kind == "raster":
            self._raster(token)
        elif kind == "bit_image":
            self._bit_image(token)
        elif kind == "gs_paren":
            self._gs_paren(token)
        elif kind == "barcode":
            label = token.data.decode("latin-1")
            self._emit_image_marker(f"barcode {token.a} {label}")
        elif kind == "nv_image":
            self._emit_image_marker(f"nv-image {token.a}")
        elif kind == "print_downloaded":
            self._emit_image_marker("downloaded-image")
        return None

    def end_of_data(self) -> Page | None:
        """The sender went away without a cut: whatever reached the paper is the page.

        The unprinted line stays in the buffer, as on the hardware, until LF or ESC @.
        """
        if not self._page:
            return None
        return self._finish(None)

    def pending_text(self) -> str:
        """The line received but not printed yet (no LF so far)."""
        return "".join(span.text for span in self._spans)

    def page_text(self) -> list[str]:
        """The text of the lines printed since the last cut, without ending the page."""
        return [line.text for line in self._page if not isinstance(line, Gap)]

    def _cut(self, token: Token) -> Page:
        if token.raw[0] == 0x1B:  # ESC i / ESC m, the legacy partial cuts
            mode = "partial"
        else:
            mode = "full" if token.a in _FULL_CUTS else "partial"
            if token.a in (65, 66) and token.b:
                self._flush_pending()
                self._page.append(Gap(token.b))
        self._flush_pending()
        return self._finish(mode)

    def _emit_image_marker(self, label: str) -> None:
        self._flush_pending()
        self._page.append(Marker(label, self._align))

    def _raster(self, token: Token) -> None:
        # GS v 0 only prints when the print buffer is empty (Epson ESC/POS reference).
        if self._spans:
            log.warning("raster_ignored_line_not_empty", pending=len(self._spans))
            return
        m = token.a & 0x03
        xbytes = token.b
        height = len(token.data) // xbytes if xbytes else 0
        if not height:
            return
        self._page.append(
            Raster(
                width=xbytes * 8,
                height=height,
                scale_x=2 if m & 1 else 1,
                scale_y=2 if m & 2 else 1,
                align=self._align,
                rows=token.data,
            )
        )

    def _bit_image(self, token: Token) -> None:
        m, columns = token.a, token.b
        if self._spans or not columns:
            self._warn_once("bit_image_in_text_line_ignored")
            return
        dots = 8 if m in (0, 1) else 24
        scale_x = 2 if m in (0, 32) else 1
        scale_y = 3 if dots == 8 else 1
        last = self._page[-1] if self._page else None
        # python-escpos sends one ESC * stripe per line; the stripes make one picture.
        if (
            isinstance(last, Raster)
            and last.stripes
            and last.width == columns
            and last.stripe_dots == dots
            and last.scale_x == scale_x
        ):
            self._page[-1] = Raster(
                width=columns,
                height=last.height + dots,
                scale_x=scale_x,
                scale_y=scale_y,
                align=last.align,
                stripes=(*last.stripes, token.data),
                stripe_dots=dots,
            )
        else:
            self._page.append(
                Raster(
                    width=columns,
                    height=dots,
                    scale_x=scale_x,
                    scale_y=scale_y,
                    align=self._align,
                    stripes=(token.data,),
                    stripe_dots=dots,
                )
            )
        # The LF that follows each stripe moves past the image, not to a new text line.
        self._skip_next_lf = True

    def _gs_paren(self, token: Token) -> None:
        fn_class = token.a
        data = token.data
        if fn_class == ord("L") and len(data) >= 2:
            fn = data[1]
            if fn in (112, 113) and len(data) >= 10:
                x = data[6] + data[7] * 256
                y = data[8] + data[9] * 256
                rows = data[10:]
                if x and y and len(rows) >= ((x + 7) // 8) * y and fn == 112:
                    self._graphics = Raster(
                        width=x,
                        height=y,
                        scale_x=max(1, min(data[3], 2)),
                        scale_y=max(1, min(data[4], 2)),
                        align=self._align,
                        rows=bytes(rows[: ((x + 7) // 8) * y]),
                    )
            elif fn in (2, 50) and self._graphics is not None:
                graphics = self._graphics
                self._graphics = None
                self._emit_image(
                    Raster(
                        width=graphics.width,
                        height=graphics.height,
                        scale_x=graphics.scale_x,
                        scale_y=graphics.scale_y,
                        align=self._align,
                        rows=graphics.rows,
                    )
                )
        elif fn_class == ord("k") and len(data) >= 2:
            cn, fn = data[0], data[1]
            if fn == 80 and len(data) >= 3:
                self._symbols[cn] = bytes(data[3:])
            elif fn == 81:
                name = {48: "pdf417", 49: "qr", 50: "maxicode", 51: "databar", 52: "aztec",
                        53: "datamatrix"}.get(cn, f"2d-{cn}")
                content = self._symbols.get(cn, b"").decode("utf-8", "replace")
                self._emit_image_marker(f"{name} {content}")
