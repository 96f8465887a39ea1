"""The screens' server over real HTTP, without a browser: the live protocol (a snapshot,
then deltas that never leave a gap or a double), bump and recall in the store, and the
security rules (the operator token, same-origin, CSRF)."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.screens_env import TOKEN, ScreensServer, event, item, order, write_token


class Stream:
    """One SSE connection read in a thread: its messages as (event, data) in a queue."""

    def __init__(self, url: str) -> None:
        self.messages: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self.ids: list[str] = []
        self._client = httpx.Client(timeout=httpx.Timeout(5, read=60))
        self._stop = False
        self._thread = threading.Thread(target=self._read, args=(url,), daemon=True)
        self._thread.start()

    def _read(self, url: str) -> None:
        try:
            with self._client.stream("GET", url) as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                name, data = "message", ""
                for line in response.iter_lines():
                    if self._stop:
                        return
                    if line.startswith("event: "):
                        name = line[7:]
                    elif line.startswith("data: "):
                        data = line[6:]
                    elif line.startswith("id: "):
                        self.ids.append(line[4:])
                    elif line == "" and data:
                        self.messages.put((name, json.loads(data)))
                        name, data = "message", ""
        except httpx.HTTPError:
            self.messages.put(("closed", {}))

    def next(self, timeout: float = 5.0) -> tuple[str, dict[str, Any]]:
        return self.messages.get(timeout=timeout)

    def change(self) -> tuple[str, dict[str, Any]]:
        """The next message that is not a heartbeat: a `tick` may come at any moment (every
        half second here, and a loaded machine stretches a step past that)."""
        while True:
            name, data = self.next()
            if name != "tick":
                return name, data

    def until(self, name: str, timeout: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            got, data = self.next(max(0.01, deadline - time.monotonic()))
            if got == name:
                return data

    def close(self) -> None:
        self._stop = True
        self._client.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ScreensServer]:
    with ScreensServer(tmp_path, token_file=write_token(tmp_path / "operator.token"),
                       tick=0.5) as s:
        yield s


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_snapshot_then_deltas_without_gaps_or_doubles(server: ScreensServer) -> None:
    server.apply(order("o-1", [item("l1", "Adana kebap", 2, modifiers=["no onion"],
                                    allergens=["gluten"]),
                               item("l2", "Mojito", 1, category="bar")]))
    grill = Stream(f"{server.base}/kds/grill/events")
    everything = Stream(f"{server.base}/kds/all/events")
    try:
        name, snap = grill.next()
        assert name == "snapshot" and snap["seq"] == 0
        [card] = snap["cards"]
        assert (card["kind"], card["display_id"], card["where"]) == ("NEW", "O-1", "Table 7")
        assert [(i["qty"], i["name"], i["modifiers"], i["allergens"]) for i in card["items"]] \
            == [(2, "Adana kebap", ["no onion"], ["gluten"])]
        assert len(everything.until("snapshot")["cards"]) == 2

        # A new order: one upsert at the grill (the seqs, heartbeats included, are checked
        # for gaps at the end).
        server.apply(order("o-2", [item("l1", "Lahmacun")]))
        name, up = grill.change()
        assert (name, up["card"]["order_id"]) == ("upsert", "o-2")
        o2_card = card_id_of(up)
        # Hold: the card changes in place (same id), it is not a new card.
        server.apply(event("o-2", "order.held", {}))
        name, up = grill.change()
        assert (name, card_id_of(up)) == ("upsert", o2_card)
        assert up["card"]["flags"] == ["HOLD"]

        # A touch that changes nothing a screen shows sends nothing (no doubles): the next
        # message is the heartbeat.
        server.run(_touch(server, ["o-1", "o-2"]))
        name, _ = grill.next()
        assert name == "tick"

        # Bump: a remove; the order is ready only once the bar has bumped its card too.
        o1_grill = card["card_id"]
        r = httpx.post(f"{server.base}/kds/grill/bump", json={"card_id": o1_grill},
                       headers=bearer())
        assert r.status_code == 200, r.text
        name, gone = grill.change()
        assert (name, gone["card_id"]) == ("remove", o1_grill)
        assert server.ready_orders == []
        # A double tap: refused, nothing changes.
        r = httpx.post(f"{server.base}/kds/grill/bump", json={"card_id": o1_grill},
                       headers=bearer())
        assert r.status_code == 409
        bar_card = _card_at(server, "bar", "o-1")
        r = httpx.post(f"{server.base}/kds/grill/bump", json={"card_id": bar_card},
                       headers=bearer())
        assert r.status_code == 409, "the grill cannot bump the bar's card"
        r = httpx.post(f"{server.base}/kds/bar/bump", json={"card_id": bar_card},
                       headers=bearer())
        assert r.status_code == 200
        assert server.ready_orders == ["o-1"]
        deadline = time.monotonic() + 5
        while server.stage("o-1") != "ready" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.stage("o-1") == "ready", "the applier made the order ready"

        # Recall at the grill: the grill's last bump comes back, timer unchanged.
        r = httpx.post(f"{server.base}/kds/grill/recall", headers=bearer())
        assert r.json()["card_id"] == o1_grill
        name, back = grill.change()
        assert name == "upsert" and back["card"]["card_id"] == o1_grill
        assert back["card"]["started_at"] == card["started_at"]
        assert "RECALLED" in back["card"]["flags"]

        # Every message of the stream, in order, with ids epoch.seq and no gap.
        seqs = [int(i.split(".")[1]) for i in grill.ids]
        assert seqs == list(range(len(seqs)))
    finally:
        grill.close()
        everything.close()


def card_id_of(message: dict[str, Any]) -> str:
    return str(message["card"]["card_id"])


def _touch(server: ScreensServer, order_ids: list[str]) -> Any:
    async def go() -> None:
        server.hub.touch(order_ids)

    return go


def _card_at(server: ScreensServer, station: str, order_id: str) -> str:
    s = Stream(f"{server.base}/kds/{station}/events")
    try:
        cards = s.until("snapshot")["cards"]
    finally:
        s.close()
    return next(c["card_id"] for c in cards if c["order_id"] == order_id)


def test_a_reconnect_starts_with_the_whole_truth(server: ScreensServer) -> None:
    server.apply(order("r-1", [item("l1", "Köfte")]))
    first = Stream(f"{server.base}/kds/grill/events")
    epoch = first.until("snapshot")["epoch"]
    first.close()
    # While nobody watches: one more order, one void of a line.
    server.apply(order("r-2", [item("l1", "Pide"), item("l2", "Ayran")]))
    server.apply(event("r-2", "order.items_voided", {"line_ids": ["l2"]}))
    again = Stream(f"{server.base}/kds/grill/events")
    try:
        snap = again.until("snapshot")
        assert snap["epoch"] == epoch and snap["seq"] == 0
        by_order = {c["order_id"]: c for c in snap["cards"]}
        assert sorted(by_order) == ["r-1", "r-2"]
        # The void shows on the card it changes: the line struck through, not gone.
        assert [(i["name"], i["voided"]) for i in by_order["r-2"]["items"]] == [
            ("Pide", False), ("Ayran", True)]
    finally:
        again.close()


def test_cancelled_and_privacy(server: ScreensServer) -> None:
    server.apply(order("c-1", [item("l1", "Dürüm", note="call me on +90 532 765 43 21")],
                       note="mail ayse@example.com if late"))
    server.apply(event("c-1", "order.cancelled", {"reason_code": "customer"}))
    s = Stream(f"{server.base}/kds/grill/events")
    try:
        [card] = s.until("snapshot")["cards"]
    finally:
        s.close()
    assert card["flags"] == ["CANCELLED"]
    text = json.dumps(card)
    assert "532" not in text and "example.com" not in text
    assert card["note"] == "mail [removed] if late"


def test_streams_end_when_the_server_stops(tmp_path: Path) -> None:
    server = ScreensServer(tmp_path, token_file=write_token(tmp_path / "t")).start()
    s = Stream(f"{server.base}/kds/all/events")
    s.until("snapshot")
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 3, "an open stream held the server's shutdown"
    s.close()


# -- security ---------------------------------------------------------------------------


def test_actions_need_the_token_and_come_from_this_site(server: ScreensServer) -> None:
    [key] = server.apply(order("s-1", [item("l1", "Kebap")]))
    url = f"{server.base}/kds/grill/bump"
    # Viewing needs nothing.
    assert httpx.get(f"{server.base}/kds/grill").status_code == 200
    assert httpx.get(f"{server.base}/").status_code == 200
    # No token: 401, with a message that says what to do.
    r = httpx.post(url, json={"card_id": key})
    assert r.status_code == 401 and "log in at /login" in r.text
    r = httpx.post(url, json={"card_id": key}, headers=bearer("x" * 32))
    assert r.status_code == 401 and "wrong operator token" in r.text
    # Another site's page, even holding a valid token: refused before anything else.
    for hostile in ({"Origin": "http://evil.example"}, {"Origin": "null"},
                    {"Referer": "http://evil.example/page"},
                    {"Sec-Fetch-Site": "cross-site"}):
        r = httpx.post(url, json={"card_id": key}, headers={**bearer(), **hostile})
        assert r.status_code == 403 and "cross-site request refused" in r.text, hostile
    assert _open_cards(server) == 1

    # A login from this site sets an HttpOnly, SameSite=Strict session cookie...
    with httpx.Client(base_url=server.base) as browser:
        own = {"Origin": server.base}
        r = browser.post("/login", data={"token": "wrong" * 5, "next": "/kds/grill"},
                         headers=own)
        assert r.status_code == 401 and "not the operator token" in r.text
        r = browser.post("/login", data={"token": TOKEN, "next": "/kds/grill"}, headers=own)
        assert r.status_code == 303 and r.headers["location"] == "/kds/grill"
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN not in cookie
        # ... which is not enough without the page's CSRF token ...
        r = browser.post(url, json={"card_id": key}, headers=own)
        assert r.status_code == 403 and "CSRF" in r.text
        r = browser.post(url, json={"card_id": key},
                         headers={**own, "X-CSRF-Token": "0" * 32})
        assert r.status_code == 403
        # ... which the page carries, and then the bump is done.
        page = browser.get("/kds/grill").text
        csrf = page.split('name="csrf-token" content="')[1].split('"')[0]
        r = browser.post(url, json={"card_id": key}, headers={**own, "X-CSRF-Token": csrf})
        assert r.status_code == 200, r.text
        assert _open_cards(server) == 0
        # A changed token file ends every session at once.
        write_token(server.token_file or Path(), "another-operator-token-42")
        r = browser.post(f"{server.base}/kds/grill/recall",
                         headers={**own, "X-CSRF-Token": csrf})
        assert r.status_code == 401


def test_pages_forbid_inline_script_and_framing(server: ScreensServer) -> None:
    r = httpx.get(f"{server.base}/kds/grill")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert httpx.get(f"{server.base}/kds/nowhere").status_code == 404
    js = httpx.get(f"{server.base}/static/kds.js")
    assert js.status_code == 200 and "EventSource" in js.text
    assert "innerHTML" not in js.text, "the display sets order text as text only"


def test_without_a_usable_token_file_actions_are_off(tmp_path: Path) -> None:
    loose = write_token(tmp_path / "operator.token", mode=0o644)
    with ScreensServer(tmp_path, token_file=loose) as server:
        r = httpx.post(f"{server.base}/kds/grill/recall", headers=bearer())
        assert r.status_code == 403 and "readable by others" in r.text
    with ScreensServer(tmp_path, token_file=None) as server:
        r = httpx.post(f"{server.base}/kds/grill/recall", headers=bearer())
        assert r.status_code == 403 and "operator_token_file is not set" in r.text


def _open_cards(server: ScreensServer) -> int:
    s = Stream(f"{server.base}/kds/all/events")
    try:
        return len(s.until("snapshot")["cards"])
    finally:
        s.close()


def test_an_order_that_leaves_the_kitchen_leaves_the_screens(server: ScreensServer) -> None:
    server.apply(order("g-1", [item("l1", "Köfte")], fulfillment={"type": "delivery"}))
    server.apply(order("g-2", [item("l1", "Pide")]))
    s = Stream(f"{server.base}/kds/grill/events")
    try:
        assert len(s.until("snapshot")["cards"]) == 2
        server.apply(event("g-1", "order.ready", {}))   # ready: the card stays to be bumped
        server.apply(event("g-1", "order.out_for_delivery", {}))
        name, gone = s.next()
        assert (name, gone["card_id"]) == ("remove", "g-1/new/grill")
        # Later: an ADDED batch of the other order is a card of its own.
        server.apply(event("g-2", "order.items_added", {
            "batch_id": "b2", "items": [item("l2", "Ayran", category="grill")]}))
        name, up = s.next()
        assert (name, up["card"]["kind"], up["card"]["card_id"]) == (
            "upsert", "ADDED", "g-2/add-b2/grill")
    finally:
        s.close()
    # A reprint is not a new card.
    server.send("kitchen/test-site/commands/reprint",
                b'{"command_id": "rp-1", "job_key": "g-2/new/grill"}')
    assert sorted(c["card_id"] for c in _snapshot(server)) == [
        "g-2/add-b2/grill", "g-2/new/grill"]


def _snapshot(server: ScreensServer) -> list[dict[str, Any]]:
    s = Stream(f"{server.base}/kds/all/events")
    try:
        return list(s.until("snapshot")["cards"])
    finally:
        s.close()
