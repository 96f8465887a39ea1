"""The kitchen display's page in a real browser (headless Chromium), against the screens'
server on its own: what the page's script does with the live protocol. The same page
through the whole daemon is in test_screens_browser.py."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By

from tests.browser import browser, post_from_page, wait_for
from tests.screens_env import TOKEN, ScreensServer, event, item, order, write_token

__all__ = ["browser"]

XSS = "<img src=x onerror=alert(1)>"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ScreensServer]:
    # Fractions of a minute: the timer turns amber after 1.5 s and red after 3 s.
    with ScreensServer(tmp_path, token_file=write_token(tmp_path / "operator.token"),
                       warn_minutes=0.025, late_minutes=0.05, tick=0.5) as s:
        yield s


def cards(driver: Any) -> list[Any]:
    return list(driver.find_elements(By.CSS_SELECTOR, "#cards .card"))


def card_of(driver: Any, order_id: str) -> Any:
    found = [c for c in cards(driver) if c.get_attribute("data-order-id") == order_id]
    return found[0] if found else None


def login(driver: Any, base: str, next_path: str) -> None:
    driver.get(f"{base}/login?next={next_path}")
    driver.find_element(By.NAME, "token").send_keys(TOKEN)
    driver.find_element(By.CSS_SELECTOR, "form[action='/login'] button").click()
    wait_for(lambda: driver.current_url.endswith(next_path), 5, "back on the display")
    # The URL changes when the navigation commits, before the new page is there (the first
    # screen page of a daemon also imports its templates first).
    wait_for(lambda: driver.execute_script("return document.readyState") == "complete"
             and not driver.find_elements(By.NAME, "token"), 5, "the page loaded")


def test_live_cards_escaping_timer_bump_and_recall(server: ScreensServer,
                                                   browser: Any) -> None:
    driver = browser
    driver.get(f"{server.base}/kds/grill")
    wait_for(lambda: driver.find_element(By.TAG_NAME, "body").get_attribute("data-live")
             == "true", 5, "the stream is live")
    assert cards(driver) == []

    # A card appears without a reload, well within a second.
    started = time.monotonic()
    server.apply(order("b-1", [item("l1", XSS, 2, modifiers=["<b>bold</b>"],
                                    allergens=["nuts"])], note="<script>alert(2)</script>"))
    card = wait_for(lambda: card_of(driver, "b-1"), 1.0, "the new card")
    appeared = time.monotonic() - started
    # Order text is text: the name shows literally and no element was made of it.
    assert XSS in card.find_element(By.CSS_SELECTOR, ".item .name").text
    assert card.find_elements(By.TAG_NAME, "img") == []
    assert card.find_elements(By.TAG_NAME, "b") == []
    assert "<script>alert(2)</script>" in card.find_element(By.CSS_SELECTOR, ".order-note").text
    with pytest.raises(NoAlertPresentException):
        _ = driver.switch_to.alert.text
    assert "ALLERGENS: nuts" in card.text
    assert driver.find_element(By.CSS_SELECTOR, "#allday").text.strip() == f"2 {XSS}"

    # The timer colours after kds.warn_minutes, then kds.late_minutes.
    assert card.get_attribute("data-level") == "fresh"
    wait_for(lambda: card_of(driver, "b-1").get_attribute("data-level") == "warn", 4,
             "amber after warn_minutes")
    wait_for(lambda: card_of(driver, "b-1").get_attribute("data-level") == "late", 4,
             "red after late_minutes")
    colour = card_of(driver, "b-1").value_of_css_property("border-top-color")
    assert colour in ("rgba(211, 47, 47, 1)", "rgb(211, 47, 47)"), colour

    # Without the operator token the bump is refused, and the page says so.
    card_of(driver, "b-1").find_element(By.CSS_SELECTOR, "button.bump").click()
    message = wait_for(lambda: driver.find_element(By.ID, "message").text, 3, "a refusal")
    assert "operator token is needed" in message
    assert card_of(driver, "b-1") is not None
    refused = post_from_page(driver, "/kds/grill/bump", {"card_id": "b-1:new:grill"})
    assert refused["status"] == 401

    # Logged in: bump, then recall; the timer keeps counting from when the ticket came.
    login(driver, server.base, "/kds/grill")
    wait_for(lambda: card_of(driver, "b-1"), 3, "the card after the login")
    before = _seconds(card_of(driver, "b-1"))
    card_of(driver, "b-1").find_element(By.CSS_SELECTOR, "button.bump").click()
    wait_for(lambda: card_of(driver, "b-1") is None or None, 2, "the card bumped away")
    assert server.ready_orders == ["b-1"]
    driver.find_element(By.ID, "recall").click()
    back = wait_for(lambda: card_of(driver, "b-1"), 2, "the card recalled")
    assert "RECALLED" in back.text
    assert _seconds(back) >= before, "a recall restarted the timer"
    assert back.get_attribute("data-level") == "late"

    # HOLD and a void show on the card they change, live.
    server.apply(event("b-1", "order.held", {}))
    wait_for(lambda: "HOLD" in card_of(driver, "b-1").text, 1.0, "HOLD on the card")
    assert appeared < 1.0


def said(driver: Any, text: str) -> None:
    wait_for(lambda: text in driver.find_element(By.ID, "message").text, 3,
             f"the page says {text!r}")


def _seconds(card: Any) -> int:
    minutes, seconds = card.find_element(By.CSS_SELECTOR, ".timer").text.split(":")
    return int(minutes) * 60 + int(seconds)


def test_the_page_reconnects_and_catches_up(tmp_path: Path, browser: Any) -> None:
    token = write_token(tmp_path / "operator.token")
    server = ScreensServer(tmp_path, token_file=token, tick=0.5).start()
    port = server.port
    try:
        server.apply(order("x-1", [item("l1", "Pide")]))
        browser.get(f"{server.base}/kds/all")
        wait_for(lambda: card_of(browser, "x-1"), 3, "the first card")
    finally:
        server.stop()
    wait_for(lambda: browser.find_element(By.TAG_NAME, "body").get_attribute("data-live")
             == "false", 5, "the page notices the server is gone")
    # Back on the same port with the same database; an order arrived meanwhile.
    server = ScreensServer(tmp_path, token_file=token, tick=0.5, port=port).start()
    try:
        server.apply(order("x-2", [item("l1", "Lahmacun")]))
        wait_for(lambda: card_of(browser, "x-2"), 8, "the card that came while away")
        assert [c.get_attribute("data-order-id") for c in cards(browser)] == ["x-1", "x-2"]
        body = browser.find_element(By.TAG_NAME, "body")
        assert int(body.get_attribute("data-snapshots")) >= 2
    finally:
        server.stop()


def test_operator_page_shows_escapes_and_acts(server: ScreensServer, browser: Any) -> None:
    driver = browser
    driver.delete_all_cookies()
    [key] = server.apply(order("op-1", [item("l1", "Adana kebap")]))
    hostile = f"kitchen/test-site/orders/{XSS}/events"
    assert server.send(hostile, b"{}").result == "dead"

    async def section() -> dict[str, Any]:
        # What a connector's component puts on the board: shown with no template of its own.
        return {"last_error": f"{XSS} call +90 532 765 43 21",
                "waiting": [{"order_id": "mk-1", "state": "parked"}]}

    server.board.add("calls-yemek", section)
    driver.get(f"{server.base}/")
    assert driver.find_element(By.ID, "unconfirmed").text.count("none") == 1
    board = driver.find_element(By.ID, "calls-yemek")
    assert "Calls to yemek" in board.text and "mk-1" in board.text
    assert f"{XSS} call [removed]" in board.text
    assert board.find_elements(By.TAG_NAME, "img") == []
    jobs = driver.find_element(By.ID, "jobs")
    assert key in jobs.text and "queued" in jobs.text
    letters = driver.find_element(By.ID, "dead-letters")
    assert XSS in letters.text, "the refused topic shows as text"
    assert driver.find_elements(By.CSS_SELECTOR, "#dead-letters img") == []
    # No session: the page offers no CSRF token and the reprint is refused.
    jobs.find_element(By.CSS_SELECTOR, "form[action='/operator/jobs/reprint'] button").click()
    driver.switch_to.alert.accept()
    refusal = wait_for(lambda: driver.find_element(By.ID, "message").text, 3, "a refusal")
    assert "operator token is needed" in refusal
    assert "reprint-" not in driver.find_element(By.ID, "jobs").text

    login(driver, server.base, "/")
    row = wait_for(lambda: [r for r in driver.find_elements(By.CSS_SELECTOR, "#jobs tbody tr")
                            if r.text.startswith(key)], 3, "the job's row")[0]
    row.find_element(By.TAG_NAME, "button").click()
    driver.switch_to.alert.accept()
    done = wait_for(lambda: driver.find_element(By.ID, "message").text, 3, "the result")
    assert f"reprint of {key} queued" in done
    # The reprint is a job of its own, shown at the next refresh of the panel.
    wait_for(lambda: "reprint-web-" in driver.find_element(By.ID, "jobs").text, 5,
             "the reprint job listed")


def test_accept_an_order_and_pause_the_store(server: ScreensServer, browser: Any) -> None:
    driver = browser
    server.apply(order("mk-7", [item("l1", "Lahmacun")], display_id="M7",
                       requires_acceptance=True))
    server.apply(order("mk-8", [item("l1", "Pide")], display_id="M8",
                       requires_acceptance=True))
    login(driver, server.base, "/")
    waiting = driver.find_element(By.ID, "waiting")
    assert "M7" in waiting.text and "M8" in waiting.text
    # Waiting orders are no cards yet: nothing is cooked before the restaurant accepts.
    assert server.run(lambda: server.web.screens.source.snapshot(None)) == []  # type: ignore[union-attr]

    # Accept with a preparation time, through the form.
    form = waiting.find_element(By.CSS_SELECTOR, "form.panel-form[action$='/accept']")
    form.find_element(By.XPATH, ".//select[@name='order_id']/option[text()='mk-7']").click()
    form.find_element(By.NAME, "prep_minutes").send_keys("25")
    form.find_element(By.TAG_NAME, "button").click()
    said(driver, "order mk-7 accepted, ready in 25 min")
    wait_for(lambda: server.stage("mk-7") == "accepted", 5, "the order accepted")
    cards = wait_for(lambda: server.run(
        lambda: server.web.screens.source.snapshot(None)), 5, "its card")  # type: ignore[union-attr]
    assert [c.order_id for c in cards] == ["mk-7"]

    # Reject the other from its row (busy).
    row = wait_for(lambda: [r for r in driver.find_elements(By.CSS_SELECTOR, "#waiting tr")
                            if "M8" in r.text], 5, "the row of M8")[0]
    row.find_element(By.XPATH, ".//button[text()='Reject']").click()
    driver.switch_to.alert.accept()
    said(driver, "order mk-8 rejected (busy)")
    wait_for(lambda: server.stage("mk-8") == "rejected", 5, "the order rejected")

    # Pause the store for 30 minutes; the panel says so at its next refresh.
    store = driver.find_element(By.ID, "store")
    pause = store.find_element(By.CSS_SELECTOR, "form[action$='/pause']")
    pause.find_element(By.NAME, "for_minutes").send_keys("30")
    pause.find_element(By.TAG_NAME, "button").click()
    driver.switch_to.alert.accept()
    said(driver, "the store is paused for 30 min")
    wait_for(lambda: "paused" in driver.find_element(By.ID, "store").text, 5, "the state")
