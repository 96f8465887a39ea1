"""The screens through the whole daemon, in a real browser: a real broker, the daemon process,
virtual printers, headless Chromium. Orders come from a POS-like publisher on MQTT; the page
never reloads."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By

from tests.broker import Broker, free_port
from tests.browser import browser, post_from_page, wait_for
from tests.daemon import created, event
from tests.printing_env import Kitchen, kitchen
from tests.screens_env import TOKEN, write_token

__all__ = ["browser"]

XSS = "<img src=x onerror=alert(1)>"
STATIONS = [{"id": "grill", "printer": "hot", "categories": ["grill"]},
            {"id": "drinks", "printer": "bar", "categories": ["drinks"]}]


@pytest.fixture
def screens(tmp_path: Path, broker: Broker) -> Iterator[tuple[Kitchen, str]]:
    port = free_port()
    token = write_token(tmp_path / "operator.token")
    # Fractions of a minute: amber after 1.2 s, red after 2.4 s.
    with kitchen(tmp_path, broker, printers=("hot", "bar"), stations=STATIONS,
                 http={"listen": f"127.0.0.1:{port}", "operator_token_file": str(token)},
                 kds={"warn_minutes": 0.02, "late_minutes": 0.04}) as k:
        yield k, f"http://127.0.0.1:{port}"


def card_of(driver: Any, order_id: str) -> Any:
    found = [c for c in driver.find_elements(By.CSS_SELECTOR, "#cards .card")
             if c.get_attribute("data-order-id") == order_id]
    return found[0] if found else None


def open_display(driver: Any, url: str) -> None:
    driver.get(url)
    wait_for(lambda: driver.find_element(By.TAG_NAME, "body").get_attribute("data-live")
             == "true", 5, "the display is live")


def steps(base: str, order_id: str) -> list[str]:
    timeline = httpx.get(f"{base}/orders/{order_id}/timeline", timeout=5).json()
    return [s["key"] for s in timeline["steps"]]


def test_orders_to_cards_bump_recall_ready(screens: tuple[Kitchen, str], browser: Any) -> None:
    k, base = screens
    driver = browser
    driver.delete_all_cookies()
    open_display(driver, f"{base}/kds/grill")

    # Published on the broker, on the display within a second, with no reload.
    started = time.monotonic()
    k.pos.order(created("kd-1", [
        {"line_id": "l1", "name": XSS, "qty": 2, "category": "grill",
         "modifiers": ["no onion"], "allergens": ["sesame"]},
        {"line_id": "l2", "name": "Ayran", "qty": 1, "category": "drinks"}],
        display_id="A12"))
    card = wait_for(lambda: card_of(driver, "kd-1"), 1.0, "the card, within 1 s")
    elapsed = time.monotonic() - started
    assert card.find_element(By.CSS_SELECTOR, ".item .name").text == XSS
    assert card.find_elements(By.TAG_NAME, "img") == []
    with pytest.raises(NoAlertPresentException):
        _ = driver.switch_to.alert.text
    assert "A12" in card.text and "Table 7" in card.text and "ALLERGENS: sesame" in card.text
    assert "Ayran" not in card.text, "the drinks line is the drinks station's card"

    # The timer: amber, then red (kds.warn_minutes, kds.late_minutes).
    wait_for(lambda: card_of(driver, "kd-1").get_attribute("data-level") == "warn", 4,
             "amber")
    wait_for(lambda: card_of(driver, "kd-1").get_attribute("data-level") == "late", 4, "red")

    # No token, no bump: the page says what to do and the card stays.
    card_of(driver, "kd-1").find_element(By.CSS_SELECTOR, "button.bump").click()
    assert "operator token is needed" in wait_for(
        lambda: driver.find_element(By.ID, "message").text, 3, "the refusal")
    assert post_from_page(driver, "/kds/grill/recall")["status"] == 401
    assert card_of(driver, "kd-1") is not None

    # Logged in: bump at the grill. The order is not ready while the drinks card is open.
    driver.get(f"{base}/login?next=/kds/grill")
    driver.find_element(By.NAME, "token").send_keys(TOKEN)
    driver.find_element(By.CSS_SELECTOR, "form[action='/login'] button").click()
    wait_for(lambda: card_of(driver, "kd-1"), 5, "the card after logging in")
    timer_before = _seconds(card_of(driver, "kd-1"))
    card_of(driver, "kd-1").find_element(By.CSS_SELECTOR, "button.bump").click()
    wait_for(lambda: card_of(driver, "kd-1") is None or None, 2, "bumped away")
    time.sleep(0.3)
    assert "order_ready" not in steps(base, "kd-1")

    # Recall: back, marked, the timer still counting from the ticket's arrival.
    driver.find_element(By.ID, "recall").click()
    back = wait_for(lambda: card_of(driver, "kd-1"), 2, "recalled")
    assert "RECALLED" in back.text and _seconds(back) >= timer_before
    back.find_element(By.CSS_SELECTOR, "button.bump").click()
    wait_for(lambda: card_of(driver, "kd-1") is None or None, 2, "bumped again")

    # The drinks station bumps (a tool with the token): every station has, the order is
    # ready, as its public timeline says.
    drinks = httpx.get(f"{base}/kds/drinks", timeout=5)
    assert drinks.status_code == 200
    bumped = httpx.post(f"{base}/kds/drinks/bump", json={"card_id": "kd-1/new/drinks"},
                        headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    assert bumped.status_code == 200, bumped.text
    k.daemon.wait_until(lambda: "order_ready" in steps(base, "kd-1"), 5, "order ready")
    assert elapsed < 1.0


def _seconds(card: Any) -> int:
    minutes, seconds = card.find_element(By.CSS_SELECTOR, ".timer").text.split(":")
    return int(minutes) * 60 + int(seconds)


def test_printer_off_and_daemon_restart(screens: tuple[Kitchen, str], browser: Any) -> None:
    k, base = screens
    driver = browser
    k.printers["hot"].stop()          # the grill's printer is powered off
    open_display(driver, f"{base}/kds/all")
    started = time.monotonic()
    k.pos.order(created("off-1", [{"line_id": "l1", "name": "Lahmacun", "qty": 3,
                                   "category": "grill"}]))
    wait_for(lambda: card_of(driver, "off-1"), 1.0, "the card with the printer off")
    assert time.monotonic() - started < 1.0
    # A void shows on the card it changes, live.
    k.pos.order(event("off-1", "order.items_voided", {"line_ids": ["l1"]}))
    wait_for(lambda: card_of(driver, "off-1").find_elements(By.CSS_SELECTOR, ".void-tag"),
             2, "VOID on the card")

    # The daemon restarts; an order arrives while it is down (the broker keeps it).
    snapshots = int(driver.find_element(By.TAG_NAME, "body").get_attribute("data-snapshots"))
    assert k.daemon.stop() == 0
    wait_for(lambda: driver.find_element(By.TAG_NAME, "body").get_attribute("data-live")
             == "false", 5, "the display notices")
    k.pos.order(created("off-2", [{"line_id": "l1", "name": "Pide", "qty": 1,
                                   "category": "grill"}]))
    k.daemon.start()
    wait_for(lambda: card_of(driver, "off-2"), 10, "caught up after the restart")
    body = driver.find_element(By.TAG_NAME, "body")
    assert int(body.get_attribute("data-snapshots")) > snapshots
    assert [c.get_attribute("data-order-id")
            for c in driver.find_elements(By.CSS_SELECTOR, "#cards .card")] == \
        ["off-1", "off-2"], "no gap and no double"

    # The operator page: the printer's state, the jobs waiting for it, a ticket preview.
    driver.get(f"{base}/")
    printers = wait_for(lambda: driver.find_element(By.ID, "printers"), 3, "printers")
    assert "hot" in printers.text
    jobs = driver.find_element(By.ID, "jobs")
    assert "off-2/new/grill" in jobs.text
    png = httpx.get(f"{base}/operator/tickets/off-2/new/grill.png", timeout=10)
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
