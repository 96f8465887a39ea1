"""The operator page's panels, as plain data: what a panel shows the operator and the
actions it offers, apart from any HTML or HTTP.

Every panel is rendered the same way (facts, tables with buttons and links, small forms) by
one template that escapes all text; a panel's actions are POSTs that need the operator token.
The panels come from the store (print jobs, dead letters) and from the sections that
components put on the daemon's board (`edge.component.Board`): a component that is not
configured has no section, and its panel does not show.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

Tone = Literal["good", "warn", "bad"] | None
Action = Callable[[Mapping[str, str]], Awaitable[str]]
"""An operator's action: the posted fields in, the message to show out. Raises
`ActionRefused` for what cannot be done as asked."""


class ActionRefused(Exception):
    """What the operator asked cannot be done; the message says why, in their words."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Fact:
    label: str
    value: str
    tone: Tone = None


@dataclass(frozen=True)
class Button:
    label: str
    action: str                                  # one of the panel's actions
    fields: Mapping[str, str] = field(default_factory=dict)
    confirm: str | None = None                   # asked before posting


@dataclass(frozen=True)
class Link:
    label: str
    path: str                                    # a path of this server, e.g. a preview


@dataclass(frozen=True)
class Row:
    cells: Sequence[str]
    buttons: Sequence[Button] = ()
    links: Sequence[Link] = ()
    tone: Tone = None


@dataclass(frozen=True)
class Table:
    heading: str | None
    columns: Sequence[str]
    rows: Sequence[Row]
    empty: str = "none"


@dataclass(frozen=True)
class Input:
    name: str
    label: str
    kind: Literal["text", "number", "select"] = "text"
    options: Sequence[str] = ()
    required: bool = True


@dataclass(frozen=True)
class Form:
    action: str
    label: str                                   # the submit button
    inputs: Sequence[Input]
    confirm: str | None = None


@dataclass(frozen=True)
class View:
    facts: Sequence[Fact] = ()
    tables: Sequence[Table] = ()
    forms: Sequence[Form] = ()
    note: str | None = None


class Panel(Protocol):
    @property
    def key(self) -> str: ...                    # [a-z0-9-]+, unique on the page

    @property
    def title(self) -> str: ...

    @property
    def actions(self) -> Mapping[str, Action]: ...

    async def view(self) -> View:
        """Read fresh for every render."""
        ...


__all__ = ["Action", "ActionRefused", "Button", "Fact", "Form", "Input", "Link", "Panel",
           "Row", "Table", "Tone", "View"]
