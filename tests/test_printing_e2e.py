"""Event on the broker -> ticket bytes at a virtual printer, checked by content."""

from __future__ import annotations

import time
from pathlib import Path

from tests.broker import Broker
from tests.daemon import ROOT, Listener, created, event
from tests.printing_env import has_line, job_key_of, kitchen

ITEMS = [
    {"line_id": "l1", "name": "Adana kebap", "qty": 2, "category": "grill",
     "modifiers": ["extra pepper"], "note": "no onions", "allergens": ["gluten"]},
    {"line_id": "l2", "name": "Ayran", "qty": 3, "category": "drinks"},
    {"line_id": "l3", "name": "Lahmacun", "qty": 1, "category": "unknown-cat"},
]


def test_new_ticket_per_station_with_the_contract_layout(tmp_path: Path, broker: Broker) -> None:
    with kitchen(tmp_path, broker) as k:
        k.pos.order(created("qr-7001", ITEMS, channel="qr_menu", display_id="A-17"))
        hot = k.wait_tickets("hot", 1)[0]
        bar = k.wait_tickets("bar", 1)[0]
        text = [line for line in hot["text"] if line.strip()]
        assert text[0].strip() == "NEW"
        assert hot["lines"][0]["spans"][0]["width"] == 2          # the kind in large type
        joined = "\n".join(text)
        order = ["grill", "A-17", "TABLE 7", "2x Adana kebap", "extra pepper", "no onions",
                 "gluten", "1x Lahmacun", "job qr-7001/new/grill"]
        positions = [joined.index(piece) for piece in order]
        assert positions == sorted(positions), joined
        assert "Ayran" not in joined                              # drinks print at the bar
        assert job_key_of(hot) == "qr-7001/new/grill"
        assert has_line(bar, "3x Ayran") and job_key_of(bar) == "qr-7001/new/drinks"
        assert hot["cut"] is not None
        k.daemon.wait_until(lambda: k.daemon.scalar(
            "SELECT COUNT(*) FROM print_jobs WHERE state='printed'") == 2)
        assert k.daemon.scalar("SELECT status FROM orders") == "sent_to_kitchen"


def test_added_ticket_has_only_the_new_lines_and_reprint_is_marked(tmp_path: Path,
                                                                   broker: Broker) -> None:
    with kitchen(tmp_path, broker) as k:
        k.pos.order(created("t-5", ITEMS[:1]))
        k.wait_tickets("hot", 1)
        k.pos.order(event("t-5", "order.items_added", {"batch_id": "round-2", "items": [
            {"line_id": "l9", "name": "Kuzu şiş", "qty": 1, "category": "grill"}]}))
        added = k.wait_tickets("hot", 2)[1]
        assert next(x for x in added["text"] if x.strip()).strip() == "ADDED"
        assert has_line(added, "1x Kuzu şiş") and not has_line(added, "Adana")
        assert job_key_of(added) == "t-5/add-round-2/grill"
        k.pos.send(f"{ROOT}/commands/reprint", {"command_id": "cmd-1",
                                                "job_key": "t-5/new/grill"})
        k.pos.send(f"{ROOT}/commands/reprint", {"command_id": "cmd-1",
                                                "job_key": "t-5/new/grill"})  # same command
        reprint = k.wait_tickets("hot", 3)[2]
        lines = [x.strip() for x in reprint["text"] if x.strip()]
        assert lines[0] == "NEW" and lines[1] == "REPRINT"
        assert has_line(reprint, "2x Adana kebap")
        time.sleep(1.0)
        assert len(k.tickets("hot")) == 3                       # the repeated command: once


def test_redelivery_and_republish_under_new_event_id_print_once(tmp_path: Path,
                                                                 broker: Broker) -> None:
    with kitchen(tmp_path, broker) as k:
        k.pos.order(created("r-1", ITEMS[:1]))
        k.pos.order(created("r-1", ITEMS[:1]))
        k.pos.order(created("r-1", ITEMS[:1], event_id="platform-repeat-7"))
        k.pos.order(event("r-1", "order.items_added", {"batch_id": "b", "items": [
            {"line_id": "x", "name": "Pilav", "qty": 1, "category": "grill"}]}))
        k.pos.order(event("r-1", "order.items_added", {"batch_id": "b", "items": [
            {"line_id": "x", "name": "Pilav", "qty": 1, "category": "grill"}]},
            event_id="added-again"))
        k.wait_tickets("hot", 2)
        time.sleep(1.5)
        keys = [job_key_of(j) for j in k.tickets("hot")]
        assert keys == ["r-1/new/grill", "r-1/add-b/grill"]


def test_turkish_and_azerbaijani_names_print_right_never_as_question_marks(
        tmp_path: Path, broker: Broker) -> None:
    items = [
        {"line_id": "t", "name": "Çiğ köfte ığdır şişi", "qty": 1, "category": "grill"},
        {"line_id": "a", "name": "Şəkərbura və qutab", "qty": 2, "category": "grill"},
    ]
    with kitchen(tmp_path, broker, printers=("hot",),
                 stations=[{"id": "grill", "printer": "hot", "categories": ["grill"]}]) as k:
        k.pos.order(created("az-1", items))
        job = k.wait_tickets("hot", 1)[0]
        assert has_line(job, "1x Çiğ köfte ığdır şişi")           # decoded through a code page
        rasters = [line for line in job["lines"] if line["type"] == "raster"]
        assert rasters, "the line with ə must be a raster image"
        raw = k.printers["hot"].job_raw(job["seq"])
        text_part = raw.split(b"\x1dv0")[0]                        # before any image data
        assert b"?" not in text_part
        png = k.printers["hot"].job_png(job["seq"])
        assert png.startswith(b"\x89PNG")


def test_printer_state_is_published_retained(tmp_path: Path, broker: Broker) -> None:
    with kitchen(tmp_path, broker, printers=("hot",),
                 stations=[{"id": "grill", "printer": "hot", "categories": ["grill"]}]) as k:
        states = Listener(broker.port, f"{ROOT}/printers/+/state")
        try:
            body = states.wait_for(lambda t, b: t.endswith("/hot/state"))
            assert body["state"] == "online" and body["printer_id"] == "hot"
            # The contract's fields, plus the addition: jobs delivered, not confirmed.
            assert set(body) == {"printer_id", "state", "since", "queued", "unconfirmed"}
            assert body["unconfirmed"] == []
            k.printers["hot"].set_state("cover_open")
            states.wait_for(lambda t, b: b.get("state") == "cover_open", timeout=5)
        finally:
            states.close()
