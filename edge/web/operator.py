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
from typing import Any
from urllib.parse import quote

from edge.clock import Clock, rfc3339_ms
from edge.component import Board, Intake
from edge.feed import RecordQueued
from edge.orders import views
from edge.store import Store, Tx, calls, outbox
from edge.web.board import BoardPanel, when
from edge.web.panels import (
    Action,
    ActionRefused,
    Button,
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
    command_id = f"web-{secrets.token_hex(6)}"
    outcome = await intake.command("reprint", json.dumps(
        {"command_id": command_id, "job_key": job_key}).encode())
    if outcome.result == "dead":
        raise ActionRefused(f"reprint refused: {outcome.reason}")
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


__all__ = ["DeadLettersPanel", "JobsPanel", "UnconfirmedPanel", "board_panels", "reprint"]
