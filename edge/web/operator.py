"""The operator page's panels: the page's own (tickets delivered and not confirmed, print
jobs waiting or in trouble, dead letters), read from the store, and the sections components
put on the daemon's board (printers, the upstream outbox, each partner's calls, and whatever
a connector adds), with the actions the page offers for them.

Actions go through the same code as the CLI and the MQTT commands: a reprint is the
`reprint` command given to the daemon's intake (as `{root}/commands/reprint` brings it), a
retry of parked records is the outbox's (or the calls outbox's) own call, after which the
sender is woken.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import quote

from edge.clock import Clock, rfc3339, rfc3339_ms
from edge.component import Board, Intake
from edge.feed import RecordQueued
from edge.orders import acceptance, opening, views
from edge.store import Store, Tx, calls, outbox
from edge.web.board import BoardPanel, when
from edge.web.panels import (
    Action,
    ActionRefused,
    Button,
    Fact,
    Form,
    Input,
    Link,
    Row,
    Table,
    View,
)
from edge.web.privacy import scrub

OPEN_JOB_STATES = ("unconfirmed", "failed", "sending", "queued", "waiting")


def _cut(text: str | None, limit: int = 160) -> str:
    if not text:
        return ""
    text = scrub(text)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


async def reprint(intake: Intake, job_key: str) -> str:
    """The `reprint` command, as `kitchen-edge jobs reprint` and the MQTT topic give it."""
    job_key = job_key.strip()
    if not job_key:
        raise ActionRefused("job_key is missing", 400)
    command_id = await _command(intake, "reprint", {"job_key": job_key})
    return f"reprint of {job_key} queued (command {command_id}); it prints marked REPRINT"


@dataclass
class UnconfirmedPanel:
    """Tickets delivered to a printer and not confirmed: they may be on paper, or not."""

    store: Store
    intake: Intake
    key: str = "unconfirmed"
    title: str = "Delivered, not confirmed"

    @property
    def actions(self) -> Mapping[str, Action]:
        return {"reprint": lambda f: reprint(self.intake, f.get("job_key", ""))}

    async def view(self) -> View:
        held = await self.store.read(views.unconfirmed_jobs)
        rows = [Row([key, printer], buttons=[Button(
            "Reprint", "reprint", {"job_key": key},
            confirm=f"Print {key} again, marked REPRINT?")], tone="bad")
            for printer, keys in sorted(held.items()) for key in keys]
        return View(tables=[Table(None, ["job", "printer"], rows, empty="none")],
                    note="Each may be on paper, or lost with the printer's buffer: look at "
                         "the printer, and reprint what did not come out.")


@dataclass
class JobsPanel:
    store: Store
    intake: Intake
    previews: bool = False
    key: str = "jobs"
    title: str = "Print jobs"

    @property
    def actions(self) -> Mapping[str, Action]:
        return {"reprint": lambda f: reprint(self.intake, f.get("job_key", ""))}

    def _row(self, j: Mapping[str, Any]) -> Row:
        key = str(j["job_key"])
        return Row(
            [key, j["station_id"], j["kind"], j["state"], str(j["attempts"]),
             when(j["created_at"]), _cut(j.get("reason")) or "-"],
            buttons=[Button("Reprint", "reprint", {"job_key": key},
                            confirm=f"Print {key} again, marked REPRINT?")],
            links=[Link("Preview", f"/operator/tickets/{quote(key, safe='/')}.png")]
            if self.previews else [],
            tone="bad" if j["state"] in ("failed", "unconfirmed") else None)

    async def view(self) -> View:
        def read(conn: sqlite3.Connection) -> tuple[list[dict[str, Any]],
                                                    list[dict[str, Any]]]:
            open_: list[dict[str, Any]] = []
            for state in OPEN_JOB_STATES:
                open_ += views.jobs_list(conn, state=state, limit=50)
            return open_, views.jobs_list(conn, state="printed", limit=10)

        waiting, printed = await self.store.read(read)
        columns = ["job", "station", "kind", "state", "attempts", "created (UTC)", "why"]
        return View(
            tables=[Table("Not printed yet, or in trouble", columns,
                          [self._row(j) for j in waiting], empty="every ticket is printed"),
                    Table("Printed lately", columns, [self._row(j) for j in printed])],
            forms=[Form("reprint", "Reprint", [Input("job_key", "Any job key")],
                        confirm="Print this job again, marked REPRINT?")])


@dataclass
class DeadLettersPanel:
    store: Store
    key: str = "dead-letters"
    title: str = "Dead letters (messages refused)"

    @property
    def actions(self) -> Mapping[str, Action]:
        return {}

    async def view(self) -> View:
        letters = await self.store.read(lambda c: views.dead_letters(c, 20))
        rows = [Row([when(d["received_at"]), _cut(d["topic"], 80), _cut(d["reason"]),
                     str(d["seen"]), str(d["payload_size"])]) for d in letters]
        columns = ["received (UTC)", "topic", "reason", "seen", "bytes"]
        return View(tables=[Table(None, columns, rows, empty="no message was refused")],
                    note="The 20 latest; `kitchen-edge dead-letter list` shows more.")


# What a rejection may say, in the words the partners' mappings know (CONTRACT 9 and 10).
REJECT_REASONS = ("busy", "out_of_stock", "store_closed", "address", "customer", "technical",
                  "other")


async def _command(intake: Intake, name: str, body: dict[str, Any]) -> str:
    """An operator command through the intake, as `{root}/commands/{name}` brings it; its
    command id."""
    command_id = f"web-{secrets.token_hex(6)}"
    outcome = await intake.command(name, json.dumps({"command_id": command_id, **body})
                                   .encode())
    if outcome.result == "dead":
        raise ActionRefused(f"{name} refused: {outcome.reason}")
    return command_id


def _minutes(fields: Mapping[str, str], name: str, *, required: bool,
             low: int, high: int) -> int | None:
    text = fields.get(name, "").strip()
    if not text:
        if required:
            raise ActionRefused(f"{name.replace('_', ' ')} is missing", 400)
        return None
    if not text.isdigit() or not low <= int(text) <= high:
        raise ActionRefused(f"{name.replace('_', ' ')}: a whole number from {low} to {high}",
                            400)
    return int(text)


@dataclass
class AcceptancePanel:
    """Orders a channel sent for the restaurant to accept or reject (`kitchen-edge orders
    waiting`); the answers are the `order` command, as `kitchen-edge orders accept|reject`
    and `{root}/commands/order` give it."""

    store: Store
    intake: Intake
    clock: Clock
    key: str = "waiting"
    title: str = "Orders waiting for acceptance"

    @property
    def actions(self) -> Mapping[str, Action]:
        return {"accept": self._accept, "reject": self._reject}

    async def _accept(self, fields: Mapping[str, str]) -> str:
        order_id = fields.get("order_id", "").strip()
        if not order_id:
            raise ActionRefused("order_id is missing", 400)
        body: dict[str, Any] = {"order_id": order_id, "action": "accept"}
        prep = _minutes(fields, "prep_minutes", required=False, low=0, high=24 * 60)
        if prep is not None:
            body["prep_minutes"] = prep
        await _command(self.intake, "order", body)
        return f"order {order_id} accepted" + (f", ready in {prep} min" if prep else "")

    async def _reject(self, fields: Mapping[str, str]) -> str:
        order_id = fields.get("order_id", "").strip()
        reason = fields.get("reason_code", "other").strip() or "other"
        if not order_id:
            raise ActionRefused("order_id is missing", 400)
        if reason not in REJECT_REASONS:
            raise ActionRefused(f"reason_code: one of {', '.join(REJECT_REASONS)}", 400)
        await _command(self.intake, "order", {
            "order_id": order_id, "action": "reject", "reason_code": reason,
            "reason": reason.replace("_", " ")})
        return f"order {order_id} rejected ({reason.replace('_', ' ')})"

    async def view(self) -> View:
        now = self.clock.now()
        restamp = self.clock.restamp
        waiting = await self.store.read(lambda c: acceptance.waiting(c, now, restamp))
        rows = [Row(
            [w.display_id or w.order_id, w.order_id, w.device or w.channel, when(w.since),
             _age(w.waited_s), "yes" if w.reminded else "no"],
            buttons=[Button("Accept", "accept", {"order_id": w.order_id}),
                     Button("Reject", "reject", {"order_id": w.order_id,
                                                 "reason_code": "busy"},
                            confirm=f"Reject order {w.display_id or w.order_id} (busy)?")],
            tone="warn" if w.reminded else None) for w in waiting]
        ids = [w.order_id for w in waiting]
        forms = [
            Form("accept", "Accept", [Input("order_id", "Order", "select", ids),
                                      Input("prep_minutes", "Ready in (minutes)", "number",
                                            required=False)]),
            Form("reject", "Reject", [Input("order_id", "Order", "select", ids),
                                      Input("reason_code", "Why", "select", REJECT_REASONS)],
                 confirm="Reject this order?"),
        ] if waiting else []
        return View(tables=[Table(None, ["order", "id", "from", "since (UTC)", "waiting",
                                         "ATTENTION printed"], rows,
                                  empty="no order is waiting")], forms=forms)


@dataclass
class StorePanel:
    """Whether the restaurant takes orders (`kitchen-edge store`): open, busy (longer
    preparation), or paused (channel orders refused; the POS's never are)."""

    store: Store
    intake: Intake
    clock: Clock
    key: str = "store"
    title: str = "Store"

    @property
    def actions(self) -> Mapping[str, Action]:
        return {"open": self._open, "busy": self._busy, "pause": self._pause}

    async def _open(self, _: Mapping[str, str]) -> str:
        await _command(self.intake, "store", {"state": "open"})
        return "the store is open"

    async def _busy(self, fields: Mapping[str, str]) -> str:
        minutes = _minutes(fields, "busy_minutes", required=True, low=1, high=24 * 60)
        await _command(self.intake, "store", {"state": "busy", "busy_minutes": minutes})
        return f"the store is busy: {minutes} more minutes per order"

    async def _pause(self, fields: Mapping[str, str]) -> str:
        minutes = _minutes(fields, "for_minutes", required=False, low=1, high=7 * 24 * 60)
        body: dict[str, Any] = {"state": "paused"}
        if minutes is not None:
            body["until"] = rfc3339(self.clock.now() + timedelta(minutes=minutes))
        await _command(self.intake, "store", body)
        return "the store is paused" + (f" for {minutes} min" if minutes else
                                        " until it is opened again")

    async def view(self) -> View:
        now = self.clock.now()
        state = (await self.store.read(opening.current)).public(now)
        name = str(state.get("state"))
        return View(
            facts=[Fact("state", name, "good" if name == "open" else "bad"
                        if name == "paused" else "warn"),
                   Fact("busy minutes", str(state.get("busy_minutes") or "-")),
                   Fact("until", when(state.get("until")) if state.get("until") else "-")],
            forms=[Form("open", "Open", []),
                   Form("busy", "Busy", [Input("busy_minutes", "Extra minutes", "number")]),
                   Form("pause", "Pause", [Input("for_minutes", "For (minutes, empty: until "
                                                 "opened)", "number", required=False)],
                        confirm="Pause the store? Channel orders will be refused.")])


def _title(name: str) -> str:
    if name.startswith("calls-"):
        return f"Calls to {name.removeprefix('calls-')}"
    return name.replace("-", " ").replace("_", " ").capitalize()


def board_panels(board: Board, store: Store, clock: Clock) -> list[BoardPanel]:
    """A panel for each board section, with the page's actions for the ones it knows: the
    parked records of the upstream outbox and of each partner's calls go again."""
    out: list[BoardPanel] = []
    for name, section in board.sections().items():
        panel = BoardPanel(name, _title(name), section)
        if name == "upstream":
            panel.actions = {"retry-parked": _retry_upstream(store)}
            panel.forms = [Form("retry-parked", "Retry parked records", [],
                                confirm="Send every parked record again?")]
        elif name.startswith("calls-"):
            destination = name.removeprefix("calls-")
            panel.actions = {"retry-parked": _retry_calls(store, clock, destination)}
            panel.forms = [Form("retry-parked", "Retry parked calls", [],
                                confirm=f"Send every parked call to {destination} again?")]
        out.append(panel)
    return out


def _retry_upstream(store: Store) -> Action:
    async def retry(_: Mapping[str, str]) -> str:
        def write(tx: Tx) -> int:
            count = outbox.retry_parked(tx.conn)
            if count:
                tx.emit(RecordQueued("upstream", None))
            return count

        return f"{await store.transact(write)} parked record(s) queued again"

    return retry


def _retry_calls(store: Store, clock: Clock, destination: str) -> Action:
    async def retry(_: Mapping[str, str]) -> str:
        def write(tx: Tx) -> int:
            count = calls.retry_parked(tx.conn, destination, rfc3339_ms(clock.now()))
            if count:
                tx.emit(RecordQueued(destination, None))
            return count

        return f"{await store.transact(write)} parked call(s) to {destination} queued again"

    return retry


__all__ = ["AcceptancePanel", "DeadLettersPanel", "JobsPanel", "StorePanel", "UnconfirmedPanel",
           "board_panels", "reprint"]
