"""Ingest benchmark (issue 2): a backlog of order events waits on the broker while the daemon
is stopped; the daemon starts. How fast is every event committed, next to a bare aiomqtt
consumer that only counts the same messages?

    .venv/bin/python scripts/bench/ingest.py [--events 20000] [--runs 3]
        [--modes offline,printing] [--receive-maximum 256] [--max-batch 256]
        [--alt 1024/1024]

Everything is real and owned by this script: a mosquitto on a free port (persistence in a
temp dir, no queue or in-flight limits), a virtual printer (--no-png) for the printing runs,
and the daemon as `python -m edge run --config FILE` with its log going to a file.

One daemon run: start it once (its persistent session and subscription exist), SIGTERM it,
publish the backlog (QoS 1, every PUBACK awaited), start it again and poll
`SELECT COUNT(*) FROM events` read-only every 50 ms until it holds the whole backlog. The
daemon PUBACKs a message only after the transaction holding it has committed
(synchronous=FULL), so "in the table" is "durable, and only then acknowledged".

One bare run: an aiomqtt client in its own process with a persistent MQTT v5 session and the
same Receive Maximum subscribes and disconnects; the same backlog is published; it reconnects
and counts (paho auto-acknowledges) until it has them all. No parsing, no database.

Runs alternate bare / daemon so the machine's noise falls on both. The ratio compares the
bare consumer's connect-to-last-message with the daemon's connect-to-last-commit; rates from
process start and from the first commit are shown too. Each run uses its own site (topic
root) and client id, so earlier sessions never receive later backlogs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    OFFLINE_PRINTER,
    ROOT,
    Broker,
    DaemonRun,
    VPrinterProc,
    created_event,
    publish_all,
    table,
    write_config,
)

POLL = 0.05
RUN_TIMEOUT = 300.0


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def backlog(site: str, events: int) -> list[tuple[str, bytes]]:
    return [created_event(site, n)[:2] for n in range(events)]


# -- the bare consumer (runs in its own process) ------------------------------------------

async def bare_consumer(port: int, client_id: str, site: str, count: int, phase: str,
                        receive_maximum: int) -> dict[str, Any]:
    import aiomqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 3600
    props.ReceiveMaximum = receive_maximum
    topic = f"kitchen/{site}/orders/+/events"
    client = aiomqtt.Client("127.0.0.1", port, identifier=client_id,
                            protocol=aiomqtt.ProtocolVersion.V5, clean_start=False,
                            properties=props, max_queued_incoming_messages=0, timeout=10)
    if phase == "subscribe":
        async with client:
            await client.subscribe(topic, qos=1)
        return {"subscribed": topic}
    connect_at = time.time()
    first_at = last_at = 0.0
    seen = 0
    async with client:
        async with asyncio.timeout(RUN_TIMEOUT):
            async for _message in client.messages:
                seen += 1
                if seen == 1:
                    first_at = time.time()
                if seen >= count:
                    last_at = time.time()
                    break
        await client.unsubscribe(topic)
    return {"connect_at": connect_at, "first_at": first_at, "last_at": last_at, "seen": seen}


def run_bare_phase(port: int, client_id: str, site: str, count: int, phase: str,
                   receive_maximum: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--bare-consumer", phase, "--port", str(port),
         "--client-id", client_id, "--site", site, "--events", str(count),
         "--receive-maximum", str(receive_maximum)],
        capture_output=True, timeout=RUN_TIMEOUT + 30, cwd=ROOT, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"bare consumer failed: {out.stderr.decode(errors='replace')}")
    result: dict[str, Any] = json.loads(out.stdout.splitlines()[-1])
    return result


def bare_run(broker: Broker, k: int, events: int, receive_maximum: int) -> dict[str, Any]:
    site, client_id = f"bare-{k}", f"bench-bare-{k}"
    run_bare_phase(broker.port, client_id, site, events, "subscribe", receive_maximum)
    publish_s = publish_all(broker.port, backlog(site, events), client_id=f"pos-{site}")
    r = run_bare_phase(broker.port, client_id, site, events, "consume", receive_maximum)
    if r["seen"] < events:
        raise RuntimeError(f"bare consumer saw {r['seen']} of {events}")
    span = r["last_at"] - r["connect_at"]
    return {"who": "bare", "mode": "-", "run": k, "publish_s": publish_s,
            "from_connect_s": span, "rate_connect": events / span,
            "rate_first": events / max(1e-9, r["last_at"] - r["first_at"]),
            "rate_start": None, "rm": receive_maximum, "batch": None, "printed": None,
            "rate_applied": None}


# -- the daemon ----------------------------------------------------------------------------

def count_events(db: Path, *, applied: bool = False) -> int:
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    except sqlite3.OperationalError:
        return 0
    try:
        where = " WHERE applied = 1" if applied else ""
        return int(conn.execute(f"SELECT COUNT(*) FROM events{where}").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


def daemon_run(broker: Broker, workdir: Path, k: int, events: int, mode: str,
               printer: VPrinterProc | None, receive_maximum: int, max_batch: int,
               log_level: str, profile: bool = False,
               profile_args: str = "--gil") -> dict[str, Any]:
    site = f"edge-{k}-{mode}"
    run_dir = workdir / site
    address = printer.address if printer is not None else OFFLINE_PRINTER
    cfg = write_config(run_dir / "station.yaml", site=site, broker_port=broker.port,
                       client_id=f"bench-{site}", printer=address, state_dir=run_dir / "state",
                       receive_maximum=receive_maximum, max_batch=max_batch,
                       log_level=log_level)
    daemon = DaemonRun(cfg, run_dir / "daemon.log")
    # First start: the persistent session and its subscription now exist on the broker.
    daemon.start()
    if daemon.stop() != 0:
        raise RuntimeError(f"daemon did not stop cleanly: {daemon.tail()}")
    if printer is not None:
        printer.reset()
    publish_s = publish_all(broker.port, backlog(site, events), client_id=f"pos-{site}")
    log_mark = daemon.log_path.stat().st_size
    if profile:
        daemon.profile_to = run_dir / "py-spy.txt"
        daemon.profile_args = tuple(profile_args.split())
    daemon.start(wait_ready=False)
    deadline = time.monotonic() + RUN_TIMEOUT
    done_at = 0.0
    try:
        while time.monotonic() < deadline:
            n = count_events(daemon.db)
            if n >= events:
                done_at = time.time()
                break
            if daemon.proc is not None and daemon.proc.poll() is not None:
                raise RuntimeError(f"daemon exited: {daemon.tail()}")
            time.sleep(POLL)
        else:
            raise TimeoutError(f"daemon committed {count_events(daemon.db)} of {events}")
        # Durable (acknowledged) is what the ratio measures; applied (state, jobs, outbox)
        # follows, and is reported beside it.
        applied_at = 0.0
        while time.monotonic() < deadline:
            if count_events(daemon.db, applied=True) >= events:
                applied_at = time.time()
                break
            time.sleep(POLL)
        conn = sqlite3.connect(f"file:{daemon.db}?mode=ro", uri=True, timeout=5)
        try:
            first_batch = _ts(conn.execute("SELECT MIN(received_at) FROM events").fetchone()[0])
            printed = int(conn.execute(
                "SELECT COUNT(*) FROM print_jobs WHERE state='printed'").fetchone()[0])
            jobs_total = int(conn.execute("SELECT COUNT(*) FROM print_jobs").fetchone()[0])
            # Each batch's events share its received_at stamp (ms): about one per transaction.
            batches = int(conn.execute(
                "SELECT COUNT(DISTINCT received_at) FROM events").fetchone()[0])
        finally:
            conn.close()
    finally:
        stop_began = time.monotonic()
        code = daemon.stop()
        stop_s = time.monotonic() - stop_began
    if code != 0:
        raise RuntimeError(f"daemon exit {code}: {daemon.tail()}")
    with daemon.log_path.open("rb") as fh:
        fh.seek(log_mark)
        connected = [json.loads(line) for line in fh if b'"mqtt_connected"' in line]
    connect_at = _ts(connected[0]["timestamp"]) if connected else daemon.started_at
    return {"who": "daemon", "mode": mode, "run": k, "publish_s": publish_s,
            "from_connect_s": done_at - connect_at,
            "rate_connect": events / (done_at - connect_at),
            "rate_first": events / (done_at - first_batch),
            "rate_start": events / (done_at - daemon.started_at),
            "rate_applied": events / (applied_at - connect_at) if applied_at else None,
            "startup_s": connect_at - daemon.started_at, "stop_s": stop_s,
            "rm": receive_maximum, "batch": max_batch, "mean_batch": events / max(1, batches),
            "printed": f"{printed}/{jobs_total}" if mode == "printing" else None}


# -- orchestration -------------------------------------------------------------------------

def fmt(v: float | None, spec: str = ",.0f") -> str:
    return "-" if v is None else format(v, spec)


def series(results: list[dict[str, Any]], mode: str, rm: int, batch: int) -> dict[str, Any]:
    """Median rates of one daemon setting and of the bare runs interleaved with it."""
    d = [r for r in results if r["who"] == "daemon" and r["mode"] == mode
         and r["rm"] == rm and r["batch"] == batch]
    runs = {r["run"] for r in d}
    b = [r for r in results if r["who"] == "bare" and r["run"] in runs]
    med = statistics.median
    out = {"mode": mode, "rm": rm, "batch": batch, "n": len(d),
           "bare": med(r["rate_connect"] for r in b),
           "daemon_connect": med(r["rate_connect"] for r in d),
           "daemon_first": med(r["rate_first"] for r in d),
           "daemon_start": med(r["rate_start"] for r in d)}
    out["ratio"] = out["daemon_connect"] / out["bare"]
    out["ratio_first"] = out["daemon_first"] / out["bare"]
    # Pairwise ratios: each daemon run against the bare run just before it.
    bare_by_run = {r["run"]: r["rate_connect"] for r in b}
    out["pair_ratios"] = [r["rate_connect"] / bare_by_run[r["run"]] for r in d]
    return out


def main_runs(args: argparse.Namespace) -> int:
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    results: list[dict[str, Any]] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        workdir = Path(args.workdir or tmp)
        extra = "".join(f"{line}\n" for line in args.broker_conf)
        broker = Broker(workdir / "broker", extra_conf=extra).start()
        printer: VPrinterProc | None = None
        try:
            if "printing" in modes:
                printer = VPrinterProc(workdir / "printer", png=False).start()
            settings = [(args.receive_maximum, args.max_batch)]
            k = 0

            def do_series(rm: int, batch: int, which: list[str], runs: int) -> None:
                nonlocal k
                for _ in range(runs):
                    k += 1
                    r = bare_run(broker, k, args.events, rm)
                    results.append(r)
                    print(f"run {k} bare: {r['rate_connect']:,.0f} ev/s", flush=True)
                    for mode in which:
                        r = daemon_run(broker, workdir, k, args.events, mode,
                                       printer if mode == "printing" else None, rm, batch,
                                       args.log_level, args.py_spy, args.py_spy_args)
                        results.append(r)
                        print(f"run {k} daemon {mode} rm={rm} batch={batch}: "
                              f"{r['rate_connect']:,.0f} ev/s from connect, "
                              f"{r['rate_first']:,.0f} from first commit, "
                              f"{r['rate_start']:,.0f} from process start"
                              + (f", printed {r['printed']}" if r["printed"] else "")
                              + f"; mean batch {r['mean_batch']:.0f}"
                              + f"; SIGTERM->exit {r['stop_s']:.1f}s",
                              flush=True)

            do_series(args.receive_maximum, args.max_batch, modes, args.runs)
            base = series(results, modes[0], args.receive_maximum, args.max_batch)
            if args.alt and (base["ratio"] < 0.5 or args.force_alt):
                rm_s, _, batch_s = args.alt.partition("/")
                rm, batch = int(rm_s), int(batch_s or rm_s)
                print(f"ratio {base['ratio']:.2f}: trying receive_maximum={rm} "
                      f"max_batch={batch}", flush=True)
                do_series(rm, batch, [modes[0]], args.runs)
                settings.append((rm, batch))
        finally:
            if printer is not None:
                printer.stop()
            broker.stop()

    print()
    print(f"ingest of {args.events:,} queued order.created events "
          f"(log_level={args.log_level}); wall time {time.monotonic() - started:.0f}s")
    print("printers: offline = tcp://127.0.0.1:9 (jobs stay queued); "
          "printing = virtual printer --no-png")
    print()
    rows = []
    for r in results:
        rows.append([r["run"], r["who"], r["mode"], r["rm"], fmt(r["batch"], "d"),
                     f"{r['publish_s']:.1f}", f"{r['from_connect_s']:.2f}",
                     fmt(r["rate_connect"]), fmt(r["rate_first"]), fmt(r["rate_start"]),
                     fmt(r.get("mean_batch")), fmt(r.get("rate_applied")),
                     r.get("printed") or "-"])
    print(table(["run", "consumer", "printers", "recv_max", "max_batch", "publish_s",
                 "connect->all_s", "ev/s connect", "ev/s 1st", "ev/s start", "mean batch",
                 "ev/s applied", "printed"], rows))
    print()
    srows = []
    for rm, batch in settings:
        for mode in modes if (rm, batch) == settings[0] else [modes[0]]:
            s = series(results, mode, rm, batch)
            srows.append([mode, rm, batch, s["n"], fmt(s["bare"]), fmt(s["daemon_connect"]),
                          fmt(s["daemon_first"]), fmt(s["daemon_start"]),
                          f"{s['ratio']:.2f}", f"{s['ratio_first']:.2f}",
                          " ".join(f"{x:.2f}" for x in s["pair_ratios"])])
    print("medians (ratio = daemon connect->all-committed rate / bare connect->last rate; "
          "aim >= 0.50)")
    print(table(["printers", "recv_max", "max_batch", "runs", "bare ev/s", "daemon ev/s",
                 "daemon 1st", "daemon start", "ratio", "ratio 1st", "per-pair ratios"],
                srows))
    if args.json:
        summaries = []
        for rm, batch in settings:
            for mode in modes if (rm, batch) == settings[0] else [modes[0]]:
                s = series(results, mode, rm, batch)
                d = [r for r in results if r["who"] == "daemon" and r["mode"] == mode
                     and r["rm"] == rm and r["batch"] == batch and r["rate_applied"]]
                s["daemon_applied"] = (statistics.median(r["rate_applied"] for r in d)
                                       if d else None)
                summaries.append(s)
        Path(args.json).write_text(json.dumps(
            {"events": args.events, "wall_s": time.monotonic() - started,
             "results": results, "series": summaries}, indent=1))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--modes", default="offline,printing",
                        help="comma list of daemon printer modes: offline, printing")
    parser.add_argument("--receive-maximum", type=int, default=256)
    parser.add_argument("--max-batch", type=int, default=256)
    parser.add_argument("--alt", default="1024/1024",
                        help="RECEIVE_MAXIMUM/MAX_BATCH tried when the ratio is under 0.5 "
                             "('' to skip)")
    parser.add_argument("--force-alt", action="store_true", help="try --alt whatever the ratio")
    parser.add_argument("--broker-conf", action="append", default=[], metavar="LINE",
                        help="a line appended to the benchmark's mosquitto.conf (repeatable), "
                             "e.g. 'max_inflight_messages 20'")
    parser.add_argument("--workdir", help="keep logs and databases here (default: a temp dir)")
    parser.add_argument("--py-spy", action="store_true",
                        help="record the daemon's second start with py-spy (raw stacks in "
                             "WORKDIR/SITE/py-spy.txt); slows it down a little")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--py-spy-args", default="--gil",
                        help="py-spy record sampling options (default '--gil'; "
                             "'--idle --threads' for wall time per thread)")
    # Internal: this file runs itself as the bare consumer's process.
    parser.add_argument("--bare-consumer", choices=["subscribe", "consume"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--client-id", help=argparse.SUPPRESS)
    parser.add_argument("--site", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_consumer:
        result = asyncio.run(bare_consumer(args.port, args.client_id, args.site, args.events,
                                           args.bare_consumer, args.receive_maximum))
        print(json.dumps(result), flush=True)
        return 0
    return main_runs(args)


if __name__ == "__main__":
    sys.exit(main())
