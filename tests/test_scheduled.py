"""Scheduled orders (seed 001): each station's ticket fires at the due time minus the
station's lead time, shows the due time, survives a SIGKILL, and prints once.

The first test runs the daemon in this process on a ManualClock (tests/in_process.py), the one
seam through which the daemon reads the time, so "an hour later" is a method call, not a sleep.
The broker, the database and the printer are real. The SIGKILL test runs the daemon as a process
on the system clock.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from edge.clock import ManualClock, parse_rfc3339
from tests.broker import Broker
from tests.daemon import created
from tests.in_process import in_process_kitchen, stamp
from tests.printing_env import has_line, job_key_of, kitchen

START = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)


def due_line(due: datetime, made: datetime) -> str:
    """What the ticket says, in the local zone of the box (the daemon's process zone)."""
    local_due, local_made = due.astimezone(), made.astimezone()
    day = "" if local_due.date() == local_made.date() else local_due.strftime("%d.%m ")
    return f"DUE {day}{local_due:%H:%M}"


def kinds_and_keys(jobs: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    return [(next(x for x in j["text"] if x.strip()).strip(), job_key_of(j)) for j in jobs]


async def test_tickets_fire_at_due_minus_each_stations_lead_time_once(
        tmp_path: Path, broker: Broker) -> None:
    clock = ManualClock(START)
    # One printer; grill (lead 20 minutes, the default) and cold (lead 5) print on it.
    async with in_process_kitchen(tmp_path, broker, clock, printers=("hot",)) as k:
        printer = k.printers["hot"]
        due = START + timedelta(hours=1)
        await k.send(created("s-1", [
            {"line_id": "l1", "name": "Kuzu tandır", "qty": 4, "category": "grill"},
            {"line_id": "l2", "name": "Cacık", "qty": 4, "category": "cold"}],
            scheduled_for=stamp(due), display_id="S1"))
        # A probe due one second earlier: its grill ticket fires at 09:39:59.
        await k.send(created("probe", [
            {"line_id": "l1", "name": "Pide", "qty": 1, "category": "grill"}],
            scheduled_for=stamp(due - timedelta(seconds=1))))
        await k.until("s-1", {"s-1/new/grill": "waiting", "s-1/new/cold": "waiting"})
        assert await printer.ajobs() == []

        clock.advance(timedelta(minutes=39, seconds=59).total_seconds())
        first = await printer.await_jobs(1)
        # The scheduler released everything due at 09:39:59 in one go: s-1 was not.
        assert kinds_and_keys(first) == [("NEW", "probe/new/grill")]
        assert await k.states("s-1") == {"s-1/new/grill": "waiting", "s-1/new/cold": "waiting"}

        clock.advance(1)                                           # 09:40:00 = due - 20 min
        grill = (await printer.await_jobs(2))[1]
        assert job_key_of(grill) == "s-1/new/grill"
        assert has_line(grill, due_line(due, START)), grill["text"]
        assert has_line(grill, "4x Kuzu tandır") and not has_line(grill, "Cacık")
        assert (await k.states("s-1"))["s-1/new/cold"] == "waiting"

        clock.advance(timedelta(minutes=14, seconds=59).total_seconds())   # 09:54:59
        await k.send(created("walk-in", [
            {"line_id": "l1", "name": "Su", "qty": 1, "category": "cold"}]))
        assert job_key_of((await printer.await_jobs(3))[2]) == "walk-in/new/cold"
        assert (await k.states("s-1"))["s-1/new/cold"] == "waiting"
        clock.advance(1)                                           # 09:55:00 = due - 5 min
        cold = (await printer.await_jobs(4))[3]
        assert job_key_of(cold) == "s-1/new/cold"
        assert has_line(cold, due_line(due, START)) and has_line(cold, "4x Cacık")

        # Much later: nothing fires again.
        clock.advance(3 * 3600)
        await k.send(created("late", [
            {"line_id": "l1", "name": "Çay", "qty": 1, "category": "cold"}]))
        jobs = await printer.await_jobs(5)
        assert [job_key_of(j) for j in jobs] == [
            "probe/new/grill", "s-1/new/grill", "walk-in/new/cold", "s-1/new/cold",
            "late/new/cold"]
        await k.until("s-1", {"s-1/new/grill": "printed", "s-1/new/cold": "printed"})
        rows = await k.rows("SELECT printed_at, not_before FROM print_jobs WHERE order_id='s-1' "
                            "ORDER BY job_key")
        for printed_at, not_before in rows:
            assert parse_rfc3339(printed_at) >= parse_rfc3339(not_before)


def test_scheduled_ticket_survives_sigkill_and_fires_once(tmp_path: Path,
                                                          broker: Broker) -> None:
    stations = [{"id": "grill", "printer": "hot", "categories": ["grill"], "lead_minutes": 1}]
    with kitchen(tmp_path, broker, printers=("hot",), stations=stations) as k:
        made = datetime.now(UTC)
        due = made.replace(microsecond=0) + timedelta(seconds=64)   # fires ~3 s from now
        k.pos.order(created("sk-1", [
            {"line_id": "l1", "name": "Beyti", "qty": 2, "category": "grill"}],
            scheduled_for=stamp(due)))
        k.daemon.wait_until(lambda: k.daemon.query(
            "SELECT state, wait_reason FROM print_jobs WHERE job_key='sk-1/new/grill'")
            == [("waiting", "scheduled")], what="scheduled job committed")
        k.daemon.kill()
        fire_at = due - timedelta(minutes=1)
        assert datetime.now(UTC) < fire_at, "the kill must land before the firing time"
        assert k.tickets("hot") == []

        k.daemon.start()
        ticket = k.wait_tickets("hot", 1, timeout=20)[0]
        assert job_key_of(ticket) == "sk-1/new/grill"
        assert has_line(ticket, "2x Beyti") and has_line(ticket, due_line(due, made))
        assert not has_line(ticket, "MAY BE DUPLICATE")
        k.daemon.wait_until(lambda: k.daemon.scalar(
            "SELECT state FROM print_jobs WHERE job_key='sk-1/new/grill'") == "printed")
        printed_at = parse_rfc3339(k.daemon.scalar(
            "SELECT printed_at FROM print_jobs WHERE job_key='sk-1/new/grill'"))
        assert printed_at >= fire_at

        # Another crash and restart: the printed ticket is not fired again.
        k.daemon.kill()
        k.daemon.start()
        k.pos.order(created("sk-2", [{"line_id": "l1", "name": "Su", "qty": 1,
                                      "category": "grill"}]))
        jobs = k.wait_tickets("hot", 2)
        assert [job_key_of(j) for j in jobs] == ["sk-1/new/grill", "sk-2/new/grill"]
        rows = k.daemon.query("SELECT state, attempts FROM print_jobs "
                              "WHERE job_key='sk-1/new/grill'")
        assert rows == [("printed", 1)]
        # This run had nothing of sk-1 to release, recover or print.
        assert not [x for x in k.daemon.lines if "sk-1" in json.dumps(x)]
