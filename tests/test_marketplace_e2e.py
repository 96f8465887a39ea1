"""The seed 001 marketplace connector through the running daemon: the fake marketplace as its
own process (it repeats orders until acknowledged, lists them again at every status change,
goes down, answers HTML, 429s, refuses calls), the daemon as a process, a real broker and a
virtual printer. Tickets are checked by content; the marketplace's request log shows what
the kitchen told it, in which order."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from tests.broker import Broker, free_port
from tests.daemon import event
from tests.fake_marketplace import FakeMarketplaceProcess
from tests.printing_env import Kitchen, has_line, job_key_of, kitchen
from tests.test_operator_cli import edge, edge_json

STATIONS = [{"id": "grill", "printer": "hot", "categories": ["grill", "soup", "drinks"]}]
PHONE_DIGITS = "5327654321"          # the fake's customer phone, +90 532 765 43 21
ADDRESS = "Moda Cad"


@contextmanager
def market_kitchen(tmp_path: Path, broker: Broker, *, market: dict[str, Any] | None = None,
                   daemon_env: dict[str, str] | None = None, **config: Any
                   ) -> Iterator[tuple[Kitchen, FakeMarketplaceProcess]]:
    fake = FakeMarketplaceProcess(tmp_path / "market").start()
    os.chmod(fake.token_file, 0o600)      # a secret: config check refuses it readable by others
    try:
        settings = {"id": "yemek", "url": fake.url, "token_file": str(fake.token_file),
                    "poll_seconds": 0.3, "backoff_max": 1.5, "timeout": 2,
                    **(market or {})}
        with kitchen(tmp_path, broker, printers=("hot",), stations=STATIONS,
                     marketplaces=[settings], daemon_env=daemon_env, **config) as k:
            yield k, fake
    finally:
        fake.stop()


def wait(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what}: not within {timeout}s")


def market_order(fake: FakeMarketplaceProcess, key: str) -> dict[str, Any]:
    return next(o for o in fake.orders() if o["order"].get("payment_key") == key)


def status(fake: FakeMarketplaceProcess, key: str) -> int:
    return int(market_order(fake, key)["order"]["status_id"])


def acknowledged(fake: FakeMarketplaceProcess, key: str) -> int | None:
    value = market_order(fake, key)["acknowledged"]
    return None if value is None else int(value)


def settled(fake: FakeMarketplaceProcess, key: str, at: int) -> bool:
    """The marketplace has the order at `at`, and that status is acknowledged."""
    o = market_order(fake, key)
    return bool(o["order"]["status_id"] == at and o["acknowledged"] == at)


def puts(fake: FakeMarketplaceProcess, key: str) -> list[tuple[str, Any]]:
    """The calls about one order the marketplace answered 200, in arrival order."""
    out = []
    for r in fake.requests():
        parts = r["path"].strip("/").split("/")
        if r["method"] == "PUT" and r["status"] == 200 and parts[2:] == [key]:
            out.append((parts[1], r["body"]))
    return out


def kind(ticket: dict[str, Any]) -> str:
    return str(next(line for line in ticket["text"] if line.strip())).strip()


def tickets_of(k: Kitchen, order_id: str) -> list[str]:
    return [f"{kind(t)} {job_key_of(t)}" for t in k.tickets("hot")
            if (job_key_of(t) or "").startswith(order_id + "/")]


def order_row(k: Kitchen, order_id: str) -> tuple[str, str]:
    rows = k.daemon.query("SELECT status, kitchen_stage FROM orders WHERE order_id=?",
                          (order_id,))
    return (str(rows[0][0]), str(rows[0][1])) if rows else ("-", "-")


def kid(order: dict[str, Any]) -> str:
    return f"yemek-{order['id']}"


def market_state(k: Kitchen) -> str | None:
    rows = k.daemon.query("SELECT state FROM marketplace_state WHERE marketplace='yemek'")
    return str(rows[0][0]) if rows else None


def parked_calls(k: Kitchen) -> int:
    return int(k.daemon.scalar("SELECT COUNT(*) FROM calls WHERE state='parked'"))


def log_lines(k: Kitchen, name: str) -> list[dict[str, Any]]:
    return [line for line in k.daemon.lines if line.get("event") == name]


def test_auto_accepted_orders_print_once_acknowledged_before_accepted_courier_rules(
        tmp_path: Path, broker: Broker) -> None:
    with market_kitchen(tmp_path, broker, market={
            "auto_accept": True, "prep_minutes": 25, "currency": "TRY"}) as (k, fake):
        cash = fake.new_order(courier_type="restaurant", payment_method="CASH")
        card = fake.new_order(courier_type="platform", payment_method="CREDIT_CARD")
        k.wait_tickets("hot", 2)
        for o in (cash, card):
            wait(lambda o=o: settled(fake, o["payment_key"], 2), f"{kid(o)} accepted")
        time.sleep(1.0)              # a few more polls: nothing is listed, nothing changes
        assert tickets_of(k, kid(cash)) == [f"NEW {kid(cash)}/new/grill"]
        assert tickets_of(k, kid(card)) == [f"NEW {kid(card)}/new/grill"]
        for o in (cash, card):
            # Acknowledged before accepted, and the accept's echo acknowledged too.
            assert puts(fake, o["payment_key"]) == [
                ("success", None), ("accept", {"preparing_time": 25}), ("success", None)]
            ids = [r[0] for r in k.daemon.query(
                "SELECT event_id FROM events WHERE order_id=? ORDER BY rowid", (kid(o),))]
            key = o["payment_key"]
            assert ids == [f"mkt:yemek:{key}:1", f"mkt:yemek:{key}:1:auto-accept"]

        by_order = {job_key_of(t): t for t in k.tickets("hot")}
        cash_ticket = by_order[f"{kid(cash)}/new/grill"]
        card_ticket = by_order[f"{kid(card)}/new/grill"]
        # The kitchen hands a restaurant-courier cash order over knowing what to collect.
        assert has_line(cash_ticket, "CASH: collect 530.00 TRY")
        assert has_line(cash_ticket, "DELIVERY (restaurant courier)")
        assert has_line(card_ticket, "DELIVERY (platform courier)")
        assert not has_line(card_ticket, "CASH") and not has_line(card_ticket, "PAYMENT")
        for ticket in (cash_ticket, card_ticket):
            text = " ".join(ticket["text"])
            assert PHONE_DIGITS not in text.replace(" ", "") and ADDRESS not in text
        for o in (cash, card):
            # Nor in what the kitchen stored of it, nor in any record for the upstream (the
            # timelines among them).
            kept = json.dumps(k.daemon.query(
                "SELECT payload FROM events WHERE order_id=? UNION ALL "
                "SELECT body FROM outbox WHERE order_id=?", (kid(o), kid(o))),
                ensure_ascii=False)
            assert "order_accepted" in kept and "Ayşe K." in kept    # timelines; the name
            assert PHONE_DIGITS not in kept.replace(" ", "") and ADDRESS not in kept

        # The kitchen's own moves go back for the restaurant's courier only.
        for o in (cash, card):
            k.pos.order(event(kid(o), "order.out_for_delivery", {}, channel="marketplace"))
            k.pos.order(event(kid(o), "order.completed", {}, channel="marketplace"))
        wait(lambda: settled(fake, cash["payment_key"], 5), "cash order delivered")
        assert [a for a, _ in puts(fake, cash["payment_key"])
                if a in ("ontheway", "complete")] == ["ontheway", "complete"]
        # The platform's courier delivers; the marketplace says so itself.
        time.sleep(0.8)
        assert status(fake, card["payment_key"]) == 2
        assert [a for a, _ in puts(fake, card["payment_key"])] == ["success", "accept",
                                                                   "success"]
        assert not [r for r in fake.requests() if r["status"] == 403]
        assert order_row(k, kid(cash)) == ("completed", "completed")

        view = edge_json(k.daemon, "marketplaces")[0]
        assert (view["marketplace"], view["state"], view["waiting"]) == ("yemek", "ok", [])
        assert view["calls"]["parked"] == 0 and view["problems"] == []
        text = edge(k.daemon, "marketplaces").stdout
        assert "yemek  ok since" in text and "waiting for acceptance 0" in text


def test_orders_wait_for_the_restaurant_one_attention_ticket_and_reasons_go_back(
        tmp_path: Path, broker: Broker) -> None:
    http_port = free_port()
    with market_kitchen(tmp_path, broker, market={
            "cancel_reasons": {"out_of_stock": 1, "busy": 3}},
            acceptance={"attention_after": 1.5},
            http={"listen": f"127.0.0.1:{http_port}"}) as (k, fake):
        a, b, c = (fake.new_order() for _ in range(3))
        for o in (a, b, c):
            wait(lambda o=o: acknowledged(fake, o["payment_key"]) == 1, "acknowledged")
        # Nothing cooks before the restaurant says yes; each waiting order reminds once.
        attention = k.wait_tickets("hot", 3, timeout=10)
        assert sorted(job_key_of(t) or "" for t in attention) == sorted(
            f"{kid(o)}/attention/grill" for o in (a, b, c))
        assert all(kind(t) == "ATTENTION" for t in attention)
        assert has_line(attention[0], "Accept or reject order")
        view = edge_json(k.daemon, "marketplaces")[0]
        assert [(w["order_id"], w["reminded"]) for w in view["waiting"]] == [
            (kid(o), True) for o in (a, b, c)]
        assert view["oldest_wait_s"] >= 1
        metrics = httpx.get(f"http://127.0.0.1:{http_port}/metrics", timeout=5).text
        assert 'marketplace_orders_awaiting_acceptance{marketplace="yemek"} 3.0' in metrics
        assert 'marketplace_up{marketplace="yemek"} 1.0' in metrics
        board = httpx.get(f"http://127.0.0.1:{http_port}/status", timeout=5).json()
        assert len(board["marketplace:yemek"]["waiting"]) == 3

        edge(k.daemon, "orders", "accept", kid(a), "--prep", "35")
        edge(k.daemon, "orders", "reject", kid(b), "--reason", "out_of_stock")
        edge(k.daemon, "orders", "reject", kid(c), "--reason", "no_driver")
        wait(lambda: settled(fake, a["payment_key"], 2), "a accepted")
        wait(lambda: settled(fake, b["payment_key"], 6), "b cancelled")
        wait(lambda: settled(fake, c["payment_key"], 6), "c cancelled")
        assert puts(fake, a["payment_key"]) == [
            ("success", None), ("accept", {"preparing_time": 35}), ("success", None)]
        assert puts(fake, b["payment_key"]) == [
            ("success", None), ("cancel", {"reason_id": 1}), ("success", None)]
        # Not mapped: Other, and the operator is told why in the log.
        assert puts(fake, c["payment_key"]) == [
            ("success", None), ("cancel", {"reason_id": 8}), ("success", None)]
        unmapped = log_lines(k, "marketplace_cancel_reason_unmapped")
        assert [(x["order_id"], x["reason_code"]) for x in unmapped] == [(kid(c), "no_driver")]
        new = k.wait_tickets("hot", 4)[3]
        assert job_key_of(new) == f"{kid(a)}/new/grill"
        # Accepted, printed, then the kitchen cancels it: the marketplace hears the reason.
        k.pos.order(event(kid(a), "order.cancelled", {"reason_code": "busy"},
                          channel="marketplace"))
        wait(lambda: settled(fake, a["payment_key"], 6), "a cancelled")
        assert puts(fake, a["payment_key"])[3:] == [("cancel", {"reason_id": 3}),
                                                    ("success", None)]
        assert job_key_of(k.wait_tickets("hot", 5)[4]) == f"{kid(a)}/cancel/grill"
        time.sleep(1.0)
        assert len(k.tickets("hot")) == 5      # one ATTENTION each, NEW, CANCELLED, no more
        assert order_row(k, kid(b)) == ("void", "rejected")
        assert edge_json(k.daemon, "marketplaces")[0]["waiting"] == []
        metrics = httpx.get(f"http://127.0.0.1:{http_port}/metrics", timeout=5).text
        assert 'marketplace_orders_awaiting_acceptance{marketplace="yemek"} 0.0' in metrics


def test_the_marketplaces_own_moves_cancel_complete_and_accept_in_the_kitchen(
        tmp_path: Path, broker: Broker) -> None:
    zone = ZoneInfo("Europe/Istanbul")
    later = (datetime.now(zone) + timedelta(hours=3)).strftime("%Y-%m-%d %H:%M:%S")
    with market_kitchen(tmp_path, broker, timezone="Europe/Istanbul") as (k, fake):
        printed = fake.new_order()
        waiting = fake.new_order()
        scheduled = fake.new_order(scheduled_date=later)
        platform = fake.new_order(courier_type="platform", payment_method="CREDIT_CARD")
        tablet = fake.new_order()
        for o in (printed, waiting, scheduled, platform, tablet):
            wait(lambda o=o: acknowledged(fake, o["payment_key"]) == 1, "acknowledged")
        for o in (printed, scheduled, platform):
            edge(k.daemon, "orders", "accept", kid(o))
        for o in (printed, scheduled, platform):
            wait(lambda o=o: settled(fake, o["payment_key"], 2), "accepted")
        k.wait_tickets("hot", 2)
        assert sorted(tickets_of(k, kid(printed)) + tickets_of(k, kid(platform))) == sorted(
            [f"NEW {kid(printed)}/new/grill", f"NEW {kid(platform)}/new/grill"])

        # Cancelled on the marketplace: CANCELLED where printed, withdrawn where not.
        fake.set_status(printed["payment_key"], 6, reason_id=4)
        fake.set_status(waiting["payment_key"], 6, reason_id=4)
        # Delivered before its (scheduled) ticket reached the kitchen: nothing cooks.
        fake.set_status(scheduled["payment_key"], 5)
        # The platform's courier delivered.
        fake.set_status(platform["payment_key"], 5)
        # Accepted on the marketplace's own tablet: the kitchen cooks, says nothing back.
        fake.set_status(tablet["payment_key"], 2)
        for o, at in ((printed, 6), (waiting, 6), (scheduled, 5), (platform, 5), (tablet, 2)):
            wait(lambda o=o, at=at: settled(fake, o["payment_key"], at), f"{kid(o)} at {at}")
        cancelled = k.wait_tickets("hot", 4)
        assert sorted(f"{kind(t)} {job_key_of(t)}" for t in cancelled[2:]) == sorted(
            [f"CANCELLED {kid(printed)}/cancel/grill", f"NEW {kid(tablet)}/new/grill"])
        wait(lambda: order_row(k, kid(platform)) == ("completed", "completed"), "completed")
        assert order_row(k, kid(printed)) == ("cancelled", "cancelled")
        assert order_row(k, kid(waiting)) == ("void", "cancelled")
        assert order_row(k, kid(scheduled)) == ("void", "cancelled")
        assert order_row(k, kid(tablet))[1] == "accepted"
        time.sleep(1.0)
        assert len(k.tickets("hot")) == 4
        assert tickets_of(k, kid(waiting)) == [] and tickets_of(k, kid(scheduled)) == []
        # The marketplace made these moves: none is called back.
        for o in (printed, waiting, scheduled, platform, tablet):
            assert [a for a, _ in puts(fake, o["payment_key"])
                    if a not in ("success", "accept")] == []
        assert "accept" not in [a for a, _ in puts(fake, tablet["payment_key"])]
        assert edge_json(k.daemon, "marketplaces")[0]["waiting"] == []


def test_a_marketplace_that_fails_loses_nothing_and_doubles_nothing(
        tmp_path: Path, broker: Broker) -> None:
    with market_kitchen(tmp_path, broker, market={"auto_accept": True}) as (k, fake):
        first = fake.new_order()
        k.wait_tickets("hot", 1)
        wait(lambda: settled(fake, first["payment_key"], 2), "first accepted")

        # Down, then a maintenance page, then 429s, then a black hole: orders keep coming.
        faults: list[tuple[str, dict[str, Any], str]] = [
            ("down", {}, "down"), ("html", {}, "bad_answer"),
            ("429", {"retry_after": 1}, "rate_limited"), ("blackhole", {}, "timeout")]
        waiting_orders = []
        for mode, options, state in faults:
            fake.set_fault(mode, **options)
            waiting_orders.append(fake.new_order())
            wait(lambda state=state: market_state(k) == state, f"state {state}", timeout=20)
        view = edge_json(k.daemon, "marketplaces")[0]
        assert view["last_error"] and view["failures"] >= 1
        assert len(k.tickets("hot")) == 1
        gets_while_failing = len([r for r in fake.requests()
                                  if r["path"] == "/orders/get-current"])
        fake.set_fault("none")
        k.wait_tickets("hot", 5, timeout=20)
        for o in waiting_orders:
            wait(lambda o=o: settled(fake, o["payment_key"], 2), f"{kid(o)} accepted")
        time.sleep(1.0)
        assert sorted(job_key_of(t) or "" for t in k.tickets("hot")) == sorted(
            f"{kid(o)}/new/grill" for o in [first, *waiting_orders])
        for o in [first, *waiting_orders]:
            assert puts(fake, o["payment_key"]) == [
                ("success", None), ("accept", {"preparing_time": 20}), ("success", None)]
        # It backed off: far fewer polls than 0.3 s apart would have made.
        assert gets_while_failing < 60, gets_while_failing
        assert market_state(k) == "ok"

        # A call the marketplace refuses (4xx) is parked and shown; printing goes on.
        fake.set_fault("reject", path_prefix="/orders/accept", status=422)
        refused = fake.new_order()
        k.wait_tickets("hot", 6)
        wait(lambda: parked_calls(k) == 1, "parked")
        parked = edge_json(k.daemon, "marketplaces")[0]["parked"]
        assert parked[0]["order_id"] == kid(refused) and parked[0]["status_code"] == 422
        assert parked[0]["call"] == f"PUT /orders/accept/{refused['payment_key']}"
        assert "parked #" in edge(k.daemon, "marketplaces").stdout
        fake.set_fault("none")
        assert "1 parked call(s) queued again" in edge(
            k.daemon, "marketplaces", "retry-parked").stdout
        wait(lambda: settled(fake, refused["payment_key"], 2), "accepted after the retry",
             timeout=20)

        # The customer cancels while the acknowledgement of the new order cannot get
        # through: the cancel reaches the kitchen, the accept is never sent. (Which of the
        # poll or the acknowledgement's answer tells the kitchen depends on timing here;
        # tests/test_marketplace_moves.py makes each case exact.)
        fake.set_fault("reject", path_prefix="/orders/success", status=503)
        trap = fake.new_order()
        k.wait_tickets("hot", 7)
        wait(lambda: any(r["path"] == f"/orders/success/{trap['payment_key']}"
                         and r["status"] == 503 for r in fake.requests()), "success refused")
        fake.set_status(trap["payment_key"], 6, reason_id=4)
        time.sleep(0.5)
        fake.set_fault("none")
        wait(lambda: settled(fake, trap["payment_key"], 6), "the cancel acknowledged")
        cancelled = k.wait_tickets("hot", 8)[7]
        assert f"{kind(cancelled)} {job_key_of(cancelled)}" == \
            f"CANCELLED {kid(trap)}/cancel/grill"
        assert order_row(k, kid(trap)) == ("cancelled", "cancelled")
        # The accept queued behind the acknowledgement was moot by then: never sent.
        assert [a for a, _ in puts(fake, trap["payment_key"])] == ["success"]


def test_each_status_is_imported_once_across_sigkill_between_import_and_acknowledgement(
        tmp_path: Path, broker: Broker) -> None:
    with market_kitchen(tmp_path, broker, daemon_env={
            "KITCHEN_EDGE_CRASHPOINT": "marketplace_after_import"}) as (k, fake):
        order = fake.new_order()
        key = order["payment_key"]
        assert k.daemon.proc is not None
        k.daemon.proc.wait(timeout=20)          # killed itself right after the import
        k.daemon.proc = None
        assert acknowledged(fake, key) is None
        assert k.daemon.scalar("SELECT COUNT(*) FROM events WHERE order_id=?",
                               (kid(order),)) == 1
        # Imported and its acknowledgement queued in one transaction.
        assert k.daemon.query(
            "SELECT method, path, state FROM calls WHERE order_id=?", (kid(order),)) == [
            ("PUT", f"/orders/success/{key}", "pending")]

        k.daemon.env = {}
        k.daemon.start()
        wait(lambda: acknowledged(fake, key) == 1, "acknowledged after the restart")
        edge(k.daemon, "orders", "accept", kid(order), "--prep", "15")
        k.wait_tickets("hot", 1)
        wait(lambda: settled(fake, key, 2), "accepted")
        assert k.daemon.stop() == 0
        k.daemon.start()
        fake.set_status(key, 6, reason_id=4)
        k.wait_tickets("hot", 2)
        wait(lambda: settled(fake, key, 6), "cancel acknowledged")
        time.sleep(1.0)
        ids = [r[0] for r in k.daemon.query(
            "SELECT event_id FROM events WHERE order_id=? ORDER BY rowid", (kid(order),))]
        assert ids == [f"mkt:yemek:{key}:1", ids[1], f"mkt:yemek:{key}:6"]
        assert ids[1].startswith("cmd:")                     # the operator's accept
        assert [f"{kind(t)} {job_key_of(t)}" for t in k.tickets("hot")] == [
            f"NEW {kid(order)}/new/grill", f"CANCELLED {kid(order)}/cancel/grill"]
        assert puts(fake, key) == [("success", None), ("accept", {"preparing_time": 15}),
                                   ("success", None), ("success", None)]
        assert k.daemon.scalar("SELECT COUNT(*) FROM dead_letters") == 0


def test_a_scheduled_order_prints_lead_minutes_before_its_time_across_a_restart(
        tmp_path: Path, broker: Broker) -> None:
    zone = ZoneInfo("Europe/Istanbul")
    with market_kitchen(tmp_path, broker, timezone="Europe/Istanbul",
                        market={"auto_accept": True, "lead_minutes": 1}) as (k, fake):
        # Due 68 s from now, local time in Istanbul: it must print 60 s before, at +8 s
        # (each station's own lead, 20 minutes by default, would print it at once).
        due = datetime.now(zone).replace(microsecond=0) + timedelta(seconds=68)
        order = fake.new_order(scheduled_date=due.strftime("%Y-%m-%d %H:%M:%S"))
        wait(lambda: settled(fake, order["payment_key"], 2), "accepted at once")
        assert k.daemon.query("SELECT state, wait_reason FROM print_jobs WHERE order_id=?",
                              (kid(order),)) == [("waiting", "scheduled")]
        assert k.daemon.stop() == 0
        k.daemon.start()
        start_at = due - timedelta(seconds=60)
        assert datetime.now(zone) < start_at - timedelta(seconds=1), "the machine is too slow"
        assert k.tickets("hot") == []
        ticket = k.wait_tickets("hot", 1, timeout=30)[0]
        printed = datetime.now(zone)
        assert start_at - timedelta(seconds=0.5) <= printed <= start_at + timedelta(seconds=6)
        assert job_key_of(ticket) == f"{kid(order)}/new/grill"
        local_due = due.astimezone()              # the ticket shows the box's local time
        assert has_line(ticket, f"DUE {local_due:%H:%M}")
        time.sleep(1.0)
        assert len(k.tickets("hot")) == 1


def test_orders_that_break_the_schema_are_kept_shown_and_block_nothing(
        tmp_path: Path, broker: Broker) -> None:
    with market_kitchen(tmp_path, broker, market={"auto_accept": True}) as (k, fake):
        before = fake.new_order()
        fake.control("POST", "/orders/raw", {
            "id": 2001, "payment_key": "bad-quantity", "status_id": 1,
            "courier_type": "restaurant", "customer": {"phone": "+90 532 765 43 21"},
            "products": [{"name": "Lahmacun", "quantity": "2"}]})
        fake.control("POST", "/orders/raw", {
            "id": 2002, "status_id": 1, "courier_type": "restaurant",
            "products": [{"name": "Pide", "quantity": 1}]})
        after = fake.new_order()
        k.wait_tickets("hot", 2)
        for o in (before, after):
            wait(lambda o=o: settled(fake, o["payment_key"], 2), f"{kid(o)} accepted")
        # Kept (then acknowledged) when it has a key to acknowledge; kept once when not.
        wait(lambda: acknowledged(fake, "bad-quantity") == 1, "the bad order acknowledged")
        time.sleep(1.0)                # the unkeyed one keeps repeating
        rows = k.daemon.query("SELECT payment_key, order_id, problem, raw FROM "
                              "marketplace_orders WHERE problem IS NOT NULL ORDER BY rowid")
        assert [(r[0][:8], r[1]) for r in rows] == [("bad-quan", "yemek-2001"),
                                                     ("unkeyed:", "yemek-2002")]
        assert "products[0].quantity" in rows[0][2] and "payment_key" in rows[1][2]
        assert PHONE_DIGITS not in rows[0][3].replace(" ", "")
        assert len(log_lines(k, "marketplace_order_kept_unimported")) == 2
        problems = edge_json(k.daemon, "marketplaces")[0]["problems"]
        assert {p["market_order_id"] for p in problems} == {2001, 2002}
        text = edge(k.daemon, "marketplaces").stdout
        assert "orders not imported 2" in text and "products[0].quantity" in text
        assert k.daemon.scalar("SELECT COUNT(*) FROM orders WHERE order_id IN "
                               "('yemek-2001', 'yemek-2002')") == 0
        assert sorted(job_key_of(t) or "" for t in k.tickets("hot")) == sorted(
            f"{kid(o)}/new/grill" for o in (before, after))


def test_a_paused_store_refuses_new_orders_and_a_busy_one_asks_for_more_time(
        tmp_path: Path, broker: Broker) -> None:
    with market_kitchen(tmp_path, broker, market={"auto_accept": True, "prep_minutes": 25,
                                                  "cancel_reasons": {"busy": 3}}) as (k, fake):
        edge(k.daemon, "store", "pause")
        refused = fake.new_order()
        wait(lambda: settled(fake, refused["payment_key"], 6), "refused")
        assert puts(fake, refused["payment_key"]) == [
            ("success", None), ("cancel", {"reason_id": 3}), ("success", None)]
        assert order_row(k, kid(refused)) == ("void", "rejected")
        edge(k.daemon, "store", "busy", "15")
        slow = fake.new_order()
        wait(lambda: settled(fake, slow["payment_key"], 2), "accepted")
        assert puts(fake, slow["payment_key"])[1] == ("accept", {"preparing_time": 40})
        assert [job_key_of(t) for t in k.wait_tickets("hot", 1)] == [f"{kid(slow)}/new/grill"]
        time.sleep(0.5)
        assert len(k.tickets("hot")) == 1
