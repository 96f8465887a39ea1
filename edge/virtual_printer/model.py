"""What came out on the paper: lines of styled text, images, gaps; and the recorded job.

The text form (`txt_line`) is what DIR/NNNN.txt holds, one printed line per line. A line
printed in anything but plain normal-size left-aligned font A carries a prefix in braces:
size as WxH (`2x2` double width and height, `1x2` double height), `b` bold, `u`/`u2`
underline, `rev` white on black, `fontB`, `center`/`right`. So the kind in large type reads
`{2x2 b center} NEW`. Images read `[raster 576x24]`, barcodes `[barcode 73 ...]`, 2D codes
`[qr ...]`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

ALIGNS = ("left", "center", "right")


@dataclass(frozen=True, slots=True)
class Style:
    bold: bool = False
    underline: int = 0
    width: int = 1
    height: int = 1
    font: int = 0
    reverse: bool = False


NORMAL = Style()


@dataclass(frozen=True, slots=True)
class Span:
    text: str
    style: Style


@dataclass(frozen=True, slots=True)
class TextLine:
    spans: tuple[Span, ...]
    align: int
    spacing: int  # line feed amount in dots

    @property
    def text(self) -> str:
        return "".join(span.text for span in self.spans)

    def markers(self) -> list[str]:
        inked = [s for s in self.spans if s.text.strip()] or list(self.spans)
        out: list[str] = []
        if inked:
            width = max(s.style.width for s in inked)
            height = max(s.style.height for s in inked)
            if (width, height) != (1, 1):
                out.append(f"{width}x{height}")
            if any(s.style.bold for s in inked):
                out.append("b")
            underline = max(s.style.underline for s in inked)
            if underline:
                out.append("u" if underline == 1 else "u2")
            if any(s.style.reverse for s in inked):
                out.append("rev")
            if any(s.style.font for s in inked):
                out.append("fontB")
        if self.spans and self.align:
            out.append(ALIGNS[self.align])
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "text",
            "text": self.text,
            "align": ALIGNS[self.align],
            "spans": [
                {
                    "text": s.text,
                    "bold": s.style.bold,
                    "underline": s.style.underline,
                    "width": s.style.width,
                    "height": s.style.height,
                    "font": s.style.font,
                    "reverse": s.style.reverse,
                }
                for s in self.spans
            ],
        }


@dataclass(frozen=True, slots=True)
class Raster:
    """A bit image: row-major packed rows (GS v 0, GS ( L) or ESC * column stripes."""

    width: int  # dots, before scaling
    height: int
    scale_x: int
    scale_y: int
    align: int
    rows: bytes = b""  # ((width + 7) // 8) bytes per row, MSB first, 1 = black
    stripes: tuple[bytes, ...] = ()  # column format, `stripe_dots` dots per column
    stripe_dots: int = 0

    @property
    def size(self) -> tuple[int, int]:
        return self.width * self.scale_x, self.height * self.scale_y

    @property
    def text(self) -> str:
        w, h = self.size
        return f"[raster {w}x{h}]"

    def to_dict(self) -> dict[str, Any]:
        w, h = self.size
        return {"type": "raster", "text": self.text, "width": w, "height": h,
                "align": ALIGNS[self.align]}


@dataclass(frozen=True, slots=True)
class Marker:
    """Something printed that is not text or a bit image: a barcode, a QR code."""

    label: str
    align: int

    @property
    def text(self) -> str:
        return f"[{self.label}]"

    def to_dict(self) -> dict[str, Any]:
        return {"type": "marker", "text": self.text, "align": ALIGNS[self.align]}


@dataclass(frozen=True, slots=True)
class Gap:
    """Paper fed by a dot count (ESC J); no printed line."""

    dots: int


PrintedLine = TextLine | Raster | Marker | Gap


def job_key_of(lines: list[str]) -> str | None:
    """The job key from a ticket's `job {job_key}` line (CONTRACT section 5), if it has one.

    The last such line counts; non-blank lines after it are its continuation when the key
    was wider than the paper and wrapped.
    """
    stripped = [line.strip() for line in lines]
    for i in range(len(stripped) - 1, -1, -1):
        if stripped[i].startswith("job "):
            key = (stripped[i][4:] + "".join(stripped[i + 1 :])).strip()
            return key or None
    return None


def txt_line(line: TextLine | Raster | Marker) -> str:
    if isinstance(line, TextLine):
        marks = line.markers()
        return f"{{{' '.join(marks)}}} {line.text}" if marks else line.text
    return line.text


@dataclass(frozen=True)
class Page:
    """One ticket as the interpreter saw it, up to the cut (or the end of the connection)."""

    lines: tuple[PrintedLine, ...]
    cut: str | None  # "full", "partial", or None when the data ended without a cut

    @property
    def printed(self) -> list[TextLine | Raster | Marker]:
        return [line for line in self.lines if not isinstance(line, Gap)]

    def text_lines(self) -> list[str]:
        return [line.text for line in self.printed]

    def txt_lines(self) -> list[str]:
        return [txt_line(line) for line in self.printed]


@dataclass
class Job:
    seq: int
    peer: str
    first_byte_at: float
    completed_at: float
    raw: bytes
    page: Page
    bin_path: Path | None = None
    txt_path: Path | None = None
    png_path: Path | None = None  # set once the PNG is on disk

    @property
    def cut(self) -> str | None:
        return self.page.cut

    @property
    def text(self) -> list[str]:
        return self.page.text_lines()

    @property
    def txt(self) -> list[str]:
        return self.page.txt_lines()

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "peer": self.peer,
            "first_byte_at": self.first_byte_at,
            "completed_at": self.completed_at,
            "cut": self.cut,
            "job_key": job_key_of(self.text),
            "bytes": len(self.raw),
            "text": self.text,
            "txt": self.txt,
            "lines": [line.to_dict() for line in self.page.printed],
            "paths": {
                "bin": str(self.bin_path) if self.bin_path else None,
                "txt": str(self.txt_path) if self.txt_path else None,
                "png": str(self.png_path) if self.png_path else None,
            },
        }
