"""The one seam through which the daemon reads the time.

Scheduled tickets, backoff and LATE marks all ask a `Clock`; tests swap in a `ManualClock`
instead of sleeping. Wall time is UTC and timezone-aware everywhere.

A box without an RTC boots with a wall clock that can be years wrong and steps when NTP
first answers (which needs the WAN); someone may also set the date by hand. So `now()` is
not the raw wall clock but the kitchen's time (docs/clock.md):

- it follows the wall clock while the two agree within `STEP_TOLERANCE` (NTP slews);
- a step of the wall clock while the kernel says the clock is NOT synchronised is not
  followed: the kitchen's time goes on from the monotonic clock, so a scheduled ticket is
  neither fired at once nor held for a year, and the stamps it writes stay in order;
- once the kernel says the clock IS synchronised, the wall clock is the truth: a difference
  is taken in one step, and remembered (`steps`) so ages of stamps written before it can be
  translated (`restamp`);
- while unsynchronised, a publisher's `occurred_at` later than the kitchen's time (beyond
  `HINT_TOLERANCE`) moves it forward (`hint`): an event cannot have happened in the future,
  so the box is behind. Only forward: an old event proves nothing about now.

Durations measured inside the process use `monotonic()` and never see any of this.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import structlog

from edge.timesync import SyncWatch

log = structlog.get_logger(__name__)

# NTP slews at most 0.5 ms per second: a bigger disagreement between the wall clock and the
# kitchen's time, since the last reading, is a step.
STEP_TOLERANCE = 2.0
# A publisher's clock may run a little ahead and its event may take a moment to arrive.
HINT_TOLERANCE = 120.0
# An `occurred_at` before this cannot be the present (the software is younger).
HINT_FLOOR = datetime(2025, 1, 1, tzinfo=UTC)


# `Clock.restamp`, as the code that only needs it takes it.
Restamp = Callable[[datetime], datetime]


class Clock(Protocol):
    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...

    def synced(self) -> bool: ...

    def hint(self, occurred_at: datetime) -> None: ...

    def restamp(self, stamp: datetime) -> datetime: ...

    def unstamp(self, moment: datetime) -> datetime: ...


class TimeSource(Protocol):
    """The raw clocks: the wall clock as the kernel has it (POSIX seconds), the monotonic
    clock, and whether the kernel says the wall clock is synchronised."""

    def wall(self) -> float: ...

    def monotonic(self) -> float: ...

    def synced(self) -> bool: ...


@dataclass(frozen=True)
class Step:
    """The kitchen's time jumped by `by` seconds when it was `before` (old frame)."""

    before: datetime
    by: float
    why: str


# The kernel's clock is one per machine: the last sync state a kitchen clock saw, for the
# places that mark times (tickets, records, the timeline) without a clock of their own.
_last_synced = True


def clock_synced() -> bool:
    """Whether the wall clock was synchronised when a kitchen clock last looked."""
    return _last_synced


class KitchenClock:
    def __init__(self, source: TimeSource) -> None:
        # Bound once: now() is on every write path, in floats until the one datetime.
        self._wall = source.wall
        self._mono = source.monotonic
        self._sync = source.synced
        self._anchor_wall = self._wall()
        self._anchor_mono = self._mono()
        self._synced = self._sync()
        self._ignored = 0.0                # the step ignored last, to log it once
        self.steps: list[Step] = []
        self._note_sync(self._synced, first=True)

    def monotonic(self) -> float:
        return self._mono()

    def synced(self) -> bool:
        synced = self._sync()
        if synced is not self._synced:
            self._note_sync(synced)
        return synced

    def now(self) -> datetime:
        wall, mono = self._wall(), self._mono()
        kept = self._anchor_wall + (mono - self._anchor_mono)
        drift = wall - kept
        synced = self.synced()
        if -STEP_TOLERANCE < drift < STEP_TOLERANCE:
            self._anchor_wall, self._anchor_mono = wall, mono
            self._ignored = 0.0
            return datetime.fromtimestamp(wall, UTC)
        if synced:
            self._jump(_moment(kept), drift, "the clock is synchronised")
            self._anchor_wall, self._anchor_mono = wall, mono
            return datetime.fromtimestamp(wall, UTC)
        if abs(drift - self._ignored) >= STEP_TOLERANCE:
            self._ignored = drift
            log.warning("clock_step_ignored", by_s=round(drift, 3),
                        kitchen_time=rfc3339(_moment(kept)),
                        why="the system clock is not synchronised",
                        hint="a time set by hand on a box without NTP is taken at the next "
                             "start of kitchen-edge")
        return _moment(kept)

    def hint(self, occurred_at: datetime) -> None:
        """A publisher says something happened at `occurred_at`: while the clock is not
        synchronised, the kitchen's time is at least that."""
        if occurred_at < HINT_FLOOR or self.synced():
            return
        kept = self.now()
        ahead = (occurred_at - kept).total_seconds()
        if ahead <= HINT_TOLERANCE:
            return
        self._jump(kept, ahead, "a publisher's occurred_at is ahead of the unsynchronised clock")
        self._anchor_wall, self._anchor_mono = occurred_at.timestamp(), self._mono()

    def restamp(self, stamp: datetime) -> datetime:
        """`stamp`, written by this kitchen before the steps it took since it started, in
        today's frame, so `now() - restamp(stamp)` is an age. A stamp from an earlier run
        predates them all. After a step back of B seconds a stamp within B before it
        cannot be told from one written after it; it is taken as written after (its age
        is then too short, never too long: a LATE mark comes late, a ticket never fires
        early)."""
        shift = 0.0
        for step in self.steps:
            moved = stamp + timedelta(seconds=shift)
            if moved <= step.before + timedelta(seconds=min(0.0, step.by)):
                shift += step.by
        return stamp + timedelta(seconds=shift)

    def unstamp(self, moment: datetime) -> datetime:
        """The other way, for a window ("stamped since `moment`"): `moment` in the frame
        of the stamps written then. Forward steps only: after a step back, a window reaches
        up to B seconds further back than asked (cards stay on a screen longer, never
        shorter)."""
        for step in reversed(self.steps):
            if step.by > 0 and moment < step.before + timedelta(seconds=step.by):
                moment -= timedelta(seconds=step.by)
        return moment

    def _jump(self, before: datetime, by: float, why: str) -> None:
        self.steps.append(Step(before, by, why))
        self._ignored = 0.0
        log.warning("clock_stepped", by_s=round(by, 3), kitchen_time_was=rfc3339(before),
                    why=why)

    def _note_sync(self, synced: bool, *, first: bool = False) -> None:
        global _last_synced
        self._synced = synced
        _last_synced = synced
        if not first or not synced:
            log.info("clock_sync_state", synced=synced)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


def _moment(posix: float) -> datetime:
    return datetime.fromtimestamp(posix, UTC)


class _SystemSource:
    def __init__(self) -> None:
        self.wall = time.time
        self.monotonic = time.monotonic
        self.synced = SyncWatch().synced


class SystemClock(KitchenClock):
    def __init__(self) -> None:
        super().__init__(_SystemSource())


class _ManualSource:
    def __init__(self, start: datetime, synced: bool) -> None:
        self.wall_now = start
        self.mono = 0.0
        self.is_synced = synced

    def wall(self) -> float:
        return self.wall_now.timestamp()

    def monotonic(self) -> float:
        return self.mono

    def synced(self) -> bool:
        return self.is_synced


class ManualClock(KitchenClock):
    """A clock that moves only when told to; sleepers wake when monotonic time passes their
    deadline. `advance` moves both clocks; `step_wall` only the wall clock, as NTP or
    `date -s` would; `set_synced` is the kernel's sync state."""

    def __init__(self, start: datetime, *, synced: bool = True) -> None:
        self._manual = _ManualSource(start, synced)
        self._changed = asyncio.Event()
        super().__init__(self._manual)

    def advance(self, seconds: float) -> None:
        self._manual.wall_now += timedelta(seconds=seconds)
        self._manual.mono += seconds
        self._wake()

    def step_wall(self, seconds: float) -> None:
        self._manual.wall_now += timedelta(seconds=seconds)
        self._wake()

    def set_synced(self, synced: bool) -> None:
        self._manual.is_synced = synced
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        deadline = self._manual.mono + seconds
        while self._manual.mono < deadline:
            await self._changed.wait()


def rfc3339(moment: datetime) -> str:
    """Second-precision UTC timestamp with a Z, the form the contract's examples use."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_ms(moment: datetime) -> str:
    # On every write path: isoformat is several times faster than strftime. Every row an
    # applied chunk writes is stamped with the chunk's one `now`: the last answer is kept
    # (one tuple, swapped whole, so the writer and the event loop threads may share it).
    global _last_ms
    last = _last_ms
    if last[0] is moment:
        return last[1]
    given = moment
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    text = moment.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"
    _last_ms = (given, text)
    return text


_last_ms: tuple[datetime | None, str] = (None, "")


def parse_rfc3339(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError("timestamp has no timezone")
    return moment.astimezone(UTC)
