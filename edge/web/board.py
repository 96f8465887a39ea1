"""The sections that components put on the daemon's board, as operator-page panels.

A section is a JSON-able dict (what `GET /status` serves). It is shown as it is, with no
template of its own, so a connector's section appears the day the connector registers it:
its plain values become facts, a list of objects becomes a table (one column per key), a
nested object becomes facts under its name. All of it is text, escaped by the page's
template and scrubbed of anything shaped like a phone number or an e-mail address.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from edge.web.panels import Action, Fact, Form, Row, Table, Tone, View
from edge.web.privacy import scrub

Section = Callable[[], Awaitable[Mapping[str, Any]]]

GOOD = frozenset({"online", "up", "open", "ok", "done", "connected"})
BAD = frozenset({"offline", "down", "error", "paper_out", "cover_open", "paused", "parked",
                 "failed", "unconfirmed", "disconnected",
                 # a marketplace that does not answer (edge.connectors.marketplace)
                 "timeout", "unauthorized", "rate_limited", "bad_answer",
                 # a disk that refuses the database's writes (edge.store.trouble)
                 "full", "io_error", "degraded: disk full", "degraded: disk I/O error"})
CELL_LIMIT = 200
_STAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})")


def when(stamp: str | None) -> str:
    """RFC 3339 as the operator reads it: the time of day (UTC), with the date before it
    when it is not today's."""
    if not stamp:
        return "-"
    day, _, rest = stamp.partition("T")
    clock = rest[:8]
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    return clock if day == today else f"{day} {clock}"


def label(key: str) -> str:
    return key.replace("_", " ")


def text(value: Any) -> str:
    """One value as the operator reads it."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, Mapping):
        return ", ".join(f"{label(str(k))} {text(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list | tuple):
        return ", ".join(text(v) for v in value) or "-"
    if isinstance(value, str) and _STAMP.fullmatch(value):
        return when(value)
    out = scrub(str(value))
    return out if len(out) <= CELL_LIMIT else out[:CELL_LIMIT - 1] + "…"


def tone_of(value: Any) -> Tone:
    if isinstance(value, str):
        if value in GOOD:
            return "good"
        if value in BAD:
            return "bad"
    return None


def _table(name: str, rows: Sequence[Mapping[str, Any]]) -> Table:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    return Table(label(name), [label(c) for c in columns], [
        Row([text(row.get(c)) for c in columns], tone=tone_of(row.get("state")))
        for row in rows], empty="none")


def as_view(data: Mapping[str, Any], forms: Sequence[Form] = (), *,
            name: str | None = None) -> View:
    """`name`: the section's own name; a table under the same name needs no heading."""
    facts: list[Fact] = []
    tables: list[Table] = []
    for key, value in data.items():
        if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            table = _table(key, value)
            tables.append(Table(None, table.columns, table.rows) if key == name else table)
        elif isinstance(value, list) and not value:
            tables.append(Table(label(key), [], [], empty="none"))
        elif isinstance(value, Mapping) and value and not any(
                isinstance(v, Mapping | list) for v in value.values()):
            facts += [Fact(f"{label(key)}: {label(str(k))}", text(v), tone_of(v))
                      for k, v in value.items()]
        else:
            facts.append(Fact(label(key), text(value), tone_of(value)))
    return View(facts=facts, tables=tables, forms=forms)


@dataclass
class BoardPanel:
    """One board section as a panel, with the actions the page offers for it."""

    key: str
    title: str
    section: Section
    actions: Mapping[str, Action] = field(default_factory=dict)
    forms: Sequence[Form] = ()

    async def view(self) -> View:
        return as_view(await self.section(), self.forms, name=self.key)


__all__ = ["BoardPanel", "Section", "as_view", "text", "when"]
