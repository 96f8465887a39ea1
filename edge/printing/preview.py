"""A ticket as a picture, for the operator page: the job's ticket as it would print now at its
station's printer (its columns and profile), laid out by the same code that prints it and
drawn line by line as the printer draws a line it has to raster. Only reads."""

from __future__ import annotations

import asyncio
import io
from typing import TYPE_CHECKING

from edge.clock import Clock
from edge.config.models import Config
from edge.orders.printjobs import ticket_of
from edge.orders.ticket import Ticket
from edge.printing.layout import font_b_columns, layout_ticket
from edge.printing.raster import draw_line, line_width_px, preview
from edge.store import Store

if TYPE_CHECKING:
    from PIL import Image

MARGIN = 16


class TicketPreview:
    """`png(job_key)`: the PNG of the job's ticket, or None for an unknown job."""

    def __init__(self, store: Store, cfg: Config, clock: Clock) -> None:
        self.store = store
        self.cfg = cfg
        self.clock = clock

    async def png(self, job_key: str) -> bytes | None:
        now = self.clock.now()
        found = await self.store.read(
            lambda c: ticket_of(c, job_key, now, self.cfg.printing.late_after, {},
                                self.clock.restamp))
        if found is None:
            return None
        _, ticket = found
        columns = 48
        try:
            station = self.cfg.station(ticket.station)
            columns = self.cfg.printer(station.printer).columns
        except KeyError:        # a station no longer configured: the default paper
            pass
        # PIL draws line by line: tens of ms a ticket, never on the event loop.
        return await asyncio.to_thread(render_png, ticket, columns)


def render_png(ticket: Ticket, columns: int) -> bytes:
    # Pillow only once a preview is asked for (the web page), not at the daemon's start.
    from PIL import Image

    width = line_width_px(columns, None)
    lines: list[Image.Image] = []
    for block in layout_ticket(ticket, columns):
        style = block.style
        cols = font_b_columns(columns) if style.font_b else columns
        for prefix, text in block.lines:
            line = draw_line(prefix, text, columns=cols, width_px=width,
                             double_width=style.size == "large",
                             double_height=style.size in ("large", "tall"),
                             bold=style.bold, invert=style.invert, center=style.center)
            lines.append(preview(line.image))
    height = sum(i.height for i in lines) + 2 * MARGIN
    paper = Image.new("L", (width + 2 * MARGIN, height), 255)
    y = MARGIN
    for image in lines:
        paper.paste(image, (MARGIN, y))
        y += image.height
    out = io.BytesIO()
    paper.save(out, format="PNG")
    return out.getvalue()


__all__ = ["TicketPreview", "render_png"]
