"""Whether the kernel's wall clock is synchronised, read with adjtimex(2).

A box without an RTC battery boots with whatever time systemd could guess (its build date,
or the last time timesyncd saved) and steps when NTP first answers, which needs the WAN. The
kernel knows which case it is in: an NTP daemon clears STA_UNSYNC once it disciplines the
clock, and any step of the clock (settimeofday, `date -s`) sets it again. adjtimex with
`modes = 0` only reads, needs no privilege and costs one system call: no subprocess
(timedatectl) on a hot path. Even so the answer is cached and asked again every few seconds.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from collections.abc import Callable
from typing import Any

# <linux/timex.h>
STA_UNSYNC = 0x0040
TIME_ERROR = 5


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):
    # struct timex as glibc declares it; the eleven trailing ints are reserved padding.
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time", _Timeval),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_reserved", ctypes.c_int * 11),
    ]


def is_synced(state: int, status: int) -> bool:
    """The kernel's verdict from adjtimex's return value and its `status` word: TIME_ERROR
    or STA_UNSYNC means nobody vouches for the wall clock."""
    return state != TIME_ERROR and not status & STA_UNSYNC


_adjtimex: Callable[[Any], int] | None = None
_loaded = False


def _load() -> Callable[[Any], int] | None:
    global _adjtimex, _loaded
    if not _loaded:
        _loaded = True
        name = ctypes.util.find_library("c")
        try:
            libc = ctypes.CDLL(name, use_errno=True)
            _adjtimex = libc.adjtimex
        except (OSError, AttributeError):      # not Linux/glibc: nothing to ask
            _adjtimex = None
    return _adjtimex


def read_kernel() -> tuple[int, int] | None:
    """(adjtimex return value, status word), or None where adjtimex cannot be called."""
    call = _load()
    if call is None:
        return None
    timex = _Timex()                           # modes = 0: read only
    state = call(ctypes.byref(timex))
    if state < 0:
        return None
    return state, timex.status


def kernel_synced() -> bool | None:
    """True/False from the kernel; None when it cannot tell (not Linux)."""
    read = read_kernel()
    return None if read is None else is_synced(*read)


class SyncWatch:
    """The kernel's sync state, asked at most every `every` seconds (monotonic).

    Where the kernel cannot be asked the clock is taken as synchronised: marking every time
    on a machine that cannot say would teach people to ignore the mark."""

    def __init__(self, every: float = 5.0,
                 read: Callable[[], bool | None] = kernel_synced) -> None:
        self._every = every
        self._read = read
        self._checked: float | None = None
        self._synced = True

    def synced(self) -> bool:
        now = time.monotonic()
        if self._checked is None or now - self._checked >= self._every:
            self._checked = now
            answer = self._read()
            self._synced = True if answer is None else answer
        return self._synced


__all__ = ["STA_UNSYNC", "TIME_ERROR", "SyncWatch", "is_synced", "kernel_synced",
           "read_kernel"]
