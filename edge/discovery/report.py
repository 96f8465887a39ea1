"""`kitchen-edge printers discover`: find printers, say how, and print config lines to paste.

mDNS is browsed for `timeout` seconds; USB is scanned by `edge.discovery.usb.scan`, imported
only when the command runs, so a machine without libusb still lists its network printers.
"""

from __future__ import annotations

import asyncio
import importlib
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

import structlog

from edge.discovery.mdns import RAW_TYPE, MdnsBrowser, ServiceRecord, type_label

__all__ = ["discover", "format_table"]

log = structlog.get_logger(__name__)

RAW_PORT = 9100


def discover(
    timeout: float = 3.0,
    *,
    interfaces: list[str] | None = None,
    usb_backend: object | None = None,
) -> list[dict[str, Any]]:
    """Every printer found by an mDNS browse of `timeout` seconds and a USB scan.

    Each entry: how ('mdns' | 'usb'), name, id (a config id suggestion), address, port, model,
    state ('online' when the spooler can print to it as found, 'not raw' for a network
    printer without a raw port, 'not ESC/POS' for a USB printer of another command set),
    connection (the config URL; None when there is none to give), services and txt (mDNS),
    and the identifying details of the source.
    """
    records = asyncio.run(_browse(timeout, interfaces))
    found = _from_mdns(records) + _from_usb(usb_backend)
    _assign_ids(found)
    return found


async def _browse(seconds: float, interfaces: list[str] | None) -> list[ServiceRecord]:
    # No silence probing: a browse this short only collects what answers.
    browser = MdnsBrowser(interfaces=interfaces, refresh_interval=3600.0)
    await browser.start()
    try:
        await asyncio.sleep(seconds)
        return browser.records()
    finally:
        await browser.stop()


def _model(txt: dict[str, str]) -> str:
    maker, model = txt.get("usb_MFG", "").strip(), txt.get("usb_MDL", "").strip()
    if model:
        return f"{maker} {model}".strip()
    product = txt.get("product", "").strip().strip("()").strip()
    return product or txt.get("ty", "").strip()


def _from_mdns(records: Iterable[ServiceRecord]) -> list[dict[str, Any]]:
    by_name: dict[str, list[ServiceRecord]] = {}
    for record in records:
        by_name.setdefault(record.service_name.casefold(), []).append(record)
    found: list[dict[str, Any]] = []
    for group in by_name.values():
        raw = next((r for r in group if r.service_type == RAW_TYPE), None)
        best = raw or group[0]
        txt: dict[str, str] = {}
        for record in reversed(group):  # the raw record's TXT wins where keys clash
            txt.update(record.txt)
        entry: dict[str, Any] = {
            "how": "mdns",
            "name": best.service_name,
            "address": best.address,
            "port": best.port,
            "model": _model(txt),
            "services": {type_label(r.service_type): r.port for r in group},
            "txt": txt,
            "note": txt.get("note", ""),
        }
        if raw is not None:
            entry["state"] = "online"
            entry["connection"] = "mdns://" + quote(raw.service_name, safe="")
        else:
            # LPD/IPP only: most such printers also take raw jobs on 9100, but nothing
            # advertised says so, hence a tcp:// suggestion the operator must confirm.
            entry["state"] = "not raw"
            entry["connection"] = None
            entry["suggestion"] = f"tcp://{best.address}:{RAW_PORT}" if best.address else None
        found.append(entry)
    return found


def _from_usb(backend: object | None) -> list[dict[str, Any]]:
    try:
        usb = importlib.import_module("edge.discovery.usb")
    except ModuleNotFoundError as exc:
        if exc.name != "edge.discovery.usb":
            raise
        log.warning("usb_scan_unavailable", reason="edge.discovery.usb is not installed")
        return []
    try:
        printers = usb.scan(backend=backend)
    except Exception as exc:  # no libusb, no permission: the network printers still list
        log.warning("usb_scan_failed", error=f"{type(exc).__name__}: {exc}")
        return []
    found: list[dict[str, Any]] = []
    for info in printers:
        maker = (info.manufacturer or "").strip()
        model = (info.model or "").strip()
        ids = f"{info.vendor_id:04x}:{info.product_id:04x}"
        found.append(
            {
                "how": "usb",
                "name": f"{maker} {model}".strip() or f"USB {ids}",
                "address": f"usb bus {info.bus} device {info.address}",
                "port": None,
                "model": model or ids,
                "state": _usb_state(info),
                "connection": info.connection if info.escpos else None,
                "usb": {
                    "vendor_id": ids.split(":")[0],
                    "product_id": ids.split(":")[1],
                    "serial": info.serial,
                    "command_set": info.command_set,
                },
            }
        )
    return found


def _usb_state(info: Any) -> str:
    state = "online" if info.escpos else "not ESC/POS"
    problem = getattr(info, "problem", None)
    return f"{state} ({problem})" if problem else state


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:56] or "printer"


def _assign_ids(found: list[dict[str, Any]]) -> None:
    taken: set[str] = set()
    for entry in found:
        base = _slug(entry["name"])
        candidate, n = base, 2
        while candidate in taken:
            candidate, n = f"{base}-{n}", n + 1
        taken.add(candidate)
        entry["id"] = candidate


def format_table(found: list[dict[str, Any]]) -> str:
    """A table of what was found, then the `printers:` lines to paste into the config file."""
    if not found:
        return (
            "No printers found.\n"
            "Is the printer on and on this network? mDNS does not cross routers or VLANs; "
            "a printer with a fixed address can be added as tcp://ADDRESS:9100.\n"
        )
    header = ("HOW", "NAME", "ADDRESS", "MODEL", "STATE")
    rows = [
        (
            e["how"],
            e["name"],
            f"{e['address']}:{e['port']}" if e.get("port") else str(e.get("address") or "-"),
            e.get("model") or "-",
            e["state"],
        )
        for e in found
    ]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]

    lines += ["", "Lines to paste into the config file:", "", "printers:"]
    for e in found:
        if e.get("connection"):
            lines += [f"  - id: {e['id']}", f"    connection: {e['connection']}"]
        elif e.get("suggestion"):
            lines += [
                f"  # {e['name']} advertises no raw port ({', '.join(e['services'])});",
                "  # if it takes ESC/POS on port 9100:",
                f"  # - id: {e['id']}",
                f"  #   connection: {e['suggestion']}",
            ]
        else:
            lines.append(f"  # {e['name']}: {e['state']}, cannot be printed to")
    return "\n".join(lines) + "\n"
