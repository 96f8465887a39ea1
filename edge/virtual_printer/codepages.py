"""ESC t n -> text, from the same capability database python-escpos encodes with.

python-escpos writes characters below 0x80 as ASCII and maps 0x80-0xFF through either the
encoding's explicit `data` table or its `python_encode` codec, one byte per character. Building
the inverse from that same data makes decoding exact for every code page python-escpos can
emit, including the odd ones (cp864 remaps ASCII punctuation, which python-escpos never uses).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import structlog

log = structlog.get_logger(__name__)

_REPLACEMENT = "\ufffd"


@dataclass(frozen=True)
class CodePage:
    number: int
    name: str
    table: dict[int, str]  # byte 0x80-0xFF -> character, for str.translate after latin-1
    known: bool

    def decode(self, data: bytes) -> str:
        return data.decode("latin-1").translate(self.table)


def _upper_half(encoding: dict[str, Any]) -> dict[int, str] | None:
    if "data" in encoding:
        chars = list("".join(encoding["data"]))
        if len(chars) == 128:
            return {0x80 + i: c for i, c in enumerate(chars)}
        return None
    codec = encoding.get("python_encode")
    if not codec:
        return None
    table: dict[int, str] = {}
    for byte in range(0x80, 0x100):
        try:
            table[byte] = bytes([byte]).decode(codec)
        except (UnicodeDecodeError, LookupError):
            table[byte] = _REPLACEMENT
    return table


class CodePages:
    """The code page table of one python-escpos printer profile."""

    def __init__(self, profile: str = "default") -> None:
        from escpos.capabilities import CAPABILITIES, get_profile

        self.profile_name = profile
        self._profile: Any = get_profile(profile)
        encodings: dict[str, Any] = CAPABILITIES["encodings"]
        fallback = _upper_half(encodings["CP437"]) or {}
        self._pages: dict[int, CodePage] = {}
        for key, name in dict(self._profile.codePages).items():
            table = _upper_half(encodings.get(name, {}))
            number = int(key)
            self._pages[number] = CodePage(number, name, table or fallback, table is not None)
        self._fallback = fallback
        self._warned: set[int] = set()

    def get(self, number: int) -> CodePage:
        page = self._pages.get(number)
        if page is None or not page.known:
            if number not in self._warned:
                self._warned.add(number)
                log.warning("codepage_unknown", number=number, decoded_as="CP437")
            if page is None:
                page = CodePage(number, "Unknown", self._fallback, False)
        return page

    def media_width_dots(self) -> int | None:
        """The printable width the profile states, when it states one."""
        try:
            return int(self._profile.profile_data["media"]["width"]["pixels"])
        except (KeyError, TypeError, ValueError):
            return None


@functools.lru_cache(maxsize=8)
def for_profile(profile: str = "default") -> CodePages:
    """Shared tables: building one walks every code page of the profile."""
    return CodePages(profile)
