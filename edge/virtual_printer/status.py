"""The printer's condition and the status bytes a real Epson TM-T88 answers for it.

Bit layouts follow the Epson ESC/POS reference (DLE EOT n, GS r n) and the masks python-escpos
reads in `Escpos.is_online` / `Escpos.paper_status`:

| query          | online | paper_near_end | paper_out | cover_open | error |
|----------------|--------|----------------|-----------|------------|-------|
| DLE EOT 1      | 0x12   | 0x12           | 0x1A      | 0x1A       | 0x1A  |
| DLE EOT 2      | 0x12   | 0x12           | 0x32      | 0x16       | 0x52  |
| DLE EOT 3      | 0x12   | 0x12           | 0x12      | 0x12       | 0x52  |
| DLE EOT 4      | 0x12   | 0x1E           | 0x7E      | 0x12       | 0x12  |
| GS r 1 (or 49) | 0x00   | 0x03           | 0x0F      | 0x00       | 0x00  |
| GS r 2 (or 50) | 0x00   | 0x00           | 0x00      | 0x00       | 0x00  |

With the roll empty both the near-end and the end sensor see no paper, as on the hardware,
so paper_out sets both pairs of bits. In the `offline` state nothing answers at all: the
printer is powered off.
"""

from __future__ import annotations

from enum import StrEnum


class PrinterState(StrEnum):
    ONLINE = "online"
    PAPER_NEAR_END = "paper_near_end"
    PAPER_OUT = "paper_out"
    COVER_OPEN = "cover_open"
    ERROR = "error"
    OFFLINE = "offline"

    @property
    def holds_data(self) -> bool:
        """Print data stays in the receive buffer instead of printing."""
        return self in _HOLDING

    @property
    def powered(self) -> bool:
        return self is not PrinterState.OFFLINE


_HOLDING = frozenset({PrinterState.PAPER_OUT, PrinterState.COVER_OPEN, PrinterState.ERROR})

_FIXED = 0x12  # bits 1 and 4 are fixed to 1 in every DLE EOT reply


def dle_eot_reply(n: int, state: PrinterState) -> bytes | None:
    """The byte a printer sends back for DLE EOT n, or None when it sends nothing."""
    if n == 1:
        return bytes([_FIXED | (0x08 if state.holds_data else 0)])
    if n == 2:
        value = _FIXED
        if state is PrinterState.COVER_OPEN:
            value |= 0x04
        if state is PrinterState.PAPER_OUT:
            value |= 0x20
        if state is PrinterState.ERROR:
            value |= 0x40
        return bytes([value])
    if n == 3:
        return bytes([_FIXED | (0x40 if state is PrinterState.ERROR else 0)])
    if n == 4:
        value = _FIXED
        if state in (PrinterState.PAPER_NEAR_END, PrinterState.PAPER_OUT):
            value |= 0x0C
        if state is PrinterState.PAPER_OUT:
            value |= 0x60
        return bytes([value])
    return None


def gs_r_reply(n: int, state: PrinterState) -> bytes | None:
    """The byte answered to GS r n (transmit status), or None for an unsupported n."""
    if n in (1, 49):
        value = 0
        if state in (PrinterState.PAPER_NEAR_END, PrinterState.PAPER_OUT):
            value |= 0x03
        if state is PrinterState.PAPER_OUT:
            value |= 0x0C
        return bytes([value])
    if n in (2, 50):
        return b"\x00"
    return None
