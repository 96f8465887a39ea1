"""The operator page's own panels: printers (with the tickets delivered to them and not
confirmed), print jobs waiting or in trouble, dead letters, and the upstream outbox.

Each reads the store in one read transaction per render. Their actions go through the same
paths as the CLI and the MQTT commands: a reprint is a `reprint` command submitted to the
daemon's intake (as `{root}/commands/reprint` would bring it), a retry of parked records is
the outbox's own call.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from edge import ops as views
from edge.clock import Clock
from edge.config.models import Config
from edge.store import Store
from edge.upstream import outbox
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
    Tone,
    View,
)
from edge.web.privacy import scrub

OPEN_JOB_STATES = ("unconfirmed", "failed", "sending", "queued", "waiting")
PRINTER_TONE: dict[str, Tone] = {"online": "good", "offline": "bad", "paper_out": "bad",
                                 "cover_open": "bad", "error": "bad"}


class Outcome(Protocol):
    @property
    def result(self) -> str: ...           # accepted | duplicate | dead

    @property
    def reason(self) -> str | None: ...


class Submit(Protocol):
    """The daemon's durable intake: the message is taken as if it came from the broker."""

    async def __call__(self, topic: str, payloads: Sequence[bytes]) -> Sequence[Outcome]: ...


def _cut(text: str | None, limit: int = 160) -> str:
    if not text:
        return ""
    text = scrub(text)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _when(stamp: str | None) -> str:
    """RFC 3339 as the operator reads it: the time of day (UTC), with the date before it
    when it is not today's."""
    if not stamp:
        return "-"
    day, _, rest = stamp.partition("T")
    clock = rest[:8]
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    return clock if day == today else f"{day} {clock}"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


async def submit_reprint(submit: Submit, root: str, job_key: str) -> str:
    if not job_key:
        raise ActionRefused("job_key is missing", 400)
    command_id = f"web-{secrets.token_hex(6)}"
    [outcome] = await submit(f"{root}/commands/reprint", [json.dumps(
        {"command_id": command_id, "job_key": job_key}).encode()])
    if outcome.result == "dead":
        raise ActionRefused(f"reprint refused: {outcome.reason}")
    return f"reprint of {job_key} queued (command {command_id}); it prints marked REPRINT"


@dataclass
class PrintersPanel:
    store: Store
    cfg: Config
    submit: Submit
    key: str = "printers"
    title: str = "Printers"

    @property
    def actions(self) -> Mapping[str, Action]:
        return {"reprint": lambda f: submit_reprint(self.submit, self.cfg.root,
                                                    f.get("job_key", ""))}

    async def view(self) -> View:
        def read(conn: sqlite3.Connection) -> tuple[list[dict[str, Any]], dict[str, list[str]],
                                                    list[dict[str, Any]]]:
            return (views.printer_states(conn), views.unconfirmed_jobs(conn),
                    views.jobs_list(conn, state="queued", limit=1000))

        states, unconfirmed, queued = await self.store.read(read)
        by_id = {s["printer_id"]: s for s in states}
        printer_of = {s.id: s.printer for s in self.cfg.stations}
        waiting: dict[str, int] = {}
        for job in queued:
            target = printer_of.get(job["station_id"])
            if target is not None:
                waiting[target] = waiting.get(target, 0) + 1
        rows = []
        for printer in self.cfg.printers:
            state = by_id.get(printer.id, {})
            name = str(state.get("state") or "unknown")
            held = unconfirmed.get(printer.id, [])
            rows.append(Row(
                [printer.id, name, _when(state.get("since")),
                 _cut(state.get("detail")) or "-", str(waiting.get(printer.id, 0)),
                 str(len(held))],
                tone=PRINTER_TONE.get(name, "warn")))
        held_rows = [Row([key, printer], buttons=[Button(
            "Reprint", "reprint", {"job_key": key},
            confirm=f"Print {key} again, marked REPRINT?")])
            for printer, keys in sorted(unconfirmed.items()) for key in keys]
        return View(tables=[
            Table(None, ["printer", "state", "since", "why", "queued",
                         "delivered, not confirmed"], rows, empty="no printers configured"),
            Table("Delivered, not confirmed (may be on paper, may not: a reprint settles it)",
                  ["job", "printer"], held_rows, empty="none"),
        ])


@dataclass
class JobsPanel:
    store: Store
    cfg: Config
    submit: Submit
    previews: bool = False
    key: str = "jobs"
    title: str = "Print jobs"

    @property
    def actions(self) -> Mapping[str, Action]:
        return {"reprint": lambda f: submit_reprint(self.submit, self.cfg.root,
                                                    f.get("job_key", "").strip())}

    async def view(self) -> View:
        def read(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            out: list[dict[str, Any]] = []
            for state in OPEN_JOB_STATES:
                out += views.jobs_list(conn, state=state, limit=50)
            return out

        jobs = await self.store.read(read)
        rows = [Row(
            [j["job_key"], j["station_id"], j["kind"], j["state"], str(j["attempts"]),
             _when(j["created_at"]), _cut(j.get("reason")) or "-"],
            buttons=[Button("Reprint", "reprint", {"job_key": j["job_key"]},
                            confirm=f"Print {j['job_key']} again, marked REPRINT?")],
            links=[Link("Preview", f"/operator/tickets/{j['job_key']}.png")]
            if self.previews else [],
            tone="bad" if j["state"] in ("failed", "unconfirmed") else None)
            for j in jobs]
        return View(
            tables=[Table(None, ["job", "station", "kind", "state", "attempts",
                                 "created (UTC)", "why"], rows, empty="every ticket is printed")],
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
        rows = [Row([_when(d["received_at"]), _cut(d["topic"], 80), _cut(d["reason"]),
                     str(d["seen"]), str(d["payload_size"])]) for d in letters]
        columns = ["received (UTC)", "topic", "reason", "seen", "bytes"]
        return View(tables=[Table(None, columns, rows, empty="no message was refused")],
                    note="The 20 latest; `kitchen-edge dead-letter list` shows more.")


@dataclass
class OutboxPanel:
    store: Store
    clock: Clock
    retry: Callable[[], Awaitable[int]]
    key: str = "outbox"
    title: str = "Upstream outbox"

    @property
    def actions(self) -> Mapping[str, Action]:
        async def retry(_: Mapping[str, str]) -> str:
            count = await self.retry()
            return f"{count} parked record(s) queued again"

        return {"retry-parked": retry}

    async def view(self) -> View:
        now: datetime = self.clock.now()

        def read(conn: sqlite3.Connection) -> tuple[outbox.OutboxStats, list[dict[str, Any]]]:
            return outbox.stats(conn, now), outbox.parked_records(conn, 50)

        stats, parked = await self.store.read(read)
        rows = [Row([str(p["seq"]), p["kind"], p["order_id"] or "-", str(p["attempts"]),
                     _cut(p["last_error"])], tone="bad") for p in parked]
        return View(
            facts=[
                Fact("backlog", str(stats.backlog), "warn" if stats.backlog else "good"),
                Fact("held back by a parked record", str(stats.blocked),
                     "bad" if stats.blocked else None),
                Fact("oldest unsent", _age(stats.oldest_unsent_age_s)),
                Fact("last accepted", _when(stats.last_success) if stats.last_success
                     else "never"),
                Fact("parked", str(stats.parked), "bad" if stats.parked else "good"),
            ],
            tables=[Table("Parked records (the upstream refused them)",
                          ["seq", "kind", "order", "attempts", "last error"], rows)],
            forms=[Form("retry-parked", "Retry parked records", [],
                        confirm="Send every parked record again?")] if parked else [])


__all__ = ["DeadLettersPanel", "JobsPanel", "OutboxPanel", "PrintersPanel", "Submit",
           "submit_reprint"]
