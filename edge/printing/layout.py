"""A Ticket laid out as styled, wrapped lines (CONTRACT section 5), before any bytes.

The order of the blocks is the contract's: the kind in large type, the marks that explain a
second print (REPRINT, BACKUP FROM, MAY BE DUPLICATE) and LATE, the station, the order's
label and service, channel and times, the reason, the items with their modifiers, notes,
allergens and course, the check lines of a TEST ticket, the order note, and last `job KEY`.

A block is one piece of meaning (an item name, one modifier) that may wrap over several
lines; it is printed either all as text in one code page or all as raster, so one item name
never shows two fonts.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Literal

from edge.orders.ticket import Ticket, TicketItem

Size = Literal["normal", "tall", "large"]  # tall: double height; large: double width+height

_INDENT = "   "
# Characters that draw nothing and would only push a line to raster: zero-width space and
# joiner, word joiner, BOM and emoji variation selectors.
_INVISIBLE = dict.fromkeys([0x200B, 0x200D, 0x2060, 0xFEFF, *range(0xFE00, 0xFE10)], None)


@dataclass(frozen=True)
class Style:
    size: Size = "normal"
    bold: bool = False
    invert: bool = False
    font_b: bool = False
    center: bool = False


@dataclass(frozen=True)
class Block:
    section: str
    style: Style
    lines: tuple[tuple[str, str], ...]  # (prefix, text): prefix is the plain ASCII indent


NORMAL = Style()
BOLD = Style(bold=True)
RULE = "-"


def font_b_columns(columns: int) -> int:
    """Font B (9 dots) fits a third more characters than font A (12 dots)."""
    return columns * 4 // 3


def clean(text: str) -> str:
    """NFC, and no control characters: a stray ESC or newline in an item name must not
    become a printer command or break the layout. Controls and odd spaces become spaces;
    invisible format characters (soft hyphen, bidi marks, tags) are dropped."""
    text = unicodedata.normalize("NFC", text).translate(_INVISIBLE)
    if text.isprintable():
        return text
    out: list[str] = []
    for c in text:
        if c.isprintable():
            out.append(c)
            continue
        category = unicodedata.category(c)
        if category == "Cf":
            continue
        # Unassigned and private-use characters stay, to be drawn as a visible box.
        out.append(" " if category in ("Cc", "Zs", "Zl", "Zp") else c)
    return "".join(out)


def wrap(text: str, width: int, first: str = "", rest: str | None = None) -> list[tuple[str, str]]:
    """Greedy word wrap; words longer than a line are cut. `first` prefixes the first line,
    `rest` (default: spaces as wide as `first`) the continuation lines."""
    if rest is None:
        rest = " " * len(first)
    lines: list[tuple[str, str]] = []
    prefix = first
    current = ""
    for word in text.split():
        avail = max(1, width - len(prefix))
        if current and len(current) + 1 + len(word) <= avail:
            current += " " + word
            continue
        if current:
            lines.append((prefix, current))
            prefix = rest
            avail = max(1, width - len(prefix))
        while len(word) > avail:
            lines.append((prefix, word[:avail]))
            word = word[avail:]
            prefix = rest
            avail = max(1, width - len(prefix))
        current = word
    lines.append((prefix, current))
    return lines


UNSYNCED_NOTE = "(~ box clock not synced)"


def hhmm(moment: datetime, tz: tzinfo | None) -> str:
    return _local(moment, tz).strftime("%H:%M")


def _local(moment: datetime, tz: tzinfo | None) -> datetime:
    # Naive datetimes are taken as already local; aware ones are shown in `tz`, else in the
    # machine's zone (the edge box sits in the restaurant).
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(tz)


def layout_ticket(ticket: Ticket, columns: int, tz: tzinfo | None = None) -> list[Block]:
    wide = columns // 2
    blocks: list[Block] = []

    def add(section: str, style: Style, lines: list[tuple[str, str]]) -> None:
        blocks.append(Block(section, style, tuple(lines)))

    add("kind", Style(size="large", bold=True, center=True), wrap(ticket.kind, wide))
    mark = Style(bold=True, invert=True)
    if ticket.reprint:
        add("mark", mark, [("", "REPRINT")])
    if ticket.backup_from:
        add("mark", mark, wrap(f"BACKUP FROM {clean(ticket.backup_from)}", columns))
    if ticket.may_be_duplicate:
        add("mark", mark, [("", "MAY BE DUPLICATE")])
    if ticket.late:
        add("mark", mark, [("", "LATE")])

    add("station", BOLD, wrap(clean(ticket.station), columns, "Station: ", "  "))
    add("label", Style(size="large", bold=True), wrap(clean(ticket.order_label), wide))
    if ticket.service:
        add("service", Style(size="tall", bold=True), wrap(clean(ticket.service), columns))
    add("channel", NORMAL, wrap(clean(ticket.channel), columns, "Channel: ", "  "))
    # The box's own times: while its clock is unsynchronised they may be far off, and say
    # so. The DUE time is the publisher's and stays unmarked.
    approx = "" if ticket.clock_synced else "~"
    times = f"Time: {approx}{hhmm(ticket.created_at, tz)}"
    if ticket.printed_at is not None:
        times += f"  printed {approx}{hhmm(ticket.printed_at, tz)}"
    add("time", NORMAL, [("", times)] if ticket.clock_synced else
        [("", times), *wrap(UNSYNCED_NOTE, columns)])
    if ticket.due_at is not None:
        due = _local(ticket.due_at, tz)
        day = "" if due.date() == _local(ticket.created_at, tz).date() else due.strftime("%d.%m ")
        add("due", Style(size="large", bold=True, invert=True), wrap(f"DUE {day}{due:%H:%M}", wide))
    if ticket.reason:
        add("reason", BOLD, wrap(clean(ticket.reason), columns, "Reason: ", "  "))

    add("rule", NORMAL, [("", RULE * columns)])
    for item in ticket.items:
        _item(blocks, item, columns)
    if ticket.items:
        add("rule", NORMAL, [("", RULE * columns)])

    for extra in ticket.extra_lines:
        text = clean(extra)
        # A check line exactly as wide as the paper (the column ruler) must stay one line.
        lines = [("", text)] if len(text) <= columns else wrap(text, columns)
        add("extra", NORMAL, lines)
    if ticket.order_note:
        add("note", BOLD, wrap(clean(ticket.order_note), columns, "Note: ", "  "))

    add("job", _job_style(ticket.job_key, columns), [("", f"job {clean(ticket.job_key)}")])
    return blocks


def _job_style(job_key: str, columns: int) -> Style:
    """`job KEY` stays one line so its last text line always starts with `job ` and holds the
    whole key: font B when font A is too narrow; a key longer still is left for the printer
    to fold at the paper edge, while the bytes keep it as one line."""
    if len("job ") + len(job_key) <= columns:
        return NORMAL
    return Style(font_b=True)


def _item(blocks: list[Block], item: TicketItem, columns: int) -> None:
    def add(section: str, style: Style, lines: list[tuple[str, str]]) -> None:
        blocks.append(Block(section, style, tuple(lines)))

    add("item", BOLD, wrap(clean(item.name), columns, f"{item.qty}x "))
    sub = _INDENT + "  "
    for modifier in item.modifiers:
        add("modifier", NORMAL, wrap(clean(modifier), columns, _INDENT + "+ ", sub))
    if item.note:
        add("item_note", NORMAL, wrap(clean(item.note), columns, _INDENT + "! ", sub))
    if item.allergens:
        text = "ALLERGEN: " + ", ".join(clean(a) for a in item.allergens)
        add("allergen", Style(bold=True, invert=True), wrap(text, columns, _INDENT))
    if item.course is not None:
        add("course", NORMAL, [(_INDENT, f"COURSE {item.course}")])
