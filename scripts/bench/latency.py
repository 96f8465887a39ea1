"""Latency benchmark (issues 3 and 17): from publishing an order to the first byte of its
ticket(s) at the printer(s), at a steady rate, next to a naive consumer in the same run.

    .venv/bin/python scripts/bench/latency.py [--rates 20:15,100:10] [--rounds 1]
    .venv/bin/python scripts/bench/latency.py --kitchen [--rates 20:15,100:3]

Everything is real and owned by this script: a mosquitto on a free port, virtual printers
(--no-png; the daemon's and the naive consumer's own), the daemon as
`python -m edge run --config FILE`, and the naive consumer (scripts/bench/_naive.py) in its
own process: an aiomqtt subscriber that, for each message, parses the JSON, lays each ticket
out with python-escpos (Dummy) and writes it to its printer over one TCP connection. No
database, nothing durable: the lower bound of what printing on receipt costs.

Two configurations:
- default (issue 3): one printer, one station that takes every item; one ticket per order.
- `--kitchen` (issue 17): two printers, two stations (grill: grill and mains; bar: drinks),
  orders of three lines over both (two tickets per order), an upstream (the fake upstream,
  `python -m edge.upstream.fake`, in its own process) configured and syncing, and the HTTP
  listener on. The naive consumer prints the same two tickets to its own two printers.
  Default: 300 orders at 20/s and 300 at 100/s. With `--marketplace-polling` the daemon also
  runs a marketplace connector polling the fake marketplace (its own process) every second;
  with `--screens N`, N clients hold the kitchen screens' event streams open throughout.

The publisher (QoS 1, MQTT v5) sends one order.created every 1/rate seconds on a fixed
schedule and notes time.time() just before each publish. The virtual printer stamps every
job with the wall-clock time its first byte was read (GET /jobs `first_byte_at`); a job is
matched to its order by its job key (the ticket's last text line, `job {order_id}/new/{station}`).
Latency = first_byte_at - publish time, per ticket; "first ticket" is the earlier of an
order's tickets. Phases alternate naive / daemon at each rate, and each consumer's topics are
its own (kitchen/lat-edge/..., kitchen/lat-naive/...).

The daemon makes every job durable before it prints: the event is committed (and only then
PUBACKed), the job claimed in a second transaction, and the ticket confirmed by the printer.
"""

from __future__ import annotations

import argparse
import json
import os
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

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    KITCHEN_STATIONS,
    ROOT,
    Broker,
    Consumer,
    DaemonRun,
    FakeUpstreamProc,
    NaiveProc,
    VPrinterProc,
    created_event,
    free_port,
    kitchen_config,
    kitchen_event,
    outbox_pending,
    paho_client,
    proc_sample,
    start_printer,
    stop_on_signals,
    stop_pid,
    summary,
    table,
    write_config,
)

EDGE_SITE = "lat-edge"
NAIVE_SITE = "lat-naive"
WARMUP = 5
DRAIN_TIMEOUT = 60.0

# The marketplace connector's poll interval in the bench: the shipped default is 15 s; every
# second is a heavier load than a kitchen sees, on purpose.
MARKET_POLL_SECONDS = 1.0


class MarketplaceProc:
    """The seed 001 fake marketplace (`python -m edge.connectors.marketplace.fake`) in its own
    process, for the daemon's marketplace connector to poll."""

    def __init__(self, workdir: Path, token: str = "bench-market-token") -> None:
        self.workdir = workdir
        self.token_file = workdir / "market.token"
        self.token = token
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.control_url = ""

    def start(self) -> MarketplaceProc:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.token_file.write_text(self.token)
        os.chmod(self.token_file, 0o600)     # the daemon's config check wants a secret's mode
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge.connectors.marketplace.fake",
             "--token-file", str(self.token_file)], stdout=subprocess.PIPE, cwd=ROOT)
        assert self.proc.stdout is not None
        info = json.loads(self.proc.stdout.readline())
        self.url = str(info["url"])
        self.control_url = f"http://127.0.0.1:{info['control_port']}"
        return self

    def polls(self) -> int:
        """How many times the connector has asked for new orders so far."""
        import httpx

        answer = httpx.get(self.control_url + "/requests", timeout=10).raise_for_status().json()
        listed = answer["data"]
        return sum(1 for r in listed if str(r.get("path", "")).endswith("/get-current"))

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        stop_pid(proc, timeout=10)


class Screens:
    """N kitchen screens: clients holding `GET /kds/{station}/events` (server-sent events)
    open, one thread each, reading everything the daemon sends them."""

    def __init__(self, port: int, stations: list[str], count: int) -> None:
        self.port = port
        self.stations = [stations[n % len(stations)] for n in range(count)]
        self.events = [0] * count
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._socks: list[socket.socket] = []

    def start(self) -> Screens:
        for n, station in enumerate(self.stations):
            sock = self._connect()
            sock.sendall(f"GET /kds/{station}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         f"Accept: text/event-stream\r\n\r\n".encode())
            head = sock.recv(65536)
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"screen {station}: {head[:200]!r}")
            self.events[n] += head.count(b"\nevent: ")
            self._socks.append(sock)
            thread = threading.Thread(target=self._read, args=(n, sock), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _connect(self, timeout: float = 30.0) -> socket.socket:
        """The daemon's HTTP listener may still be starting."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return socket.create_connection(("127.0.0.1", self.port), timeout=10)
            except ConnectionRefusedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _read(self, n: int, sock: socket.socket) -> None:
        sock.settimeout(0.5)
        while not self._stop.is_set():
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            self.events[n] += data.count(b"event: ")

    def total(self) -> int:
        return sum(self.events)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=2)
        for sock in self._socks:
            sock.close()


def add_marketplace(cfg: Path, market: MarketplaceProc) -> None:
    """The daemon's config gets a marketplace connector polling the fake every second."""
    doc = yaml.safe_load(cfg.read_text())
    doc["marketplaces"] = [{"id": "yemek", "url": market.url,
                            "token_file": str(market.token_file),
                            "poll_seconds": MARKET_POLL_SECONDS}]
    cfg.write_text(yaml.safe_dump(doc, sort_keys=False))


def job_order(job_key: str | None) -> str | None:
    """The order id of a job key `{order_id}/{change}/{station}`."""
    if not job_key or job_key.count("/") < 2:
        return None
    return job_key.split("/")[0]


def publish_paced(client: Any, site: str, tag: str, rate: float, count: int,
                  kitchen: bool) -> dict[str, float]:
    """One order every 1/rate s on an absolute schedule; order_id -> time.time() at publish."""
    make = kitchen_event if kitchen else created_event
    sent: dict[str, float] = {}
    infos = []
    start = time.monotonic() + 0.05
    for n in range(count):
        due = start + n / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        topic, payload, order_id = make(site, n, prefix=tag)
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
    """Where the daemon's time goes, per ticket, from its own (millisecond) stamps: publish
    -> start of the ingest batch (events.received_at), -> start of the claim
    (print_jobs.sent_at), -> first byte at the printer."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        rows = conn.execute(
            "SELECT j.job_key, e.order_id, e.received_at, j.sent_at FROM events e "
            "JOIN print_jobs j ON j.order_id = e.order_id WHERE e.order_id LIKE ?",
            (f"{tag}-%",)).fetchall()
    finally:
        conn.close()
    parts: dict[str, list[float]] = {"publish->ingest": [], "ingest->claim": [],
                                     "claim->first byte": []}
    for job_key, order_id, received, claimed in rows:
        got, took = _ts(received), _ts(claimed)
        if order_id not in sent or job_key not in first_byte or got is None or took is None:
            continue
        parts["publish->ingest"].append((got - sent[order_id]) * 1000)
        parts["ingest->claim"].append((took - got) * 1000)
        parts["claim->first byte"].append((first_byte[job_key] - took) * 1000)
    return {k: summary(v) for k, v in parts.items()}


def phase(client: Any, consumer: Consumer, tag: str, rate: float, count: int,
          kitchen: bool, upstream: FakeUpstreamProc | None,
          market: MarketplaceProc | None = None,
          screens: Screens | None = None) -> dict[str, Any]:
    for printer in consumer.printers:
        printer.reset()
    accepted_before = upstream.state()["accepted"] if upstream is not None else 0
    polls_before = market.polls() if market is not None else 0
    screen_events_before = screens.total() if screens is not None else 0
    cpu_before = proc_sample(consumer.pid)
    began = time.monotonic()
    sent = publish_paced(client, consumer.site, tag, rate, count, kitchen)
    publish_s = time.monotonic() - began
    jobs: list[dict[str, Any]] = []
    deadline = time.monotonic() + DRAIN_TIMEOUT
    for printer in consumer.printers:
        try:
            jobs += printer.wait_jobs(count, timeout=max(1.0, deadline - time.monotonic()))
        except TimeoutError:
            jobs += printer.jobs()
    cpu_after = proc_sample(consumer.pid)
    first_byte: dict[str, float] = {}
    for job in jobs:
        key = job.get("job_key")
        if job_order(key) in sent and key not in first_byte:
            first_byte[key] = job["first_byte_at"]
    per_ticket = [(at - sent[str(job_order(k))]) * 1000 for k, at in first_byte.items()]
    first_of_order: dict[str, float] = {}
    for key, at in first_byte.items():
        order_id = str(job_order(key))
        first_of_order[order_id] = min(at, first_of_order.get(order_id, at))
    per_order = [(at - sent[o]) * 1000 for o, at in first_of_order.items()]
    result: dict[str, Any] = {
        "tag": tag, "rate": rate, "sent": count, "tickets_expected": count * len(
            consumer.printers), "printed": len(per_ticket), "publish_s": publish_s,
        "ms": summary(per_ticket), "first_ms": summary(per_order),
        "cpu_ms_per_order": (cpu_after.cpu_s - cpu_before.cpu_s) * 1000 / count,
        "parts": (breakdown(consumer.db, tag, sent, first_byte)
                  if consumer.db is not None else None),
    }
    if upstream is not None and consumer.db is not None:
        result["upstream_accepted"] = upstream.state()["accepted"] - accepted_before
        result["outbox_pending_after"] = outbox_pending(consumer.db)
    if market is not None:
        result["marketplace_polls"] = market.polls() - polls_before
    if screens is not None:
        result["screen_events"] = screens.total() - screen_events_before
    return result


def warm_up(client: Any, consumer: Consumer, kitchen: bool) -> None:
    """The first tickets open connections and fill caches; they are not measured."""
    for printer in consumer.printers:
        printer.reset()
    publish_paced(client, consumer.site, "warm", 20, WARMUP, kitchen)
    for printer in consumer.printers:
        printer.wait_jobs(WARMUP, timeout=30)


def wait_syncing(upstream: FakeUpstreamProc, timeout: float = 30.0) -> int:
    """The upstream has taken records from the daemon: the sender is up and syncing."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        accepted = int(upstream.state()["accepted"])
        if accepted > 0:
            return accepted
        time.sleep(0.1)
    raise TimeoutError("the fake upstream accepted nothing from the daemon")


def parse_rates(text: str) -> list[tuple[float, float]]:
    rates = []
    for part in text.split(","):
        rate_s, _, secs = part.partition(":")
        rates.append((float(rate_s), float(secs or 10)))
    return rates


def main_runs(args: argparse.Namespace) -> int:
    rates = parse_rates(args.rates or ("20:15,100:3" if args.kitchen else "20:15,100:10"))
    results: list[dict[str, Any]] = []
    started = time.monotonic()
    kitchen = bool(args.kitchen)
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        workdir = Path(args.workdir or tmp)
        extra = "".join(f"{line}\n" for line in args.broker_conf)
        broker = Broker(workdir / "broker", extra_conf=extra).start()
        stack: list[Any] = []
        upstream: FakeUpstreamProc | None = None
        market: MarketplaceProc | None = None
        screens: Screens | None = None
        try:
            def printer(name: str) -> VPrinterProc:
                return start_printer(workdir, name, stack)

            if kitchen:
                edge_printers = {pid: printer(f"edge-{pid}")
                                 for pid, _ in KITCHEN_STATIONS.values()}
                naive_printers = {sid: printer(f"naive-{sid}") for sid in KITCHEN_STATIONS}
                upstream = FakeUpstreamProc(workdir / "upstream").start()
                stack.append(upstream)
                cfg = kitchen_config(
                    workdir / "edge" / "station.yaml", site=EDGE_SITE,
                    broker_port=broker.port, client_id="bench-lat-edge",
                    printers={pid: p.address for pid, p in edge_printers.items()},
                    state_dir=workdir / "edge" / "state", upstream_url=upstream.url,
                    token_file=upstream.token_file, http_port=free_port(),
                    log_level=args.log_level)
                naive_stations = {sid: (naive_printers[sid].port, cats)
                                  for sid, (_, cats) in KITCHEN_STATIONS.items()}
                if args.marketplace_polling:
                    market = MarketplaceProc(workdir / "market").start()
                    stack.append(market)
                    add_marketplace(cfg, market)
            else:
                edge_printers = {"hot": printer("edge")}
                naive_printers = {"grill": printer("naive")}
                cfg = write_config(workdir / "edge" / "station.yaml", site=EDGE_SITE,
                                   broker_port=broker.port, client_id="bench-lat-edge",
                                   printer=edge_printers["hot"].address,
                                   state_dir=workdir / "edge" / "state",
                                   log_level=args.log_level)
                naive_stations = {"grill": (naive_printers["grill"].port, ["grill", "mains"])}
            daemon = DaemonRun(cfg, workdir / "edge" / "daemon.log",
                               profile_args=tuple(args.py_spy_args.split()))
            daemon.start()
            stack.append(daemon)
            if args.screens:
                http_port = int(yaml.safe_load(cfg.read_text())["http"]["listen"]
                                .rpartition(":")[2])
                screens = Screens(http_port, list(KITCHEN_STATIONS), args.screens).start()
                stack.append(screens)
            naive_proc = NaiveProc(broker.port, NAIVE_SITE, naive_stations)
            stack.append(naive_proc)
            edge = Consumer("daemon", EDGE_SITE, list(edge_printers.values()),
                            pid=daemon.proc.pid if daemon.proc else 0, db=daemon.db)
            naive = Consumer("naive", NAIVE_SITE, list(naive_printers.values()),
                             pid=naive_proc.pid)
            client = paho_client(broker.port, "bench-lat-pos")
            try:
                warm_up(client, edge, kitchen)
                warm_up(client, naive, kitchen)
                if upstream is not None:
                    wait_syncing(upstream)
                for round_no in range(1, args.rounds + 1):
                    for rate, secs in rates:
                        count = int(rate * secs)
                        for consumer in (naive, edge):
                            tag = f"{consumer.who[0]}{int(rate)}r{round_no}"
                            spy_to = workdir / "edge" / f"py-spy-{tag}.txt"
                            if args.py_spy and consumer is edge:
                                daemon.profile_start(spy_to)
                            try:
                                mine = consumer is edge
                                r = phase(client, consumer, tag, rate, count, kitchen,
                                          upstream if mine else None,
                                          market if mine else None,
                                          screens if mine else None)
                            finally:
                                if args.py_spy and consumer is edge:
                                    daemon.profile_stop()
                                    print(f"py-spy: {spy_to}", flush=True)
                            r.update(who=consumer.who, round=round_no)
                            results.append(r)
                            ms = r["ms"]
                            print(f"round {round_no} {consumer.who:6s} {rate:g}/s: "
                                  f"{r['printed']}/{r['tickets_expected']} tickets, "
                                  f"p50 {ms['p50']:.1f} ms, p99 {ms['p99']:.1f} ms, "
                                  f"max {ms['max']:.1f} ms, "
                                  f"CPU {r['cpu_ms_per_order']:.1f} ms/order", flush=True)
            finally:
                client.loop_stop()
                client.disconnect()
        finally:
            for item in reversed(stack):
                item.stop()
            broker.stop()

    wall = time.monotonic() - started
    report(args, kitchen, rates, results, wall)
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"kitchen": kitchen, "rates": rates, "rounds": args.rounds, "wall_s": wall,
             "results": results}, indent=1))
    return 0


def report(args: argparse.Namespace, kitchen: bool, rates: list[tuple[float, float]],
           results: list[dict[str, Any]], wall: float) -> None:
    print()
    what = ("issue 17 kitchen: 2 printers, 2 stations, upstream syncing, HTTP on"
            + (", a marketplace polled" if args.marketplace_polling else "")
            + (f", {args.screens} screens open" if args.screens else "")
            + "; per ticket" if kitchen else "one printer, one ticket per order")
    print(f"publish -> first ticket byte at the virtual printer (--no-png), milliseconds "
          f"({what}); wall time {wall:.0f}s")
    rows = []
    for r in results:
        ms, first = r["ms"], r["first_ms"]
        rows.append([r["round"], r["who"], f"{r['rate']:g}/s",
                     f"{r['printed']}/{r['tickets_expected']}",
                     f"{ms['p50']:.1f}", f"{ms['p90']:.1f}", f"{ms['p99']:.1f}",
                     f"{ms['max']:.1f}", f"{ms['mean']:.1f}",
                     f"{first['p50']:.1f}/{first['p99']:.1f}" if kitchen else "-",
                     f"{r['cpu_ms_per_order']:.1f}",
                     r.get("upstream_accepted", "-"), r.get("outbox_pending_after", "-"),
                     r.get("marketplace_polls", "-"), r.get("screen_events", "-")])
    print(table(["round", "consumer", "rate", "tickets", "p50", "p90", "p99", "max", "mean",
                 "1st ticket p50/p99", "CPU ms/order", "upstream took", "outbox left",
                 "market polls", "screen events"],
                rows))
    print()
    rows = []
    for r in results:
        for part, ms in (r["parts"] or {}).items():
            rows.append([r["round"], f"{r['rate']:g}/s", part, f"{ms['p50']:.1f}",
                         f"{ms['p90']:.1f}", f"{ms['p99']:.1f}", f"{ms['max']:.1f}"])
    if rows:
        print("daemon, where the time goes, per ticket (its own millisecond stamps; "
              "ingest = start of the batch's transaction, claim = start of _print_one)")
        print(table(["round", "rate", "segment", "p50", "p90", "p99", "max"], rows))
        print()
    ratio_rows = []
    for rate, _ in rates:
        for round_no in range(1, args.rounds + 1):
            d = next(r for r in results if r["who"] == "daemon" and r["rate"] == rate
                     and r["round"] == round_no)
            n = next(r for r in results if r["who"] == "naive" and r["rate"] == rate
                     and r["round"] == round_no)
            p50 = d["ms"]["p50"] / n["ms"]["p50"]
            p99 = d["ms"]["p99"] / n["ms"]["p99"]
            if kitchen:
                ratio_rows.append([f"{rate:g}/s", round_no, f"{p50:.2f}", f"{p99:.2f}",
                                   "yes" if p50 <= 2 and p99 <= 2 else "NO"])
            else:
                aim = "yes" if d["ms"]["p99"] < 25 else "NO"
                ratio_rows.append([f"{rate:g}/s", round_no, f"{p50:.2f}", f"{p99:.2f}",
                                   "yes" if p99 <= 1.5 else "NO",
                                   aim if rate == 20 else "-"])
    if kitchen:
        print("daemon / naive, per ticket, same run (issue 17 aim: p50 and p99 each <= 2x)")
        print(table(["rate", "round", "p50 ratio", "p99 ratio", "both <= 2x"], ratio_rows))
    else:
        print("daemon / naive (aim: p99 within 1.5x of naive; p99 < 25 ms at 20/s)")
        print(table(["rate", "round", "p50 ratio", "p99 ratio", "p99 <= 1.5x", "p99 < 25 ms"],
                    ratio_rows))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--kitchen", action="store_true",
                        help="issue 17 configuration: 2 printers, 2 stations, upstream "
                             "syncing, HTTP listener on; two tickets per order")
    parser.add_argument("--rates", default=None,
                        help="RATE:SECONDS pairs, comma separated (default 20:15,100:10; "
                             "with --kitchen 20:15,100:3, i.e. 300 orders each)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    parser.add_argument("--py-spy", action="store_true",
                        help="record the daemon with py-spy during each of its measured "
                             "phases (raw stacks in WORKDIR/edge/py-spy-TAG.txt); slows it "
                             "down")
    parser.add_argument("--py-spy-args", default="--gil",
                        help="py-spy record sampling options (default '--gil'; "
                             "'--idle --threads' for wall time per thread)")
    parser.add_argument("--broker-conf", action="append", default=[], metavar="LINE",
                        help="a line appended to the benchmark's mosquitto.conf (repeatable), "
                             "e.g. 'set_tcp_nodelay true'")
    parser.add_argument("--workdir", help="keep logs and databases here (default: a temp dir)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    # The rest of issue 17's mix (--kitchen only).
    parser.add_argument("--marketplace-polling", action="store_true",
                        help="a marketplace connector in the daemon polling the fake "
                             f"marketplace (its own process) every {MARKET_POLL_SECONDS:g} s")
    parser.add_argument("--screens", type=int, default=0, metavar="N",
                        help="N kitchen screens: clients holding GET /kds/{station}/events "
                             "open through every phase")
    args = parser.parse_args()
    if (args.marketplace_polling or args.screens) and not args.kitchen:
        print("latency.py: --marketplace-polling and --screens need --kitchen",
              file=sys.stderr)
        return 2
    stop_on_signals()
    return main_runs(args)


if __name__ == "__main__":
    sys.exit(main())
