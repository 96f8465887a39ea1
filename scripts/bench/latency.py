"""Latency benchmark (issue 3): from publishing an order to the first byte of its ticket at
the printer, at a steady 20 and 100 events/s, next to a naive consumer.

    .venv/bin/python scripts/bench/latency.py [--rates 20:15,100:10] [--rounds 1]

Everything is real and owned by this script: a mosquitto on a free port, two virtual
printers (--no-png; one for the daemon, one for the naive consumer), the daemon as
`python -m edge run --config FILE`, and the naive consumer in its own process: an aiomqtt
subscriber that, for each message, parses the JSON, lays a ticket out with python-escpos
(Dummy) and writes it to its printer over one TCP connection. No database, nothing durable:
the lower bound of what printing on receipt costs.

The publisher (QoS 1, MQTT v5) sends one order.created every 1/rate seconds on a fixed
schedule and notes time.time() just before each publish. The virtual printer stamps every
job with the wall-clock time its first byte was read (GET /jobs `first_byte_at`); a job is
matched to its order by the ticket's last text line `job {order_id}/new/grill`. Latency =
first_byte_at - publish time. Phases alternate naive / daemon at each rate, and each
consumer's topics are its own (kitchen/lat-edge/..., kitchen/lat-naive/...).

The daemon makes every job durable before it prints: the event is committed (and only then
PUBACKed), the job claimed in a second transaction, and the ticket confirmed by the printer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    ROOT,
    Broker,
    DaemonRun,
    VPrinterProc,
    created_event,
    paho_client,
    stop_pid,
    summary,
    table,
    write_config,
)

EDGE_SITE = "lat-edge"
NAIVE_SITE = "lat-naive"
WARMUP = 5
DRAIN_TIMEOUT = 60.0


# -- the naive consumer (runs in its own process) ------------------------------------------

def naive_ticket(doc: dict[str, Any]) -> bytes:
    """A ticket like the daemon's, through python-escpos, straight from the message."""
    from escpos.printer import Dummy

    data = doc.get("data", {})
    order_id = str(doc.get("order_id"))
    p = Dummy()
    p._raw(b"\x1b@")
    p.set(align="center", bold=True, double_width=True, double_height=True)
    p.text("NEW\n")
    p.set(normal_textsize=True, bold=False, align="left")
    p.text("grill\n")
    fulfillment = data.get("fulfillment", {})
    table_no = fulfillment.get("table")
    where = f"table {table_no}" if table_no else str(fulfillment.get("type", ""))
    p.text(f"{data.get('display_id') or order_id}  {where}\n")
    p.text("-" * 48 + "\n")
    for item in data.get("items", []):
        p.set(bold=True)
        p.text(f"{item.get('qty')}x {item.get('name')}\n")
        p.set(bold=False)
        for modifier in item.get("modifiers") or []:
            p.text(f"   {modifier}\n")
        if item.get("note"):
            p.text(f"   note: {item['note']}\n")
    p.text(f"job {order_id}/new/grill\n")
    p.cut()
    return bytes(p.output)


async def naive_consumer(broker_port: int, printer_port: int, site: str) -> None:
    import aiomqtt

    reader, writer = await asyncio.open_connection("127.0.0.1", printer_port)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    async with aiomqtt.Client("127.0.0.1", broker_port, identifier=f"naive-{site}",
                              protocol=aiomqtt.ProtocolVersion.V5) as client:
        await client.subscribe(f"kitchen/{site}/orders/+/events", qos=1)
        print(json.dumps({"event": "naive_ready"}), flush=True)
        async for message in client.messages:
            payload = message.payload
            if not isinstance(payload, bytes | bytearray):
                continue
            writer.write(naive_ticket(json.loads(payload)))
            await writer.drain()
    del reader


# -- orchestration -------------------------------------------------------------------------

class Naive:
    def __init__(self, broker: Broker, printer: VPrinterProc) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--naive", "--broker-port", str(broker.port),
             "--printer-port", str(printer.port), "--site", NAIVE_SITE],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT)
        self.output: list[str] = []
        ready = threading.Event()

        def read() -> None:
            assert self.proc.stdout is not None
            for raw in self.proc.stdout:
                line = raw.decode(errors="replace").rstrip()
                self.output.append(line)
                if "naive_ready" in line:
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(20) or self.proc.poll() is not None:
            raise RuntimeError("naive consumer did not start: " + "\n".join(self.output))

    def stop(self) -> None:
        stop_pid(self.proc, timeout=10)


def order_of(job: dict[str, Any]) -> str | None:
    lines = [line.strip() for line in job["text"] if line.strip()]
    if lines and lines[-1].startswith("job "):
        return str(lines[-1][4:].split("/")[0])
    return None


def publish_paced(client: Any, site: str, tag: str, rate: float, count: int) -> dict[str, float]:
    """One order every 1/rate s on an absolute schedule; order_id -> time.time() at publish."""
    sent: dict[str, float] = {}
    infos = []
    start = time.monotonic() + 0.05
    for n in range(count):
        due = start + n / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        topic, payload, order_id = created_event(site, n, prefix=tag)
        sent[order_id] = time.time()
        infos.append(client.publish(topic, payload, qos=1))
    for info in infos:
        info.wait_for_publish(timeout=10)
    return sent


def _ts(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def breakdown(db: Path, tag: str, sent: dict[str, float],
              first_byte: dict[str, float]) -> dict[str, dict[str, float]]:
    """Where the daemon's time goes, from its own (millisecond) stamps: publish -> start of
    the ingest batch (events.received_at), -> start of the claim (print_jobs.sent_at),
    -> first byte at the printer."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        rows = conn.execute(
            "SELECT e.order_id, e.received_at, j.sent_at FROM events e "
            "JOIN print_jobs j ON j.order_id = e.order_id WHERE e.order_id LIKE ?",
            (f"{tag}-%",)).fetchall()
    finally:
        conn.close()
    parts: dict[str, list[float]] = {"publish->ingest": [], "ingest->claim": [],
                                     "claim->first byte": []}
    for order_id, received, claimed in rows:
        got, took = _ts(received), _ts(claimed)
        if order_id not in sent or order_id not in first_byte or got is None or took is None:
            continue
        parts["publish->ingest"].append((got - sent[order_id]) * 1000)
        parts["ingest->claim"].append((took - got) * 1000)
        parts["claim->first byte"].append((first_byte[order_id] - took) * 1000)
    return {k: summary(v) for k, v in parts.items()}


def phase(client: Any, printer: VPrinterProc, site: str, tag: str, rate: float,
          count: int, db: Path | None = None) -> dict[str, Any]:
    printer.reset()
    began = time.monotonic()
    sent = publish_paced(client, site, tag, rate, count)
    publish_s = time.monotonic() - began
    try:
        jobs = printer.wait_jobs(count, timeout=DRAIN_TIMEOUT)
    except TimeoutError:
        jobs = printer.jobs()
    first_byte: dict[str, float] = {}
    for job in jobs:
        order_id = order_of(job)
        if order_id in sent and order_id not in first_byte:
            first_byte[order_id] = job["first_byte_at"]
    latencies = [(at - sent[o]) * 1000 for o, at in first_byte.items()]
    return {"tag": tag, "rate": rate, "sent": count, "printed": len(latencies),
            "publish_s": publish_s, "ms": summary(latencies),
            "parts": breakdown(db, tag, sent, first_byte) if db is not None else None}


def warm_up(client: Any, printer: VPrinterProc, site: str) -> None:
    """The first tickets open connections and fill caches; they are not measured."""
    printer.reset()
    publish_paced(client, site, "warm", 20, WARMUP)
    printer.wait_jobs(WARMUP, timeout=30)


def main_runs(args: argparse.Namespace) -> int:
    rates = []
    for part in args.rates.split(","):
        rate_s, _, secs = part.partition(":")
        rates.append((float(rate_s), float(secs or 10)))
    results: list[dict[str, Any]] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        workdir = Path(args.workdir or tmp)
        extra = "".join(f"{line}\n" for line in args.broker_conf)
        broker = Broker(workdir / "broker", extra_conf=extra).start()
        stack: list[Any] = []
        try:
            edge_printer = VPrinterProc(workdir / "printer-edge", png=False).start()
            stack.append(edge_printer)
            naive_printer = VPrinterProc(workdir / "printer-naive", png=False).start()
            stack.append(naive_printer)
            cfg = write_config(workdir / "edge" / "station.yaml", site=EDGE_SITE,
                               broker_port=broker.port, client_id="bench-lat-edge",
                               printer=edge_printer.address, state_dir=workdir / "edge" / "state",
                               log_level=args.log_level)
            daemon = DaemonRun(cfg, workdir / "edge" / "daemon.log")
            if args.py_spy:
                daemon.profile_to = workdir / "edge" / "py-spy.txt"
            daemon.start()
            stack.append(daemon)
            naive = Naive(broker, naive_printer)
            stack.append(naive)
            client = paho_client(broker.port, "bench-lat-pos")
            try:
                warm_up(client, edge_printer, EDGE_SITE)
                warm_up(client, naive_printer, NAIVE_SITE)
                for round_no in range(1, args.rounds + 1):
                    for rate, secs in rates:
                        count = int(rate * secs)
                        for who, printer, site in (("naive", naive_printer, NAIVE_SITE),
                                                   ("daemon", edge_printer, EDGE_SITE)):
                            tag = f"{who[0]}{int(rate)}r{round_no}"
                            r = phase(client, printer, site, tag, rate, count,
                                      daemon.db if who == "daemon" else None)
                            r.update(who=who, round=round_no)
                            results.append(r)
                            ms = r["ms"]
                            print(f"round {round_no} {who:6s} {rate:g}/s: {r['printed']}/{count} "
                                  f"printed, p50 {ms['p50']:.1f} ms, p99 {ms['p99']:.1f} ms, "
                                  f"max {ms['max']:.1f} ms", flush=True)
            finally:
                client.loop_stop()
                client.disconnect()
        finally:
            for item in reversed(stack):
                item.stop()
            broker.stop()

    print()
    print(f"publish -> first ticket byte at the virtual printer (--no-png), milliseconds; "
          f"wall time {time.monotonic() - started:.0f}s")
    rows = []
    for r in results:
        ms = r["ms"]
        rows.append([r["round"], r["who"], f"{r['rate']:g}/s", f"{r['printed']}/{r['sent']}",
                     f"{ms['p50']:.1f}", f"{ms['p90']:.1f}", f"{ms['p99']:.1f}",
                     f"{ms['max']:.1f}", f"{ms['mean']:.1f}"])
    print(table(["round", "consumer", "rate", "printed", "p50", "p90", "p99", "max", "mean"],
                rows))
    print()
    ratio_rows = []
    for rate, _ in rates:
        for round_no in range(1, args.rounds + 1):
            d = next(r for r in results if r["who"] == "daemon" and r["rate"] == rate
                     and r["round"] == round_no)
            n = next(r for r in results if r["who"] == "naive" and r["rate"] == rate
                     and r["round"] == round_no)
            aim = "yes" if rate != 20 or d["ms"]["p99"] < 25 else "NO"
            ratio_rows.append([f"{rate:g}/s", round_no,
                         f"{d['ms']['p50'] / n['ms']['p50']:.2f}",
                         f"{d['ms']['p99'] / n['ms']['p99']:.2f}",
                         "yes" if d["ms"]["p99"] <= 1.5 * n["ms"]["p99"] else "NO",
                         aim if rate == 20 else "-"])
    rows = []
    for r in results:
        for part, ms in (r["parts"] or {}).items():
            rows.append([r["round"], f"{r['rate']:g}/s", part, f"{ms['p50']:.1f}",
                         f"{ms['p90']:.1f}", f"{ms['p99']:.1f}", f"{ms['max']:.1f}"])
    if rows:
        print("daemon, where the time goes (its own millisecond stamps; "
              "ingest = start of the batch's transaction, claim = start of _print_one)")
        print(table(["round", "rate", "segment", "p50", "p90", "p99", "max"], rows))
        print()
    print("daemon / naive (aim: p99 within 1.5x of naive; p99 < 25 ms at 20/s)")
    print(table(["rate", "round", "p50 ratio", "p99 ratio", "p99 <= 1.5x", "p99 < 25 ms"],
                ratio_rows))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--rates", default="20:15,100:10",
                        help="RATE:SECONDS pairs, comma separated")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    parser.add_argument("--py-spy", action="store_true",
                        help="record the daemon with py-spy (GIL holder only, raw stacks in "
                             "WORKDIR/edge/py-spy.txt); slows it down")
    parser.add_argument("--broker-conf", action="append", default=[], metavar="LINE",
                        help="a line appended to the benchmark's mosquitto.conf (repeatable), "
                             "e.g. 'set_tcp_nodelay true'")
    parser.add_argument("--workdir", help="keep logs and databases here (default: a temp dir)")
    # Internal: this file runs itself as the naive consumer's process.
    parser.add_argument("--naive", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--broker-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--printer-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--site", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.naive:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(naive_consumer(args.broker_port, args.printer_port, args.site))
        return 0
    return main_runs(args)


if __name__ == "__main__":
    sys.exit(main())
