"""Which station prints which item, and the job key of each (station, change) pair."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from typing import Protocol

from edge.config.models import StationConfig


class Routable(Protocol):
    @property
    def line_id(self) -> str: ...

    @property
    def category(self) -> str | None: ...


def stations_for(category: str | None, stations: Sequence[StationConfig],
                 default_station: str | None) -> list[str]:
    """Every station listing the category, every all-items station; else the default."""
    matched = [s.id for s in stations if category is not None and category in s.categories]
    if not matched and default_station is not None:
        matched = [default_station]
    for station in stations:
        if station.all and station.id not in matched:
            matched.append(station.id)
    return matched


def route(items: Iterable[Routable], stations: Sequence[StationConfig],
          default_station: str | None) -> dict[str, list[str]]:
    """station_id -> line_ids, in item order, stations in config order."""
    order = {s.id: i for i, s in enumerate(stations)}
    out: dict[str, list[str]] = {}
    for item in items:
        for station in stations_for(item.category, stations, default_station):
            out.setdefault(station, []).append(item.line_id)
    return dict(sorted(out.items(), key=lambda kv: order.get(kv[0], len(order))))


_UNSAFE = re.compile(r"[^A-Za-z0-9._:-]")


def _part(text: str) -> str:
    """Keep job keys printable and unambiguous: '/' separates parts, so escape it."""
    return _UNSAFE.sub(lambda m: f"%{ord(m.group()):02X}", text)


def job_key(order_id: str, change: str, station_id: str) -> str:
    """Deterministic from the order, the change and the station (CONTRACT section 5).

    order_id and station_id are already restricted to safe characters; the change part
    (a batch_id, a line set) is escaped so two different changes never share a key.
    """
    return f"{order_id}/{_part(change)}/{station_id}"


def line_set_ref(prefix: str, line_ids: Iterable[str]) -> str:
    """A change named by the set of lines it touches (voids): same set, same key."""
    digest = hashlib.sha256("\x1f".join(sorted(set(line_ids))).encode()).hexdigest()[:12]
    return f"{prefix}-{digest}"
