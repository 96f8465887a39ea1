"""A kitchen on one machine: broker, daemon and virtual printers, all real processes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.broker import Broker
from tests.daemon import DaemonProc, Publisher, write_config
from tests.vprinter import VPrinterProc


def job_key_of(job: dict[str, Any]) -> str | None:
    """The `job {job_key}` line: the ticket's last text line (CONTRACT section 5)."""
    lines = [line for line in job["text"] if line.strip()]
    if lines and lines[-1].strip().startswith("job "):
        return lines[-1].strip()[4:]
    return None


def has_line(job: dict[str, Any], text: str) -> bool:
    return any(text in line for line in job["text"])


def printed_once(tickets: list[dict[str, Any]], keys: set[str]) -> dict[str, int]:
    """Exactly `keys` reached paper, each at least once; a second copy of one only ever
    says MAY BE DUPLICATE (the crash rule). The copies of each key."""
    seen: dict[str, int] = {}
    for job in tickets:
        key = job_key_of(job)
        assert key is not None
        seen[key] = seen.get(key, 0) + 1
        if seen[key] > 1:
            assert has_line(job, "MAY BE DUPLICATE"), f"{key} printed twice unmarked"
    assert set(seen) == keys
    return seen


@dataclass
class Kitchen:
    daemon: DaemonProc
    printers: dict[str, VPrinterProc]
    pos: Publisher
    broker_port: int

    def tickets(self, printer: str) -> list[dict[str, Any]]:
        return self.printers[printer].jobs()

    def wait_tickets(self, printer: str, n: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        return self.printers[printer].wait_jobs(n, timeout=timeout)


@contextmanager
def kitchen(tmp_path: Path, broker: Broker, *, printers: tuple[str, ...] = ("hot", "bar"),
            stations: list[dict[str, Any]] | None = None, daemon_env: dict[str, str] | None = None,
            **config: Any) -> Iterator[Kitchen]:
    started: dict[str, VPrinterProc] = {}
    pos: Publisher | None = None
    d: DaemonProc | None = None
    try:
        for name in printers:
            started[name] = VPrinterProc(tmp_path / f"printer-{name}").start()
        stations = stations or [
            {"id": "grill", "printer": "hot", "categories": ["grill", "mains"]},
            {"id": "drinks", "printer": "bar", "categories": ["drinks"]},
        ]
        cfg = write_config(
            tmp_path / "station.yaml", broker_port=broker.port,
            printers=[{"id": n, "connection": p.address} for n, p in started.items()],
            stations=stations, **config)
        d = DaemonProc(cfg, env=daemon_env or {})
        d.start()
        pos = Publisher(broker.port)
        yield Kitchen(d, started, pos, broker.port)
    finally:
        if pos is not None:
            pos.close()
        if d is not None:
            d.kill()
        for printer in started.values():
            printer.stop()
