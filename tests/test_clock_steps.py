"""A box with a wrong clock (issue 12): the wall clock steps forward two years and back a
day in the middle of scheduled orders, LATE and ATTENTION decisions and a failover.

The unit tests drive `edge.clock.KitchenClock` over a ManualClock whose wall and monotonic
clocks step separately, and read the kernel's real sync state once. The daemon tests run the
daemon in this process on such a clock (tests/in_process.py, as tests/test_scheduled.py does),
with a real broker, database and virtual printers.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from edge import clock as clock_module
from edge import daemon as daemon_module
from edge.clock import HINT_FLOOR, ManualClock, parse_rfc3339, rfc3339, rfc3339_ms
from edge.store import Store, calls
from edge.timesync import STA_UNSYNC, TIME_ERROR, SyncWatch, is_synced, kernel_synced, read_kernel
from edge.web.kitchen import StoreCards
from tests.broker import Broker, free_port
from tests.daemon import ROOT, Listener, created
from tests.in_process import in_process_kitchen, stamp
from tests.printing_env import has_line, job_key_of

START = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
YEARS_2 = 730 * 86400.0
DAY = 86400.0


# -- the kernel's sync state ----------------------------------------------------------------


def test_the_kernel_is_asked_with_a_real_adjtimex_call() -> None:
    read = read_kernel()
    assert read is not None, "adjtimex is a Linux system call: it must answer here"
    state, status = read
    assert 0 <= state <= TIME_ERROR
    assert isinstance(kernel_synced(), bool)
    assert kernel_synced() == is_synced(state, status)


@pytest.mark.parametrize(("state", "status", "synced"), [
    (0, 0x0000, True),              # TIME_OK, nothing set
    (0, 0x2001, True),              # TIME_OK, STA_PLL | STA_NANO: chrony disciplining
    (1, 0x0001, True),              # TIME_INS: a leap second ahead, still synchronised
    (5, 0x0040, False),             # TIME_ERROR with STA_UNSYNC: a fresh boot, no NTP yet
    (0, 0x0041, False),             # STA_UNSYNC alone says it
    (5, 0x0000, False),             # TIME_ERROR alone says it
])
def test_the_status_word_is_read_right(state: int, status: int, synced: bool) -> None:
    assert STA_UNSYNC == 0x40
    assert is_synced(state, status) is synced


def test_the_sync_state_is_cached_between_checks() -> None:
    asked: list[int] = []

    def read() -> bool:
        asked.append(1)
        return False

    watch = SyncWatch(every=60.0, read=read)
    assert [watch.synced() for _ in range(100)] == [False] * 100
    assert len(asked) == 1
    assert SyncWatch(read=lambda: None).synced() is True    # cannot tell: not marked


# -- the kitchen's time ---------------------------------------------------------------------


def test_an_unsynchronised_step_is_not_followed() -> None:
    clock = ManualClock(START, synced=False)
    clock.advance(60)
    clock.step_wall(YEARS_2)
    assert clock.now() == START + timedelta(seconds=60)
    clock.advance(30)
    assert clock.now() == START + timedelta(seconds=90)
    clock.step_wall(-YEARS_2 - DAY)                     # and back a day before the truth
    clock.advance(10)
    assert clock.now() == START + timedelta(seconds=100)
    assert clock.steps == []
    assert clock.synced() is False
    assert clock_module.clock_synced() is False


def test_small_slews_are_followed() -> None:
    clock = ManualClock(START, synced=False)
    clock.step_wall(1.5)
    assert clock.now() == START + timedelta(seconds=1.5)


def test_a_synchronised_step_is_taken_and_stamps_before_it_carried_over() -> None:
    clock = ManualClock(START)
    before = clock.now()
    clock.advance(60)
    clock.step_wall(YEARS_2)
    now = clock.now()
    assert now == START + timedelta(seconds=60 + YEARS_2)
    assert [round(s.by) for s in clock.steps] == [YEARS_2]
    assert (now - clock.restamp(before)).total_seconds() == 60
    after = clock.now()
    assert clock.restamp(after) == after                # written after: left alone


def test_the_clock_syncing_later_is_one_step() -> None:
    clock = ManualClock(START - timedelta(seconds=YEARS_2), synced=False)
    stamp = clock.now()
    clock.advance(5)
    clock.step_wall(YEARS_2)                            # NTP steps...
    assert clock.now() == stamp + timedelta(seconds=5)  # ...the kernel says unsynced a moment
    clock.set_synced(True)                              # ...then synchronised
    assert clock.now() == START + timedelta(seconds=5)
    assert len(clock.steps) == 1
    assert clock.restamp(stamp) == START
    assert clock_module.clock_synced() is True


def test_a_step_back_when_synchronised_never_makes_a_stamp_older() -> None:
    clock = ManualClock(START)
    long_before = clock.now()
    clock.advance(25 * 3600)
    just_before = clock.now()
    clock.advance(3600)
    clock.step_wall(-DAY)
    now = clock.now()
    assert now == START + timedelta(seconds=26 * 3600 - DAY)
    # 26 hours before a day's step back: unambiguous, carried over.
    assert (now - clock.restamp(long_before)).total_seconds() == 26 * 3600
    # Within the day before it: it cannot be told from a stamp written after; not shifted.
    assert clock.restamp(just_before) == just_before


def test_a_window_reaching_over_a_forward_step_reaches_into_the_old_frame() -> None:
    clock = ManualClock(START)
    card = clock.now()                                  # stamped 09:00, old frame
    clock.advance(3600)
    clock.step_wall(YEARS_2)
    clock.advance(3600)
    since = clock.unstamp(clock.now() - timedelta(hours=24))
    assert since <= card                                # two hours old: still shown
    fresh = clock.now()
    assert since <= fresh
    clock.advance(25 * 3600)                            # the step is a day behind us
    since = clock.unstamp(clock.now() - timedelta(hours=24))
    assert card < since and fresh < since               # both 26 hours old and more
    assert since == clock.now() - timedelta(hours=24)


def test_a_publisher_s_occurred_at_moves_an_unsynchronised_box_forward() -> None:
    behind = START - timedelta(seconds=YEARS_2)
    clock = ManualClock(behind, synced=False)
    clock.hint(behind + timedelta(seconds=100))         # within what delivery explains
    assert clock.now() == behind
    clock.hint(START)
    assert clock.now() == START
    clock.advance(30)
    assert clock.now() == START + timedelta(seconds=30)
    clock.hint(START - timedelta(hours=1))              # an old event: says nothing
    assert clock.now() == START + timedelta(seconds=30)
    clock.step_wall(YEARS_2)                            # NTP lands on the truth: no step
    clock.set_synced(True)
    assert clock.now() == START + timedelta(seconds=30)
    assert len(clock.steps) == 1


def test_occurred_at_is_not_believed_when_synchronised_or_implausible() -> None:
    clock = ManualClock(START)
    clock.hint(START + timedelta(days=3))
    assert clock.now() == START
    early = datetime(2020, 1, 1, tzinfo=UTC)
    unsynced = ManualClock(early, synced=False)
    unsynced.hint(HINT_FLOOR - timedelta(days=1))
    assert unsynced.now() == early


async def test_sleepers_wake_on_the_monotonic_clock_only() -> None:
    clock = ManualClock(START, synced=False)
    sleeper = asyncio.create_task(clock.sleep(10))
    await asyncio.sleep(0)
    clock.step_wall(YEARS_2)
    await asyncio.sleep(0.01)
    assert not sleeper.done()
    clock.advance(10)
    await asyncio.wait_for(sleeper, 1)


# -- the daemon on a stepping clock ---------------------------------------------------------


def line(order_id: str, name: str, category: str = "grill") -> list[dict[str, Any]]:
    return [{"line_id": "l1", "name": name, "qty": 1, "category": category}]


async def test_scheduled_orders_fire_on_time_through_steps_of_an_unsynchronised_clock(
        tmp_path: Path, broker: Broker) -> None:
    clock = ManualClock(START, synced=False)
    async with in_process_kitchen(tmp_path, broker, clock) as k:
        # a: grill at 09:40 (due 10:00, lead 20); b: grill at 10:40; c: cold at 10:55.
        for order_id, due, category in (("a", 1, "grill"), ("b", 2, "grill"),
                                        ("c", 2, "cold")):
            await k.send(created(order_id, line(order_id, f"Dish {order_id}", category),
                                 scheduled_for=stamp(START + timedelta(hours=due))),
                         occurred_at=START)
        for key in ("a/new/grill", "b/new/grill", "c/new/cold"):
            await k.until_state(key, "waiting")

        clock.advance(600)                                   # 09:10
        clock.step_wall(YEARS_2)                             # the wall says 2028
        await k.ticks()
        assert [await k.state(j) for j in ("a/new/grill", "b/new/grill", "c/new/cold")] \
            == ["waiting"] * 3, "a step forward released scheduled tickets at once"
        assert await k.printed() == []

        clock.advance(30 * 60 - 3)                           # 09:40 by the monotonic clock
        await k.printers["hot"].await_jobs(1)
        await k.until_state("a/new/grill", "printed")
        assert await k.state("b/new/grill") == "waiting"

        clock.step_wall(-YEARS_2 - DAY)                      # now a day behind the truth
        await k.ticks()
        assert [await k.state(j) for j in ("b/new/grill", "c/new/cold")] == ["waiting"] * 2
        assert await k.printed() == ["a/new/grill"]
        clock.advance(60 * 60 - 3)                           # 10:40
        await k.until_state("b/new/grill", "printed")
        assert await k.state("c/new/cold") == "waiting", "held or fired with b: both wrong"
        clock.advance(15 * 60)                               # 10:55
        await k.until_state("c/new/cold", "printed")
        assert await k.printed() == ["a/new/grill", "b/new/grill", "c/new/cold"]

        # What the box stamped stayed in order, in the kitchen's time, not 2028 or a day off.
        rows = await k.rows("SELECT printed_at, not_before FROM print_jobs ORDER BY printed_at")
        for printed_at, not_before in rows:
            late = parse_rfc3339(printed_at) - parse_rfc3339(not_before)
            assert timedelta(0) <= late < timedelta(seconds=10), (printed_at, not_before)
        tickets = await k.printers["hot"].ajobs()
        assert all(has_line(t, "box clock not synced") for t in tickets)
        assert all(has_line(t, "~") for t in tickets)
        # A record superseded before it went keeps no body (edge.store.outbox); the rest say it.
        bodies = [b for (raw,) in await k.rows("SELECT body FROM outbox") if (b := json.loads(raw))]
        assert len(bodies) >= 3 and all(b.get("clock_synced") is False for b in bodies)


async def test_late_and_attention_follow_the_monotonic_clock_not_the_wall(
        tmp_path: Path, broker: Broker) -> None:
    clock = ManualClock(START, synced=False)
    async with in_process_kitchen(tmp_path, broker, clock, printing={"retry_max": 1}) as k:
        hot = k.printers["hot"]
        # Waiting on paper for 5 minutes of real kitchen time while the wall jumps 2 years.
        await hot.aset_state("paper_out")
        await k.send(created("w1", line("w1", "Lahmacun")))
        await k.until_state("w1/new/grill", "queued")
        clock.advance(300)
        clock.step_wall(YEARS_2)
        await k.send(created("acc", line("acc", "Pide"), requires_acceptance=True))
        await k.ticks()
        await hot.aset_state("online")
        await k.until_state("w1/new/grill", "printed")
        first = (await hot.ajobs())[0]
        assert not has_line(first, "LATE"), "two years of wall clock made a ticket LATE"
        assert await k.rows("SELECT job_key FROM print_jobs WHERE kind='ATTENTION'") == []

        # The other way: a day back, and eleven real minutes on paper: LATE it is.
        await hot.aset_state("paper_out")
        await k.send(created("w2", line("w2", "Ayran")))
        await k.until_state("w2/new/grill", "queued")
        clock.step_wall(-YEARS_2 - DAY)
        clock.advance(660)
        await hot.aset_state("online")
        await k.until_state("w2/new/grill", "printed")
        # The unanswered order waited 2 real minutes by then: its ATTENTION ticket came.
        await k.until_state("acc/attention/grill", "printed")
        jobs = await hot.ajobs()
        second = next(j for j in jobs if job_key_of(j) == "w2/new/grill")
        assert has_line(second, "LATE"), "a step back held a LATE mark"


async def test_a_synchronised_step_does_not_age_what_was_stamped_before_it(
        tmp_path: Path, broker: Broker) -> None:
    clock = ManualClock(START)
    screens = {"listen": f"127.0.0.1:{free_port()}"}
    async with in_process_kitchen(tmp_path, broker, clock, printing={"retry_max": 1},
                                  http=screens) as k:
        hot = k.printers["hot"]
        await hot.aset_state("paper_out")
        await k.send(created("w3", line("w3", "Kebap")))
        await k.until_state("w3/new/grill", "queued")
        clock.advance(60)
        clock.step_wall(YEARS_2)                     # the clock is believed: it jumps
        await k.ticks()
        assert round(sum(s.by for s in clock.steps)) == YEARS_2
        # The kitchen screen still shows its card, a minute old, not two years.
        [card] = await StoreCards(k.daemon.store, clock).snapshot(None)
        age = clock.now() - parse_rfc3339(card.started_at)
        assert timedelta(seconds=60) <= age < timedelta(seconds=70), age
        await hot.aset_state("online")
        await k.until_state("w3/new/grill", "printed")
        ticket = (await hot.ajobs())[0]
        assert not has_line(ticket, "LATE")
        assert not has_line(ticket, "box clock not synced")
        bodies = [json.loads(b) for (b,) in await k.rows("SELECT body FROM outbox")]
        assert bodies and not any("clock_synced" in b for b in bodies)


async def test_a_box_booted_years_behind_takes_the_publisher_s_time_then_syncs(
        tmp_path: Path, broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(daemon_module, "CLOCK_POLL", 0.1)
    clock = ManualClock(START - timedelta(seconds=YEARS_2), synced=False)
    state = await asyncio.to_thread(Listener, broker.port, f"{ROOT}/edge/state")
    try:
        async with in_process_kitchen(tmp_path, broker, clock) as k:
            await asyncio.to_thread(state.wait_for, lambda _t, b: b.get("state") == "online"
                                    and b.get("clock_synced") is False)
            assert k.daemon.status_line().startswith("clock not synced; printers ")
            due = stamp(START + timedelta(hours=1))
            await k.send(created("s1", line("s1", "Beyti"), scheduled_for=due),
                         occurred_at=START)
            due = stamp(START + timedelta(hours=2))
            await k.send(created("s2", line("s2", "Künefe"), scheduled_for=due),
                         occurred_at=START)
            await k.until_state("s2/new/grill", "waiting")
            assert abs((clock.now() - START).total_seconds()) < 5
            clock.advance(40 * 60)                               # 09:40: s1's start time
            await k.until_state("s1/new/grill", "printed")
            assert await k.state("s2/new/grill") == "waiting"

            clock.step_wall(YEARS_2)                             # the WAN came back: NTP
            clock.set_synced(True)
            await k.ticks()
            online = await asyncio.to_thread(state.wait_for, lambda _t, b: b.get("clock_synced"))
            assert k.daemon.status_line().startswith("printers ")    # sd_notify STATUS
            # Its start, stamped two years back, was carried over the step.
            assert parse_rfc3339(online["since"]).year == START.year
            assert await k.printed() == ["s1/new/grill"], "the sync fired s2 early"
            clock.advance(60 * 60)                               # 10:40
            await k.until_state("s2/new/grill", "printed")
            first, second = await k.printers["hot"].ajobs()
            assert has_line(first, "box clock not synced")
            assert not has_line(second, "box clock not synced")
            # The stamps the box wrote are in the publisher's year, not two years back.
            (created_at,), = await k.rows(
                "SELECT created_at FROM print_jobs WHERE job_key='s2/new/grill'")
            assert parse_rfc3339(created_at).year == START.year
    finally:
        state.close()


async def test_failover_waits_its_time_on_the_monotonic_clock(
        tmp_path: Path, broker: Broker) -> None:
    clock = ManualClock(START, synced=False)
    stations = [{"id": "grill", "printer": "hot", "backup": "bar", "categories": ["grill"]}]
    async with in_process_kitchen(tmp_path, broker, clock, stations=stations, down=("hot",),
                       printing={"failover_after": 15, "retry_max": 1}) as k:
        await k.send(created("f1", line("f1", "Döner")))
        await k.until_state("f1/new/grill", "queued")
        await asyncio.sleep(0.5)                       # the primary found offline
        clock.step_wall(YEARS_2)
        await asyncio.sleep(2.5)                       # the backup looked (IDLE_POLL 2 s)
        clock.step_wall(-YEARS_2 - DAY)
        await asyncio.sleep(2.5)
        assert await k.printed("bar") == [], "a wall step handed the station over early"
        clock.advance(15)
        await k.until_state("f1/new/grill", "printed")
        ticket = (await k.printers["bar"].ajobs())[0]
        assert has_line(ticket, "BACKUP FROM hot")


def test_rfc3339_of_the_kitchen_time_is_what_is_stored() -> None:
    clock = ManualClock(START, synced=False)
    clock.step_wall(YEARS_2)
    assert rfc3339(clock.now()) == "2026-11-21T09:00:00Z"


async def test_a_partner_call_stamped_before_a_step_back_is_not_put_off(tmp_path: Path) -> None:
    store = Store(tmp_path / "k.db")
    await store.open()
    try:
        now = START
        retry_at = rfc3339_ms(now + timedelta(seconds=DAY + 30))   # 30 s, before a day back
        soon = rfc3339_ms(now + timedelta(seconds=30))
        await store.transact(lambda tx: [calls.add(
            tx.conn, destination="market", order_id=o, method="POST", path="/x", body=None,
            at=at) for o, at in (("a", retry_at), ("b", soon))])
        stamp_now = rfc3339_ms(now)
        latest = rfc3339_ms(now + timedelta(seconds=600))
        due = await store.read(lambda c: calls.due(c, "market", stamp_now, latest=latest))
        assert [c.order_id for c in due] == ["a"]          # b waits its 30 s
        assert await store.read(lambda c: calls.due(c, "market", stamp_now)) == []
    finally:
        await store.close()
