"""The operator's commands, run as the real `python -m edge ...` processes while the daemon
runs on the same database (a real kitchen: broker, daemon, virtual printers).

Tables are for people (checked for their header and the values a person looks for), `--json`
is for scripts (checked field by field against the database the daemon writes).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.broker import Broker
from tests.daemon import ROOT, DaemonProc, created, write_config
from tests.fake_upstream import FakeUpstreamProcess
from tests.printing_env import has_line, job_key_of, kitchen
from tests.vprinter import VPrinterProc

ITEMS = [
    {"line_id": "l1", "name": "Adana kebap", "qty": 2, "category": "grill"},
    {"line_id": "l2", "name": "Ayran", "qty": 1, "category": "drinks"},
]


def edge(d: DaemonProc, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    """`python -m edge ARGS --config FILE` as its own process; asserts the exit code."""
    proc = subprocess.run([sys.executable, "-m", "edge", *args, "--config", str(d.config)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == code, (args, proc.returncode, proc.stdout, proc.stderr)
    return proc


def edge_json(d: DaemonProc, *args: str, code: int = 0) -> Any:
    return json.loads(edge(d, *args, "--json", code=code).stdout)


def edge_many(d: DaemonProc, *commands: tuple[str, ...]) -> list[Any]:
    """Several read-only commands at once (each its own process); their stdout, in order.
    A command ending in --json is parsed. Each must exit 0."""
    procs = [subprocess.Popen([sys.executable, "-m", "edge", *args, "--config", str(d.config)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for args in commands]
    outs: list[Any] = []
    for args, proc in zip(commands, procs, strict=True):
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, (args, proc.returncode, out, err)
        outs.append(json.loads(out) if args[-1] == "--json" else out)
    return outs


def fields(text: str) -> dict[str, str]:
    """`key   value` lines of a one-record table output."""
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key.isidentifier() and value.strip():
            out[key] = value.strip()
    return out


def header(table: str) -> list[str]:
    return table.splitlines()[0].split()


def row(table: str, first: str) -> list[str]:
    return next(line.split() for line in table.splitlines() if line.startswith(first))


def test_operator_commands_over_the_live_database(tmp_path: Path, broker: Broker) -> None:
    with kitchen(tmp_path, broker) as k:
        d = k.daemon
        k.pos.order(created("c-1", ITEMS, display_id="A-7"))
        k.pos.send(f"{ROOT}/orders/bad-1/events", b"{not json")
        k.wait_tickets("hot", 1)
        k.wait_tickets("bar", 1)
        d.wait_until(lambda: d.scalar(
            "SELECT COUNT(*) FROM print_jobs WHERE state='printed'") == 2, what="printed")

        # jobs list / show: a table with a header, and JSON equal to what the daemon wrote.
        table, jobs, job = edge_many(d, ("jobs", "list"), ("jobs", "list", "--order", "c-1",
                                                           "--json"),
                                     ("jobs", "show", "c-1/new/grill", "--json"))
        assert header(table) == ["JOB_KEY", "KIND", "STATE", "STATION_ID", "PRINTER_ID",
                                 "ATTEMPTS", "CREATED_AT"]
        assert row(table, "c-1/new/grill")[1:5] == ["NEW", "printed", "grill", "hot"]
        assert {j["job_key"]: (j["state"], j["printer_id"]) for j in jobs} == {
            "c-1/new/grill": ("printed", "hot"), "c-1/new/drinks": ("printed", "bar")}
        assert (job["order_id"], job["state"], job["line_ids"]) == ("c-1", "printed", ["l1"])
        assert job["printed_at"] == d.scalar(
            "SELECT printed_at FROM print_jobs WHERE job_key='c-1/new/grill'")

        # jobs reprint: written beside the running daemon, which prints it within seconds.
        asked = time.monotonic()
        result = edge_json(d, "jobs", "reprint", "c-1/new/grill", "--command-id", "op-1")
        assert result["result"] == "command" and result["reprint_job_key"]
        reprint = k.wait_tickets("hot", 2, timeout=10)[1]
        took = time.monotonic() - asked
        assert took < 15, f"the daemon took {took:.1f}s to print the reprint"
        lines = [x.strip() for x in reprint["text"] if x.strip()]
        assert lines[:2] == ["NEW", "REPRINT"] and has_line(reprint, "2x Adana kebap")
        assert job_key_of(reprint) == result["reprint_job_key"]
        again = edge(d, "jobs", "reprint", "c-1/new/grill", "--command-id", "op-1").stdout
        assert "already applied" in again

        # printers list / test: state from the daemon; a test ticket straight to the printer.
        k.printers["bar"].set_state("paper_out")
        d.wait_until(lambda: d.scalar(
            "SELECT state FROM printer_states WHERE printer_id='bar'") == "paper_out",
            timeout=8, what="bar paper_out")
        listed, table = edge_many(d, ("printers", "list", "--json"), ("printers", "list"))
        printers = {p["printer_id"]: p for p in listed}
        assert printers["hot"]["state"] == "online" and printers["bar"]["state"] == "paper_out"
        assert printers["hot"]["connection"] == k.printers["hot"].address
        assert header(table) == ["PRINTER_ID", "CONNECTION", "STATE", "SINCE", "UNCONFIRMED"]
        assert printers["hot"]["unconfirmed"] == []
        assert row(table, "bar")[2] == "paper_out"
        tested = fields(edge(d, "printers", "test", "hot").stdout)
        assert (tested["printed"], tested["state"]) == ("True", "online")
        test_ticket = k.wait_tickets("hot", 3)[2]
        assert has_line(test_ticket, "TEST PRINT"), test_ticket["text"]
        refused = fields(edge(d, "printers", "test", "bar", code=1).stdout)
        assert (refused["printed"], refused["state"]) == ("False", "paper_out")

        order, shown, status, status_text, dead, dead_table = edge_many(
            d, ("orders", "show", "c-1", "--json"), ("orders", "show", "c-1"),
            ("outbox", "status", "--json"), ("outbox", "status"),
            ("dead-letter", "list", "--json"), ("dead-letter", "list"))

        # orders show: the order, its activity log and its jobs.
        assert (order["display_id"], order["status"]) == ("A-7", "sent_to_kitchen")
        whats = [a["what"] for a in order["activities"]]
        assert whats[0] == "Order created" and "Reprint requested" in whats
        assert {j["job_key"] for j in order["jobs"]} == {
            "c-1/new/grill", "c-1/new/drinks", result["reprint_job_key"]}
        for part in ("order c-1 (pos) display A-7", "ACTIVITIES", "Order created", "JOBS",
                     "c-1/new/drinks", "LINES", "Adana kebap"):
            assert part in shown, shown

        # outbox status without an upstream: records wait, nothing is lost.
        pending = d.scalar("SELECT COUNT(*) FROM outbox WHERE state='pending'")
        assert pending >= 3
        assert status["backlog"] == pending and status["last_success"] is None
        assert status["oldest_unsent_age_s"] > 0 and status["parked_records"] == []
        assert f"backlog: {pending} pending" in status_text

        # dead-letter list: the broken message, with its topic and reason.
        assert len(dead) == 1
        assert dead[0]["topic"] == f"{ROOT}/orders/bad-1/events"
        assert dead[0]["reason"].startswith("payload is not valid JSON")
        assert dead[0]["payload"] == "{not json" and dead[0]["seen"] == 1
        assert header(dead_table) == ["ID", "RECEIVED_AT", "TOPIC", "REASON", "SEEN"]
        assert f"{ROOT}/orders/bad-1/events" in dead_table

        # None of it disturbed the daemon.
        assert d.proc is not None and d.proc.poll() is None
        k.pos.order(created("c-2", ITEMS[:1]))
        assert job_key_of(k.wait_tickets("hot", 4)[3]) == "c-2/new/grill"


def test_outbox_status_and_retry_parked_with_an_upstream(tmp_path: Path, broker: Broker) -> None:
    fake = FakeUpstreamProcess(tmp_path / "upstream").start()
    try:
        with kitchen(tmp_path, broker, printers=("hot",),
                     stations=[{"id": "grill", "printer": "hot", "categories": ["grill"]}],
                     upstream={"url": fake.url, "token_file": str(fake.token_file),
                               "backoff_max": 1}) as k:
            d = k.daemon
            k.pos.order(created("u-1", ITEMS[:1]))
            k.wait_tickets("hot", 1)
            d.wait_until(lambda: d.scalar(
                "SELECT COUNT(*) FROM outbox WHERE state='pending'") == 0, what="outbox sent")
            status, text = edge_many(d, ("outbox", "status", "--json"), ("outbox", "status"))
            assert status["backlog"] == 0 and status["oldest_unsent_age_s"] is None
            assert status["accepted"] >= 3 and status["last_success"] is not None
            assert "backlog: 0 pending" in text and "last success: never" not in text

            # The upstream refuses one record: it is parked, the order's later ones wait.
            fake.set_fault("reject", reject_ids=["confirmation:u-2"])
            k.pos.order(created("u-2", ITEMS[:1]))
            k.wait_tickets("hot", 2)
            d.wait_until(lambda: d.scalar(
                "SELECT COUNT(*) FROM outbox WHERE state='parked'") == 1, what="parked")
            status, text = edge_many(d, ("outbox", "status", "--json"), ("outbox", "status"))
            assert status["parked"] == 1 and status["backlog"] >= 1
            assert [r["record_id"] for r in status["parked_records"]] == ["confirmation:u-2"]
            assert "parked: 1" in text and "confirmation:u-2" in text

            # Fixed upstream side; the operator sends the parked record again.
            fake.set_fault("none")
            out = edge(d, "outbox", "retry-parked").stdout
            assert out.strip() == "1 parked record(s) queued again"
            k.pos.order(created("u-3", ITEMS[:1]))        # new records wake the sender
            d.wait_until(lambda: d.scalar(
                "SELECT COUNT(*) FROM outbox WHERE state IN ('pending','parked')") == 0,
                timeout=15, what="everything accepted")
            status = edge_json(d, "outbox", "status")
            assert (status["backlog"], status["parked"]) == (0, 0)
            got = fake.state(ids=True)
            assert "confirmation:u-2" in json.dumps(got)
    finally:
        fake.stop()


def test_printers_test_json_is_clean_json_on_stdout(tmp_path: Path) -> None:
    with VPrinterProc(tmp_path / "printer") as printer:
        cfg = write_config(tmp_path / "station.yaml", broker_port=1,
                           printers=[{"id": "hot", "connection": printer.address}])
        proc = subprocess.run(
            [sys.executable, "-m", "edge", "printers", "test", "hot", "--config", str(cfg),
             "--json"], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert printer.wait_jobs(1)[0]["text"]
        result = json.loads(proc.stdout)
        assert result["printed"] is True
