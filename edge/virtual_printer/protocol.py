"""Cut an ESC/POS byte stream into commands, incrementally.

A TCP read can end anywhere, even inside a raster image, so the tokenizer keeps the
unfinished tail and resumes on the next read. It knows the length of every command it
recognises, which is what keeps status queries from being found inside image data.
Unknown commands are skipped by their two-byte prefix (or one byte when the second byte is
itself a control code) and logged once each, so arbitrary bytes never stop the stream.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import structlog

log = structlog.get_logger(__name__)

LF, HT, CR, FF = 0x0A, 0x09, 0x0D, 0x0C
DLE, ESC, FS, GS = 0x10, 0x1B, 0x1C, 0x1D
EOT, ENQ, DC4 = 0x04, 0x05, 0x14

# A declared payload larger than this is taken as garbage rather than waited for.
MAX_PAYLOAD = 16 * 1024 * 1024

_TEXT_RUN = re.compile(rb"[^\x00-\x1f]+")

# Unknown command prefixes already logged, process-wide, so each is logged once.
_UNKNOWN_LOGGED: set[bytes] = set()
_UNKNOWN_LOG_LIMIT = 64


@dataclass(frozen=True, slots=True)
class Token:
    """One command. `kind` names what it does; `a`, `b` are its numeric parameters."""

    kind: str
    raw: bytes
    a: int = 0
    b: int = 0
    data: bytes = b""

    @property
    def realtime(self) -> bool:
        """Status queries and the ASB switch (GS a), acted on when read, never in a job."""
        return self.kind in ("dle_eot", "gs_r", "dle_enq", "dle_dc4", "asb")


# ESC x: number of fixed parameter bytes -> token kind.
_ESC_FIXED: dict[int, tuple[int, str]] = {
    ord("@"): (0, "init"),
    ord("!"): (1, "print_mode"),
    ord("E"): (1, "bold"),
    ord("G"): (1, "double_strike"),
    ord("-"): (1, "underline"),
    ord("a"): (1, "align"),
    ord("t"): (1, "codepage"),
    ord("2"): (0, "spacing_default"),
    ord("3"): (1, "spacing"),
    ord("A"): (1, "spacing_60"),
    ord("+"): (1, "spacing_360"),
    ord("M"): (1, "font"),
    ord("d"): (1, "feed_lines"),
    ord("e"): (1, "reverse_feed_lines"),
    ord("J"): (1, "feed_dots"),
    ord("K"): (1, "reverse_feed_dots"),
    ord("V"): (1, "rotate"),
    ord("{"): (1, "upside_down"),
    ord("r"): (1, "color"),
    ord("R"): (1, "intl_charset"),
    ord(" "): (1, "char_spacing"),
    ord("U"): (1, "unidirectional"),
    ord("="): (1, "peripheral"),
    ord("p"): (3, "pulse"),
    ord("$"): (2, "abs_position"),
    ord("\\"): (2, "rel_position"),
    ord("L"): (0, "page_mode"),
    ord("S"): (0, "standard_mode"),
    ord("W"): (8, "page_area"),
    ord("T"): (1, "page_direction"),
    ord("%"): (1, "user_charset"),
    ord("?"): (1, "cancel_user_char"),
    ord("i"): (0, "cut"),
    ord("m"): (0, "cut"),
    ord("B"): (2, "buzzer"),
    ord("u"): (1, "peripheral_status"),
    ord("v"): (0, "paper_status"),
    ord("c"): (2, "panel"),
}

_GS_FIXED: dict[int, tuple[int, str]] = {
    ord("!"): (1, "char_size"),
    ord("B"): (1, "reverse"),
    ord("a"): (1, "asb"),
    ord("L"): (2, "left_margin"),
    ord("W"): (2, "area_width"),
    ord("H"): (1, "hri_position"),
    ord("f"): (1, "hri_font"),
    ord("h"): (1, "barcode_height"),
    ord("w"): (1, "barcode_width"),
    ord("b"): (1, "smoothing"),
    ord("|"): (1, "density"),
    ord("P"): (2, "motion_units"),
    ord("$"): (2, "abs_vposition"),
    ord("\\"): (2, "rel_vposition"),
    ord("T"): (1, "line_start"),
    ord("I"): (1, "printer_id"),
    ord("/"): (1, "print_downloaded"),
    ord("c"): (0, "print_counter"),
    ord("j"): (1, "asb_ink"),
    ord("Z"): (1, "2d_type"),
    ord(":"): (0, "macro"),
    ord("^"): (3, "macro_run"),
    ord("E"): (1, "head_energy"),
    ord("g"): (4, "maintenance_counter"),
    ord("z"): (3, "online_recovery"),
}

_FS_FIXED: dict[int, tuple[int, str]] = {
    ord("p"): (2, "nv_image"),
    ord("."): (0, "kanji_off"),
    ord("&"): (0, "kanji_on"),
    ord("!"): (1, "kanji_mode"),
    ord("-"): (1, "kanji_underline"),
    ord("S"): (2, "kanji_spacing"),
    ord("W"): (1, "kanji_quad"),
    ord("C"): (1, "kanji_code"),
}


class _Incomplete(Exception):
    """The command at the current position needs more bytes than have arrived.

    `end` is the buffer length that would complete it, 0 when that is not yet known.
    """

    def __init__(self, end: int) -> None:
        super().__init__(end)
        self.end = end


class Tokenizer:
    """Incremental: `feed` returns the commands completed by the new bytes."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._need = 0  # bytes the pending command needs in total; skips useless re-parses

    @property
    def pending(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Token]:
        self._buf += data
        if len(self._buf) < self._need:
            return []
        self._need = 0
        buf = bytes(self._buf)
        out: list[Token] = []
        pos = 0
        end = len(buf)
        while pos < end:
            try:
                token, size = self._one(buf, pos)
            except _Incomplete as inc:
                self._need = max(0, inc.end - pos)
                break
            if token is not None:
                out.append(token)
            pos += size
        del self._buf[:pos]
        return out

    @staticmethod
    def _unknown(prefix: bytes) -> None:
        if prefix in _UNKNOWN_LOGGED or len(_UNKNOWN_LOGGED) > _UNKNOWN_LOG_LIMIT:
            return
        _UNKNOWN_LOGGED.add(prefix)
        if len(_UNKNOWN_LOGGED) > _UNKNOWN_LOG_LIMIT:
            log.info("escpos_unknown_commands_no_longer_logged", limit=_UNKNOWN_LOG_LIMIT)
        else:
            log.info("escpos_unknown_command", prefix=prefix.hex(" "))

    def _one(self, buf: bytes, pos: int) -> tuple[Token | None, int]:
        byte = buf[pos]
        if byte >= 0x20:
            match = _TEXT_RUN.match(buf, pos)
            assert match is not None
            run = match.group()
            return Token("text", run), len(run)
        if byte == LF:
            return Token("lf", b"\n"), 1
        if byte == HT:
            return Token("ht", b"\t"), 1
        if byte == ESC:
            return self._esc(buf, pos)
        if byte == GS:
            return self._gs(buf, pos)
        if byte == DLE:
            return self._dle(buf, pos)
        if byte == FS:
            return self._fs(buf, pos)
        # CR, FF (page mode only), NUL and the other C0 codes do nothing in standard mode.
        return Token("ignored", buf[pos : pos + 1]), 1

    @staticmethod
    def _have(buf: bytes, pos: int, size: int) -> None:
        if pos + size > len(buf):
            raise _Incomplete(pos + size)

    def _skip_unknown(self, buf: bytes, pos: int) -> tuple[Token, int]:
        second = buf[pos + 1]
        size = 1 if second < 0x20 else 2
        self._unknown(buf[pos : pos + size])
        return Token("unknown", buf[pos : pos + size]), size

    def _fixed(
        self, buf: bytes, pos: int, table: dict[int, tuple[int, str]]
    ) -> tuple[Token, int] | None:
        entry = table.get(buf[pos + 1])
        if entry is None:
            return None
        nparams, kind = entry
        size = 2 + nparams
        self._have(buf, pos, size)
        raw = buf[pos : pos + size]
        a = raw[2] if nparams >= 1 else 0
        b = raw[3] if nparams >= 2 else 0
        return Token(kind, raw, a, b), size

    def _esc(self, buf: bytes, pos: int) -> tuple[Token, int]:
        self._have(buf, pos, 2)
        cmd = buf[pos + 1]
        if cmd == ord("*"):
            self._have(buf, pos, 5)
            m, nl, nh = buf[pos + 2], buf[pos + 3], buf[pos + 4]
            per_column = {0: 1, 1: 1, 32: 3, 33: 3}.get(m)
            if per_column is None:
                return self._skip_unknown(buf, pos)
            columns = nl + nh * 256
            size = 5 + columns * per_column
            self._have(buf, pos, size)
            raw = buf[pos : pos + size]
            return Token("bit_image", raw, m, columns, raw[5:]), size
        if cmd == ord("("):
            self._have(buf, pos, 5)
            size = 5 + buf[pos + 3] + buf[pos + 4] * 256
            self._have(buf, pos, size)
            return Token("esc_paren", buf[pos : pos + size], buf[pos + 2]), size
        if cmd == ord("D"):
            # Tab positions, NUL-terminated, at most 32 of them.
            stop = buf.find(b"\x00", pos + 2, pos + 2 + 33)
            if stop < 0:
                if len(buf) - pos < 2 + 33:
                    raise _Incomplete(0)
                return Token("tabs", buf[pos : pos + 2 + 32]), 2 + 32
            raw = buf[pos : stop + 1]
            return Token("tabs", raw, data=raw[2:-1]), len(raw)
        if cmd == ord("&"):
            return self._user_chars(buf, pos)
        fixed = self._fixed(buf, pos, _ESC_FIXED)
        if fixed is not None:
            return fixed
        return self._skip_unknown(buf, pos)

    def _user_chars(self, buf: bytes, pos: int) -> tuple[Token, int]:
        # ESC & y c1 c2 [x d1..d(y*x)]...
        self._have(buf, pos, 5)
        y, c1, c2 = buf[pos + 2], buf[pos + 3], buf[pos + 4]
        if not (32 <= c1 <= c2 <= 126) or y > 3:
            return self._skip_unknown(buf, pos)
        at = pos + 5
        for _ in range(c2 - c1 + 1):
            self._have(buf, at, 1)
            at += 1 + y * buf[at]
            self._have(buf, pos, at - pos)
        return Token("user_chars", buf[pos:at]), at - pos

    def _gs(self, buf: bytes, pos: int) -> tuple[Token, int]:
        self._have(buf, pos, 2)
        cmd = buf[pos + 1]
        if cmd == ord("V"):
            self._have(buf, pos, 3)
            m = buf[pos + 2]
            size = 4 if m in (65, 66, 97, 98, 103, 104) else 3
            self._have(buf, pos, size)
            raw = buf[pos : pos + size]
            return Token("cut", raw, m, raw[3] if size == 4 else 0), size
        if cmd == ord("r"):
            self._have(buf, pos, 3)
            return Token("gs_r", buf[pos : pos + 3], buf[pos + 2]), 3
        if cmd == ord("v"):
            self._have(buf, pos, 8)
            if buf[pos + 2] != ord("0"):
                return self._skip_unknown(buf, pos)
            m = buf[pos + 3]
            xbytes = buf[pos + 4] + buf[pos + 5] * 256
            ydots = buf[pos + 6] + buf[pos + 7] * 256
            payload = xbytes * ydots
            if payload > MAX_PAYLOAD:
                return self._skip_unknown(buf, pos)
            size = 8 + payload
            self._have(buf, pos, size)
            raw = buf[pos : pos + size]
            return Token("raster", raw, m, xbytes, raw[8:]), size
        if cmd == ord("("):
            self._have(buf, pos, 5)
            size = 5 + buf[pos + 3] + buf[pos + 4] * 256
            self._have(buf, pos, size)
            raw = buf[pos : pos + size]
            return Token("gs_paren", raw, buf[pos + 2], data=raw[5:]), size
        if cmd == ord("8"):
            # GS 8 L / GS 8 A: GS ( L with a four-byte length.
            self._have(buf, pos, 7)
            length = int.from_bytes(buf[pos + 3 : pos + 7], "little")
            if length > MAX_PAYLOAD:
                return self._skip_unknown(buf, pos)
            size = 7 + length
            self._have(buf, pos, size)
            raw = buf[pos : pos + size]
            return Token("gs_paren", raw, buf[pos + 2], data=raw[7:]), size
        if cmd == ord("k"):
            return self._barcode(buf, pos)
        if cmd == ord("*"):
            self._have(buf, pos, 4)
            size = 4 + buf[pos + 2] * buf[pos + 3] * 8
            self._have(buf, pos, size)
            return Token("define_image", buf[pos : pos + size]), size
        fixed = self._fixed(buf, pos, _GS_FIXED)
        if fixed is not None:
            return fixed
        return self._skip_unknown(buf, pos)

    def _barcode(self, buf: bytes, pos: int) -> tuple[Token, int]:
        self._have(buf, pos, 3)
        m = buf[pos + 2]
        if m <= 6:
            stop = buf.find(b"\x00", pos + 3, pos + 3 + 256)
            if stop < 0:
                if len(buf) - pos < 3 + 256:
                    raise _Incomplete(0)
                return self._skip_unknown(buf, pos)
            raw = buf[pos : stop + 1]
            return Token("barcode", raw, m, data=raw[3:-1]), len(raw)
        if 65 <= m <= 78:
            self._have(buf, pos, 4)
            size = 4 + buf[pos + 3]
            self._have(buf, pos, size)
            raw = buf[pos : pos + size]
            return Token("barcode", raw, m, data=raw[4:]), size
        return self._skip_unknown(buf, pos)

    def _dle(self, buf: bytes, pos: int) -> tuple[Token, int]:
        self._have(buf, pos, 2)
        cmd = buf[pos + 1]
        if cmd == EOT:
            self._have(buf, pos, 3)
            n = buf[pos + 2]
            size = 4 if n in (7, 8) else 3
            self._have(buf, pos, size)
            return Token("dle_eot", buf[pos : pos + size], n), size
        if cmd == ENQ:
            self._have(buf, pos, 3)
            return Token("dle_enq", buf[pos : pos + 3], buf[pos + 2]), 3
        if cmd == DC4:
            self._have(buf, pos, 3)
            fn = buf[pos + 2]
            size = 10 if fn == 8 else 5
            self._have(buf, pos, size)
            return Token("dle_dc4", buf[pos : pos + size], fn), size
        return Token("ignored", buf[pos : pos + 1]), 1

    def _fs(self, buf: bytes, pos: int) -> tuple[Token, int]:
        self._have(buf, pos, 2)
        cmd = buf[pos + 1]
        if cmd == ord("("):
            self._have(buf, pos, 5)
            size = 5 + buf[pos + 3] + buf[pos + 4] * 256
            self._have(buf, pos, size)
            return Token("fs_paren", buf[pos : pos + size], buf[pos + 2]), size
        if cmd == ord("q"):
            # FS q n [xL xH yL yH d1..dk]1..n: define NV bit images.
            self._have(buf, pos, 3)
            at = pos + 3
            for _ in range(buf[pos + 2]):
                self._have(buf, at, 4)
                x = buf[at] + buf[at + 1] * 256
                y = buf[at + 2] + buf[at + 3] * 256
                if x * y * 8 > MAX_PAYLOAD:
                    return self._skip_unknown(buf, pos)
                at += 4 + x * y * 8
                self._have(buf, pos, at - pos)
            return Token("define_nv_images", buf[pos:at]), at - pos
        if cmd == ord("2"):
            size = 4 + 72
            self._have(buf, pos, size)
            return Token("kanji_user_char", buf[pos : pos + size]), size
        fixed = self._fixed(buf, pos, _FS_FIXED)
        if fixed is not None:
            return fixed
        return self._skip_unknown(buf, pos)
