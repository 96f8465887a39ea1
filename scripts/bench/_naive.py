"""The naive consumer the benchmarks compare kitchen-edge with: what a few lines of aiomqtt and
python-escpos do with no durability at all.

    python scripts/bench/_naive.py --broker-port P --site S \\
        --station grill:PORT:grill,mains [--station bar:PORT:drinks] [--transport dummy]

It subscribes to kitchen/{site}/orders/+/events (QoS 1, paho acknowledges on receipt), and for
each message parses the JSON, splits the items over the stations by category (items of no
listed category go to the first station) and prints one ticket per station that has items:
kind, station, order and table, items with modifiers and notes, `job {order_id}/new/{station}`,
cut. No database, no status query, no retry: the lower bound of what printing costs.

Transports:
- `dummy`: the ticket is laid out with python-escpos `Dummy` and written to the printer in one
  write over a TCP connection with TCP_NODELAY (the fastest first byte after the layout).
- `network`: python-escpos `Network` printers, each command sent as it is called
  (blocking sendall), as a naive script would use the library.

It imports only what it uses, so its RSS is a fair baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import sys
from typing import Any


def _lay_out(p: Any, doc: dict[str, Any], station: str, items: list[dict[str, Any]]) -> None:
    data = doc.get("data", {})
    order_id = str(doc.get("order_id"))
    p._raw(b"\x1b@")
    p.set(align="center", bold=True, double_width=True, double_height=True)
    p.text("NEW\n")
    p.set(normal_textsize=True, bold=False, align="left")
    p.text(f"{station}\n")
    fulfillment = data.get("fulfillment", {})
    table_no = fulfillment.get("table")
    where = f"table {table_no}" if table_no else str(fulfillment.get("type", ""))
    p.text(f"{data.get('display_id') or order_id}  {where}\n")
    p.text("-" * 48 + "\n")
    for item in items:
        p.set(bold=True)
        p.text(f"{item.get('qty')}x {item.get('name')}\n")
        p.set(bold=False)
        for modifier in item.get("modifiers") or []:
            p.text(f"   {modifier}\n")
        if item.get("note"):
            p.text(f"   note: {item['note']}\n")
    p.text(f"job {order_id}/new/{station}\n")
    p.cut()


def naive_ticket(doc: dict[str, Any], station: str = "grill",
                 items: list[dict[str, Any]] | None = None) -> bytes:
    """A ticket like the daemon's, through python-escpos Dummy, straight from the message."""
    from escpos.printer import Dummy

    p = Dummy()
    _lay_out(p, doc, station, doc.get("data", {}).get("items", []) if items is None else items)
    return bytes(p.output)


def split_items(doc: dict[str, Any],
                stations: dict[str, list[str]]) -> dict[str, list[dict[str, Any]]]:
    """station -> its items; an item of no listed category goes to the first station."""
    first = next(iter(stations))
    out: dict[str, list[dict[str, Any]]] = {}
    for item in doc.get("data", {}).get("items", []):
        station = next((s for s, cats in stations.items() if item.get("category") in cats),
                       first)
        out.setdefault(station, []).append(item)
    return out


async def consume(broker_port: int, site: str, stations: dict[str, tuple[int, list[str]]],
                  transport: str) -> None:
    import aiomqtt

    categories = {s: cats for s, (_, cats) in stations.items()}
    writers: dict[str, asyncio.StreamWriter] = {}
    printers: dict[str, Any] = {}
    for station, (port, _) in stations.items():
        if transport == "network":
            from escpos.printer import Network

            printer = Network("127.0.0.1", port=port, timeout=10)
            printer.open()
            printers[station] = printer
        else:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP,
                                                       socket.TCP_NODELAY, 1)
            writers[station] = writer
    async with aiomqtt.Client("127.0.0.1", broker_port, identifier=f"naive-{site}",
                              protocol=aiomqtt.ProtocolVersion.V5) as client:
        await client.subscribe(f"kitchen/{site}/orders/+/events", qos=1)
        print(json.dumps({"event": "naive_ready"}), flush=True)
        async for message in client.messages:
            payload = message.payload
            if not isinstance(payload, bytes | bytearray):
                continue
            doc = json.loads(payload)
            for station, items in split_items(doc, categories).items():
                if transport == "network":
                    _lay_out(printers[station], doc, station, items)
                else:
                    writers[station].write(naive_ticket(doc, station, items))
                    await writers[station].drain()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--broker-port", type=int, required=True)
    parser.add_argument("--site", required=True)
    parser.add_argument("--station", action="append", required=True,
                        metavar="ID:PORT:CATEGORY,...")
    parser.add_argument("--transport", choices=["dummy", "network"], default="dummy")
    args = parser.parse_args()
    stations: dict[str, tuple[int, list[str]]] = {}
    for spec in args.station:
        station, port, cats = spec.split(":", 2)
        stations[station] = (int(port), [c for c in cats.split(",") if c])
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(consume(args.broker_port, args.site, stations, args.transport))
    return 0


if __name__ == "__main__":
    sys.exit(main())
