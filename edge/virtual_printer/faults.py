"""The ways the virtual printer misbehaves on purpose, for the tests and the demo.

A mode is how the printer's network interface treats connections, orthogonal to the paper
and cover state (`status.PrinterState`):

- `normal`: reads everything as it arrives (within the receive buffer limit).
- `hung`: accepts connections, never reads, never answers; the bytes pile up in the kernel
  until the sender's writes block. ASB is not sent either.
- `drop`: accepts each connection and closes it at once; with `after_bytes` N it first reads
  N bytes of print data (status queries do not count), so a ticket is cut mid-way.
- `slow`: reads at most `bytes_per_second` from the sockets (one token bucket for the whole
  printer, refilled ten times a second); status queries are answered when they are read,
  that is after the bytes in front of them.

An armed change (`ArmedChange`) is a state change that waits for print data: after N more
bytes (`after_bytes`, the text run that crosses the point is split there) or right after the
Nth cut received (`after_cuts`), so paper can run out during or just after a ticket at a
point a test chooses.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from edge.virtual_printer.protocol import Token
from edge.virtual_printer.status import PrinterState

DEFAULT_BYTES_PER_SECOND = 300


class Mode(StrEnum):
    NORMAL = "normal"
    HUNG = "hung"
    DROP = "drop"
    SLOW = "slow"


class FieldError(ValueError):
    """A control request or flag with a bad field; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _count(body: Mapping[str, Any], name: str, minimum: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise FieldError(name, f"must be a whole number >= {minimum}, got {value!r}")
    return value


@dataclass(frozen=True)
class ModeSettings:
    mode: Mode = Mode.NORMAL
    after_bytes: int | None = None  # drop: print-data bytes read before the drop
    bytes_per_second: int = DEFAULT_BYTES_PER_SECOND  # slow

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> ModeSettings:
        """From a `POST /mode` body; raises FieldError naming the bad field."""
        try:
            mode = Mode(str(body.get("mode")))
        except ValueError:
            choices = ", ".join(m.value for m in Mode)
            raise FieldError("mode", f"must be one of {choices}, got {body.get('mode')!r}") \
                from None
        after_bytes = _count(body, "after_bytes", 0)
        if after_bytes is not None and mode is not Mode.DROP:
            raise FieldError("after_bytes", "only applies to mode drop")
        rate = _count(body, "bytes_per_second", 1)
        if rate is not None and mode is not Mode.SLOW:
            raise FieldError("bytes_per_second", "only applies to mode slow")
        return cls(mode, after_bytes or None, rate or DEFAULT_BYTES_PER_SECOND)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode.value,
            "after_bytes": self.after_bytes,
            "bytes_per_second": self.bytes_per_second,
        }


class TokenBucket:
    """Bytes a slow printer may read now; refills at `rate` per second up to a tenth of it.

    The small capacity keeps reads to about ten a second: a slow printer trickles, it does
    not take a second's worth at once and then stall.
    """

    def __init__(self, rate: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.capacity = max(1, rate // 10)
        self._clock = clock
        self._tokens = float(self.capacity)
        self._at = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(float(self.capacity), self._tokens + (now - self._at) * self.rate)
        self._at = now

    def available(self) -> int:
        self._refill()
        return int(self._tokens)

    def take(self, n: int) -> None:
        self._refill()
        self._tokens -= n

    def seconds_to_full(self) -> float:
        self._refill()
        return max(0.0, (self.capacity - self._tokens) / self.rate)


@dataclass
class ArmedChange:
    state: PrinterState
    after_bytes: int | None = None
    after_cuts: int | None = None
    armed_at: float = 0.0

    @classmethod
    def parse(cls, state: PrinterState, body: Mapping[str, Any]) -> ArmedChange | None:
        """From a `POST /state` body: None when the change is immediate."""
        after_bytes = _count(body, "after_bytes", 1)
        after_cuts = _count(body, "after_cuts", 1)
        if after_bytes is None and after_cuts is None:
            return None
        if after_bytes is not None and after_cuts is not None:
            raise FieldError("after_cuts", "give after_bytes or after_cuts, not both")
        return cls(state, after_bytes, after_cuts, time.time())

    def split_point(self, token: Token) -> int | None:
        """Where a text run must be split so the change lands on the exact byte."""
        if self.after_bytes is not None and token.kind == "text" \
                and 0 < self.after_bytes < len(token.raw):
            return self.after_bytes
        return None

    def count(self, token: Token) -> bool:
        """Count one command of print data; True when the change is due."""
        if self.after_bytes is not None:
            self.after_bytes -= len(token.raw)
            return self.after_bytes <= 0
        if self.after_cuts is not None and token.kind == "cut":
            self.after_cuts -= 1
            return self.after_cuts <= 0
        return False

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "after_bytes": self.after_bytes,
            "after_cuts": self.after_cuts,
            "armed_at": self.armed_at,
        }
