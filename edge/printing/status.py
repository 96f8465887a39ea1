"""Real-time printer status: the ESC/POS `DLE EOT n` queries and what their replies mean.

Bit meanings follow Epson's ESC/POS reference for `DLE EOT` (TM-T88 family), the same
masks python-escpos uses (`RT_MASK_ONLINE` 0x08, `RT_MASK_NOPAPER` 0x72 = 0x12 | 0x60,
`RT_MASK_LOWPAPER` 0x1E = 0x12 | 0x0C):

- every reply has bit 1 and bit 4 on and bits 0 and 7 off (`0**1**10`), so a status reply
  can be told apart from Automatic Status Back bytes and XON/XOFF that a printer may also
  send on the same channel;
- n=1 printer status: 0x08 offline (0x04 is the drawer pin, ignored);
- n=2 offline cause: 0x04 cover open, 0x08 paper being fed by the button,
  0x20 printing stopped by paper end, 0x40 an error occurred;
- n=3 error cause: 0x04 recoverable error (undefined on older models), 0x08 autocutter error,
  0x20 unrecoverable error, 0x40 automatically recoverable error (head too hot, or the
  cover was opened while printing);
- n=4 roll paper sensor: 0x0C paper near end, 0x60 paper end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PrinterState = Literal["online", "offline", "paper_out", "cover_open", "error"]

DLE_EOT = b"\x10\x04"
QUERY_PRINTER = DLE_EOT + b"\x01"
QUERY_OFFLINE_CAUSE = DLE_EOT + b"\x02"
QUERY_ERROR_CAUSE = DLE_EOT + b"\x03"
QUERY_PAPER = DLE_EOT + b"\x04"

# The queries every status check sends, in this order; DLE EOT 3 is only worth asking when
# DLE EOT 2 says an error occurred (it names the cause).
STATUS_QUERIES: bytes = QUERY_PRINTER + QUERY_OFFLINE_CAUSE + QUERY_PAPER

_REPLY_MASK = 0x93  # bits 0, 1, 4, 7: the fixed bits of every DLE EOT reply
_REPLY_FIXED = 0x12  # bit 1 and bit 4 on, bit 0 and bit 7 off

_OFFLINE = 0x08
OFFLINE_BIT = _OFFLINE   # DLE EOT 1: the printer cannot print now
_COVER_OPEN = 0x04
_PAPER_END_STOP = 0x20
_ERROR = 0x40
_NEAR_END = 0x0C
_PAPER_END = 0x60

_ERROR_CAUSES: tuple[tuple[int, str], ...] = (
    (0x04, "recoverable"),
    (0x08, "autocutter"),
    (0x20, "unrecoverable"),
    (0x40, "auto_recoverable"),
)
# Bit 2 of DLE EOT 3 is "undefined" on older models, so alone it never makes an error.
_ERROR_CAUSE_BITS = 0x68


def is_status_reply(byte: int) -> bool:
    """True if `byte` has the fixed bits of a DLE EOT reply."""
    return byte & _REPLY_MASK == _REPLY_FIXED


@dataclass(frozen=True)
class PrinterStatus:
    online: bool
    paper_out: bool
    paper_near_end: bool
    cover_open: bool
    error: bool
    # Additions: named causes from DLE EOT 3, and whether the status was really read from
    # the printer (False for a one-way USB printer that has no channel to answer on).
    error_causes: tuple[str, ...] = ()
    reported: bool = True

    @property
    def state(self) -> PrinterState:
        """One word for the operator, most actionable cause first.

        cover_open > paper_out > error > offline > online. An open cover and a paper end also
        take the printer offline (and opening the cover mid-ticket also sets the error bit),
        so the specific, fixable-by-hand cause wins over the generic consequences.
        """
        if self.cover_open:
            return "cover_open"
        if self.paper_out:
            return "paper_out"
        if self.error:
            return "error"
        if not self.online:
            return "offline"
        return "online"

    @property
    def ready(self) -> bool:
        """The printer can print a ticket now. Paper near end still prints."""
        return self.online and not (self.paper_out or self.cover_open or self.error)


def parse_status(eot1: int, eot2: int, eot4: int, eot3: int | None = None) -> PrinterStatus:
    """Build a status from the replies to DLE EOT 1, 2, 4 (and 3 when it was asked).

    Raises ValueError when a byte is not a DLE EOT reply at all.
    """
    for n, byte in ((1, eot1), (2, eot2), (4, eot4), (3, eot3)):
        if byte is None:
            continue
        if not 0 <= byte <= 0xFF or not is_status_reply(byte):
            raise ValueError(f"0x{byte:02x} is not a reply to DLE EOT {n}")
    causes = tuple(name for bit, name in _ERROR_CAUSES if eot3 is not None and eot3 & bit)
    return PrinterStatus(
        online=not eot1 & _OFFLINE,
        # Either paper-end bit counts: some clones set only one of the pair.
        paper_out=bool(eot4 & _PAPER_END) or bool(eot2 & _PAPER_END_STOP),
        paper_near_end=bool(eot4 & _NEAR_END),
        cover_open=bool(eot2 & _COVER_OPEN),
        error=bool(eot2 & _ERROR) or (eot3 is not None and bool(eot3 & _ERROR_CAUSE_BITS)),
        error_causes=causes,
    )


# Automatic Status Back (ESC/POS `GS a n`): the printer pushes a 4-byte status on its own
# whenever it changes. n = 0x0E asks for online/offline (bit 1), errors (bit 2) and the roll
# paper sensors (bit 3); the drawer (bit 0) is no business of the kitchen. Epson TM printers
# push the first frame at once, then one per change, so recovery (paper loaded, cover
# closed) is noticed the moment it happens instead of at the next poll. The first byte of a
# frame has bit 4 on and bits 0, 1, 7 off; bytes 2-4 have bits 4 and 7 off: none of them can
# be mistaken for a DLE EOT reply (bit 1 on, bit 4 on), so replies and frames share the
# channel safely.
ASB_ENABLE = b"\x1da\x0e"
ASB_FRAME = 4
_ASB_HEADER_MASK = 0x93
_ASB_HEADER = 0x10


def is_asb_header(byte: int) -> bool:
    return byte & _ASB_HEADER_MASK == _ASB_HEADER


def parse_asb(frame: bytes) -> PrinterStatus:
    """A status from one Automatic Status Back frame (Epson TM-T88 layout):
    byte 1: 0x08 offline, 0x20 cover open; byte 2: 0x08 autocutter error, 0x20 unrecoverable
    error, 0x40 automatically recoverable error; byte 3: 0x03 roll paper near end, 0x0C roll
    paper end."""
    if len(frame) != ASB_FRAME or not is_asb_header(frame[0]):
        raise ValueError(f"{frame.hex()} is not an Automatic Status Back frame")
    first, second, third = frame[0], frame[1], frame[2]
    causes = tuple(name for bit, name in ((0x08, "autocutter"), (0x20, "unrecoverable"),
                                          (0x40, "auto_recoverable")) if second & bit)
    return PrinterStatus(
        online=not first & 0x08,
        paper_out=third & 0x0C == 0x0C,
        paper_near_end=bool(third & 0x03),
        cover_open=bool(first & 0x20),
        error=bool(causes),
        error_causes=causes,
    )


# What a one-way printer (no bulk IN endpoint) is assumed to be: it cannot say otherwise.
ASSUMED_READY = PrinterStatus(
    online=True,
    paper_out=False,
    paper_near_end=False,
    cover_open=False,
    error=False,
    reported=False,
)
