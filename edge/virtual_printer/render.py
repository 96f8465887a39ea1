"""Draw a printed page as a strip of receipt paper (PNG), one dot per pixel.

Runs in a worker thread, never on the event loop. Text is laid on the printer's character
grid (12x24 dots font A, 9x17 font B) with a monospace TrueType font, scaled by whole dots
for double width/height like the print head does; bit images are pasted dot for dot.
"""

from __future__ import annotations

import functools
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from edge.virtual_printer.interpreter import CHAR_HEIGHT, CHAR_WIDTH
from edge.virtual_printer.model import Gap, Marker, Page, PrintedLine, Raster, Span, TextLine

_MARGIN = 8  # blank paper above the first line and below the cut mark
_MAX_HEIGHT = 40_000  # dots; garbage input can declare absurd images, paper is finite here
_FONT_CANDIDATES = (
    "DejaVuSansMono.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf",
    "/usr/share/fonts/TTF/DejaVuSansMono.ttf",
    "/usr/share/fonts/dejavu/DejaVuSansMono.ttf",
    "LiberationMono-Regular.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationMono-Regular.ttf",
)

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


def _packaged_fonts() -> list[str]:
    fonts_dir = Path(__file__).resolve().parent.parent / "fonts"
    if not fonts_dir.is_dir():
        return []
    return [str(p) for p in sorted(fonts_dir.glob("*Mono*.ttf"))]


@functools.lru_cache(maxsize=4)
def _font(font: int) -> Font:
    # Sized so one glyph advance matches the printer's character cell.
    size = 20 if font == 0 else 15
    for candidate in (*_packaged_fonts(), *_FONT_CANDIDATES):
        try:
            return ImageFont.truetype(candidate, size)
        except OSError:
            continue
    return ImageFont.load_default(size)


@functools.lru_cache(maxsize=4096)
def _glyph(char: str, font: int, bold: bool, reverse: bool) -> Image.Image:
    """One character cell, drawn once and pasted wherever the character prints."""
    cw, ch = CHAR_WIDTH[font], CHAR_HEIGHT[font]
    ink, paper = (255, 0) if reverse else (0, 255)
    cell = Image.new("L", (cw, ch), paper)
    if not char.isspace():
        draw = ImageDraw.Draw(cell)
        draw.text((0, 0), char, font=_font(font), fill=ink)
        if bold:
            draw.text((1, 0), char, font=_font(font), fill=ink)
    return cell


def _span_image(span: Span) -> Image.Image:
    style = span.style
    cw, ch = CHAR_WIDTH[style.font], CHAR_HEIGHT[style.font]
    ink, paper = (255, 0) if style.reverse else (0, 255)
    strip = Image.new("L", (max(1, cw * len(span.text)), ch), paper)
    for i, char in enumerate(span.text):
        if char != " ":
            strip.paste(_glyph(char, style.font, style.bold, style.reverse), (i * cw, 0))
    if style.underline:
        ImageDraw.Draw(strip).rectangle(
            (0, ch - style.underline, strip.width - 1, ch - 1), fill=ink
        )
    if (style.width, style.height) != (1, 1):
        strip = strip.resize(
            (strip.width * style.width, ch * style.height), Image.Resampling.NEAREST
        )
    return strip


def _raster_image(raster: Raster, paper_dots: int) -> Image.Image:
    if raster.stripes:
        bytes_per_column = raster.stripe_dots // 8
        parts = []
        for stripe in raster.stripes:
            columns = len(stripe) // bytes_per_column
            # Each column is one row of a (dots x columns) image; transposed it stands up.
            lying = Image.frombytes(
                "1", (raster.stripe_dots, columns), stripe[: columns * bytes_per_column],
                "raw", "1;I",
            )
            parts.append(lying.transpose(Image.Transpose.TRANSPOSE))
        image = Image.new("1", (raster.width, raster.height), 1)
        y = 0
        for part in parts:
            image.paste(part, (0, y))
            y += part.height
    else:
        image = Image.frombytes("1", (raster.width, raster.height), raster.rows, "raw", "1;I")
    # Dots beyond the printable width are not printed.
    visible_w = min(image.width, -(-paper_dots // raster.scale_x))
    visible_h = min(image.height, _MAX_HEIGHT // raster.scale_y)
    image = image.crop((0, 0, visible_w, visible_h)).convert("L")
    if (raster.scale_x, raster.scale_y) != (1, 1):
        image = image.resize(
            (min(paper_dots, visible_w * raster.scale_x), visible_h * raster.scale_y),
            Image.Resampling.NEAREST,
        )
    return image


def _marker_image(marker: Marker, width: int) -> Image.Image:
    text = marker.text
    cw, ch = CHAR_WIDTH[0], CHAR_HEIGHT[0]
    box = Image.new("L", (min(width, cw * len(text) + 8), ch + 8), 255)
    draw = ImageDraw.Draw(box)
    draw.rectangle((0, 0, box.width - 1, box.height - 1), outline=0)
    draw.text((4, 4), text, font=_font(0), fill=0)
    return box


def _x_for(align: int, item_width: int, paper: int) -> int:
    if align == 1:
        return max(0, (paper - item_width) // 2)
    if align == 2:
        return max(0, paper - item_width)
    return 0


def _slot(line: PrintedLine, paper_dots: int) -> tuple[Image.Image | None, int, int]:
    """(picture or None for blank paper, its x, the height of paper the line takes)."""
    if isinstance(line, Gap):
        return None, 0, line.dots
    if isinstance(line, TextLine):
        if not line.spans:
            return None, 0, line.spacing
        parts = [_span_image(span) for span in line.spans]
        text_w = sum(p.width for p in parts)
        text_h = max(p.height for p in parts)
        strip = Image.new("L", (min(text_w, paper_dots), text_h), 255)
        x = 0
        for part in parts:
            # Characters of mixed heights share their baseline, at the bottom.
            strip.paste(part, (x, text_h - part.height))
            x += part.width
        return strip, _x_for(line.align, strip.width, paper_dots), max(line.spacing, text_h)
    if isinstance(line, Raster):
        image = _raster_image(line, paper_dots)
        return image, _x_for(line.align, image.width, paper_dots), image.height
    box = _marker_image(line, paper_dots)
    return box, _x_for(line.align, box.width, paper_dots), box.height + 4


def render_page(page: Page, paper_dots: int) -> Image.Image:
    slots: list[tuple[Image.Image | None, int, int]] = []
    total = 0
    for line in page.lines:
        if total > _MAX_HEIGHT:
            break
        slot = _slot(line, paper_dots)
        slots.append(slot)
        total += slot[2]
    height = _MARGIN * (3 if page.cut else 2) + total
    paper = Image.new("L", (paper_dots, height), 255)
    y = _MARGIN
    for picture, x, h in slots:
        if picture is not None:
            paper.paste(picture, (x, y))
        y += h
    if page.cut:
        draw = ImageDraw.Draw(paper)
        y += _MARGIN
        dash = 12 if page.cut == "full" else 4
        for x in range(0, paper_dots, dash * 2):
            draw.line((x, y, x + dash - 1, y), fill=0, width=1)
    return paper


def write_png(page: Page, path: Path, paper_dots: int) -> None:
    tmp = path.with_suffix(".png.tmp")
    render_page(page, paper_dots).save(tmp, format="PNG", optimize=False)
    tmp.replace(path)
