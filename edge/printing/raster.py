"""Draw a ticket line no code page holds as a 1-bit image, sent with GS v 0.

The line is drawn in DejaVu Sans Mono, sized so one character cell matches the printer's
font A cell (12 dots for 48 columns on 576 dots), so a rastered line lines up with the text
lines around it and wraps at the same column count. DejaVu Sans backs it up for the few
symbols Mono lacks. A character no font has is drawn as U+25A1 (a visible box) and logged,
never dropped and never `?`. Arabic and Hebrew are shaped and reordered by Pillow's libraqm
layout when Pillow has it (the manylinux wheels do, with fribidi); without it they are drawn
unshaped, left to right, and `raster_no_text_shaping` is logged once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

# Pillow is imported where a line is drawn, not at start: most tickets never need a raster
# line (their text is in a code page), and Pillow's modules are about 4 MB of the daemon's
# RSS (issue 12).
if TYPE_CHECKING:
    from PIL import Image, ImageFont

log = structlog.get_logger(__name__)

PLACEHOLDER = "\u25a1"  # WHITE SQUARE: stands in for a glyph no font has

# Where the fonts are looked for, in order: a copy shipped inside the package (pyproject's
# package-data `edge/fonts/*.ttf`), then the usual system places of fonts-dejavu-core.
FONT_DIRS: tuple[Path, ...] = (
    Path(__file__).resolve().parent.parent / "fonts",
    Path("/usr/share/fonts/truetype/dejavu"),
    Path("/usr/share/fonts/dejavu"),
    Path("/usr/share/fonts/TTF"),
    Path("/usr/share/fonts/truetype"),
    Path("/usr/local/share/fonts"),
    Path("/usr/local/share/fonts/dejavu"),
)
REGULAR = ("DejaVuSansMono.ttf", "DejaVuSans.ttf")
BOLD = ("DejaVuSansMono-Bold.ttf", "DejaVuSans-Bold.ttf")

# Character cell of the printer's font A is 12 x 24 dots; the printer's default line pitch
# is about 30 dots, so a rastered line is 2.5 cell widths tall.
_LINE_PITCH = 2.5
_MONO_ADVANCE = 0.6021  # DejaVu Sans Mono advance width per em


def _find(name: str) -> Path | None:
    for folder in FONT_DIRS:
        path = folder / name
        if path.is_file():
            return path
    return None


@lru_cache(maxsize=1)
def _layout_engine() -> ImageFont.Layout:
    from PIL import ImageFont, features

    if features.check("raqm") and features.check("fribidi"):
        return ImageFont.Layout.RAQM
    log.warning("raster_no_text_shaping", reason="Pillow lacks libraqm/fribidi")
    return ImageFont.Layout.BASIC


class _Font:
    """One loaded face and which characters it has glyphs for."""

    def __init__(self, face: ImageFont.FreeTypeFont) -> None:
        self.face = face
        # A codepoint no font has (plane 16 private use) draws the face's .notdef box; any
        # character drawing the same mask has no glyph of its own.
        notdef = face.getmask("\U0010fffd")
        self._notdef = (notdef.size, bytes(notdef))
        self._covered: dict[str, bool] = {}

    def covers(self, char: str) -> bool:
        known = self._covered.get(char)
        if known is None:
            if char.isspace() or " " < char < "\x7f":
                known = True
            else:
                mask = self.face.getmask(char)
                known = (mask.size, bytes(mask)) != self._notdef
            self._covered[char] = known
        return known


@lru_cache(maxsize=32)
def _fonts(bold: bool, size: float) -> tuple[_Font, ...]:
    from PIL import ImageFont

    engine = _layout_engine()
    chain: list[_Font] = []
    for name in BOLD if bold else REGULAR:
        path = _find(name)
        if path is not None:
            chain.append(_Font(ImageFont.truetype(str(path), size, layout_engine=engine)))
    if not chain and bold:
        return _fonts(False, size)
    if not chain:
        log.warning(
            "raster_font_missing",
            wanted=REGULAR,
            looked_in=[str(d) for d in FONT_DIRS],
            fallback="Pillow built-in font",
            hint="install fonts-dejavu-core",
        )
        default = ImageFont.load_default(size=size)
        if not isinstance(default, ImageFont.FreeTypeFont):  # pragma: no cover - no FreeType
            raise RuntimeError("Pillow has no FreeType support: cannot draw ticket lines")
        chain.append(_Font(default))
    return tuple(chain)


def _pick(chain: Sequence[_Font], text: str) -> tuple[_Font, str, tuple[str, ...]]:
    """The font to draw `text` with, the text to draw, and the characters it lacks."""
    best: tuple[_Font, list[str]] | None = None
    for font in chain:
        missing = [c for c in set(text) if not font.covers(c)]
        if not missing:
            return font, text, ()
        if best is None or len(missing) < len(best[1]):
            best = (font, missing)
    assert best is not None
    font, missing = best
    placeholder = PLACEHOLDER if font.covers(PLACEHOLDER) else "*"
    drawn = "".join(placeholder if c in missing else c for c in text)
    return font, drawn, tuple(sorted(missing))


def line_width_px(columns: int, profile_pixels: int | None) -> int:
    """Dots across a rastered line: 12 per column, never wider than the profile's paper."""
    width = columns * 12
    if profile_pixels:
        width = min(width, profile_pixels)
    return width - width % 8


@dataclass(frozen=True)
class RasterLine:
    image: Image.Image  # mode "1", a set bit (white in PIL terms) is a printed dot
    missing: tuple[str, ...]  # characters drawn as PLACEHOLDER


def draw_line(
    prefix: str,
    text: str,
    *,
    columns: int,
    width_px: int,
    double_width: bool = False,
    double_height: bool = False,
    bold: bool = False,
    invert: bool = False,
    center: bool = False,
) -> RasterLine:
    """One printed line: `prefix` (indent, plain) then `text` in the line's style."""
    from PIL import Image, ImageDraw

    cell = width_px / columns
    sx = 2 if double_width else 1
    sy = 2 if double_height else 1
    scale = min(sx, sy)
    line_h = round(cell * _LINE_PITCH)
    canvas_w = width_px * scale // sx
    canvas_h = line_h * scale
    size = cell * scale * 0.998 / _MONO_ADVANCE

    font, drawn, missing = _pick(_fonts(bold, size), prefix + text)
    if missing:
        log.warning(
            "ticket_glyph_missing",
            codepoints=[f"U+{ord(c):04X}" for c in missing],
            placeholder=f"U+{ord(PLACEHOLDER):04X}",
        )
    drawn_prefix, drawn_text = drawn[: len(prefix)], drawn[len(prefix) :]
    face = font.face
    prefix_w = face.getlength(drawn_prefix) if drawn_prefix else 0.0
    text_w = face.getlength(drawn_text) if drawn_text else 0.0
    needed = math.ceil(prefix_w + text_w)
    # A proportional fallback face or a wide glyph may overrun the line: draw wider, squeeze.
    draw_w = max(canvas_w, needed)

    img = Image.new("L", (draw_w, canvas_h), 0)
    draw = ImageDraw.Draw(img)
    draw.fontmode = "1"
    ascent, descent = face.getmetrics()
    y = max(0, (canvas_h - (ascent + descent)) // 2)
    x = (draw_w - needed) // 2 if center else 0
    if drawn_prefix:
        draw.text((x, y), drawn_prefix, font=face, fill=255)
    x_text = x + prefix_w
    if invert and drawn_text:
        draw.rectangle(
            (
                max(0, math.floor(x_text) - 2),
                0,
                min(draw_w - 1, math.ceil(x_text + text_w) + 2),
                canvas_h - 1,
            ),
            fill=255,
        )
    if drawn_text:
        draw.text((x_text, y), drawn_text, font=face, fill=0 if invert else 255)

    if draw_w != canvas_w:
        img = img.resize((canvas_w, canvas_h), Image.Resampling.LANCZOS)
    if (canvas_w, canvas_h) != (width_px, line_h * sy):
        img = img.resize((width_px, line_h * sy), Image.Resampling.NEAREST)
    return RasterLine(img.convert("1", dither=Image.Dither.NONE), missing)


def gs_v0(image: Image.Image) -> bytes:
    """GS v 0 m xL xH yL yH d1...dk: raster bit image, normal density, rows MSB first."""
    from PIL import Image

    bitmap = image if image.mode == "1" else image.convert("1", dither=Image.Dither.NONE)
    width, height = bitmap.size
    width_bytes = (width + 7) // 8
    header = b"\x1dv0\x00" + width_bytes.to_bytes(2, "little") + height.to_bytes(2, "little")
    return header + bitmap.tobytes()


def preview(image: Image.Image) -> Image.Image:
    """How the line looks on paper (black dots on white), for humans and PNG files."""
    from PIL import ImageOps

    return ImageOps.invert(image.convert("L"))
