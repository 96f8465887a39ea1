"""Which of a printer's code pages can hold a line of ticket text.

The printer's python-escpos capability profile lists its code pages (`ESC t n` number -> name).
Only pages with a Python codec are used, and only their single-byte half (0x80-0xFF), because
that is what `ESC t` switches; a multi-byte codec such as cp932 would otherwise smuggle in
double-byte sequences the printer reads as two unrelated characters.

python-escpos's MagicEncode writes `?` for a character no page holds; the ticket must never
show `?` for a real character, so text reaches the printer only through `CodePageSet.encode`
after `CodePageSet.choose` found a page holding every character, and lines no page holds
are drawn as raster images instead (edge.printing.raster). Right-to-left scripts count as
held by no page, since text mode can neither reorder nor join them.
"""

from __future__ import annotations

import codecs
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any

# Order in which pages are tried for a line the currently selected page cannot hold. Kitchen
# text here is mostly Turkish, so PC857 / WPC1254 come right after the classic PC437.
PREFERRED: tuple[str, ...] = (
    "CP437",
    "CP857",
    "CP1254",
    "CP850",
    "CP1252",
    "CP858",
    "ISO_8859-15",
    "CP866",
    "CP1251",
    "CP852",
    "CP1250",
    "ISO_8859-2",
    "CP737",
    "CP1253",
    "CP775",
    "CP1257",
)

_RTL = frozenset({"R", "AL", "AN"})

_ALIASES = {
    "PC": "CP",
    "WPC": "CP",
    "WINDOWS-": "CP",
    "WINDOWS": "CP",
    "IBM": "CP",
}


@dataclass(frozen=True)
class CodePage:
    name: str  # escpos-printer-db name, e.g. "CP857"
    number: int  # the n of ESC t n
    charmap: Mapping[str, int]  # non-ASCII character -> byte 0x80..0xFF

    def holds(self, chars: frozenset[str]) -> bool:
        charmap = self.charmap
        return all(c in charmap for c in chars)

    def encode(self, text: str) -> bytes:
        """Encode text this page holds (callers check with `holds` first)."""
        if text.isascii():
            return text.encode("ascii")
        charmap = self.charmap
        return bytes(ord(c) if c < "\x80" else charmap[c] for c in text)

    @property
    def select(self) -> bytes:
        """ESC t n."""
        return b"\x1bt" + bytes((self.number,))


def normalize_name(name: str) -> str:
    """Operator spelling (PC857, WPC1254, windows-1254, iso-8859-9, cp857) -> db name."""
    key = name.strip().upper().replace(" ", "")
    for prefix, repl in _ALIASES.items():
        if key.startswith(prefix) and key[len(prefix) :].isdigit():
            return repl + key[len(prefix) :]
    if key.startswith("ISO"):
        digits = key[3:].lstrip("-_")
        if digits.startswith("8859"):
            return "ISO_8859-" + digits[4:].lstrip("-_")
    return key


def _capabilities() -> dict[str, Any]:
    from escpos.capabilities import CAPABILITIES

    caps: dict[str, Any] = CAPABILITIES
    return caps


@cache
def _charmap(codec: str) -> Mapping[str, int]:
    charmap: dict[str, int] = {}
    for byte in range(0x80, 0x100):
        try:
            char = bytes((byte,)).decode(codec)
        except UnicodeDecodeError:
            continue
        # A page's control-code slots (latin-1's 0x80-0x9F) are not printable characters.
        if len(char) != 1 or unicodedata.category(char) in ("Cc", "Cs"):
            continue
        # Right-to-left letters print left to right and unjoined in text mode (PC864,
        # WPC1256, PC862...): they are drawn as raster, where they are shaped and reordered.
        if unicodedata.bidirectional(char) in _RTL:
            continue
        charmap.setdefault(char, byte)
    return charmap


def _codec_of(name: str) -> str | None:
    entry = _capabilities()["encodings"].get(name)
    if not entry:
        return None
    codec = entry.get("python_encode")
    if not isinstance(codec, str):
        return None
    try:
        codecs.lookup(codec)
    except LookupError:
        return None
    return codec


class CodePageSet:
    """The code pages one printer profile can print, in the order they are tried."""

    def __init__(self, pages: tuple[CodePage, ...]) -> None:
        self.pages = pages

    def choose(self, text: str, current: CodePage | None) -> CodePage | None:
        """The page to print `text` with; None when no page holds all of it (raster it).

        The selected page is kept when it holds the text, which saves an ESC t per line.
        """
        chars = frozenset(c for c in text if c >= "\x80")
        if current is not None and current.holds(chars):
            return current
        for page in self.pages:
            if page.holds(chars):
                return page
        return None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.pages)


class CodePageError(ValueError):
    """An unknown profile or a forced code page the profile cannot print."""


def profile_names() -> tuple[str, ...]:
    return tuple(sorted(_capabilities()["profiles"]))


@lru_cache(maxsize=64)
def codepage_set(profile: str | None, codepage: str | None = None) -> CodePageSet:
    """The usable pages of `profile` (None -> python-escpos "default").

    With `codepage` (the printer config's forced page) the set holds only that page, so text
    it cannot hold is rastered rather than sent in another page the printer may lack.
    Raises CodePageError for an unknown profile, or a forced page the profile does not list
    or Python has no codec for.
    """
    profiles = _capabilities()["profiles"]
    name = profile or "default"
    if name not in profiles:
        raise CodePageError(f"unknown printer profile '{name}'")
    numbers: dict[str, int] = {}
    for number, page_name in profiles[name].get("codePages", {}).items():
        # A page listed under several numbers (POS-5890) is selected by its lowest one.
        if page_name not in numbers or int(number) < numbers[page_name]:
            numbers[page_name] = int(number)

    if codepage is not None:
        wanted = normalize_name(codepage)
        if wanted not in numbers:
            raise CodePageError(
                f"code page '{codepage}' is not in printer profile '{name}' "
                f"(it has: {', '.join(sorted(n for n in numbers if n != 'Unknown'))})"
            )
        codec = _codec_of(wanted)
        if codec is None:
            raise CodePageError(f"code page '{codepage}' has no Python codec to encode with")
        return CodePageSet((CodePage(wanted, numbers[wanted], _charmap(codec)),))

    usable: list[CodePage] = []
    for page_name, number in numbers.items():
        codec = _codec_of(page_name)
        if codec is not None:
            usable.append(CodePage(page_name, number, _charmap(codec)))
    rank = {n: i for i, n in enumerate(PREFERRED)}
    usable.sort(key=lambda p: (rank.get(p.name, len(rank)), p.number))
    return CodePageSet(tuple(usable))


def check_codepage(profile: str | None, codepage: str | None) -> str | None:
    """For `config check`: a problem description, or None when the pair is usable."""
    try:
        codepage_set(profile, codepage)
    except CodePageError as exc:
        return str(exc)
    return None
